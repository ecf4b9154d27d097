"""grpc_web through HttpFilterDriver (and its codec pieces): request rewriting, base64 both ways,
trailers into the body, non-gRPC answers as gRPC errors, stats."""

from __future__ import annotations

import base64
import random

import pytest
from envoi.http.filter import FilterDataStatus, FilterHeadersStatus
from envoi.testing import HttpFilterDriver
from envoi_grpc.framing import MessageDecoder, encode
from envoi_grpc.grpc_web import GrpcWebFactory
from envoi_grpc.web_codec import Base64Error, TextDecoder, TextEncoder, trailer_frame

WEB = {":method": "POST", ":path": "/envoi.smoke.Greeter/SayHello",
       "content-type": "application/grpc-web+proto", "content-length": "12",
       "x-grpc-web": "1"}
TEXT = {**WEB, "content-type": "application/grpc-web-text",
        "accept": "application/grpc-web-text"}
W = "cluster.cluster.grpc-web.envoi.smoke.Greeter.SayHello."


def grpc_answer(d: HttpFilterDriver, msgs: list[bytes], status: str = "0",
                extra: dict[str, str] | None = None) -> None:
    d.encode_headers({"content-type": "application/grpc"}, status=200)
    for m in msgs:
        d.encode_data(encode(m))
    d.encode_trailers({"grpc-status": status, "grpc-message": "", **(extra or {})})


def test_request_rewritten_for_a_native_upstream() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(WEB)
        d.decode_data(encode(b"hello-world"[:7]), end_stream=True)
        h = d.request.headers
        assert h is not None
        assert h["content-type"] == "application/grpc" and h["te"] == "trailers"
        assert "content-length" not in h
        assert h["grpc-accept-encoding"] == "identity,deflate,gzip"
        assert d.request.body == encode(b"hello-w")
    own = {**WEB, "grpc-accept-encoding": "gzip"}
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(own, end_stream=True)
        assert d.request.headers is not None
        assert d.request.headers.get_all("grpc-accept-encoding") == ["gzip"]


def test_binary_response_trailers_become_the_last_frame() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(WEB, end_stream=True)
        grpc_answer(d, [b"a", b"bc"], extra={"x-trailer": "unary"})
        r = d.response
        assert r.headers is not None
        assert r.headers["content-type"] == "application/grpc-web+proto"
        msgs = MessageDecoder(allowed_flags=0x81).receive(r.body)
        assert [m.data for m in msgs[:2]] == [b"a", b"bc"]
        assert msgs[2].trailers and msgs[2].data == \
            b"grpc-status:0\r\ngrpc-message:\r\nx-trailer:unary\r\n"
        assert r.trailers is None or len(r.trailers) == 0
        assert d.stats.changed() == {W + "0": 1, W + "success": 1, W + "total": 1}


def test_text_both_ways() -> None:
    body = base64.b64encode(encode(b"ping")) + base64.b64encode(encode(b"again"))
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(TEXT)
        for i in range(0, len(body), 3):  # cut anywhere, padding in the middle
            d.decode_data(body[i:i + 3], end_stream=i + 3 >= len(body))
        assert d.request.body == encode(b"ping") + encode(b"again")
        grpc_answer(d, [b"x" * 1000, b"y"], status="5")
        r = d.response
        assert r.headers is not None
        assert r.headers["content-type"] == "application/grpc-web-text+proto"
        # Message by message, each padded on its own, as Envoy writes it.
        want = b"".join(base64.b64encode(f) for f in (
            encode(b"x" * 1000), encode(b"y"),
            trailer_frame([(b"grpc-status", b"5"), (b"grpc-message", b"")])))
        assert r.body == want
        assert d.stats[W + "failure"] == 1 and d.stats[W + "5"] == 1


def test_bad_base64_is_400() -> None:
    for body, details in ((b"!!!!", "grpc_base_64_decode_failed"),
                          (b"AAAAA", "grpc_base_64_decode_failed_bad_size")):
        with HttpFilterDriver(GrpcWebFactory()) as d:
            d.decode_headers(TEXT)
            st = d.decode_data(body, end_stream=True)
            assert st == FilterDataStatus.STOP_ITERATION_NO_BUFFER
            assert d.local_reply is not None and d.local_reply.status == 400
            assert d.local_reply.details == details
            # The reply went through grpc_web's encoder: a gRPC error for the web client.
            assert d.response.headers is not None
            assert d.response.headers["grpc-status"] == "13"
            assert d.response.headers["grpc-message"] == \
                "Bad gRPC-web request, invalid base64 data."


def test_non_grpc_response_becomes_a_grpc_error() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(WEB, end_stream=True)
        st = d.encode_headers({"content-type": "text/html"}, status=503)
        assert st == FilterHeadersStatus.STOP_ITERATION
        d.encode_data(b"upstream ")
        d.encode_data(b"down 100%\n", end_stream=True)
        h = d.response.headers
        assert h is not None and d.response.body == b""
        assert h["grpc-status"] == "14" and h["content-length"] == "0"
        assert h["grpc-message"] == "upstream down 100%25%0A"
        assert h["content-type"] == "application/grpc-web+proto"


def test_non_grpc_response_body_limited_to_16k_when_in_pieces() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(WEB, end_stream=True)
        d.encode_headers({"content-type": "text/plain"}, status=404)
        for _ in range(10):
            d.encode_data(b"a" * 4000)
        d.encode_data(b"b", end_stream=True)
        h = d.response.headers
        assert h is not None and h["grpc-message"] == "a" * 16384
        assert h["grpc-status"] == "12"


def test_grpc_web_response_from_upstream_passes() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(WEB, end_stream=True)
        d.encode_headers({"content-type": "application/grpc-web+proto; charset=x"}, status=200)
        d.encode_data(b"raw", end_stream=True)
        assert d.response.body == b"raw"


def test_trailers_only_response_passes_with_status_in_headers() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers(WEB, end_stream=True)
        d.encode_headers({"content-type": "application/grpc", "grpc-status": "14"},
                         status=200, end_stream=True)
        h = d.response.headers
        assert h is not None and h["grpc-status"] == "14"
        assert d.stats[W + "14"] == 1


def test_not_grpc_web_untouched() -> None:
    with HttpFilterDriver(GrpcWebFactory()) as d:
        d.decode_headers({**WEB, "content-type": "application/grpc"}, end_stream=True)
        assert d.request.headers is not None and d.request.headers["content-length"] == "12"
        grpc_answer(d, [b"a"])
        assert d.response.trailers is not None and d.response.trailers["grpc-status"] == "0"
        assert d.stats.changed() == {}


def test_text_decoder_and_encoder_properties() -> None:
    rnd = random.Random(15)
    for _ in range(300):
        frames = [encode(rnd.randbytes(rnd.randint(0, 50))) for _ in range(rnd.randint(0, 5))]
        wire = b"".join(frames)
        enc = TextEncoder()
        out = b""
        pos = 0
        while pos < len(wire):
            n = rnd.randint(1, 20)
            out += enc.feed(wire[pos:pos + n])
            pos += n
        out += enc.flush()
        assert out == b"".join(base64.b64encode(f) for f in frames)
        dec = TextDecoder()
        back = b""
        pos = 0
        while pos < len(out):
            n = rnd.randint(1, 20)
            back += dec.feed(out[pos:pos + n], pos + n >= len(out))
            pos += n
        assert back == wire
    with pytest.raises(Base64Error):
        TextDecoder().feed(b"AB=C", True)
