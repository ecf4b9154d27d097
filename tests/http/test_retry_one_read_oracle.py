"""Retries when the upstream's retriable answer arrives with its head and body in one read (the
usual shape of a short 503) and with the body 100 ms after the head, through the real Envoy
1.39.3 and through envoi with the same config.

Envoy answers every case; envoi used to hang on the one-read shape: the discarded attempt's
end-of-body event completed the stream after the retry was scheduled and cancelled its timer,
so no byte ever reached the client and the route timeout never fired."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_peers import ALL_ROUTES, HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import PROXIES, Request, ScriptedUpstream, exchange, response, start_config

CONFIG = HCM_LISTENER + """\
          stat_prefix: rr
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/5xx/"}}
                route:
                  cluster: up
                  timeout: 5s
                  retry_policy: {{retry_on: 5xx, num_retries: 2}}
              - match: {{prefix: "/codes/"}}
                route:
                  cluster: up
                  timeout: 5s
                  retry_policy:
                    retry_on: retriable-status-codes
                    retriable_status_codes: [503]
                    num_retries: 2
  clusters:
""" + UP_CLUSTER
NO = b"upstream says no"


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    """``.../once-<shape>``: 503 on the first attempt, then 200; ``.../always-<shape>``: 503
    every time. Shape ``one``: head and body in one write; ``split``: the body 100 ms later."""
    shape = req.path.rsplit("-", 1)[1]
    if "/once-" in req.path and attempt > 1:
        return [(response(200, b"ok:" + req.body), 0.0)]
    whole = response(503, NO)
    if shape == "one":
        return [(whole, 0.0)]
    cut = len(whole) - len(NO)
    return [(whole[:cut], 0.0), (whole[cut:], 0.1)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


@pytest.fixture(params=PROXIES)
def proxy(request: pytest.FixtureRequest, upstream: ScriptedUpstream,
          proxy_process: Callable[[str, str, int], Any]) -> tuple[str, int, Any]:
    p = start_config(request.param, CONFIG, proxy_process, up=upstream.port)
    return p.kind, p.port, p.process


CASES = [(route, kind, shape, method)
         for route in ("5xx", "codes") for kind in ("once", "always")
         for shape in ("one", "split") for method in ("GET", "POST")]


def test_retry_after_a_503_read_whole_or_split(proxy: tuple[str, int, Any],
                                               upstream: ScriptedUpstream) -> None:
    kind_name, port, proc = proxy
    got = []
    for route, kind, shape, method in CASES:
        tid = f"{kind_name}-{route}-{kind}-{shape}-{method}"
        body = b"payload" if method == "POST" else b""
        req = (f"{method} /{route}/{kind}-{shape} HTTP/1.1\r\nhost: a\r\nx-test-id: {tid}\r\n"
               + (f"content-length: {len(body)}\r\n" if body else "") + "\r\n").encode() + body
        r = exchange(port, req, timeout=5.0)  # a hang is a TimeoutError here
        seen = upstream.seen[tid]
        got.append((route, kind, shape, method, r.status, r.body, len(seen),
                    [s.body for s in seen]))
    want = []
    for route, kind, shape, method in CASES:
        body = b"payload" if method == "POST" else b""
        if kind == "once":
            want.append((route, kind, shape, method, 200, b"ok:" + body, 2, [body, body]))
        else:
            want.append((route, kind, shape, method, 503, NO, 3, [body] * 3))
    assert got == want
    st = proc.stats()
    n = len(CASES)
    assert {k: st.get(k, 0) for k in (
        "cluster.up.upstream_rq_retry", "cluster.up.upstream_rq_retry_success",
        "cluster.up.upstream_rq_retry_limit_exceeded", "cluster.up.upstream_rq_200",
        "cluster.up.upstream_rq_503", "http.rr.downstream_rq_2xx", "http.rr.downstream_rq_5xx",
        "http.rr.downstream_rq_active", "cluster.up.upstream_rq_active")} == {
        "cluster.up.upstream_rq_retry": n // 2 + n,  # once: 1 retry each; always: 2 each
        "cluster.up.upstream_rq_retry_success": n // 2,
        "cluster.up.upstream_rq_retry_limit_exceeded": n // 2,
        "cluster.up.upstream_rq_200": n // 2,
        "cluster.up.upstream_rq_503": n // 2,  # Envoy counts the final answers only
        "http.rr.downstream_rq_2xx": n // 2,
        "http.rr.downstream_rq_5xx": n // 2,
        "http.rr.downstream_rq_active": 0,
        "cluster.up.upstream_rq_active": 0,
    }
