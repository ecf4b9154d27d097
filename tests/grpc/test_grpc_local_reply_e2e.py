"""Local replies to gRPC requests are gRPC errors, the real Envoy 1.39.3 and envoi side by side:
HTTP 200, ``content-type: application/grpc``, ``grpc-status`` mapped from the HTTP code and the
body as ``grpc-message``, trailers-only (no route: 404 -> UNIMPLEMENTED; no upstream: 503 ->
UNAVAILABLE; a direct response), and gRPC-Web clients through ``grpc_web`` as Envoy answers
them. Over HTTP/1.1 here (httpx); ``test_grpc_e2e.py`` makes the same checks over HTTP/2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from envoi.testing import free_port
from envoi_grpc.framing import encode
from grpc_e2e_config import grpc_yaml

KINDS = ["envoy", "envoi"]
CONNECT_ERROR = ("upstream connect error or disconnect/reset before headers. reset reason: "
                 "remote connection failure")
DIRECT = """\
              - match: {prefix: "/direct.Service/"}
                direct_response: {status: 403, body: {inline_string: "go away\\n"}}"""


def _post(port: int, path: str, content_type: str) -> httpx.Response:
    with httpx.Client(timeout=20) as c:
        return c.post(f"http://127.0.0.1:{port}{path}", content=encode(b""),
                      headers={"content-type": content_type, "te": "trailers"})


@pytest.mark.parametrize("kind", KINDS)
def test_local_replies_are_grpc_errors(kind: str, proxy_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    # The cluster points at a port nobody listens on: calls routed to it fail to connect.
    proc = proxy_process(kind, grpc_yaml(port, admin, free_port(), h2_options=False,
                                         route_extra=DIRECT), admin)
    seen = {}
    for name, path in (("no_route", "/other.Service/M"), ("no_upstream", "/envoi.e2e.Echo/M"),
                       ("direct", "/direct.Service/M")):
        for ct in ("application/grpc", "application/grpc+proto", "application/grpc-web+proto"):
            r = _post(port, path, ct)
            seen[name, ct] = (r.status_code, r.headers.get("content-type"),
                              r.headers.get("grpc-status"), r.headers.get("grpc-message"),
                              r.content)
    grpc, web = "application/grpc", "application/grpc-web+proto"
    for ct in (grpc, "application/grpc+proto"):
        assert seen["no_route", ct] == (200, grpc, "12", None, b""), (kind, seen)
        assert seen["no_upstream", ct] == (200, grpc, "14", CONNECT_ERROR, b""), (kind, seen)
        assert seen["direct", ct] == (200, grpc, "7", "go away%0A", b""), (kind, seen)
    # gRPC-Web requests are not gRPC to the connection manager (grpc_web rewrites them after
    # it looked): its local replies keep their HTTP status, and grpc_web adds a grpc-status to
    # those with a body or an upstream's failure.
    assert seen["no_route", web] == (404, web, None, None, b""), (kind, seen)
    assert seen["no_upstream", web] == (503, web, "14", CONNECT_ERROR, b""), (kind, seen)
    assert seen["direct", web] == (403, web, "7", "go away%0A", b""), (kind, seen)
    # A plain request to the same places is answered as before.
    with httpx.Client(timeout=20) as c:
        r = c.get(f"http://127.0.0.1:{port}/other.Service/M")
    assert r.status_code == 404 and "grpc-status" not in r.headers, kind
    assert proc.stats()["http.grpc_in.downstream_rq_2xx"] == 6, kind
