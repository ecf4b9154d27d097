"""The HCM network filter: bytes to codec events to streams, and responses back to bytes.

HTTP/1.1 carries one exchange at a time; the codec holds back pipelined requests until
``start_next_cycle``, so responses leave in request order and at most one stream is active.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

from envoi.http.headers import HeaderMap
from envoi.log import conn_debug, header_lines, stream_debug
from envoi.network.filter import ConnectionCloseType, ConnectionEvent, FilterStatus, ReadFilter

from envoi_http.codec import events as ev
from envoi_http.codec import make_codec
from envoi_http.hcm import internal, upgrade, xff
from envoi_http.hcm import path_normalization as pathnorm
from envoi_http.hcm.express import Express
from envoi_http.hcm.stream import ActiveStream, reason
from envoi_http.router import idle as route_idle

if TYPE_CHECKING:
    from envoi.network.filter import Connection

    from envoi_http.hcm.config import HcmConfig

log = logging.getLogger("envoi.http")
STOP = FilterStatus.STOP_ITERATION
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# SETTINGS (empty) then GOAWAY(last stream 0, HTTP_1_1_REQUIRED): a clear "not here" for h2c.
H2_REFUSAL = (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
              b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0d")
# Hop-by-hop request headers a proxy must not forward (and ``host``: it is ``:authority``).
_REQ_DROP = frozenset((b"host", b"connection", b"keep-alive", b"proxy-connection",
                       b"transfer-encoding", b"upgrade", b"http2-settings", b"te", b"expect"))
# Request headers that xff.mutate or the request id look at (or remove).
_MUTATE_READS = internal.INTERNAL_ONLY | {b"x-forwarded-proto", b"x-forwarded-for",
                                         b"x-request-id"}
_RESP_DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                        b"upgrade", b"date", b"server"))

_date_cache: list[Any] = [0, b""]
# uuid4 bits, set on the random bytes of many ids at once: version (byte 6) 4, variant (byte 8) 10.
_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


_BATCH = 256
# The hex digit columns of a 36-byte uuid string (the others are the four dashes).
_UUID_COLUMNS = [c for c in range(36) if c not in (8, 13, 18, 23)]


def _make_request_ids() -> list[bytes]:
    """256 uuid4 strings as ``str(uuid.uuid4())`` makes them, from one ``os.urandom``: the
    version and variant bits set by two ``translate`` calls on strided slices, one hexlify, then
    each hex column copied into place by one strided slice assignment (C loops only)."""
    raw = bytearray(os.urandom(16 * _BATCH))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    hexed = binascii.hexlify(raw)
    out = bytearray(b"-" * (36 * _BATCH))
    for src, dst in enumerate(_UUID_COLUMNS):
        out[dst::36] = hexed[src::32]
    made = bytes(out)
    return [made[i:i + 36] for i in range(0, 36 * _BATCH, 36)]


_request_ids: list[bytes] = []


def _request_id() -> bytes:
    ids = _request_ids
    if not ids:
        ids += _make_request_ids()
    return ids.pop()


os.register_at_fork(after_in_child=_request_ids.clear)  # a child must not reuse the parent's


# This process's open HTTP connections, for the server's drain (plugin.envoi_draining).
_LIVE: weakref.WeakSet[ConnectionManager] = weakref.WeakSet()


def drain_all() -> None:
    """Start the drain of every open HTTP connection of this process."""
    for hcm in list(_LIVE):
        hcm.drain()


def http_date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
    return _date_cache[1]  # type: ignore[no-any-return]


class ConnectionManager(ReadFilter):
    loop: asyncio.AbstractEventLoop
    date = staticmethod(http_date)

    def __init__(self, config: HcmConfig) -> None:
        self.config = config
        self.stats = config.stats
        self.codec = make_codec(config.codec_backend, "server",
                                max_request_headers_kb=config.max_request_headers_kb,
                                max_headers_count=config.max_headers_count,
                                enable_trailers=config.enable_trailers)
        self.stream: ActiveStream | None = None
        self.first = True
        self.closing = False
        # Envoy's accounting of how a connection ended: the peer's FIN makes the close remote
        # (the HCM has no half-close); bytes of a request head not yet complete make a request
        # that the close resets; a reply to a protocol error closes after the peer does or
        # after delayed_close_timeout (Envoy's FlushWriteAndDelay).
        self.peer_eof = False
        self.head_pending = False
        self.http1_counted = False
        self.delay_close = False
        self.reset_on_close = False
        # Draining (idle timeout after a request, or the server shutting down): the next
        # response says ``connection: close`` and the connection closes after it.
        self.drain_close = False
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.headers_timer: asyncio.TimerHandle | None = None
        self.buffer_limit = 1024 * 1024
        self.listener_stats: Any = None
        self.remote_ip = b""
        self.tls = False  # the connection terminates TLS (x-forwarded-proto: https)
        self.upgrade_stream: ActiveStream | None = None  # an accepted upgrade (hcm/upgrade.py)
        # Writes made while handling one read (downstream or upstream) are joined into one
        # transport write: a response head and its body leave in one syscall.
        self._corked: list[bytes] | None = None
        # The router's request timeout: one deadline (loop time) for the connection's current
        # exchange, checked by a timer that is re-armed only when it fires early or would fire
        # late, so a keep-alive connection pays one timer per timeout period, not per request.
        self.deadline_router: Any = None
        self.deadline = 0.0
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.delay_timer: asyncio.TimerHandle | None = None
        self.deadline_when = 0.0
        rc = config.express_router
        self.plain = False  # the last request had no header _mutate_request had to look at
        self.express: Express | None = Express(self, rc) if rc is not None else None
        self.debug = False  # log stream life at debug level ([C<id>][S<id>]); see on_new_connection

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
        self.remote_ip = conn.stream_info.downstream_remote_address.rsplit(":", 1)[0].strip(
            "[]").encode()
        conn.add_connection_callbacks(self.on_event)
        _LIVE.add(self)
        conn.add_watermark_callbacks(self.on_high_watermark, self.on_low_watermark)
        self.debug = log.isEnabledFor(logging.DEBUG)  # asked once: free when debug is off
        self.last_activity = time.monotonic()
        self._arm_timer()
        return FilterStatus.CONTINUE

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        if self._corked is not None:
            return self._on_data(data, end_stream)
        self._corked = []
        try:
            return self._on_data(data, end_stream)
        finally:
            self.uncork()

    def _on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        if end_stream:
            self.peer_eof = True
            if self.delay_close:  # the peer closed first: done waiting
                self._close(ConnectionCloseType.FLUSH_WRITE)
                return STOP
        if data:
            self.stats.downstream_cx_rx_bytes_total.value += len(data)
            self.last_activity = time.monotonic()
            if self.first:
                self.first = False
                if self.config.auto_codec and data.startswith(H2_PREFACE[: len(data)]) and \
                        data[:3] == b"PRI":
                    self._refuse_h2()
                    return STOP
                # Envoy's AUTO codec counts the protocol once the first bytes show it.
                st = self.stats
                st.downstream_cx_http1_total.value += 1
                st.downstream_cx_http1_active.inc()
                self.http1_counted = True
            if self.config.request_headers_timeout and self.stream is None and \
                    self.headers_timer is None and not self._express_busy():
                self.headers_timer = self.loop.call_later(
                    self.config.request_headers_timeout, self._on_headers_timeout)
            if self.closing:
                return STOP
            if self.stream is None and not self.head_pending and data.strip(b"\r\n") and \
                    not self._express_busy():
                self.head_pending = True  # cleared when the head is complete (_new_stream)
            self.dispatch(self.codec.receive(data))
        if end_stream and not self.closing:
            self.dispatch(self.codec.receive(b""))
        return STOP

    def drain(self) -> None:
        """The server is draining (Envoy's drain close): an idle connection closes now, a busy
        one answers its current request with ``connection: close`` and then closes."""
        if self.closing or self.conn.closed:
            return
        self.drain_close = True
        if self.stream is None and not self._express_busy() and not self.head_pending:
            self.stats.downstream_cx_drain_close.value += 1
            self.closing = True
            self._close(ConnectionCloseType.FLUSH_WRITE)

    def _drain_timeout(self) -> None:
        self.timer = None
        if self.conn.closed or self.closing:
            return
        if self.stream is None and not self._express_busy():
            self.closing = True
            self._close(ConnectionCloseType.FLUSH_WRITE)
        else:
            self._arm_timer()  # the request in the drain window keeps its timeouts

    def _on_delayed_close_timeout(self) -> None:
        self.delay_timer = None
        if not self.conn.closed:
            self.stats.downstream_cx_delayed_close_timeout.value += 1
            self.reset_on_close = False
            self._close(ConnectionCloseType.FLUSH_WRITE)

    def _refuse_h2(self) -> None:
        self.stats.downstream_cx_protocol_error.value += 1
        self.closing = True
        self.conn.write(H2_REFUSAL)
        self._close(ConnectionCloseType.FLUSH_WRITE)

    def dispatch(self, events: list[ev.Event]) -> None:
        for e in events:
            t = type(e)
            if t is ev.Body:
                s = self.stream
                if s is not None:
                    s.decode_data(e.data, e.end_stream)  # type: ignore[union-attr]
            elif t is ev.RequestHeaders:
                self._new_stream(e)  # type: ignore[arg-type]
            elif t is ev.Trailers:
                s = self.stream
                if s is not None:
                    s.decode_trailers(HeaderMap(e.headers))  # type: ignore[union-attr]
            elif t is ev.ProtocolError:
                self._promote_express("downstream protocol error")
                self._protocol_error(e)  # type: ignore[arg-type]
                return
            elif t is ev.StreamReset:
                self._promote_express("downstream reset")
                if self.stream is not None:
                    self.reset_stream(self.stream, local=False)
                self._close(ConnectionCloseType.FLUSH_WRITE)
                return
            elif t is ev.ConnectionClosed:
                self._promote_express("downstream closed")
                self.closing = True
                self._close(ConnectionCloseType.FLUSH_WRITE)
                return
            elif t is ev.UpgradeRequested:
                self._promote_express("upgrade")
                s = self.stream
                if s is not None and s is self.upgrade_stream:
                    if e.data:  # type: ignore[union-attr]
                        s.decode_data(e.data, False)  # type: ignore[union-attr]
                    continue
                if s is not None and not s.response_started:  # CONNECT: not supported
                    self.stats.downstream_rq_ws_on_non_ws_route.value += 1
                    s.send_local_reply(403, b"", details="upgrade_failed")
                return
            if self.closing:
                return

    # -- requests ----------------------------------------------------------------------------

    def _new_stream(self, e: ev.RequestHeaders) -> None:
        self.head_pending = False
        if self.headers_timer is not None:
            self.headers_timer.cancel()
            self.headers_timer = None
        cfg = self.config
        if cfg.underscores_action and xff.underscored(e.headers) and not self._underscores(e):
            return
        if e.http_version == b"1.0" and not cfg.accept_http_10:
            # Envoy refuses HTTP/1.0 in the codec: a protocol error (DPE), body and all.
            self._protocol_error(ev.ProtocolError(e.stream_id, 426, "low_version"))
            return
        st = self.stats
        st.downstream_rq_total.value += 1
        st.downstream_rq_http1_total.value += 1
        st.downstream_rq_active.inc()
        raw = e.headers
        token = e.upgrade
        if token and token != b"h2c" and token != b"connect":
            raw = upgrade.request_headers(raw)
        else:
            token = b""
            # In place, from the end (the list is the codec's, made for this request): cheaper
            # than a new list for the usual one or two headers to drop (``host`` is always one).
            i = len(raw) - 1
            while i >= 0:
                if raw[i][0] in _REQ_DROP:
                    del raw[i]
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
        norm = cfg.path_normalization
        if norm is not None and path[:1] == b"/":
            # Before routing, filters and the express lane: all see the path the upstream sees.
            action, headers.path = norm.apply(path)
            if action != pathnorm.CONTINUE:
                self._path_local_reply(e, headers, action)
                return
        express = self.express
        if express is not None and e.end_stream and not token and not e.expect_continue and \
                e.http_version == b"1.1":
            self.plain = False
            client = self._mutate_request(headers)
            if client is None and express.start(e.stream_id, headers, self.plain):
                return
            self._general_stream(e, headers, client)
            return
        s = ActiveStream(self, e.stream_id, headers)
        s.http10 = e.http_version == b"1.0"
        if s.http10:
            s.stream_info.protocol = "HTTP/1.0"
        self.stream = s
        if s.http10 and not cfg.accept_http_10:
            s.send_local_reply(426, b"", details="low_version")
            return
        if token and not self._accept_upgrade(s, token):
            return
        if e.expect_continue:
            self._flush()
            self.conn.write(self.codec.send(ev.Informational(e.stream_id, 100)))
        self._run_stream(s, e.end_stream, self._mutate_request(headers))

    def _path_local_reply(self, e: ev.RequestHeaders, headers: HeaderMap, action: int) -> None:
        """Path normalisation refused the path (400) or redirects to the normalised one (307),
        as Envoy answers and counts them."""
        s = ActiveStream(self, e.stream_id, headers)
        self.stream = s
        if action == pathnorm.REJECT:
            self.stats.downstream_rq_failed_path_normalization.value += 1
            s.send_local_reply(400, b"", details="path_normalization_failed")
            return
        self.stats.downstream_rq_redirected_with_normalized_path.value += 1
        s.send_local_reply(307, b"", headers={"location": headers.path.decode("latin-1")},
                           details="path_normalization_redirect")

    def _general_stream(self, e: ev.RequestHeaders, headers: HeaderMap,
                        client: bytes | None) -> None:
        """A plain HTTP/1.1 request (no upgrade, no expect) the express lane did not take."""
        s = ActiveStream(self, e.stream_id, headers)
        if self.debug:
            conn_debug(log, self.conn.id, "new stream")
        self.stream = s
        self._run_stream(s, e.end_stream, client)

    def _run_stream(self, s: ActiveStream, end_stream: bool, client: bytes | None) -> None:
        cfg = self.config
        if client is not None:  # the client address came from x-forwarded-for
            info = s.stream_info
            info.extra["direct_remote_address"] = info.downstream_remote_address
            info.downstream_remote_address = (
                "[%s]:0" if b":" in client else "%s:0") % client.decode()
        for factory in cfg.filter_factories:
            factory(s)
        if cfg.request_timeout:
            s.filter_state  # noqa: B018  (timer is checked from the connection timer)
        if self.debug:
            stream_debug(log, self.conn.id, s.stream_id, "request headers complete "
                         "(end_stream=%s):%s", str(end_stream).lower(),
                         header_lines(s.request_headers))
        s.decode_headers(end_stream)

    def _express_busy(self) -> bool:
        express = self.express
        return express is not None and express.busy

    def _promote_express(self, why: str) -> None:
        """Something unusual: an exchange in the express lane moves to the general path."""
        express = self.express
        if express is not None and express.busy:
            express.promote(why)

    def _accept_upgrade(self, s: ActiveStream, token: bytes) -> bool:
        st = self.stats
        route = s.route()
        if not upgrade.allowed(self.config.upgrade_map,
                               route.upgrade_map if route is not None else None, token):
            st.downstream_rq_ws_on_non_ws_route.value += 1
            s.send_local_reply(403, b"", details="upgrade_failed")
            return False
        st.downstream_cx_upgrades_total.value += 1
        st.downstream_cx_upgrades_active.inc()
        self.upgrade_stream = s
        return True

    def _mutate_request(self, h: HeaderMap) -> bytes | None:
        cfg = self.config
        if not cfg.use_remote_address:
            raw = h.headers
            for k, _ in raw:
                if k in _MUTATE_READS:
                    break
            else:  # what xff.mutate and the request id come to when none of their headers is set
                self.plain = True
                raw.append((b"x-forwarded-proto", b"https" if self.tls else b"http"))
                if cfg.generate_request_id:
                    raw.append((b"x-request-id", _request_id()))
                return None
        client = xff.mutate(h, cfg.use_remote_address, cfg.xff_num_trusted_hops, self.remote_ip,
                            cfg.internal_nets, b"https" if self.tls else b"http")
        if cfg.generate_request_id:
            if h.get_bytes(b"x-request-id") is None:
                h.add_bytes(b"x-request-id", _request_id())
            elif cfg.use_remote_address and not cfg.preserve_external_request_id and \
                    h.get_bytes(b"x-envoy-internal") is None:
                # An edge request (xff.mutate marks the internal ones): Envoy does not trust
                # the client's request id.
                h.set_bytes(b"x-request-id", _request_id())
        return client

    def _underscores(self, e: ev.RequestHeaders) -> bool:
        """headers_with_underscores_action (the request has such a header): False when the
        request was refused (400, as a codec error), True to go on."""
        http1 = self.config.http1_stats
        if self.config.underscores_action == xff.REJECT_REQUEST:
            http1.requests_rejected_with_underscores_in_headers.value += 1
            self._protocol_error(ev.ProtocolError(e.stream_id, 400, "http1.unexpected_underscore",
                                                  "header name with underscore"))
            return False
        e.headers, dropped = xff.drop_underscored(e.headers)
        http1.dropped_headers_with_underscores.value += dropped
        return True

    def request_done(self, s: ActiveStream) -> None:
        pass

    def _protocol_error(self, e: ev.ProtocolError) -> None:
        st = self.stats
        st.downstream_cx_protocol_error.value += 1
        self.head_pending = False
        self.delay_close = True
        s = self.stream
        if s is not None and s.response_started:
            self.closing = True
            self._close(ConnectionCloseType.NO_FLUSH)
            return
        if s is None:
            st.downstream_rq_total.value += 1
            st.downstream_rq_http1_total.value += 1
            st.downstream_rq_active.inc()
            s = ActiveStream(self, e.stream_id, HeaderMap())
            self.stream = s
        s.local_complete = True
        s.stream_info.response_flags.append("DPE")
        status = e.error_status_hint
        # Envoy answers a missing Host with an empty 400, other codec errors with the reason.
        body = b"" if e.details == ev.MISSING_HOST else reason(status).encode()
        s.send_local_reply(status, body, details=e.details)

    # -- responses -------------------------------------------------------------------------

    def write_informational(self, s: ActiveStream, headers: HeaderMap) -> None:
        self._flush()
        self.conn.write(self.codec.send(ev.Informational(s.stream_id, headers.status,
                                                         headers.headers)))

    def write_headers(self, s: ActiveStream, headers: HeaderMap, end: bool) -> None:
        # One pass: a new list without the hop-by-hop ones, then date and server.
        switching = headers.status == 101
        drop = upgrade.RESP_DROP_101 if switching else _RESP_DROP
        raw = [kv for kv in headers.headers if kv[0] not in drop]
        raw.append((b"date", http_date()))
        raw.append((b"server", self.config.server_name))
        if (self.closing or self.drain_close or self.conn.closed or not s.request_complete) \
                and not switching:
            raw.append((b"connection", b"close"))
        if self.debug:
            stream_debug(log, self.conn.id, s.stream_id, "encoding headers via codec "
                         "(end_stream=%s):%s", str(end).lower(),
                         header_lines([(":status", str(headers.status))] + [
                             (k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]))
        data = self.codec.send_response_head(s.stream_id, headers.status, raw, end)
        s.last_activity = time.monotonic()
        self._write(data)
        if end:
            self._response_done(s)

    def write_data(self, s: ActiveStream, data: bytes, end: bool) -> None:
        s.last_activity = time.monotonic()  # response bytes restart the stream idle timer
        out = self.codec.send_data(s.stream_id, data, end)
        if out:
            self._write(out)
        if end:
            self._response_done(s)

    def write_trailers(self, s: ActiveStream, trailers: HeaderMap) -> None:
        self._write(self.codec.send(ev.Trailers(s.stream_id, trailers.headers)))
        self._response_done(s)

    def _write(self, data: bytes) -> None:
        self.stats.downstream_cx_tx_bytes_total.value += len(data)
        corked = self._corked
        if corked is not None:
            corked.append(data)
        else:
            self.conn.write(data)

    def cork(self) -> bool:
        """Hold response bytes until :meth:`uncork` (the router corks while it handles one
        upstream read). False when already corked: then the caller must not uncork."""
        if self._corked is not None:
            return False
        self._corked = []
        return True

    def uncork(self) -> None:
        corked = self._corked
        self._corked = None
        if corked:
            self.conn.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _flush(self) -> None:
        corked = self._corked
        if corked:
            self._corked = []
            self.conn.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _close(self, how: ConnectionCloseType) -> None:
        self._flush()
        self.conn.close(how)

    def _response_done(self, s: ActiveStream) -> None:
        if s.response_complete:
            return
        s.response_complete = True
        st = self.stats
        code = s.stream_info.response_code
        cls = code // 100
        if 1 <= cls <= 5:
            st.by_class[cls].value += 1
            self.listener_stats.by_class[cls].value += 1
        st.downstream_rq_completed.value += 1
        self.listener_stats.downstream_rq_completed.value += 1
        if not s.request_complete:
            st.downstream_rq_response_before_rq_complete.value += 1
        self._finish(s)
        self.next_cycle(s.request_complete)

    def next_cycle(self, request_complete: bool, now: float = 0.0) -> None:
        """A response is complete: close, or serve the next request. ``now``: the caller's
        monotonic clock reading, if it just took one."""
        self.last_activity = now or time.monotonic()
        if self.closing or self.drain_close or not self.codec.keep_alive or \
                not request_complete:
            if self.drain_close and not self.closing:
                self.stats.downstream_cx_drain_close.value += 1
            self.closing = True
            if self.delay_close and not self.peer_eof and self.config.delayed_close_timeout:
                # Envoy's FlushWriteAndDelay after a protocol error: the reply is flushed and
                # the peer gets delayed_close_timeout to close first (so the unread rest of its
                # request does not turn our close into a reset that loses the reply).
                self.reset_on_close = not request_complete
                self._flush()
                self.delay_timer = self.loop.call_later(self.config.delayed_close_timeout,
                                                        self._on_delayed_close_timeout)
                return
            self._close(ConnectionCloseType.FLUSH_WRITE)
            return
        events = self.codec.start_next_cycle()
        if events:
            self.dispatch(events)

    def _finish(self, s: ActiveStream) -> None:
        if self.stream is s:
            self.stream = None
        st = self.stats
        if s is self.upgrade_stream:
            self.upgrade_stream = None
            st.downstream_cx_upgrades_active.dec()
        st.downstream_rq_active.dec()
        info = s.stream_info
        info.end_time = time.monotonic()
        st.downstream_rq_time.record((info.end_time - s.start) * 1000)
        s.destroy()
        for logger in self.config.access_logs:
            logger.log(s)

    def reset_stream(self, s: ActiveStream, *, local: bool) -> None:
        if s.destroyed:
            return
        if self.debug:
            stream_debug(log, self.conn.id, s.stream_id, "stream reset (%s)",
                         "local" if local else "remote")
        st = self.stats
        if local:
            st.downstream_rq_tx_reset.value += 1
            info = s.stream_info
            if "LR" not in info.response_flags:
                info.response_flags.append("LR")
            self.closing = True
            self._finish(s)
            self._close(ConnectionCloseType.NO_FLUSH)
        else:
            st.downstream_rq_rx_reset.value += 1
            s.stream_info.response_flags.append("DC")
            self._finish(s)

    # -- connection events -----------------------------------------------------------------

    def on_event(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.CONNECTED:
            return
        self._promote_express("connection event")
        _LIVE.discard(self)
        st = self.stats
        st.downstream_cx_destroy.value += 1
        remote = event is ConnectionEvent.REMOTE_CLOSE or self.peer_eof
        if remote:
            st.downstream_cx_destroy_remote.value += 1
        else:
            st.downstream_cx_destroy_local.value += 1
        s = self.stream
        active = s is not None and not s.destroyed
        if active or (self.head_pending and s is None):
            st.downstream_cx_destroy_active_rq.value += 1
            if remote:
                st.downstream_cx_destroy_remote_active_rq.value += 1
            else:
                st.downstream_cx_destroy_local_active_rq.value += 1
        if active:
            self.reset_stream(s, local=False)  # type: ignore[arg-type]
        elif self.head_pending and s is None:
            # Envoy's stream began with the first byte of its head: the close resets it.
            st.downstream_rq_total.value += 1
            st.downstream_rq_http1_total.value += 1
            st.downstream_rq_rx_reset.value += 1
        elif self.reset_on_close and remote:
            st.downstream_rq_rx_reset.value += 1  # answered before its request was complete
        st.downstream_cx_active.dec()
        if self.http1_counted:
            st.downstream_cx_http1_active.dec()
        if self.tls:
            st.downstream_cx_ssl_active.dec()
        st.downstream_cx_length_ms.record(
            (time.monotonic() - self.conn.stream_info.start_monotonic) * 1000)
        self.deadline_router = None
        for handle in (self.timer, self.headers_timer, self.deadline_timer, self.delay_timer):
            if handle is not None:
                handle.cancel()

    def on_high_watermark(self) -> None:
        self._promote_express("downstream watermark")
        s = self.stream
        if s is not None:
            for cb in s.watermark_cbs:
                cb.on_above_write_buffer_high_watermark()

    def on_low_watermark(self) -> None:
        self._promote_express("downstream watermark")
        s = self.stream
        if s is not None:
            for cb in s.watermark_cbs:
                cb.on_below_write_buffer_low_watermark()

    # -- timeouts --------------------------------------------------------------------------
    # One timer per connection: activity only stamps a time, and the timer re-arms for the
    # remainder when it fires, so the hot path never reschedules timers.

    def _arm_timer(self, delay: float | None = None) -> None:
        cfg = self.config
        if delay is None:
            delay = cfg.tick
        if delay is None:
            return
        self.timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.conn.closed:
            return
        self._promote_express("connection timer")
        cfg = self.config
        now = time.monotonic()
        s = self.stream
        nxt: list[float] = []
        if s is not None and not s.destroyed:
            if cfg.request_timeout and not s.request_complete:
                left = s.start + cfg.request_timeout - now
                if left <= 0:
                    self.stats.downstream_rq_timeout.value += 1
                    self._timeout_reply(s, 408, b"request timeout", "request_overall_timeout")
                    return
                nxt.append(left)
            sit = (route_idle.stream_idle_timeout(s, cfg.stream_idle_timeout) if cfg.route_idle
                   else cfg.stream_idle_timeout)
            if sit:
                left = max(s.last_activity, self.last_activity) + sit - now
                if left <= 0:
                    self.stats.downstream_rq_idle_timeout.value += 1
                    # Envoy: 504 once the request is complete (waiting on the response), else 408.
                    self._timeout_reply(s, 504 if s.request_complete else 408,
                                        b"stream timeout", "stream_idle_timeout")
                    return
                nxt.append(left)
        elif cfg.idle_timeout:
            left = self.last_activity + cfg.idle_timeout - now
            if left <= 0:
                self.stats.downstream_cx_idle_timeout.value += 1
                if self.first or not cfg.drain_timeout:
                    self.closing = True
                    self.conn.close(ConnectionCloseType.FLUSH_WRITE)
                else:
                    # Envoy drains an HTTP/1 connection that has seen a request: a request in
                    # the drain window is answered with connection: close, then it closes.
                    self.drain_close = True
                    self.timer = self.loop.call_later(cfg.drain_timeout, self._drain_timeout)
                return
            nxt.append(left)
        if cfg.tick is not None:
            nxt.append(cfg.tick)
        self._arm_timer(max(0.001, min(nxt)) if nxt else None)

    def route_deadline(self, router: Any, when: float) -> None:
        """Call ``router.on_global_timeout()`` at loop time ``when`` unless it is cleared first
        (``deadline_router = None``)."""
        self.deadline_router = router
        self.deadline = when
        t = self.deadline_timer
        if t is None or self.deadline_when > when:
            if t is not None:
                t.cancel()
            self.deadline_when = when
            self.deadline_timer = self.loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self.deadline_timer = None
        router = self.deadline_router
        if router is None:
            return
        when = self.deadline
        if self.loop.time() >= when - 0.001:  # the loop clock counts whole milliseconds
            self.deadline_router = None
            router.on_global_timeout()
        else:
            self.deadline_when = when
            self.deadline_timer = self.loop.call_at(when, self._on_deadline)

    def _timeout_reply(self, s: ActiveStream, status: int, body: bytes, details: str) -> None:
        if s.response_started:
            self.closing = True
            self.reset_stream(s, local=True)
            return
        # A reply before the request is complete closes the connection (_response_done); a
        # 504 after a complete request keeps it, as Envoy does.
        s.send_local_reply(status, body, details=details)

    def _on_headers_timeout(self) -> None:
        self.headers_timer = None
        if self.stream is not None or self.conn.closed or self._express_busy():
            return
        self.stats.downstream_rq_header_timeout.value += 1
        # Envoy answers 408 "request header timeout" (counted as a request) and closes.
        st = self.stats
        st.downstream_rq_total.value += 1
        st.downstream_rq_http1_total.value += 1
        st.downstream_rq_active.inc()
        self.closing = True
        err = ev.ProtocolError(0, 408, "request_header_timeout", "request header timeout")
        self.codec._error(err)  # type: ignore[attr-defined]  # the head is abandoned
        s = self.stream = ActiveStream(self, 0, HeaderMap())
        s.local_complete = True
        s.send_local_reply(408, b"request header timeout", details="request_header_timeout")

    def log_filter_error(self, exc: BaseException, filt: object, method: str) -> None:
        name = self.config.filter_name(filt)
        log.error("HTTP filter %s raised in %s: %s: %s", name, method, type(exc).__name__, exc,
                  exc_info=exc)
        self.stats.scope.counter("envoi.filter_exception").value += 1

    @property
    def conn(self) -> Connection:
        return self._conn

    @conn.setter
    def conn(self, c: Connection) -> None:
        self._conn = c
