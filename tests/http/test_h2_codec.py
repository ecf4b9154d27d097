"""The HTTP/2 codec with raw frames: bytes in, events out; calls in, frames out.

Where the codec answers bad input, the answer is the one the real Envoy 1.39.3 gave to the same
frames (RST_STREAM or GOAWAY codes, which ``http2.*`` counter moves, whether the connection
survives); the probes are listed in plugins/http/README.md (HTTP/2, "Bad input").
"""

from __future__ import annotations

import pytest
from envoi_http.codec import events as ev
from envoi_http.codec import h2_events as hev
from envoi_http.codec.h2_codec import (
    HEADERS_TOO_LARGE,
    REMOTE_REFUSED,
    TOO_MANY_HEADERS,
    H2Codec,
    detect_preface,
)
from envoi_http.codec.h2_options import Http2Options
from h2_frames import PREFACE, Out, Peer, request_block
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

SMALL = Http2Options(initial_stream_window_size=65535, initial_connection_window_size=65535)
DEFAULT = Http2Options()


def server(options: Http2Options = DEFAULT, **kw: object) -> tuple[H2Codec, Peer, Out]:
    """A server codec after the client's preface and SETTINGS (and the codec's greeting)."""
    s = H2Codec("server", options, **kw)  # type: ignore[arg-type]
    p = Peer()
    assert s.receive(p.hello()) == []
    out = p.parse(s.data_to_send())
    s.transport_buffered(0)  # the greeting left the transport
    return s, p, out


def talk(codec: H2Codec, peer: Peer, *chunks: bytes) -> tuple[list[object], Out]:
    events: list[object] = []
    for c in chunks:
        events += codec.receive(c)
    return events, peer.parse(codec.data_to_send())


# ---- connection start ---------------------------------------------------------------------

def test_server_greeting_is_envoys() -> None:
    _s, _p, out = server()
    sf, wu, ack = out.frames
    assert isinstance(sf, SettingsFrame) and "ACK" not in sf.flags
    # Envoy 1.39.3 as nghttp showed it: HEADER_TABLE_SIZE, ENABLE_CONNECT_PROTOCOL,
    # MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, then the connection window to 24 MiB.
    assert list(sf.settings.items()) == [(1, 4096), (8, 0), (3, 1024), (4, 16777216)]
    assert isinstance(wu, WindowUpdateFrame) and wu.window_increment == 25100289
    assert isinstance(ack, SettingsFrame) and "ACK" in ack.flags


def test_client_greeting() -> None:
    c = H2Codec("client")
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    out = Peer(server=True).parse(data[len(PREFACE):])
    assert list(out.frames[0].settings.items()) == [(2, 0), (1, 4096), (8, 0), (3, 1024),
                                                    (4, 16777216)]


def test_detect_preface() -> None:
    assert detect_preface(PREFACE + b"x") is True
    assert detect_preface(PREFACE[:5]) is None
    assert detect_preface(PREFACE[:12]) is True  # Envoy decides on "PRI * HTTP/2"
    assert detect_preface(b"GET / HTTP/1.1\r\n") is False
    assert detect_preface(b"PRI * HTTP/1.1") is False


# ---- requests and responses ---------------------------------------------------------------

def test_get_and_response() -> None:
    s, p, _ = server()
    sid, raw = p.request(b"/a?b=1", extra=[(b"user-agent", b"t"), (b"accept", b"*/*")])
    [req], _ = talk(s, p, raw)
    assert isinstance(req, ev.RequestHeaders)
    assert (req.stream_id, req.method, req.target, req.authority, req.scheme) == \
        (sid, b"GET", b"/a?b=1", b"example.com", b"http")
    assert req.headers == [(b"user-agent", b"t"), (b"accept", b"*/*")]
    assert req.end_stream and req.http_version == b"2"
    s.send_response_head(sid, 200, [(b"content-type", b"text/plain")], False)
    s.send_data(sid, b"hello", True)
    out = p.parse(s.data_to_send())
    assert out.types() == ["Headers", "Data"]
    assert out.headers(sid) == [[(b":status", b"200"), (b"content-type", b"text/plain")]]
    assert out.data(sid) == b"hello" and "END_STREAM" in out.frames[1].flags
    assert s.open_streams == 0 and s.stats.streams_active.value == 0


