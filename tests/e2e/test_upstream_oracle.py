"""Envoy oracle for active health checks, outlier detection and circuit breakers: the
reference config ``health_checks.yaml`` (HTTP + TCP checks, consecutive_5xx, thresholds) on test
ports, the same failures through the real Envoy 1.39.3 and through envoi. Same stat names, the
same values where timing does not decide them, the same ``/clusters`` lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import EnvoiProcess, EnvoyProcess, free_port, wait_for
from upstream_peers import WEB_LISTENER, Backend, host_flags, request, wait_flags

# shared/reference/envoy-configs/health_checks.yaml, ports as format fields.
CONFIG = WEB_LISTENER + """\
                route: {{cluster: web}}
  clusters:
  - name: web
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {a}}}}}}}
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {b}}}}}}}
    health_checks:
    - timeout: 1s
      interval: 0.5s
      no_traffic_interval: 0.5s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check:
        path: /health
        expected_statuses: [{{start: 200, end: 300}}]
    outlier_detection:
      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 5s
      max_ejection_percent: 50
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
        max_connections: 100
        max_pending_requests: 100
        max_requests: 100
        max_retries: 3
        track_remaining: true
  - name: tcp_checked
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: tcp_checked
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {a}}}}}}}
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {dead}}}}}}}
    health_checks:
    - timeout: 0.5s
      interval: 0.5s
      no_traffic_interval: 0.5s
      unhealthy_threshold: 1
      healthy_threshold: 1
      tcp_health_check: {{}}
"""

WATCHED = ("health_check.", "outlier_detection.", "circuit_breakers.", "membership_")
# Values decided by how many checks fit in the run's time: compared by name only.
TIMED = ("health_check.attempt", "health_check.success", "health_check.failure",
         "health_check.network_failure",
         # open connections/pools at that moment (keep-alive connections may be gone)
         "remaining_cx", "remaining_cx_pools")
# Host lines whose values count traffic (decided by timing and balancing order).
HOST_COUNTERS = ("cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error",
                 "rq_pending_active", "rq_success", "rq_timeout", "rq_total")


def run(kind: str, proxy_process: Callable[[str, str, int], Any]) -> dict[str, Any]:
    a, b = Backend().start(), Backend().start()
    dead, listen, admin = free_port(), free_port(), free_port()
    try:
        proc = proxy_process(kind, CONFIG.format(admin=admin, listen=listen, a=a.port,
                                                 b=b.port, dead=dead), admin)

        def get(path: str) -> str:
            r = proc.get(path)
            return r if isinstance(r, str) else str(r[1])

        out: dict[str, Any] = {}
        wait_flags(get, "tcp_checked", {a.port: "healthy", dead: "/failed_active_hc"})
        wait_flags(get, "web", {a.port: "healthy", b.port: "healthy"})
        out["start"] = get("/clusters")
        assert [request(listen)[0] for _ in range(4)] == [200] * 4
        # b fails its health check: a non-2xx status marks it unhealthy (after... at once).
        b.set_health(503)
        wait_flags(get, "web", {a.port: "healthy", b.port: "/failed_active_hc"})
        seen = {request(listen, "/who")[1] for _ in range(6)}
        assert all(f'"port": {a.port}'.encode() in s for s in seen)
        out["b_failed"] = get("/clusters")
        # Three 5xx in a row from a: consecutive_5xx ejects it.
        statuses = [request(listen, "/status/500")[0] for _ in range(3)]
        assert statuses == [500] * 3

        def stats() -> dict[str, Any]:
            return dict(proc.stats())

        wait_for(lambda: stats().get("cluster.web.outlier_detection.ejections_enforced_total")
                 == 1, 10, what="an ejection")
        out["ejected_stats"] = stats()
        # a's next passing health check un-ejects it (successful_active_health_check_...).
        wait_for(lambda: stats()["cluster.web.outlier_detection.ejections_active"] == 0, 10,
                 what="un-ejection")
        b.set_health(200)
        wait_flags(get, "web", {a.port: "healthy", b.port: "healthy"})
        out["end_stats"] = stats()
        out["end"] = get("/clusters")
        return out
    finally:
        a.kill()
        b.kill()


def comparable_lines(text: str) -> list[str]:
    """``/clusters`` lines with host ports replaced by their role and traffic counters left
    out (the same failures, different port numbers)."""
    lines = []
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] in HOST_COUNTERS:
            continue
        lines.append(line)
    return lines


@pytest.mark.timeout(180)
def test_health_checks_outlier_and_breakers_match_envoy(
        proxy_process: Callable[[str, str, int], EnvoiProcess | EnvoyProcess]) -> None:
    envoy = run("envoy", proxy_process)
    envoi = run("envoi", proxy_process)

    def ports_out(text: str) -> dict[str, list[str]]:
        """Per cluster (Envoy lists clusters in no set order), its lines in order."""
        out: dict[str, list[str]] = {}
        for line in comparable_lines(text):
            parts = line.split("::")
            if len(parts) == 4 and ":" in parts[1]:
                parts[1] = "HOST"
            out.setdefault(parts[0], []).append("::".join(parts))
        return out

    for phase in ("start", "b_failed", "end"):
        assert ports_out(envoi[phase]) == ports_out(envoy[phase]), phase
        # Per cluster, the flags in host order.
        for cluster in ("web", "tcp_checked"):
            assert list(host_flags(envoi[phase], cluster).values()) == \
                list(host_flags(envoy[phase], cluster).values())
    for when in ("ejected_stats", "end_stats"):
        ours = {k: v for k, v in envoi[when].items() if any(w in k for w in WATCHED)}
        theirs = {k: v for k, v in envoy[when].items() if any(w in k for w in WATCHED)}
        assert sorted(ours) == sorted(theirs), when
        diffs = {k: (ours[k], theirs[k]) for k in ours
                 if not k.endswith(TIMED) and ours[k] != theirs[k]}
        # Both counted one enforced consecutive_5xx ejection; a's checks kept passing.
        assert diffs == {}, (when, diffs)
    for k in TIMED[:4]:
        for c in ("web", "tcp_checked"):
            name = f"cluster.{c}.{k}"
            assert (envoi["end_stats"][name] > 0) == (envoy["end_stats"][name] > 0), name
