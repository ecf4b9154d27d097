"""A sans-IO, incremental MongoDB wire decoder: feed bytes, get :mod:`envoi_mongo.messages`.

The decoder never holds more than it needs to look at. Legacy opcodes (small by nature) are
parsed once their whole frame is in. An OP_MSG is parsed section by section: the kind-0 body is
buffered and wrapped as a lazy RawBSONDocument, while kind-1 document sequences (an insert's
documents, easily megabytes) are skipped over as they stream past, without being copied into the
buffer at all when nothing else is buffered. The optional CRC-32C trailer is skipped, not checked.

A frame whose length is below 16 or above the maximum message size (``maxMessageSizeBytes``,
48 MB by default) is an error at once: HTTP bytes on a mongo port (``GET `` read as a 542 MB
length) are caught on the first four bytes instead of being awaited forever.

After an error the decoder keeps ``error`` set, drops its buffer and ignores further input: the
caller stops sniffing the connection, as Envoy's mongo_proxy does.
"""

from __future__ import annotations

import struct

from bson.raw_bson import RawBSONDocument

from envoi_mongo import compression
from envoi_mongo.messages import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER_SIZE,
    LEGACY_OPCODES,
    MSG_CHECKSUM_PRESENT,
    OP_COMPRESSED,
    OP_MSG,
    RAW_OPTIONS,
    Compressed,
    DecodeError,
    Message,
    Msg,
    Reader,
    Sequence,
    parse_legacy,
)

_HEADER = struct.Struct("<iiii")
_I32 = struct.Struct("<i")

# Decoder states.
_ST_HEADER = 0
_ST_WHOLE = 1  # waiting for the rest of a frame parsed in one go (legacy, OP_COMPRESSED)
_ST_MSG_FLAGS = 2
_ST_MSG_SECTION = 3  # at a section start, or at the checksum / frame end
_ST_MSG_BODY = 4  # waiting for a whole kind-0 section
_ST_MSG_SEQ_ID = 5  # waiting for a kind-1 section's identifier

#: A sequence identifier is a short name ("documents"); a longer one is garbage.
_MAX_IDENTIFIER = 1024


