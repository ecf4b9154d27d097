"""The test service ``envoi.smoke.Greeter`` on a real grpcio server (h2c), with raw-bytes
messages through generic handlers (the proxy never parses them):

* ``SayHello`` (unary): answers ``hello <request>`` plus the ``x-envoi-test`` metadata it got,
  sets the trailer ``x-trailer: unary``;
* ``SayHelloStream`` (server streaming): the request is a count, answers that many messages;
* ``Fail``: aborts with ``NOT_FOUND``, message ``no such greeting``, trailer ``x-trailer: fail``
  (grpcio sends that as a trailers-only response).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc

SERVICE = "envoi.smoke.Greeter"


def _ident(b: bytes) -> bytes:
    return b


class Greeter:
    def __init__(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "SayHello": grpc.unary_unary_rpc_method_handler(
                self._hello, request_deserializer=_ident, response_serializer=_ident),
            "SayHelloStream": grpc.unary_stream_rpc_method_handler(
                self._stream, request_deserializer=_ident, response_serializer=_ident),
            "Fail": grpc.unary_unary_rpc_method_handler(
                self._fail, request_deserializer=_ident, response_serializer=_ident),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        md = dict(context.invocation_metadata())
        context.set_trailing_metadata((("x-trailer", "unary"),))
        extra = md.get("x-envoi-test", "")
        return b"hello " + request + (b" " + extra.encode() if extra else b"")

    def _stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request or b"1")):
            yield b"reply %d" % i

    def _fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-trailer", "fail"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")

    def start(self) -> Greeter:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0).wait(5)
