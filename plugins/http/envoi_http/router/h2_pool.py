"""Upstream HTTP/2 connection pools: many streams per connection, one pool per (cluster, host).

The pool has the HTTP/1.1 pool's face (``request(cb)``, ``cancel(cb)``; ``cb.on_pool_ready(handle)``
or ``cb.on_pool_failure(reason, host)``), and the handle a request gets has the HTTP/1.1
``UpstreamConnection``'s (``send_head``, ``send``, ``send_data``, ``release``, ``abort``,
``handler``, ``transport.pause_reading()``), so the router drives either the same way. Here the
handle is one *stream* on a shared connection:

- A connection takes streams up to ``min(configured max_concurrent_streams, the peer's
  SETTINGS_MAX_CONCURRENT_STREAMS)`` and, if set, ``max_requests_per_connection`` in its life
  (then it drains: ``upstream_cx_max_requests``). A connection is ready when the peer's first
  SETTINGS arrives, so no stream ever exceeds the peer's limit. Requests beyond the open
  connections' room wait (``upstream_rq_pending_*``) while new connections are made, as many as
  the waiting requests need, up to the cluster's ``max_connections`` (``upstream_cx_overflow``).
- GOAWAY from the upstream: the connection drains (``upstream_cx_close_notify``), streams above
  its ``last_stream_id`` are reset as refused, new requests go to another connection, and it
  closes when its last stream ends.
- Flow control is per stream: ``handle.transport.pause_reading()`` (the router's answer to a
  slow client) stops acknowledging that stream's DATA, so only that stream's window closes and
  the others keep flowing; received bytes are acknowledged once the handler has taken them.
  The connection's write buffer going over its high watermark, or a stream's send buffer over
  the codec's limit, tells the stream's handler ``on_upstream_above_high_watermark``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from envoi.upstream.cluster import Cluster, Host, UpstreamConnectError

from envoi_http.codec import events as ev
from envoi_http.codec import h2_events as hev
from envoi_http.codec.h2_codec import H2Codec
from envoi_http.codec.h2_hpack import never_indexed
from envoi_http.codec.h2_options import DEFAULT_OPTIONS, Http2Options
from envoi_http.codec.h2_stats import Http2CodecStats, codec_stats
from envoi_http.h2_keepalive import Keepalive
from envoi_http.router.pool import PoolCallbacks


class H2Stream:
    """What a request holds: one stream. ``transport`` is the stream itself, so the router's
    ``up.transport.pause_reading()`` pauses this stream, not the connection."""

    __slots__ = ("above", "conn", "handler", "paused", "reset_active", "stream_id", "unacked")

    def __init__(self, conn: H2UpstreamConnection, handler: PoolCallbacks) -> None:
        self.conn = conn
        self.handler: PoolCallbacks | None = handler
        self.stream_id = 0
        self.paused = False
        self.above = False  # the handler was told "above high watermark"
        self.unacked = 0  # bytes taken while paused, acknowledged on resume
        self.reset_active = False

    @property
    def transport(self) -> H2Stream:
        return self

    def send_head(self, method: bytes, target: bytes, authority: bytes, scheme: bytes,
                  headers: ev.Headers, end_stream: bool) -> None:
        conn = self.conn
        sid = conn.codec.send_request_head(method, target, authority, scheme,
                                           never_indexed(headers), end_stream)
        self.stream_id = sid
        conn.streams[sid] = self
        conn.flush_soon()

    def send_data(self, data: bytes, end_stream: bool) -> None:
        conn = self.conn
        conn.codec.send_data(self.stream_id, data, end_stream)
        conn.flush_soon()
        if conn.codec.send_blocked(self.stream_id):
            self._above(True)

    def send(self, event: ev.Event) -> None:
        t = type(event)
        if t is ev.Body:
            self.send_data(event.data, event.end_stream)  # type: ignore[union-attr]
        elif t is ev.Trailers:
            self.conn.codec.send_trailers(self.stream_id, event.headers)  # type: ignore[union-attr]
            self.conn.flush_soon()
        else:
            raise TypeError(f"an HTTP/2 stream does not send {t.__name__}")

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.unacked:
                self.conn.codec.acknowledge(self.stream_id, self.unacked)
                self.unacked = 0
                self.conn.flush_soon()

    def release(self) -> None:
        """The exchange is over. A stream the upstream has not finished (the response ended
        before the request) is reset, as Envoy resets it."""
        if self.handler is None:
            return
        self.handler = None
        conn = self.conn
        if self.stream_id in conn.streams:
            conn.codec.reset_stream(self.stream_id)
        conn.stream_done(self)

    def abort(self) -> None:
        """Reset this stream (the router gave up on it); the connection and its other streams
        go on."""
        if self.handler is None and self.stream_id not in self.conn.streams:
            return
        self.handler = None
        self.reset_active = True
        conn = self.conn
        # (a stream the upstream reset is not reset again, nor counted)
        if self.stream_id in conn.streams and conn.codec.is_open(self.stream_id):
            conn.codec.reset_stream(self.stream_id)
            conn.stats.upstream_rq_tx_reset.value += 1
        conn.stream_done(self)

    def close(self) -> None:
        self.abort()

    def _above(self, above: bool) -> None:
        h = self.handler
        if above == self.above or h is None:
            return
        self.above = above
        if above:
            h.on_upstream_above_high_watermark()
        else:
            h.on_upstream_below_low_watermark()


class H2UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool
        self.stats = pool.cluster.stats
        self.codec = H2Codec("client", pool.options, stats=pool.codec_stats,
                             max_headers_kb=pool.max_headers_kb,
                             max_headers_count=pool.max_headers_count)
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | Any = None
        self.streams: dict[int, H2Stream] = {}  # open streams by id (sent, not yet done)
        self.attached = 0  # handles given out and not yet done (streams before their head too)
        self.limit = pool.options.max_concurrent_streams  # until the peer's SETTINGS
        self.ready = False  # the peer's first SETTINGS arrived
        self.draining = False
        self.created = 0  # streams made in this connection's life
        self.closed = False
        self.local_close = False
        self.write_blocked = False
        self.flush_pending = False
        self.keepalive: Keepalive | None = None
        self.active_at_eof = False  # streams were open when the upstream closed
        self.started = time.monotonic()

    # -- room ----------------------------------------------------------------------------

    @property
    def room(self) -> int:
        """How many more streams this connection takes now."""
        if not self.ready or self.draining or self.closed or not self.codec.can_open_stream:
            return 0
        room = self.limit - self.attached
        mr = self.pool.max_requests
        if mr:
            room = min(room, mr - self.created)
        return max(room, 0)

    def new_stream(self, handler: PoolCallbacks) -> H2Stream:
        self.attached += 1
        self.created += 1
        mr = self.pool.max_requests
        if mr and self.created >= mr and not self.draining:
            self.stats.upstream_cx_max_requests.value += 1
            self.draining = True
        return H2Stream(self, handler)

    def stream_done(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        self.attached -= 1
        self.flush()
        if self.draining and self.attached <= 0:
            self.close()
        elif not self.closed:
            self.pool.on_room(self)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()  # (once: each call costs a getpid())
        ka = self.pool.options.keepalive
        if ka is not None:
            self.keepalive = Keepalive(self.loop, ka, self._ping, self._keepalive_expired)
        self.pool.on_connected(self)
        self.flush()

    def _ping(self, opaque: bytes) -> None:
        self.codec.send_ping(opaque)
        self.flush()

    def _keepalive_expired(self) -> None:
        """No answer to a PING in time: the connection is dead (Envoy closes without flush)."""
        self.pool.codec_stats.keepalive_timeout.value += 1
        t = self.transport
        if t is not None and not self.closed:
            self.local_close = True
            self.closed = True
            t.abort()

    def data_received(self, data: bytes) -> None:
        self.stats.upstream_cx_rx_bytes_total.value += len(data)
        if self.keepalive is not None:
            self.keepalive.received()
        codec = self.codec
        by_stream: dict[int, list[ev.Event]] = {}
        writable: list[int] = []
        for e in codec.receive(data):
            sid = e.stream_id
            if not sid:
                self._connection_event(e)
            elif type(e) is hev.StreamWritable:
                writable.append(sid)
            elif sid in self.streams:
                by_stream.setdefault(sid, []).append(e)  # type: ignore[arg-type]
        for sid, events in by_stream.items():
            s = self.streams.get(sid)
            h = s.handler if s is not None else None
            if s is None or h is None:
                continue
            h.on_upstream_events(events)
            taken = 0
            for e in events:
                if type(e) is ev.Body:
                    taken += len(e.data)
            if taken:  # handed on: the upstream may send more (later, if the stream is paused)
                if s.paused:
                    s.unacked += taken
                else:
                    codec.acknowledge(sid, taken)
            if not codec.is_open(sid):
                self.streams.pop(sid, None)
        for sid in writable:
            s = self.streams.get(sid)
            if s is not None:
                s._above(self.write_blocked)
        self.flush()
        if codec.dead and not self.closed:
            self.close()

    def _connection_event(self, e: Any) -> None:
        t = type(e)
        if t is hev.PeerSettings:
            peer = e.max_concurrent_streams
            configured = self.pool.options.max_concurrent_streams
            self.limit = configured if peer is None else min(peer, configured)
            first = not self.ready
            self.ready = True
            self.pool.on_room(self, connected=first)
        elif t is hev.GoAwayReceived:
            if not self.draining:
                self.stats.upstream_cx_close_notify.value += 1
                self.draining = True
            self.pool.on_draining(self)
        elif t is hev.PingAck:
            if self.keepalive is not None:
                self.keepalive.acked()
        elif t is ev.ProtocolError or t is hev.Flood:
            self.stats.upstream_cx_protocol_error.value += 1

    def eof_received(self) -> bool:
        self.active_at_eof = self.attached > 0
        events = self.codec.receive(b"")
        for e in events:
            s = self.streams.get(e.stream_id)
            if s is not None and s.handler is not None and type(e) is ev.StreamReset:
                s.handler.on_upstream_events([e])
        return False

    def pause_writing(self) -> None:
        self.write_blocked = True
        for s in list(self.streams.values()):
            s._above(True)

    def resume_writing(self) -> None:
        self.write_blocked = False
        t = self.transport
        if t is not None:
            self.codec.transport_buffered(t.get_write_buffer_size())
        for s in list(self.streams.values()):
            s._above(self.codec.send_blocked(s.stream_id))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.keepalive is not None:
            self.keepalive.close()
        pool = self.pool
        active = self.attached > 0 or self.active_at_eof
        if not self.codec.dead:
            self.codec.receive(b"")
        pool.cluster.connection_closed(pool.host, self.started, local=self.local_close,
                                       active_rq=active, priority=pool.priority)
        pool.on_closed(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for s in streams:
            h = s.handler
            s.handler = None
            if h is not None:
                h.on_upstream_closed()

    # -- output --------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Write what is queued once this loop iteration's callbacks have run: the heads and
        data of the requests started in one iteration leave in one write."""
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.flush_pending = False
        self.flush()

    def flush(self) -> None:
        data = self.codec.data_to_send()
        t = self.transport
        if data and t is not None and not self.closed:
            self.stats.upstream_cx_tx_bytes_total.value += len(data)
            t.write(data)
            self.codec.transport_buffered(t.get_write_buffer_size())
            if self.codec.failed is not None:
                self.close()

    def close(self) -> None:
        t = self.transport
        if t is not None and not self.closed:
            self.local_close = True
            self.closed = True
            t.close()


