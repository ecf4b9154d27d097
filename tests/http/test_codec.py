"""The HTTP/1.1 codec contract, run against both back-ends: bytes in, events out, and back."""

from __future__ import annotations

import pytest
from envoi_http.codec import (
    Body,
    ConnectionClosed,
    Event,
    Http1Codec,
    Informational,
    RequestHeaders,
    ResponseHeaders,
    StreamReset,
    Trailers,
    UpgradeRequested,
    available_backends,
    make_codec,
)
from hypothesis import given, settings
from hypothesis import strategies as st

BACKENDS = available_backends()
assert BACKENDS == ["h11", "httptools"], "both back-ends must be installed for the suite"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def feed(codec: Http1Codec, *chunks: bytes) -> list[Event]:
    out: list[Event] = []
    for chunk in chunks:
        out += codec.receive(chunk)
    return out


def merged(events: list[Event]) -> list[Event]:
    """Join consecutive Body events: how a body is cut into pieces is not part of the contract."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, Body) and out and isinstance(out[-1], Body) and not out[-1].end_stream:
            out[-1] = Body(e.stream_id, out[-1].data + e.data, e.end_stream)
        else:
            out.append(e)
    return out


def respond(codec: Http1Codec, sid: int, body: bytes = b"ok") -> bytes:
    head = ResponseHeaders(sid, 200, [(b"content-length", b"%d" % len(body))])
    return codec.send(head) + codec.send(Body(sid, body, True))


GET = b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"


def test_simple_get(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(GET)
    assert req == RequestHeaders(1, b"GET", b"/p?q=1", b"example.com", b"http",
                                 [(b"host", b"example.com"), (b"user-agent", b"t")],
                                 b"1.1", True, True, False, b"")
    out = respond(s, 1)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok")
    assert s.keep_alive
    assert s.start_next_cycle() == []


def test_header_names_lowercase_values_stripped(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(b"GET / HTTP/1.1\r\nHOST: h\r\nX-Thing:  a b \t\r\n\r\n")
    assert isinstance(req, RequestHeaders)
    assert req.headers == [(b"host", b"h"), (b"x-thing", b"a b")]


POST = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"


@pytest.mark.parametrize("cut", range(1, len(POST)))
def test_post_split_at_every_byte(backend: str, cut: int) -> None:
    s = make_codec(backend, "server")
    events = merged(feed(s, POST[:cut], POST[cut:]))
    assert isinstance(events[0], RequestHeaders)
    assert events[0].method == b"POST"
    body_cut = cut - (len(POST) - 10)
    if body_cut >= 10:  # everything in the first read: one head, one final body piece
        assert events[0].end_stream is False
    assert events[1:] == [Body(1, b"0123456789", True)]


def test_post_body_streams_without_buffering(backend: str) -> None:
    s = make_codec(backend, "server")
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n"
    assert [type(e) for e in s.receive(head)] == [RequestHeaders]
    assert s.receive(b"abc") == [Body(1, b"abc", False)]
    assert s.receive(b"def") == [Body(1, b"def", True)]


CHUNKED = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n")


def test_chunked_with_extensions_trailers_dropped(backend: str) -> None:
    s = make_codec(backend, "server")
    events = merged(s.receive(CHUNKED))
    assert events[1:] == [Body(1, b"abcdefg", True)]


def test_chunked_trailers_enabled(backend: str) -> None:
    s = make_codec(backend, "server", enable_trailers=True)
    events = merged(s.receive(CHUNKED))
    assert events[1:] == [Body(1, b"abcdefg", False), Trailers(1, [(b"x-sum", b"7")])]


@pytest.mark.parametrize("cut", range(50, len(CHUNKED), 3))
def test_chunked_split(backend: str, cut: int) -> None:
    s = make_codec(backend, "server")
    events = merged(feed(s, CHUNKED[:cut], CHUNKED[cut:]))
    assert events[-1] == Body(1, b"abcdefg", True)


def test_chunked_response_serialised(backend: str) -> None:
    s = make_codec(backend, "server", enable_trailers=True)
    s.receive(GET)
    out = s.send(ResponseHeaders(1, 200, [(b"x", b"1")]))
    assert b"transfer-encoding: chunked" in out.lower()
    out += s.send(Body(1, b"hello", False)) + s.send(Trailers(1, [(b"x-t", b"2")]))
    assert out.endswith(b"5\r\nhello\r\n0\r\nx-t: 2\r\n\r\n")
    assert s.keep_alive


def test_pipelined_requests_held_back(backend: str) -> None:
    s = make_codec(backend, "server")
    events = s.receive(GET + GET.replace(b"/p?q=1", b"/two") + b"GET /thr")
    assert [e.stream_id for e in events] == [1]
    respond(s, 1)
    [second] = s.start_next_cycle()
    assert isinstance(second, RequestHeaders) and second.target == b"/two"
    assert s.receive(b"ee HTTP/1.1\r\nHost: h\r\n\r\n") == []
    respond(s, 2)
    [third] = s.start_next_cycle()
    assert isinstance(third, RequestHeaders) and third.target == b"/three"


def test_head_response_has_no_body(backend: str) -> None:
    s = make_codec(backend, "server")
    s.receive(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    out = s.send(ResponseHeaders(1, 200, [(b"content-length", b"5")]))
    out += s.send(Body(1, b"", True))
    assert out.endswith(b"content-length: 5\r\n\r\n")
    assert s.keep_alive


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(backend: str, status: int) -> None:
    s = make_codec(backend, "server")
    s.receive(GET)
    out = s.send(ResponseHeaders(1, status, [], end_stream=True))
    assert b"chunked" not in out and out.endswith(b"\r\n\r\n")


def test_expect_continue(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 2\r\n\r\n")
    assert isinstance(req, RequestHeaders) and req.expect_continue and not req.end_stream
    assert s.send(Informational(1, 100)) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert s.receive(b"hi") == [Body(1, b"hi", True)]


def test_http10_not_kept_alive(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(req, RequestHeaders)
    assert req.http_version == b"1.0" and not req.keep_alive
    out = s.send(ResponseHeaders(1, 200, [])) + s.send(Body(1, b"x", False))
    out += s.send(Body(1, b"", True))
    assert b"chunked" not in out and out.endswith(b"\r\n\r\nx")
    assert not s.keep_alive


def test_connection_close(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert isinstance(req, RequestHeaders) and not req.keep_alive
    assert b"connection: close" in respond(s, 1).lower()
    assert not s.keep_alive


def test_eof(backend: str) -> None:
    s = make_codec(backend, "server")
    assert s.receive(b"") == [ConnectionClosed(0)]
    s = make_codec(backend, "server")
    events = feed(s, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", b"")
    assert events[-2:] == [StreamReset(1, "connection_termination"), ConnectionClosed(1)]


def test_websocket_upgrade(backend: str) -> None:
    s = make_codec(backend, "server")
    events = s.receive(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\n\r\n\x81\x00")
    assert isinstance(events[0], RequestHeaders)
    assert events[0].upgrade == b"websocket" and not events[0].end_stream
    assert events[1:] == [UpgradeRequested(1, b"websocket", b"\x81\x00")]
    out = s.send(ResponseHeaders(1, 101, [(b"connection", b"upgrade"),
                                          (b"upgrade", b"websocket")]))
    assert out.startswith(b"HTTP/1.1 101 ")
    assert s.send(Body(1, b"raw", False)) == b"raw"
    assert s.receive(b"more") == [Body(1, b"more", False)]


def test_h2c_upgrade_served_as_http11(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
                      + GET)
    assert isinstance(req, RequestHeaders) and req.upgrade == b"h2c" and req.end_stream
    respond(s, 1)
    assert s.keep_alive
    [nxt] = s.start_next_cycle()
    assert isinstance(nxt, RequestHeaders) and nxt.stream_id == 2


def test_absolute_form(backend: str) -> None:
    s = make_codec(backend, "server")
    [req] = s.receive(b"GET http://up.example:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n")
    assert isinstance(req, RequestHeaders)
    assert req.target == b"http://up.example:8080/a?b"
    assert req.authority == b"up.example:8080" and req.scheme == b"http"


# ---- client role ----------------------------------------------------------------------------

def client_get(backend: str, method: bytes = b"GET") -> Http1Codec:
    c = make_codec(backend, "client")
    out = c.send(RequestHeaders(1, method, b"/", b"up", b"http", [(b"x", b"1")]))
    assert out.startswith(method + b" / HTTP/1.1\r\nhost: up\r\n")
    return c


def test_client_content_length(backend: str) -> None:
    c = client_get(backend)
    events = merged(feed(c, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", b"cd"))
    assert isinstance(events[0], ResponseHeaders) and events[0].status == 200
    assert events[1:] == [Body(1, b"abcd", True)]
    assert c.idle and c.keep_alive


def test_client_chunked(backend: str) -> None:
    c = client_get(backend)
    events = merged(c.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"2\r\nab\r\n0\r\n\r\n"))
    assert events[1:] == [Body(1, b"ab", True)]
    assert c.idle and c.keep_alive


def test_client_read_until_close(backend: str) -> None:
    c = client_get(backend)
    events = merged(feed(c, b"HTTP/1.1 200 OK\r\n\r\nabc", b"def", b""))
    assert events[1:] == [Body(1, b"abcdef", True), ConnectionClosed(1)]
    assert not c.keep_alive


def test_client_head(backend: str) -> None:
    c = client_get(backend, b"HEAD")
    [head] = c.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert isinstance(head, ResponseHeaders) and head.end_stream
    assert c.idle and c.keep_alive
    c.send(RequestHeaders(2, b"GET", b"/", b"up", b"http", []))
    events = merged(c.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"))
    assert events[1:] == [Body(2, b"z", True)]


@pytest.mark.parametrize("status", [204, 304])
def test_client_no_body_status(backend: str, status: int) -> None:
    c = client_get(backend)
    [head] = c.receive(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert isinstance(head, ResponseHeaders) and head.end_stream and c.idle


def test_client_informational(backend: str) -> None:
    c = client_get(backend)
    events = c.receive(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert events[0] == Informational(1, 100, [], b"Continue")
    assert isinstance(events[1], ResponseHeaders) and events[1].end_stream


def test_client_reset_before_response(backend: str) -> None:
    c = client_get(backend)
    assert c.receive(b"")[0] == StreamReset(1, "connection_termination")


def test_client_streams_request_body_chunked(backend: str) -> None:
    c = make_codec(backend, "client")
    out = c.send(RequestHeaders(1, b"POST", b"/", b"up", b"http", [], end_stream=False))
    out += c.send(Body(1, b"abc", False)) + c.send(Body(1, b"", True))
    assert b"transfer-encoding: chunked" in out.lower() and out.endswith(b"3\r\nabc\r\n0\r\n\r\n")


# ---- round trip -----------------------------------------------------------------------------

token = st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
value = st.text("abcdefghijklmnopqrstuvwxyz ABC/;=,.0123456789", max_size=20).map(str.strip)
headers_st = st.lists(st.tuples(token, value), max_size=8).map(
    lambda hs: [(n.encode(), v.encode()) for n, v in hs
                if n not in ("host", "content-length", "transfer-encoding", "connection",
                             "upgrade", "expect", "te", "trailer", "keep-alive")])
bodies = st.lists(st.binary(min_size=1, max_size=50), max_size=4)


@settings(max_examples=60, deadline=None)
@given(headers=headers_st, pieces=bodies, chunked=st.booleans(),
       splits=st.lists(st.integers(1, 30), max_size=6))
def test_round_trip(headers: list[tuple[bytes, bytes]], pieces: list[bytes], chunked: bool,
                    splits: list[int]) -> None:
    for backend in BACKENDS:
        client, server = make_codec(backend, "client"), make_codec(backend, "server")
        body = b"".join(pieces)
        hs = list(headers) if chunked else [*headers, (b"content-length", b"%d" % len(body))]
        wire = client.send(RequestHeaders(1, b"POST", b"/r", b"h", b"http", hs,
                                          end_stream=False))
        for i, p in enumerate(pieces):
            wire += client.send(Body(1, p, i == len(pieces) - 1))
        if not pieces:
            wire += client.send(Body(1, b"", True))
        reads, pos = [], 0
        for n in splits:
            reads.append(wire[pos:pos + n])
            pos += n
        reads.append(wire[pos:])
        events = merged(feed(server, *[r for r in reads if r]))
        req = events[0]
        assert isinstance(req, RequestHeaders)
        assert req.method == b"POST" and req.target == b"/r"
        assert [h for h in req.headers if h[0] in dict(headers)] == headers
        got = b"".join(e.data for e in events[1:] if isinstance(e, Body))
        assert got == body
        assert req.end_stream or (isinstance(events[-1], Body) and events[-1].end_stream)


@pytest.mark.parametrize(("read", "version", "keep"), [
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", b"1.1", True),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", b"1.0", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", b"1.0", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"1.1", True),
    # an interim response and a final one of another version in one read
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
     b"Content-Length: 0\r\n\r\n", b"1.0", False),
])
def test_response_version_and_reuse(backend: str, read: bytes, version: bytes,
                                    keep: bool) -> None:
    """The back-ends find the version without always asking the parser for it; whatever the
    shortcut, an HTTP/1.0 response is never taken for 1.1 (its connection is not reused)."""
    for cut in (len(read), 9):  # whole, and the status line cut after "HTTP/1.x "
        c = make_codec(backend, "client")
        c.send(RequestHeaders(0, b"GET", b"/", b"h", b"http", [], end_stream=True))
        events = feed(c, read[:cut], read[cut:]) if cut < len(read) else c.receive(read)
        [head] = [e for e in events if isinstance(e, ResponseHeaders)]
        assert head.http_version == version and head.keep_alive is keep
        assert c.keep_alive is keep


def test_request_head_over_the_limit_across_reads(backend: str) -> None:
    """A head over max_request_headers_kb is refused when its last read alone is small."""
    s = make_codec(backend, "server", max_request_headers_kb=1)
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 1100
    events = feed(s, head, b"\r\n\r\n")
    assert [type(e).__name__ for e in events] == ["ProtocolError"]
    assert events[0].error_status_hint == 431  # type: ignore[attr-defined]
