"""Listeners on IPv6 and filter-chain selection on real connections."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from envoi.testing import EnvoiProcess, free_port


def _chain(cluster: str, match: str = "") -> str:
    m = f"      filter_chain_match: {match}\n" if match else ""
    return f"""    - name: chain_{cluster}
{m}      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {cluster}
          cluster: {cluster}
"""


def _cluster(name: str, port: int) -> str:
    return f"""  - name: {name}
    type: STATIC
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"""


def test_ipv6_listener(envoi_process: Callable[..., EnvoiProcess],
                       peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port("::1")
    proc = envoi_process(f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: v6
    address: {{socket_address: {{address: "::1", port_value: {port}}}}}
    filter_chains:
{_chain("a")}  clusters:
{_cluster("a", up)}""", admin)
    with socket.create_connection(("::1", port), timeout=10) as s:
        s.sendall(b"six")
        assert s.recv(3) == b"six"
    proc.wait_stat(f"listener.[__1]_{port}.downstream_cx_total", 1)
    assert proc.get("/listeners")[1] == f"v6::[::1]:{port}\n"


def test_filter_chain_match_by_source_and_no_match(
        envoi_process: Callable[..., EnvoiProcess], peer: Callable[[str], int]) -> None:
    a, b = peer("echo"), peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: l
    stat_prefix: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
{_chain("a", "{source_prefix_ranges: [{address_prefix: 127.0.0.1, prefix_len: 32}]}")}\
{_chain("b", "{source_prefix_ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]}")}\
{_chain("c", f"{{destination_port: {port + 1}}}")}  clusters:
{_cluster("a", a)}{_cluster("b", b)}{_cluster("c", b)}""", admin)
    for src in ("127.0.0.1", "127.0.0.2"):
        s = socket.socket()
        s.bind((src, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        s.close()
    proc.wait_stat("tcp.a.downstream_cx_total", 1)
    proc.wait_stat("tcp.b.downstream_cx_total", 1)
    assert proc.stats()["tcp.c.downstream_cx_total"] == 0


def test_no_filter_chain_match_closes_and_counts(
        envoi_process: Callable[..., EnvoiProcess], peer: Callable[[str], int]) -> None:
    a = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: l
    stat_prefix: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
{_chain("a", "{source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}")}\
  clusters:
{_cluster("a", a)}""", admin)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, \
            contextlib.suppress(ConnectionResetError):
        assert s.recv(1) == b""
    assert proc.wait_stat("listener.l.no_filter_chain_match", 1) == 1
