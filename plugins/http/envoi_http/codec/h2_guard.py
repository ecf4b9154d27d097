"""Envoy's HTTP/2 flood protections, applied to frame headers before ``h2`` parses the frames.

``h2`` handles a whole read at once and has none of Envoy's flood limits, so the codec walks the
9-byte frame headers of every read first (one ``struct`` call per frame, payloads untouched) and
keeps Envoy's ``ProtocolConstraints`` counters (source/common/http/http2/protocol_constraints.cc):

- consecutive HEADERS/CONTINUATION/DATA frames with an empty payload (padding excluded) and no
  END_STREAM: more than ``max_consecutive_inbound_frames_with_empty_payload`` is a flood;
- PRIORITY frames: more than ``max_inbound_priority_frames_per_stream * (1 + streams opened)``;
- WINDOW_UPDATE frames: more than ``1 + 2 * (streams opened + max_inbound_window_update_frames_
  per_data_frame_sent * DATA frames sent)``.

"Streams opened" counts header blocks (HEADERS/CONTINUATION with END_HEADERS), as Envoy does. The
frame that breaks a limit and everything after it are not given to ``h2``; the codec reports a
flood and the connection is closed without a GOAWAY, as Envoy 1.39.3 closes it.

GOAWAY frames are taken out of the byte stream here as well: ``h2``'s connection state machine
closes for good on any GOAWAY, which would make every in-flight stream fail, while the RFC (and
Envoy) let the streams below ``last_stream_id`` finish. The codec handles GOAWAY itself.

Outbound: Envoy counts the frames waiting in the connection's write buffer and gives up when
more than ``max_outbound_frames`` (or ``max_outbound_control_frames`` PING/SETTINGS ACKs and
RST_STREAMs) are waiting, the mark of a peer that makes envoi write but does not read.
``OutboundCounter`` keeps that count by chunks of bytes handed to the transport, released as the
transport reports its buffer drained.
"""

from __future__ import annotations

import struct
from collections import deque

from .h2_options import Http2Options

_HEAD = struct.Struct(">BHBB")  # length (high byte, low 16 bits), type, flags
_unpack_head = _HEAD.unpack_from
_SID = struct.Struct(">L")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Flood names: the details Envoy gives, and the counter each one moves.
EMPTY_FLOOD = "http2.inbound_empty_frames_flood"
PRIORITY_FLOOD = "http2.inbound_priority_frames_flood"
WINDOW_UPDATE_FLOOD = "http2.inbound_window_update_frames_flood"
OUTBOUND_FLOOD = "http2.outbound_frames_flood"
OUTBOUND_CONTROL_FLOOD = "http2.outbound_control_frames_flood"


class GoAwayFrame:
    """A GOAWAY the guard took out of the stream. ``error`` names a malformed one."""

    __slots__ = ("debug", "error", "error_code", "last_stream_id")

    def __init__(self, payload: bytes, stream_id: int) -> None:
        self.error = ""
        self.last_stream_id = self.error_code = 0
        self.debug = b""
        if stream_id != 0:
            self.error = "GOAWAY on a stream"
        elif len(payload) < 8:
            self.error = "GOAWAY frame too short"
        else:
            self.last_stream_id = _SID.unpack_from(payload, 0)[0] & 0x7FFFFFFF
            self.error_code = _SID.unpack_from(payload, 4)[0]
            self.debug = payload[8:]


