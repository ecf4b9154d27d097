"""MongoDB wire messages as plain objects, and the parsers for the fixed-layout (legacy) opcodes.

Everything here is pure: bytes in, objects out; no I/O and no asyncio. Documents are kept as
``bson.raw_bson.RawBSONDocument``: wrapping costs nothing, and only the keys the proxy actually
reads are ever inflated, so a reply carrying a large batch is not decoded element by element.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument

# Opcodes (https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/).
OP_REPLY = 1
OP_UPDATE = 2001
OP_INSERT = 2002
OP_QUERY = 2004
OP_GET_MORE = 2005
OP_DELETE = 2006
OP_KILL_CURSORS = 2007
OP_COMMAND = 2010
OP_COMMANDREPLY = 2011
OP_COMPRESSED = 2012
OP_MSG = 2013

# OP_QUERY flag bits Envoy counts.
QUERY_TAILABLE_CURSOR = 0x2
QUERY_NO_CURSOR_TIMEOUT = 0x10
QUERY_AWAIT_DATA = 0x20
QUERY_EXHAUST = 0x40
# OP_REPLY flag bits.
REPLY_CURSOR_NOT_FOUND = 0x1
REPLY_QUERY_FAILURE = 0x2
# OP_MSG flag bits.
MSG_CHECKSUM_PRESENT = 0x1
MSG_MORE_TO_COME = 0x2
MSG_EXHAUST_ALLOWED = 0x10000

HEADER_SIZE = 16
#: mongod's maxMessageSizeBytes; anything larger is not a MongoDB frame.
DEFAULT_MAX_MESSAGE_SIZE = 48_000_000

#: Datetimes stay integers (milliseconds): a sniffer must not fail on out-of-range dates, and
#: Envoy prints them as int64 anyway.
RAW_OPTIONS: CodecOptions[RawBSONDocument] = CodecOptions(
    document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_MS
)

_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_U8 = struct.Struct("<B")


class DecodeError(Exception):
    """The bytes are not a well-formed MongoDB message; sniffing of the connection stops."""


@dataclass(slots=True)
class Message:
    """Fields every frame has: the 16-byte header."""

    request_id: int
    response_to: int
    length: int  # the whole frame, header included


@dataclass(slots=True)
class Query(Message):
    flags: int
    collection: str
    skip: int
    n_return: int
    query: RawBSONDocument
    fields: RawBSONDocument | None


@dataclass(slots=True)
class Reply(Message):
    flags: int
    cursor_id: int
    starting_from: int
    number_returned: int
    #: sizes of the returned documents, in order (what Envoy sums into reply_size)
    doc_sizes: list[int]


@dataclass(slots=True)
class GetMore(Message):
    collection: str
    n_return: int
    cursor_id: int


@dataclass(slots=True)
class Insert(Message):
    flags: int
    collection: str
    documents: list[RawBSONDocument]


@dataclass(slots=True)
class KillCursors(Message):
    cursor_ids: list[int]


@dataclass(slots=True)
class Command(Message):
    database: str
    command_name: str
    metadata: RawBSONDocument
    command_args: RawBSONDocument
    input_docs: list[RawBSONDocument]


@dataclass(slots=True)
class CommandReply(Message):
    metadata: RawBSONDocument
    command_reply: RawBSONDocument
    output_docs: list[RawBSONDocument]


@dataclass(slots=True)
class Update(Message):
    """OP_UPDATE (removed in MongoDB 6.0): recognised and counted, not classified."""

    collection: str
    flags: int


@dataclass(slots=True)
class Delete(Message):
    """OP_DELETE (removed in MongoDB 6.0): recognised and counted, not classified."""

    collection: str
    flags: int


@dataclass(slots=True)
class Sequence:
    """An OP_MSG kind-1 section. Its documents are skipped over, never copied: only the
    identifier (``documents``, ``updates``, ``deletes``...) and the payload size are kept."""

    identifier: str
    size: int  # payload bytes (the documents), excluding the size field and identifier


@dataclass(slots=True)
class Msg(Message):
    flags: int
    body: RawBSONDocument | None
    sequences: list[Sequence] = field(default_factory=list)

    @property
    def more_to_come(self) -> bool:
        return bool(self.flags & MSG_MORE_TO_COME)

    @property
    def exhaust_allowed(self) -> bool:
        return bool(self.flags & MSG_EXHAUST_ALLOWED)

    @property
    def documents_size(self) -> int:
        """Bytes of BSON carried (body plus sequence payloads): the OP_MSG ``reply_size``."""
        body = len(self.body.raw) if self.body is not None else 0
        return body + sum(s.size for s in self.sequences)


@dataclass(slots=True)
class Compressed(Message):
    original_opcode: int
    uncompressed_size: int
    compressor_id: int
    compressor: str
    #: the decompressed message, or None when the compressor is not available here
    inner: Message | None


class Reader:
    """A cursor over one frame body (inside a bytes or bytearray buffer), raising DecodeError when a
    field runs past the end, as Envoy's BufferHelper does."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int) -> None:
        if self.pos + n > self.end:
            raise DecodeError("message truncated")

    def i32(self) -> int:
        self._need(4)
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def i64(self) -> int:
        self._need(8)
        (v,) = _I64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def u8(self) -> int:
        self._need(1)
        (v,) = _U8.unpack_from(self.buf, self.pos)
        self.pos += 1
        return int(v)

    def cstring(self) -> str:
        end = self.buf.find(b"\x00", self.pos, self.end)
        if end < 0:
            raise DecodeError("invalid CString")
        raw = bytes(self.buf[self.pos : end])
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError("invalid CString") from e

    def doc_size(self) -> int:
        """Validate the length prefix of the next document and skip it; return its size."""
        self._need(4)
        (size,) = _I32.unpack_from(self.buf, self.pos)
        if size < 5 or self.pos + size > self.end:
            raise DecodeError("invalid BSON message length")
        if self.buf[self.pos + size - 1] != 0:
            raise DecodeError("invalid document")
        self.pos += size
        return int(size)

    def document(self) -> RawBSONDocument:
        start = self.pos
        size = self.doc_size()
        return RawBSONDocument(bytes(self.buf[start : start + size]), RAW_OPTIONS)