class Decoder:
    """One direction of one connection."""

    __slots__ = (
        "_body", "_buf", "_checksum", "_flags", "_header", "_left", "_need", "_pos",
        "_seq_left", "_sequences", "_skip", "_state", "error", "max_message_size",
    )

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self.error: DecodeError | None = None
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0  # bytes still to drop (inside an OP_MSG sequence or its checksum)
        self._state = _ST_HEADER
        self._header: tuple[int, int, int, int] = (0, 0, 0, 0)  # length, id, response_to, op
        self._left = 0  # bytes of the current frame not consumed yet (after the header)
        self._need = 0
        self._flags = 0
        self._checksum = 0
        self._body: RawBSONDocument | None = None
        self._sequences: list[Sequence] = []
        self._seq_left = 0

    @property
    def buffered(self) -> int:
        """Bytes held right now (for tests of the memory bound)."""
        return len(self._buf) - self._pos

    @property
    def mid_frame(self) -> bool:
        """True when part of a frame has been seen but not all of it (a truncated frame if the
        stream ends now)."""
        return self._state != _ST_HEADER or self._pos != len(self._buf) or self._skip > 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Decode what ``data`` completes. Messages decoded before an error are still returned;
        the error is left in ``self.error``."""
        out: list[Message] = []
        if self.error is not None or not data:
            return out
        view = memoryview(data)
        if self._skip and self._pos == len(self._buf):
            # Nothing buffered: drop the skipped part straight from the input, no copy.
            n = min(self._skip, len(view))
            self._skip -= n
            view = view[n:]
        if len(view):
            self._buf += view
        try:
            self._run(out)
        except DecodeError as e:
            self._fail(e)
        except (ValueError, TypeError, struct.error) as e:  # from bson or struct: malformed
            self._fail(DecodeError(str(e)))
        finally:
            view.release()
        return out

    def _fail(self, e: DecodeError) -> None:
        self.error = e
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0

    def _run(self, out: list[Message]) -> None:
        buf = self._buf
        try:
            while True:
                avail = len(buf) - self._pos
                if self._skip:
                    n = min(self._skip, avail)
                    self._pos += n
                    self._skip -= n
                    if self._skip:
                        return
                    avail -= n
                state = self._state
                if state == _ST_HEADER:
                    if not self._read_header(avail):
                        return
                elif state == _ST_WHOLE:
                    if avail < self._left:
                        return
                    out.append(self._parse_whole())
                elif state == _ST_MSG_FLAGS:
                    if avail < 4:
                        return
                    (self._flags,) = _I32.unpack_from(buf, self._pos)
                    self._pos += 4
                    self._left -= 4
                    self._checksum = 4 if self._flags & MSG_CHECKSUM_PRESENT else 0
                    self._state = _ST_MSG_SECTION
                elif state == _ST_MSG_SECTION:
                    msg = self._section_start(avail)
                    if msg is not None:
                        out.append(msg)
                    elif self._state == _ST_MSG_SECTION and not self._skip:
                        return  # need more bytes for the section header
                elif state == _ST_MSG_BODY:
                    if avail < self._need:
                        return
                    self._take_body()
                elif not self._take_identifier(avail):  # _ST_MSG_SEQ_ID
                    return
        finally:
            # Keep only the unconsumed tail: the buffer never grows past one pending item.
            if self._pos:
                del buf[: self._pos]
                self._pos = 0

    def _read_header(self, avail: int) -> bool:
        buf = self._buf
        if avail >= 4:
            # Check the length as soon as it is readable, so non-Mongo bytes fail at once.
            (length,) = _I32.unpack_from(buf, self._pos)
            if length < HEADER_SIZE or length > self.max_message_size:
                raise DecodeError(f"invalid message length {length}")
        if avail < HEADER_SIZE:
            return False
        length, request_id, response_to, opcode = _HEADER.unpack_from(buf, self._pos)
        self._pos += HEADER_SIZE
        self._header = (length, request_id, response_to, opcode)
        self._left = length - HEADER_SIZE
        if opcode == OP_MSG:
            if self._left < 5:
                raise DecodeError("OP_MSG too short")
            self._state = _ST_MSG_FLAGS
            self._body = None
            self._sequences = []
        elif opcode in LEGACY_OPCODES or opcode == OP_COMPRESSED:
            self._state = _ST_WHOLE
        else:
            raise DecodeError(f"invalid mongo op {opcode}")
        return True

    def _parse_whole(self) -> Message:
        length, request_id, response_to, opcode = self._header
        start = self._pos
        end = start + self._left
        reader = Reader(self._buf, start, end)
        if opcode == OP_COMPRESSED:
            msg: Message = self._parse_compressed(reader)
        else:
            msg = parse_legacy(opcode, request_id, response_to, length, reader)
        # The frame length is authoritative: bytes a body did not use are skipped.
        self._pos = end
        self._left = 0
        self._state = _ST_HEADER
        return msg

    def _parse_compressed(self, r: Reader) -> Compressed:
        length, request_id, response_to, _ = self._header
        original = r.i32()
        size = r.i32()
        compressor_id = r.u8()
        if original == OP_COMPRESSED or size < 0 or size + HEADER_SIZE > self.max_message_size:
            raise DecodeError("invalid OP_COMPRESSED header")
        name = compression.NAMES.get(compressor_id, str(compressor_id))
        payload = bytes(self._buf[r.pos : r.end])
        plain = compression.decompress(compressor_id, payload, size)
        inner: Message | None = None
        if plain is not None:
            # Decode the inner message with a fresh decoder under a synthetic header, so the
            # OP_MSG and legacy rules are exactly the ones used for uncompressed frames.
            sub = Decoder(self.max_message_size)
            header = _HEADER.pack(size + HEADER_SIZE, request_id, response_to, original)
            msgs = sub.feed(header + plain)
            if sub.error is not None:
                raise sub.error
            if len(msgs) != 1:
                raise DecodeError("truncated compressed message")
            inner = msgs[0]
        return Compressed(request_id, response_to, length, original, size, compressor_id,
                          name, inner)

    def _section_start(self, avail: int) -> Msg | None:
        left = self._left - self._checksum
        if left == 0:
            if self._checksum:
                self._skip = self._checksum
                self._left -= self._checksum
                self._checksum = 0
                return None
            return self._finish_msg()
        if left < 5:
            raise DecodeError("invalid OP_MSG section")
        if avail < 5:
            return None
        buf = self._buf
        kind = buf[self._pos]
        (size,) = _I32.unpack_from(buf, self._pos + 1)
        if size < 5 or 1 + size > left:
            raise DecodeError("invalid OP_MSG section size")
        if kind == 0:
            if self._body is not None:
                raise DecodeError("OP_MSG with two body sections")
            self._need = 1 + size
            self._state = _ST_MSG_BODY
        elif kind == 1:
            self._pos += 5
            self._left -= 5
            self._seq_left = size - 4
            self._state = _ST_MSG_SEQ_ID
        else:
            raise DecodeError(f"invalid OP_MSG section kind {kind}")
        return None

    def _take_body(self) -> None:
        buf = self._buf
        start = self._pos + 1
        end = self._pos + self._need
        if buf[end - 1] != 0:
            raise DecodeError("invalid document")
        self._body = RawBSONDocument(bytes(buf[start:end]), RAW_OPTIONS)
        self._pos = end
        self._left -= self._need
        self._state = _ST_MSG_SECTION

    def _take_identifier(self, avail: int) -> bool:
        buf = self._buf
        limit = min(self._seq_left, avail, _MAX_IDENTIFIER)
        nul = buf.find(b"\x00", self._pos, self._pos + limit)
        if nul < 0:
            if limit == self._seq_left or limit == _MAX_IDENTIFIER:
                raise DecodeError("invalid OP_MSG sequence identifier")
            return False
        try:
            ident = bytes(buf[self._pos : nul]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError("invalid OP_MSG sequence identifier") from e
        used = nul + 1 - self._pos
        self._pos = nul + 1
        payload = self._seq_left - used
        self._sequences.append(Sequence(ident, payload))
        # The documents themselves are not needed for stats: skip them as they stream by.
        self._skip = payload
        self._left -= used + payload
        self._state = _ST_MSG_SECTION
        return True

    def _finish_msg(self) -> Msg:
        if self._body is None:
            raise DecodeError("OP_MSG without a body section")
        length, request_id, response_to, _ = self._header
        msg = Msg(request_id, response_to, length, self._flags, self._body, self._sequences)
        self._body = None
        self._sequences = []
        self._state = _ST_HEADER
        return msg
