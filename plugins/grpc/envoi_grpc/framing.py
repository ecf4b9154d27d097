"""gRPC's length-prefixed messages, sans-IO: a counter that buffers nothing, a decoder that
buffers at most one message, and the encoder.

On the wire (gRPC over HTTP/2, and gRPC-Web), a stream's DATA is a sequence of messages, each
``flags:u8 length:u32be payload[length]``. Bit 0 of ``flags`` says the payload is compressed
(``grpc-encoding``); gRPC-Web sets bit 7 on its final trailer frame. Nothing here does I/O.

* :class:`FrameCounter` counts messages as the bytes stream past (Envoy's ``Grpc::FrameInspector``):
  a message is counted as soon as its first byte -- the start of its 5-byte prefix -- is seen,
  its payload is skipped without being looked at or copied. Used by ``grpc_stats``, which only
  observes.
* :class:`MessageDecoder` turns bytes into :class:`Message` objects. It keeps only the message in
  progress (never more than one, never larger than ``max_message_size``), and stops at the first
  malformed prefix with ``error`` set: unknown flag bits, a length above the maximum. ``finish()``
  says whether the stream ended inside a message (a truncated message).
* :func:`encode` / :func:`prefix` make the 5-byte prefix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PREFIX_SIZE = 5
FLAG_COMPRESSED = 0x01
FLAG_TRAILERS = 0x80  # gRPC-Web: the frame carries the trailers as an HTTP/1 header block
#: gRPC's default receive limit (grpc-core's GRPC_DEFAULT_MAX_RECV_MESSAGE_LENGTH, 4 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
#: The largest length a prefix can hold.
MAX_LENGTH = 0xFFFFFFFF

_PREFIX = struct.Struct(">BI")

# Why a decoder stopped (``MessageDecoder.error``).
ERR_FLAGS = "unknown flags"
ERR_TOO_LARGE = "message larger than the maximum"
ERR_TRUNCATED = "stream ended inside a message"


def prefix(length: int, flags: int = 0) -> bytes:
    """The 5-byte prefix of a message of ``length`` bytes."""
    return _PREFIX.pack(flags, length)


def encode(payload: bytes, compressed: bool = False) -> bytes:
    """One message on the wire: prefix and payload."""
    return _PREFIX.pack(FLAG_COMPRESSED if compressed else 0, len(payload)) + payload


class FrameCounter:
    """Counts the messages of one direction of one stream; never buffers, never copies.

    ``feed(data)`` returns how many messages started in ``data``; ``count`` is the total.
    ``inside`` is True while a message (its prefix or its payload) is incomplete.
    """

    __slots__ = ("_len", "_need", "_skip", "count")

    def __init__(self) -> None:
        self.count = 0
        self._need = 0  # bytes of the current prefix still to come (0: at a message boundary)
        self._len = 0  # the length field collected so far
        self._skip = 0  # payload bytes still to skip

    @property
    def inside(self) -> bool:
        return bool(self._need or self._skip)

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        pos = 0
        started = 0
        skip = self._skip
        need = self._need
        length = self._len
        while pos < n:
            if skip:
                take = skip if skip < n - pos else n - pos
                pos += take
                skip -= take
                continue
            if not need:
                # The flag byte: a new message starts here (Envoy counts it now).
                started += 1
                pos += 1
                need = 4
                length = 0
                if pos + 4 <= n:  # the common case: the whole length field is here
                    length = int.from_bytes(data[pos:pos + 4], "big")
                    pos += 4
                    need = 0
                    skip = length
                continue
            length = (length << 8) | data[pos]
            pos += 1
            need -= 1
            if not need:
                skip = length
        self._skip = skip
        self._need = need
        self._len = length
        self.count += started
        return started


@dataclass(frozen=True, slots=True)
class Message:
    """One gRPC message: its payload and whether that payload is compressed. ``flags`` is the
    whole flag byte (gRPC-Web's trailer frame has bit 7 set)."""

    data: bytes
    flags: int = 0

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def trailers(self) -> bool:
        return bool(self.flags & FLAG_TRAILERS)


class MessageDecoder:
    """Bytes in, whole messages out; holds at most the one message in progress.

    ``allowed_flags``: the flag bits a prefix may carry (gRPC: compressed only; gRPC-Web
    responses: compressed and trailers). A prefix with other bits set, or announcing more than
    ``max_message_size`` bytes, sets ``error`` and the decoder ignores everything after it.
    """

    __slots__ = ("_buf", "_flags", "_need", "allowed_flags", "error", "max_message_size")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 allowed_flags: int = FLAG_COMPRESSED) -> None:
        if not 0 <= max_message_size <= MAX_LENGTH:
            raise ValueError(f"max_message_size out of range: {max_message_size}")
        self.max_message_size = max_message_size
        self.allowed_flags = allowed_flags
        self.error: str | None = None
        self._buf = bytearray()  # the prefix in progress, then the payload in progress
        self._need = -1  # payload bytes still missing; -1 while reading a prefix
        self._flags = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the message in progress (at most 5 + ``max_message_size``)."""
        return len(self._buf)

    @property
    def inside(self) -> bool:
        """A message has started and is not complete."""
        return bool(self._buf) or self._need >= 0

    def receive(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Feed bytes; return the messages they complete (maybe none)."""
        out: list[Message] = []
        if self.error is not None:
            return out
        view = memoryview(data)
        n = len(view)
        pos = 0
        buf = self._buf
        while pos < n:
            if self._need < 0:  # reading a prefix
                if not buf and pos + PREFIX_SIZE <= n:
                    flags, length = _PREFIX.unpack_from(view, pos)
                    pos += PREFIX_SIZE
                else:
                    take = min(PREFIX_SIZE - len(buf), n - pos)
                    buf += view[pos:pos + take]
                    pos += take
                    if len(buf) < PREFIX_SIZE:
                        break
                    flags, length = _PREFIX.unpack_from(buf, 0)
                    buf.clear()
                if flags & ~self.allowed_flags:
                    return self._fail(ERR_FLAGS, out)
                if length > self.max_message_size:
                    return self._fail(ERR_TOO_LARGE, out)
                self._flags = flags
                self._need = length
                if length == 0:
                    out.append(Message(b"", flags))
                    self._need = -1
                continue
            need = self._need
            if not buf and pos + need <= n:  # the whole payload is here: no copy into buf
                out.append(Message(bytes(view[pos:pos + need]), self._flags))
                pos += need
                self._need = -1
                continue
            take = min(need - len(buf), n - pos)
            buf += view[pos:pos + take]
            pos += take
            if len(buf) == need:
                out.append(Message(bytes(buf), self._flags))
                buf.clear()
                self._need = -1
        return out

    def finish(self) -> str | None:
        """The stream ended: its error, or ``ERR_TRUNCATED`` when it ended inside a message."""
        if self.error is None and self.inside:
            self.error = ERR_TRUNCATED
            self._buf = bytearray()
        return self.error

    def _fail(self, why: str, out: list[Message]) -> list[Message]:
        self.error = why
        self._buf = bytearray()
        self._need = -1
        return out