def parse_legacy(opcode: int, request_id: int, response_to: int, length: int,
                 r: Reader) -> Message:
    """Parse a whole legacy frame body (everything after the header)."""
    if opcode == OP_QUERY:
        flags = r.i32()
        coll = r.cstring()
        skip = r.i32()
        n_return = r.i32()
        query = r.document()
        fields = r.document() if r.remaining > 0 else None
        return Query(request_id, response_to, length, flags, coll, skip, n_return, query, fields)
    if opcode == OP_REPLY:
        flags = r.i32()
        cursor_id = r.i64()
        starting_from = r.i32()
        number_returned = r.i32()
        # Only sizes are needed (document count and reply_size); Envoy logs replies in summary.
        sizes = [r.doc_size() for _ in range(max(number_returned, 0))]
        return Reply(request_id, response_to, length, flags, cursor_id, starting_from,
                     number_returned, sizes)
    if opcode == OP_GET_MORE:
        r.i32()  # ZERO
        coll = r.cstring()
        n_return = r.i32()
        cursor_id = r.i64()
        return GetMore(request_id, response_to, length, coll, n_return, cursor_id)
    if opcode == OP_INSERT:
        flags = r.i32()
        coll = r.cstring()
        docs = []
        while r.remaining > 0:
            docs.append(r.document())
        return Insert(request_id, response_to, length, flags, coll, docs)
    if opcode == OP_KILL_CURSORS:
        r.i32()  # ZERO
        n = r.i32()
        if n < 0 or n * 8 > r.remaining:
            raise DecodeError("invalid number of cursor ids")
        return KillCursors(request_id, response_to, length, [r.i64() for _ in range(n)])
    if opcode == OP_COMMAND:
        database = r.cstring()
        name = r.cstring()
        metadata = r.document()
        args = r.document()
        inputs = [r.document()] if r.remaining > 0 else []
        return Command(request_id, response_to, length, database, name, metadata, args, inputs)
    if opcode == OP_COMMANDREPLY:
        metadata = r.document()
        reply = r.document()
        outputs = [r.document()] if r.remaining > 0 else []
        return CommandReply(request_id, response_to, length, metadata, reply, outputs)
    if opcode == OP_UPDATE:
        r.i32()  # ZERO
        coll = r.cstring()
        return Update(request_id, response_to, length, coll, r.i32())
    if opcode == OP_DELETE:
        r.i32()  # ZERO
        coll = r.cstring()
        return Delete(request_id, response_to, length, coll, r.i32())
    raise DecodeError(f"invalid mongo op {opcode}")


#: Opcodes parsed as one whole frame by :func:`parse_legacy`.
LEGACY_OPCODES = frozenset({
    OP_QUERY, OP_REPLY, OP_GET_MORE, OP_INSERT, OP_KILL_CURSORS, OP_COMMAND, OP_COMMANDREPLY,
    OP_UPDATE, OP_DELETE,
})
