"""envoi.http.grpc: content types, paths, status mapping both ways, grpc-timeout, grpc-message
encoding and the headers of a local reply to a gRPC request (Envoy's Grpc::Common/Utility)."""

from __future__ import annotations

from envoi.http import grpc
from hypothesis import given
from hypothesis import strategies as st


def test_content_types() -> None:
    assert grpc.is_grpc_content_type(b"application/grpc")
    assert grpc.is_grpc_content_type(b"application/grpc+proto")
    assert not grpc.is_grpc_content_type(b"application/grpc-web")
    assert not grpc.is_grpc_content_type(b"application/grpcx")
    assert not grpc.is_grpc_content_type(None)
    assert grpc.is_grpc_request(b"application/grpc", b"/a/b")
    assert not grpc.is_grpc_request(b"application/grpc", b"")
    assert grpc.is_grpc_web_content_type(b"application/grpc-web-text+proto")


def test_responses() -> None:
    assert grpc.is_grpc_response(200, b"application/grpc", None, False)
    assert not grpc.is_grpc_response(503, b"application/grpc", None, False)
    assert grpc.is_grpc_response(200, None, b"14", True)  # trailers-only
    assert not grpc.is_grpc_response(200, b"application/grpc", None, True)


def test_service_and_method() -> None:
    assert grpc.service_and_method(b"/pkg.Svc/M") == (b"pkg.Svc", b"M")
    assert grpc.service_and_method(b"/pkg.Svc/M?x=/y/z") == (b"pkg.Svc", b"M")
    assert grpc.service_and_method(b"//pkg.Svc//M") == (b"pkg.Svc", b"M")
    for bad in (b"", b"/", b"//", b"/svc", b"/svc/", b"/a/b/c"):
        assert grpc.service_and_method(bad) is None


def test_status_mapping() -> None:
    assert [grpc.http_to_grpc_status(s) for s in (400, 401, 403, 404, 429, 502, 503, 504, 500,
                                                  418)] == [13, 16, 7, 12, 14, 14, 14, 14, 2, 2]
    assert [grpc.grpc_to_http_status(s) for s in range(18)] == [
        200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401, 500]
    assert grpc.parse_grpc_status(b"14") == 14
    assert grpc.parse_grpc_status(b"") is None and grpc.parse_grpc_status(b"x") is None


def test_timeouts() -> None:
    p = grpc.parse_timeout_ms
    assert p(b"2S") == 2000 and p(b"3H") == 3 * 3600_000 and p(b"1M") == 60_000
    assert p(b"250m") == 250 and p(b"0m") == 0 and p(b"99999999m") == 99_999_999
    # u and n round up to the next millisecond
    assert p(b"1500u") == 2 and p(b"1000u") == 1 and p(b"1n") == 1 and p(b"0n") == 0
    assert p(b"1000001n") == 2 and p(b"99999999H") == 99_999_999 * 3_600_000
    # Envoy's getGrpcTimeout reads the value with absl::SimpleAtoi: a sign and spaces around
    # it pass, and the 8-digit limit is on the value (leading zeros do not count).
    assert p(b"000000300m") == 300 and p(b"+5S") == 5000 and p(b"-0S") == 0
    assert p(b" 7m") == 7 and p(b"7 m") == 7
    for bad in (None, b"", b"S", b"5", b"123456789S", b"100000000m", b"1x", b"1s", b"1h",
                b"-1S", b"1.5S", b"0x10S", b"+S", b"--1S", b"1_0S", b"\xd9\xa1S"):
        assert p(bad) is None, bad
    f = grpc.format_timeout
    assert f(2000) == b"2000m" and f(1000) == b"1000m"
    assert f(100_000_000) == b"100000S"
    assert f(99_999_999 * 1000 * 61) == b"1694444H"
    assert f(6_000_000_000) == b"6000000S" and f(6_000_000_000_000) == b"1666666H"
    assert f(10**18) == b"99999999H"


@given(st.integers(min_value=0, max_value=99_999_999 * 3_600_000))
def test_format_then_parse_is_within_a_unit(ms: int) -> None:
    back = grpc.parse_timeout_ms(grpc.format_timeout(ms))
    assert back is not None and back <= ms and ms - back < 3_600_000
    assert len(grpc.format_timeout(ms)) <= 9


@given(st.binary(max_size=200))
def test_percent_encoding_round_trips(raw: bytes) -> None:
    enc = grpc.percent_encode_message(raw)
    assert all(0x20 <= c <= 0x7E for c in enc)
    assert grpc.percent_decode_message(enc) == raw


def test_local_reply_headers() -> None:
    assert grpc.local_reply_headers(503, b"no healthy upstream") == [
        (b"content-type", b"application/grpc"), (b"grpc-status", b"14"),
        (b"grpc-message", b"no healthy upstream")]
    assert grpc.local_reply_headers(404, b"not\nfound 100%\n") == [
        (b"content-type", b"application/grpc"), (b"grpc-status", b"12"),
        (b"grpc-message", b"not%0Afound 100%25%0A")]
    assert grpc.local_reply_headers(500, b"", grpc_status=4) == [
        (b"content-type", b"application/grpc"), (b"grpc-status", b"4")]
