"""The ``x-request-id`` an upstream sees, through the real Envoy 1.39.3 and through envoi with
the same config and requests.

Envoy trusts a client's request id only when the request is not an edge request: with
``use_remote_address: true`` a client outside ``internal_address_config`` (loopback is not
internal by default) gets a new id unless ``preserve_external_request_id`` is set; with
``use_remote_address: false`` the id is kept. A request without one always gets one."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_peers import ALL_ROUTES, ROUTER_ONLY, UP_THEN_LISTENERS, hcm_listener_item
from scripted_upstream import PROXIES, Request, ScriptedUpstream, distinct_ports, exchange, response

HEAD = UP_THEN_LISTENERS
LISTENER = "\n" + hcm_listener_item("l_{name}") + """\
          stat_prefix: {name}
          {extra}
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
"""
INTERNAL = "internal_address_config: {cidr_ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]}"
VARIANTS = {
    "trusting": "use_remote_address: false",
    "edge": "use_remote_address: true",
    "edge_internal": "use_remote_address: true\n          " + INTERNAL,
    "edge_preserve": "use_remote_address: true\n          preserve_external_request_id: true",
    "edge_xff": "use_remote_address: false\n          xff_num_trusted_hops: 1",
    "no_generate": "use_remote_address: true\n          generate_request_id: false",
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    return [(response(200, b"ok"), 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


@pytest.mark.parametrize("kind", PROXIES)
def test_request_id_of_external_requests_as_envoy(
        kind: str, upstream: ScriptedUpstream, proxy_process: Callable[..., Any]) -> None:
    admin, *listen = distinct_ports(1 + len(VARIANTS))
    ports = dict(zip(VARIANTS, listen, strict=True))
    text = HEAD.format(admin=admin, up=upstream.port) + "".join(
        LISTENER.format(name=n, port=ports[n], extra=extra) for n, extra in VARIANTS.items())
    proxy_process(kind, text, admin)
    got = {}
    for name, port in ports.items():
        for method in ("GET", "POST"):
            for sent in ("client-id", None):
                tid = f"{kind}-{name}-{method}-{sent}"
                req = (f"{method} /x HTTP/1.1\r\nhost: a\r\nx-test-id: {tid}\r\n"
                       + (f"x-request-id: {sent}\r\n" if sent else "")
                       + ("content-length: 2\r\n\r\nhi" if method == "POST" else "\r\n"))
                r = exchange(port, req.encode())
                assert r.status == 200, (tid, r)
                rid = upstream.seen[tid][0].headers.get("x-request-id")
                seen = ("absent" if rid is None else "kept" if rid == sent
                        else "uuid" if UUID.match(rid) else rid)
                got[(name, method, sent)] = seen
    want = {}
    for name in VARIANTS:
        for method in ("GET", "POST"):
            replaced = name == "edge"
            want[(name, method, "client-id")] = "uuid" if replaced else "kept"
            want[(name, method, None)] = "absent" if name == "no_generate" else "uuid"
    assert got == want
