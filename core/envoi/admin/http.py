"""A small HTTP/1.1 server for the admin: one asyncio.Protocol per connection, h11 for parsing.

The admin listener is not the data path and must not depend on the ``envoi-http`` plugin, so it
has its own server: sans-IO h11 underneath, keep-alive, requests answered in order, and a hard
cap on the size of a request (head and body) so a client cannot grow our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import h11

from envoi.stats.store import Scope

#: Largest request head we parse; h11 rejects a bigger one with 431.
MAX_HEAD_BYTES = 64 * 1024
#: Largest request body we accept; admin requests carry (almost) none.
MAX_BODY_BYTES = 1024 * 1024
#: The socket send buffer of a streaming response (``/tap``).
STREAM_SEND_BUFFER = 64 * 1024


def reason_phrase(status: int) -> bytes:
    """``OK`` for 200 and so on: the status line Envoy's admin writes."""
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


@dataclass
class Request:
    method: str
    path: str
    #: Query parameters in order; a bare ``?usedonly`` has the value "".
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes = b""


class StreamOut(Protocol):
    """How a streaming body writes (the admin connection)."""

    @property
    def paused(self) -> bool:
        """The peer is not taking what was written: hold on until ``StreamBody.writable``."""

    def write(self, data: bytes) -> None: ...

    def end(self) -> None:
        """The body is complete (the connection may carry the next request)."""


class StreamBody(Protocol):
    """A response body written over time (``/tap``), in chunks, with backpressure."""

    def start(self, out: StreamOut) -> None:
        """The head was sent: write when there is something to write."""

    def writable(self) -> None:
        """The connection drained what was written: it is no longer ``paused``."""

    def stop(self) -> None:
        """The connection is gone (or the admin closes): release what the body holds."""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=UTF-8"
    #: Called once the response has been handed to the transport (``/quitquitquit``).
    after: Callable[[], None] | None = field(default=None, repr=False)
    #: A body written over time instead of ``body`` (sent chunked).
    stream: StreamBody | None = field(default=None, repr=False)


Handler = Callable[[Request], Response]


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return parts.path or "/", query


# Every name Envoy 1.39.3 shows for its admin's HTTP connection manager (``http.admin.*``) and
# listener (``listener.admin.*``); the ones the admin server never moves stay at 0.
_HTTP_COUNTERS = (
    "downstream_cx_delayed_close_timeout", "downstream_cx_destroy",
    "downstream_cx_destroy_active_rq", "downstream_cx_destroy_local",
    "downstream_cx_destroy_local_active_rq",
    "downstream_cx_destroy_remote", "downstream_cx_destroy_remote_active_rq",
    "downstream_cx_drain_close", "downstream_cx_http1_total", "downstream_cx_http2_total",
    "downstream_cx_http3_total", "downstream_cx_idle_timeout",
    "downstream_cx_max_duration_reached", "downstream_cx_max_requests_reached",
    "downstream_cx_overload_disable_keepalive", "downstream_cx_protocol_error",
    "downstream_cx_rx_bytes_total", "downstream_cx_ssl_total", "downstream_cx_total",
    "downstream_cx_tx_bytes_total", "downstream_cx_upgrades_total",
    "downstream_flow_control_paused_reading_total",
    "downstream_flow_control_resumed_reading_total", "downstream_rq_1xx", "downstream_rq_2xx",
    "downstream_rq_3xx", "downstream_rq_4xx", "downstream_rq_5xx", "downstream_rq_completed",
    "downstream_rq_failed_path_normalization", "downstream_rq_header_timeout",
    "downstream_rq_http1_total", "downstream_rq_http2_total", "downstream_rq_http3_total",
    "downstream_rq_idle_timeout", "downstream_rq_max_duration_reached",
    "downstream_rq_non_relative_path", "downstream_rq_overload_close",
    "downstream_rq_redirected_with_normalized_path", "downstream_rq_rejected_via_ip_detection",
    "downstream_rq_response_before_rq_complete", "downstream_rq_rx_reset",
    "downstream_rq_timeout", "downstream_rq_too_large", "downstream_rq_too_many_premature_resets",
    "downstream_rq_total", "downstream_rq_tx_reset", "downstream_rq_ws_on_non_ws_route",
    "rs_too_large",
)
_HTTP_GAUGES = (
    "downstream_cx_active", "downstream_cx_http1_active", "downstream_cx_http1_soft_drain",
    "downstream_cx_http2_active", "downstream_cx_http3_active", "downstream_cx_rx_bytes_buffered",
    "downstream_cx_ssl_active", "downstream_cx_tx_bytes_buffered", "downstream_cx_upgrades_active",
    "downstream_rq_active",
)
_LISTENER_COUNTERS = (
    "downstream_cx_destroy", "downstream_cx_overflow", "downstream_cx_overload_reject",
    "downstream_cx_total", "downstream_cx_transport_socket_connect_timeout",
    "downstream_global_cx_overflow", "downstream_listener_filter_error",
    "downstream_listener_filter_remote_close", "downstream_pre_cx_timeout",
    "no_filter_chain_match", "http.admin.downstream_rq_1xx", "http.admin.downstream_rq_2xx",
    "http.admin.downstream_rq_3xx", "http.admin.downstream_rq_4xx", "http.admin.downstream_rq_5xx",
    "http.admin.downstream_rq_completed", "main_thread.downstream_cx_total",
)
_LISTENER_GAUGES = ("downstream_cx_active", "downstream_pre_cx_active",
                    "main_thread.downstream_cx_active")


