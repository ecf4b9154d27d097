"""STRICT_DNS and LOGICAL_DNS clusters resolve names (localhost here) and refresh them."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from envoi.testing import EnvoiProcess, free_port


def config(admin: int, port: int, up: int, kind: str, family: str = "V4_ONLY") -> str:
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: dns
          cluster: named
  clusters:
  - name: named
    type: {kind}
    dns_lookup_family: {family}
    dns_refresh_rate: 0.2s
    lb_policy: LEAST_REQUEST
    load_assignment:
      cluster_name: named
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: localhost, port_value: {up}}}}}}}
"""


@pytest.mark.parametrize("kind", ["STRICT_DNS", "LOGICAL_DNS"])
def test_dns_cluster_resolves_and_refreshes(envoi_process: Callable[..., EnvoiProcess],
                                            peer: Callable[[str], int], kind: str) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(config(admin, port, up, kind), admin)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"dns")
        assert s.recv(3) == b"dns"
    clusters = proc.get("/clusters")[1]
    assert f"named::127.0.0.1:{up}::hostname::localhost" in clusters
    assert f"named::127.0.0.1:{up}::cx_total::1" in clusters
    # Refreshed every 0.2 s; an unchanged answer does not rebuild the host set.
    proc.wait_stat("cluster.named.update_success", lambda v: v >= 3)
    stats = proc.stats()
    assert stats["cluster.named.update_no_rebuild"] >= 2
    assert stats["cluster.named.membership_total"] == 1
    assert stats["cluster.named.update_failure"] == 0


def test_unresolvable_name_is_counted_not_fatal(envoi_process: Callable[..., EnvoiProcess],
                                                peer: Callable[[str], int]) -> None:
    admin, port = free_port(), free_port()
    text = config(admin, port, 9, "STRICT_DNS").replace("address: localhost",
                                                        "address: no-such-host.invalid")
    proc = envoi_process(text, admin)
    stats = proc.stats()
    assert stats["cluster.named.update_failure"] >= 1
    assert stats["cluster.named.membership_total"] == 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(1) == b""  # no healthy upstream: closed
    proc.wait_stat("cluster.named.upstream_cx_none_healthy", 1)


def test_a_name_that_cannot_be_resolved_never_counts_success(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    admin, port = free_port(), free_port()
    text = config(admin, port, 9, "STRICT_DNS").replace("address: localhost",
                                                        "address: no-such-host.invalid")
    proc = envoi_process(text, admin)
    proc.wait_stat("cluster.named.update_failure", lambda v: v >= 2)
    assert proc.stats()["cluster.named.update_success"] == 0
