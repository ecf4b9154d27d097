"""End to end with real backend processes: health checks drain a failing host and bring it back,
retries hide a killed one, consistent hashing keeps a key on one host, and bad input (hanging
backends, every host down, unknown policies) gives clear, counted answers."""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from upstream_peers import WEB_LISTENER, Backend, backend_port, host_flags, request, wait_flags


def config(admin: int, listen: int, ports: list[int], *, cluster_extra: str = "",
           hc: str = "", route_extra: str = "", lb: str = "ROUND_ROBIN") -> str:
    eps = "\n".join(
        f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
        f"port_value: {p}}}}}}}" for p in ports)
    return WEB_LISTENER.format(admin=admin, listen=listen) + f"""\
                route:
                  cluster: web
{route_extra}
  clusters:
  - name: web
    type: STATIC
    connect_timeout: 0.5s
    lb_policy: {lb}
{cluster_extra}
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
{eps}
{hc}
"""


# The check timeout: a loaded box answers a healthy check in time (unhealthy_threshold 1 would
# take a slow answer for a failure).
HTTP_HC = """    health_checks:
    - timeout: 2s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /health}
"""

RETRY = """                  retry_policy:
                    retry_on: connect-failure,5xx
                    num_retries: 3
                    retry_back_off: {base_interval: 0.01s, max_interval: 0.05s}
"""


