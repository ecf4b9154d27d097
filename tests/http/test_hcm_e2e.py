"""envoi as a real process, the router config from the Envoy reference, real clients."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from http_peers import EchoServer, router_config


@pytest.fixture
def proxy(envoi_process: Callable[..., EnvoiProcess]) -> Iterator[tuple[EnvoiProcess, int]]:
    with EchoServer() as a, EchoServer() as b:
        port, admin = free_port(), free_port()
        proc = envoi_process(router_config(port, admin, a.port, b.port), admin)
        yield proc, port


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def test_router_behaviour(proxy: tuple[EnvoiProcess, int]) -> None:
    proc, port = proxy
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers={"host": "api.local"}) as c:
        r = c.get("/exact")
        assert r.status_code == 200 and r.headers["server"] == "envoy"
        assert "date" in r.headers and "x-envoy-upstream-service-time" in r.headers
        assert r.headers["x-served-by"] == "envoy"
        seen = r.json()["headers"]
        for h in ("x-forwarded-for", "x-forwarded-proto", "x-request-id",
                  "x-envoy-expected-rq-timeout-ms", "x-envoi-rc", "x-envoy-external-address"):
            assert h in seen, h
        assert seen["x-envoy-expected-rq-timeout-ms"] == "15000"
        r = c.get("/v1/foo")
        j = r.json()
        assert j["path"] == "/rewritten/foo" and j["headers"]["host"] == "upstream.example"
        assert j["headers"]["x-envoy-original-path"] == "/v1/foo"
        r = c.get("/old/x")
        assert r.status_code == 301 and r.headers["location"] == "http://api.local/new"
        r = c.get("/secure/x")
        assert r.headers["location"] == "https://api.local/secure/x"
        r = c.get("/direct")
        assert r.text == "hello from envoy\n" and r.headers["content-type"] == "text/plain"
        r = c.get("/flaky")
        assert r.status_code == 503
        r = c.get("/", headers={"x-forwarded-for": "10.9.9.9"})
        assert r.json()["headers"]["x-forwarded-for"].startswith("10.9.9.9,")
        assert r.json()["headers"]["x-route"] == "catch-all"
        r = c.get("/", headers={"host": "other.local"})
        assert r.status_code == 404 and r.content == b""
        ports = {c.get("/split").json()["port"] for _ in range(30)}
        assert len(ports) == 2
        r = c.post("/exact", content=b"x" * 100_000)
        assert r.json()["body_len"] == 100_000
    st = proc.stats()
    assert st["http.ingress_http.rq_direct_response"] == 3
    assert st["http.ingress_http.rq_redirect"] == 0  # Envoy: internal redirects only
    assert st["http.ingress_http.no_route"] == 1
    assert st["http.ingress_http.downstream_rq_3xx"] == 2
    assert st["vhost.api.route.flaky.upstream_rq_retry"] == 2
    assert st["vhost.api.route.flaky.upstream_rq_retry_limit_exceeded"] == 1
    assert st["vhost.api.route.flaky.upstream_rq_503"] == 1
    assert st["cluster.echo_a.retry.upstream_rq_503"] == 2
    assert st["cluster.echo_a.upstream_rq_retry"] == 2
    assert st["vhost.api.vcluster.vc_get.upstream_rq_200"] >= 1
    listener = [k for k in st if k.startswith("listener.") and k.endswith(
        ".http.ingress_http.downstream_rq_2xx")]
    assert listener and st[listener[0]] == st["http.ingress_http.downstream_rq_2xx"]


def test_pipelining_in_order(proxy: tuple[EnvoiProcess, int]) -> None:
    _, port = proxy
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: api.local\r\n\r\n" % i for i in range(5))
    out = raw(port, reqs + b"GET /last HTTP/1.1\r\nHost: api.local\r\nConnection: close\r\n\r\n")
    paths = [m.decode() for m in re.findall(rb'"path": "([^"]+)"', out)]
    assert paths == ["/p0", "/p1", "/p2", "/p3", "/p4", "/last"]


BAD = [
    ("cl_and_te", b"POST / HTTP/1.1\r\nHost: api.local\r\nContent-Length: 3\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("dup_cl", b"POST / HTTP/1.1\r\nHost: api.local\r\nContent-Length: 3\r\n"
               b"Content-Length: 4\r\n\r\nabcd", 400),
    ("bad_chunk", b"POST / HTTP/1.1\r\nHost: api.local\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"zz\r\nabc\r\n0\r\n\r\n", 400),
    ("big_headers", b"GET / HTTP/1.1\r\nHost: api.local\r\nX-Big: " + b"a" * 70_000
                    + b"\r\n\r\n", 431),
    ("garbage", b"\x16\x03\x01garbage garbage\r\n\r\n", 400),
    ("bad_te", b"POST / HTTP/1.1\r\nHost: api.local\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
]


@pytest.mark.parametrize(("name", "data", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(proxy: tuple[EnvoiProcess, int], name: str, data: bytes, status: int) -> None:
    proc, port = proxy
    with socket.create_connection(("127.0.0.1", port)) as keep:  # an unaffected neighbour
        out = raw(port, data)
        assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
        assert b"connection: close" in out.lower()
        proc.wait_stat("http.ingress_http.downstream_cx_protocol_error", 1)
        keep.sendall(b"GET /exact HTTP/1.1\r\nHost: api.local\r\n\r\n")
        assert keep.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_http10_and_expect_continue(proxy: tuple[EnvoiProcess, int]) -> None:
    _, port = proxy
    assert raw(port, b"GET / HTTP/1.0\r\nHost: api.local\r\n\r\n").startswith(
        b"HTTP/1.1 426 Upgrade Required")
    out = subprocess.run(
        ["curl", "-sv", "-H", "Host: api.local", "-H", "Expect: 100-continue",
         "--data-binary", "x" * 2000, f"http://127.0.0.1:{port}/exact"],
        capture_output=True, timeout=20)
    assert b"HTTP/1.1 100 Continue" in out.stderr
    j = json.loads(out.stdout)
    assert j["body_len"] == 2000 and "expect" not in j["headers"]


def test_h2_preface_is_served(proxy: tuple[EnvoiProcess, int]) -> None:
    _, port = proxy
    out = raw(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    # codec_type AUTO serves HTTP/2 as Envoy does: our SETTINGS, then WINDOW_UPDATE, no GOAWAY
    assert out[3] == 0x04 and out[9 + 24 + 3] == 0x08


def test_upstream_down_is_503(envoi_process: Callable[..., EnvoiProcess]) -> None:
    port, admin, dead = free_port(), free_port(), free_port()
    proc = envoi_process(router_config(port, admin, dead, dead), admin)
    r = httpx.get(f"http://127.0.0.1:{port}/exact", headers={"host": "api.local"})
    assert r.status_code == 503
    assert r.text.startswith("upstream connect error or disconnect/reset before headers")
    assert proc.stats()["cluster.echo_a.upstream_cx_connect_fail"] >= 1
    wait_for(lambda: True)


def _unused(x: Any) -> None:
    pass
