"""Malformed and smuggling inputs: both back-ends refuse them with Envoy's status hints."""

from __future__ import annotations

import pytest
from envoi_http.codec import (
    Body,
    Http1Codec,
    ProtocolError,
    RequestHeaders,
    ResponseHeaders,
    available_backends,
    make_codec,
)
from envoi_http.codec import events as ev


@pytest.fixture(params=available_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def error_of(codec: Http1Codec, data: bytes) -> ProtocolError:
    events = codec.receive(data)
    assert events, "expected a ProtocolError"
    err = events[-1]
    assert isinstance(err, ProtocolError), events
    return err


H = b"POST / HTTP/1.1\r\nHost: h\r\n"
CASES = [
    ("cl_and_chunked", H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, ev.CL_AND_CHUNKED),
    ("conflicting_cl", H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     400, ev.INVALID_CONTENT_LENGTH),
    ("negative_cl", H + b"Content-Length: -1\r\n\r\n", 400, ev.INVALID_CONTENT_LENGTH),
    ("te_gzip", H + b"Transfer-Encoding: gzip\r\n\r\n", 501, ev.INVALID_TRANSFER_ENCODING),
    ("te_gzip_chunked", H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     501, ev.INVALID_TRANSFER_ENCODING),
    ("bad_chunk_size", H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     400, ev.INVALID_CHUNK_SIZE),
    ("space_in_name", b"GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n", 400, ev.INVALID_CHARACTERS),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, ev.INVALID_CHARACTERS),
    ("ctl_in_value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400, ev.INVALID_CHARACTERS),
    ("nul_in_value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400, ev.INVALID_CHARACTERS),
    ("missing_host", b"GET / HTTP/1.1\r\n\r\n", 400, ev.MISSING_HOST),
    ("upgrade_with_body", b"POST / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n"
     b"Upgrade: websocket\r\nContent-Length: 2\r\n\r\nab", 400, ev.UPGRADE_WITH_BODY),
]


@pytest.mark.parametrize(("name", "data", "hint", "details"), CASES, ids=[c[0] for c in CASES])
def test_refused(backend: str, name: str, data: bytes, hint: int, details: str) -> None:
    err = error_of(make_codec(backend, "server"), data)
    assert (err.error_status_hint, err.details) == (hint, details), err
    assert err.stream_id == 1


@pytest.mark.parametrize(("data", "status"), [
    (b"\x16\x03\x01\x00\xa5hello\r\n\r\n", 400), (b"GET\r\n\r\n", 400),
    (b"GET / HTTP/1\r\nHost: h\r\n\r\n", 400), (b"GET / HTTP/x.y\r\nHost: h\r\n\r\n", 400),
    # Envoy: a request line without a version, or another digit.digit one, is 426
    (b"GET /\r\n\r\n", 426), (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 426),
    (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 426), (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 426)])
def test_garbage_request_line(backend: str, data: bytes, status: int) -> None:
    s = make_codec(backend, "server")
    assert error_of(s, data).error_status_hint == status
    assert not s.keep_alive
    # a local reply can still be serialised, and it closes the connection
    out = s.send(ResponseHeaders(1, status, [], end_stream=True))
    assert out.startswith(b"HTTP/1.1 %d " % status) and b"connection: close" in out
    assert s.receive(b"GET / HTTP/1.1\r\n\r\n") == []


def test_too_many_headers(backend: str) -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(100))
    s = make_codec(backend, "server")
    err = error_of(s, b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")
    assert (err.error_status_hint, err.details) == (431, ev.TOO_MANY_HEADERS)
    s = make_codec(backend, "server", max_headers_count=200)
    assert isinstance(s.receive(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")[0],
                      RequestHeaders)


def test_headers_too_large(backend: str) -> None:
    s = make_codec(backend, "server", max_request_headers_kb=1)
    err = error_of(s, b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 1100 + b"\r\n\r\n")
    assert (err.error_status_hint, err.details) == (431, ev.HEADERS_TOO_LARGE)
    s = make_codec(backend, "server", max_request_headers_kb=2)
    assert isinstance(s.receive(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 1100 + b"\r\n\r\n")[0],
                      RequestHeaders)


def test_unterminated_header_is_bounded(backend: str) -> None:
    s = make_codec(backend, "server", max_request_headers_kb=1)
    events = s.receive(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")
    for _ in range(40):
        events += s.receive(b"a" * 65536)
        if events:
            break
    assert isinstance(events[-1], ProtocolError) and events[-1].error_status_hint == 431


def test_bad_pipelined_request_reported_in_turn(backend: str) -> None:
    s = make_codec(backend, "server")
    [first] = s.receive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nX Y: z\r\n\r\n")
    assert isinstance(first, RequestHeaders)
    s.send(ResponseHeaders(1, 200, [(b"content-length", b"0")], end_stream=True))
    [err] = s.start_next_cycle()
    assert isinstance(err, ProtocolError) and err.stream_id == 2


def test_client_bad_response_is_503(backend: str) -> None:
    c = make_codec(backend, "client")
    c.send(RequestHeaders(1, b"GET", b"/", b"h", b"http", []))
    err = error_of(c, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    assert err.error_status_hint == 503


# ---- Envoy's answers that one parser alone would not give (tests/http/test_h1_strict_oracle.py
# checks them against Envoy 1.39.3): both back-ends give them ----------------------------------

SAME_AS_ENVOY = [
    # (name, bytes, accepted: the request is taken; else a 400 ProtocolError)
    ("duplicate_identical_cl", H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\na", False),
    ("cl_list", H + b"Content-Length: 1, 1\r\n\r\na", False),
    ("custom_method", b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ("lower_case_method", b"get / HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ("query_method", b"QUERY / HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ("m_search_method", b"M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ("purge_method", b"PURGE / HTTP/1.1\r\nHost: h\r\n\r\n", True),
    ("leading_crlf", b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
    ("lf_chunk_lines", H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", False),
]


@pytest.mark.parametrize(("name", "data", "accepted"), SAME_AS_ENVOY,
                         ids=[c[0] for c in SAME_AS_ENVOY])
def test_as_envoy(backend: str, name: str, data: bytes, accepted: bool) -> None:
    events = make_codec(backend, "server").receive(data)
    if accepted:
        assert isinstance(events[0], RequestHeaders), events
        assert not any(isinstance(e, ProtocolError) for e in events), events
    else:
        assert isinstance(events[-1], ProtocolError), events
        assert events[-1].error_status_hint == 400


# Bytes that can never become a request are refused as they arrive, before any blank line (a
# parser that waited for one would let a client hold the connection and fill its buffer).
NEVER = [
    ("random", bytes(range(1, 256)).replace(b"\n", b"")),
    ("binary_first_byte", b"\x16\x03\x01\x00"),
    ("bad_method_prefix", b"GEX"),
    ("lower_case_start", b"ge"),
    ("space_in_target", b"GET /a\x01b"),
    ("bad_version", b"GET / HTTQ"),
    ("bad_version_digits", b"GET / HTTP/x"),
    ("bad_header_name", b"GET / HTTP/1.1\r\nHost: h\r\nX Y"),
    ("ctl_in_value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01"),
    ("no_colon", b"GET / HTTP/1.1\r\nHost: h\r\nXYZ\r\n"),
]


@pytest.mark.parametrize(("name", "data"), NEVER, ids=[c[0] for c in NEVER])
def test_refused_as_the_bytes_arrive(backend: str, name: str, data: bytes) -> None:
    events = make_codec(backend, "server").receive(data)
    assert events and isinstance(events[-1], ProtocolError), events
    assert events[-1].error_status_hint == 400


@pytest.mark.parametrize("data", [b"G", b"GET", b"GET ", b"GET /path?q=1", b"GET / HTTP/",
                                  b"GET / HTTP/1.", b"GET / HTTP/1.1\r", b"GET / HTTP/1.1\r\n",
                                  b"GET / HTTP/1.1\r\nHo", b"GET / HTTP/1.1\r\nHost: h\r\nX:",
                                  b"GET / HTTP/1.1\r\nHost: h\r\nX: a \t b"])
def test_a_valid_start_waits(backend: str, data: bytes) -> None:
    s = make_codec(backend, "server")
    events: list[object] = []
    for i in range(len(data)):  # byte by byte: every prefix is a valid start
        events += s.receive(data[i:i + 1])
    assert events == []


# ---- where the back-ends genuinely differ (listed in envoi_http.codec's docstring) ----------

DIFFERENCES = [
    ("bare_lf", b"GET / HTTP/1.1\nHost: h\n\n"),
    ("obs_fold", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"),
    ("lf_after_chunk_data", H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"),
]
# True: the back-end takes the whole request (Envoy 1.39.3 takes all three)
ACCEPTS = {
    "h11": {"bare_lf": True, "obs_fold": True, "lf_after_chunk_data": False},
    "httptools": {"bare_lf": False, "obs_fold": False, "lf_after_chunk_data": True},
}


@pytest.mark.parametrize(("name", "data"), DIFFERENCES, ids=[c[0] for c in DIFFERENCES])
def test_documented_differences(backend: str, name: str, data: bytes) -> None:
    events = make_codec(backend, "server").receive(data)
    accepted = not any(isinstance(e, ProtocolError) for e in events)
    assert accepted is ACCEPTS[backend][name], events
    if not accepted:
        assert events[-1].error_status_hint == 400  # type: ignore[union-attr]


@pytest.mark.parametrize("split", [False, True])
def test_chunk_size_overflow(backend: str, split: bool) -> None:
    s = make_codec(backend, "server")
    head = H + b"Transfer-Encoding: chunked\r\n\r\n"
    line = b"f" * 19 + b"\r\n"
    events = s.receive(head + line) if not split else s.receive(head) + s.receive(line)
    assert isinstance(events[-1], ProtocolError) and events[-1].error_status_hint == 400
    # sixteen digits are a size llhttp takes; so do both back-ends
    s = make_codec(backend, "server")
    events = s.receive(head + b"0" * 15 + b"5\r\nhello\r\n0\r\n\r\n")
    assert not any(isinstance(e, ProtocolError) for e in events), events
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"hello"
