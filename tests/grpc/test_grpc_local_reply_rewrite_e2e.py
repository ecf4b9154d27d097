"""``local_reply_config`` and local replies to gRPC requests, the real Envoy 1.39.3 and envoi
side by side: a mapper rewrites the reply's HTTP status and body, and the gRPC error made from
it keeps a ``grpc-status`` its maker chose (the stream's duration timeout: DEADLINE_EXCEEDED)
and maps the others from the rewritten status (the router's 504: here 404 -> UNIMPLEMENTED);
the rewritten body is the ``grpc-message``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoi.testing import free_port
from envoi_grpc.framing import encode
from grpc_e2e_config import grpc_yaml, raw_call
from hold_server import HoldServer

KINDS = ["envoy", "envoi"]
_LOCAL_REPLY = """\
          local_reply_config:
            mappers:
            - filter:
                status_code_filter:
                  comparison: {op: EQ, value: {default_value: 504, runtime_key: lr.504}}
              status_code: 404
              body: {inline_string: "rewritten"}
"""
_ROUTES = """\
                  max_stream_duration: {grpc_timeout_header_max: 0s}
              - match: {prefix: "/router.Timeout/"}
                route: {cluster: greeter, timeout: 0.3s}"""


def test_rewritten_grpc_local_replies(proxy_process: Callable[..., Any]) -> None:
    hold = HoldServer()
    got: dict[str, list[Any]] = {}
    try:
        for kind in KINDS:
            port, admin = free_port(), free_port()
            yaml = grpc_yaml(port, admin, hold.port, route_extra=_ROUTES).replace(
                "          stat_prefix: grpc_in\n",
                "          stat_prefix: grpc_in\n" + _LOCAL_REPLY)
            proxy_process(kind, yaml, admin)
            got[kind] = []
            for path, headers in (("/envoi.e2e.Echo/Unary", {"grpc-timeout": "200m"}),
                                  ("/router.Timeout/M", {})):
                ans = raw_call(port, path, encode(b"x"), headers=headers)
                got[kind].append(({k: v for k, v in ans.headers.items()
                                   if k in (":status", "content-type", "grpc-status",
                                            "grpc-message", "content-length")},
                                  ans.trailers, ans.data, ans.reset))
    finally:
        hold.close()
    grpc = {":status": "200", "content-type": "application/grpc", "grpc-message": "rewritten"}
    assert got["envoy"] == [({**grpc, "grpc-status": "4"}, {}, b"", None),
                            ({**grpc, "grpc-status": "12"}, {}, b"", None)], got["envoy"]
    assert got["envoi"] == got["envoy"]
