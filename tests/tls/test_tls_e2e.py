"""Downstream TLS end to end, each test run through the real Envoy 1.39.3 and through envoi on
the same config: SNI routing of three names to three clusters (curl and httpx), the reference
``tls_sni.yaml`` with its stats, mutual TLS, and ``/certs``."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from envoi.testing import free_port, wait_for
from tls_certs import Pki
from tls_configs import (
    TLS_INSPECTOR,
    admin,
    cluster,
    downstream_tls,
    sni_routing,
    tcp_proxy,
    tls_sni_oracle,
)
from tls_peers import HttpEchoServer, body_json, http_get, tls_client_context, tls_exchange

Proxy = Callable[[str, str, int], Any]
KINDS = ["envoy", "envoi"]


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    curl = shutil.which("curl")
    assert curl, "curl is missing: run scripts/setup.sh --test"
    return subprocess.run([curl, "-sS", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=20)


def _listener_stats(stats: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``listener.<addr>.<prefix>*`` with the address taken out (ports differ per run)."""
    out = {}
    for name, value in stats.items():
        m = re.match(r"listener\.127\.0\.0\.1_\d+\.(.*)", name)
        if m and m.group(1).startswith(prefix):
            out[m.group(1)] = value
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_sni_routes_three_names_to_three_clusters(
        kind: str, proxy_process: Proxy, pki: Pki, echoes: list[HttpEchoServer]) -> None:
    admin_port, port = free_port(), free_port()
    proc = proxy_process(kind, sni_routing(admin_port, port, pki, [e.port for e in echoes]),
                         admin_port)
    for name, echo in zip(("a", "b", "c"), echoes, strict=True):
        host = f"{name}.local"
        r = _curl("--cacert", str(pki.ca.pem), "--resolve", f"{host}:{port}:127.0.0.1",
                  f"https://{host}:{port}/via-curl")
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["port"] == echo.port and body["path"] == "/via-curl"
        assert body["headers"]["x-forwarded-proto"] == "https"
    ctx = ssl.create_default_context(cafile=str(pki.ca.pem))
    for name, echo in zip(("c", "a", "b"), (echoes[2], echoes[0], echoes[1]), strict=True):
        # One client per name: a pooled connection keeps the SNI it was opened with.
        with httpx.Client(verify=ctx, timeout=10) as client:
            resp = client.get(f"https://127.0.0.1:{port}/via-httpx",
                              headers={"host": f"{name}.local"},
                              extensions={"sni_hostname": f"{name}.local"})
        assert resp.status_code == 200
        assert resp.json()["port"] == echo.port
    # A name no chain serves: the connection is closed before the handshake.
    with pytest.raises((ssl.SSLError, OSError)):
        tls_exchange(port, "d.local", http_get(), tls_client_context())
    stats = proc.stats()
    ssl_stats = _listener_stats(stats, "ssl.")
    assert ssl_stats["ssl.handshake"] == 6
    assert ssl_stats["ssl.versions.TLSv1.3"] == 6
    assert ssl_stats["ssl.no_certificate"] == 6
    assert ssl_stats["ssl.connection_error"] == 0
    assert _listener_stats(stats, "no_filter_chain_match")["no_filter_chain_match"] == 1
    assert stats["tls_inspector.sni_found"] == 7
    for name in "abc":
        assert stats[f"http.https_{name}.downstream_rq_2xx"] == 2


