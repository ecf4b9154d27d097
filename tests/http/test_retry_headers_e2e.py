"""The router's ``x-envoy-*`` request headers (retry and timeout control, attempt count) end to
end through the real Envoy 1.39.3 and envoi with the same config and requests.

What Envoy 1.39.3 showed (the table below is its answers): from a client that is not internal
(``use_remote_address: false``, or ``true`` without ``internal_address_config`` covering it --
loopback is not internal by default) every one of ``x-envoy-retry-on``, ``-retry-grpc-on``,
``-max-retries``, ``-upstream-rq-timeout-ms``, ``-upstream-rq-per-try-timeout-ms``,
``-expected-rq-timeout-ms`` and ``-internal`` is removed and ignored. From an internal client
they are honoured and removed (``x-envoy-internal: true`` is added); ``suppress_envoy_headers``
only stops ``x-envoy-expected-rq-timeout-ms`` being set (an incoming one passes);
``respect_expected_rq_timeout`` makes an incoming ``x-envoy-expected-rq-timeout-ms`` the timeout
(``x-envoy-upstream-rq-timeout-ms`` then passes upstream unused). The virtual host's
``include_request_attempt_count`` / ``include_attempt_count_in_response`` put
``x-envoy-attempt-count`` on every attempt and on the response, local 504s included."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_peers import UP_THEN_LISTENERS, hcm_listener_item
from scripted_upstream import TcpUpstream, distinct_ports, parse_head, read_head

HEAD = UP_THEN_LISTENERS
LISTENER = "\n" + hcm_listener_item("l_{name}") + """\
          stat_prefix: {name}
          use_remote_address: {ura}
          {internal}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: {suppress}
              respect_expected_rq_timeout: {respect}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              include_request_attempt_count: true
              include_attempt_count_in_response: true
              routes:
              - match: {{prefix: "/rp/"}}
                route:
                  cluster: up
                  timeout: 5s
                  prefix_rewrite: "/"
                  retry_policy: {{retry_on: 5xx, num_retries: 1}}
              - match: {{prefix: "/"}}
                route: {{cluster: up, timeout: 5s}}
