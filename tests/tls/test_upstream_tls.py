"""Upstream TLS (a cluster's ``UpstreamTlsContext``) through the real Envoy and envoi: SNI, CA
validation, ALPN, a client certificate, and the refusals - an untrusted, an expired and a
wrongly named upstream certificate answer 503 and are counted."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoi.testing import free_port
from tls_certs import Pki
from tls_configs import upstream_routing, upstream_tls
from tls_peers import TlsEchoServer

Proxy = Callable[[str, str, int], Any]


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def upstreams(pki: Pki) -> Iterator[dict[str, TlsEchoServer]]:
    servers = {
        "good": TlsEchoServer(pki.servers["upstream.local"].pair, alpn=["h2", "http/1.1"]),
        "untrusted": TlsEchoServer(pki.untrusted_server.pair),
        "expired": TlsEchoServer(pki.expired_server.pair),
        "mtls": TlsEchoServer(pki.servers["upstream.local"].pair, client_ca=str(pki.ca.pem)),
    }
    with contextlib.ExitStack() as stack:
        for s in servers.values():
            stack.enter_context(s)
        yield servers


def _run(kind: str, proxy_process: Proxy, pki: Pki,
         upstreams: dict[str, TlsEchoServer]) -> dict[str, Any]:
    ca = str(pki.ca.pem)
    clusters = {
        "good": (upstreams["good"].port,
                 upstream_tls(sni="upstream.local", ca=ca, alpn='"http/1.1"')),
        "nosni": (upstreams["good"].port, upstream_tls(ca=ca)),
        "untrusted": (upstreams["untrusted"].port, upstream_tls(sni="upstream.local", ca=ca)),
        "expired": (upstreams["expired"].port, upstream_tls(sni="upstream.local", ca=ca)),
        "wrongname": (upstreams["good"].port,
                      upstream_tls(sni="upstream.local", ca=ca, san_dns="other.local")),
        "mtls": (upstreams["mtls"].port,
                 upstream_tls(sni="upstream.local", ca=ca, cert=pki.client)),
        "nocert": (upstreams["mtls"].port, upstream_tls(sni="upstream.local", ca=ca)),
        "anycert": (upstreams["untrusted"].port, upstream_tls(sni="upstream.local")),
    }
    admin_port, port = free_port(), free_port()
    proc = proxy_process(kind, upstream_routing(admin_port, port, clusters), admin_port)
    answers = {name: _get(port, f"/{name}") for name in clusters}
    stats = proc.stats()
    return {"answers": answers, "stats": stats}


def test_upstream_tls_envoy_and_envoi(proxy_process: Proxy, pki: Pki,
                                      upstreams: dict[str, TlsEchoServer]) -> None:
    runs = {kind: _run(kind, proxy_process, pki, upstreams) for kind in ("envoy", "envoi")}
    for kind, run in runs.items():
        answers, stats = run["answers"], run["stats"]
        status, body = answers["good"]
        assert status == 200, kind
        assert (body["sni"], body["alpn"], body["version"]) == (
            "upstream.local", "http/1.1", "TLSv1.2"), kind
        # No SNI configured, none sent; no ALPN configured: the HTTP/1 pool offers http/1.1.
        status, body = answers["nosni"]
        assert status == 200 and body["sni"] is None and body["alpn"] == "http/1.1", kind
        status, body = answers["mtls"]
        assert status == 200 and body["client_cn"] == "client.local", kind
        assert answers["anycert"][0] == 200, kind  # no validation context: any certificate
        for name in ("untrusted", "expired", "wrongname", "nocert"):
            assert answers[name][0] == 503, (kind, name)
        for name in ("good", "nosni", "mtls", "anycert"):
            assert stats[f"cluster.{name}.ssl.handshake"] == 1, (kind, name)
            assert stats[f"cluster.{name}.ssl.versions.TLSv1.2"] == 1, (kind, name)
            assert stats[f"cluster.{name}.upstream_cx_connect_fail"] == 0, (kind, name)
        for name, failure in (("untrusted", "fail_verify_error"),
                              ("expired", "fail_verify_error"),
                              ("wrongname", "fail_verify_san"),
                              ("nocert", "connection_error")):
            ssl_stats = {k.split(".ssl.", 1)[1]: v for k, v in stats.items()
                         if k.startswith(f"cluster.{name}.ssl.") and isinstance(v, int)
                         and "certificate." not in k}
            assert {k: v for k, v in ssl_stats.items() if v} == {failure: 1}, (kind, name)
            assert stats[f"cluster.{name}.upstream_cx_connect_fail"] == 1, (kind, name)
    # Same answers (the upstream reports the same SNI, ALPN, version and client certificate).
    assert runs["envoi"]["answers"] == runs["envoy"]["answers"]

    def ssl_names(kind: str) -> set[str]:
        return {k.split(".ssl.", 1)[1] for k in runs[kind]["stats"]
                if k.startswith("cluster.good.ssl.")}

    # The same ssl.* names, but for what Python's ssl cannot tell: the ECDHE group and the
    # peer's signature algorithm (a documented difference).
    unknowable = {n for n in ssl_names("envoy") if n.startswith(("curves.", "sigalgs."))}
    assert unknowable == {"curves.X25519", "sigalgs.ecdsa_secp256r1_sha256"}
    assert ssl_names("envoi") == ssl_names("envoy") - unknowable
    for name in ("downstream_context_secrets_not_ready", "ssl_context_update_by_sds",
                 "upstream_context_secrets_not_ready"):
        assert f"cluster.good.client_ssl_socket_factory.{name}" in runs["envoi"]["stats"]


def test_health_checks_use_the_cluster_tls(envoi_process: Callable[..., Any], pki: Pki,
                                           upstreams: dict[str, TlsEchoServer]) -> None:
    """Health checks go through the cluster's transport socket, as in Envoy: a check of a TLS
    upstream passes through TLS, and one whose certificate is untrusted fails, counted."""
    ca = str(pki.ca.pem)
    hc = """\
    health_checks:
    - timeout: 1s
      interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /health}
"""
    clusters = {
        "good": (upstreams["good"].port, upstream_tls(sni="upstream.local", ca=ca) + hc),
        "untrusted": (upstreams["untrusted"].port,
                      upstream_tls(sni="upstream.local", ca=ca) + hc),
    }
    admin_port, port = free_port(), free_port()
    proc = envoi_process(upstream_routing(admin_port, port, clusters), admin_port)
    proc.wait_stat("cluster.good.health_check.success", lambda v: v >= 1)
    proc.wait_stat("cluster.untrusted.health_check.network_failure", lambda v: v >= 1)
    stats = proc.stats()
    assert stats["cluster.good.ssl.handshake"] >= 1
    assert stats["cluster.untrusted.ssl.fail_verify_error"] >= 1
    assert stats["cluster.untrusted.health_check.success"] == 0
