"""gRPC test peers: a grpcio server speaking grpc.health.v1 (raw bytes through generic handlers,
so no generated code), recording what each check carried."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
from envoi_grpc.health_check import decode_response

SERVING, NOT_SERVING = 1, 2


def _response(status: int) -> bytes:
    return b"\x08" + bytes([status]) if status else b""


def _request_service(raw: bytes) -> str:
    # HealthCheckRequest{service = 1}: tag 0x0a, one-byte length for test names.
    return raw[2:2 + raw[1]].decode() if raw[:1] == b"\x0a" else ""


class HealthServer:
    """``statuses[service]`` answers; a service not listed gets NOT_FOUND (as grpcio's own
    health servicer does). ``mode``: "ok", "abort" (UNAVAILABLE), "garbage" (an undecodable
    message), "two" (two messages on a unary call is impossible in grpcio, so "two" answers
    SERVING with extra unknown fields instead)."""

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {"": SERVING}
        self.seen: list[dict[str, Any]] = []
        self.mode = "ok"
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                self._check, request_deserializer=lambda b: b,
                response_serializer=lambda b: b)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _check(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        service = _request_service(request)
        md = dict(context.invocation_metadata())
        with self.lock:
            self.seen.append({"service": service, "metadata": md})
        if self.mode == "abort":
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        if self.mode == "garbage":
            return b"\xff\xff\xff"
        status = self.statuses.get(service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        out = _response(status)
        if self.mode == "two":
            out += b"\x12\x03abc"  # an unknown field 2: still a valid SERVING answer
        assert decode_response(out) == status
        return out

    def start(self) -> HealthServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0).wait(5)
