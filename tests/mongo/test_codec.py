"""The sans-IO MongoDB decoder: bytes in, messages out."""

from __future__ import annotations

import struct

import pytest
from envoi_mongo import messages as m
from envoi_mongo.codec import Decoder
from mongo_frames import (
    op_command,
    op_commandreply,
    op_compressed,
    op_delete,
    op_get_more,
    op_insert,
    op_kill_cursors,
    op_msg,
    op_query,
    op_reply,
    op_update,
)


def decode_all(data: bytes, dec: Decoder | None = None) -> list[m.Message]:
    dec = dec or Decoder()
    out = dec.feed(data)
    assert dec.error is None, dec.error
    return out


def test_op_query_fields() -> None:
    (q,) = decode_all(op_query("shop.orders", {"_id": 7}, flags=0x22, skip=3, n_return=-1,
                               fields={"a": 1}, request_id=9))
    assert isinstance(q, m.Query)
    assert (q.request_id, q.flags, q.collection, q.skip, q.n_return) == (9, 0x22, "shop.orders",
                                                                          3, -1)
    assert dict(q.query) == {"_id": 7}
    assert q.fields is not None and dict(q.fields) == {"a": 1}


def test_op_reply_counts_documents_without_decoding() -> None:
    data = op_reply([{"a": 1}, {"b": "xx"}], response_to=9, flags=2, cursor_id=55,
                    starting_from=4)
    (r,) = decode_all(data)
    assert isinstance(r, m.Reply)
    assert (r.response_to, r.flags, r.cursor_id, r.starting_from, r.number_returned) == (
        9, 2, 55, 4, 2)
    assert r.doc_sizes == [len(_enc({"a": 1})), len(_enc({"b": "xx"}))]


def test_legacy_opcodes() -> None:
    data = b"".join([
        op_get_more("db.c", 12345, 10, request_id=2),
        op_insert("db.c", [{"x": 1}, {"x": 2}], request_id=3),
        op_kill_cursors([1, 2], request_id=4),
        op_command("db", "ping", {"ping": 1}, request_id=5),
        op_commandreply({"ok": 1}, response_to=5),
        op_update("db.c", request_id=6),
        op_delete("db.c", request_id=7),
    ])
    g, i, k, c, cr, u, d = decode_all(data)
    assert isinstance(g, m.GetMore) and (g.collection, g.n_return, g.cursor_id) == ("db.c", 10,
                                                                                   12345)
    assert isinstance(i, m.Insert) and [dict(x) for x in i.documents] == [{"x": 1}, {"x": 2}]
    assert isinstance(k, m.KillCursors) and k.cursor_ids == [1, 2]
    assert isinstance(c, m.Command) and (c.database, c.command_name) == ("db", "ping")
    assert isinstance(cr, m.CommandReply) and dict(cr.command_reply) == {"ok": 1}
    assert isinstance(u, m.Update) and u.collection == "db.c" and u.flags == 1
    assert isinstance(d, m.Delete) and d.collection == "db.c"


@pytest.mark.parametrize("body_last", [False, True])
@pytest.mark.parametrize("checksum", [False, True])
def test_op_msg_both_section_kinds(checksum: bool, body_last: bool) -> None:
    docs = [{"_id": i, "pad": "x" * 100} for i in range(50)]
    data = op_msg({"insert": "orders", "$db": "shop"}, sequences=[("documents", docs)],
                  flags=0x10000, request_id=11, checksum=checksum, body_last=body_last)
    (msg,) = decode_all(data + op_msg({"ping": 1}, request_id=12))[:1]
    assert isinstance(msg, m.Msg)
    assert msg.body is not None and dict(msg.body) == {"insert": "orders", "$db": "shop"}
    assert msg.exhaust_allowed and not msg.more_to_come
    assert [s.identifier for s in msg.sequences] == ["documents"]
    assert msg.sequences[0].size == sum(len(m_doc) for m_doc in map(_enc, docs))


def _enc(d: dict[str, object]) -> bytes:
    import bson

    return bson.encode(d)


def test_op_msg_sequence_is_skipped_not_buffered() -> None:
    """A 4 MB insert fed in 64 KB chunks never makes the decoder hold more than a chunk."""
    docs = [{"_id": i, "pad": "x" * 1000} for i in range(4000)]
    data = op_msg({"insert": "big", "$db": "db"}, sequences=[("documents", docs)])
    dec = Decoder()
    peak = 0
    out: list[m.Message] = []
    for i in range(0, len(data), 65536):
        out += dec.feed(data[i : i + 65536])
        peak = max(peak, dec.buffered)
    assert dec.error is None
    assert len(out) == 1 and isinstance(out[0], m.Msg)
    assert peak < 65536


def test_op_compressed_zlib_and_noop() -> None:
    inner = op_msg({"find": "orders", "filter": {}, "$db": "shop"}, request_id=21)
    (c,) = decode_all(op_compressed(inner))
    assert isinstance(c, m.Compressed)
    assert (c.original_opcode, c.compressor, c.request_id) == (2013, "zlib", 21)
    assert isinstance(c.inner, m.Msg) and c.inner.body is not None
    assert c.inner.body["find"] == "orders"
    (c0,) = decode_all(op_compressed(op_query("a.b", {"x": 1}), compressor_id=0))
    assert isinstance(c0, m.Compressed) and isinstance(c0.inner, m.Query)


