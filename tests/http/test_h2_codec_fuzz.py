"""The HTTP/2 codec under hypothesis and a mutation fuzzer.

Properties: how the bytes are cut into reads never changes the events nor the frames written
(frames, floods and GOAWAYs cut anywhere included); a client codec and a server codec carry any
valid header block and any body through any windows, byte for byte. Fuzzing: valid conversations
mutated (bits flipped, bytes cut, inserted, frames repeated) and fed in random reads never make
the codec raise, stop it from answering, or grow its memory with the input.
"""

from __future__ import annotations

import random

from envoi_http.codec import events as ev
from envoi_http.codec import h2_events as hev
from envoi_http.codec.h2_codec import H2Codec
from envoi_http.codec.h2_options import Http2Options
from h2_frames import Peer, request_block
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def conversation(seed: int) -> bytes:
    """A client's side of a busy connection: requests with and without bodies, trailers,
    padding, resets, PINGs, PRIORITY, WINDOW_UPDATEs, SETTINGS, a GOAWAY, CONTINUATIONs."""
    rnd = random.Random(seed)
    p = Peer()
    out = [p.hello({4: 70000})]
    for i in range(rnd.randint(3, 12)):
        sid = 1 + 2 * i
        kind = rnd.randrange(6)
        extra = [(b"x-n", b"%d" % i), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
        if kind == 0:
            out.append(p.headers(sid, request_block(b"/%d" % i, extra=extra)))
        elif kind == 1:
            out.append(p.headers(sid, request_block(b"/up", b"POST", extra=extra), False))
            for _ in range(rnd.randint(1, 4)):
                out.append(p.data(sid, rnd.randbytes(rnd.randint(1, 3000)),
                                  pad=rnd.choice([None, 0, 7])))
            out.append(p.headers(sid, [(b"x-trailer", b"t")], True))
        elif kind == 2:
            out.append(p.headers(sid, request_block(extra=extra), False))
            out.append(p.rst(sid, 8))
        elif kind == 3:
            big = [(b"x-big%d" % j, b"v" * 900) for j in range(20)]
            out.append(p.headers(sid, request_block(extra=big), True, split=1000))
        elif kind == 4:
            out.append(p.headers(sid, request_block(), False))
            out.append(p.data(sid, b"", True))
        else:
            out.append(p.headers(sid, request_block(), True, pad=5))
        filler = rnd.randrange(5)
        if filler == 0:
            out.append(p.ping())
        elif filler == 1:
            out.append(p.priority(sid))
        elif filler == 2:
            out.append(p.window_update(0, 100))
        elif filler == 3:
            out.append(Peer.goaway(0, 0, b"dbg") if rnd.random() < 0.3 else p.settings_ack())
    return b"".join(out)


def run(data: bytes, cuts: list[int], options: Http2Options | None = None) -> tuple[
        list[object], bytes, H2Codec]:
    codec = H2Codec("server", options or Http2Options())
    events: list[object] = []
    written = [codec.data_to_send()]
    pos = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        if cut <= pos:
            continue
        events += codec.receive(data[pos:cut])
        written.append(codec.data_to_send())
        codec.transport_buffered(0)
        # hand every body on, as a proxy would
        for e in events[-8:]:
            if isinstance(e, ev.Body) and e.data:
                codec.acknowledge(e.stream_id, len(e.data))
        pos = cut
    return events, b"".join(written), codec


def frames_of(data: bytes) -> list[tuple[str, int, bytes]]:
    out = Peer(server=True).parse(data)
    return [(type(f).__name__, f.stream_id, f.serialize_body()) for f in out.frames]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 1 << 20), max_size=30))
def test_read_boundaries_do_not_matter(seed: int, cuts: list[int]) -> None:
    data = conversation(seed)
    whole_events, whole_out, whole = run(data, [])
    cut_events, cut_out, cut = run(data, cuts)
    assert cut_events == whole_events
    assert frames_of(cut_out) == frames_of(whole_out)
    assert cut.stats.streams_active.value == whole.stats.streams_active.value


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 250), kind=st.sampled_from(["priority", "empty", "window_update"]),
       cuts=st.lists(st.integers(0, 1 << 16), max_size=20))
def test_flood_found_wherever_reads_end(n: int, kind: str, cuts: list[int]) -> None:
    p = Peer()
    head = p.hello() + p.headers(1, request_block(), False)
    frame = {"priority": p.priority(3), "empty": p.data(1, b""),
             "window_update": p.window_update(0, 1)}[kind]
    data = head + frame * n
    whole, _, _ = run(data, [])
    split, _, _ = run(data, cuts)
    assert whole == split
    floods = [e for e in whole if isinstance(e, hev.Flood)]
    limit = {"priority": 200, "empty": 1, "window_update": 3}[kind]
    assert bool(floods) == (n > limit)


