"""The upstream side's limits and resets, the real Envoy 1.39.3 and envoi side by side, against an
h2c upstream that enforces no deadline of its own and can reset a stream (``HoldServer``):

* a cluster's ``common_http_protocol_options.max_stream_duration`` (in its
  ``HttpProtocolOptions``, and the deprecated cluster-level field): 504 "upstream max stream
  duration reached" (408 while the request is unfinished), flag UMSDR, a gRPC call gets
  ``grpc-status: 14`` with that message, a response that started is reset, a ``reset`` retry
  policy retries (then ``URX,UMSDR``); ``upstream_rq_max_duration_reached`` and no upstream code
  charged;
* an upstream RST_STREAM before the response: 503 "... reset reason: remote reset" (REFUSED_STREAM:
  "remote refused stream reset"), flag UR, ``upstream_rq_rx_reset`` (not for a refused stream),
  gRPC ``grpc-status: 14``;
* the deprecated route ``max_grpc_timeout`` / ``grpc_timeout_offset``: accepted with a warning;
  a gRPC call's timeout is its ``grpc-timeout`` less the offset (when the offset is below it),
  capped at the max (``0s``: no cap; no header: the cap), the rewritten ``grpc-timeout`` goes
  upstream (on a retry, the time left); non-gRPC requests keep the route's timeout.

Every answer, access-log line and the clusters' counters are compared with Envoy's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoi.testing import free_port, wait_for
from envoi_grpc.framing import encode
from grpc_e2e_config import raw_call
from hold_server import HoldServer

KINDS = ["envoy", "envoi"]
MSD_BODY = "upstream max stream duration reached"
RESET = "upstream connect error or disconnect/reset before headers. reset reason: "
_H2 = """\
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
{common}        explicit_http_config:
          http2_protocol_options: {{}}
"""


def _cluster(name: str, upstream: int, options: str) -> str:
    return f"""\
  - name: {name}
    type: STATIC
    connect_timeout: 1s
{options}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"""


def limits_yaml(port: int, admin: int, upstream: int, log: Path) -> str:
    """Routes: ``/legacy`` (cluster ``legacy``: the deprecated cluster-level
    max_stream_duration), ``/retry`` (cluster ``limited``, retry_on reset), ``/depzero`` and
    ``/depretry`` and ``/dep`` (max_grpc_timeout 0s; 1s with a reset retry; 0.5s less 0.1s),
    ``/plain`` (cluster ``plain``: no limit), anything else cluster ``limited``
    (max_stream_duration 0.3s). Every cluster is h2c to ``upstream``."""
    limited = _H2.format(common="        common_http_protocol_options: "
                                "{max_stream_duration: 0.3s}\n")
    legacy = ("    common_http_protocol_options: {max_stream_duration: 0.3s}\n"
              "    http2_protocol_options: {}\n")
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: limits
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          codec_type: AUTO
          stat_prefix: limits
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                text_format_source:
                  inline_string: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% \\
                    %RESPONSE_CODE_DETAILS%\\n"
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/legacy"}}
                route: {{cluster: legacy, timeout: 0s}}
              - match: {{prefix: "/retry"}}
                route:
                  cluster: limited
                  timeout: 0s
                  retry_policy: {{retry_on: reset, num_retries: 1}}
              - match: {{prefix: "/depzero"}}
                route: {{cluster: plain, timeout: 0.4s, max_grpc_timeout: 0s}}
              - match: {{prefix: "/depretry"}}
                route:
                  cluster: plain
                  timeout: 0s
                  max_grpc_timeout: 1s
                  retry_policy:
                    retry_on: reset
                    num_retries: 1
                    retry_back_off: {{base_interval: 0.1s, max_interval: 0.1s}}
              - match: {{prefix: "/dep"}}
                route:
                  cluster: plain
                  timeout: 0.8s
                  max_grpc_timeout: 0.5s
                  grpc_timeout_offset: 0.1s
              - match: {{prefix: "/plain"}}
                route: {{cluster: plain, timeout: 0s}}
              - match: {{prefix: "/"}}
                route: {{cluster: limited, timeout: 0s}}
  clusters:
{_cluster("limited", upstream, limited)}{_cluster("legacy", upstream, legacy)}\
{_cluster("plain", upstream, _H2.format(common=""))}"""