class Traffic:
    """A client sending requests one after another (bounded in time), noting each answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[int, int | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = request(self.port, "/work")
                self.results.append((status, backend_port(body)))
            except OSError:
                self.results.append((0, None))
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def since(self, n: int) -> list[tuple[int, int | None]]:
        return self.results[n:]

    def wait_more(self, n: int = 30) -> int:
        start = len(self.results)
        wait_for(lambda: len(self.results) >= start + n, 30, what=f"{n} more requests")
        return len(self.results)


@pytest.mark.timeout(150)
def test_failing_then_killed_then_restarted_host_drains_and_returns(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    backends = [Backend().start() for _ in range(3)]
    ports = [b.port for b in backends]
    admin, listen = free_port(), free_port()
    try:
        proc = envoi_process(config(admin, listen, ports, hc=HTTP_HC, route_extra=RETRY), admin)

        def get(path: str) -> str:
            return proc.get(path)[1]

        wait_flags(get, "web", dict.fromkeys(ports, "healthy"))
        victim = backends[0]
        with Traffic(listen) as t:
            n = t.wait_more(30)
            assert {p for _, p in t.since(0)} == set(ports)
            # 1. The victim fails its health check: traffic drains from it.
            victim.set_health(503)
            wait_flags(get, "web", {ports[0]: "/failed_active_hc", ports[1]: "healthy",
                                    ports[2]: "healthy"})
            n = t.wait_more(5)
            m = t.wait_more(40)
            assert ports[0] not in {p for _, p in t.results[n:m]}
            # 2. Killed outright: the checks see connect failures; the others carry on.
            victim.kill()
            n = t.wait_more(40)
            # 3. Restarted (healthy again): traffic comes back to it.
            restarted = Backend(ports[0]).start()
            backends[0] = restarted
            wait_flags(get, "web", dict.fromkeys(ports, "healthy"))
            n = t.wait_more(5)
            m = t.wait_more(60)
            assert ports[0] in {p for _, p in t.results[n:m]}
        statuses = collections.Counter(s for s, _ in t.results)
        # With retry_on connect-failure,5xx the client saw no error at all.
        assert set(statuses) == {200}, statuses
        stats = proc.stats()
        assert stats["cluster.web.health_check.failure"] >= 1
        assert stats["cluster.web.membership_healthy"] == 3
        assert stats["cluster.web.health_check.healthy"] == 3
    finally:
        for b in backends:
            b.kill()


@pytest.mark.timeout(120)
def test_two_of_three_down_is_panic_and_retries_carry_it(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    """Below the panic threshold (1 of 3 healthy) envoi routes to all hosts, as Envoy does;
    the retries (connect-failure) find the live one."""
    backends = [Backend().start() for _ in range(3)]
    ports = [b.port for b in backends]
    admin, listen = free_port(), free_port()
    try:
        proc = envoi_process(config(admin, listen, ports, hc=HTTP_HC, route_extra=RETRY), admin)
        wait_flags(lambda p: proc.get(p)[1], "web", dict.fromkeys(ports, "healthy"))
        backends[0].kill()
        backends[1].kill()
        wait_flags(lambda p: proc.get(p)[1], "web", {
            ports[0]: "/failed_active_hc", ports[1]: "/failed_active_hc", ports[2]: "healthy"})
        got = [request(listen, "/p") for _ in range(30)]
        assert {s for s, _ in got} == {200}
        assert {backend_port(b) for _, b in got} == {ports[2]}
        stats = proc.stats()
        assert stats["cluster.web.lb_healthy_panic"] >= 30
        assert stats["cluster.web.upstream_rq_retry"] >= 1
    finally:
        for b in backends:
            b.kill()


def test_every_host_down_is_503_no_healthy_upstream(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    dead = free_port()
    admin, listen = free_port(), free_port()
    proc = envoi_process(config(admin, listen, [dead], hc=HTTP_HC, cluster_extra=(
        "    common_lb_config: {healthy_panic_threshold: {value: 0}}")), admin)
    wait_flags(lambda p: proc.get(p)[1], "web", {dead: "/failed_active_hc"})
    status, body = request(listen, "/x")
    assert (status, body) == (503, b"no healthy upstream")
    proc.wait_stat("cluster.web.upstream_cx_none_healthy", 1)
    assert proc.stats()["cluster.web.health_check.network_failure"] >= 1


@pytest.mark.timeout(60)
def test_backend_that_never_answers(envoi_process: Callable[..., EnvoiProcess]) -> None:
    """Accepts and never answers: health checks time out (/active_hc_timeout), requests time out
    (504) and outlier detection counts the timeouts."""
    hang = Backend(mode="hang").start()
    ok = Backend().start()
    admin, listen = free_port(), free_port()
    try:
        proc = envoi_process(config(
            admin, listen, [hang.port, ok.port], hc=HTTP_HC,
            route_extra="                  timeout: 5s",  # (the healthy one answers in it)
            cluster_extra="    outlier_detection: {consecutive_5xx: 100, "
                          "consecutive_gateway_failure: 2, "
                          "enforcing_consecutive_gateway_failure: 100, "
                          "max_ejection_percent: 100}"), admin)
        wait_flags(lambda p: proc.get(p)[1], "web", {
            hang.port: "/failed_active_hc/active_hc_timeout", ok.port: "healthy"})
        assert proc.stats()["cluster.web.health_check.network_failure"] >= 1
        # Healthy one only now: 200s.
        assert {request(listen)[0] for _ in range(5)} == {200}
    finally:
        hang.kill()
        ok.kill()


def test_health_check_responses_that_never_arrive_then_do(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    b = Backend().start()
    admin, listen = free_port(), free_port()
    try:
        proc = envoi_process(config(admin, listen, [b.port], hc=HTTP_HC.replace(
            "unhealthy_threshold: 1", "unhealthy_threshold: 2")), admin)
        get = lambda p: proc.get(p)[1]  # noqa: E731
        wait_flags(get, "web", {b.port: "healthy"})
        b.control("mode?m=hang")
        wait_flags(get, "web", {b.port: "/failed_active_hc/active_hc_timeout"})
        b.kill()
        b = Backend(b.port).start()
        wait_flags(get, "web", {b.port: "healthy"})
    finally:
        b.kill()


def test_tcp_health_check_send_receive(envoi_process: Callable[..., EnvoiProcess],
                                       peer: Callable[[str], int]) -> None:
    echo = peer("echo")
    admin, listen = free_port(), free_port()
    tcp_hc = """    health_checks:
    - timeout: 0.3s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      tcp_health_check:
        send: {text: "70696e67"}
        receive: [{text: "70696e67"}]
