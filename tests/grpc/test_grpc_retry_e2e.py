"""gRPC retry conditions (``retry_on``: cancelled, deadline-exceeded, internal,
resource-exhausted, unavailable), the real Envoy 1.39.3 and envoi side by side: a grpcio server
whose calls fail N times (trailers-only, the grpc-status in the response HEADERS) then succeed;
the answers the grpcio client gets and the cluster's retry counters equal Envoy's. A status in
real trailers (after a message) is never retried, nor a code the policy does not name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import grpc
import pytest
from echo_service import EchoServer, compile_protos
from envoi.testing import free_port, wait_for
from grpc_e2e_config import grpc_yaml

KINDS = ["envoy", "envoi"]
RETRY = """\
                  retry_policy:
                    retry_on: "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
                    num_retries: 2
                    retry_back_off: {base_interval: 0.01s, max_interval: 0.02s}"""
# (name, x-fail-times, x-fail-code): the first `times` calls fail with `code`.
CASES = [("unavailable once", 1, 14), ("internal twice", 2, 13), ("cancelled once", 1, 1),
         ("deadline-exceeded once", 1, 4), ("resource-exhausted once", 1, 8),
         ("unavailable 3 times: out of retries", 3, 14), ("not-found: not retried", 1, 5),
         ("unknown: not retried", 1, 2)]
COUNTERS = ("upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_limit_exceeded",
            "upstream_rq_retry_backoff_exponential", "upstream_rq_total", "upstream_rq_200",
            "upstream_rq_completed", "retry.upstream_rq_200", "retry.upstream_rq_completed",
            "grpc.envoi.e2e.Echo.Unary.total", "grpc.envoi.e2e.Echo.Unary.failure",
            "grpc.envoi.e2e.Echo.Unary.success", "grpc.envoi.e2e.Echo.Unary.14",
            "grpc.envoi.e2e.Echo.Unary.request_message_count")


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return compile_protos(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="module")
def server(protos: tuple[ModuleType, ModuleType]) -> Iterator[EchoServer]:
    with EchoServer(*protos) as s:
        yield s


def _calls(kind: str, port: int, protos: tuple[ModuleType, ModuleType]) -> list[Any]:
    pb2, pb2_grpc = protos
    out: list[Any] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb2_grpc.EchoStub(ch)
        for name, times, code in CASES:
            md = (("x-fail-key", f"{kind} {name}"), ("x-fail-times", str(times)),
                  ("x-fail-code", str(code)))
            try:
                reply = stub.Unary(pb2.EchoRequest(payload=b"ok"), metadata=md, timeout=20)
                out.append((name, "OK", reply.payload))
            except grpc.RpcError as err:
                e: Any = err
                out.append((name, e.code().name, e.details()))
        # A status after a message (real trailers): never retried.
        call = stub.ServerStream(pb2.EchoRequest(count=1, code=14, message="late"), timeout=20)
        got = []
        try:
            for r in call:
                got.append(r.index)
        except grpc.RpcError as err:
            e = err
            out.append(("after a message", got, e.code().name, e.details()))
    return out


def test_grpc_retry_conditions_equal_envoys(proxy_process: Callable[..., Any],
                                           server: EchoServer,
                                           protos: tuple[ModuleType, ModuleType]) -> None:
    answers: dict[str, list[Any]] = {}
    counters: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        port, admin = free_port(), free_port()
        proc = proxy_process(kind, grpc_yaml(port, admin, server.port, route_extra=RETRY), admin)
        answers[kind] = _calls(kind, port, protos)
        wait_for(lambda p=proc: p.stats().get("cluster.greeter.upstream_rq_completed") == 9,
                 what=f"{kind}: 9 upstream answers passed on", timeout=10)
        st = proc.stats()
        counters[kind] = {c: st.get(f"cluster.greeter.{c}") for c in COUNTERS}
    expected = [("unavailable once", "OK", b"ok"), ("internal twice", "OK", b"ok"),
                ("cancelled once", "OK", b"ok"), ("deadline-exceeded once", "OK", b"ok"),
                ("resource-exhausted once", "OK", b"ok"),
                ("unavailable 3 times: out of retries", "UNAVAILABLE", "failure 3"),
                ("not-found: not retried", "NOT_FOUND", "failure 1"),
                ("unknown: not retried", "UNKNOWN", "failure 1"),
                ("after a message", [0], "UNAVAILABLE", "late")]
    assert answers["envoy"] == expected
    assert answers["envoi"] == expected
    # 8 calls + 1 stream, 17 upstream requests: 8 retries (5 successes, 1 out of retries)
    assert counters["envoy"]["upstream_rq_retry"] == 8, counters
    assert counters["envoy"]["upstream_rq_total"] == 17, counters
    assert counters["envoi"] == counters["envoy"]


_INTERNAL = """\
          stat_prefix: grpc_in
          use_remote_address: true
          internal_address_config:
            cidr_ranges: [{address_prefix: 127.0.0.1, prefix_len: 32}]
"""


def test_retry_grpc_on_header_from_an_internal_client(proxy_process: Callable[..., Any],
                                                      server: EchoServer,
                                                      protos: tuple[ModuleType, ModuleType]
                                                      ) -> None:
    """``x-envoy-retry-grpc-on`` (with ``x-envoy-max-retries``) from an internal client and no
    route retry policy; a gRPC condition in ``x-envoy-retry-on`` is not one there."""
    pb2, pb2_grpc = protos
    answers: dict[str, list[Any]] = {}
    retries: dict[str, Any] = {}
    for kind in KINDS:
        port, admin = free_port(), free_port()
        yaml = grpc_yaml(port, admin, server.port).replace("          stat_prefix: grpc_in\n",
                                                           _INTERNAL)
        proc = proxy_process(kind, yaml, admin)
        out = answers[kind] = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb2_grpc.EchoStub(ch)
            for name, hdrs in (("grpc-on", {"x-envoy-retry-grpc-on": "unavailable",
                                            "x-envoy-max-retries": "2"}),
                               ("retry-on", {"x-envoy-retry-on": "unavailable,cancelled"}),
                               ("grpc-on, other code", {"x-envoy-retry-grpc-on": "internal"})):
                md = (("x-fail-key", f"hdr {kind} {name}"), ("x-fail-times", "2"),
                      *hdrs.items())
                try:
                    stub.Unary(pb2.EchoRequest(payload=b"ok"), metadata=md, timeout=20)
                    out.append((name, "OK"))
                except grpc.RpcError as err:
                    e: Any = err
                    out.append((name, e.code().name, e.details()))
        wait_for(lambda p=proc: p.stats().get("cluster.greeter.upstream_rq_completed") == 3,
                 what=f"{kind}: 3 answers passed on", timeout=10)
        retries[kind] = proc.stats().get("cluster.greeter.upstream_rq_retry")
    assert answers["envoy"] == [("grpc-on", "OK"), ("retry-on", "UNAVAILABLE", "failure 1"),
                                ("grpc-on, other code", "UNAVAILABLE", "failure 1")]
    assert answers["envoi"] == answers["envoy"]
    assert retries == {"envoy": 2, "envoi": 2}
