"""Every stat Envoy 1.39.3 shows for the HTTP router config, after the same traffic through it and
through envoi: envoi must show the same name with the same value, or the name is listed below
as a difference (with the reason; the README's list of differences says the same).

The traffic covers how a connection ends, since Envoy counts each way differently: a keep-alive
client that closes (``downstream_cx_destroy_remote``), ``connection: close`` (``_local``), a
client gone in the middle of a request head (a request, reset: ``downstream_rq_rx_reset``,
``_destroy_remote_active_rq``), a protocol error answered 400 that the client then closes, a
route redirect (no ``rq_redirect``: that counts internal redirects), a connection that never
sends a byte (no ``downstream_cx_http1_total``). (A request half-closed by its client is left
out: Envoy resets it at the FIN; envoi answers it if the answer comes before it reads the FIN.)"""

from __future__ import annotations

import fnmatch
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import ROUTER_YAML, EchoServer
from scripted_upstream import read_reply

# Names Envoy shows that envoi does not have, and why.
ABSENT = {
    "dns.cares.*": "envoi resolves with the system resolver (getaddrinfo), not c-ares",
    "envoy.overload_actions.*": "no overload manager",
    "filesystem.*": "access-log files are written by the access logger, not Envoy's "
                    "filesystem flusher",
    "http.async-client.*": "no async HTTP client",
    "*watchdog_miss": "no watchdog", "*watchdog_mega_miss": "no watchdog",
    "server.stats_recent_lookups": "the stats store has no lookup recorder",
    "thread_local_cluster_manager.*": "no thread-local cluster managers (workers are processes)",
}
# Names both show whose values differ, and why.
VALUE = {
    "server.memory_*": "the Python process's memory, not tcmalloc's",
    "server.uptime": "seconds since start: differs by the start times",
    "server.version": "Envoy's build SHA as a number; envoi reports 0",
    "runtime.override_dir_not_exists": "no runtime override directories are looked up",
    "*.upstream_cx_rx_bytes_buffered": "Envoy leaves the read buffer of an idle pooled "
                                       "connection counted; envoi's is 0 when nothing is held",
    "http.admin.downstream_cx_rx_bytes_buffered": "as above, for the admin's connection",
    "http.ingress_http.downstream_cx_tx_bytes_total": "the x-envoy-upstream-service-time "
                                                      "values (milliseconds) differ in length",
    "http.admin.downstream_cx_tx_bytes_total": "the admin's pages are not byte-identical",
    "http.admin.downstream_rq_*": "the readiness polls before the test differ in number",
    "http.admin.downstream_cx_*total": "as above", "http.admin.downstream_cx_destroy*": "as above",
    "listener.admin.*": "as above",
}
REQUESTS = ["/exact", "/v1/foo", "/items/42", "/items/4x", "/any?backend=b", "/flaky",
            "/old/x", "/secure/x", "/direct", "/nothing/here", "/any"]


def config(port: int, admin: int, a: int, b: int) -> str:
    s = ROUTER_YAML.replace("18200", str(port)).replace("18002", str(admin))
    return s.replace("18081", str(a)).replace("18082", str(b)).replace("/dev/stdout",
                                                                      "/dev/null")


def closed_by_server(s: socket.socket) -> None:
    s.settimeout(5)
    while s.recv(65536):
        pass


def traffic(port: int) -> None:
    def conn() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    with conn() as s:  # keep-alive, then the client closes
        for path in REQUESTS:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: api.local\r\n\r\n".encode())
            read_reply(s)
    with conn() as s:  # connection: close: the proxy closes
        s.sendall(b"GET /exact HTTP/1.1\r\nhost: api.local\r\nconnection: close\r\n\r\n")
        read_reply(s)
        closed_by_server(s)
    with conn() as s:  # gone in the middle of the head
        s.sendall(b"GET /exact HTTP/1.1\r\nhost: api")
        time.sleep(0.2)
    with conn() as s:  # a protocol error: 400, then the client closes
        s.sendall(b"GARBAGE\r\n\r\n")
        assert read_reply(s).status == 400
    with conn():  # never a byte
        time.sleep(0.2)


def matches(name: str, patterns: dict[str, str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@pytest.fixture(scope="module")
def echo() -> Any:
    with EchoServer() as a, EchoServer() as b:
        yield a, b


def run(kind: str, echo: Any, proxy_process: Callable[..., Any]) -> dict[str, Any]:
    a, b = echo
    port, admin = free_port(), free_port()
    proc = proxy_process(kind, config(port, admin, a.port, b.port), admin)
    traffic(port)
    wait_for(lambda: proc.stats().get("http.ingress_http.downstream_cx_active") == 0, 10,
             what="every connection closed")
    stats = proc.stats()
    return {k.replace(f"127.0.0.1_{port}", "L"): v for k, v in stats.items()}


def test_every_envoy_stat_with_envoys_value(echo: Any,
                                            proxy_process: Callable[..., Any]) -> None:
    envoy = run("envoy", echo, proxy_process)
    envoi = run("envoi", echo, proxy_process)
    missing = sorted(k for k in envoy if k not in envoi and not matches(k, ABSENT))
    differ = sorted(f"{k}: envoy {envoy[k]}, envoi {envoi[k]}" for k in envoy
                    if k in envoi and envoy[k] != envoi[k] and not matches(k, VALUE))
    assert not missing and not differ, "\n".join(
        ["missing:", *missing, "different values:", *differ])
    # The listed differences are real (a stale entry would hide nothing and mislead).
    for pattern in ABSENT:
        assert any(fnmatch.fnmatchcase(k, pattern) for k in envoy), pattern
        assert not any(fnmatch.fnmatchcase(k, pattern) for k in envoi), pattern
    for pattern in VALUE:
        assert any(fnmatch.fnmatchcase(k, pattern) for k in envoy), pattern
    # What the traffic was meant to exercise, spelled out.
    h = "http.ingress_http."
    assert {k: envoi[h + k] for k in (
        "downstream_cx_destroy_remote", "downstream_cx_destroy_local",
        "downstream_cx_destroy_remote_active_rq", "downstream_rq_rx_reset",
        "downstream_cx_http1_total", "downstream_cx_total", "rq_redirect")} == {
        "downstream_cx_destroy_remote": 4, "downstream_cx_destroy_local": 1,
        "downstream_cx_destroy_remote_active_rq": 1, "downstream_rq_rx_reset": 2,
        "downstream_cx_http1_total": 4, "downstream_cx_total": 5, "rq_redirect": 0}
    assert envoi["cluster.echo_b.max_host_weight"] == 1  # STRICT_DNS
    assert envoi["cluster.echo_a.max_host_weight"] == 0  # STATIC