def test_request_body_trailers_and_informational() -> None:
    s, p, _ = server()
    sid, raw = p.request(b"/up", method=b"POST", end_stream=False,
                         extra=[(b"expect", b"100-continue")])
    events, _ = talk(s, p, raw, p.data(sid, b"ab"), p.data(sid, b"cd"),
                     p.headers(sid, [(b"x-checksum", b"1")], True))
    assert [type(e) for e in events] == [ev.RequestHeaders, ev.Body, ev.Body, ev.Trailers]
    assert events[0].expect_continue and not events[0].end_stream  # type: ignore[attr-defined]
    assert [e.data for e in events[1:3]] == [b"ab", b"cd"]  # type: ignore[attr-defined]
    assert events[3].headers == [(b"x-checksum", b"1")]  # type: ignore[attr-defined]
    assert s.stats.trailers.value == 1
    s.send_informational(sid, 100, [])
    s.send_response_head(sid, 200, [], False)
    s.send_data(sid, b"x", False)
    s.send_trailers(sid, [(b"grpc-status", b"0")])
    out = p.parse(s.data_to_send())
    assert out.headers(sid) == [[(b":status", b"100")], [(b":status", b"200")],
                                [(b"grpc-status", b"0")]]
    assert "END_STREAM" in out.of(HeadersFrame)[-1].flags
    assert s.open_streams == 0


def test_empty_data_frame_ends_request() -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    events, _ = talk(s, p, raw, p.data(sid, b"", True))
    assert events[1] == ev.Body(sid, b"", True)


def test_cookies_joined_and_host_as_authority() -> None:
    s, p, _ = server()
    block = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"),
             (b"host", b"h.example"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    [req], _ = talk(s, p, p.headers(1, block))
    assert req.authority == b"h.example"  # type: ignore[attr-defined]
    assert req.headers == [(b"cookie", b"a=1; b=2")]  # type: ignore[attr-defined]


def test_connect_and_extended_connect() -> None:
    s, p, _ = server(Http2Options(allow_connect=True))
    [connect], _ = talk(s, p, p.headers(1, [(b":method", b"CONNECT"),
                                            (b":authority", b"db:5432")], False))
    assert (connect.method, connect.target, connect.upgrade) == (  # type: ignore[attr-defined]
        b"CONNECT", b"db:5432", b"connect")
    ws = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
          (b":path", b"/chat"), (b":authority", b"x")]
    [up], _out = talk(s, p, p.headers(3, ws, False))
    assert (up.method, up.target, up.upgrade) == (b"GET", b"/chat", b"websocket")  # type: ignore
    assert list(H2Codec("server", Http2Options(allow_connect=True)).data_to_send()[9:15])


# ---- flow control -------------------------------------------------------------------------

def test_received_data_is_acknowledged_only_when_handed_on() -> None:
    s, p, _ = server(SMALL)
    sid, raw = p.request(method=b"POST", end_stream=False)
    events, out = talk(s, p, raw, p.data(sid, b"x" * 16384), p.data(sid, b"y" * 16384))
    assert len(events) == 3 and not out.of(WindowUpdateFrame)
    s.acknowledge(sid, 16384)
    assert not p.parse(s.data_to_send()).of(WindowUpdateFrame)  # h2 batches to half a window
    s.acknowledge(sid, 16384)
    wus = p.parse(s.data_to_send()).of(WindowUpdateFrame)
    assert sorted((w.stream_id, w.window_increment) for w in wus) == [(0, 32768), (sid, 32768)]
    s.acknowledge(sid, 5)  # more than was delivered: ignored
    assert not p.parse(s.data_to_send()).frames


def test_padding_acknowledged_at_once() -> None:
    s, p, _ = server(SMALL)
    sid, raw = p.request(method=b"POST", end_stream=False)
    events, out = talk(s, p, raw, *[p.data(sid, b"ab", pad=255) for _ in range(130)])
    assert events[1] == ev.Body(sid, b"ab", False) and len(events) == 131
    assert {w.stream_id for w in out.of(WindowUpdateFrame)} == {0, sid}


