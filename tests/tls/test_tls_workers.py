"""TLS listeners with worker processes: every worker accepts, inspects and terminates TLS on
its own socket; the admin shows the ssl.* stats summed over the workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoi.testing import free_port, wait_for
from tls_certs import Pki
from tls_configs import TLS_INSPECTOR, admin, cluster, downstream_tls, tcp_proxy
from tls_peers import HttpEchoServer, body_json, http_get, tls_client_context, tls_exchange


def test_tls_with_two_workers(envoi_process: Callable[..., Any], pki: Pki,
                              echoes: list[HttpEchoServer]) -> None:
    admin_port, port = free_port(), free_port()
    tls = downstream_tls(pki.servers["a.local"])
    proc = envoi_process(f"""{admin(admin_port)}\
  listeners:
  - name: edge
    stat_prefix: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters:
{TLS_INSPECTOR}\
    filter_chains:
    - filter_chain_match: {{server_names: [a.local]}}
{tls}\
{tcp_proxy("t", "echo")}\
  clusters:
{cluster("echo", echoes[0].port)}""", admin_port, args=["--concurrency", "2"])
    ctx = tls_client_context(str(pki.ca.pem))
    for i in range(12):
        assert body_json(tls_exchange(port, "a.local", http_get(f"/{i}"), ctx))["path"] == f"/{i}"
    wait_for(lambda: proc.stats().get("listener.edge.ssl.handshake") == 12, 15,
             what="12 handshakes summed over the workers")
    stats = proc.stats()
    assert stats["tls_inspector.sni_found"] == 12
    assert stats["listener.edge.ssl.versions.TLSv1.3"] == 12