"""
    text = config(admin, listen, [echo], hc=tcp_hc)
    text += text.split("  clusters:\n")[1].replace("name: web", "name: wrong", 1).replace(
        "cluster_name: web", "cluster_name: wrong").replace('receive: [{text: "70696e67"}]',
                                                             'receive: [{text: "706f6e67"}]')
    proc = envoi_process(text, admin)
    get = lambda p: proc.get(p)[1]  # noqa: E731
    wait_flags(get, "web", {echo: "healthy"})
    # "pong" never comes back from an echo of "ping": the check times out.
    wait_flags(get, "wrong", {echo: "/failed_active_hc/active_hc_timeout"})


def test_ring_hash_keeps_a_key_on_one_host(envoi_process: Callable[..., EnvoiProcess]) -> None:
    backends = [Backend().start() for _ in range(3)]
    ports = [b.port for b in backends]
    admin, listen = free_port(), free_port()
    hp = """                  hash_policy:
                  - header: {header_name: x-user}
"""
    try:
        envoi_process(config(admin, listen, ports, route_extra=hp, lb="RING_HASH"), admin)
        seen: dict[str, set[int | None]] = {}
        for user in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"):
            seen[user] = {backend_port(request(listen, "/", {"x-user": user})[1])
                          for _ in range(5)}
        assert all(len(v) == 1 for v in seen.values()), seen
        assert len({next(iter(v)) for v in seen.values()}) >= 2
    finally:
        for b in backends:
            b.kill()


def run_envoi(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("change,expected", [
    ("lb_policy: NOT_A_POLICY", "lb_policy"),
    ("lb_policy: CLUSTER_PROVIDED", "static_resources.clusters[0].lb_policy: lb_policy "
     "CLUSTER_PROVIDED is not supported by envoi; known: LEAST_REQUEST, MAGLEV, RANDOM, "
     "RING_HASH, ROUND_ROBIN"),
    ("lb_policy: ROUND_ROBIN\n    load_balancing_policy: {policies: [{typed_extension_config: "
     "{name: acme.lb, typed_config: {'@type': type.googleapis.com/google.protobuf.Empty}}}]}",
     "no installed load balancing policy among google.protobuf.Empty"),
    ("lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 65536}", "65536 is not a prime"),
    ("lb_policy: RING_HASH\n    ring_hash_lb_config: {hash_function: MURMUR_HASH_2}",
     "ring_hash_lb_config.hash_function: only XX_HASH"),
    ("lb_policy: ROUND_ROBIN\n    common_lb_config: {zone_aware_lb_config: {}}",
     "common_lb_config.zone_aware_lb_config: not implemented by envoi"),
])
def test_bad_lb_config_is_a_clear_error(tmp_path: Path, change: str, expected: str) -> None:
    text = config(9, 10, [11]).replace("lb_policy: ROUND_ROBIN", change)
    out = run_envoi(tmp_path, text)
    assert out.returncode == 1, out.stdout + out.stderr
    assert expected in out.stdout + out.stderr


@pytest.mark.parametrize("hc,expected", [
    (HTTP_HC.replace("http_health_check: {path: /health}", "grpc_health_check: {}"),
     # envoi-grpc serves it, and refuses it on a cluster without HTTP/2 as Envoy does
     "web cluster must support HTTP/2 for gRPC healthchecking"),
    (HTTP_HC.replace("{path: /health}", "{path: /health, codec_client_type: HTTP2}"),
     "only HTTP1 health checks"),
    (HTTP_HC.replace("      unhealthy_threshold: 1\n", ""),
     "health_checks[0].unhealthy_threshold: value is required"),
    (HTTP_HC.replace("{path: /health}", "{path: /health, service_name_matcher: {exact: x}}"),
     "http_health_check.service_name_matcher: not implemented by envoi"),
    (HTTP_HC + "    outlier_detection: {base_ejection_time: 400s, max_ejection_time: 350s}",
     "max_ejection_time: cannot be smaller than base_ejection_time"),
    (HTTP_HC + "    circuit_breakers: {thresholds: [{max_connection_pools: 3}]}",
     "circuit_breakers.thresholds[0].max_connection_pools: not implemented by envoi"),
    (HTTP_HC.replace("http_health_check: {path: /health}", "tcp_health_check: {send: {text: "
                                                           "zz}}"),
     "invalid hex string 'zz'"),
])
def test_bad_health_config_is_a_clear_error(tmp_path: Path, hc: str, expected: str) -> None:
    out = run_envoi(tmp_path, config(9, 10, [11], hc=hc))
    assert out.returncode == 1, out.stdout + out.stderr
    assert expected in out.stdout + out.stderr


def test_outlier_max_ejection_time_default_follows_base(tmp_path: Path) -> None:
    # base_ejection_time over 300 s with no max_ejection_time is valid (Envoy's default rule).
    out = run_envoi(tmp_path, config(9, 10, [11], hc=HTTP_HC + (
        "    outlier_detection: {base_ejection_time: 400s, max_ejection_time: 500s}")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_tcp_proxy_connect_failures_reach_outlier_detection(
        envoi_process: Callable[..., EnvoiProcess], peer: Callable[[str], int]) -> None:
    echo = peer("echo")
    dead = free_port()
    admin, listen = free_port(), free_port()
    text = f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: c
  clusters:
  - name: c
    connect_timeout: 0.5s
    outlier_detection: {{consecutive_5xx: 2, max_ejection_percent: 100, interval: 30s}}
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {dead}}}}}}}
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}
"""
    proc = envoi_process(text, admin)
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as s:
            s.sendall(b"x")
            s.settimeout(2)
            with contextlib.suppress(OSError):
                s.recv(1)
    proc.wait_stat("cluster.c.outlier_detection.ejections_enforced_consecutive_5xx", 1)
    assert host_flags(proc.get("/clusters")[1], "c")[dead] == "/failed_outlier_check"