class AdminHttpStats:
    """``http.admin.*`` and ``listener.admin.*``, as Envoy counts its own admin traffic (the
    admin runs on Envoy's main thread: ``listener.admin.main_thread.*``)."""

    def __init__(self, http: Scope, listener: Scope) -> None:
        c = {n: http.counter(n) for n in _HTTP_COUNTERS}
        g = {n: http.gauge(n) for n in _HTTP_GAUGES}
        lc = {n: listener.counter(n) for n in _LISTENER_COUNTERS}
        lg = {n: listener.gauge(n) for n in _LISTENER_GAUGES}
        self.rq_total = c["downstream_rq_total"]
        self.rq_http1_total = c["downstream_rq_http1_total"]
        self.rq_active = g["downstream_rq_active"]
        self.rq_time = http.histogram("downstream_rq_time")
        self.cx_length = (http.histogram("downstream_cx_length_ms"),
                          listener.histogram("downstream_cx_length_ms"))
        lg["downstream_pre_cx_active"].set(0)  # Envoy moves it (to 0: no listener filters)
        self.rx_bytes = c["downstream_cx_rx_bytes_total"]
        self.tx_bytes = c["downstream_cx_tx_bytes_total"]
        self.protocol_error = c["downstream_cx_protocol_error"]
        self.on_open = (c["downstream_cx_total"], c["downstream_cx_http1_total"],
                        lc["downstream_cx_total"], lc["main_thread.downstream_cx_total"])
        self.open_gauges = (g["downstream_cx_active"], g["downstream_cx_http1_active"],
                            lg["downstream_cx_active"], lg["main_thread.downstream_cx_active"])
        self.cx_destroy = (c["downstream_cx_destroy"], lc["downstream_cx_destroy"])
        self.destroy_local = c["downstream_cx_destroy_local"]
        self.destroy_remote = c["downstream_cx_destroy_remote"]
        self.rq_completed = (c["downstream_rq_completed"],
                             lc["http.admin.downstream_rq_completed"])
        self.rq_class = {k: (c[f"downstream_rq_{k}xx"], lc[f"http.admin.downstream_rq_{k}xx"])
                         for k in range(1, 6)}

    def opened(self) -> None:
        for counter in self.on_open:
            counter.inc()
        for gauge in self.open_gauges:
            gauge.inc()

    def closed(self, local: bool, length_ms: float) -> None:
        for histogram in self.cx_length:
            histogram.record(length_ms)
        for gauge in self.open_gauges:
            gauge.dec()
        for counter in self.cx_destroy:
            counter.inc()
        (self.destroy_local if local else self.destroy_remote).inc()

    def response_sent(self, status: int) -> None:
        for counter in self.rq_completed:
            counter.inc()
        for counter in self.rq_class.get(status // 100, ()):
            counter.inc()


class AdminHttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, stats: AdminHttpStats, loop: asyncio.AbstractEventLoop):
        self._handler = handler
        self._stats = stats
        self._loop = loop
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._request: Request | None = None
        self._closing = self._peer_eof = False  # who ended the connection (the stats)
        self._body: list[bytes] = []
        self._body_size = 0
        self._opened_at = 0.0
        self._stream: StreamBody | None = None
        self._paused = False
        self.closed = asyncio.Event()
        #: Told when the connection ends, so the listener can forget it.
        self.on_closed: Callable[[AdminHttpProtocol], None] | None = None

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = transport  # type: ignore[assignment]
        self._opened_at = self._loop.time()
        self._stats.opened()

    def connection_lost(self, exc: Exception | None) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
        self._stats.closed(local=self._closing and not self._peer_eof,
                           length_ms=(self._loop.time() - self._opened_at) * 1000)
        self._transport = None
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._stream is not None:
            self._stream.writable()

    # -- StreamOut (a streaming response's body) -----------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused or self._transport is None

    def write(self, data: bytes) -> None:
        if self._stream is None or self._transport is None or not data:
            return
        try:
            out = self._conn.send(h11.Data(data=data)) or b""
        except h11.LocalProtocolError:
            self._close()
            return
        self._stats.tx_bytes.inc(len(out))
        self._transport.write(out)

    def end(self) -> None:
        if self._stream is None:
            return
        self._stream = None
        try:
            out = self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._close()
            return
        if self._transport is not None:
            self._stats.tx_bytes.inc(len(out))
            self._transport.write(out)
        self._next_cycle_or_close()
        self._drain_events()  # a request that arrived meanwhile

    def abort(self) -> None:
        if self._transport is not None:
            self._closing = True
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._stats.rx_bytes.inc(len(data))
        self._conn.receive_data(data)
        self._drain_events()

    def eof_received(self) -> bool | None:
        self._peer_eof = True
        self._conn.receive_data(b"")
        self._drain_events()
        return None

    # -- request handling ---------------------------------------------------------------

    def _drain_events(self) -> None:
        while self._transport is not None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._stats.protocol_error.inc()
                self._fail(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._start_request(event):
                    return
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > MAX_BODY_BYTES:
                    self._fail(413, "request body too large")
                    return
                self._body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._finish_request()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _start_request(self, event: h11.Request) -> bool:
        # h11 bounds a head that is still arriving; one that arrived whole is measured here.
        head_size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if head_size > MAX_HEAD_BYTES:
            self._fail(431, "request header fields too large")
            return False
        path, query = parse_target(event.target.decode("latin-1"))
        self._request = Request(
            method=event.method.decode("ascii"),
            path=path,
            query=query,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
        )
        self._body = []
        self._body_size = 0
        self._stats.rq_total.inc()
        self._stats.rq_http1_total.inc()
        self._stats.rq_active.inc()
        return True

    def _finish_request(self) -> None:
        request = self._request
        assert request is not None
        request.body = b"".join(self._body)
        self._request = None
        start = self._loop.time()
        try:
            response = self._handler(request)
        except Exception as exc:  # a bug in a handler must not take the admin down
            response = Response(500, f"internal error: {exc}\n".encode())
        self._send(response)
        self._stats.rq_active.dec()
        self._stats.rq_time.record((self._loop.time() - start) * 1000)
        if response.after is not None:
            self._loop.call_soon(response.after)

    def _send(self, response: Response) -> None:
        headers = [
            ("content-type", response.content_type),
            ("cache-control", "no-cache, max-age=0"),
            ("x-content-type-options", "nosniff"),
            ("server", "envoi"),
        ]
        if response.stream is None:
            headers.insert(1, ("content-length", str(len(response.body))))
        try:
            data = self._conn.send(h11.Response(status_code=response.status, headers=headers,
                                                reason=reason_phrase(response.status)))
            if response.stream is None:
                data = (data or b"") + (self._conn.send(h11.Data(data=response.body)) or b"")
                data += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._close()
            return
        self._stats.response_sent(response.status)
        if self._transport is not None:
            self._stats.tx_bytes.inc(len(data or b""))
            self._transport.write(data or b"")
        if response.stream is not None:
            # Chunked (h11 frames it); the next request waits until the body ends. The kernel
            # holds at most STREAM_SEND_BUFFER for a slow reader (not its autotuned megabytes):
            # past it and the transport's high-water mark, the body holds back (and drops).
            sock = self._transport.get_extra_info("socket") if self._transport else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
            self._stream = response.stream
            response.stream.start(self)
            return
        self._next_cycle_or_close()

    def _next_cycle_or_close(self) -> None:
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            self._close()
        elif self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()

    def _fail(self, status: int, reason: str) -> None:
        # Answer a malformed or oversized request once, then hang up.
        if self._request is not None:
            self._request = None
            self._stats.rq_active.dec()
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError):
                data = self._conn.send(
                    h11.Response(
                        status_code=status,
                        reason=reason_phrase(status),
                        headers=[("content-length", str(len(reason) + 1)),
                                 ("connection", "close")],
                    )
                )
                data = (data or b"") + (self._conn.send(h11.Data(data=reason.encode() + b"\n"))
                                        or b"")
                if self._transport is not None:
                    self._stats.tx_bytes.inc(len(data))
                    self._transport.write(data)
                self._stats.response_sent(status)
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._closing = True
            self._transport.close()
