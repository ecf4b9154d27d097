"""tcp_proxy to an upstream that refuses, through the real Envoy 1.39.3 and envoi with the same
config: the cluster's stats and ``/clusters`` host counters must agree. Envoy counts each
attempt as a connection (``upstream_cx_total``, destroyed remotely) and each proxied connection
as a pending request that failed (``upstream_rq_pending_failure_eject``); ``upstream_rq_total``
only counts requests that got a connection."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import free_port, wait_for

CONFIG = """
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: echo
          max_connect_attempts: 2
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {dead}}}}}}}
"""


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_refused_tcp_upstream_counted_as_envoy(
        kind: str, proxy_process: Callable[[str, str, int], Any]) -> None:
    admin, port, dead = free_port(), free_port(), free_port()
    proc = proxy_process(kind, CONFIG.format(admin=admin, port=port, dead=dead), admin)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"x")
            with contextlib.suppress(ConnectionResetError):  # Envoy resets; envoi closes
                assert s.recv(10) == b""
    wait_for(lambda: proc.stats().get("tcp.t.downstream_cx_destroy", 0) == 3
             or proc.stats().get("cluster.echo.upstream_cx_connect_attempts_exceeded") == 3,
             10, what="three failed connections")
    st = {k: v for k, v in proc.stats().items()
          if k.startswith("cluster.echo.") and v and "_ms" not in k}
    assert st == {
        "cluster.echo.default.total_match_count": 1, "cluster.echo.membership_change": 1,
        "cluster.echo.membership_healthy": 1, "cluster.echo.membership_total": 1,
        "cluster.echo.upstream_cx_connect_attempts_exceeded": 3,
        "cluster.echo.upstream_cx_connect_fail": 6, "cluster.echo.upstream_cx_destroy": 6,
        "cluster.echo.upstream_cx_destroy_remote": 6, "cluster.echo.upstream_cx_total": 6,
        "cluster.echo.upstream_rq_pending_failure_eject": 6,
        "cluster.echo.upstream_rq_pending_total": 6}
    text = proc.get("/clusters")
    text = text if isinstance(text, str) else text[1]
    counters = {p[2]: p[3] for p in (ln.split("::") for ln in text.splitlines())
                if len(p) == 4 and p[0] == "echo" and p[2].startswith(("cx_", "rq_"))}
    assert counters == {"cx_active": "0", "cx_connect_fail": "6", "cx_total": "6",
                        "rq_active": "0", "rq_error": "0", "rq_pending_active": "0",
                        "rq_success": "0", "rq_timeout": "0", "rq_total": "0"}