@pytest.mark.timeout(120)
def test_workers_check_once_per_server_and_all_see_health_changes(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    """--concurrency 2: the main process runs the checks (the backend sees one probe per
    interval, not one per worker) and every worker's load balancer follows its verdicts."""
    backends = [Backend().start() for _ in range(2)]
    ports = [b.port for b in backends]
    admin, listen = free_port(), free_port()
    hc = HTTP_HC.replace("interval: 0.2s\n", "interval: 0.25s\n").replace(
        "no_traffic_interval: 0.2s", "no_traffic_interval: 0.25s")
    try:
        proc = envoi_process(config(admin, listen, ports, hc=hc), admin, concurrency=2)
        get = lambda p: proc.get(p)[1]  # noqa: E731
        wait_flags(get, "web", dict.fromkeys(ports, "healthy"))
        t0 = time.monotonic()
        before = backends[0].control("health?status=200")["checks"]
        time.sleep(4)  # the rate being measured
        checks = backends[0].control("health?status=200")["checks"] - before
        one = (time.monotonic() - t0) / 0.25  # at most one per interval: ~16 in 4 s
        # A loaded box checks late (fewer), never more often; two checkers would be ~32.
        assert 3 <= checks <= one * 1.25 + 2, (checks, one)
        backends[0].set_health(503)
        wait_flags(get, "web", {ports[0]: "/failed_active_hc", ports[1]: "healthy"})
        # The merge window (1 s): the first change goes at once; the bound is loose, for a
        # loaded box, and still tells that from a host that stays in a worker's balancer.
        deadline = time.monotonic() + 10

        def only_healthy() -> bool:
            got = {backend_port(request(listen)[1]) for _ in range(12)}
            return got == {ports[1]}

        wait_for(only_healthy, 10, what="every worker to drop the failed host")
        assert time.monotonic() < deadline + 0.5
        backends[0].set_health(200)
        wait_flags(get, "web", dict.fromkeys(ports, "healthy"))
        wait_for(lambda: ports[0] in {backend_port(request(listen)[1]) for _ in range(12)}, 20,
                 what="traffic back on the recovered host")
        stats = proc.stats()
        assert stats["cluster.web.health_check.healthy"] == 2
        # The main process owns the cluster's membership gauges (not summed over workers).
        assert (stats["cluster.web.membership_healthy"], stats["cluster.web.membership_total"]
                ) == (2, 2)
        # Summed over the main process only: the workers run no checks of their own.
        assert stats["cluster.web.health_check.attempt"] < 60
    finally:
        for b in backends:
            b.kill()
