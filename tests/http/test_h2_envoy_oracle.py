"""The reference router config (tests/http/http_router.yaml) over HTTP/2 through the real Envoy
and through envoi: the same requests as test_envoy_oracle.py sent with h2c prior knowledge
(httpx), plus the h2c Upgrade that Envoy answers in HTTP/1.1 (curl --http2) -- statuses, bodies,
the headers each adds upstream and downstream, and the stat names must agree."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from envoi.testing import free_port
from h2_peers import curl
from http_peers import EchoServer, router_config

# The HTTP/1.1 oracle's requests (imported by path: tests/mongo has a module of the same name).
_spec = importlib.util.spec_from_file_location(
    "http_envoy_oracle", Path(__file__).with_name("test_envoy_oracle.py"))
assert _spec is not None and _spec.loader is not None
_h1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_h1)
REQUESTS: list[tuple[str, str, dict[str, str]]] = _h1.REQUESTS
VOLATILE: set[str] = _h1.VOLATILE


def run_h2(port: int) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(http1=False, http2=True, base_url=f"http://127.0.0.1:{port}") as c:
        for method, path, hdrs in REQUESTS:
            headers = {"host": "api.local", **hdrs}
            r = c.request(method, path, headers=headers, content=b"body" if method in (
                "POST", "PUT") else None)
            entry: dict[str, Any] = {"req": (method, path), "status": r.status_code,
                                     "version": r.http_version,
                                     "resp_headers": sorted(set(r.headers) - VOLATILE)}
            if r.headers.get("content-type") == "application/json":
                j = r.json()
                entry["path"] = j["path"]
                entry["up_headers"] = sorted(set(j["headers"]) - {"content-length"})
            elif method != "HEAD":
                entry["body"] = r.content
            out.append(entry)
    upgrade = curl(f"http://127.0.0.1:{port}/exact", "--http2", "-H", "host: api.local")
    seen = json.loads(upgrade.body)["headers"]
    out.append({"upgrade": (upgrade.status, upgrade.version),
                "up_headers": sorted(set(seen) - {"content-length"})})
    return out


def test_envoy_and_envoi_agree_over_http2(proxy_process: Callable[..., Any]) -> None:
    with EchoServer() as a, EchoServer() as b:
        eport, eadmin = free_port(), free_port()
        envoy = proxy_process("envoy", router_config(eport, eadmin, a.port, b.port), eadmin)
        from_envoy = run_h2(eport)
        envoy_stats = envoy.stats()
        envoy.stop()
        port, admin = free_port(), free_port()
        proc = proxy_process("envoi", router_config(port, admin, a.port, b.port), admin)
        from_envoi = run_h2(port)
        envoi_stats = proc.stats()
    for e, o in zip(from_envoy, from_envoi, strict=True):
        assert e == o, (e, o)
    assert from_envoy[-1]["upgrade"] == (200, "1.1")
    for name in ("http.ingress_http.downstream_cx_http2_total",
                 "http.ingress_http.downstream_rq_http2_total",
                 "http.ingress_http.downstream_rq_http1_total"):
        assert envoi_stats[name] == envoy_stats[name], name
    names = {n for n in envoy_stats if n.startswith("http2.")}
    assert names <= set(envoi_stats), sorted(names - set(envoi_stats))
