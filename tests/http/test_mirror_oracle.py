"""Route ``request_mirror_policies`` through the real Envoy 1.39.3 and envoi, same config, same
requests: what the shadow upstream receives (method, path, every header, body; Host with
``-shadow``), what the main upstream and the client see, and the shadow cluster's stats.
Shadows are fire and forget: a shadow upstream that has not answered does not hold the main
response back, and one that refuses connections changes nothing for the client."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from envoi.testing import free_port
from scripted_upstream import Request, ScriptedUpstream, exchange, response

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}

REQUESTS = [  # (test id, raw request)
    ("get", b"GET /m/a?q=1 HTTP/1.1\r\nhost: svc.test:8080\r\n"),
    ("post", b"POST /m/b HTTP/1.1\r\nhost: svc.test\r\ncontent-length: 5\r\n"
             b"x-forwarded-for: 10.0.0.1\r\n", b"hello"),
    ("chunked", b"POST /m/c HTTP/1.1\r\nhost: svc.test\r\ntransfer-encoding: chunked\r\n",
     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
    ("nosuffix", b"GET /nosuffix HTTP/1.1\r\nhost: svc.test\r\n"),
    ("header", b"GET /hdr HTTP/1.1\r\nhost: svc.test\r\nx-shadow-to: shadow\r\n"),
    ("header-unknown", b"GET /hdr HTTP/1.1\r\nhost: svc.test\r\nx-shadow-to: nope\r\n"),
    ("never", b"GET /never HTTP/1.1\r\nhost: svc.test\r\n"),
    ("runtime-off", b"GET /runtime HTTP/1.1\r\nhost: svc.test\r\n"),
    ("ipv6", b"GET /m HTTP/1.1\r\nhost: [::1]:80\r\n"),
    ("two", b"GET /two HTTP/1.1\r\nhost: svc.test\r\n"),
    ("dead", b"GET /dead HTTP/1.1\r\nhost: svc.test\r\n"),
]
SHADOWED = {"get": 1, "post": 1, "chunked": 1, "nosuffix": 1, "header": 1, "ipv6": 1, "two": 2}


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def config(admin: int, port: int, main: int, shadow: int, dead: int) -> str:
    def route(prefix: str, policies: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"match": {"prefix": prefix},
                "route": {"cluster": "main", "request_mirror_policies": policies, **extra}}

    routes = [
        {**route("/m", [{"cluster": "shadow"}], prefix_rewrite="/rw"),
         "request_headers_to_add": [{"header": {"key": "x-added", "value": "1"}}]},
        route("/nosuffix", [{"cluster": "shadow", "disable_shadow_host_suffix_append": True}]),
        route("/hdr", [{"cluster_header": "x-shadow-to"}]),
        route("/never", [{"cluster": "shadow", "runtime_fraction": {
            "default_value": {"numerator": 0}}}]),
        route("/runtime", [{"cluster": "shadow", "runtime_fraction": {
            "default_value": {"numerator": 100}, "runtime_key": "mirror.off"}}]),
        route("/two", [{"cluster": "shadow"}, {"cluster": "shadow"}]),
        route("/dead", [{"cluster": "dead"}]),
    ]
    return yaml.safe_dump({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {"mirror.off": 0}}]},
        "static_resources": {
            "listeners": [{
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM, "stat_prefix": "l",
                        "route_config": {"virtual_hosts": [
                            {"name": "v", "domains": ["*"], "routes": routes}]},
                        "http_filters": [ROUTER]}}]}]}],
            "clusters": [_cluster("main", main), _cluster("shadow", shadow),
                         _cluster("dead", dead)]}})


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def _names(req: Request) -> list[str]:
    return [ln.split(":", 1)[0].lower()
            for ln in req.raw_head.decode("latin-1").split("\r\n")[1:]]


def _shape(req: Request, main: Request | None = None) -> tuple[Any, ...]:
    # The order of the main request's headers is the router's, not compared here (a known
    # difference: x-envoy-expected-rq-timeout-ms comes before the route's added headers in
    # Envoy); a shadow's own headers are compared in their order after the main request's.
    headers = {k: v for k, v in req.headers.items() if k != "x-request-id"}
    added = [] if main is None else [n for n in _names(req) if n not in _names(main)]
    return req.method, req.path, headers, added, req.body


STATS = ("upstream_rq_total", "upstream_rq_201", "upstream_rq_2xx", "upstream_rq_completed",
         "internal.upstream_rq_201", "internal.upstream_rq_completed", "external.upstream_rq_201",
         "upstream_rq_503")
# How many connections the shadows open depends on timing (a shadow still answering when the
# next one starts takes a new connection), in Envoy as in envoi: checked as at least two.
TIMED = ("upstream_rq_pending_total", "upstream_cx_total")


def _run(kind: str, proxy_process: Callable[[str, str, int], Any]) -> dict[str, Any]:
    main = ScriptedUpstream(lambda req, n: [(response(200, b"main:" + req.body), 0.0)])
    shadow = ScriptedUpstream(lambda req, n: [(response(201, b"shadow"), 0.0)])
    port, admin = free_port(), free_port()
    proxy_process(kind, config(admin, port, main.port, shadow.port, free_port()), admin)
    out: dict[str, Any] = {}
    try:
        for tid, head, *body in REQUESTS:
            r = exchange(port, head + f"x-test-id: {tid}\r\n\r\n".encode() + b"".join(body))
            out[f"reply {tid}"] = (r.status, r.body)
        _wait(lambda: all(len(shadow.seen.get(t, ())) == n for t, n in SHADOWED.items()))
        time.sleep(0.3)  # a shadow that should not come would have come by now
        for tid, _, *_ in REQUESTS:
            seen = shadow.seen.get(tid, [])
            mains = main.seen.get(tid, [])
            out[f"shadow {tid}"] = [_shape(q, mains[0]) for q in seen]
            out[f"main {tid}"] = [_shape(q) for q in mains]
            # The shadow carries the request's x-request-id.
            assert all(q.headers.get("x-request-id") == mains[0].headers.get("x-request-id")
                       for q in seen)
        def read_stats() -> dict[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats") as f:
                return dict(line.split(": ", 1) for line in f.read().decode().splitlines())

        # Every shadow's answer counted, and the dead cluster's connect failure (a loaded box
        # may take a moment after the upstream saw the request).
        want = str(sum(SHADOWED.values()))
        _wait(lambda: read_stats().get("cluster.shadow.upstream_rq_completed") == want
              and read_stats().get("cluster.dead.upstream_cx_connect_fail", "0") != "0")
        stats = read_stats()
        for cluster in ("shadow", "dead"):
            for name in STATS:
                out[f"cluster.{cluster}.{name}"] = stats.get(f"cluster.{cluster}.{name}", "0")
        for name in TIMED:
            out[f"cluster.shadow.{name} >= 2"] = int(stats.get(f"cluster.shadow.{name}", 0)) >= 2
        out["http.async-client.rq_total"] = stats.get("http.async-client.rq_total")
        out["dead connect fail"] = stats.get("cluster.dead.upstream_cx_connect_fail")
    finally:
        main.close()
        shadow.close()
    return out


def test_shadows_as_envoy(proxy_process: Callable[[str, str, int], Any]) -> None:
    envoy = _run("envoy", proxy_process)
    envoi = _run("envoi", proxy_process)
    diffs = {k: (envoy[k], envoi.get(k)) for k in envoy if envoy[k] != envoi.get(k)}
    assert not diffs, "\n".join(f"{k}:\n  envoy {a}\n  envoi {b}" for k, (a, b) in diffs.items())
    # The comparison means something (the oracle agrees on each of these).
    assert envoy["shadow get"][0][2]["host"] == "svc.test-shadow:8080"
    assert envoy["shadow get"][0][3] == ["x-envoy-internal", "x-forwarded-for"]
    assert envoy["shadow ipv6"][0][2]["host"] == "[::1]-shadow:80"
    assert envoy["shadow post"][0][4] == b"hello"
    assert envoy["shadow never"] == envoy["shadow runtime-off"] == []
    assert envoy["cluster.shadow.upstream_rq_total"] == "8"
    assert envoy["reply dead"] == (200, b"main:")


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_main_response_never_waits_for_the_shadow(
        kind: str, proxy_process: Callable[[str, str, int], Any]) -> None:
    """The shadow upstream holds its answer until the client has its own: a proxy that waited
    for the shadow would never answer."""
    client_done = threading.Event()

    def slow(req: Request, n: int) -> list[tuple[bytes, float]]:
        client_done.wait(60)  # (well past the client's 15 s patience)
        return [(response(200, b"late"), 0.0)]

    main = ScriptedUpstream(lambda req, n: [(response(200, b"main"), 0.0)])
    shadow = ScriptedUpstream(slow)
    port, admin = free_port(), free_port()
    proc = proxy_process(kind, config(admin, port, main.port, shadow.port, free_port()), admin)
    try:
        for body in (b"", b"x" * 100_000):
            r = exchange(port, b"POST /m HTTP/1.1\r\nhost: a\r\nx-test-id: slow\r\n"
                         + b"content-length: %d\r\n\r\n" % len(body) + body, timeout=15.0)
            assert (r.status, r.body) == (200, b"main")
        _wait(lambda: len(shadow.seen.get("slow", ())) == 2)
        assert [len(q.body) for q in shadow.seen["slow"]] == [0, 100_000]
        client_done.set()
        _wait(lambda: proc.stats().get("cluster.shadow.upstream_rq_200") == 2)
    finally:
        client_done.set()
        main.close()
        shadow.close()