token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20).map(str.encode)
value = st.binary(max_size=60).map(lambda b: bytes(c for c in b if c not in b"\x00\r\n"))
header_lists = st.lists(st.tuples(token, value), max_size=12).map(
    lambda hs: [(k, v) for k, v in hs if k not in (
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
        b"te", b"host", b"cookie", b"expect")])


def pump(c: H2Codec, s: H2Codec) -> tuple[list[object], list[object]]:
    to_s: list[object] = []
    to_c: list[object] = []
    for _ in range(100):
        a = c.data_to_send()
        if a:
            to_s += s.receive(a)
        b = s.data_to_send()
        if b:
            to_c += c.receive(b)
        if not a and not b:
            break
    return to_s, to_c


@settings(max_examples=40, deadline=None)
@given(headers=header_lists, body=st.binary(max_size=300_000),
       chunk=st.integers(1, 70_000), window=st.integers(65535, 200_000),
       trailers=st.booleans())
def test_client_server_round_trip(headers: list[tuple[bytes, bytes]], body: bytes, chunk: int,
                                  window: int, trailers: bool) -> None:
    opts = Http2Options(initial_stream_window_size=window, initial_connection_window_size=window)
    c = H2Codec("client", opts, stream_buffer_limit=100_000)
    s = H2Codec("server", opts)
    pump(c, s)
    sid = c.send_request_head(b"POST", b"/p", b"a", b"https", headers, not body and not trailers)
    for i in range(0, len(body), chunk):
        c.send_data(sid, body[i:i + chunk], i + chunk >= len(body) and not trailers)
    if trailers:
        c.send_trailers(sid, [(b"x-sum", b"%d" % len(body))])
    got = b""
    events: list[object] = []
    for _ in range(200):
        new, _ = pump(c, s)
        events += new
        for e in new:
            if isinstance(e, ev.Body):
                got += e.data
                s.acknowledge(e.stream_id, len(e.data))  # handed on: the window reopens
        if s.idle or (events and s.open_streams == 0):
            break
    [req] = [e for e in events if isinstance(e, ev.RequestHeaders)]
    assert req.headers == headers and req.target == b"/p" and req.scheme == b"https"
    assert got == body
    if trailers:
        assert events[-1] == ev.Trailers(sid, [(b"x-sum", b"%d" % len(body))])
    s.send_response_head(sid, 200, headers, False)
    s.send_data(sid, body, True)
    back = b""
    for _ in range(200):
        _, new = pump(c, s)
        for e in new:
            if isinstance(e, ev.Body):
                back += e.data
                c.acknowledge(e.stream_id, len(e.data))
        if c.idle:
            break
    assert back == body and c.idle and s.idle
    assert c.stats.pending_send_bytes.value == 0 and s.stats.streams_active.value == 0


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del b[i:i + rnd.randint(1, 40)]
        elif op == 2:
            b[i:i] = rnd.randbytes(rnd.randint(1, 40))
        elif op == 3 and b:
            j = rnd.randrange(len(b))
            b[i:i] = b[j:j + rnd.randint(9, 200)]  # repeat a piece (often a whole frame)
        elif op == 4:
            b = b[:i]
        elif b:
            b[min(i, len(b) - 1)] = rnd.choice([0, 0xFF, 0x7F, 0x80])
    return bytes(b)


def test_mutation_fuzzer() -> None:
    rnd = random.Random(20261203)
    for round_ in range(400):
        data = mutate(rnd, conversation(round_))
        cuts = [rnd.randrange(len(data) + 1) for _ in range(rnd.randint(0, 12))]
        for role in ("server", "client"):
            codec = H2Codec(role)  # type: ignore[arg-type]
            out = len(codec.data_to_send())
            pos = 0
            for cut in [*sorted(cuts), len(data)]:
                events = codec.receive(data[pos:cut]) if cut > pos else []
                pos = max(pos, cut)
                out += len(codec.data_to_send())
                codec.transport_buffered(0)
                for e in events:
                    if isinstance(e, ev.RequestHeaders):
                        codec.send_response_head(e.stream_id, 200, [], False)
                        codec.send_data(e.stream_id, b"r" * 100, True)
                    elif isinstance(e, ev.Body) and e.data:
                        codec.acknowledge(e.stream_id, len(e.data))
            codec.receive(b"")
            assert codec.dead
            assert codec.stats.streams_active.value == 0 == codec.open_streams
            assert codec.stats.pending_send_bytes.value == 0
            assert out < 64 * 1024 + 20 * len(data)  # answers stay in proportion to the input


def test_random_bytes_after_preface() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        codec = H2Codec("server")
        junk = Peer().hello() + rnd.randbytes(rnd.randint(1, 400))
        codec.receive(junk)
        codec.data_to_send()
        codec.receive(b"")
        assert codec.dead and codec.open_streams == 0
