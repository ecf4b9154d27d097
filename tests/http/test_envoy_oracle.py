"""The same router config and requests through the real Envoy and through envoi: statuses,
bodies, the headers each adds (upstream and downstream) and the stat names must agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from envoi.testing import free_port
from http_peers import EchoServer, router_config

REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/exact", {}), ("GET", "/v1/foo", {}), ("GET", "/items/42", {}),
    ("GET", "/items/4x", {}), ("GET", "/any", {"x-canary": "1"}), ("GET", "/any?backend=b", {}),
    ("GET", "/split", {}), ("GET", "/flaky", {}), ("GET", "/old/x", {}),
    ("GET", "/old/x?q=1", {}), ("GET", "/secure/x", {}), ("GET", "/direct", {}),
    ("GET", "/", {"host": "other.local"}), ("GET", "/", {"x-forwarded-for": "10.9.9.9"}),
    ("POST", "/exact", {}), ("PUT", "/v1/bar", {}), ("HEAD", "/exact", {}),
    ("GET", "/exact", {"x-request-id": "fixed-id"}), ("GET", "/", {"host": "api.local:1234"}),
    ("GET", "/nothing/here", {}), ("DELETE", "/direct", {}), ("GET", "/v1/", {}),
    ("GET", "/items/1", {"x-canary": "1"}), ("GET", "/secure", {}), ("GET", "/exact/", {}),
]
VOLATILE = {"date", "x-envoy-upstream-service-time", "x-request-id", "content-length"}


def run_all(port: int) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        for method, path, hdrs in REQUESTS:
            headers = {"host": "api.local", **hdrs}
            r = c.request(method, path, headers=headers, content=b"body" if method in (
                "POST", "PUT") else None)
            entry: dict[str, Any] = {"req": (method, path), "status": r.status_code,
                                     "resp_headers": sorted(set(r.headers) - VOLATILE)}
            if r.headers.get("content-type") == "application/json":
                j = r.json()
                entry["path"] = j["path"]
                entry["up_headers"] = sorted(set(j["headers"]) - {"content-length"})
            elif method != "HEAD":
                entry["body"] = r.content
            out.append(entry)
    return out


def test_envoy_and_envoi_agree(proxy_process: Callable[..., Any]) -> None:
    with EchoServer() as a, EchoServer() as b:
        eport, eadmin = free_port(), free_port()
        envoy = proxy_process("envoy", router_config(eport, eadmin, a.port, b.port), eadmin)
        from_envoy = run_all(eport)
        envoy_stats = set(envoy.stats())
        envoy.stop()
        port, admin = free_port(), free_port()
        proc = proxy_process("envoi", router_config(port, admin, a.port, b.port), admin)
        from_envoi = run_all(port)
        envoi_stats = set(proc.stats())
    for e, o in zip(from_envoy, from_envoi, strict=True):
        assert e == o, (e, o)
    envoy_stats = {n.replace(f"127.0.0.1_{eport}", "L") for n in envoy_stats}
    envoi_stats = {n.replace(f"127.0.0.1_{port}", "L") for n in envoi_stats}
    prefixes = ("http.ingress_http.", "vhost.", "listener.L.")
    wanted = {n for n in envoy_stats if n.startswith(prefixes)
              and ".worker_" not in n and "tracing" not in n}
    missing = {n for n in wanted if n not in envoi_stats}
    assert not missing, sorted(missing)
