"""Sans-IO HTTP/2 codec on ``h2``: one class for both ends (``role`` "server" or "client").

Bytes in (``receive``), events out (the shared ``events`` plus ``h2_events``); calls in
(``send_*``, ``reset_stream``, ``acknowledge``, ``go_away``), bytes out (``data_to_send``). Nothing
here does I/O or imports asyncio. What it adds to ``h2``:

- **Speed**: ``h2``'s header validation and normalisation are off; ``h2_headers`` makes Envoy's
  checks in the one pass that splits pseudo-header fields out. Output is batched: ``send_*`` only
  queue frames and the caller takes them all with one ``data_to_send()`` per read or write.
- **Flow control both ways.** Received DATA is acknowledged (WINDOW_UPDATE) only when the consumer
  calls ``acknowledge(stream_id, n)`` after handing ``n`` bytes on (padding is acknowledged at
  once). DATA that does not fit the peer's windows waits in a per-stream buffer, sent as
  WINDOW_UPDATEs arrive; above ``stream_buffer_limit`` (Envoy: the initial stream window) the
  stream is *blocked* (``send_blocked``) and a ``StreamWritable`` event says when it fell below
  half of it.
- **Envoy's limits**: ``max_concurrent_streams`` (extra streams get RST_STREAM REFUSED_STREAM,
  ``http2.stream_refused_errors``), header count / size (RST_STREAM INTERNAL_ERROR,
  ``header_overflow`` / ``header_list_size_too_large``), the inbound and outbound flood limits
  (``h2_guard``), HTTP messaging errors (``rx_messaging_error``; the connection ends without a
  GOAWAY unless ``stream_error_on_invalid_http_message``), framing errors (``h2`` sends GOAWAY
  with its error code).
- **GOAWAY**: sent by ``shutdown_notice()`` (last stream 2^31-1) and ``go_away()`` (the highest
  stream received; ``http2.goaway_sent``); received ones are taken out before ``h2`` sees them
  (``h2`` would stop every stream) and reported as ``GoAwayReceived``, with the streams above
  ``last_stream_id`` reset as refused.
"""

from __future__ import annotations

import h2.events as he
import h2.exceptions
import h2.settings

from . import events as ev
from . import h2_events as hev
from .h2_guard import PREFACE, GoAwayFrame
from .h2_headers import MessagingError, split_request, split_response, split_trailers
from .h2_send import (
    CONNECT_ERROR,
    FRAME_SIZE_ERROR,
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    REMOTE_END,
    H2Sender,
    Role,
)

Event = ev.Event | hev.H2Event
MAGIC = PREFACE[:12]  # Envoy's CLIENT_MAGIC_PREFIX

# StreamReset reasons (Envoy's StreamResetReason names).
REMOTE_RESET = "remote_reset"
REMOTE_REFUSED = "remote_refused_stream_reset"
CONNECTION_TERMINATION = "connection_termination"
PROTOCOL_ERROR_RESET = "protocol_error"
# A stream the codec reset before its headers were delivered (Envoy counts such a request, then
# its reset): too many headers, or a header list too large.
TOO_MANY_HEADERS = "http2.too_many_headers"
HEADERS_TOO_LARGE = "http2.headers_too_large"


def detect_preface(data: bytes) -> bool | None:
    """codec_type AUTO: True when ``data`` starts as HTTP/2's client preface does, None while
    it still could (fewer bytes, all matching), False otherwise. Like Envoy, only the first 12
    bytes (``PRI * HTTP/2``) decide; the codec checks the rest of the preface."""
    n = min(len(data), len(MAGIC))
    if data[:n] != MAGIC[:n]:
        return False
    return True if n == len(MAGIC) else None


