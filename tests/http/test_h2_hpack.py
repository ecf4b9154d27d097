"""The remembering HPACK coder gives exactly what hpack gives, block for block (never-indexed
fields coded without Huffman)."""

from __future__ import annotations

from envoi_http.codec.h2_hpack import MemoDecoder, MemoEncoder, never_indexed
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

names = st.sampled_from([b":status", b"server", b"date", b"content-type", b"x-a", b"x-b",
                         b"x-request-id"])
values = st.sampled_from([b"200", b"404", b"envoy", b"text/plain", b"1", b"2", b"x" * 40])
blocks = st.lists(st.lists(st.tuples(names, values), min_size=1, max_size=6), max_size=40)
steps = st.lists(st.one_of(st.integers(0, 39), st.sampled_from([0, 100, 4096, 64])),
                 max_size=60)


@settings(max_examples=200, deadline=None)
@given(blocks=blocks, order=steps, huffman=st.booleans())
def test_same_bytes_and_headers_as_hpack(blocks: list[list[tuple[bytes, bytes]]],
                                         order: list[int], huffman: bool) -> None:
    if not blocks:
        return
    plain_e, memo_e = Encoder(), MemoEncoder()
    plain_d, memo_d = Decoder(), MemoDecoder()
    for i, step in enumerate(order):
        if i % 7 == 6:  # the peer's SETTINGS_HEADER_TABLE_SIZE changes now and then
            size = [0, 100, 4096, 64][step % 4]
            plain_e.header_table_size = memo_e.header_table_size = size
            continue
        headers = never_indexed(list(blocks[step % len(blocks)]))
        a = b"".join(plain_e.encode([h], huffman and type(h) is not NeverIndexedHeaderTuple)
                     for h in headers)
        b = memo_e.encode(headers, huffman)
        assert a == b
        assert plain_d.decode(a, raw=True) == memo_d.decode(b, raw=True)


def test_never_indexed_fields_leave_the_table_alone() -> None:
    e = MemoEncoder()
    base = [(b":status", b"200"), (b"server", b"envoy")]
    b0 = e.encode(base)
    first = e.encode(never_indexed([*base, (b"date", b"Mon, 1")]))
    assert e.encode(never_indexed([*base, (b"date", b"Mon, 1")])) is first
    e.encode(never_indexed([*base, (b"date", b"Mon, 2")]))  # a new date: no new table entry
    assert e.encode(never_indexed([*base, (b"date", b"Mon, 1")])) is first  # still remembered
    d = Decoder()
    d.decode(b0, raw=True)
    assert [(bytes(k), bytes(v)) for k, v in d.decode(first, raw=True)] == [
        *base, (b"date", b"Mon, 1")]


def test_repeated_block_is_remembered() -> None:
    e, d = MemoEncoder(), MemoDecoder()
    hs = [(b":status", b"200"), (b"server", b"envoy")]
    first = e.encode(hs)
    second = e.encode(hs)  # now all indexed
    assert second != first and e.encode(hs) is second
    d.decode(first, raw=True)
    got = d.decode(second, raw=True)
    assert d.decode(second, raw=True) is got
    assert [(bytes(k), bytes(v)) for k, v in got] == hs


def test_never_indexed_fields_are_not_huffman_coded() -> None:
    value = b"3f8a1c52-0b6e-4c4e-9d1a-7f0e2b9c6d11"
    block = MemoEncoder().encode(never_indexed([(b"x-request-id", value)]))
    # 0x10: literal never indexed, new name; then the name and the value as plain strings
    assert block == b"\x10\x0cx-request-id\x24" + value
    assert Decoder().decode(block, raw=True) == [(b"x-request-id", value)]