def test_reset_stream_gives_connection_window_back() -> None:
    s, p, _ = server(SMALL)
    sid, raw = p.request(method=b"POST", end_stream=False)
    talk(s, p, raw, p.data(sid, b"x" * 16000), p.data(sid, b"x" * 16000),
         p.data(sid, b"x" * 8000))
    s.reset_stream(sid)
    out = p.parse(s.data_to_send())
    assert [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)] == [(sid, 0)]
    assert [(w.stream_id, w.window_increment) for w in out.of(WindowUpdateFrame)] == [(0, 40000)]
    assert s.stats.tx_reset.value == 1


def test_queue_response_head_and_body_in_one_call() -> None:
    s, p, _ = server(stream_buffer_limit=20000)
    sid, raw = p.request()
    talk(s, p, raw)
    headers = [(b"content-type", b"text/plain"), (b"date", b"Tue, 24 Nov 2026 01:29:16 GMT")]
    assert s.queue_response(sid, 200, headers, b"hello", True) is False
    data = s.data_to_send()
    out = p.parse(data)
    assert out.types() == ["Headers", "Data"] and out.data(sid) == b"hello"
    assert out.headers(sid) == [[(b":status", b"200"), *headers]]
    # date goes as a never-indexed literal (RFC 7541 6.2.3: 0001 prefix, name index 33 =
    # 0x1f 0x12) and stays out of the dynamic table; the caller's list is left as it was
    assert type(headers[1]) is tuple
    assert b"\x1f\x12" in data
    assert [n for n, _ in p.dec.header_table.dynamic_entries] == [b"content-type"]
    assert s.open_streams == 0
    # a head without a body; then a body the peer's window cannot take: blocked comes back
    s.receive(SettingsFrame(0, settings={4: 1000}).serialize())
    sid, raw = p.request()
    talk(s, p, raw)
    assert s.queue_response(sid, 204, [], None, False) is False
    assert s.send_data(sid, b"a" * 30000, False) is True and s.send_blocked(sid)


def test_send_waits_for_window_and_reports_writable() -> None:
    s, p, _ = server(stream_buffer_limit=20000)
    s.receive(SettingsFrame(0, settings={4: 1000}).serialize())
    sid, raw = p.request()
    talk(s, p, raw)
    s.send_response_head(sid, 200, [], False)
    s.send_data(sid, b"a" * 30000, False)
    assert s.send_blocked(sid) and s.pending_send_bytes(sid) == 29000
    s.send_trailers(sid, [(b"t", b"1")])
    out = p.parse(s.data_to_send())
    assert len(out.data(sid)) == 1000 and len(out.headers(sid)) == 1
    events, out = talk(s, p, p.window_update(sid, 20000))
    assert events == [hev.StreamWritable(sid)] and len(out.data(sid)) == 16384 + 3616
    assert not s.send_blocked(sid) and s.pending_send_bytes(sid) == 9000
    events, out = talk(s, p, p.window_update(sid, 10000))
    assert events == [] and len(out.data(sid)) == 9000
    assert out.headers(sid) == [[(b"t", b"1")]] and "END_STREAM" in out.frames[-1].flags
    assert s.open_streams == 0 and s.stats.pending_send_bytes.value == 0


def test_large_body_in_frames_when_the_windows_allow() -> None:
    s, p, _ = server()
    sid, raw = p.request()
    talk(s, p, raw)
    body = bytes(range(256)) * 160  # 40960 bytes: three frames of at most 16384
    s.send_response_head(sid, 200, [], False)
    s.send_data(sid, body, True)
    out = p.parse(s.data_to_send())
    frames = out.of(DataFrame)
    assert [len(f.data) for f in frames] == [16384, 16384, 8192]
    assert ["END_STREAM" in f.flags for f in frames] == [False, False, True]
    assert out.data(sid) == body and s.pending_send_bytes(sid) == 0 and s.idle


def test_connection_window_shared_by_streams() -> None:
    c = H2Codec("client")
    peer = Peer(server=True)
    c.receive(peer.hello())
    c.data_to_send()
    a = c.send_request_head(b"POST", b"/a", b"h", b"http", [], False)
    b = c.send_request_head(b"POST", b"/b", b"h", b"http", [], False)
    c.send_data(a, b"a" * 60000, True)
    c.send_data(b, b"b" * 10000, True)
    out = peer.parse(c.data_to_send())
    assert len(out.data(a)) + len(out.data(b)) == 65535
    _events, out = talk(c, peer, peer.window_update(0, 10000))
    assert len(out.data(a)) + len(out.data(b)) == 4465
    assert c.pending_send_bytes(b) == 0 or c.pending_send_bytes(a) == 0


