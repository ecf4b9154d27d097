"""``envoy.filters.listener.http_inspector`` and ``application_protocols`` matching on a
plaintext listener, through the real Envoy and envoi: HTTP/1.1, HTTP/1.0 and the HTTP/2
preface pick their chains; anything else takes the chain without a protocol."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from envoi.testing import free_port, wait_for
from tls_configs import admin, cluster, tcp_proxy
from tls_peers import HttpEchoServer

Proxy = Callable[[str, str, int], Any]
HTTP_INSPECTOR_TYPE = ("type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3."
                       "HttpInspector")
WANTED = ("tcp.h1.downstream_cx_total", "tcp.h2c.downstream_cx_total",
          "tcp.other.downstream_cx_total")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def config(admin_port: int, port: int, echo: int) -> str:
    return f"""{admin(admin_port)}\
  listeners:
  - name: sniff
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config:
        "@type": {HTTP_INSPECTOR_TYPE}
    filter_chains:
    - filter_chain_match: {{application_protocols: ["h2c"]}}
{tcp_proxy("h2c", "echo")}\
    - filter_chain_match: {{application_protocols: ["http/1.1", "http/1.0"]}}
{tcp_proxy("h1", "echo")}\
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: other
          cluster: echo
  clusters:
{cluster("echo", echo)}"""


def _talk(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the upstream closes. No half-close: Envoy drops a
    connection whose FIN arrives while its listener filters run, data or not."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_http_inspector_envoy_and_envoi(proxy_process: Proxy,
                                        echoes: list[HttpEchoServer]) -> None:
    results = {}
    for kind in ("envoy", "envoi"):
        admin_port, port = free_port(), free_port()
        proc = proxy_process(kind, config(admin_port, port, echoes[0].port), admin_port)
        answers = [
            _talk(port, b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")[:15],
            _talk(port, b"GET /b HTTP/1.0\r\n\r\n")[:15],
            _talk(port, PREFACE)[:12],
            _talk(port, b"\x00\x01\x02 not http\r\n\r\n")[:12],
        ]
        wait_for(lambda p=proc: sum(p.stats().get(k, 0) for k in WANTED) == 4, 10,
                 what="four proxied connections")
        stats = proc.stats()
        results[kind] = (answers, {k: v for k, v in stats.items()
                                   if k.startswith("http_inspector.") or k in WANTED})
    assert results["envoi"] == results["envoy"]
    answers, stats = results["envoy"]
    assert answers[0] == answers[1] == b"HTTP/1.1 200 OK"
    assert stats["tcp.h1.downstream_cx_total"] == 2
    assert stats["tcp.h2c.downstream_cx_total"] == 1
    assert stats["tcp.other.downstream_cx_total"] == 1
    assert stats["http_inspector.http11_found"] == 1
    assert stats["http_inspector.http10_found"] == 1
    assert stats["http_inspector.http2_found"] == 1
    assert stats["http_inspector.http_not_found"] == 1
