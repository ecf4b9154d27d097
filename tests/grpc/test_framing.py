"""The gRPC message framer: unit cases, hypothesis properties (any split of the bytes gives the
same messages and counts; memory stays within one message) and a mutation fuzzer."""

from __future__ import annotations

import random

import pytest
from envoi_grpc.framing import (
    ERR_FLAGS,
    ERR_TOO_LARGE,
    ERR_TRUNCATED,
    FLAG_TRAILERS,
    FrameCounter,
    Message,
    MessageDecoder,
    encode,
    prefix,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def test_encode_and_prefix() -> None:
    assert prefix(3) == b"\x00\x00\x00\x00\x03"
    assert encode(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert encode(b"z", compressed=True) == b"\x01\x00\x00\x00\x01z"
    assert prefix(0, FLAG_TRAILERS) == b"\x80\x00\x00\x00\x00"


def test_decoder_one_read_and_byte_by_byte() -> None:
    wire = encode(b"hello") + encode(b"") + encode(b"x" * 70000, compressed=True)
    want = [Message(b"hello"), Message(b""), Message(b"x" * 70000, 1)]
    assert MessageDecoder().receive(wire) == want
    d = MessageDecoder()
    got: list[Message] = []
    for i in range(len(wire)):
        got += d.receive(wire[i:i + 1])
    assert got == want and d.finish() is None and d.buffered == 0
    assert got[2].compressed and not got[0].compressed


def test_decoder_refuses_unknown_flags_and_stops() -> None:
    d = MessageDecoder()
    assert d.receive(encode(b"ok") + b"\x02\x00\x00\x00\x01z" + encode(b"after")) == \
        [Message(b"ok")]
    assert d.error == ERR_FLAGS
    assert d.receive(encode(b"more")) == []  # nothing after an error
    web = MessageDecoder(allowed_flags=0x81)
    assert web.receive(prefix(4, FLAG_TRAILERS) + b"a:b\n") == [Message(b"a:b\n", 0x80)]
    assert web.receive(prefix(4, FLAG_TRAILERS) + b"a:b\n")[0].trailers


def test_decoder_max_message_size_is_checked_on_the_prefix() -> None:
    d = MessageDecoder(max_message_size=10)
    assert d.receive(encode(b"x" * 10)) == [Message(b"x" * 10)]
    # A length that lies (4 GiB) is refused on its prefix: nothing is awaited or buffered.
    assert d.receive(b"\x00\xff\xff\xff\xff") == []
    assert d.error == ERR_TOO_LARGE and d.buffered == 0
    with pytest.raises(ValueError):
        MessageDecoder(max_message_size=-1)


def test_decoder_truncated() -> None:
    d = MessageDecoder()
    assert d.receive(encode(b"abcdef")[:-2]) == []
    assert d.inside and d.buffered == 4
    assert d.finish() == ERR_TRUNCATED and d.buffered == 0
    d = MessageDecoder()
    d.receive(b"\x00\x00")  # inside a prefix
    assert d.finish() == ERR_TRUNCATED
    assert MessageDecoder().finish() is None


def test_counter_counts_at_the_first_prefix_byte() -> None:
    c = FrameCounter()
    wire = encode(b"abc") + encode(b"defg")
    assert c.feed(wire[:1]) == 1 and c.inside  # the flag byte of the first message
    assert c.feed(wire[1:8]) == 0
    assert c.feed(wire[8:9]) == 1
    assert c.feed(wire[9:]) == 0 and not c.inside
    assert c.count == 2
    # A large message's payload is skipped, not scanned: its bytes can be anything.
    c = FrameCounter()
    assert c.feed(prefix(1 << 20) + b"\x00" * 1000) == 1
    assert c.feed(b"\x00" * ((1 << 20) - 1000)) == 0
    assert c.feed(encode(b"")) == 1 and c.count == 2


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(st.tuples(st.binary(max_size=300), st.booleans()), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_any_split_gives_the_same_messages(msgs: list[tuple[bytes, bool]],
                                           cuts: list[int]) -> None:
    wire = b"".join(encode(p, c) for p, c in msgs)
    want = [Message(p, int(c)) for p, c in msgs]
    d = MessageDecoder(max_message_size=300)
    counter = FrameCounter()
    got: list[Message] = []
    for piece in split_at(wire, cuts):
        got += d.receive(piece)
        counter.feed(piece)
        assert d.buffered <= 300 + 5  # never more than the one message in progress
    assert got == want
    assert d.finish() is None
    assert counter.count == len(msgs) and not counter.inside


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_random_bytes_split_anyhow_agree(data: bytes, cuts: list[int]) -> None:
    whole = MessageDecoder(max_message_size=1000)
    want = whole.receive(data)
    d = MessageDecoder(max_message_size=1000)
    c1, c2 = FrameCounter(), FrameCounter()
    c1.feed(data)
    got: list[Message] = []
    for piece in split_at(data, cuts):
        got += d.receive(piece)
        c2.feed(piece)
        assert d.buffered <= 1005
    assert got == want and d.error == whole.error
    assert c1.count == c2.count


def test_fuzz_mutated_streams() -> None:
    """Valid streams with bits flipped, bytes cut, inserted and repeated, fed in random reads:
    the decoder never raises, never holds more than one message, and stops on the first bad
    prefix; the counter never raises."""
    rnd = random.Random(1515)
    for _ in range(2000):
        msgs = [rnd.randbytes(rnd.randint(0, 200)) for _ in range(rnd.randint(0, 6))]
        wire = bytearray(b"".join(encode(m, rnd.random() < 0.2) for m in msgs))
        for _ in range(rnd.randint(0, 4)):
            if not wire:
                break
            op = rnd.randrange(4)
            i = rnd.randrange(len(wire))
            if op == 0:
                wire[i] ^= 1 << rnd.randrange(8)
            elif op == 1:
                del wire[i:i + rnd.randint(1, 10)]
            elif op == 2:
                wire[i:i] = rnd.randbytes(rnd.randint(1, 10))
            else:
                wire += wire[i:i + rnd.randint(1, 30)]
        d = MessageDecoder(max_message_size=256)
        c = FrameCounter()
        pos = 0
        while pos < len(wire):
            n = rnd.randint(1, 64)
            for m in d.receive(bytes(wire[pos:pos + n])):
                assert len(m.data) <= 256
            c.feed(bytes(wire[pos:pos + n]))
            assert d.buffered <= 261
            pos += n
        d.finish()
        assert d.error in (None, ERR_FLAGS, ERR_TOO_LARGE, ERR_TRUNCATED)