class H2Pool:
    protocol = "HTTP/2"  # (an egress span's http.protocol, router/tracing.py)

    def __init__(self, cluster: Cluster, host: Host, options: Http2Options = DEFAULT_OPTIONS,
                 max_requests: int = 0, priority: str = "DEFAULT", *, max_headers_kb: int = 60,
                 max_headers_count: int = 100) -> None:
        self.cluster = cluster
        self.host = host
        self.address_string = host.address_string
        self.options = options
        self.max_requests = max_requests
        self.priority = priority
        self.resources = cluster.resources[priority]  # the priority's circuit breakers
        self.max_headers_kb = max_headers_kb
        self.max_headers_count = max_headers_count
        self.codec_stats: Http2CodecStats = cluster.extra.get("envoi_http2_stats") or \
            cluster.extra.setdefault("envoi_http2_stats", codec_stats(_cluster_scope(cluster)))
        self.conns: list[H2UpstreamConnection] = []  # connected (ready or not), not closed
        self.connecting = 0
        self.pending: deque[PoolCallbacks] = deque()

    def take_idle(self, cb: PoolCallbacks) -> H2Stream | None:
        """A stream on a connection with room, now handling ``cb``'s request; None when no
        connection has room (then ``request(cb)`` connects or queues)."""
        for conn in self.conns:
            if conn.room > 0:
                return conn.new_stream(cb)
        return None

    def request(self, cb: PoolCallbacks) -> None:
        for conn in self.conns:
            if conn.room > 0:
                cb.on_pool_ready(conn.new_stream(cb))
                return
        st = self.cluster.stats
        rm = self.resources
        if not rm.pending_requests.can_create():
            st.upstream_rq_pending_overflow.value += 1
            cb.on_pool_failure("overflow", self.host)
            return
        st.upstream_rq_pending_total.value += 1
        st.upstream_rq_pending_active.inc()
        rm.pending_requests.inc()
        self.pending.append(cb)
        self._maybe_connect()

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

    def _expected_room(self) -> int:
        """Streams the connections not yet ready will take (the configured limit each)."""
        per = self.options.max_concurrent_streams
        if self.max_requests:
            per = min(per, self.max_requests)
        # a connection just made is in ``conns`` and still in ``connecting`` for a moment
        made = sum(1 for c in self.conns if not c.ready and not c.closed)
        return max(self.connecting, made) * per

    def _maybe_connect(self) -> None:
        rm = self.resources
        while len(self.pending) > self._expected_room():
            if not rm.connections.can_create():
                self.cluster.stats.upstream_cx_overflow.value += 1
                return  # waits for room on a connection that exists
            rm.connections.inc()  # reserved now; Cluster.connect takes it over
            self.connecting += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        st = self.cluster.stats
        st.upstream_cx_http2_total.value += 1  # Envoy counts the attempt, as upstream_cx_total
        try:
            await self.cluster.connect(self.host, lambda: H2UpstreamConnection(self),
                                       priority=self.priority, reserved=True,
                                       alpn_fallback=("h2",))
        except UpstreamConnectError as exc:
            self.connecting -= 1
            reason = "timeout" if exc.timeout else "connection_failure"
            # the requests no other connection in the making can take fail now
            while self.pending and len(self.pending) > self._expected_room():
                cb = self.pending.pop()
                self._unpend()
                st.upstream_rq_pending_failure_eject.value += 1
                cb.on_pool_failure(reason, self.host, exc.reason)
            return
        self.connecting -= 1
        if self.pending:
            self._maybe_connect()

    def on_connected(self, conn: H2UpstreamConnection) -> None:
        """TCP (and TLS) is up; the connection is ready for streams once the peer's SETTINGS
        come. It stays counted in ``connecting`` until ``cluster.connect`` has returned."""
        self.conns.append(conn)

    def on_room(self, conn: H2UpstreamConnection, connected: bool = False) -> None:
        """A connection got room (ready, a stream ended, the peer raised its limit)."""
        while self.pending and conn.room > 0:
            cb = self.pending.popleft()
            self._unpend()
            cb.on_pool_ready(conn.new_stream(cb))
        if connected and self.pending:
            self._maybe_connect()  # the peer allows fewer streams than hoped

    def on_draining(self, conn: H2UpstreamConnection) -> None:
        if conn.attached <= 0:
            conn.close()
        if self.pending:
            self._maybe_connect()

    def on_closed(self, conn: H2UpstreamConnection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
        if self.pending:
            self._maybe_connect()

    def close_idle(self) -> None:
        """The host left the cluster: connections without streams close, the others drain."""
        for conn in list(self.conns):
            conn.draining = True
            if conn.attached <= 0:
                conn.close()


def _cluster_scope(cluster: Cluster) -> Any:
    """``cluster.<name>.``: where Envoy puts an upstream codec's ``http2.*`` stats."""
    return cluster.stats.scope


def h2_pool_for(cluster: Cluster, host: Host, options: Http2Options = DEFAULT_OPTIONS,
                max_requests: int | None = None, priority: str = "DEFAULT") -> H2Pool:
    """The HTTP/2 pool of (cluster, host, priority); ``max_requests`` defaults to the
    cluster's ``max_requests_per_connection``."""
    pools: dict[Any, H2Pool] | None = cluster.extra.get("envoi_h2_pools")
    if pools is None:
        pools = cluster.extra["envoi_h2_pools"] = {}
        cluster.add_member_update_cb(lambda _added, removed: _drop_pools(pools, removed))
    key = host if priority == "DEFAULT" else (host, priority)
    p = pools.get(key)
    if p is None:
        if max_requests is None:
            cfg = cluster.config
            max_requests = (cfg.max_requests_per_connection.value if cfg is not None
                            and cfg.HasField("max_requests_per_connection") else 0)
        p = pools[key] = H2Pool(cluster, host, options, max_requests, priority)
        p.resources.connection_pools.inc()
    return p


def _drop_pools(pools: dict[Any, H2Pool], removed: list[Host]) -> None:
    """Hosts that left the cluster: their pools go (streams in flight finish first)."""
    gone = set(removed)
    for key in [k for k, p in pools.items() if p.host in gone]:
        p = pools.pop(key)
        p.close_idle()
        p.resources.connection_pools.dec()
