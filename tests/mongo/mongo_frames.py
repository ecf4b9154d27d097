"""Hand-built MongoDB wire frames for the tests (struct + bson.encode; no driver internals)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import bson

OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY, OP_GET_MORE, OP_DELETE = 1, 2001, 2002, 2004, 2005, 2006
OP_KILL_CURSORS, OP_COMMAND, OP_COMMANDREPLY, OP_COMPRESSED, OP_MSG = 2007, 2010, 2011, 2012, 2013


def frame(opcode: int, body: bytes, request_id: int = 1, response_to: int = 0) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, opcode) + body


def cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def doc(d: Mapping[str, Any]) -> bytes:
    return bson.encode(d)


def op_query(coll: str, query: Mapping[str, Any], *, flags: int = 0, skip: int = 0,
             n_return: int = 0, fields: Mapping[str, Any] | None = None,
             request_id: int = 1) -> bytes:
    body = struct.pack("<i", flags) + cstr(coll) + struct.pack("<ii", skip, n_return) + doc(query)
    if fields is not None:
        body += doc(fields)
    return frame(OP_QUERY, body, request_id)


def op_reply(docs: Sequence[Mapping[str, Any]], *, response_to: int, flags: int = 0,
             cursor_id: int = 0, starting_from: int = 0, request_id: int = 100) -> bytes:
    body = struct.pack("<iqii", flags, cursor_id, starting_from, len(docs))
    body += b"".join(doc(d) for d in docs)
    return frame(OP_REPLY, body, request_id, response_to)


def op_get_more(coll: str, cursor_id: int, n_return: int = 0, request_id: int = 1) -> bytes:
    return frame(OP_GET_MORE, struct.pack("<i", 0) + cstr(coll) + struct.pack("<iq", n_return,
                                                                              cursor_id),
                 request_id)


def op_insert(coll: str, docs: Sequence[Mapping[str, Any]], flags: int = 0,
              request_id: int = 1) -> bytes:
    body = struct.pack("<i", flags) + cstr(coll) + b"".join(doc(d) for d in docs)
    return frame(OP_INSERT, body, request_id)


def op_kill_cursors(ids: Sequence[int], request_id: int = 1) -> bytes:
    body = struct.pack("<ii", 0, len(ids)) + b"".join(struct.pack("<q", i) for i in ids)
    return frame(OP_KILL_CURSORS, body, request_id)


def op_update(coll: str, request_id: int = 1) -> bytes:
    body = struct.pack("<i", 0) + cstr(coll) + struct.pack("<i", 1) + doc({"a": 1})
    return frame(OP_UPDATE, body + doc({"$set": {"b": 2}}), request_id)


def op_delete(coll: str, request_id: int = 1) -> bytes:
    return frame(OP_DELETE, struct.pack("<i", 0) + cstr(coll) + struct.pack("<i", 0)
                 + doc({"a": 1}), request_id)


def op_command(db: str, name: str, args: Mapping[str, Any], request_id: int = 1) -> bytes:
    return frame(OP_COMMAND, cstr(db) + cstr(name) + doc({}) + doc(args), request_id)


def op_commandreply(reply: Mapping[str, Any], response_to: int, request_id: int = 100) -> bytes:
    return frame(OP_COMMANDREPLY, doc({}) + doc(reply), request_id, response_to)


def op_msg(body: Mapping[str, Any], *, sequences: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]
           = (), flags: int = 0, request_id: int = 1, response_to: int = 0,
           checksum: bool = False, body_last: bool = False) -> bytes:
    if checksum:
        flags |= 1
    body_sec = b"\x00" + doc(body)
    seqs = b""
    for ident, docs in sequences:
        payload = cstr(ident) + b"".join(doc(d) for d in docs)
        seqs += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    sections = seqs + body_sec if body_last else body_sec + seqs
    raw = struct.pack("<I", flags) + sections + (b"\xde\xad\xbe\xef" if checksum else b"")
    return frame(OP_MSG, raw, request_id, response_to)


def op_compressed(inner: bytes, compressor_id: int = 2) -> bytes:
    """Wrap a whole frame in OP_COMPRESSED (zlib by default)."""
    _length, request_id, response_to, opcode = struct.unpack_from("<iiii", inner)
    payload = inner[16:]
    if compressor_id == 2:
        packed = zlib.compress(payload)
    elif compressor_id == 0:
        packed = payload
    elif compressor_id == 3:
        import zstandard

        packed = zstandard.ZstdCompressor().compress(payload)
    else:
        import snappy

        packed = snappy.compress(payload)
    body = struct.pack("<iiB", opcode, len(payload), compressor_id) + packed
    return frame(OP_COMPRESSED, body, request_id, response_to)