# ---- resets -------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "reason"), [(8, "remote_reset"), (7, REMOTE_REFUSED),
                                              (0xA, "connect_error")])
def test_remote_reset(code: int, reason: str) -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    events, _ = talk(s, p, raw, p.rst(sid, code))
    assert events[1] == ev.StreamReset(sid, reason)
    assert s.stats.rx_reset.value == 1 and s.open_streams == 0
    s.send_response_head(sid, 200, [], True)  # too late: nothing goes out
    assert not p.parse(s.data_to_send()).frames


def test_eof_resets_open_streams() -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    talk(s, p, raw)
    assert s.receive(b"") == [ev.StreamReset(sid, "connection_termination"),
                              ev.ConnectionClosed()]
    assert s.receive(b"more") == []


# ---- Envoy's limits -----------------------------------------------------------------------

def test_max_concurrent_streams_after_settings_ack_is_a_connection_error() -> None:
    s, p, _ = server(Http2Options(max_concurrent_streams=2))
    raws = [p.request(end_stream=False)[1] for _ in range(3)]
    events, out = talk(s, p, p.settings_ack(), *raws)
    assert [type(e) for e in events] == [ev.RequestHeaders, ev.RequestHeaders, ev.ProtocolError]
    assert not out.of(GoAwayFrame) and s.dead


def test_max_concurrent_streams_refuses_extra_streams() -> None:
    s, p, out = server(Http2Options(max_concurrent_streams=2))
    assert out.frames[0].settings[3] == 2
    raws = [p.request(end_stream=False)[1] for _ in range(3)]
    events, out = talk(s, p, *raws)
    assert [e.stream_id for e in events] == [1, 3]  # type: ignore[attr-defined]
    assert [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)] == [(5, 7)]
    assert s.stats.stream_refused_errors.value == 1 and s.stats.tx_reset.value == 1
    s.send_response_head(1, 200, [], True)
    p.parse(s.data_to_send())
    events, _ = talk(s, p, p.data(1, b"", True), p.request()[1])
    assert [type(e) for e in events] == [ev.Body, ev.RequestHeaders]  # room again


def test_too_many_headers_reset_with_internal_error() -> None:
    s, p, _ = server()
    extra = [(b"x-h%d" % i, b"v") for i in range(97)]  # 4 pseudo + 97 = 101 > 100
    events, out = talk(s, p, p.headers(1, request_block(extra=extra)))
    assert events == [ev.StreamReset(1, TOO_MANY_HEADERS)]
    assert [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)] == [(1, 2)]
    assert s.stats.header_overflow.value == 1 and s.stats.tx_reset.value == 1
    [ok], _ = talk(s, p, p.headers(3, request_block(extra=extra[:96])))
    assert isinstance(ok, ev.RequestHeaders)  # the connection goes on


def test_header_list_too_large_in_continuations() -> None:
    s, p, _ = server()
    extra = [(b"x-big%d" % i, b"a" * 8000) for i in range(9)]  # 72 KB > 60 KiB
    events, out = talk(s, p, p.headers(1, request_block(extra=extra), split=16000))
    assert events == [ev.StreamReset(1, HEADERS_TOO_LARGE)]
    assert [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)] == [(1, 2)]
    assert s.stats.header_list_size_too_large.value == 1


def test_hpack_bomb_ends_connection() -> None:
    s, p, _ = server(max_headers_kb=1)
    extra = [(b"x-big%d" % i, b"a" * 4000) for i in range(80)]  # over the 256 KiB hard cap
    events, out = talk(s, p, p.headers(1, request_block(extra=extra), split=16000))
    assert [type(e) for e in events] == [ev.ProtocolError]
    [g] = out.of(GoAwayFrame)
    assert g.error_code == 0xB  # ENHANCE_YOUR_CALM


