"""HTTP/2 end to end, the real Envoy 1.39.3 and envoi side by side on the same config and
traffic: curl (prior knowledge, Upgrade), httpx (http2=True), h2load, to an HTTP/1.1 upstream
and to HTTP/2 upstreams (hypercorn, nghttpd); trailers, bodies both ways, stats."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoi.testing import free_port
from h2_peers import Hypercorn, Nghttpd, curl, h2load, make_docroot, proxy_yaml
from http_peers import EchoServer

KINDS = ["envoy", "envoi"]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = make_docroot(tmp_path_factory.mktemp("www"), {"small": 100, "64k": 65536,
                                                          "1m": 1 << 20})
    with EchoServer() as echo, Hypercorn() as hyper, Nghttpd(root) as nghttpd:
        yield {"echo": echo.port, "hypercorn": hyper.port, "nghttpd": nghttpd.port,
               "root": root}


@pytest.fixture(params=KINDS)
def proxy(request: pytest.FixtureRequest, proxy_process: Callable[..., Any],
          upstreams: dict[str, Any]) -> Iterator[tuple[Any, int]]:
    port, admin = free_port(), free_port()
    proc = proxy_process(request.param, proxy_yaml(port, admin, upstreams["echo"],
                                                   upstreams["hypercorn"]), admin)
    yield proc, port


def test_prior_knowledge_to_http1_upstream(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    r = curl(f"http://127.0.0.1:{port}/h1/anything?x=1", "--http2-prior-knowledge",
             "-H", "x-test: yes")
    assert (r.status, r.version) == (200, "2")
    seen = json.loads(r.body)
    assert seen["path"] == "/anything?x=1" and seen["headers"]["x-test"] == "yes"
    assert seen["headers"]["host"] == f"127.0.0.1:{port}"
    st = proc.stats()
    assert st["http.h2_in.downstream_cx_http2_total"] == 1
    assert st["http.h2_in.downstream_rq_http2_total"] == 1
    assert "http2.rx_reset" in st and "http2.streams_active" in st


def test_h2c_upgrade_is_answered_in_http1(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    r = curl(f"http://127.0.0.1:{port}/h1/anything", "--http2")
    assert (r.status, r.version) == (200, "1.1")
    seen = json.loads(r.body)["headers"]
    assert not {"upgrade", "http2-settings"} & set(seen)
    assert "upgrade" not in seen.get("connection", "").lower()
    assert proc.stats()["http.h2_in.downstream_rq_http1_total"] == 1


def test_to_http2_upstream_with_trailers(proxy: tuple[Any, int]) -> None:
    _, port = proxy
    r = curl(f"http://127.0.0.1:{port}/h2/trailers", "--http2-prior-knowledge",
             "-H", "te: trailers")
    assert (r.status, r.version) == (200, "2")
    assert r.body == b"trailer test body"
    assert ("x-checksum", hashlib.sha1(b"trailer test body").hexdigest()) in r.trailers


def test_http1_client_to_http2_upstream(proxy: tuple[Any, int]) -> None:
    _, port = proxy
    r = curl(f"http://127.0.0.1:{port}/h2/anything", "--http1.1")
    assert (r.status, r.version) == (200, "1.1")
    assert json.loads(r.body)["http_version"] == "2"


@pytest.mark.parametrize("prefix", ["/h1", "/h2"])
def test_post_bodies_both_ways(proxy: tuple[Any, int], prefix: str) -> None:
    _, port = proxy
    body = bytes(range(256)) * 12289  # ~3 MiB
    r = curl(f"http://127.0.0.1:{port}{prefix}/anything", "--http2-prior-knowledge",
             data=body)
    assert r.status == 200
    seen = json.loads(r.body)
    assert seen["body_len"] == len(body) if "body_len" in seen else True
    if "sha" in seen:
        assert seen["sha"] == hashlib.sha256(body).hexdigest()
    big = curl(f"http://127.0.0.1:{port}/h2/bytes?n=5000000", "--http2-prior-knowledge")
    assert big.status == 200 and len(big.body) == 5000000


def test_httpx_multiplexes_on_one_connection(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    with httpx.Client(http1=False, http2=True, base_url=f"http://127.0.0.1:{port}") as c:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda i: c.get(f"/h1/anything?i={i}"), range(20)))
    assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in rs)
    assert sorted(json.loads(r.content)["path"] for r in rs) == sorted(
        f"/anything?i={i}" for i in range(20))
    st = proc.stats()
    assert st["http.h2_in.downstream_cx_http2_total"] == 1
    assert st["http.h2_in.downstream_rq_http2_total"] == 20


def test_h2load_through_both_upstream_kinds(proxy: tuple[Any, int], proxy_process: Any,
                                            upstreams: dict[str, Any]) -> None:
    _, port = proxy
    res = h2load(f"http://127.0.0.1:{port}/h1/anything", "-n", "400", "-c", "4", "-m", "8")
    assert res.succeeded == 400 == res.status_2xx and res.errored == 0
    res = h2load(f"http://127.0.0.1:{port}/direct", "-n", "400", "-c", "2", "-m", "16")
    assert res.succeeded == 400 == res.status_2xx


def test_nghttpd_upstream(request: pytest.FixtureRequest, proxy_process: Callable[..., Any],
                          upstreams: dict[str, Any]) -> None:
    for kind in KINDS:
        port, admin = free_port(), free_port()
        proc = proxy_process(kind, proxy_yaml(port, admin, upstreams["echo"],
                                              upstreams["nghttpd"]), admin)
        res = h2load(f"http://127.0.0.1:{port}/h2/64k", "-n", "300", "-c", "3", "-m", "10")
        assert res.succeeded == 300 == res.status_2xx, (kind, res.output)
        r = curl(f"http://127.0.0.1:{port}/h2/1m", "--http1.1")
        assert r.status == 200 and r.body == (Path(upstreams["root"]) / "1m").read_bytes()
        st = proc.stats()
        assert st["cluster.h2.upstream_cx_http2_total"] >= 1, kind
        assert st["cluster.h2.upstream_rq_200"] == 301, kind


@pytest.mark.parametrize("kind", KINDS)
def test_use_downstream_protocol(kind: str, proxy_process: Callable[..., Any],
                                 upstreams: dict[str, Any]) -> None:
    port, admin = free_port(), free_port()
    yaml_text = proxy_yaml(port, admin, upstreams["echo"], upstreams["hypercorn"]).replace(
        "explicit_http_config: {http2_protocol_options: {}}", "use_downstream_protocol_config: {}")
    proxy_process(kind, yaml_text, admin)
    h2 = curl(f"http://127.0.0.1:{port}/h2/anything", "--http2-prior-knowledge")
    h1 = curl(f"http://127.0.0.1:{port}/h2/anything", "--http1.1")
    assert (h2.version, json.loads(h2.body)["http_version"]) == ("2", "2"), kind
    assert (h1.version, json.loads(h1.body)["http_version"]) == ("1.1", "1.1"), kind
    # The route plan now remembers the cluster's HTTP/1.1 pools (for HTTP/1.1 downstreams):
    # the next HTTP/2 request still goes upstream over HTTP/2, the next HTTP/1.1 one over 1.1.
    h2 = curl(f"http://127.0.0.1:{port}/h2/anything", "--http2-prior-knowledge")
    h1 = curl(f"http://127.0.0.1:{port}/h2/anything", "--http1.1")
    assert (h2.version, json.loads(h2.body)["http_version"]) == ("2", "2"), kind
    assert (h1.version, json.loads(h1.body)["http_version"]) == ("1.1", "1.1"), kind


@pytest.mark.parametrize("kind", KINDS)
def test_grpc_style_trailers_through_http2(kind: str, proxy_process: Callable[..., Any],
                                           upstreams: dict[str, Any]) -> None:
    """te: trailers reaches the HTTP/2 upstream from an HTTP/1.1 client too; the trailer comes
    back to an HTTP/2 client."""
    port, admin = free_port(), free_port()
    proxy_process(kind, proxy_yaml(port, admin, upstreams["echo"], upstreams["hypercorn"]), admin)
    seen = json.loads(curl(f"http://127.0.0.1:{port}/h2/anything", "--http1.1",
                           "-H", "te: trailers").body)
    assert ["te", "trailers"] in seen["headers"], kind
    r = curl(f"http://127.0.0.1:{port}/h2/trailers", "--http2-prior-knowledge",
             "-H", "te: trailers")
    assert r.trailers and r.trailers[0][0] == "x-checksum", kind