class InboundGuard:
    """Walks frame headers across reads. ``scan(data)`` returns the pieces of ``data`` to give to
    ``h2`` (usually ``[data]`` itself), GOAWAY frames found, and the flood found, if any."""

    __slots__ = (
        "acks_owed", "empty_run", "flood", "goaway_buf", "goaway_sid", "head",
        "inbound_streams", "left", "max_empty", "max_frame_size", "max_priority", "max_wu",
        "outbound_data_frames", "pad_frame", "preface", "priority_frames", "too_large",
        "window_updates",
    )

    def __init__(self, options: Http2Options, server: bool) -> None:
        self.preface = len(PREFACE) if server else 0  # preface bytes still to skip
        self.head = b""  # the start of a frame header cut by the end of a read
        self.left = 0  # payload bytes of the current frame still to come
        self.pad_frame: tuple[int, int] | None = None  # (length, flags) waiting for its pad byte
        self.goaway_buf: bytearray | None = None  # payload of a GOAWAY being taken out
        self.goaway_sid = 0
        self.max_frame_size = 16384  # what envoi advertises (SETTINGS_MAX_FRAME_SIZE default)
        self.max_empty = options.max_consecutive_inbound_frames_with_empty_payload
        self.max_priority = options.max_inbound_priority_frames_per_stream
        self.max_wu = options.max_inbound_window_update_frames_per_data_frame_sent
        self.empty_run = self.priority_frames = self.window_updates = 0
        self.inbound_streams = self.outbound_data_frames = 0
        self.acks_owed = 0  # PING and SETTINGS frames seen: each makes h2 queue an ACK
        self.flood = ""
        self.too_large = False  # a frame over SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR

    def scan(self, data: bytes) -> list[bytes | GoAwayFrame]:
        """The pieces of ``data`` for ``h2`` in order, with the GOAWAY frames taken out of it
        where they were (usually one item: ``data`` itself). After a flood (``self.flood``) or an
        oversized frame (``self.too_large``) the list ends before the offending frame. A frame
        header cut by the end of a read is held back until it is whole, so ``h2`` never sees
        half of a frame header the guard may still take out."""
        n = len(data)
        pos = keep = 0
        items: list[bytes | GoAwayFrame] = []
        prefix = b""  # held-back header bytes that go before the next piece
        if self.preface:
            pos = min(self.preface, n)
            self.preface -= pos
        elif self.goaway_buf is not None:  # the rest of a GOAWAY cut by the previous read
            take = min(self.left, n)
            self.goaway_buf += data[:take]
            self.left -= take
            pos = keep = take
            if not self.left:
                items.append(self._goaway_done())
        elif self.left:
            if self.pad_frame is not None and n:
                length, flags = self.pad_frame
                self.pad_frame = None
                if self._count_payload(length, flags, data[0] + 1):
                    return items
            pos = min(self.left, n)
            self.left -= pos
        elif self.head:
            head = self.head
            need = 9 - len(head)
            if n < need:
                self.head = head + data
                return items
            self.head = b""
            pos = need
            verdict = self._frame(head + data[:need], 0, data, pos, n)
            if verdict < 0:
                return items
            if verdict == 0:
                prefix = head  # an ordinary frame: h2 gets its whole header
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
            else:  # a GOAWAY: neither its header nor its payload go to h2
                keep = pos = verdict
                if self.goaway_buf is not None and not self.left:
                    items.append(self._goaway_done())
        while not self.left and self.goaway_buf is None:
            if n - pos < 9:
                if pos < n:
                    self.head = data[pos:]
                break
            start = pos
            pos += 9
            verdict = self._frame(data, start, data, pos, n)
            if verdict == 0:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                continue
            if start > keep or prefix:  # what came before goes to h2 first
                items.append(prefix + data[keep:start])
                prefix = b""
            if verdict < 0:
                return items
            keep = pos = verdict
            if self.goaway_buf is not None and not self.left:
                items.append(self._goaway_done())
        end = n - len(self.head)
        if keep == 0 and end == n and not prefix:
            items.append(data)
        elif end > keep or prefix:
            items.append(prefix + data[keep:end])
        return items

    def _frame(self, hd: bytes, at: int, data: bytes, pos: int, n: int) -> int:
        """One frame header at ``hd[at:at+9]``, its payload from ``data[pos]``. Returns -1 on a
        flood or an oversized frame, 0 for a frame for h2 (``self.left`` = its payload length),
        or, for a GOAWAY, the position in ``data`` after the part of it taken out (its payload
        collects in ``goaway_buf`` until whole)."""
        hi, lo, ftype, flags = _unpack_head(hd, at)
        length: int = (hi << 16) | lo
        if length > self.max_frame_size:
            # h2 would wait for the whole frame before refusing it; Envoy refuses at once.
            self.too_large = True
            return -1
        if ftype == GOAWAY:
            self.goaway_sid = _SID.unpack_from(hd, at + 5)[0] & 0x7FFFFFFF
            self.goaway_buf = bytearray(data[pos:pos + length])
            taken = min(length, n - pos)
            self.left = length - taken
            return pos + taken
        if self._track(ftype, flags, length, data, pos, n):
            return -1
        self.left = length
        return 0

    def _goaway_done(self) -> GoAwayFrame:
        buf = self.goaway_buf
        self.goaway_buf = None
        return GoAwayFrame(bytes(buf or b""), self.goaway_sid)

    def _track(self, ftype: int, flags: int, length: int, data: bytes, pos: int, n: int) -> bool:
        """Count one frame header; True when it breaks a limit (``self.flood`` names which)."""
        if ftype <= HEADERS:  # DATA or HEADERS
            if ftype == HEADERS and flags & END_HEADERS:
                self.inbound_streams += 1
            if flags & PADDED and length:
                if pos < n:
                    return self._count_payload(length, flags, data[pos] + 1)
                self.pad_frame = (length, flags)  # the pad length byte comes with the next read
                return False
            return self._count_payload(length, flags, 0)
        if ftype == CONTINUATION:
            if flags & END_HEADERS:
                self.inbound_streams += 1
            return self._count_payload(length, 0, 0)
        if ftype == PRIORITY:
            self.priority_frames += 1
            if self.priority_frames > self.max_priority * (1 + self.inbound_streams):
                self.flood = PRIORITY_FLOOD
                return True
        elif ftype == WINDOW_UPDATE:
            self.window_updates += 1
            if self.window_updates > 1 + 2 * (self.inbound_streams +
                                              self.max_wu * self.outbound_data_frames):
                self.flood = WINDOW_UPDATE_FLOOD
                return True
        elif ftype in (PING, SETTINGS) and not flags & ACK:
            self.acks_owed += 1
        return False

    def _count_payload(self, length: int, flags: int, padding: int) -> bool:
        if length - padding <= 0 and not flags & END_STREAM:
            self.empty_run += 1
            if self.empty_run > self.max_empty:
                self.flood = EMPTY_FLOOD
                return True
        else:
            self.empty_run = 0
        return False


