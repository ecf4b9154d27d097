"""Getting finished spans to a collector without touching the request path.

:class:`BatchExporter` holds finished spans (at most ``max_spans``: past that a span is dropped
and counted) and sends them in one report when ``min_flush_spans`` are waiting or every
``flush_interval_ms`` (Envoy's runtime keys ``tracing.<tracer>.min_flush_spans``, 5, and
``tracing.<tracer>.flush_interval_ms``, 5000). Sending is a task on the event loop: a request
adds a span and returns. At most ``max_in_flight`` reports are on the way at once; a report made
while they all still wait for a slow or dead collector is dropped and counted, so an exporter
that is down costs counted drops and a bounded amount of memory, never latency.

Two ways out, both to a host of a configured cluster (its load balancer picks): an HTTP/1.1
POST (:class:`HttpPoster`, sans-IO h11 over one keep-alive connection; Zipkin and OTLP/HTTP)
and a gRPC unary call (:class:`GrpcPoster`, ``grpc.aio``; OTLP/gRPC). Each worker process sends
its own spans on its own connection (Envoy: each thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import h11

from envoi.tracing.span import Span

log = logging.getLogger("envoi.tracing")

__all__ = ["BatchExporter", "GrpcPoster", "HttpPoster", "PostResult", "flush_exporters"]

#: A report's fate: True sent and accepted, False refused by the collector (a non-2xx
#: answer), None not delivered (no host, connection failure, timeout).
PostResult = bool | None
Send = Callable[[list[Span]], Awaitable[PostResult]]


#: Every exporter alive in this process, for the last flush at shutdown (weak: a tracer that a
#: config change replaced goes with its exporter).
_EXPORTERS: weakref.WeakSet[BatchExporter] = weakref.WeakSet()


async def flush_exporters(timeout: float = 2.0) -> None:
    """Graceful shutdown, after the connections closed: every exporter sends the spans it still
    holds, all at once, waiting at most ``timeout`` seconds (a collector that is down costs
    that long, once)."""
    exporters = [e for e in _EXPORTERS if e.spans or e.in_flight]
    if exporters:
        await asyncio.gather(*(e.close(timeout) for e in exporters))


class BatchExporter:
    def __init__(self, send: Send, *, runtime: Any, runtime_prefix: str,
                 max_spans: int = 1024, max_in_flight: int = 2,
                 on_sent: Callable[[int], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None,
                 on_timer: Callable[[], None] | None = None,
                 on_result: Callable[[PostResult], None] | None = None) -> None:
        self.send = send
        self.runtime = runtime
        self.prefix = runtime_prefix
        self.max_spans = max_spans
        self.max_in_flight = max_in_flight
        self.on_sent = on_sent
        self.on_dropped = on_dropped
        self.on_timer = on_timer
        self.on_result = on_result
        self.spans: list[Span] = []
        self.in_flight: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        _EXPORTERS.add(self)

    # -- the hot path -----------------------------------------------------------------------

    def add(self, span: Span) -> None:
        """A finished span (called from ``Span.finish``): buffered, never waits."""
        if len(self.spans) >= self.max_spans:
            self._dropped(1)
            return
        self.spans.append(span)
        if self._timer is None:
            self._arm()
        if len(self.spans) >= self._runtime_int("min_flush_spans", 5):
            self.flush()

    # -- off the hot path -------------------------------------------------------------------

    def _runtime_int(self, name: str, default: int) -> int:
        getter = getattr(self.runtime, "get_integer", None)
        return int(getter(f"{self.prefix}.{name}", default)) if getter else default

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        interval = self._runtime_int("flush_interval_ms", 5000) / 1000
        self._timer = loop.call_later(max(0.001, interval), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.on_timer is not None:
            self.on_timer()
        self.flush()
        self._arm()

    def flush(self) -> None:
        """Send what is buffered as one report. While every report slot waits on the
        collector the spans stay buffered (``add`` drops, counted, past ``max_spans``) and go
        when a report is done: a burst is not lost to a collector that is merely slow."""
        if not self.spans or len(self.in_flight) >= self.max_in_flight:
            return
        batch, self.spans = self.spans, []
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._dropped(len(batch))
            return
        task = loop.create_task(self._send(batch))
        self.in_flight.add(task)
        task.add_done_callback(self._report_done)

    def _report_done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        if len(self.spans) >= self._runtime_int("min_flush_spans", 5):
            self.flush()

    async def _send(self, batch: list[Span]) -> None:
        try:
            result = await self.send(batch)
        except Exception as exc:  # a bug in an encoder must not take the server down
            log.exception("trace export failed: %s", exc)
            result = None
        if self.on_result is not None:
            self.on_result(result)
        if result:
            if self.on_sent is not None:
                self.on_sent(len(batch))
        elif result is None:
            log.debug("trace report of %d spans not delivered", len(batch))

    def _dropped(self, n: int) -> None:
        if self.on_dropped is not None:
            self.on_dropped(n)

    async def close(self, timeout: float = 1.0) -> None:
        """Send what is left and wait (at most ``timeout`` seconds) for the reports on the
        way; spans that wait for a free report slot go as soon as one is."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.flush()
            remaining = deadline - loop.time()
            if not self.in_flight or remaining <= 0:
                break
            await asyncio.wait(set(self.in_flight), timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)