@pytest.mark.parametrize("block", [
    request_block(extra=[(b"X-Upper", b"v")]),
    request_block(extra=[(b"connection", b"keep-alive")]),
    request_block(extra=[(b"te", b"gzip")]),
    request_block(extra=[(b"x-bad", b"a\nb")]),
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x")],
    [(b":method", b"GET"), (b"x-a", b"1"), (b":path", b"/"), (b":scheme", b"http")],
    [*request_block(), (b":foo", b"1")],
    [*request_block(), (b":path", b"/again")],
    [(b":method", b"GET"), (b":protocol", b"websocket"), (b":scheme", b"http"),
     (b":path", b"/")],
], ids=["uppercase", "connection", "te-gzip", "newline", "no-path", "pseudo-late", "unknown",
        "dup-path", "protocol-off"])
def test_messaging_error_ends_connection_without_goaway(block: list[tuple[bytes, bytes]]) -> None:
    s, p, _ = server()
    events, out = talk(s, p, p.headers(1, block))
    [err] = events
    assert isinstance(err, ev.ProtocolError) and err.details.startswith("http2.")
    assert s.stats.rx_messaging_error.value == 1
    assert not out.of(GoAwayFrame) and s.dead  # Envoy 1.39.3 closes without a GOAWAY


def test_messaging_error_as_stream_error() -> None:
    s, p, _ = server(Http2Options(stream_error_on_invalid_http_message=True))
    events, out = talk(s, p, p.headers(1, request_block(extra=[(b"X-Upper", b"v")])),
                       p.headers(3, request_block()))
    assert events[0] == ev.StreamReset(1, "protocol_error")
    assert isinstance(events[1], ev.RequestHeaders)
    assert [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)] == [(1, 1)]


# ---- floods (Envoy's ProtocolConstraints) -------------------------------------------------

def test_priority_flood() -> None:
    s, p, _ = server()
    events, out = talk(s, p, b"".join(p.priority(1) for _ in range(101)))
    assert events == [hev.Flood("http2.inbound_priority_frames_flood")]
    assert s.stats.inbound_priority_frames_flood.value == 1 and not out.of(GoAwayFrame)
    s2, p2, _ = server()
    assert talk(s2, p2, b"".join(p2.priority(1) for _ in range(100)))[0] == []


def test_priority_allowance_grows_with_streams() -> None:
    s, p, _ = server()
    events, _ = talk(s, p, p.request()[1], b"".join(p.priority(9) for _ in range(200)))
    assert [type(e) for e in events] == [ev.RequestHeaders]
    assert talk(s, p, p.priority(9))[0] == [hev.Flood("http2.inbound_priority_frames_flood")]


def test_empty_frames_flood() -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    events, _ = talk(s, p, raw, p.data(sid, b""), p.data(sid, b"", pad=0))
    assert events[-1] == hev.Flood("http2.inbound_empty_frames_flood")
    assert s.stats.inbound_empty_frames_flood.value == 1


def test_one_empty_frame_is_fine() -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    events, _ = talk(s, p, raw, p.data(sid, b""), p.data(sid, b"x"), p.data(sid, b""),
                     p.data(sid, b"", True))
    assert [type(e) for e in events] == [ev.RequestHeaders] + [ev.Body] * 4


def test_continuation_flood() -> None:
    s, p, _ = server()
    head = p.enc.encode(request_block())
    frames = HeadersFrame(1, head, flags=["END_STREAM"]).serialize() + b"".join(
        b"\x00\x00\x00\x09\x00\x00\x00\x00\x01" for _ in range(100))
    events, _ = talk(s, p, frames)
    assert events == [hev.Flood("http2.inbound_empty_frames_flood")]


def test_window_update_flood() -> None:
    s, p, _ = server()
    assert talk(s, p, p.window_update(0, 1))[0] == []
    events, _ = talk(s, p, p.window_update(0, 1))
    assert events == [hev.Flood("http2.inbound_window_update_frames_flood")]


@pytest.mark.parametrize("frame", [Peer.ping(), SettingsFrame(0).serialize()],
                         ids=["ping", "settings"])