class H2Codec(H2Sender):
    """``H2Sender`` (set-up, bookkeeping, sending) plus the receiving half."""

    # ---- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer (``b""``: EOF); return the events they make."""
        if self.dead:
            return []
        out: list[Event] = []
        if not data:
            out += [ev.StreamReset(sid, CONNECTION_TERMINATION) for sid in self._open]
            self._die()
            out.append(ev.ConnectionClosed())
            return out
        guard = self._guard
        conn = self._conn
        try:
            for item in guard.scan(data):
                if type(item) is GoAwayFrame:
                    self._on_goaway(item, out)
                else:
                    events = conn.receive_data(item)
                    if events:
                        self._translate(events, out)
                if self.dead:
                    return out
        except h2.exceptions.ProtocolError as exc:
            self._connection_error(exc, out)
            return out
        if guard.flood:
            self._flood(guard.flood, out)
            return out
        if guard.too_large:
            self._conn.close_connection(FRAME_SIZE_ERROR, b"too large frame size")
            self._connection_error(h2.exceptions.FrameTooLargeError("frame too large"), out)
            return out
        if guard.acks_owed:
            self._control += guard.acks_owed
            self._frames += guard.acks_owed
            guard.acks_owed = 0
        return out

    def _translate(self, events: list[he.Event], out: list[Event]) -> None:
        server = self.server
        for e in events:
            t = type(e)
            if t is he.DataReceived:
                self._on_data(e, out)
            elif t is he.RequestReceived:
                self._on_request(e, out)
            elif t is he.ResponseReceived:
                self._on_response(e, out)
            elif t is he.WindowUpdated:
                if self._pending:
                    self._flush_pending(out)
            elif t is he.TrailersReceived:
                self._on_trailers(e, out)
            elif t is he.StreamReset:
                self._on_reset(e, out)
            elif t is he.InformationalResponseReceived and not server:
                self._on_informational(e, out)
            elif t is he.RemoteSettingsChanged:
                self._on_settings(e, out)
            elif t is he.SettingsAcknowledged:
                self.settings_acked = True
            elif t is he.PingAckReceived:
                out.append(hev.PingAck(e.ping_data))
            if self.dead:
                return
            # StreamEnded rides on the event that carried END_STREAM (``stream_ended``);
            # settings ACKs, PINGs, PRIORITY and unknown frames need nothing from envoi.

    def _on_request(self, e: he.RequestReceived, out: list[Event]) -> None:
        sid = e.stream_id
        opts = self.options
        if len(self._open) >= opts.max_concurrent_streams and self.settings_acked and \
                self.goaway_sent_last is None:
            # The peer knew the limit (it acknowledged our SETTINGS): a connection error, as
            # Envoy 1.39.3 treats it (closed, no GOAWAY, downstream_cx_protocol_error).
            self._die()
            out.append(ev.ProtocolError(sid, 400, "http2.too_many_streams",
                                        "stream over MAX_CONCURRENT_STREAMS"))
            return
        if len(self._open) >= opts.max_concurrent_streams or (
                self.goaway_sent_last is not None and sid > self.goaway_sent_last):
            # Not acknowledged yet (the peer may not know the limit): refuse this stream only.
            self._conn.reset_stream(sid, REFUSED_STREAM)
            self._control += 1
            self._frames += 1
            if self.goaway_sent_last is None:
                self.stats.stream_refused_errors.value += 1
            self.stats.tx_reset.value += 1
            return
        end = e.stream_ended is not None
        self._open[sid] = REMOTE_END if end else 0
        self.stats.streams_active.inc()
        block = e.headers or ()
        try:
            req = split_request(block, opts.allow_connect)
        except MessagingError as err:
            self._messaging_error(sid, err, out)
            return
        if len(block) > self.max_headers_count:
            self._refuse_headers(sid, TOO_MANY_HEADERS, out)
            return
        if req.size > self.max_headers_bytes:
            self._refuse_headers(sid, HEADERS_TOO_LARGE, out)
            return
        if req.protocol:  # extended CONNECT: an upgrade, as Envoy maps it for HTTP/1 upstreams
            out.append(ev.RequestHeaders(sid, b"GET", req.path, req.authority, req.scheme,
                                         req.headers, b"2", end, True, req.expect_continue,
                                         req.protocol.lower()))
        elif req.method == b"CONNECT":
            out.append(ev.RequestHeaders(sid, req.method, req.authority, req.authority, b"",
                                         req.headers, b"2", end, True, False, b"connect"))
        else:
            out.append(ev.RequestHeaders(sid, req.method, req.path, req.authority, req.scheme,
                                         req.headers, b"2", end, True, req.expect_continue))

    def _on_response(self, e: he.ResponseReceived, out: list[Event]) -> None:
        sid = e.stream_id
        if sid not in self._open:
            return
        try:
            resp = split_response(e.headers or ())
        except MessagingError as err:
            self._messaging_error(sid, err, out)
            return
        if len(e.headers or ()) > self.max_headers_count:
            self._refuse_headers(sid, TOO_MANY_HEADERS, out)
            return
        if resp.size > self.max_headers_bytes:
            self._refuse_headers(sid, HEADERS_TOO_LARGE, out)
            return
        end = e.stream_ended is not None
        out.append(ev.ResponseHeaders(sid, resp.status, resp.headers, b"", end, b"2"))
        if end:
            self._remote_end(sid)

    def _on_informational(self, e: he.InformationalResponseReceived, out: list[Event]) -> None:
        sid = e.stream_id
        if sid not in self._open:
            return
        try:
            resp = split_response(e.headers or ())
        except MessagingError as err:
            self._messaging_error(sid, err, out)
            return
        out.append(ev.Informational(sid, resp.status, resp.headers))

    def _on_trailers(self, e: he.TrailersReceived, out: list[Event]) -> None:
        sid = e.stream_id
        if sid not in self._open:
            return
        if self.server:
            self.stats.trailers.value += 1
        try:
            headers, size = split_trailers(e.headers or ())
        except MessagingError as err:
            self._messaging_error(sid, err, out)
            return
        if len(headers) > self.max_headers_count:
            self._refuse_headers(sid, TOO_MANY_HEADERS, out)
            return
        if size > self.max_headers_bytes:
            self._refuse_headers(sid, HEADERS_TOO_LARGE, out)
            return
        out.append(ev.Trailers(sid, headers))
        self._remote_end(sid)

    def _on_data(self, e: he.DataReceived, out: list[Event]) -> None:
        sid = e.stream_id
        data = e.data or b""
        n = len(data)
        padding = (e.flow_controlled_length or 0) - n
        if sid not in self._open:  # a stream envoi reset: give the window back at once
            if e.flow_controlled_length:
                self._conn.acknowledge_received_data(e.flow_controlled_length, sid)
            return
        if padding > 0:
            self._conn.acknowledge_received_data(padding, sid)
        if n:
            unacked = self._unacked
            unacked[sid] = unacked.get(sid, 0) + n
        end = e.stream_ended is not None
        out.append(ev.Body(sid, data, end))
        if end:
            self._remote_end(sid)

    def _on_reset(self, e: he.StreamReset, out: list[Event]) -> None:
        sid = e.stream_id
        if e.remote_reset:
            self.stats.rx_reset.value += 1
            code = e.error_code
            reason = (REMOTE_REFUSED if code == REFUSED_STREAM else
                      "connect_error" if code == CONNECT_ERROR else REMOTE_RESET)
        else:  # h2 reset the stream itself (a stream-level protocol error)
            self.stats.tx_reset.value += 1
            reason = PROTOCOL_ERROR_RESET
        if sid in self._open:
            self._close_stream(sid)
            out.append(ev.StreamReset(sid, reason))

    def _on_settings(self, e: he.RemoteSettingsChanged, out: list[Event]) -> None:
        changed = e.changed_settings
        sc = h2.settings.SettingCodes
        if sc.HEADER_TABLE_SIZE in changed:  # Envoy caps its encoder table at hpack_table_size
            conn = self._conn
            conn.encoder.header_table_size = min(conn.encoder.header_table_size,
                                                 self.options.hpack_table_size)
        if sc.INITIAL_WINDOW_SIZE in changed and self._pending:
            self._flush_pending(out)
        if not self.server:
            # Every SETTINGS frame is news for a pool: the first one says the connection is
            # ready and how many streams it takes.
            remote = self._conn.remote_settings
            limit = remote.get(sc.MAX_CONCURRENT_STREAMS)
            self.peer_max_streams = limit
            out.append(hev.PeerSettings(limit, remote.initial_window_size))

    def _on_goaway(self, g: GoAwayFrame, out: list[Event]) -> None:
        if g.error:
            self._conn.close_connection(PROTOCOL_ERROR if "stream" in g.error else FRAME_SIZE_ERROR)
            self._die()
            out.append(ev.ProtocolError(0, 400, "http2.goaway_invalid", g.error))
            return
        event = hev.GoAwayReceived(g.last_stream_id, g.error_code, g.debug)
        if self.goaway_received is None or g.last_stream_id < \
                self.goaway_received.last_stream_id:
            self.goaway_received = event
        out.append(event)
        if self.server:
            return  # Envoy ignores a client's GOAWAY: its streams go on
        for sid in [s for s in self._open if s > g.last_stream_id]:
            self._close_stream(sid)
            out.append(ev.StreamReset(sid, REMOTE_REFUSED))

    # ---- errors ----------------------------------------------------------------------------

    def _connection_error(self, exc: h2.exceptions.ProtocolError, out: list[Event]) -> None:
        """h2 refused the bytes and queued a GOAWAY with its error code."""
        if isinstance(exc, h2.exceptions.InvalidBodyLengthError):
            self.stats.rx_messaging_error.value += 1
        self._frames += 1
        self._die()
        out.append(ev.ProtocolError(0, 400, "http2.codec_error", str(exc)))

    def _messaging_error(self, sid: int, err: MessagingError, out: list[Event]) -> None:
        self.stats.rx_messaging_error.value += 1
        if self.options.stream_error_on_invalid_http_message:
            self._reset(sid, PROTOCOL_ERROR)
            out.append(ev.StreamReset(sid, PROTOCOL_ERROR_RESET))
            return
        self._die()  # Envoy ends the connection, without a GOAWAY
        out.append(ev.ProtocolError(sid, 400, err.details, str(err)))

    def _refuse_headers(self, sid: int, reason: str, out: list[Event]) -> None:
        st = self.stats
        if reason == TOO_MANY_HEADERS:
            st.header_overflow.value += 1
        else:
            st.header_list_size_too_large.value += 1
        self._reset(sid, INTERNAL_ERROR)
        out.append(ev.StreamReset(sid, reason))

    def _flood(self, details: str, out: list[Event]) -> None:
        st = self.stats
        counter = {"http2.inbound_empty_frames_flood": st.inbound_empty_frames_flood,
                   "http2.inbound_priority_frames_flood": st.inbound_priority_frames_flood,
                   "http2.inbound_window_update_frames_flood":
                       st.inbound_window_update_frames_flood,
                   "http2.outbound_frames_flood": st.outbound_flood,
                   "http2.outbound_control_frames_flood": st.outbound_control_flood}[details]
        counter.value += 1
        self._die()
        flood = hev.Flood(details)
        self.failed = flood
        out.append(flood)


__all__ = ["H2Codec", "Role", "detect_preface"]
