"""The gRPC health checker: its probe against a real grpcio health server (statuses, service
name, authority, metadata, errors, connection reuse), its config checks, and a whole envoi
process whose cluster's host goes unhealthy and back as the server's answer changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from envoi.config import ConfigError
from envoi.testing import EnvoiProcess, factory_context, free_port, wait_for
from envoi.upstream.health_check import (
    RESULT_HEALTHY,
    RESULT_NETWORK_FAILURE,
    RESULT_UNHEALTHY,
)
from envoi.upstream.host import Host
from envoi_grpc.health_check import (
    SERVING,
    GrpcHealthChecker,
    decode_response,
    encode_request,
)
from envoy.config.core.v3 import health_check_pb2
from google.protobuf import json_format
from grpc_peers import NOT_SERVING, HealthServer


def hc_config(**grpc: Any) -> Any:
    msg = health_check_pb2.HealthCheck()
    json_format.ParseDict({"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1,
                           "healthy_threshold": 1, "grpc_health_check": grpc}, msg)
    return msg


def probe_for(port: int, reuse: bool = True, **grpc: Any) -> Any:
    cfg = hc_config(**grpc)
    if not reuse:
        cfg.reuse_connection.value = False
    cluster = SimpleNamespace(name="greeter", tls=None)
    factory = GrpcHealthChecker().create_health_checker(cluster, cfg, factory_context())
    return factory(Host("127.0.0.1", port))


def run_checks(probe: Any, n: int = 1) -> list[str]:
    async def go() -> list[str]:
        out = [await asyncio.wait_for(probe.check(), 5) for _ in range(n)]
        probe.close()
        return out

    return asyncio.run(go())


@pytest.fixture
def server() -> Any:
    s = HealthServer().start()
    yield s
    s.stop()


def test_messages() -> None:
    assert encode_request("") == b""
    assert encode_request("svc") == b"\x0a\x03svc"
    assert decode_response(b"") == 0
    assert decode_response(b"\x08\x01") == SERVING
    assert decode_response(b"\x12\x01x\x08\x02") == 2  # unknown field skipped
    assert decode_response(b"\x08") is None
    assert decode_response(b"\x00") is None


def test_serving_is_healthy_and_sends_what_envoy_sends(server: HealthServer) -> None:
    assert run_checks(probe_for(server.port), 3) == [RESULT_HEALTHY] * 3
    md = server.seen[0]["metadata"]
    assert server.seen[0]["service"] == ""
    assert md["user-agent"].startswith("Envoy/HC")
    # grpcio shows the authority it received as the call's host.


def test_service_name_authority_and_metadata(server: HealthServer) -> None:
    server.statuses["envoi.smoke.Greeter"] = SERVING
    probe = probe_for(server.port, service_name="envoi.smoke.Greeter", authority="hc.internal",
                      initial_metadata=[{"header": {"key": "x-hc", "value": "1"}}])
    assert run_checks(probe) == [RESULT_HEALTHY]
    seen = server.seen[-1]
    assert seen["service"] == "envoi.smoke.Greeter"
    assert seen["metadata"]["x-hc"] == "1"


def test_not_serving_unknown_service_errors_are_unhealthy(server: HealthServer) -> None:
    server.statuses[""] = NOT_SERVING
    assert run_checks(probe_for(server.port)) == [RESULT_UNHEALTHY]
    assert run_checks(probe_for(server.port, service_name="nope")) == [RESULT_UNHEALTHY]
    server.statuses[""] = SERVING
    server.mode = "abort"
    assert run_checks(probe_for(server.port)) == [RESULT_UNHEALTHY]
    server.mode = "garbage"
    assert run_checks(probe_for(server.port)) == [RESULT_UNHEALTHY]
    server.mode = "two"
    assert run_checks(probe_for(server.port)) == [RESULT_HEALTHY]


def test_connection_kept_or_not(server: HealthServer) -> None:
    probe = probe_for(server.port)

    async def go(p: Any) -> list[Any]:
        writers = []
        for _ in range(3):
            assert await p.check() == RESULT_HEALTHY
            writers.append(p.stream.writer)
        p.close()
        return writers

    kept = asyncio.run(go(probe))
    assert kept[0] is not None and kept[0] is kept[1] is kept[2]
    fresh = asyncio.run(go(probe_for(server.port, reuse=False)))
    assert fresh == [None, None, None]


def test_nothing_listening_is_a_network_failure() -> None:
    assert run_checks(probe_for(free_port())) == [RESULT_NETWORK_FAILURE]


def test_a_plain_http_server_is_no_health_answer() -> None:
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        # An HTTP/1.1 server answers the HTTP/2 preface with an error and closes.
        assert run_checks(probe_for(srv.server_address[1])) == [RESULT_NETWORK_FAILURE]
    finally:
        srv.shutdown()


def test_config_refusals() -> None:
    cluster = SimpleNamespace(name="c", tls=None)
    for meta in ({"key": ":path", "value": "x"}, {"key": "content-type", "value": "x"}):
        with pytest.raises(ConfigError) as info:
            GrpcHealthChecker().create_health_checker(
                cluster, hc_config(initial_metadata=[{"header": meta}]), factory_context())
        assert "initial_metadata[0].header.key" in str(info.value)
    with pytest.raises(ConfigError) as info:
        GrpcHealthChecker().create_health_checker(
            cluster, hc_config(initial_metadata=[{"header": {"key": "x", "value": "y"},
                                                  "append_action": "ADD_IF_ABSENT"}]),
            factory_context())
    assert "append_action" in str(info.value)


CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  clusters:
  - name: greeter
    type: STATIC
    connect_timeout: 0.5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      grpc_health_check: {{service_name: envoi.smoke.Greeter}}
    load_assignment:
      cluster_name: greeter
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"""


def host_healthy(proc: EnvoiProcess) -> bool | None:
    _, body = proc.get("/clusters?format=json")
    for c in json.loads(body)["cluster_statuses"]:
        if c["name"] == "greeter":
            hs = c["host_statuses"][0]["health_status"]
            return bool(hs.get("eds_health_status") == "HEALTHY"
                        and not hs.get("failed_active_health_check"))
    return None


@pytest.mark.timeout(60)
def test_envoi_marks_the_host_by_its_grpc_health(
        envoi_process: Callable[..., EnvoiProcess], server: HealthServer) -> None:
    server.statuses["envoi.smoke.Greeter"] = SERVING
    admin = free_port()
    proc = envoi_process(CONFIG.format(admin=admin, port=server.port), admin)
    wait_for(lambda: host_healthy(proc) is True, 20, what="healthy host")
    server.statuses["envoi.smoke.Greeter"] = NOT_SERVING
    wait_for(lambda: host_healthy(proc) is False, 20, what="NOT_SERVING → unhealthy")
    server.statuses["envoi.smoke.Greeter"] = SERVING
    wait_for(lambda: host_healthy(proc) is True, 20, what="SERVING again → healthy")
    stats = proc.stats()
    assert stats["cluster.greeter.health_check.failure"] >= 1
    assert stats["cluster.greeter.health_check.success"] >= 2
    assert {s["service"] for s in server.seen} == {"envoi.smoke.Greeter"}


def test_cluster_must_speak_http2() -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    cfg = cluster_pb2.Cluster(name="plain")
    cluster = SimpleNamespace(name="plain", tls=None, config=cfg)
    with pytest.raises(ConfigError) as info:
        GrpcHealthChecker().create_health_checker(cluster, hc_config(), factory_context())
    assert "plain cluster must support HTTP/2 for gRPC healthchecking" in str(info.value)