def test_outbound_control_flood(frame: bytes) -> None:
    s, p, _ = server()
    assert talk(s, p, frame * 1000)[0] == []  # 1000 ACKs written: at the limit
    s.transport_buffered(0)  # ... and sent
    s.receive(frame * 1001)
    out = p.parse(s.data_to_send())
    assert len(out.of(PingFrame) + out.of(SettingsFrame)) == 1001
    assert s.failed == hev.Flood("http2.outbound_control_frames_flood")
    assert s.stats.outbound_control_flood.value == 1 and s.dead


def test_outbound_frames_released_as_transport_drains() -> None:
    s, _p, _ = server()
    for _ in range(3):
        s.receive(Peer.ping() * 600)
        n = len(s.data_to_send())
        s.transport_buffered(n // 2)  # half of the last write still queued
    assert s.failed is not None  # 600 + 600 + 300 > 1000 still queued
    s2, _p2, _ = server()
    for _ in range(3):
        s2.receive(Peer.ping() * 600)
        s2.data_to_send()
        s2.transport_buffered(0)
    assert s2.failed is None


def test_outbound_data_flood_for_a_peer_that_does_not_read() -> None:
    s, p, _ = server(Http2Options(max_outbound_frames=50))
    for _ in range(30):
        sid, raw = p.request()
        s.receive(raw)
        s.send_response_head(sid, 200, [], False)
        s.send_data(sid, b"x", True)
    s.data_to_send()
    s.transport_buffered(10**6)
    assert s.failed == hev.Flood("http2.outbound_frames_flood")
    assert s.stats.outbound_flood.value == 1


# ---- framing errors: h2 answers with GOAWAY -----------------------------------------------

@pytest.mark.parametrize(("raw", "code"), [
    (b"\x00\x00\x03\x04\x00\x00\x00\x00\x00abc", 6),  # SETTINGS of 3 bytes: FRAME_SIZE_ERROR
    (DataFrame(3, b"x").serialize(), 1),  # DATA on an idle stream: PROTOCOL_ERROR
    (b"\x00\x00\x00\x09\x04\x00\x00\x00\x01", 1),  # CONTINUATION with no HEADERS
    (b"\xff" * 50, 6),  # garbage: a frame longer than SETTINGS_MAX_FRAME_SIZE
    (HeadersFrame(2, b"", flags=["END_HEADERS"]).serialize(), 1),  # even stream id
    (WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(), 3),  # window overflow
], ids=["settings-size", "data-idle", "naked-continuation", "garbage", "even-stream",
        "window-overflow"])
def test_framing_errors(raw: bytes, code: int) -> None:
    s, p, _ = server()
    events, out = talk(s, p, raw)
    assert [type(e) for e in events] == [ev.ProtocolError]
    [g] = out.of(GoAwayFrame)
    assert g.error_code == code and s.dead


def test_bad_preface() -> None:
    s = H2Codec("server")
    [err] = s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(err, ev.ProtocolError)


# ---- GOAWAY -------------------------------------------------------------------------------

def test_client_goaway_is_ignored_by_the_server() -> None:
    s, p, _ = server()
    sid, raw = p.request()
    events, _ = talk(s, p, raw, p.goaway(0))
    assert isinstance(events[0], ev.RequestHeaders) and events[1] == hev.GoAwayReceived(0, 0)
    s.send_response_head(sid, 200, [], True)  # Envoy still answers stream 1
    assert p.parse(s.data_to_send()).headers(sid) == [[(b":status", b"200")]]


def test_goaway_split_across_reads_and_between_frames() -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    stream = raw + p.goaway(0, 0, b"bye") + p.data(sid, b"abc", True)
    events: list[object] = []
    for i in range(len(stream)):
        events += s.receive(stream[i:i + 1])
    assert [type(e) for e in events] == [ev.RequestHeaders, hev.GoAwayReceived, ev.Body]
    assert events[1] == hev.GoAwayReceived(0, 0, b"bye")


def test_server_drain_sequence() -> None:
    s, p, _ = server()
    sid, raw = p.request(end_stream=False)
    talk(s, p, raw)
    s.shutdown_notice()
    [notice] = p.parse(s.data_to_send()).of(GoAwayFrame)
    assert (notice.last_stream_id, notice.error_code) == (2**31 - 1, 0)
    s.go_away()
    [final] = p.parse(s.data_to_send()).of(GoAwayFrame)
    assert final.last_stream_id == sid and s.stats.goaway_sent.value == 1
    events, out = talk(s, p, p.request()[1], p.data(sid, b"z", True))
    assert [type(e) for e in events] == [ev.Body]  # the new stream is refused
    assert [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)] == [(sid + 2, 7)]
    s.send_response_head(sid, 200, [], True)
    assert p.parse(s.data_to_send()).headers(sid) and s.idle