class OutboundCounter:
    """Frames and control frames handed to the transport and not yet written to the socket.

    ``add`` records each chunk of bytes given to the transport with the frames in it; ``drained``
    takes the transport's buffered byte count and releases every chunk wholly written. One
    deque entry per write while the transport holds bytes back; nothing at all while it keeps
    up (``drained(0)`` clears)."""

    __slots__ = ("chunks", "control", "frames", "max_control", "max_frames", "total")

    def __init__(self, options: Http2Options) -> None:
        self.max_frames = options.max_outbound_frames
        self.max_control = options.max_outbound_control_frames
        self.total = 0  # bytes handed out so far
        self.frames = self.control = 0
        self.chunks: deque[tuple[int, int, int]] = deque()

    def add(self, nbytes: int, frames: int, control: int) -> str:
        """Record a chunk; returns the flood it makes, or ``""``."""
        self.total += nbytes
        self.frames += frames
        self.control += control
        self.chunks.append((self.total, frames, control))
        if self.frames > self.max_frames:
            return OUTBOUND_FLOOD
        if self.control > self.max_control:
            return OUTBOUND_CONTROL_FLOOD
        return ""

    def drained(self, buffered: int) -> tuple[int, int]:
        """The transport holds ``buffered`` bytes; returns the (frames, control) released."""
        chunks = self.chunks
        if not chunks:
            return 0, 0
        if buffered <= 0:
            freed = self.frames, self.control
            chunks.clear()
            self.frames = self.control = 0
            return freed
        written = self.total - buffered
        f = c = 0
        while chunks and chunks[0][0] <= written:
            _, cf, cc = chunks.popleft()
            f += cf
            c += cc
        self.frames -= f
        self.control -= c
        return f, c
