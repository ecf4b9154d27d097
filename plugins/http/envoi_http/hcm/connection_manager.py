"""The HCM network filter, protocol-agnostic half: codec events to streams, and what every HTTP
connection has whatever protocol it speaks -- streams by id, the request-side rules (hop-by-hop
fields, the client address, the request id, the route, the filter chain), stream completion
(stats, access logs), resets, local errors, timeouts, deadlines, drain.

The protocol half (``ServerProtocol``: ``hcm/http1.py`` for HTTP/1.1; HTTP/2 adds its own) owns
the codec, turns bytes into the events below and a stream's response into bytes, and decides
what is connection-level in its protocol (HTTP/1.1: pipelining, keep-alive, ``connection:
close``; HTTP/2: stream ids, flow control, GOAWAY).

**Events** (``envoi_http.codec.events``; every one carries ``stream_id``) the protocol half hands
to :meth:`ConnectionManager.dispatch`, in the order received:

- ``RequestHeaders`` opens a stream (``end_stream``: a request without body);
- ``Body`` / ``Trailers`` continue it (``Trailers`` end it); body bytes are handed on as they
  arrive (``ServerProtocol.acknowledge`` is told once they were taken, for flow control);
- ``StreamReset`` the peer reset one stream (HTTP/1.1: the connection ended mid-request);
- ``ProtocolError`` the peer broke the protocol: an error reply on the stream (``stream_id``) if
  it can still have one, else the connection closes;
- ``ConnectionClosed`` the peer closed its side: no new streams;
- ``UpgradeRequested`` (HTTP/1.1) the codec passes raw bytes on for the upgraded stream;
- anything else goes back to ``ServerProtocol.on_event`` (HTTP/2's GOAWAY, window updates...).

**ServerProtocol**, what a protocol half implements (the manager calls it):

- ``multiplexed`` (class attribute): streams run concurrently (HTTP/2) or one after the other;
  ``rq_total``: its ``downstream_rq_http1_total`` / ``_http2_total`` counter;
- ``on_data(data, end_stream)``: bytes from the connection (already counted), to events;
- ``write_head(s, headers, data, end)`` (the head, and its first body bytes in the same write
  when ``data`` is not None), ``write_data(s, data, end)``, ``write_trailers(s, trailers)``,
  ``write_informational(s, headers)``: stream ``s``'s response, already through its encoder
  filters and ``mutateResponseHeaders`` (no hop-by-hop fields; ``date``, ``server`` set);
- ``cork() -> bool`` / ``uncork()``: hold writes and send them as one (``cork`` is False when
  already corked; then the caller must not uncork); ``flush()``: send what is held now;
- ``stream_done(s)``: ``s`` finished (response complete, stream logged): HTTP/1.1 closes or
  serves the next pipelined request (never from inside the finished stream's call stack);
- ``stream_reset(s, local)``: ``s`` was reset (already finished): HTTP/1.1 closes the
  connection on a local reset, HTTP/2 sends RST_STREAM;
- ``read_disable(s, disable)``: stop/resume taking request bytes for ``s`` (HTTP/1.1: the
  connection's reading; HTTP/2: that stream's flow-control window);
- ``acknowledge(s, nbytes)``: ``nbytes`` of ``s``'s request body were handed on upstream
  (HTTP/2: WINDOW_UPDATE; HTTP/1.1: nothing);
- ``drain()``: the connection is draining (HTTP/1.1: ``connection: close`` on the next
  response; HTTP/2: GOAWAY); ``on_event(e)``: protocol-specific events.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from envoi.http.grpc import is_grpc_request
from envoi.http.headers import HeaderMap
from envoi.log import conn_debug, header_lines, stream_debug
from envoi.network.filter import ConnectionCloseType, ConnectionEvent, FilterStatus, ReadFilter

from envoi_http.codec import events as ev
from envoi_http.hcm import duration, internal, upgrade, xff
from envoi_http.hcm import path_normalization as pathnorm
from envoi_http.hcm import tap as hcm_tap
from envoi_http.hcm.request_id import made_ids, request_id
from envoi_http.hcm.stream import (
    CLOSED,
    LOCAL_DONE,
    LOCAL_REPLY,
    REMOTE_DONE,
    STARTED,
    ActiveStream,
    ServerProtocol,
    reason,
)

if TYPE_CHECKING:
    from envoi.network.filter import Connection

    from envoi_http.hcm.settings import HcmConfig
    from envoi_http.router.config import Route

log = logging.getLogger("envoi.http")
STOP = FilterStatus.STOP_ITERATION
_monotonic = time.monotonic
# Hop-by-hop request headers a proxy must not forward (and ``host``: it is ``:authority``).
_REQ_DROP = frozenset((b"host", b"connection", b"keep-alive", b"proxy-connection",
                       b"transfer-encoding", b"upgrade", b"http2-settings", b"te", b"expect"))
# Request headers that xff.mutate or the request id look at (or remove).
_MUTATE_READS = internal.MUTATE_READS


# This process's open HTTP connections, for the server's drain (plugin.envoi_draining).
_LIVE: weakref.WeakSet[ConnectionManager] = weakref.WeakSet()


def drain_all() -> None:
    """Start the drain of every open HTTP connection of this process."""
    for hcm in list(_LIVE):
        hcm.drain()


class ConnectionManager(ReadFilter):
    loop: asyncio.AbstractEventLoop
    proto: ServerProtocol

    def __init__(self, config: HcmConfig) -> None:
        self.config = config
        self.stats = config.stats
        self.server_name = config.server_name
        self.local_reply = config.local_reply
        self.streams: dict[int, ActiveStream] = {}
        self.first = True
        self.closing = False
        # Envoy's accounting of how a connection ended: the peer's FIN makes the close remote
        # (the HCM has no half-close); bytes of a request head not yet complete make a request
        # that the close resets; a reply to a protocol error closes after the peer does or
        # after delayed_close_timeout (Envoy's FlushWriteAndDelay).
        self.peer_eof = False
        self.head_pending = False
        self.delay_close = False
        self.reset_on_close = False
        self.delay_timer: asyncio.TimerHandle | None = None
        # Draining (idle timeout after a request, or the server shutting down): the next
        # response says ``connection: close`` (HTTP/2: GOAWAY) and the connection closes after.
        self.drain_close = False
        # The server's drain (not a listener's): an idle connection closes at once.
        self.drain_closes_idle = False
        self.tls = False  # the connection terminates TLS (x-forwarded-proto: https)
        self.debug = False  # log stream life at debug level ([C<id>][S<id>]); see on_new_connection
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.headers_timer: asyncio.TimerHandle | None = None
        self.buffer_limit = 1024 * 1024
        self.listener_stats: Any = None
        self.remote_ip = b""
        self.remote_address = self.local_address = ""
        self.conn_info: Any = None  # the connection's stream info (TLS facts for each stream)
        # The one timer for the deadlines of every stream's filters (ActiveStream.start_deadline)
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.deadline_when = 0.0

    # -- network filter ---------------------------------------------------------------------

    def on_new_connection(self) -> FilterStatus:
        conn = self.conn = self.read_callbacks.connection
        # asyncio.get_running_loop() costs a getpid() syscall per call: ask once per connection.
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        st = self.stats
        st.downstream_cx_total.value += 1
        st.downstream_cx_active.inc()
        if conn.ssl is not None:
            self.tls = True
            st.downstream_cx_ssl_total.value += 1
            st.downstream_cx_ssl_active.inc()
        listener = getattr(conn, "listener", None)
        self.buffer_limit = getattr(listener, "buffer_limit", self.buffer_limit)
        self.listener_stats = cfg.listener_stats_for(listener)
        info = self.conn_info = conn.stream_info
        self.remote_address = info.downstream_remote_address
        self.local_address = info.downstream_local_address
        self.remote_ip = self.remote_address.rsplit(":", 1)[0].strip("[]").encode()
        protocol = self.config.protocol
        assert protocol is not None, "HcmConfig.protocol: the factory sets it"
        self.proto = protocol(self)
        conn.add_connection_callbacks(self.on_event)
        _LIVE.add(self)
        conn.add_watermark_callbacks(self.on_high_watermark, self.on_low_watermark)
        self.debug = log.isEnabledFor(logging.DEBUG)  # asked once: free when debug is off
        self.last_activity = _monotonic()
        self._arm_timer()
        return FilterStatus.CONTINUE

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        if end_stream:
            self.peer_eof = True
            if self.delay_close:  # the peer closed first: done waiting
                self.close(ConnectionCloseType.FLUSH_WRITE)
                return STOP
        if data:
            self.stats.downstream_cx_rx_bytes_total.value += len(data)
            self.last_activity = _monotonic()
            self.first = False
            if self.headers_timer is None and self.config.request_headers_timeout and \
                    not self.streams and not self.proto.multiplexed:
                self.headers_timer = self.loop.call_later(
                    self.config.request_headers_timeout, self._on_headers_timeout)
            if self.closing:
                return STOP
        elif self.closing:
            return STOP
        self.proto.on_data(data, end_stream)
        return STOP

    def drain(self) -> None:
        """The server is draining (Envoy's drain close): an idle connection closes now, a busy
        one answers its current request with ``connection: close`` and then closes."""
        if self.closing or self.conn.closed:
            return
        self.drain_close = self.drain_closes_idle = True
        self.proto.drain()
        if not self.streams and not self.head_pending:
            self.stats.downstream_cx_drain_close.value += 1
            self.closing = True
            self.close(ConnectionCloseType.FLUSH_WRITE)

    def on_listener_draining(self) -> None:
        """Its listener was replaced or removed over LDS (``envoi.network.listener``). As in
        Envoy, the connection is not closed now -- the listener closes what is left when
        ``--drain-time-s`` is over -- but every response says ``connection: close`` and the
        connection closes after it (HTTP/2: Envoy's GOAWAY sequence). So a request already on
        its way, on a connection accepted just before the replacement or on an idle keep-alive
        one, is answered instead of meeting a close (envoi used to close idle connections at
        once, and reset such requests)."""
        if self.closing or self.conn.closed:
            return
        self.drain_close = True
        self.proto.drain()

    def _drain_timeout(self) -> None:
        self.timer = None
        if self.conn.closed or self.closing:
            return
        if not self.streams:
            self.closing = True
            self.close(ConnectionCloseType.FLUSH_WRITE)
        else:
            self._arm_timer()  # the request in the drain window keeps its timeouts

    def delay_close_after(self, request_complete: bool) -> bool:
        """After a protocol error's reply, Envoy's FlushWriteAndDelay: the reply is flushed
        and the peer gets delayed_close_timeout to close first (so the unread rest of its
        request does not turn our close into a reset that loses the reply). False when the
        connection is to close at once."""
        if not (self.delay_close and not self.peer_eof and self.config.delayed_close_timeout):
            return False
        self.reset_on_close = not request_complete
        self.proto.flush()
        self.delay_timer = self.loop.call_later(self.config.delayed_close_timeout,
                                                self._on_delayed_close_timeout)
        return True

    def _on_delayed_close_timeout(self) -> None:
        self.delay_timer = None
        if not self.conn.closed:
            self.stats.downstream_cx_delayed_close_timeout.value += 1
            self.reset_on_close = False
            self.close(ConnectionCloseType.FLUSH_WRITE)

    def close(self, how: ConnectionCloseType) -> None:
        self.proto.flush()
        self.conn.close(how)

    # -- codec events -------------------------------------------------------------------------

    def dispatch(self, events: list[ev.Event]) -> None:
        streams = self.streams
        for e in events:
            t = type(e)
            if t is ev.Body:
                s = streams.get(e.stream_id)
                if s is not None:
                    s.decode_data(e.data, e.end_stream)  # type: ignore[union-attr]
            elif t is ev.RequestHeaders:
                self.new_stream(e)  # type: ignore[arg-type]
            elif t is ev.Trailers:
                s = streams.get(e.stream_id)
                if s is not None:
                    s.decode_trailers(HeaderMap(e.headers))  # type: ignore[union-attr]
            elif t is ev.ProtocolError:
                self.protocol_error(e)  # type: ignore[arg-type]
                if not self.proto.multiplexed:
                    return
            elif t is ev.StreamReset:
                s = streams.get(e.stream_id)
                if s is not None:
                    self.reset_stream(s, local=False)
                if not self.proto.multiplexed:  # HTTP/1.1: the connection ended mid-request
                    self.close(ConnectionCloseType.FLUSH_WRITE)
                    return
            elif t is ev.ConnectionClosed:
                self.closing = True
                self.close(ConnectionCloseType.FLUSH_WRITE)
                return
            elif t is ev.UpgradeRequested:
                s = streams.get(e.stream_id)
                if s is not None and s.upgrade:
                    if e.data:  # type: ignore[union-attr]
                        s.decode_data(e.data, False)  # type: ignore[union-attr]
                    continue
                if s is not None and not s.state & STARTED:  # CONNECT: not supported
                    self.stats.downstream_rq_ws_on_non_ws_route.value += 1
                    s.send_local_reply(403, b"", details="upgrade_failed")
                return
            else:
                self.proto.on_event(e)
            if self.closing:
                return

    # -- requests ----------------------------------------------------------------------------

    def new_stream(self, e: ev.RequestHeaders) -> None:
        self.head_pending = False
        if self.headers_timer is not None:
            self.headers_timer.cancel()
            self.headers_timer = None
        cfg = self.config
        if cfg.underscores_action and xff.underscored(e.headers) and not self._underscores(e):
            return
        version = e.http_version
        if version == b"1.0" and not cfg.accept_http_10:
            # Envoy refuses HTTP/1.0 in the codec: a protocol error (DPE), body and all.
            self.protocol_error(ev.ProtocolError(e.stream_id, 426, "low_version"))
            return
        st = self.stats
        st.downstream_rq_total.value += 1
        self.proto.rq_total.value += 1
        st.downstream_rq_active.inc()
        raw = e.headers
        token = e.upgrade
        # The request's content-type, for ActiveStream.is_grpc, when the pass below looked.
        ctype: bytes | None = None
        looked = False
        if token and token != b"h2c" and token != b"connect":
            raw = upgrade.request_headers(raw)
        else:
            token = b""
            looked = True
            # In place, from the end (the list is the codec's, made for this request): cheaper
            # than a new list for the usual one or two headers to drop (``host`` is always one).
            i = len(raw) - 1
            while i >= 0:
                name = raw[i][0]
                if name in _REQ_DROP:
                    if not (name == b"te" and raw[i][1].lower() == b"trailers"):
                        del raw[i]  # (``te: trailers`` goes on, as Envoy keeps it: gRPC needs it)
                elif name == b"content-type":
                    ctype = raw[i][1]  # (from the end: the first one is what is left)
                i -= 1
        path = e.target
        if path[:1] != b"/":
            if path.startswith((b"http://", b"https://")):
                rest = path.split(b"://", 1)[1]
                path = b"/" + rest.split(b"/", 1)[1] if b"/" in rest else b"/"
            elif e.method != b"CONNECT" and path != b"*":
                st.downstream_rq_non_relative_path.value += 1
        headers = HeaderMap(raw, method=e.method, path=path, authority=e.authority,
                            scheme=e.scheme)
        tap = cfg.tap
        if tap is not None and tap.active:  # the request head on the live tap (hcm/tap.py)
            hcm_tap.publish_request(tap, self.conn.id, e.stream_id, "HTTP/2" if version == b"2"
                                    else "HTTP/1.0" if version == b"1.0" else "HTTP/1.1",
                                    headers)
        norm = cfg.path_normalization
        if norm is not None and path[:1] == b"/":
            # Before routing and filters: all see the path the upstream sees.
            action, headers.path = norm.apply(path)
            if action != pathnorm.CONTINUE:
                self._path_local_reply(e, headers, action)
                return
        client = None
        tracing = cfg.tracing
        new_id = False  # (the request id is ours, and no header tracing reads is there)
        if cfg.use_remote_address:
            client = self._mutate_request(headers)
        else:
            # (with tracing, its headers too: hcm/tracing.py HttpTracing.reads)
            reads = _MUTATE_READS if tracing is None else tracing.reads or _MUTATE_READS
            for k, _ in raw:
                if k in reads:
                    client = self._mutate_request(headers)
                    break
            else:  # what _mutate_request comes to when none of its headers is set
                raw.append((b"x-forwarded-proto", b"https" if self.tls else b"http"))
                if cfg.generate_request_id:
                    ids = made_ids  # request_id(), its usual case inline
                    raw.append((b"x-request-id", ids.pop() if ids else request_id()))
                    new_id = tracing is not None and tracing.reads is not None
        # The route, before the filter chain (Envoy's order: a route may change the chain).
        table = cfg.route_table
        route = table.route(headers) if table is not None else None
        sid = e.stream_id
        grpc = (ctype is not None and is_grpc_request(ctype, headers.path)) if looked else None
        s = self.streams[sid] = ActiveStream(self, sid, headers, self.last_activity, route, True,
                                             grpc)
        if cfg.durations:  # max_stream_duration: the HCM's, then the route's (hcm/duration.py)
            duration.start(s, route, cfg.max_stream_duration)
        if tracing is not None:  # the decision and the ingress span (hcm/tracing.py)
            s.trace = tracing.start_new(headers, route) if new_id else tracing.start(headers,
                                                                                   route)
        if self.debug:
            conn_debug(log, self.conn.id, "new stream")
        if version == b"2":
            s.stream_info.protocol = "HTTP/2"
        elif version == b"1.0":
            s.stream_info.protocol = "HTTP/1.0"
        if token and not self._accept_upgrade(s, token, route):
            return
        if e.expect_continue:
            self.proto.write_informational(s, HeaderMap(status=100))
        if client is not None:  # the client address came from x-forwarded-for
            info = s.stream_info
            info.extra["direct_remote_address"] = info.downstream_remote_address
            info.downstream_remote_address = (
                "[%s]:0" if b":" in client else "%s:0") % client.decode()
        chains = cfg.route_chains
        for factory in (cfg.filter_factories if chains is None else chains.for_route(route)):
            factory(s)
        end = e.end_stream
        if self.debug:
            stream_debug(log, self.conn.id, sid, "request headers complete (end_stream=%s):%s",
                         str(end).lower(), header_lines(headers))
        if end:
            s.state |= REMOTE_DONE
        lone = s.lone  # (the router alone: called directly, as the decoder path would)
        if lone is not None:
            try:
                lone.decode_headers(headers, end)
            except Exception as exc:  # free in 3.11 until something raises
                s.filter_raised(exc, lone.decode_headers)
        else:
            s.dec.run_headers(0, headers, end)

    def _path_local_reply(self, e: ev.RequestHeaders, headers: HeaderMap, action: int) -> None:
        """Path normalisation refused the path (400) or redirects to the normalised one (307),
        as Envoy answers and counts them."""
        s = self.streams[e.stream_id] = ActiveStream(self, e.stream_id, headers,
                                                     self.last_activity)
        if action == pathnorm.REJECT:
            self.stats.downstream_rq_failed_path_normalization.value += 1
            s.send_local_reply(400, b"", details="path_normalization_failed")
            return
        self.stats.downstream_rq_redirected_with_normalized_path.value += 1
        s.send_local_reply(307, b"", headers={"location": headers.path.decode("latin-1")},
                           details="path_normalization_redirect")

    def route_for(self, headers: HeaderMap) -> Route | None:
        table = self.config.route_table
        return table.route(headers) if table is not None else None

    def _accept_upgrade(self, s: ActiveStream, token: bytes, route: Route | None) -> bool:
        st = self.stats
        if not upgrade.allowed(self.config.upgrade_map,
                               route.upgrade_map if route is not None else None, token):
            st.downstream_rq_ws_on_non_ws_route.value += 1
            s.send_local_reply(403, b"", details="upgrade_failed")
            return False
        st.downstream_cx_upgrades_total.value += 1
        st.downstream_cx_upgrades_active.inc()
        s.upgrade = token
        return True

    def _mutate_request(self, h: HeaderMap) -> bytes | None:
        """Envoy's mutateRequestHeaders: x-forwarded-*, internal-only headers, the request id.
        Returns the client address when it came from x-forwarded-for."""
        cfg = self.config
        client = xff.mutate(h, cfg.use_remote_address, cfg.xff_num_trusted_hops, self.remote_ip,
                            cfg.internal_nets, b"https" if self.tls else b"http")
        if cfg.generate_request_id:
            if h.get_bytes(b"x-request-id") is None:
                h.add_bytes(b"x-request-id", request_id())
            elif cfg.use_remote_address and not cfg.preserve_external_request_id and \
                    h.get_bytes(b"x-envoy-internal") is None:
                # An edge request (xff.mutate marks the internal ones): Envoy does not trust
                # the client's request id.
                h.set_bytes(b"x-request-id", request_id())
        return client

    def _underscores(self, e: ev.RequestHeaders) -> bool:
        """headers_with_underscores_action (the request has such a header): False when the
        request was refused (400, as a codec error), True to go on."""
        http1 = self.config.http1_stats
        if self.config.underscores_action == xff.REJECT_REQUEST:
            http1.requests_rejected_with_underscores_in_headers.value += 1
            self.protocol_error(ev.ProtocolError(e.stream_id, 400, "http1.unexpected_underscore",
                                                 "header name with underscore"))
            return False
        e.headers, dropped = xff.drop_underscored(e.headers)
        http1.dropped_headers_with_underscores.value += dropped
        return True

    def _stream_of(self, stream_id: int) -> ActiveStream | None:
        s = self.streams.get(stream_id)
        if s is None and self.streams and not self.proto.multiplexed:
            s = next(iter(self.streams.values()))  # HTTP/1.1: the one in progress
        return s

    def protocol_error(self, e: ev.ProtocolError) -> None:
        """The peer broke the protocol: an error reply when the stream can still get one (its
        status is the codec's hint, the body its reason phrase), else the connection closes."""
        st = self.stats
        st.downstream_cx_protocol_error.value += 1
        self.head_pending = False
        self.delay_close = True
        s = self._stream_of(e.stream_id)
        if s is not None and s.state & STARTED:
            self.closing = True
            self.close(ConnectionCloseType.NO_FLUSH)
            return
        if s is None:
            st.downstream_rq_total.value += 1
            self.proto.rq_total.value += 1
            st.downstream_rq_active.inc()
            s = self.streams[e.stream_id] = ActiveStream(self, e.stream_id, HeaderMap(),
                                                         self.last_activity)
        s.state |= LOCAL_REPLY
        status = e.error_status_hint
        # Envoy answers a missing Host with an empty 400, other codec errors with the reason;
        # the DPE flag is set after the local_reply_config rewrite saw the reply.
        body = b"" if e.details == ev.MISSING_HOST else reason(status).encode()
        s.send_local_reply(status, body, details=e.details, flag="DPE")

    # -- stream completion -------------------------------------------------------------------

    def response_done(self, s: ActiveStream) -> None:
        """``s``'s response was written to its end: count it, finish the stream (``finish``,
        inline), and let the protocol go on (HTTP/1.1: close, or the next request)."""
        state = s.state
        if state & LOCAL_DONE:
            return
        s.state = state | LOCAL_DONE
        st = self.stats
        ls = self.listener_stats
        info = s.stream_info
        cls = info.response_code // 100
        if 1 <= cls <= 5:
            st.by_class[cls].value += 1
            ls.by_class[cls].value += 1
        st.downstream_rq_completed.value += 1
        ls.downstream_rq_completed.value += 1
        if not state & REMOTE_DONE:
            st.downstream_rq_response_before_rq_complete.value += 1
        self.streams.pop(s.stream_id, None)
        if s.upgrade:
            st.downstream_cx_upgrades_active.dec()
        st.downstream_rq_active.value -= 1  # (inc()ed when the stream began: marked used)
        now = info.end_time = s.last_activity
        st.downstream_rq_time.record((now - s.start) * 1000)
        s.destroy()
        trace = s.trace
        if trace is not None and trace.span is not None:  # (after destroy: egress spans first)
            trace.tracing.finish(trace, s)
        tap = self.config.tap
        if tap is not None and tap.active:
            hcm_tap.publish_response(tap, self.conn.id, s, now)
        logs = self.config.access_logs
        if logs:
            for logger in logs:
                logger.log(s)
        self.proto.stream_done(s)

    def finish(self, s: ActiveStream, now: float) -> None:
        """The stream is over (reset, or completed: response_done): it goes, its filters are
        destroyed, it is logged."""
        self.streams.pop(s.stream_id, None)
        st = self.stats
        if s.upgrade:
            st.downstream_cx_upgrades_active.dec()
        st.downstream_rq_active.value -= 1  # (inc()ed when the stream began: marked used)
        s.stream_info.end_time = now
        st.downstream_rq_time.record((now - s.start) * 1000)
        s.destroy()
        trace = s.trace
        if trace is not None and trace.span is not None:  # (unsampled: nothing to finish)
            trace.tracing.finish(trace, s)
        tap = self.config.tap
        if tap is not None and tap.active:
            hcm_tap.publish_response(tap, self.conn.id, s, now, reset=True)
        for logger in self.config.access_logs:
            logger.log(s)

    def reset_stream(self, s: ActiveStream, *, local: bool) -> None:
        if s.state & CLOSED:
            return
        if self.debug:
            stream_debug(log, self.conn.id, s.stream_id, "stream reset (%s)",
                         "local" if local else "remote")
        st = self.stats
        info = s.stream_info
        if local:
            st.downstream_rq_tx_reset.value += 1
            if "LR" not in info.response_flags:
                info.response_flags.append("LR")
        else:
            st.downstream_rq_rx_reset.value += 1
            info.response_flags.append("DC")
        self.finish(s, _monotonic())
        self.proto.stream_reset(s, local)

    def log_filter_error(self, exc: BaseException, filt: object, method: str) -> None:
        name = self.config.filter_name(filt)
        log.error("HTTP filter %s raised in %s: %s: %s", name, method, type(exc).__name__, exc,
                  exc_info=exc)
        self.stats.scope.counter("envoi.filter_exception").value += 1

    # -- connection events -----------------------------------------------------------------

    def on_event(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.CONNECTED:
            return
        _LIVE.discard(self)
        st = self.stats
        st.downstream_cx_destroy.value += 1
        remote = event is ConnectionEvent.REMOTE_CLOSE or self.peer_eof
        if remote:
            st.downstream_cx_destroy_remote.value += 1
        else:
            st.downstream_cx_destroy_local.value += 1
        active = [s for s in self.streams.values() if not s.state & CLOSED]
        pending = self.head_pending and not active
        for _ in range(len(active) + pending):
            st.downstream_cx_destroy_active_rq.value += 1
            if remote:
                st.downstream_cx_destroy_remote_active_rq.value += 1
            else:
                st.downstream_cx_destroy_local_active_rq.value += 1
        for s in active:
            self.reset_stream(s, local=False)
        if pending:
            # Envoy's stream began with the first byte of its head: the close resets it.
            st.downstream_rq_total.value += 1
            self.proto.rq_total.value += 1
            st.downstream_rq_rx_reset.value += 1
        elif not active and self.reset_on_close and remote:
            st.downstream_rq_rx_reset.value += 1  # answered before its request was complete
        st.downstream_cx_active.dec()
        if self.tls:
            st.downstream_cx_ssl_active.dec()
        self.proto.on_connection_closed()
        st.downstream_cx_length_ms.record(
            (_monotonic() - self.conn.stream_info.start_monotonic) * 1000)
        for handle in (self.timer, self.headers_timer, self.deadline_timer, self.delay_timer):
            if handle is not None:
                handle.cancel()

    def on_high_watermark(self) -> None:
        for s in list(self.streams.values()):
            s.above_write_buffer_high_watermark()

    def on_low_watermark(self) -> None:
        for s in list(self.streams.values()):
            s.below_write_buffer_low_watermark()

    # -- timeouts --------------------------------------------------------------------------
    # One timer per connection: activity only stamps a time, and the timer re-arms for the
    # remainder when it fires, so the hot path never reschedules timers.

    def _arm_timer(self, delay: float | None = None) -> None:
        if delay is None:
            delay = self.config.tick
        if delay is None:
            return
        self.timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.conn.closed:
            return
        cfg = self.config
        now = _monotonic()
        nxt: list[float] = []
        streams = [s for s in self.streams.values() if not s.state & CLOSED]
        for s in streams:
            left = self._stream_timeouts(s, now)
            if left is None:
                return
            nxt.extend(left)
        if not streams and cfg.idle_timeout:
            left_idle = self.last_activity + cfg.idle_timeout - now
            if left_idle <= 0:
                self.stats.downstream_cx_idle_timeout.value += 1
                if self.first or not cfg.drain_timeout:
                    self.closing = True
                    self.conn.close(ConnectionCloseType.FLUSH_WRITE)
                else:
                    # Envoy drains a connection that has seen a request: a request in the
                    # drain window is answered with connection: close, then it closes.
                    self.drain_close = True
                    self.proto.drain()
                    self.timer = self.loop.call_later(cfg.drain_timeout, self._drain_timeout)
                return
            nxt.append(left_idle)
        if cfg.tick is not None:
            nxt.append(cfg.tick)
        self._arm_timer(max(0.001, min(nxt)) if nxt else None)

    def _stream_timeouts(self, s: ActiveStream, now: float) -> list[float] | None:
        """The request and stream idle timeouts of ``s``: None when one fired, else the time
        left on each."""
        cfg = self.config
        left: list[float] = []
        complete = s.state & REMOTE_DONE
        if cfg.request_timeout and not complete:
            t = s.start + cfg.request_timeout - now
            if t <= 0:
                self.stats.downstream_rq_timeout.value += 1
                self._timeout_reply(s, 408, b"request timeout", "request_overall_timeout")
                return None
            left.append(t)
        sit = cfg.stream_idle_timeout
        if cfg.route_idle:  # a route's idle_timeout replaces it (router/idle.py)
            route = s.route()
            if route is not None and route.idle_timeout is not None:
                sit = route.idle_timeout
        if sit:
            last = s.last_activity if self.proto.multiplexed else \
                max(s.last_activity, self.last_activity)
            t = last + sit - now
            if t <= 0:
                self.stats.downstream_rq_idle_timeout.value += 1
                # Envoy: 504 once the request is complete (waiting on the response), else 408.
                self._timeout_reply(s, 504 if complete else 408, b"stream timeout",
                                    "stream_idle_timeout")
                return None
            left.append(t)
        return left

    def _timeout_reply(self, s: ActiveStream, status: int, body: bytes, details: str) -> None:
        if s.state & STARTED:
            self.closing = True
            self.reset_stream(s, local=True)
            return
        # A reply before the request is complete closes the connection (HTTP/1.1); a 504 after
        # a complete request keeps it, as Envoy does.
        s.send_local_reply(status, body, details=details)

    def _on_headers_timeout(self) -> None:
        self.headers_timer = None
        if self.streams or self.conn.closed:
            return
        self.stats.downstream_rq_header_timeout.value += 1
        # Envoy answers 408 "request header timeout" (counted as a request) and closes.
        st = self.stats
        st.downstream_rq_total.value += 1
        self.proto.rq_total.value += 1
        st.downstream_rq_active.inc()
        self.closing = True
        self.proto.on_event(ev.ProtocolError(0, 408, "request_header_timeout",
                                             "request header timeout"))
        s = self.streams[0] = ActiveStream(self, 0, HeaderMap(), self.last_activity)
        s.state |= LOCAL_REPLY
        s.send_local_reply(408, b"request header timeout", details="request_header_timeout")

    # -- deadlines ---------------------------------------------------------------------------
    # Each stream keeps its filters' deadlines (the router's request timeout...) in a small
    # table (ActiveStream.start_deadline); one timer per connection serves them all, armed for
    # the earliest and re-armed only when it fires early or an earlier deadline comes: a
    # deadline per request costs a dict entry, not a timer.

    def arm_deadline(self, when: float) -> None:
        """The earliest deadline is now ``when`` (streams add theirs to ``deadlines``)."""
        t = self.deadline_timer
        if t is not None:
            t.cancel()
        self.deadline_when = when
        self.deadline_timer = self.loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self.deadline_timer = None
        now = self.loop.time() + 0.001  # the loop clock counts whole milliseconds
        earliest = 0.0
        for s in list(self.streams.values()):
            table = s.deadlines
            if not table:
                continue
            for fn, when in list(table.items()):
                if when <= now:
                    if table.pop(fn, None) is not None and not s.state & CLOSED:
                        fn()  # (an earlier callback may have cancelled it, or ended s)
                elif not earliest or when < earliest:
                    earliest = when
        for s in self.streams.values():  # (a callback may have started deadlines)
            for when in (s.deadlines or {}).values():
                if not earliest or when < earliest:
                    earliest = when
        if earliest and (self.deadline_timer is None or self.deadline_when > earliest):
            self.arm_deadline(earliest)

    @property
    def conn(self) -> Connection:
        return self._conn

    @conn.setter
    def conn(self, c: Connection) -> None:
        self._conn = c