@pytest.mark.parametrize("cid,name", [(1, "snappy"), (3, "zstd")])
def test_op_compressed_optional(cid: int, name: str) -> None:
    (c,) = decode_all(op_compressed(op_msg({"ping": 1}), compressor_id=cid))
    assert isinstance(c, m.Compressed) and c.compressor == name
    assert isinstance(c.inner, m.Msg)


def test_op_compressed_unknown_compressor_is_counted_not_an_error() -> None:
    inner = op_msg({"ping": 1})
    data = bytearray(op_compressed(inner, compressor_id=0))
    data[24] = 9  # compressor id nobody has
    (c,) = decode_all(bytes(data))
    assert isinstance(c, m.Compressed) and c.inner is None


def test_op_compressed_size_lie_is_an_error() -> None:
    data = bytearray(op_compressed(op_msg({"ping": 1})))
    struct.pack_into("<i", data, 20, 5)  # declared uncompressed size too small
    dec = Decoder()
    assert dec.feed(bytes(data)) == []
    assert dec.error is not None


STREAM = b"".join([
    op_query("shop.orders", {"_id": 1}, request_id=1),
    op_reply([{"a": 1}], response_to=1),
    op_msg({"find": "orders", "filter": {"a": 1}, "$db": "shop"}, request_id=2, checksum=True),
    op_msg({"insert": "c", "$db": "d"}, sequences=[("documents", [{"_id": 1}, {"_id": 2}])],
           request_id=3),
    op_compressed(op_msg({"ping": 1, "$db": "admin"}, request_id=4)),
    op_kill_cursors([7], request_id=5),
])


def test_every_split_point_gives_the_same_messages() -> None:
    whole = [type(x).__name__ for x in decode_all(STREAM)]
    assert whole == ["Query", "Reply", "Msg", "Msg", "Compressed", "KillCursors"]
    for cut in range(1, len(STREAM)):
        dec = Decoder()
        got = dec.feed(STREAM[:cut]) + dec.feed(STREAM[cut:])
        assert dec.error is None, (cut, dec.error)
        assert [type(x).__name__ for x in got] == whole, cut


def test_byte_at_a_time() -> None:
    dec = Decoder()
    got: list[m.Message] = []
    for i in range(len(STREAM)):
        got += dec.feed(STREAM[i : i + 1])
    assert dec.error is None and len(got) == 6


def test_truncated_frame_waits_without_error() -> None:
    data = op_query("a.b", {"x": 1})
    for cut in range(len(data)):
        dec = Decoder()
        assert dec.feed(data[:cut]) == []
        assert dec.error is None


def test_http_bytes_fail_at_once() -> None:
    dec = Decoder()
    assert dec.feed(b"GET ") == []
    assert dec.error is not None and "length" in str(dec.error)
    assert dec.feed(op_query("a.b", {})) == []  # stays off


def test_oversized_and_undersized_lengths() -> None:
    big = Decoder(max_message_size=1000)
    big.feed(struct.pack("<iiii", 1001, 1, 0, 2013))
    assert big.error is not None
    small = Decoder()
    small.feed(struct.pack("<iiii", 8, 1, 0, 2004))
    assert small.error is not None


def test_lying_length_inside_frame() -> None:
    """A BSON length that runs past its frame is a decoding error, not an overread."""
    data = bytearray(op_query("a.b", {"x": 1}))
    struct.pack_into("<i", data, 16 + 4 + 4 + 8, 500)
    dec = Decoder()
    dec.feed(bytes(data))
    assert dec.error is not None


def test_bad_cstring_and_unknown_opcode() -> None:
    dec = Decoder()
    body = struct.pack("<i", 0) + b"no-nul-terminator"
    dec.feed(struct.pack("<iiii", 16 + len(body), 1, 0, 2004) + body)
    assert dec.error is not None and "CString" in str(dec.error)
    dec2 = Decoder()
    good = op_query("a.b", {})
    out = dec2.feed(good + struct.pack("<iiii", 20, 2, 0, 9999) + bytes(4))
    assert len(out) == 1 and dec2.error is not None and "9999" in str(dec2.error)


def test_op_msg_malformed_sections() -> None:
    for bad in (
        op_msg({"a": 1})[:20] + b"\x05" + op_msg({"a": 1})[21:],  # unknown section kind
        struct.pack("<iiiiI", 21, 1, 0, 2013, 0) + b"\x00",  # too short for a section
    ):
        dec = Decoder()
        dec.feed(bad)
        assert dec.error is not None
    # sequence only, no body
    seq = b"\x01" + struct.pack("<i", 4 + 2) + b"d\x00"
    dec = Decoder()
    dec.feed(struct.pack("<iiiiI", 20 + len(seq), 1, 0, 2013, 0) + seq)
    assert dec.error is not None and "body" in str(dec.error)


def test_random_bytes_never_raise() -> None:
    import random

    rng = random.Random(5)
    for _ in range(300):
        dec = Decoder(max_message_size=1 << 16)
        data = STREAM[: rng.randrange(len(STREAM))] + bytes(rng.randrange(256) for _ in range(64))
        for i in range(0, len(data), 7):
            dec.feed(data[i : i + 7])
        assert dec.buffered <= 1 << 17