def _h1(port: int, path: str, extra: str = "", body: tuple[int, bytes] | None = None
        ) -> tuple[str, str, float]:
    """One HTTP/1.1 request (``connection: close``, read to the end): (status line, body,
    seconds); a reset shows as the status line and headers read before the connection
    closed."""
    head = f"host: a\r\nconnection: close\r\n{extra}".encode()
    if body is None:
        req = b"GET %s HTTP/1.1\r\n%s\r\n" % (path.encode(), head)
    else:
        req = b"POST %s HTTP/1.1\r\ncontent-length: %d\r\n%s\r\n%s" % (
            path.encode(), body[0], head, body[1])
    t0 = time.monotonic()
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(req)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:  # (a reset stream may end the connection so)
            pass
    top, _, rest = data.partition(b"\r\n\r\n")
    return top.split(b"\r\n")[0].decode(), rest.decode(), time.monotonic() - t0


def _grpc(port: int, hold: HoldServer, path: str, headers: dict[str, str]) -> tuple[Any, ...]:
    """One raw gRPC call: (headers, trailers, reset, grpc-timeout the upstream got, seconds)."""
    t0 = time.monotonic()
    ans = raw_call(port, path, encode(b"x"), headers=headers)
    h = {k: v for k, v in ans.headers.items()
         if k in (":status", "content-type", "grpc-status", "grpc-message")}
    return (h, ans.trailers, ans.reset is not None,
            hold.timeouts.get(headers.get("x-case", "")), time.monotonic() - t0)


def _run(kind: str, proxy_process: Callable[..., Any], hold: HoldServer, tmp_path: Path,
         calls: Callable[[int], list[Any]], lines: int, clusters: tuple[str, ...]
         ) -> tuple[list[Any], list[str], dict[str, Any], Any]:
    port, admin = free_port(), free_port()
    log = tmp_path / f"{kind}.log"
    proc = proxy_process(kind, limits_yaml(port, admin, hold.port, log), admin)
    got = calls(port)
    logged = wait_for(lambda: len(ls := (log.read_text().splitlines() if log.exists()
                                         else [])) == lines and ls,
                      what=f"{kind}: {lines} access log lines", timeout=10)
    stats = {k: v for k, v in proc.stats().items()
             if k.split(".")[1:2] and k.split(".")[1] in clusters and k.startswith("cluster.")
             and ".upstream_cx_" not in k and not k.endswith("_bucket") and v}
    return got, logged, stats, proc