def test_client_goaway_refuses_streams_above_last() -> None:
    c = H2Codec("client")
    peer = Peer(server=True)
    events = c.receive(peer.hello({3: 100}))
    assert events == [hev.PeerSettings(100, 65535)]
    a = c.send_request_head(b"GET", b"/a", b"h", b"http", [], True)
    b = c.send_request_head(b"GET", b"/b", b"h", b"http", [], True)
    peer.parse(c.data_to_send())
    events, _ = talk(c, peer, peer.goaway(a, 0))
    assert events == [hev.GoAwayReceived(a, 0), ev.StreamReset(b, REMOTE_REFUSED)]
    assert not c.can_open_stream and not c.keep_alive
    events, _ = talk(c, peer, peer.headers(a, [(b":status", b"200")], False),
                     peer.data(a, b"ok", True))
    assert [type(e) for e in events] == [ev.ResponseHeaders, ev.Body]
    assert c.idle


# ---- client side --------------------------------------------------------------------------

def test_client_request_response_trailers() -> None:
    c = H2Codec("client")
    peer = Peer(server=True)
    c.receive(peer.hello())
    c.data_to_send()
    sid = c.send_request_head(b"POST", b"/rpc", b"svc", b"http",
                              [(b"te", b"trailers"), (b"content-type", b"application/grpc")],
                              False)
    c.send_data(sid, b"\x00\x00\x00\x00\x01x", False)
    c.send_trailers(sid, [(b"x-end", b"1")])
    out = peer.parse(c.data_to_send())
    assert out.headers(sid)[0] == [(b":method", b"POST"), (b":scheme", b"http"),
                                   (b":authority", b"svc"), (b":path", b"/rpc"),
                                   (b"te", b"trailers"), (b"content-type", b"application/grpc")]
    assert out.headers(sid)[1] == [(b"x-end", b"1")]
    events, _ = talk(c, peer, peer.headers(sid, [(b":status", b"100")], False),
                     peer.headers(sid, [(b":status", b"200"), (b"x-a", b"b")], False),
                     peer.data(sid, b"resp"), peer.headers(sid, [(b"grpc-status", b"0")]))
    assert events == [ev.Informational(sid, 100, []),
                      ev.ResponseHeaders(sid, 200, [(b"x-a", b"b")], b"", False, b"2"),
                      ev.Body(sid, b"resp", False), ev.Trailers(sid, [(b"grpc-status", b"0")])]
    assert c.idle and c.stats.trailers.value == 0  # Envoy counts trailers downstream only


def test_client_rejects_bad_response() -> None:
    c = H2Codec("client")
    peer = Peer(server=True)
    c.receive(peer.hello())
    c.data_to_send()
    sid = c.send_request_head(b"GET", b"/", b"h", b"http", [], True)
    events, _ = talk(c, peer, peer.headers(sid, [(b":status", b"20x")]))
    assert isinstance(events[0], ev.ProtocolError)
    assert c.stats.rx_messaging_error.value == 1


def test_client_connect_request() -> None:
    c = H2Codec("client")
    peer = Peer(server=True)
    sid = c.send_request_head(b"CONNECT", b"db:1", b"db:1", b"", [], False)
    out = peer.parse(c.data_to_send()[len(PREFACE):])
    assert out.headers(sid) == [[(b":method", b"CONNECT"), (b":authority", b"db:1")]]


def test_send_event_shape() -> None:
    s, p, _ = server()
    sid, raw = p.request()
    s.receive(raw)
    p.parse(s.data_to_send())
    data = s.send(ev.ResponseHeaders(sid, 204, [], end_stream=True))
    assert p.parse(data).headers(sid) == [[(b":status", b"204")]]
    with pytest.raises(TypeError):
        s.send(ev.ConnectionClosed())
