"""The end-to-end test service ``envoi.e2e.Echo`` (``protos/envoi_e2e.proto``): compiled with
grpcio-tools when first used, served by a real grpcio server (h2c, or TLS with a certificate),
recording what each call carried and how it ended, so tests can see cancellations arrive.

* ``Unary``: answers the request's payload (or ``reply_size`` bytes), after ``sleep_ms`` (spent
  before the response headers when the request has ``x-sleep-before-headers``); sends
  initial metadata ``x-echo`` (the request's ``x-echo``) and trailers ``x-trailer: unary`` and
  ``x-bin-bin`` (binary); ``code`` ends the call with that status (trailers-only, as grpcio
  sends an abort before any message). With ``x-fail-key: K`` and ``x-fail-times: N``, the
  first N calls of key K fail (trailers-only) with ``x-fail-code`` (default 14, UNAVAILABLE).
* ``ServerStream``: ``count`` replies of ``reply_size`` bytes, ``sleep_ms`` apart, then
  ``code`` (after the messages: a status in real trailers).
* ``ClientStream``: counts the messages and bytes it gets.
* ``Bidi``: one reply per request, as each arrives (ping-pong).
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PROTO_DIR = Path(__file__).resolve().parent / "protos"
SERVICE = "envoi.e2e.Echo"
_compiled: dict[str, Any] = {}
_lock = threading.Lock()


def compile_protos(out: Path) -> tuple[ModuleType, ModuleType]:
    """``envoi_e2e_pb2`` and ``envoi_e2e_pb2_grpc``, generated into ``out`` by grpcio-tools
    (once per process)."""
    with _lock:
        if not _compiled:
            from grpc_tools import protoc

            args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
                    f"--grpc_python_out={out}", str(PROTO_DIR / "envoi_e2e.proto")]
            assert protoc.main(args) == 0, "grpcio-tools could not compile envoi_e2e.proto"
            sys.path.insert(0, str(out))
            _compiled["pb2"] = importlib.import_module("envoi_e2e_pb2")
            _compiled["pb2_grpc"] = importlib.import_module("envoi_e2e_pb2_grpc")
        return _compiled["pb2"], _compiled["pb2_grpc"]


class EchoServer:
    def __init__(self, pb2: ModuleType, pb2_grpc: ModuleType, *,
                 tls: tuple[Path, Path] | None = None, workers: int = 64) -> None:
        self.pb2 = pb2
        self.events: list[tuple[str, str]] = []  # (method, "ok" | "cancelled" | "aborted")
        self.metadata: list[dict[str, str | bytes]] = []
        self.failures: dict[str, int] = {}  # x-fail-key -> calls failed so far
        # the deadline each call saw (grpc-timeout as it reached the server), None: no deadline
        self.time_remaining: list[float | None] = []
        self.cond = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                  options=[("grpc.max_receive_message_length", 64 << 20),
                                           ("grpc.max_send_message_length", 64 << 20),
                                           ("grpc.max_concurrent_streams", 2000)])
        outer = self

        class Servicer(pb2_grpc.EchoServicer):  # type: ignore[name-defined,misc]
            def Unary(self, request: Any, context: grpc.ServicerContext) -> Any:
                return outer._unary(request, context)

            def ServerStream(self, request: Any, context: grpc.ServicerContext) -> Any:
                return outer._server_stream(request, context)

            def ClientStream(self, requests: Iterator[Any], context: grpc.ServicerContext
                             ) -> Any:
                return outer._client_stream(requests, context)

            def Bidi(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return outer._bidi(requests, context)

        pb2_grpc.add_EchoServicer_to_server(Servicer(), self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials([(tls[1].read_bytes(), tls[0].read_bytes())])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)

    # -- recording -----------------------------------------------------------------------------
    def _record(self, method: str, how: str) -> None:
        with self.cond:
            self.events.append((method, how))
            self.cond.notify_all()

    def _begin(self, method: str, context: grpc.ServicerContext) -> None:
        with self.cond:
            self.metadata.append(dict(context.invocation_metadata()))
            self.time_remaining.append(context.time_remaining())

        context.add_callback(lambda: self._record(method, "terminated"))

    def count(self, event: tuple[str, str]) -> int:
        with self.cond:
            return self.events.count(event)

    def wait_more(self, event: tuple[str, str], before: int, timeout: float = 15.0) -> bool:
        """Wait until ``event`` has been recorded more than ``before`` times."""
        with self.cond:
            return self.cond.wait_for(lambda: self.events.count(event) > before, timeout)

    def _sleep(self, ms: int, context: grpc.ServicerContext) -> bool:
        """Sleep ``ms``; False as soon as the call is no longer active (cancelled)."""
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end:
            if not context.is_active():
                return False
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))
        return context.is_active()

    def _payload(self, request: Any) -> bytes:
        return bytes(request.reply_size) if request.reply_size else bytes(request.payload)

    def _end(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        if request.code:
            self._record(method, "aborted")
            context.abort(status_code(request.code), request.message)

    # -- handlers ------------------------------------------------------------------------------
    def _unary(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._begin("Unary", context)
        md = dict(context.invocation_metadata())
        context.set_trailing_metadata((("x-trailer", "unary"),
                                       ("x-bin-bin", b"\x00\x01\xfe\xff")))
        key = str(md.get("x-fail-key", ""))
        if key:
            with self.cond:
                failed = self.failures.get(key, 0)
                fail = failed < int(str(md.get("x-fail-times", "0")))
                if fail:
                    self.failures[key] = failed + 1
            if fail:  # trailers-only, as any abort before the headers
                context.abort(status_code(int(str(md.get("x-fail-code", "14")))),
                              f"failure {failed + 1}")
        early = bool(md.get("x-sleep-before-headers"))
        if early and request.sleep_ms and not self._sleep(request.sleep_ms, context):
            self._record("Unary", "cancelled")
            return self.pb2.EchoReply()
        self._end("Unary", request, context)  # before any headers: a trailers-only answer
        context.send_initial_metadata((("x-echo", str(md.get("x-echo", ""))),))
        if not early and request.sleep_ms and not self._sleep(request.sleep_ms, context):
            self._record("Unary", "cancelled")
            return self.pb2.EchoReply()
        self._record("Unary", "ok")
        return self.pb2.EchoReply(payload=self._payload(request), received=len(request.payload))

    def _server_stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._begin("ServerStream", context)
        context.set_trailing_metadata((("x-trailer", "stream"),))
        for i in range(request.count):
            if i and request.sleep_ms and not self._sleep(request.sleep_ms, context):
                self._record("ServerStream", "cancelled")
                return
            yield self.pb2.EchoReply(payload=self._payload(request), index=i)
        self._end("ServerStream", request, context)
        self._record("ServerStream", "ok")

    def _client_stream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._begin("ClientStream", context)
        n = size = 0
        for r in requests:
            n += 1
            size += len(r.payload)
        self._record("ClientStream", "ok")
        return self.pb2.EchoReply(index=n, received=size)

    def _bidi(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        self._begin("Bidi", context)
        for i, r in enumerate(requests):
            yield self.pb2.EchoReply(payload=self._payload(r), index=i)
        self._record("Bidi", "ok")

    def __enter__(self) -> EchoServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0).wait(5)


def status_code(value: int) -> grpc.StatusCode:
    for c in grpc.StatusCode:
        if c.value[0] == value:
            return c
    raise ValueError(value)
