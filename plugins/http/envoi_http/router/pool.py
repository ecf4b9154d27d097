"""Upstream HTTP/1.1 connection pools: one per (cluster, host), keep-alive, circuit breakers.

A pool hands an idle connection to a request at once, opens a new one while the cluster is under
``max_connections``, and queues the request otherwise (up to ``max_pending_requests``). A
connection goes back to the pool when its response is complete and both sides allow keep-alive.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

from envoi.config import implements
from envoi.upstream.cluster import Cluster, Host, UpstreamConnectError

from envoi_http.codec import Backend, make_codec
from envoi_http.codec import events as ev

# A cluster's max_requests_per_connection closes an upstream HTTP connection after N requests.
implements("envoy.config.cluster.v3.Cluster", "max_requests_per_connection")


class ReadControl(Protocol):
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class UpstreamHandle(Protocol):
    """What a request holds once a pool is ready for it: a whole HTTP/1.1 connection
    (``UpstreamConnection``) or one HTTP/2 stream (``h2_pool.H2Stream``)."""

    handler: PoolCallbacks | None
    reset_active: bool

    @property
    def transport(self) -> ReadControl | None: ...
    def send_head(self, method: bytes, target: bytes, authority: bytes, scheme: bytes,
                  headers: ev.Headers, end_stream: bool) -> None: ...
    def send(self, event: ev.Event) -> None: ...
    def send_data(self, data: bytes, end_stream: bool) -> None: ...
    def release(self) -> None: ...
    def abort(self) -> None: ...


class PoolCallbacks(Protocol):
    def on_pool_ready(self, conn: UpstreamHandle) -> None: ...
    def on_pool_failure(self, reason: str, host: Host, detail: str = "") -> None: ...
    def on_upstream_events(self, events: list[ev.Event]) -> None: ...
    def on_upstream_closed(self) -> None: ...
    def on_upstream_above_high_watermark(self) -> None: ...
    def on_upstream_below_low_watermark(self) -> None: ...


_CODEC_STATS = ("http1.dropped_headers_with_underscores", "http1.metadata_not_supported_error",
                "http1.requests_rejected_with_underscores_in_headers", "http1.response_flood")


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.cstats = pool.cluster.stats
        self.codec = make_codec(pool.backend, "client")
        self.transport: asyncio.Transport | None = None
        self.handler: PoolCallbacks | None = None
        self.requests = 0
        self.started = time.monotonic()
        self.closed = False
        self.local_close = False
        self.reset_active = False  # closed by us in the middle of an exchange

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.cstats.upstream_cx_rx_bytes_total.value += len(data)
        events = self.codec.receive(data)
        h = self.handler
        if h is not None:
            h.on_upstream_events(events)
        elif events:
            # Bytes on an idle connection: the server is misbehaving; drop the connection.
            self.close()

    def eof_received(self) -> bool:
        events = self.codec.receive(b"")
        h = self.handler
        if h is not None and events:
            h.on_upstream_events(events)
        return False

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_above_high_watermark()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_below_low_watermark()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        pool = self.pool
        st = self.cstats
        if self.handler is not None or self.reset_active:
            st.upstream_cx_destroy_with_active_rq.value += 1
            if self.local_close:
                st.upstream_cx_destroy_local_with_active_rq.value += 1
            else:
                st.upstream_cx_destroy_remote_with_active_rq.value += 1
        pool.cluster.connection_closed(pool.host, self.started, local=self.local_close,
                                       priority=pool.priority)
        pool.on_closed(self)
        h = self.handler
        self.handler = None
        if h is not None:
            h.on_upstream_closed()

    def send(self, event: ev.Event) -> None:
        data = self.codec.send(event)
        if data and self.transport is not None:
            self.cstats.upstream_cx_tx_bytes_total.value += len(data)
            self.transport.write(data)

    def send_head(self, method: bytes, target: bytes, authority: bytes, scheme: bytes,
                  headers: ev.Headers, end_stream: bool) -> None:
        data = self.codec.send_request_head(method, target, authority, scheme, headers,
                                            end_stream)
        t = self.transport
        if t is not None:
            self.cstats.upstream_cx_tx_bytes_total.value += len(data)
            t.write(data)

    def send_data(self, data: bytes, end_stream: bool) -> None:
        out = self.codec.send_data(0, data, end_stream)
        t = self.transport
        if out and t is not None:
            self.cstats.upstream_cx_tx_bytes_total.value += len(out)
            t.write(out)

    def release(self) -> None:
        """The exchange is over: back to the pool, or closed when it cannot be reused."""
        self.handler = None
        self.requests += 1
        pool = self.pool
        if not self.codec.keep_alive:
            self.cstats.upstream_cx_close_notify.value += 1
            self.close()
        elif pool.max_requests and self.requests >= pool.max_requests:
            self.cstats.upstream_cx_max_requests.value += 1
            self.close()
        elif self.closed or not self.codec.idle:
            self.close()
        else:
            pool.on_idle(self)

    def close(self) -> None:
        t = self.transport
        if t is not None and not self.closed:
            self.local_close = True
            t.close()

    def abort(self) -> None:
        """Reset the connection in the middle of an exchange; its handler hears no more."""
        self.handler = None
        self.reset_active = True
        t = self.transport
        if t is not None and not self.closed:
            self.local_close = True
            t.abort()


class Http1Pool:
    protocol = "HTTP/1.1"  # (an egress span's http.protocol, router/tracing.py)

    def __init__(self, cluster: Cluster, host: Host, backend: Backend,
                 max_requests: int, priority: str = "DEFAULT") -> None:
        self.cluster = cluster
        self.host = host
        self.priority = priority
        self.resources = cluster.resources[priority]  # the priority's circuit breakers
        self.address_string = host.address_string  # formatted once, not per request
        self.backend = backend
        self.max_requests = max_requests
        self.idle: list[UpstreamConnection] = []
        self.pending: deque[PoolCallbacks] = deque()
        self.connecting = 0

    def take_idle(self, cb: PoolCallbacks) -> UpstreamConnection | None:
        """An idle connection, now handling ``cb``'s request; None when none is idle (then
        ``request(cb)`` connects or queues)."""
        idle = self.idle
        while idle:
            c = idle.pop()
            if not c.closed:
                c.handler = cb
                return c
        return None

    def request(self, cb: PoolCallbacks) -> None:
        idle = self.idle
        while idle:
            c = idle.pop()
            if not c.closed:
                c.handler = cb
                cb.on_pool_ready(c)
                return
        cluster = self.cluster
        st = cluster.stats
        rm = self.resources
        if not rm.pending_requests.can_create():
            st.upstream_rq_pending_overflow.value += 1
            cb.on_pool_failure("overflow", self.host)
            return
        st.upstream_rq_pending_total.value += 1
        st.upstream_rq_pending_active.inc()
        rm.pending_requests.inc()
        self.pending.append(cb)
        if not rm.connections.can_create():
            st.upstream_cx_overflow.value += 1
            return  # waits for a connection to come back
        self._start_connect()

    def _start_connect(self) -> None:
        self.resources.connections.inc()  # reserved now; Cluster.connect takes it over
        self.connecting += 1
        asyncio.get_running_loop().create_task(self._connect())

    def _unpend(self) -> None:
        self.cluster.stats.upstream_rq_pending_active.dec()
        self.resources.pending_requests.dec()

    def cancel(self, cb: PoolCallbacks) -> None:
        try:
            self.pending.remove(cb)
        except ValueError:
            return
        self._unpend()
        self.cluster.stats.upstream_rq_cancelled.value += 1

    async def _connect(self) -> None:
        st = self.cluster.stats
        scope = st.scope
        for name in _CODEC_STATS:  # the HTTP/1 client codec's stats, made with the first one
            scope.counter(name)
        st.upstream_cx_http1_total.value += 1  # Envoy counts the attempt, as upstream_cx_total
        try:
            _, conn = await self.cluster.connect(self.host, lambda: UpstreamConnection(self),
                                                 priority=self.priority, reserved=True,
                                                 alpn_fallback=("http/1.1",))
        except UpstreamConnectError as exc:
            self.connecting -= 1
            if self.pending:
                cb = self.pending.popleft()
                self._unpend()
                st.upstream_rq_pending_failure_eject.value += 1
                cb.on_pool_failure("timeout" if exc.timeout else "connection_failure",
                                   self.host, exc.reason)
            return
        self.connecting -= 1
        self.on_idle(conn)

    def on_idle(self, conn: UpstreamConnection) -> None:
        if self.pending:
            cb = self.pending.popleft()
            self._unpend()
            conn.handler = cb
            cb.on_pool_ready(conn)
        else:
            self.idle.append(conn)

    def on_closed(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        # A queued request may now fit under max_connections.
        if self.pending and self.resources.connections.can_create():
            self._start_connect()

    def close_idle(self) -> None:
        """The host left the cluster: close the idle connections (busy ones finish first)."""
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


#: ``cluster.extra`` key of the cluster's HTTP/1.1 pools: {host or (host, priority): pool}.
POOLS = "envoi_http1_pools"


def pool_for(cluster: Cluster, host: Host, backend: Backend,
             max_requests: int | None = None, priority: str = "DEFAULT") -> Http1Pool:
    """The pool of (cluster, host, priority); ``max_requests`` defaults to the cluster's
    ``max_requests_per_connection`` (read once, when the pool is made)."""
    pools: dict[Any, Http1Pool] | None = cluster.extra.get(POOLS)
    if pools is None:
        pools = cluster.extra[POOLS] = {}
        cluster.add_member_update_cb(lambda _added, removed: _drop_pools(pools, removed))
    key = host if priority == "DEFAULT" else (host, priority)
    p = pools.get(key)
    if p is None:
        if max_requests is None:
            cfg = cluster.config
            max_requests = (cfg.max_requests_per_connection.value if cfg is not None
                            and cfg.HasField("max_requests_per_connection") else 0)
        p = pools[key] = Http1Pool(cluster, host, backend, max_requests, priority)
        p.resources.connection_pools.inc()  # (max_connection_pools is not enforced: no limit)
    return p


def _drop_pools(pools: dict[Any, Http1Pool], removed: list[Host]) -> None:
    """Hosts that left the cluster: their pools go (requests in flight keep their pool)."""
    gone = set(removed)
    for key in [k for k, p in pools.items() if p.host in gone]:
        p = pools.pop(key)
        p.close_idle()
        p.resources.connection_pools.dec()