def test_cluster_max_stream_duration(proxy_process: Callable[..., Any], tmp_path: Path) -> None:
    hold = HoldServer()

    def calls(port: int) -> list[Any]:
        return [
            _h1(port, "/a"),
            _h1(port, "/a", body=(10, b"ab")),
            _h1(port, "/a", "x-mode: headers\r\n"),
            _h1(port, "/legacy"),
            _h1(port, "/retry"),
            _h1(port, "/plain", "x-mode: answer\r\n"),
            _grpc(port, hold, "/envoi.e2e.Echo/Unary", {}),
            _grpc(port, hold, "/envoi.e2e.Echo/Unary", {"x-mode": "headers"}),
        ]

    got, logs, stats = {}, {}, {}
    try:
        for kind in KINDS:
            got[kind], logs[kind], stats[kind], _ = _run(
                kind, proxy_process, hold, tmp_path, calls, 8, ("limited", "legacy", "plain"))
    finally:
        hold.close()
    for kind in KINDS:
        hold_, partial, started, legacy, retry, plain, grpc_hold, grpc_started = got[kind]
        assert hold_[:2] == ("HTTP/1.1 504 Gateway Timeout", MSD_BODY), (kind, hold_)
        assert 0.25 < hold_[2] < 2, (kind, hold_)
        assert partial[:2] == ("HTTP/1.1 408 Request Timeout", MSD_BODY), (kind, partial)
        # Response headers went out: the downstream is reset (no body, the connection closes).
        assert started[:2] == ("HTTP/1.1 200 OK", ""), (kind, started)
        assert legacy[:2] == ("HTTP/1.1 504 Gateway Timeout", MSD_BODY), (kind, legacy)
        assert retry[:2] == ("HTTP/1.1 504 Gateway Timeout", MSD_BODY), (kind, retry)
        assert retry[2] > 0.55, (kind, retry)  # two attempts of 0.3 s
        assert plain[0] == "HTTP/1.1 200 OK", (kind, plain)
        assert grpc_hold[:3] == ({":status": "200", "content-type": "application/grpc",
                                  "grpc-status": "14", "grpc-message": MSD_BODY}, {}, False)
        assert grpc_started[:3] == ({":status": "200", "content-type": "application/grpc"},
                                    {}, True), (kind, grpc_started)
    assert [g[:2] for g in got["envoi"]] == [g[:2] for g in got["envoy"]]
    details = "upstream_max_stream_duration_reached"
    assert logs["envoy"] == [
        f"/a 504 UMSDR {details}", f"/a 408 UMSDR {details}", f"/a 200 UMSDR {details}",
        f"/legacy 504 UMSDR {details}", f"/retry 504 URX,UMSDR {details}",
        "/plain 200 - via_upstream", f"/envoi.e2e.Echo/Unary 200 UMSDR {details}",
        f"/envoi.e2e.Echo/Unary 200 UMSDR {details}"], logs["envoy"]
    # (envoi adds LR when it resets a downstream stream whose response started: README)
    assert [ln.replace("UMSDR,LR", "UMSDR") for ln in logs["envoi"]] == logs["envoy"]
    assert stats["envoy"]["cluster.limited.upstream_rq_max_duration_reached"] == 7  # (the retry: 2)
    assert stats["envoy"]["cluster.legacy.upstream_rq_max_duration_reached"] == 1
    assert "cluster.limited.upstream_rq_504" not in stats["envoy"]
    assert stats["envoi"] == stats["envoy"]


def test_upstream_reset_reasons(proxy_process: Callable[..., Any], tmp_path: Path) -> None:
    hold = HoldServer()

    def calls(port: int) -> list[Any]:
        return [
            _h1(port, "/plain", "x-mode: reset\r\n"),
            _h1(port, "/plain", "x-mode: reset\r\nx-reset-code: 7\r\n"),  # REFUSED_STREAM
            _h1(port, "/plain", "x-mode: reset\r\nx-reset-code: 0\r\n"),  # NO_ERROR
            _grpc(port, hold, "/plain/grpc", {"x-mode": "reset"}),
        ]

    got, logs, stats = {}, {}, {}
    try:
        for kind in KINDS:
            got[kind], logs[kind], stats[kind], _ = _run(
                kind, proxy_process, hold, tmp_path, calls, 4, ("plain",))
    finally:
        hold.close()
    unavailable = "HTTP/1.1 503 Service Unavailable"
    want = [(unavailable, RESET + "remote reset"),
            (unavailable, RESET + "remote refused stream reset"),
            (unavailable, RESET + "remote reset"),
            ({":status": "200", "content-type": "application/grpc", "grpc-status": "14",
              "grpc-message": RESET + "remote reset"}, {})]
    for kind in KINDS:
        assert [g[:2] for g in got[kind]] == want, (kind, got[kind])
    assert logs["envoy"] == [
        "/plain 503 UR upstream_reset_before_response_started{remote_reset}",
        "/plain 503 UR upstream_reset_before_response_started{remote_refused_stream_reset}",
        "/plain 503 UR upstream_reset_before_response_started{remote_reset}",
        "/plain/grpc 200 UR upstream_reset_before_response_started{remote_reset}"]
    assert logs["envoi"] == logs["envoy"]
    # a refused stream is not counted as a reset received; nothing was reset by the proxy
    assert stats["envoy"]["cluster.plain.upstream_rq_rx_reset"] == 3
    assert stats["envoy"]["cluster.plain.upstream_rq_503"] == 4
    assert "cluster.plain.upstream_rq_tx_reset" not in stats["envoy"]
    assert stats["envoi"] == stats["envoy"]


