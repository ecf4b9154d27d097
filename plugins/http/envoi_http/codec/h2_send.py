"""The sending half of the HTTP/2 codec, and the connection state both halves share.

``H2Sender`` sets ``h2`` up the way envoi runs it (see ``h2_codec``), keeps the per-stream
bookkeeping (open streams, their send buffers, the bytes delivered and not yet acknowledged),
and queues frames: ``send_*`` never return bytes; ``data_to_send()`` hands out everything queued
since its last call in one piece (batching per read and per write is the caller's loop).

Flow control, sending side: DATA goes to ``h2`` at once while it fits the peer's stream and
connection windows and the frame size; the rest waits in the stream's ``_Pending`` buffer, sent
as WINDOW_UPDATE or SETTINGS frames open the windows (``_flush_pending``). Payloads are never
joined or copied here: a buffered chunk is a ``memoryview`` and is sliced, not copied, to fit.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

import h2.config
import h2.connection
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame, SettingsFrame

from . import events as ev
from . import h2_events as hev
from .h2_guard import OUTBOUND_FLOOD, PREFACE, InboundGuard, OutboundCounter
from .h2_hpack import NEVER_INDEX, MemoDecoder, MemoEncoder
from .h2_options import DEFAULT_OPTIONS, Http2Options, local_settings
from .h2_stats import Http2CodecStats, detached_stats

Role = Literal["server", "client"]

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, CONNECT_ERROR = 0x6, 0x7, 0x8, 0xA
_H2_STREAM_CAP = (1 << 31) - 1  # what h2 itself enforces; envoi enforces the configured limit
REMOTE_END, LOCAL_END, BOTH_ENDS = 1, 2, 3


class _Pending:
    """DATA (and maybe trailers) waiting for flow-control window on one stream."""

    __slots__ = ("blocked", "chunks", "end", "size", "trailers")

    def __init__(self) -> None:
        self.chunks: deque[memoryview] = deque()
        self.size = 0
        self.end = False
        self.trailers: ev.Headers | None = None
        self.blocked = False


class H2Sender:
    protocol = "HTTP/2"

    def __init__(self, role: Role, options: Http2Options = DEFAULT_OPTIONS, *,
                 max_headers_kb: int = 60, max_headers_count: int = 100,
                 stats: Http2CodecStats | None = None,
                 stream_buffer_limit: int | None = None, memo_hpack: bool = True) -> None:
        self.role: Role = role
        self.server = server = role == "server"
        self.options = options
        self.stats = stats if stats is not None else detached_stats()
        self.max_headers_bytes = max_headers_kb * 1024
        self.max_headers_count = max_headers_count
        self.buffer_limit = stream_buffer_limit or options.initial_stream_window_size
        config = h2.config.H2Configuration(
            client_side=not server, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, split_outbound_cookies=False,
            validate_inbound_headers=False, normalize_inbound_headers=False)
        conn = self._conn = h2.connection.H2Connection(config)
        if memo_hpack:
            conn.encoder = MemoEncoder()
            conn.decoder = MemoDecoder()
        sc = h2.settings.SettingCodes
        own = {sc.HEADER_TABLE_SIZE: options.hpack_table_size,
               sc.INITIAL_WINDOW_SIZE: options.initial_stream_window_size,
               sc.MAX_CONCURRENT_STREAMS: _H2_STREAM_CAP,
               sc.ENABLE_CONNECT_PROTOCOL: int(options.allow_connect)}
        if not server:
            own[sc.ENABLE_PUSH] = 0
        # h2 enforces its own MAX_CONCURRENT_STREAMS as a connection error; envoi advertises the
        # configured limit itself (the SETTINGS frame below) and refuses extra streams one by
        # one with RST_STREAM, as Envoy does.
        conn.local_settings = h2.settings.Settings(client=not server, initial_values=own)
        # h2 would end the connection at its 64 KiB default; Envoy's limit (a stream reset) is
        # checked after decoding, with this hard cap above it against HPACK bombs.
        conn.decoder.max_header_list_size = max(4 * self.max_headers_bytes, 1 << 18)
        conn.decoder.max_allowed_table_size = options.hpack_table_size
        conn.initiate_connection()
        conn.clear_outbound_data_buffer()
        hello = SettingsFrame(0, settings=local_settings(options, not server)).serialize()
        self._extra = bytearray((b"" if server else PREFACE) + hello)  # goes out before h2's
        grow = options.initial_connection_window_size - 65535
        if grow > 0:
            conn.increment_flow_control_window(grow)
        self._guard = InboundGuard(options, server)
        self._outbound = OutboundCounter(options)
        self._frames = 1 + (grow > 0)  # frames queued since the last data_to_send()
        self._control = 0  # of which PING/SETTINGS ACKs and RST_STREAMs
        self._open: dict[int, int] = {}  # stream id -> REMOTE_END | LOCAL_END bits
        self._pending: dict[int, _Pending] = {}
        self._unacked: dict[int, int] = {}  # bytes delivered in Body events, not acknowledged
        self.dead = False  # nothing more is parsed (protocol error, flood, EOF)
        self.goaway_received: hev.GoAwayReceived | None = None
        self.goaway_sent_last: int | None = None  # last_stream_id of our final GOAWAY
        self.failed: hev.Flood | None = None  # an outbound flood found by data_to_send()
        self.peer_max_streams: int | None = None
        self.settings_acked = False  # the peer acknowledged our SETTINGS

    # ---- stream bookkeeping ----------------------------------------------------------------

    def _remote_end(self, sid: int) -> None:
        flags = self._open.get(sid)
        if flags is not None:
            flags |= REMOTE_END
            if flags == BOTH_ENDS:
                self._close_stream(sid)
            else:
                self._open[sid] = flags

    def _local_end(self, sid: int) -> None:
        flags = self._open.get(sid)
        if flags is not None:
            flags |= LOCAL_END
            if flags == BOTH_ENDS:
                self._close_stream(sid)
            else:
                self._open[sid] = flags

    def _close_stream(self, sid: int) -> None:
        if self._open.pop(sid, None) is None:
            return
        self.stats.streams_active.dec()
        p = self._pending.pop(sid, None)
        if p is not None and p.size:
            self.stats.pending_send_bytes.dec(p.size)
        left = self._unacked.pop(sid, 0)
        if left and not self.dead:
            # Give the connection window back (Envoy recoups unconsumed bytes on close).
            self._conn.acknowledge_received_data(left, sid)

    def _die(self) -> None:
        """Nothing more is parsed or sent; the streams are gone with the connection."""
        self.dead = True
        for sid in list(self._open):
            self._close_stream(sid)

    def _reset(self, sid: int, code: int) -> None:
        left = self._unacked.pop(sid, 0)  # returned after the RST: no stream WINDOW_UPDATE
        self._close_stream(sid)
        if not self.dead:
            conn = self._conn
            conn.reset_stream(sid, code)
            self._control += 1
            self._frames += 1
            if left:
                conn.acknowledge_received_data(left, sid)
        self.stats.tx_reset.value += 1

    def is_open(self, stream_id: int) -> bool:
        """The stream is not yet closed both ways (nor reset)."""
        return stream_id in self._open

    @property
    def open_streams(self) -> int:
        return len(self._open)

    @property
    def idle(self) -> bool:
        return not self._open

    @property
    def keep_alive(self) -> bool:
        return not self.dead and self.goaway_received is None

    @property
    def can_open_stream(self) -> bool:
        """Client: another stream fits (no GOAWAY either way, under the peer's limit)."""
        if self.dead or self.goaway_received is not None or self.goaway_sent_last is not None:
            return False
        limit = self.peer_max_streams
        return limit is None or len(self._open) < limit

    # ---- sending ---------------------------------------------------------------------------

    def send_response_head(self, stream_id: int, status: int, headers: ev.Headers,
                           end_stream: bool) -> None:
        """Server: a final response head. ``headers``: lower-case names, no connection-specific
        fields (the proxy layer removes them)."""
        if stream_id not in self._open or self.dead:
            return
        self._conn.send_headers(stream_id, [(b":status", b"%d" % status), *headers], end_stream)
        self._frames += 1
        if end_stream:
            self._local_end(stream_id)

    def queue_response(self, stream_id: int, status: int, headers: ev.Headers,
                        data: bytes | memoryview | None, end_stream: bool) -> bool:
        """Server: a final response head and, unless ``data`` is None, its first body bytes, in
        one call (``send_response_head`` + ``send_data``); the volatile fields of ``NEVER_INDEX``
        go as never-indexed literals (``headers`` itself is not changed). Returns
        ``send_blocked``."""
        if stream_id not in self._open or self.dead:
            return False
        block: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status), *headers]
        for i in range(1, len(block)):
            h = block[i]
            if h[0] in NEVER_INDEX:
                block[i] = NeverIndexedHeaderTuple(*h)
        if data is None:
            self._conn.send_headers(stream_id, block, end_stream)
            self._frames += 1
            if end_stream:
                self._local_end(stream_id)
            return False
        self._conn.send_headers(stream_id, block, False)
        self._frames += 1
        return self.send_data(stream_id, data, end_stream)

    def send_informational(self, stream_id: int, status: int, headers: ev.Headers) -> None:
        if stream_id in self._open and not self.dead:
            self._conn.send_headers(stream_id, [(b":status", b"%d" % status), *headers], False)
            self._frames += 1

    def send_request_head(self, method: bytes, target: bytes, authority: bytes, scheme: bytes,
                          headers: ev.Headers, end_stream: bool) -> int:
        """Client: open a stream with this request head; returns its id (check
        ``can_open_stream`` first). CONNECT carries no ``:scheme``/``:path``."""
        conn = self._conn
        sid: int = conn.get_next_available_stream_id()
        if method == b"CONNECT":
            block = [(b":method", method), (b":authority", authority), *headers]
        else:
            block = [(b":method", method), (b":scheme", scheme), (b":authority", authority),
                     (b":path", target), *headers]
        conn.send_headers(sid, block, end_stream)
        self._frames += 1
        self._open[sid] = LOCAL_END if end_stream else 0
        self.stats.streams_active.inc()
        return sid

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool) -> bool:
        """Queue body bytes; what does not fit the peer's windows waits in the stream's buffer.
        Returns ``send_blocked(stream_id)``: True while that buffer is over the limit."""
        if stream_id not in self._open or self.dead:
            return False
        if stream_id not in self._pending:
            conn = self._conn
            n = len(data)
            size = conn.max_outbound_frame_size
            if n <= size:
                try:
                    conn.send_data(stream_id, data, end_stream)
                except h2.exceptions.FlowControlError:
                    pass
                else:
                    self._frames += 1
                    self._guard.outbound_data_frames += 1
                    if end_stream:
                        self._local_end(stream_id)
                    return False
            elif n <= conn.local_flow_control_window(stream_id):
                # the windows take it all: frame by frame, no buffer (slices, no copies)
                view = data if type(data) is memoryview else memoryview(data)
                last = n - size
                for at in range(0, n, size):
                    conn.send_data(stream_id, view[at:at + size], end_stream and at >= last)
                frames = (n + size - 1) // size
                self._frames += frames
                self._guard.outbound_data_frames += frames
                if end_stream:
                    self._local_end(stream_id)
                return False
        p = self._pending.get(stream_id)
        if p is None:
            p = self._pending[stream_id] = _Pending()
        if data:
            p.chunks.append(data if type(data) is memoryview else memoryview(data))
            p.size += len(data)
            self.stats.pending_send_bytes.inc(len(data))
        p.end = p.end or end_stream
        self._flush_stream(stream_id, p)
        if stream_id in self._pending and p.size > self.buffer_limit:
            p.blocked = True
        return p.blocked and stream_id in self._pending

    def send_trailers(self, stream_id: int, headers: ev.Headers) -> None:
        """Trailers end the stream; they wait behind any buffered DATA."""
        if stream_id not in self._open or self.dead:
            return
        p = self._pending.get(stream_id)
        if p is not None:
            p.trailers = headers
            return
        self._conn.send_headers(stream_id, headers, True)
        self._frames += 1
        self._local_end(stream_id)

    def send_blocked(self, stream_id: int) -> bool:
        """The stream's send buffer is above its high watermark: stop feeding it until a
        ``StreamWritable`` event."""
        p = self._pending.get(stream_id)
        return p is not None and p.blocked

    def pending_send_bytes(self, stream_id: int) -> int:
        p = self._pending.get(stream_id)
        return 0 if p is None else p.size

    def reset_stream(self, stream_id: int, error_code: int = NO_ERROR) -> None:
        """RST_STREAM (Envoy resets with NO_ERROR unless refusing, CONNECT_ERROR for tunnels)."""
        if stream_id in self._open:
            self._reset(stream_id, error_code)

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        """``nbytes`` of this stream's received body were handed on: the peer may send more."""
        left = self._unacked.get(stream_id)
        if left is None or nbytes <= 0 or self.dead:
            return
        nbytes = min(nbytes, left)
        if nbytes == left:
            del self._unacked[stream_id]
        else:
            self._unacked[stream_id] = left - nbytes
        self._conn.acknowledge_received_data(nbytes, stream_id)

    def send_ping(self, opaque: bytes) -> None:
        """A PING (8 bytes of opaque data) for connection keepalive; ``PingAck`` answers it."""
        if not self.dead:
            self._conn.ping(opaque)
            self._frames += 1

    def shutdown_notice(self) -> None:
        """The first GOAWAY of a graceful drain (last stream 2^31-1: nothing refused yet)."""
        self._queue(GoAwayFrame(0, last_stream_id=(1 << 31) - 1, error_code=NO_ERROR))

    def go_away(self, error_code: int = NO_ERROR) -> None:
        """GOAWAY with the highest stream id received; later streams are refused. Streams up to
        it may finish. Counted in ``http2.goaway_sent``."""
        last = self._conn.highest_inbound_stream_id
        self.goaway_sent_last = last
        self._queue(GoAwayFrame(0, last_stream_id=last, error_code=error_code))
        self.stats.goaway_sent.value += 1

    def _queue(self, frame: GoAwayFrame) -> None:
        """A frame envoi writes itself, after everything h2 has queued so far."""
        extra = self._extra
        extra += self._conn.data_to_send()
        extra += frame.serialize()
        self._frames += 1

    def send(self, event: ev.Event) -> bytes:
        """The HTTP/1 codecs' ``send(event) -> bytes`` shape: queue the event and return
        everything queued."""
        t = type(event)
        if t is ev.ResponseHeaders:
            e = event
            self.send_response_head(e.stream_id, e.status, e.headers,  # type: ignore[union-attr]
                                    e.end_stream)  # type: ignore[union-attr]
        elif t is ev.Body:
            self.send_data(event.stream_id, event.data, event.end_stream)  # type: ignore[union-attr]
        elif t is ev.Trailers:
            self.send_trailers(event.stream_id, event.headers)  # type: ignore[union-attr]
        elif t is ev.Informational:
            self.send_informational(event.stream_id, event.status,  # type: ignore[union-attr]
                                    event.headers)  # type: ignore[union-attr]
        elif t is ev.RequestHeaders:
            e2 = event
            self.send_request_head(e2.method, e2.target, e2.authority,  # type: ignore[union-attr]
                                   e2.scheme, e2.headers, e2.end_stream)  # type: ignore[union-attr]
        else:
            raise TypeError(f"the HTTP/2 codec does not send {t.__name__}")
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """Every byte queued since the last call. Also where the outbound flood limits are
        checked: after it, ``failed`` says the connection must be closed."""
        data: bytes = self._conn.data_to_send()
        extra = self._extra
        if extra:
            data = bytes(extra + data)
            extra.clear()
        if data:
            flood = self._outbound.add(len(data), self._frames, self._control)
            self._frames = self._control = 0
            if flood and self.server and self.failed is None:
                counter = (self.stats.outbound_flood if flood == OUTBOUND_FLOOD
                           else self.stats.outbound_control_flood)
                counter.value += 1
                self.failed = hev.Flood(flood)
                self._die()
        return data

    def transport_buffered(self, nbytes: int) -> None:
        """The transport still holds ``nbytes`` of what ``data_to_send`` gave out (call after
        writes and when it drains): frames written to the socket no longer count as queued."""
        self._outbound.drained(nbytes)

    # ---- flow control ----------------------------------------------------------------------

    def _flush_pending(self, out: list[Any]) -> None:
        """Windows opened: send what the buffers hold, in the order the streams blocked."""
        for sid, p in list(self._pending.items()):
            self._flush_stream(sid, p)
            if p.blocked and p.size <= self.buffer_limit // 2:
                p.blocked = False
                out.append(hev.StreamWritable(sid))
            if self._conn.outbound_flow_control_window <= 0:
                break

    def _flush_stream(self, sid: int, p: _Pending) -> None:
        conn = self._conn
        chunks = p.chunks
        sent = 0
        while chunks:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = chunks[0]
            if len(chunk) <= room:
                chunks.popleft()
            else:
                chunks[0] = chunk[room:]
                chunk = chunk[:room]
            last = not chunks and p.end and p.trailers is None
            conn.send_data(sid, chunk, last)
            sent += len(chunk)
            self._frames += 1
            self._guard.outbound_data_frames += 1
        if sent:
            p.size -= sent
            self.stats.pending_send_bytes.dec(sent)
        if chunks:
            return
        del self._pending[sid]
        if p.trailers is not None:
            conn.send_headers(sid, p.trailers, True)
            self._frames += 1
            self._local_end(sid)
        elif p.end:
            if not sent:  # END_STREAM alone (the data went out earlier)
                conn.send_data(sid, b"", True)
                self._frames += 1
            self._local_end(sid)