def _oracle_traffic(port: int, echo_a: int, echo_b: int) -> list[Any]:
    """The reference run's traffic: SNI a.local and b.local through TLS, plaintext, SNI
    c.local (no chain), and TLS without SNI (no chain either)."""
    out: list[Any] = []
    ctx = tls_client_context(alpn=["h2", "http/1.1"])
    for sni, echo in (("a.local", echo_a), ("b.local", echo_b)):
        body = body_json(tls_exchange(port, sni, http_get("/tls"), ctx))
        out.append((sni, body["port"] == echo, body["path"]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(http_get("/plain"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    body = body_json(data)
    out.append(("plain", body["port"] == echo_a, body["path"]))
    for sni in ("c.local", None):
        try:
            tls_exchange(port, sni, http_get(), ctx)
            out.append((sni, "served"))
        except (ssl.SSLError, OSError):
            out.append((sni, "closed"))
    return out


def test_tls_sni_reference_config_envoy_and_envoi_agree(
        proxy_process: Proxy, pki: Pki, echoes: list[HttpEchoServer]) -> None:
    echo_a, echo_b = echoes[0].port, echoes[1].port
    results = {}
    for kind in KINDS:
        admin_port, port = free_port(), free_port()
        proc = proxy_process(kind, tls_sni_oracle(admin_port, port, pki, echo_a, echo_b),
                             admin_port)
        traffic = _oracle_traffic(port, echo_a, echo_b)
        wait_for(lambda p=proc: _listener_stats(p.stats(), "no_filter_chain_match")
                 .get("no_filter_chain_match") == 2, 10, what="no_filter_chain_match")
        stats = proc.stats()
        results[kind] = {
            "traffic": traffic,
            "ssl": _listener_stats(stats, "ssl."),
            "listener": {k: v for k, v in _listener_stats(stats, "").items()
                         if k in ("downstream_cx_total", "no_filter_chain_match",
                                  "downstream_pre_cx_active")},
            "tls_inspector": {k: v for k, v in stats.items() if k.startswith("tls_inspector.")},
            "tcp": {k: v for k, v in stats.items() if re.match(r"tcp\.\w+\.downstream_cx_total",
                                                               k)},
        }
    envoy, envoi = results["envoy"], results["envoi"]
    assert envoi["traffic"] == envoy["traffic"]
    assert envoy["traffic"][:3] == [("a.local", True, "/tls"), ("b.local", True, "/tls"),
                                    ("plain", True, "/plain")]
    assert envoi["tls_inspector"] == envoy["tls_inspector"]
    assert envoi["listener"] == envoy["listener"]
    assert envoi["tcp"] == envoy["tcp"]
    # Same ssl.* names; same values, except the expiry gauge's unix time, which both take
    # from the certificate (equal) - and sigalgs, which neither counts downstream.
    assert sorted(envoi["ssl"]) == sorted(envoy["ssl"])
    assert envoi["ssl"] == envoy["ssl"]
    assert envoy["ssl"]["ssl.handshake"] == 2 and envoy["ssl"]["ssl.curves.X25519"] == 2


def mtls_config(admin_port: int, port: int, pki: Pki, echo: int, san: str) -> str:
    validation = f"""\
      validation_context:
        trusted_ca: {{filename: {pki.ca.pem}}}
        match_typed_subject_alt_names:
        - san_type: URI
          matcher: {{exact: "{san}"}}
"""
    tls = downstream_tls(pki.servers["a.local"], extra="    require_client_certificate: true\n",
                         extra_common=validation)
    return f"""{admin(admin_port)}\
  listeners:
  - name: mtls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    -
{tls}\
{tcp_proxy("mtls", "echo")}\
  clusters:
{cluster("echo", echo)}"""


def _try(port: int, ctx: ssl.SSLContext) -> str:
    try:
        body = body_json(tls_exchange(port, "a.local", http_get("/mtls"), ctx))
        return f"ok:{body['path']}"
    except (ssl.SSLError, OSError, AssertionError, ValueError):
        return "refused"


@pytest.mark.parametrize("kind", KINDS)
def test_mutual_tls_accepts_and_refuses(
        kind: str, proxy_process: Proxy, pki: Pki, echoes: list[HttpEchoServer]) -> None:
    admin_port, port = free_port(), free_port()
    proc = proxy_process(kind, mtls_config(admin_port, port, pki, echoes[0].port,
                                           "spiffe://envoi.test/client"), admin_port)
    ca = str(pki.ca.pem)
    assert _try(port, tls_client_context(ca, pki.client.pair)) == "ok:/mtls"
    assert _try(port, tls_client_context(ca)) == "refused"  # no client certificate
    assert _try(port, tls_client_context(ca, pki.untrusted_client.pair)) == "refused"
    wanted = {"ssl.handshake": 1, "ssl.fail_verify_no_cert": 1, "ssl.fail_verify_error": 1,
              "ssl.connection_error": 0, "ssl.no_certificate": 0}
    wait_for(lambda: all(_listener_stats(proc.stats(), "ssl.").get(k) == v
                         for k, v in wanted.items()), 10, what=f"{wanted}")


@pytest.mark.parametrize("kind", KINDS)
def test_mutual_tls_subject_alt_name_mismatch(
        kind: str, proxy_process: Proxy, pki: Pki, echoes: list[HttpEchoServer]) -> None:
    admin_port, port = free_port(), free_port()
    proc = proxy_process(kind, mtls_config(admin_port, port, pki, echoes[0].port,
                                           "spiffe://envoi.test/someone-else"), admin_port)
    assert _try(port, tls_client_context(str(pki.ca.pem), pki.client.pair)) == "refused"
    wait_for(lambda: _listener_stats(proc.stats(), "ssl.").get("ssl.fail_verify_san") == 1, 10,
             what="ssl.fail_verify_san")
    stats = _listener_stats(proc.stats(), "ssl.")
    assert stats["ssl.handshake"] == 0 and stats["ssl.connection_error"] == 0


def test_certs_endpoint_matches_envoy(proxy_process: Proxy, pki: Pki,
                                      echoes: list[HttpEchoServer]) -> None:
    bodies = {}
    for kind in KINDS:
        admin_port, port = free_port(), free_port()
        proc = proxy_process(kind, mtls_config(admin_port, port, pki, echoes[0].port, "x"),
                             admin_port)
        bodies[kind] = json.loads(proc.get("/certs") if kind == "envoy" else
                                  proc.get("/certs")[1])
    assert bodies["envoi"] == bodies["envoy"]
    (cert,) = bodies["envoi"]["certificates"]
    assert cert["cert_chain"][0]["subject_alt_names"] == [{"dns": "a.local"}]
    assert cert["ca_cert"][0]["path"] == str(pki.ca.pem)


def test_tls_listener_without_inspector_and_with_plaintext_client(
        envoi_process: Callable[..., Any], pki: Pki, echoes: list[HttpEchoServer]) -> None:
    """One TLS chain, no listener filter: every connection is TLS, the TLS facts reach the
    filters, and a plaintext client is a counted connection error."""
    admin_port, port = free_port(), free_port()
    tls = downstream_tls(pki.servers["a.local"], extra_common='      alpn_protocols: ["http/1.1"]')
    proc = envoi_process(f"""{admin(admin_port)}\
  listeners:
  - name: tls_only
    stat_prefix: tls_only
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    -
{tls}\
{tcp_proxy("t", "echo")}\
  clusters:
{cluster("echo", echoes[0].port)}""", admin_port)
    body = body_json(tls_exchange(port, "a.local", http_get("/x"),
                                  tls_client_context(str(pki.ca.pem), alpn=["http/1.1"])))
    assert body["path"] == "/x"
    # A client that sends no SNI is served too (require_sni is off by default).
    body = body_json(tls_exchange(port, None, http_get("/no-sni"), tls_client_context()))
    assert body["path"] == "/no-sni"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(http_get())
        s.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) in (b"",)
    proc.wait_stat("listener.tls_only.ssl.connection_error", 1)
    stats = proc.stats()
    assert stats["listener.tls_only.ssl.handshake"] == 2
    assert stats["listener.tls_only.ssl.versions.TLSv1.3"] == 2
    assert "listener.tls_only.ssl.curves.X25519" not in stats  # unknown without ecdh_curves
    assert stats["listener.tls_only.ssl.certificate.unnamed_cert_e3b0c442."
                 "expiration_unix_time_seconds"] > 0
    assert 0 <= stats["server.days_until_first_cert_expiring"] <= 10



TLS_LOG_FORMAT = ("%REQUESTED_SERVER_NAME% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% "
                  "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_DNS_SAN% %DOWNSTREAM_PEER_SUBJECT% "
                  "%DOWNSTREAM_PEER_FINGERPRINT_256%\\n")


def test_tls_access_log_operators_match_envoy(proxy_process: Proxy, pki: Pki, tmp_path: Any,
                                              echoes: list[HttpEchoServer]) -> None:
    """The TLS command operators of an access log, for a client with a certificate and one
    without, through Envoy and envoi: the same lines."""
    lines = {}
    for kind in KINDS:
        log = tmp_path / f"{kind}.log"
        validation = f"""\
      validation_context:
        trusted_ca: {{filename: {pki.ca.pem}}}
"""
        tls = downstream_tls(pki.servers["a.local"], extra="    require_client_certificate: "
                             "false\n", extra_common=validation)
        admin_port, port = free_port(), free_port()
        proc = proxy_process(kind, f"""{admin(admin_port)}\
  listeners:
  - name: logged
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    listener_filters:
{TLS_INSPECTOR}\
    filter_chains:
    -
{tls}\
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: logged
          cluster: echo
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                text_format_source: {{inline_string: "{TLS_LOG_FORMAT}"}}
  clusters:
{cluster("echo", echoes[0].port)}""", admin_port)
        ca = str(pki.ca.pem)
        tls_exchange(port, "a.local", http_get("/1"), tls_client_context(ca, pki.client.pair))
        tls_exchange(port, "a.local", http_get("/2"), tls_client_context(ca))
        wait_for(lambda p=log: p.exists() and p.read_text().count("\n") == 2, 15,
                 what=f"{kind} access log lines")
        lines[kind] = sorted(log.read_text().splitlines())
        del proc
    assert lines["envoi"] == lines["envoy"]
    with_cert = [line for line in lines["envoy"] if "spiffe://" in line]
    assert len(with_cert) == 1 and "CN=client.local" in with_cert[0]


@pytest.mark.parametrize("kind", KINDS)
def test_session_resumption(kind: str, proxy_process: Proxy, pki: Pki,
                            echoes: list[HttpEchoServer]) -> None:
    """A client that comes back with its session ticket resumes (``ssl.session_reused``);
    ``disable_stateless_session_resumption`` turns tickets off."""
    reused = {}
    for disabled in (False, True):
        admin_port, port = free_port(), free_port()
        extra = "    disable_stateless_session_resumption: true\n" if disabled else ""
        tls = downstream_tls(pki.servers["a.local"], extra=extra)
        proc = proxy_process(kind, f"""{admin(admin_port)}\
  listeners:
  - name: resume
    stat_prefix: resume
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    -
{tls}\
{tcp_proxy("t", "echo")}\
  clusters:
{cluster("echo", echoes[0].port)}""", admin_port)
        ctx = tls_client_context(str(pki.ca.pem))
        session = None
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="a.local", session=session) as s:
                s.sendall(http_get())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200")
                session = s.session
        wait_for(lambda p=proc: p.stats().get("listener.resume.ssl.handshake") == 3, 10,
                 what="three handshakes")
        reused[disabled] = proc.stats()["listener.resume.ssl.session_reused"]
    assert reused == {False: 2, True: 0}