def test_deprecated_max_grpc_timeout(proxy_process: Callable[..., Any], tmp_path: Path) -> None:
    hold = HoldServer()

    def calls(port: int) -> list[Any]:
        return [_grpc(port, hold, path, {"x-case": f"{port} {name}", **hdrs})
                for name, path, hdrs in (
                    ("capped", "/dep/a", {"grpc-timeout": "1S"}),
                    ("less the offset", "/dep/a", {"grpc-timeout": "300m"}),
                    ("offset not below it", "/dep/a", {"grpc-timeout": "100m"}),
                    ("no header: the cap", "/dep/a", {}),
                    ("answered", "/dep/a", {"grpc-timeout": "300m", "x-mode": "answer"}),
                    ("0s: no cap", "/depzero/a", {"grpc-timeout": "600m"}),
                    ("0s, no header: none", "/depzero/a", {"x-mode": "answer"}),
                    ("retry: the time left", "/depretry/a", {"x-mode": "reset"}),
                )] + [_h1(port, "/dep/h1")]  # not gRPC: the route's timeout (0.8 s)

    got, logs, stats, seen, warned = {}, {}, {}, {}, {}
    try:
        for kind in KINDS:
            got[kind], logs[kind], stats[kind], proc = _run(
                kind, proxy_process, hold, tmp_path, calls, 9, ("plain",))
            seen[kind] = [t for case, t in hold.seen if case.endswith("retry: the time left")]
            hold.seen.clear()
            text = proc.log.read_text() if kind == "envoy" else proc.log()
            warned[kind] = "max_grpc_timeout" in text and "grpc_timeout_offset" in text
    finally:
        hold.close()
    assert warned == {"envoy": True, "envoi": True}  # each warns of the deprecated fields
    timeout = {":status": "200", "content-type": "application/grpc", "grpc-status": "14",
               "grpc-message": "upstream request timeout"}
    ok = {":status": "200", "content-type": "application/grpc", "grpc-status": "0"}
    want = [  # (answer headers, grpc-timeout upstream, seconds low, high)
        (timeout, "500m", 0.45, 1.5), (timeout, "200m", 0.15, 1.0),
        (timeout, "100m", 0.05, 0.9), (timeout, "500m", 0.45, 1.5), (ok, "200m", 0, 1),
        (timeout, "600m", 0.55, 1.5), (ok, None, 0, 1)]
    for kind in KINDS:
        *grpc_calls, retried, h1 = got[kind]
        for (h, trailers, reset, upstream, secs), (w_h, w_up, lo, hi) in zip(
                grpc_calls, want, strict=True):
            assert (h, trailers, reset, upstream) == (w_h, {}, False, w_up), (kind, h, upstream)
            assert lo < secs < hi, (kind, h, secs)
        assert retried[0]["grpc-message"] == RESET.replace(
            "reset reason", "retried and the latest reset reason") + "remote reset", kind
        # the first attempt has the whole second, the retry what is left of it
        first, second = seen[kind]
        assert first == "1000m", (kind, seen[kind])
        assert second is not None and second.endswith("m") and 800 < int(second[:-1]) <= 1000
        assert h1[:2] == ("HTTP/1.1 504 Gateway Timeout", "upstream request timeout"), kind
        assert 0.7 < h1[2] < 2.5, (kind, h1)
    assert [g[:4] for g in got["envoi"][:-2]] == [g[:4] for g in got["envoy"][:-2]]
    assert logs["envoy"] == ["/dep/a 200 UT response_timeout"] * 4 + [
        "/dep/a 200 - via_upstream", "/depzero/a 200 UT response_timeout",
        "/depzero/a 200 - via_upstream",
        "/depretry/a 200 URX,UR upstream_reset_before_response_started{remote_reset}",
        "/dep/h1 504 UT response_timeout"], logs["envoy"]
    assert logs["envoi"] == logs["envoy"]
    assert stats["envoi"] == stats["envoy"]