"""
INTERNAL = "internal_address_config: {cidr_ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]}"
# name: (use_remote_address, internal_address_config, suppress_envoy_headers, respect_expected)
VARIANTS = {
    "a": ("false", "", "false", "false"),  # the default: nobody is internal
    "e": ("true", INTERNAL, "false", "false"),  # loopback declared internal
    "f": ("true", INTERNAL, "true", "false"),  # ... with suppress_envoy_headers
    "g": ("true", INTERNAL, "false", "true"),  # ... with respect_expected_rq_timeout
}

ALL = {"x-envoy-retry-on": "5xx", "x-envoy-retry-grpc-on": "unavailable",
       "x-envoy-max-retries": "2", "x-envoy-upstream-rq-timeout-ms": "3000",
       "x-envoy-upstream-rq-per-try-timeout-ms": "1000", "x-envoy-expected-rq-timeout-ms": "1234",
       "x-envoy-attempt-count": "7", "x-envoy-internal": "true"}
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "echo-all": ("/echo", ALL),
    "echo-none": ("/echo", {}),
    "fail-retryon": ("/fail", {"x-envoy-retry-on": "5xx"}),
    "fail-retryon-max3": ("/fail", {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3"}),
    "fail-max3-only": ("/fail", {"x-envoy-max-retries": "3"}),
    "rpfail-max3": ("/rp/fail", {"x-envoy-max-retries": "3"}),
    "rpfail-none": ("/rp/fail", {}),
    "fail-grpc-on": ("/fail", {"x-envoy-retry-grpc-on": "unavailable"}),
    "fail-retryon-bogus": ("/fail", {"x-envoy-retry-on": "bogus"}),
    "slow-rqto300": ("/slow", {"x-envoy-upstream-rq-timeout-ms": "300"}),
    "slow-rqto-bad": ("/slow", {"x-envoy-upstream-rq-timeout-ms": "abc"}),
    "slow-pertry300": ("/slow", {"x-envoy-upstream-rq-per-try-timeout-ms": "300"}),
    "slow-pertry300-retry": ("/slow", {"x-envoy-upstream-rq-per-try-timeout-ms": "300",
                                       "x-envoy-retry-on": "5xx"}),
    "slow-expected300": ("/slow", {"x-envoy-expected-rq-timeout-ms": "300"}),
    "echo-rqto0": ("/echo", {"x-envoy-upstream-rq-timeout-ms": "0"}),
    # (a global timeout an echo beats on a loaded box)
    "echo-pertry-ge": ("/echo", {"x-envoy-upstream-rq-timeout-ms": "2000",
                                 "x-envoy-upstream-rq-per-try-timeout-ms": "3000"}),
}

# Envoy 1.39.3's answers: (variant-case, status, attempts seen upstream (= the response's
# x-envoy-attempt-count), the x-envoy-* headers the upstream saw on the last attempt besides
# attempt-count, names without "x-envoy-"; "*": the time left, which varies).
EXPECTED = [
    ('a-echo-all', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-echo-none', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-fail-retryon', 503, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-fail-retryon-max3', 503, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-fail-max3-only', 503, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-rpfail-max3', 503, 2, {'expected-rq-timeout-ms': '*'}),
    ('a-rpfail-none', 503, 2, {'expected-rq-timeout-ms': '*'}),
    ('a-fail-grpc-on', 503, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-fail-retryon-bogus', 503, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-slow-rqto300', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-slow-rqto-bad', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-slow-pertry300', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-slow-pertry300-retry', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-slow-expected300', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-echo-rqto0', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('a-echo-pertry-ge', 200, 1, {'expected-rq-timeout-ms': '5000'}),
    ('e-echo-all', 200, 1, {'expected-rq-timeout-ms': '1000', 'internal': 'true'}),
    ('e-echo-none', 200, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('e-fail-retryon', 503, 2, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('e-fail-retryon-max3', 503, 4, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('e-fail-max3-only', 503, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('e-rpfail-max3', 503, 4, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('e-rpfail-none', 503, 2, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('e-fail-grpc-on', 503, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('e-fail-retryon-bogus', 503, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('e-slow-rqto300', 504, 1, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('e-slow-rqto-bad', 200, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('e-slow-pertry300', 504, 1, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('e-slow-pertry300-retry', 504, 2, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('e-slow-expected300', 200, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('e-echo-rqto0', 200, 1, {'internal': 'true'}),
    ('e-echo-pertry-ge', 200, 1, {'expected-rq-timeout-ms': '2000', 'internal': 'true'}),
    ('f-echo-all', 200, 1, {'expected-rq-timeout-ms': '1234', 'internal': 'true'}),
    ('f-echo-none', 200, 1, {'internal': 'true'}),
    ('f-fail-retryon', 503, 2, {'internal': 'true'}),
    ('f-fail-retryon-max3', 503, 4, {'internal': 'true'}),
    ('f-fail-max3-only', 503, 1, {'internal': 'true'}),
    ('f-rpfail-max3', 503, 4, {'internal': 'true'}),
    ('f-rpfail-none', 503, 2, {'internal': 'true'}),
    ('f-fail-grpc-on', 503, 1, {'internal': 'true'}),
    ('f-fail-retryon-bogus', 503, 1, {'internal': 'true'}),
    ('f-slow-rqto300', 504, 1, {'internal': 'true'}),
    ('f-slow-rqto-bad', 200, 1, {'internal': 'true'}),
    ('f-slow-pertry300', 504, 1, {'internal': 'true'}),
    ('f-slow-pertry300-retry', 504, 2, {'internal': 'true'}),
    ('f-slow-expected300', 200, 1, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('f-echo-rqto0', 200, 1, {'internal': 'true'}),
    ('f-echo-pertry-ge', 200, 1, {'internal': 'true'}),
    ('g-echo-all', 200, 1, {'expected-rq-timeout-ms': '1000', 'internal': 'true',
                            'upstream-rq-timeout-ms': '3000'}),
    ('g-echo-none', 200, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('g-fail-retryon', 503, 2, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('g-fail-retryon-max3', 503, 4, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('g-fail-max3-only', 503, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('g-rpfail-max3', 503, 4, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('g-rpfail-none', 503, 2, {'expected-rq-timeout-ms': '*', 'internal': 'true'}),
    ('g-fail-grpc-on', 503, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('g-fail-retryon-bogus', 503, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('g-slow-rqto300', 504, 1, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('g-slow-rqto-bad', 200, 1, {'expected-rq-timeout-ms': '5000', 'internal': 'true'}),
    ('g-slow-pertry300', 504, 1, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('g-slow-pertry300-retry', 504, 2, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('g-slow-expected300', 504, 1, {'expected-rq-timeout-ms': '300', 'internal': 'true'}),
    ('g-echo-rqto0', 200, 1, {'internal': 'true'}),
    ('g-echo-pertry-ge', 200, 1, {'expected-rq-timeout-ms': '2000', 'internal': 'true'}),
]

Observed = tuple[int, int, dict[str, str]]


TIMES_OUT = {tid for tid, status, _, _ in EXPECTED if status == 504}


def slow_answer(test_id: str) -> float:
    """Seconds before /slow answers ``test_id`` (a case name and a numeric tag)."""
    return 5.0 if any(test_id.startswith(t) and not test_id[len(t):].startswith("-")
                      for t in TIMES_OUT) else 1.0


class Upstream(TcpUpstream):
    """/fail: 503; /slow: 200 after 1 s (after 5 s for a case that is to time out at 300 ms,
    so that on a loaded box the answer cannot beat the proxy's late timer); else 200. Records
    each request's x-envoy-* headers."""

    def __init__(self) -> None:
        self.seen: dict[str, list[dict[str, str]]] = {}
        super().__init__()

    def serve(self, c: socket.socket) -> None:
        buf = b""
        while (got := read_head(c, buf)) is not None:
            head, buf = got
            _, path, hdrs = parse_head(head)
            self.seen.setdefault(hdrs.get("x-test-id", ""), []).append(
                {k: v for k, v in hdrs.items() if k.startswith("x-envoy-")})
            if path == "/fail":
                c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                continue
            if path == "/slow" and self.stop.wait(slow_answer(hdrs.get("x-test-id", ""))):
                return
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


@pytest.fixture(params=["envoy", "envoi"])
def proxy(request: pytest.FixtureRequest, upstream: Upstream,
          proxy_process: Callable[[str, str, int], Any]
          ) -> Iterator[tuple[dict[str, int], Callable[[], dict[str, Any]]]]:
    admin, *ports = distinct_ports(1 + len(VARIANTS))
    by_name = dict(zip(VARIANTS, ports, strict=True))
    text = HEAD.format(admin=admin, up=upstream.port) + "".join(
        LISTENER.format(name=n, port=by_name[n], ura=v[0], internal=v[1], suppress=v[2],
                        respect=v[3]) for n, v in VARIANTS.items())
    yield by_name, proxy_process(request.param, text, admin).stats


def ask(port: int, path: str, headers: dict[str, str], tid: str) -> tuple[int, dict[str, str]]:
    req = f"GET {path} HTTP/1.1\r\nHost: a\r\nx-test-id: {tid}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req.encode())
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    lines = out.split(b"\r\n\r\n")[0].decode().split("\r\n")
    return int(lines[0].split(" ")[1]), {k.strip().lower(): v.strip() for k, _, v in
                                         (ln.partition(":") for ln in lines[1:])}


def test_x_envoy_request_headers_as_envoy(
        proxy: tuple[dict[str, int], Callable[[], dict[str, Any]]], upstream: Upstream) -> None:
    ports, stats = proxy
    tag = str(time.monotonic())  # the upstream is shared by both proxies' runs
    got: list[tuple[str, int, int, dict[str, str]]] = []
    for tid, _, _, _ in EXPECTED:
        variant, case = tid.split("-", 1)
        path, headers = CASES[case]
        status, resp = ask(ports[variant], path, headers, tid + tag)
        seen = upstream.seen[tid + tag]
        # Each attempt carries its number; the response carries the count.
        assert [s.get("x-envoy-attempt-count") for s in seen] == [
            str(i + 1) for i in range(len(seen))], (tid, seen)
        assert resp.get("x-envoy-attempt-count") == str(len(seen)), (tid, resp)
        last = {k[len("x-envoy-"):]: v for k, v in seen[-1].items()
                if k not in ("x-envoy-attempt-count", "x-envoy-original-path")}
        if len(seen) > 1 and last.get("expected-rq-timeout-ms") not in (None, "300"):
            last["expected-rq-timeout-ms"] = "*"
        got.append((tid, status, len(seen), last))
    assert got == EXPECTED
    st = stats()
    assert {k: st.get(f"cluster.up.upstream_rq_{k}", 0) for k in (
        "retry", "retry_limit_exceeded", "retry_success", "per_try_timeout", "timeout")} == {
        "retry": 29, "retry_limit_exceeded": 17, "retry_success": 0, "per_try_timeout": 9,
        "timeout": 4}
