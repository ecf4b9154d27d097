"""Bad input on TLS listeners, through the real Envoy and envoi: garbage, a ClientHello cut in
half (then closed, or never finished), a client that never speaks - each counted as Envoy counts
it, bounded by the listener-filter and handshake timeouts, with memory bounded and good
connections served all along."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from test_client_hello import client_hello
from tls_certs import Pki
from tls_configs import TLS_INSPECTOR, admin, cluster, downstream_tls, tcp_proxy
from tls_peers import HttpEchoServer, body_json, http_get, tls_client_context, tls_exchange

Proxy = Callable[[str, str, int], Any]
HELLO = client_hello("a.local")


def bad_input_config(admin_port: int, inspected: int, tls_only: int, pki: Pki,
                     echo: int) -> str:
    tls = downstream_tls(pki.servers["a.local"])
    return f"""{admin(admin_port)}\
  listeners:
  - name: inspected
    stat_prefix: inspected
    address: {{socket_address: {{address: 127.0.0.1, port_value: {inspected}}}}}
    listener_filters:
{TLS_INSPECTOR}\
    listener_filters_timeout: 3s
    filter_chains:
    - filter_chain_match: {{transport_protocol: tls}}
{tls}\
{tcp_proxy("insp_tls", "echo")}\
    - filter_chain_match: {{transport_protocol: raw_buffer}}
{tcp_proxy("insp_raw", "echo")}\
  - name: tls_only
    stat_prefix: tls_only
    address: {{socket_address: {{address: 127.0.0.1, port_value: {tls_only}}}}}
    filter_chains:
    - transport_socket_connect_timeout: 3s
{tls}\
{tcp_proxy("only", "echo")}\
  clusters:
{cluster("echo", echo)}"""


def _send(port: int, data: bytes, *, close_after: float = 0.2) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    if close_after:
        time.sleep(close_after)
        s.close()
    return s


def _good(port: int, ca: str) -> None:
    body = body_json(tls_exchange(port, "a.local", http_get("/ok"), tls_client_context(ca)))
    assert body["path"] == "/ok"


def _closed_by_peer(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _listener_stats(stats: dict[str, Any]) -> dict[str, int]:
    keys = ("ssl.connection_error", "ssl.handshake", "downstream_pre_cx_timeout",
            "downstream_listener_filter_remote_close", "downstream_listener_filter_error",
            "downstream_cx_transport_socket_connect_timeout", "downstream_pre_cx_active",
            "downstream_cx_active", "no_filter_chain_match")
    return {f"{name}.{k}": stats.get(f"listener.{name}.{k}", 0)
            for name in ("inspected", "tls_only") for k in keys}


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_bad_clients_are_counted_and_bounded(kind: str, proxy_process: Proxy, pki: Pki,
                                             echoes: list[HttpEchoServer]) -> None:
    admin_port, inspected, tls_only = free_port(), free_port(), free_port()
    proc = proxy_process(kind, bad_input_config(admin_port, inspected, tls_only, pki,
                                                echoes[0].port), admin_port)
    ca = str(pki.ca.pem)
    _send(tls_only, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # plaintext to a TLS-only listener
    _send(tls_only, b"\x16\x03\x01\x00\x05hello")  # a record that is no handshake
    _send(inspected, HELLO[:len(HELLO) // 2])  # half a ClientHello, then FIN
    _send(tls_only, HELLO[:len(HELLO) // 2])
    _send(inspected, b"")  # connects and leaves
    stalled = [_send(inspected, HELLO[:40], close_after=0),
               _send(tls_only, HELLO[:40], close_after=0),
               _send(inspected, b"", close_after=0)]
    _good(inspected, ca)
    _good(tls_only, ca)
    # Both stalled listeners give up after their 3 s timeouts (long enough that a good client
    # and one that leaves after 0.2 s beat them on a loaded box); the good client was served.
    for s in stalled:
        assert _closed_by_peer(s, 20)
        s.close()
    want = {
        "inspected.ssl.connection_error": 0, "inspected.ssl.handshake": 1,
        "inspected.downstream_pre_cx_timeout": 2,
        "inspected.downstream_listener_filter_remote_close": 2,
        "inspected.downstream_listener_filter_error": 0,
        "inspected.downstream_cx_transport_socket_connect_timeout": 0,
        "inspected.downstream_pre_cx_active": 0, "inspected.downstream_cx_active": 0,
        "inspected.no_filter_chain_match": 0,
        "tls_only.ssl.connection_error": 2, "tls_only.ssl.handshake": 1,
        "tls_only.downstream_pre_cx_timeout": 0,
        "tls_only.downstream_listener_filter_remote_close": 0,
        "tls_only.downstream_listener_filter_error": 0,
        "tls_only.downstream_cx_transport_socket_connect_timeout": 1,
        "tls_only.downstream_pre_cx_active": 0, "tls_only.downstream_cx_active": 0,
        "tls_only.no_filter_chain_match": 0,
    }
    wait_for(lambda: _listener_stats(proc.stats()) == want, 20,
             what=f"{want} (last {_listener_stats(proc.stats())})")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_bad_clients_keep_memory_flat_and_good_ones_served(
        envoi_process: Callable[..., Any], pki: Pki, echoes: list[HttpEchoServer]) -> None:
    admin_port, inspected, tls_only = free_port(), free_port(), free_port()
    proc = envoi_process(bad_input_config(admin_port, inspected, tls_only, pki,
                                          echoes[0].port), admin_port)
    ca = str(pki.ca.pem)
    _good(inspected, ca)
    _good(tls_only, ca)
    before = _rss_kib(proc.proc.pid)
    held: list[socket.socket] = []
    try:
        for i in range(150):
            held.append(_send(inspected, HELLO[: 20 + i % 100], close_after=0))
            held.append(_send(tls_only, HELLO[: 20 + i % 100], close_after=0))
        for _ in range(50):
            _send(tls_only, b"\x16\x03\x01\x40\x00" + b"\x00" * 2000, close_after=0.001)
        # While 300 half-open handshakes wait, good clients are served.
        for _ in range(5):
            _good(inspected, ca)
            _good(tls_only, ca)
        grown = _rss_kib(proc.proc.pid) - before
        assert grown < 40 * 1024, f"RSS grew by {grown} KiB"
        stats = proc.stats()
        assert stats["listener.inspected.downstream_pre_cx_active"] <= 150
    finally:
        for s in held:
            s.close()
    wait_for(lambda: proc.stats()["listener.inspected.downstream_pre_cx_active"] == 0 and
             proc.stats()["listener.tls_only.downstream_cx_active"] == 0, 30,
             what="every bad connection gone")
    _good(tls_only, ca)
