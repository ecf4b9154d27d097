"""grpc_http1_bridge through HttpFilterDriver: HTTP/1.1 gRPC calls answered as plain responses
(status from grpc-status, headers from the trailers, content-length), protobuf upgraded to gRPC
and back, query parameters dropped, HTTP/2 untouched, buffer limits."""

from __future__ import annotations

from typing import Any

from envoi.http.filter import FilterHeadersStatus
from envoi.testing import HttpFilterDriver
from envoi_grpc.framing import encode
from envoi_grpc.http1_bridge import Http1BridgeFactory

GRPC = {":method": "POST", ":path": "/envoi.smoke.Greeter/SayHello?x=1",
        "content-type": "application/grpc"}


def answer(d: HttpFilterDriver, msgs: list[bytes], status: str, message: str = "") -> None:
    d.encode_headers({"content-type": "application/grpc"}, status=200)
    for m in msgs:
        d.encode_data(encode(m))
    d.encode_trailers({"grpc-status": status, "grpc-message": message})


def test_ok_call_becomes_a_plain_response() -> None:
    with HttpFilterDriver(Http1BridgeFactory(), {}) as d:
        d.decode_headers(GRPC)
        d.decode_data(encode(b"hi"), end_stream=True)
        assert d.request.headers is not None
        assert d.request.headers.path == b"/envoi.smoke.Greeter/SayHello?x=1"
        assert d.request.body == encode(b"hi")
        st = d.encode_headers({"content-type": "application/grpc"}, status=200)
        assert st == FilterHeadersStatus.STOP_ITERATION
        d.encode_data(encode(b"hello"))
        d.encode_trailers({"grpc-status": "0", "grpc-message": ""})
        h = d.response.headers
        assert h is not None and h.status == 200
        assert h["grpc-status"] == "0" and h["content-length"] == str(len(encode(b"hello")))
        assert d.response.body == encode(b"hello")


def test_failed_call_is_503_with_status_and_message() -> None:
    with HttpFilterDriver(Http1BridgeFactory(), {}) as d:
        d.decode_headers(GRPC, end_stream=True)
        answer(d, [], "5", "no such greeting")
        h = d.response.headers
        assert h is not None and h.status == 503
        assert (h["grpc-status"], h["grpc-message"], h["content-length"]) == \
            ("5", "no such greeting", "0")
    with HttpFilterDriver(Http1BridgeFactory(), {}) as d:
        d.decode_headers(GRPC, end_stream=True)
        answer(d, [], "bogus")
        assert d.response.headers is not None and d.response.headers.status == 503


def test_ignore_query_parameters() -> None:
    with HttpFilterDriver(Http1BridgeFactory(), {"ignore_query_parameters": True}) as d:
        d.decode_headers(GRPC, end_stream=True)
        assert d.request.headers is not None
        assert d.request.headers.path == b"/envoi.smoke.Greeter/SayHello"


def test_protobuf_upgraded_to_grpc_and_back() -> None:
    req = {":method": "POST", ":path": "/envoi.smoke.Greeter/SayHello",
           "content-type": "application/x-protobuf", "content-length": "6"}
    with HttpFilterDriver(Http1BridgeFactory(), {"upgrade_protobuf_to_grpc": True}) as d:
        d.decode_headers(req)
        d.decode_data(b"abc")
        d.decode_data(b"def", end_stream=True)
        h = d.request.headers
        assert h is not None and h["content-type"] == "application/grpc"
        assert "content-length" not in h and d.route_cache_cleared == 1
        assert d.request.body == encode(b"abcdef")
        d.encode_headers({"content-type": "application/grpc"}, status=200)
        wire = encode(b"response!")
        d.encode_data(wire[:3])  # the prefix cut across chunks
        d.encode_data(wire[3:])
        d.encode_trailers({"grpc-status": "0"})
        assert d.response.body == b"response!"
        assert d.response.headers is not None
        assert d.response.headers["content-length"] == "9"


def test_http2_and_non_grpc_untouched() -> None:
    with HttpFilterDriver(Http1BridgeFactory(), {}) as d:
        d.stream_info.protocol = "HTTP/2"
        d.decode_headers(GRPC, end_stream=True)
        assert d.encode_headers({"content-type": "application/grpc"}, status=200) \
            == FilterHeadersStatus.CONTINUE
    with HttpFilterDriver(Http1BridgeFactory(), {}) as d:
        d.decode_headers({**GRPC, "content-type": "application/json"}, end_stream=True)
        assert d.encode_headers({}, status=200) == FilterHeadersStatus.CONTINUE


def test_response_over_the_buffer_limit_is_500() -> None:
    with HttpFilterDriver(Http1BridgeFactory(), {}) as d:
        d.buffer_limit = 100
        d.decode_headers(GRPC, end_stream=True)
        d.encode_headers({"content-type": "application/grpc"}, status=200)
        d.encode_data(encode(b"x" * 200))
        assert d.local_reply is not None and d.local_reply.status == 500
        assert d.response.headers is not None and d.response.headers.status == 500
        assert d.response.body == b"Internal Server Error"


def test_request_over_the_buffer_limit_is_413() -> None:
    cfg: dict[str, Any] = {"upgrade_protobuf_to_grpc": True}
    with HttpFilterDriver(Http1BridgeFactory(), cfg) as d:
        d.buffer_limit = 10
        d.decode_headers({":method": "POST", ":path": "/a/b",
                          "content-type": "application/x-protobuf"})
        d.decode_data(b"x" * 11)
        assert d.local_reply is not None and d.local_reply.status == 413
