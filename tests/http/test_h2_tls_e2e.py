"""HTTP/2 over TLS, Envoy 1.39.3 and envoi side by side: ALPN h2 downstream (curl, httpx,
h2load), HTTP/1.1 still served on the same listener, x-forwarded-proto https, and HTTP/2 over TLS
to the upstream (explicit, and auto_config by ALPN) with hypercorn."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoi.testing import free_port
from h2_peers import Hypercorn, curl, h2load, proxy_yaml
from http_peers import EchoServer
from tls_certs import Pki, make_pki

KINDS = ["envoy", "envoi"]
UPSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext")
DOWNSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                  "DownstreamTlsContext")


def listener_tls(pki: Pki) -> str:
    cert = pki.servers["a.local"]
    return f"""\
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {DOWNSTREAM_TLS}
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{filename: {cert.cert}}}
              private_key: {{filename: {cert.key}}}
"""


def upstream_tls(pki: Pki) -> str:
    return f"""\
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": {UPSTREAM_TLS}
        sni: upstream.local
        common_tls_context:
          validation_context: {{trusted_ca: {{filename: {pki.ca.pem}}}}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def hyper_tls(pki: Pki) -> Iterator[int]:
    cert = pki.servers["upstream.local"]
    with Hypercorn(cert=(Path(cert.cert), Path(cert.key))) as h:
        yield h.port


@pytest.fixture(params=KINDS)
def proxy(request: pytest.FixtureRequest, proxy_process: Callable[..., Any], pki: Pki,
          hyper_tls: int) -> Iterator[tuple[Any, int, str]]:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        text = proxy_yaml(port, admin, echo.port, hyper_tls, listener_tls=listener_tls(pki),
                          h2_cluster_extra=upstream_tls(pki))
        proc = proxy_process(request.param, text, admin)
        yield proc, port, str(pki.ca.pem)


def _url(port: int, path: str) -> str:
    return f"https://a.local:{port}{path}"


def _resolve(port: int) -> list[str]:
    return ["--resolve", f"a.local:{port}:127.0.0.1"]


def test_alpn_h2_and_http1_on_one_listener(proxy: tuple[Any, int, str]) -> None:
    proc, port, ca = proxy
    r2 = curl(_url(port, "/h1/anything"), "--http2", "--cacert", ca, *_resolve(port))
    assert (r2.status, r2.version) == (200, "2")
    seen = json.loads(r2.body)["headers"]
    assert seen["x-forwarded-proto"] == "https"
    r1 = curl(_url(port, "/h1/anything"), "--http1.1", "--cacert", ca, *_resolve(port))
    assert (r1.status, r1.version) == (200, "1.1")
    st = proc.stats()
    assert st["http.h2_in.downstream_cx_http2_total"] == 1
    assert st["http.h2_in.downstream_cx_http1_total"] == 1
    assert st["http.h2_in.downstream_cx_ssl_total"] == 2


def test_httpx_and_h2load_over_tls(proxy: tuple[Any, int, str]) -> None:
    proc, port, ca = proxy
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # (the certificate names a.local; the CA is what is checked)
    with httpx.Client(http2=True, verify=ctx, base_url=f"https://127.0.0.1:{port}") as c:
        rs = [c.get("/h1/anything", headers={"host": "a.local"}) for _ in range(5)]
    assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in rs)
    res = h2load(f"https://127.0.0.1:{port}/direct", "-n", "200", "-c", "2", "-m", "8")
    assert res.succeeded == 200 == res.status_2xx
    assert proc.stats()["http.h2_in.downstream_cx_http2_total"] == 3


def test_http2_over_tls_to_the_upstream(proxy: tuple[Any, int, str]) -> None:
    proc, port, ca = proxy
    r = curl(_url(port, "/h2/anything"), "--http1.1", "--cacert", ca, *_resolve(port))
    assert r.status == 200
    assert json.loads(r.body)["http_version"] == "2"
    t = curl(_url(port, "/h2/trailers"), "--http2", "--cacert", ca, *_resolve(port),
             "-H", "te: trailers")
    assert t.trailers and t.trailers[0][0] == "x-checksum"
    st = proc.stats()
    assert st["cluster.h2.upstream_cx_http2_total"] >= 1
    assert st["cluster.h2.ssl.handshake"] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_auto_config_picks_h2_by_alpn(kind: str, proxy_process: Callable[..., Any], pki: Pki,
                                      hyper_tls: int) -> None:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        text = proxy_yaml(port, admin, echo.port, hyper_tls,
                          h2_cluster_extra=upstream_tls(pki)).replace(
            "explicit_http_config: {http2_protocol_options: {}}",
            "auto_config: {http_protocol_options: {}, http2_protocol_options: {}}")
        proxy_process(kind, text, admin)
        r = curl(f"http://127.0.0.1:{port}/h2/anything", "--http1.1")
        assert r.status == 200 and json.loads(r.body)["http_version"] == "2", kind
