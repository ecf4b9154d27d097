"""The admin server, started in-process on port 0 against a fake server, driven over real HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from envoi.admin import (
    AdminHandle,
    CircuitBreakerThresholds,
    ClusterInfo,
    HostInfo,
    ListenerInfo,
    start_admin,
)
from envoi.plugins import Plugins
from envoi.stats import Store
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import json_format

assert tcp_proxy_pb2  # registers the TcpProxy type the bootstrap below refers to

BOOTSTRAP = {
    "node": {"id": "node-1", "cluster": "edge"},
    "static_resources": {
        "listeners": [{
            "name": "tcp_in",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18100}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "tcp_echo",
                    "cluster": "echo",
                },
            }]}],
        }],
        "clusters": [{
            "name": "echo",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": 18081}}},
            }]}]},
        }],
    },
}


class FakeServer:
    """An AdminServerApi that records what the admin asked of it."""

    def __init__(self) -> None:
        self.stats = Store()
        self.plugins = Plugins(autoload=False)
        self.bootstrap = json_format.ParseDict(BOOTSTRAP, bootstrap_pb2.Bootstrap())
        self.state = "LIVE"
        self.start_time = time.time() - 42
        self.command_line_options: dict[str, Any] = {"concurrency": 1, "drain_time": "600s"}
        self.drains: list[tuple[bool, bool]] = []
        self.shut_down = threading.Event()

    def stats_snapshot(self) -> Store:
        return self.stats

    def runtime_info(self) -> dict[str, str]:
        return {"event_loop": "asyncio (CPython 3.11.7)"}

    def runtime_json(self) -> str:
        return '{"layers": [], "entries": {}}\n'

    def runtime_modify(self, updates: dict[str, str]) -> str | None:
        return "No admin layer specified"

    def reset_counters(self) -> None:
        self.stats.reset_counters()

    def listeners_info(self) -> list[ListenerInfo]:
        return [ListenerInfo("tcp_in", "127.0.0.1", 18100), ListenerInfo("v6", "::1", 18101)]

    def clusters_info(self) -> list[ClusterInfo]:
        return [ClusterInfo(
            "echo",
            high_priority=CircuitBreakerThresholds(max_retries=5),
            hosts=[
                HostInfo("127.0.0.1", 18081, cx_total=3, rq_total=2, rq_success=2,
                         zone="z1"),
                HostInfo("127.0.0.1", 18082, health_flags="/failed_active_hc", weight=2),
            ],
        )]

    def healthcheck_fail(self) -> None:
        self.state = "DRAINING"

    def healthcheck_ok(self) -> None:
        self.state = "LIVE"

    def drain_listeners(self, graceful: bool, inbound_only: bool) -> None:
        self.drains.append((graceful, inbound_only))

    def shutdown(self) -> None:
        self.shut_down.set()


@dataclass
class Admin:
    server: FakeServer
    port: int

    def request(self, path: str, method: str = "GET") -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.getheader("content-type") or "", resp.read().decode()
        finally:
            conn.close()

    def get(self, path: str) -> str:
        status, _, body = self.request(path)
        assert status == 200, (path, status, body)
        return body


@pytest.fixture
def admin() -> Iterator[Admin]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeServer()
    handle: AdminHandle = asyncio.run_coroutine_threadsafe(
        start_admin(server, "127.0.0.1", 0), loop
    ).result(10)
    try:
        yield Admin(server, handle.port)
    finally:
        asyncio.run_coroutine_threadsafe(handle.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_binds_port_zero(admin: Admin) -> None:
    assert admin.port > 0


def test_stats_text_json_filter_usedonly_type(admin: Admin) -> None:
    admin.server.stats.counter("tcp.tcp_echo.downstream_cx_total").inc(3)
    admin.server.stats.counter("tcp.tcp_echo.idle_timeout")
    admin.server.stats.gauge("server.live").set(1)
    text = admin.get("/stats")
    assert "tcp.tcp_echo.downstream_cx_total: 3\n" in text
    assert "tcp.tcp_echo.idle_timeout: 0\n" in text
    assert admin.get("/stats?filter=^tcp%5C.&usedonly") == "tcp.tcp_echo.downstream_cx_total: 3\n"
    assert admin.get("/stats?type=Gauges&filter=server") == "server.live: 1\n"
    status, ctype, body = admin.request("/stats?format=json&filter=tcp")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"stats": [
        {"name": "tcp.tcp_echo.downstream_cx_total", "value": 3},
        {"name": "tcp.tcp_echo.idle_timeout", "value": 0},
    ]}
    assert admin.request("/stats?type=Bogus")[0] == 400
    assert admin.request("/stats?filter=(")[0] == 400


def test_prometheus_both_paths(admin: Admin) -> None:
    admin.server.stats.counter("cluster.echo_a.upstream_rq_503").inc()
    expected = ('envoy_cluster_upstream_rq{envoy_response_code="503",'
                'envoy_cluster_name="echo_a"} 1\n')
    assert expected in admin.get("/stats/prometheus")
    assert expected in admin.get("/stats?format=prometheus")


def test_admin_traffic_is_counted_and_keepalive_reuses_the_connection(admin: Admin) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/ready")
            resp = conn.getresponse()
            assert resp.read() == b"LIVE\n"
        conn.request("GET", "/nope")
        assert conn.getresponse().read().startswith(b"invalid path")
        conn.request("GET", "/stats?filter=%5Ehttp%5C.admin%5C.downstream_(cx|rq)_(total|2xx|4xx)")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    assert body == (
        "http.admin.downstream_cx_total: 1\n"
        "http.admin.downstream_rq_2xx: 3\n"
        "http.admin.downstream_rq_4xx: 1\n"
        "http.admin.downstream_rq_total: 5\n"
    )


def test_ready_follows_healthcheck_fail_and_ok(admin: Admin) -> None:
    assert admin.request("/ready")[::2] == (200, "LIVE\n")
    assert admin.request("/healthcheck/fail", "POST")[::2] == (200, "OK\n")
    assert admin.request("/ready")[::2] == (503, "DRAINING\n")
    assert json.loads(admin.get("/server_info"))["state"] == "DRAINING"
    assert admin.request("/healthcheck/ok", "POST")[::2] == (200, "OK\n")
    assert admin.request("/ready")[::2] == (200, "LIVE\n")


@pytest.mark.parametrize(
    "path",
    ["/healthcheck/fail", "/healthcheck/ok", "/drain_listeners", "/quitquitquit",
     "/reset_counters"],
)
def test_mutating_endpoints_refuse_get(admin: Admin, path: str) -> None:
    status, _, body = admin.request(path)
    assert (status, body) == (405, "Method GET not allowed, POST required.")
    assert admin.server.state == "LIVE"
    assert not admin.server.drains
    assert not admin.server.shut_down.is_set()


def test_unknown_path_is_404_with_help(admin: Admin) -> None:
    status, _, body = admin.request("/no/such/thing")
    assert status == 404
    assert body.startswith("invalid path. admin commands are:\n")
    assert "  /stats: " in body


def test_help_lists_every_endpoint(admin: Admin) -> None:
    body = admin.get("/help")
    lines = body.splitlines()
    assert lines[0] == "admin commands are:"
    endpoints = [line.split(":")[0].strip() for line in lines[1:] if line.startswith("  /")]
    paths = [e.removesuffix(" (POST)") for e in endpoints]
    assert paths == sorted(paths)
    for path in ("/clusters", "/config_dump", "/drain_listeners", "/healthcheck/fail",
                 "/healthcheck/ok", "/listeners", "/quitquitquit", "/ready",
                 "/reset_counters", "/server_info", "/stats", "/stats/prometheus"):
        assert path in paths
    # As Envoy's: POST-only endpoints are marked, query parameters listed under each.
    posts = {e.removesuffix(" (POST)") for e in endpoints if e.endswith(" (POST)")}
    assert posts == {"/drain_listeners", "/healthcheck/fail", "/healthcheck/ok",
                     "/quitquitquit", "/reset_counters", "/runtime_modify"}
    stats = lines.index("  /stats: print server stats")
    params = [ln.split(":")[0].strip() for ln in lines[stats + 1:stats + 5]]
    assert params == ["usedonly", "filter", "format", "type"]
    assert "      inboundonly: Drains all inbound listeners." in body


def test_drain_listeners_passes_flags(admin: Admin) -> None:
    assert admin.request("/drain_listeners", "POST")[::2] == (200, "OK\n")
    assert admin.request("/drain_listeners?graceful&inboundonly", "POST")[0] == 200
    assert admin.server.drains == [(False, False), (True, True)]


def test_quitquitquit_answers_then_shuts_down(admin: Admin) -> None:
    assert admin.request("/quitquitquit", "POST")[::2] == (200, "OK\n")
    assert admin.server.shut_down.wait(10)


def test_reset_counters_keeps_gauges(admin: Admin) -> None:
    admin.server.stats.counter("a.c").inc(5)
    admin.server.stats.gauge("a.g").set(2)
    assert admin.request("/reset_counters", "POST")[::2] == (200, "OK\n")
    assert admin.get("/stats?filter=%5Ea%5C.") == "a.c: 0\na.g: 2\n"


def test_listeners_text_and_json(admin: Admin) -> None:
    assert admin.get("/listeners") == "tcp_in::127.0.0.1:18100\nv6::[::1]:18101\n"
    doc = json.loads(admin.get("/listeners?format=json"))
    assert doc["listener_statuses"][0] == {
        "name": "tcp_in",
        "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": 18100}},
    }


def test_clusters_text(admin: Admin) -> None:
    lines = admin.get("/clusters").splitlines()
    assert lines[:10] == [
        "echo::observability_name::echo",
        "echo::default_priority::max_connections::1024",
        "echo::default_priority::max_pending_requests::1024",
        "echo::default_priority::max_requests::1024",
        "echo::default_priority::max_retries::3",
        "echo::high_priority::max_connections::1024",
        "echo::high_priority::max_pending_requests::1024",
        "echo::high_priority::max_requests::1024",
        "echo::high_priority::max_retries::5",
        "echo::added_via_api::false",
    ]
    host = [line for line in lines if line.startswith("echo::127.0.0.1:18081::")]
    assert [line.split("::", 2)[2] for line in host] == [
        "cx_active::0", "cx_connect_fail::0", "cx_total::3", "rq_active::0", "rq_error::0",
        "rq_pending_active::0",
        "rq_success::2", "rq_timeout::0", "rq_total::2", "hostname::", "health_flags::healthy",
        "weight::1", "region::", "zone::z1", "sub_zone::", "canary::false", "priority::0",
        "success_rate::-1", "local_origin_success_rate::-1",
    ]
    assert "echo::127.0.0.1:18082::health_flags::/failed_active_hc" in lines


def test_clusters_json(admin: Admin) -> None:
    doc = json.loads(admin.get("/clusters?format=json"))
    (cluster,) = doc["cluster_statuses"]
    assert cluster["name"] == "echo"
    assert cluster["observability_name"] == "echo"
    assert cluster["circuit_breakers"]["thresholds"][1]["priority"] == "HIGH"
    assert cluster["circuit_breakers"]["thresholds"][1]["max_retries"] == 5
    first, second = cluster["host_statuses"]
    assert first["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": 18081}}
    assert {"name": "cx_total", "value": "3"} in first["stats"]
    assert {"name": "cx_active", "type": "GAUGE"} in first["stats"]
    assert first["health_status"] == {"eds_health_status": "HEALTHY"}
    assert first["locality"] == {"zone": "z1"}
    assert second["health_status"] == {
        "failed_active_health_check": True, "eds_health_status": "HEALTHY"
    }
    assert second["weight"] == 2


def test_server_info(admin: Admin) -> None:
    doc = json.loads(admin.get("/server_info"))
    assert list(doc) == ["version", "state", "uptime_current_epoch", "uptime_all_epochs",
                         "hot_restart_version", "command_line_options", "node", "runtime"]
    assert doc["runtime"] == {"event_loop": "asyncio (CPython 3.11.7)"}
    assert doc["state"] == "LIVE"
    assert int(doc["uptime_current_epoch"].rstrip("s")) >= 42
    assert doc["command_line_options"] == {"concurrency": 1, "drain_time": "600s"}
    assert doc["node"]["id"] == "node-1"
    tcp = [e for e in doc["node"]["extensions"] if e["name"] == "envoy.filters.network.tcp_proxy"]
    assert tcp == [{
        "name": "envoy.filters.network.tcp_proxy",
        "category": "envoy.filters.network",
        "type_urls": ["envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"],
        "distribution": tcp[0]["distribution"],
    }]
    assert tcp[0]["distribution"].startswith("envoi ")


def test_config_dump(admin: Admin) -> None:
    doc = json.loads(admin.get("/config_dump"))
    boot, clusters, listeners = doc["configs"]
    assert boot["@type"] == "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    assert boot["bootstrap"]["node"] == {"id": "node-1", "cluster": "edge"}
    assert clusters["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
    (static_cluster,) = clusters["static_clusters"]
    assert static_cluster["cluster"]["@type"] == (
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    )
    assert static_cluster["cluster"]["connect_timeout"] == "1s"
    assert "last_updated" in static_cluster
    assert listeners["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
    (static_listener,) = listeners["static_listeners"]
    chain = static_listener["listener"]["filter_chains"][0]
    assert chain["filters"][0]["typed_config"]["stat_prefix"] == "tcp_echo"


def test_oversized_request_head_is_refused(admin: Admin) -> None:
    with socket.create_connection(("127.0.0.1", admin.port), timeout=10) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 431 ")


def test_malformed_request_gets_400_and_close(admin: Admin) -> None:
    with socket.create_connection(("127.0.0.1", admin.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_close_drops_open_connections() -> None:
    async def scenario() -> None:
        server = FakeServer()
        handle = await start_admin(server, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")  # with a reason phrase, as Envoy
        await handle.close()
        assert await asyncio.wait_for(reader.read(), 10) == b"LIVE\n"
        writer.close()
        assert server.stats.gauge("http.admin.downstream_cx_active").value == 0

    asyncio.run(scenario())


def test_home_page_is_one_self_contained_file(admin: Admin) -> None:
    status, ctype, body = admin.request("/")
    assert status == 200 and ctype == "text/html; charset=UTF-8"
    assert body.startswith("<!doctype html>") and "<title>envoi admin</title>" in body
    # Nothing is loaded from elsewhere: every src/href is the admin's own or inline.
    for ref in re.findall(r'(?:src|href)="([^"]*)"', body):
        assert ref.startswith(("/", "data:")), ref
    assert "<script src" not in body and "@import" not in body
    # The endpoints the page reads exist.
    for path in ("/server_info", "/listeners?format=json", "/clusters?format=json",
                 "/tap/points"):
        assert f'"{path}' in body, path