# -- HTTP/1.1 ---------------------------------------------------------------------------------


class _H11Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection (h11), one request at a time."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.response: asyncio.Future[int] | None = None
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Response):
                    self.status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    if self.response is not None and not self.response.done():
                        self.response.set_result(self.status)
                    if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                        self.conn.start_next_cycle()
                    else:
                        self._close()
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self._close()
                    return
        except h11.RemoteProtocolError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        if self.response is not None and not self.response.done():
            self.response.set_exception(exc)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and self.conn.our_state is h11.IDLE

    async def request(self, target: str, headers: list[tuple[str, str]], body: bytes) -> int:
        assert self.transport is not None
        self.response = asyncio.get_running_loop().create_future()
        data = self.conn.send(h11.Request(method="POST", target=target, headers=[
            *headers, ("content-length", str(len(body)))])) or b""
        data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.transport.write(data)
        return await self.response


class HttpPoster:
    """POSTs reports to a path on a host of ``cluster`` (one keep-alive connection)."""

    def __init__(self, cluster_manager: Any, cluster: str, path: str, host_header: str,
                 headers: Sequence[tuple[str, str]], timeout: float) -> None:
        self.cluster_manager = cluster_manager
        self.cluster = cluster
        self.path = path
        self.host_header = host_header
        self.headers = list(headers)
        self.timeout = timeout
        self._client: _H11Client | None = None
        self._lock: asyncio.Lock | None = None

    async def post(self, body: bytes) -> PostResult:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one request at a time on the one connection
            try:
                status = await asyncio.wait_for(self._post(body), self.timeout)
            except (OSError, TimeoutError, h11.ProtocolError, ConnectionError) as exc:
                log.debug("trace report to cluster %s failed: %s", self.cluster, exc)
                if self._client is not None:
                    self._client._close()
                    self._client = None
                return None
        return 200 <= status < 300 if status else None

    async def _post(self, body: bytes) -> int:
        cluster = self.cluster_manager.get(self.cluster)
        if cluster is None:
            return 0
        client = self._client
        if client is None or not client.usable:
            host = cluster.choose_host()
            if host is None:
                return 0
            loop = asyncio.get_running_loop()
            _, client = await loop.create_connection(_H11Client, host.address, host.port)
            self._client = client
        headers = [("host", self.host_header), *self.headers]
        return await client.request(self.path, headers, body)

    def close(self) -> None:
        if self._client is not None:
            self._client._close()
            self._client = None


# -- gRPC ---------------------------------------------------------------------------------------


class GrpcPoster:
    """Unary gRPC calls (``method`` is ``/package.Service/Method``) to a host of ``cluster``,
    over a ``grpc.aio`` channel made in the process that sends."""

    def __init__(self, cluster_manager: Any, cluster: str, method: str,
                 serialize: Callable[[Any], bytes], timeout: float,
                 metadata: Sequence[tuple[str, str]] = (), user_agent: str = "") -> None:
        self.cluster_manager = cluster_manager
        self.cluster = cluster
        self.method = method
        self.serialize = serialize
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.user_agent = user_agent
        self._channels: dict[str, Any] = {}

    async def call(self, request: Any) -> PostResult:
        import grpc

        cluster = self.cluster_manager.get(self.cluster)
        host = cluster.choose_host() if cluster is not None else None
        if host is None:
            return None
        target = f"[{host.address}]:{host.port}" if ":" in host.address \
            else f"{host.address}:{host.port}"
        channel = self._channels.get(target)
        if channel is None:
            options = [("grpc.primary_user_agent", self.user_agent)] if self.user_agent else []
            channel = self._channels[target] = grpc.aio.insecure_channel(target, options=options)
        method = channel.unary_unary(self.method, request_serializer=self.serialize,
                                     response_deserializer=lambda b: b)
        try:
            await method(request, timeout=self.timeout or None, metadata=self.metadata or None)
        except grpc.aio.AioRpcError as exc:
            log.debug("trace export to cluster %s: %s", self.cluster, exc.code())
            return None if exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.DEADLINE_EXCEEDED) else False
        return True

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
