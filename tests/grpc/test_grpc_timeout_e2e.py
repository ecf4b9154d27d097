"""``grpc-timeout`` and ``max_stream_duration``, the real Envoy 1.39.3 and envoi side by side.

* The reference ``grpc.yaml`` (``reference_grpc.yaml``, only its ports changed) on both: a grpcio
  call whose deadline is shorter than the server's delay ends DEADLINE_EXCEEDED and the server
  sees the deadline and the cancellation; a call with no deadline runs to its end (the route's
  ``timeout: 0s``).
* With a raw h2 client (no deadline of its own, so only the proxy can end the call): the
  header's timeout (capped by ``grpc_timeout_header_max``, less ``grpc_timeout_header_offset``)
  ends the call with a trailers-only ``grpc-status: 4`` "downstream duration timeout", or a
  reset once the response started; the server gets the rewritten ``grpc-timeout``; an
  unparseable header is ignored (passed on as it came); ``downstream_rq_max_duration_reached``
  equal to Envoy's.
* Non-gRPC: the HCM's ``common_http_protocol_options.max_stream_duration`` and a route's
  ``max_stream_duration`` against an upstream that never answers: 504 once the request is
  complete, 408 before; a route with ``max_stream_duration`` has no route ``timeout``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from echo_service import EchoServer, compile_protos
from envoi.testing import free_port, wait_for
from envoi_grpc.framing import encode
from grpc_e2e_config import grpc_yaml, raw_call
from hold_server import HoldServer

KINDS = ["envoy", "envoi"]
REFERENCE = Path(__file__).resolve().parent / "reference_grpc.yaml"
MAX_REACHED = "http.grpc_in.downstream_rq_max_duration_reached"
DEADLINE_BODY = "downstream duration timeout"


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return compile_protos(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="module")
def server(protos: tuple[ModuleType, ModuleType]) -> Iterator[EchoServer]:
    with EchoServer(*protos) as s:
        yield s


def reference_yaml(port: int, admin: int, upstream: int) -> str:
    text = REFERENCE.read_text()
    for old, new in (("18300", port), ("18301", upstream), ("18003", admin)):
        assert old in text
        text = text.replace(old, str(new))
    return text


@pytest.mark.parametrize("kind", KINDS)
def test_reference_config_deadline_shorter_than_the_server(
        kind: str, proxy_process: Callable[..., Any], server: EchoServer,
        protos: tuple[ModuleType, ModuleType]) -> None:
    pb2, pb2_grpc = protos
    port, admin = free_port(), free_port()
    proxy_process(kind, reference_yaml(port, admin, server.port), admin)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb2_grpc.EchoStub(ch)
        assert stub.Unary(pb2.EchoRequest(payload=b"warm"), timeout=20).payload == b"warm"
        before = server.count(("Unary", "cancelled"))
        n = len(server.time_remaining)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            # (the server sleeps before its response headers: once they are sent, Envoy's
            # answer to the deadline is a reset, which races the client's own deadline)
            stub.Unary(pb2.EchoRequest(payload=b"x", sleep_ms=5000), timeout=0.5,
                       metadata=(("x-sleep-before-headers", "1"),))
        err: Any = info.value
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (kind, err)
        assert time.monotonic() - t0 < 4
        # The server saw the deadline (grpc-timeout as the proxy passed it on) and the call
        # ended there, cancelled.
        assert server.wait_more(("Unary", "cancelled"), before), kind
        seen = server.time_remaining[n]
        assert seen is not None and 0 < seen <= 0.51, (kind, seen)
        # No deadline: the route's timeout is 0s, the call runs to its end.
        reply = stub.Unary(pb2.EchoRequest(payload=b"slow", sleep_ms=600), timeout=20)
        assert reply.payload == b"slow"


_ROUTE_MAX = """\
                  max_stream_duration:
                    grpc_timeout_header_max: 5s
                    grpc_timeout_header_offset: 0.1s"""


def _raw_cases(port: int, hold: HoldServer) -> list[Any]:
    """Calls whose end only the proxy decides: the raw client has no deadline and the upstream
    enforces none (HoldServer)."""
    out: list[Any] = []
    for name, hdrs in (
            ("300m less 100m offset", {"grpc-timeout": "300m"}),
            ("capped at 5s, less 100m", {"grpc-timeout": "1H"}),
            ("9 digits with leading zeros", {"grpc-timeout": "000000300m"}),
            ("0 ends at once", {"grpc-timeout": "0m"}),
            ("the offset not below it: 0", {"grpc-timeout": "100000u"}),
            ("response started: reset", {"grpc-timeout": "300m", "x-mode": "headers"}),
            ("unparseable: ignored", {"grpc-timeout": "300x", "x-mode": "answer"}),
            ("too big: ignored", {"grpc-timeout": "123456789m", "x-mode": "answer"}),
            ("no header: no deadline", {"x-mode": "answer"})):
        case = f"{port} {name}"
        t0 = time.monotonic()
        ans = raw_call(port, "/envoi.e2e.Echo/Unary", encode(b"x"),
                       headers={**hdrs, "x-case": case})
        elapsed = time.monotonic() - t0
        h = {k: v for k, v in ans.headers.items()
             if k in (":status", "content-type", "grpc-status", "grpc-message")}
        t = {k: v for k, v in ans.trailers.items() if k in ("grpc-status", "grpc-message")}
        seen = hold.timeouts.get(case, "(not reached)")
        out.append((name, h, t, ans.reset is not None, seen, elapsed))
    return out


def test_grpc_timeout_header_sets_the_stream_deadline(
        proxy_process: Callable[..., Any]) -> None:
    hold = HoldServer()
    got: dict[str, Any] = {}
    try:
        for kind in KINDS:
            port, admin = free_port(), free_port()
            proc = proxy_process(kind, grpc_yaml(port, admin, hold.port, route_extra=_ROUTE_MAX),
                                 admin)
            got[kind] = _raw_cases(port, hold)
            wait_for(lambda p=proc: p.stats().get(MAX_REACHED) == 6,
                     what=f"{kind}: {MAX_REACHED} == 6", timeout=10)
    finally:
        hold.close()
    deadline = {":status": "200", "content-type": "application/grpc", "grpc-status": "4",
                "grpc-message": DEADLINE_BODY}
    answered = {":status": "200", "content-type": "application/grpc", "grpc-status": "0"}
    want = {  # name: (headers, reset, grpc-timeout upstream)
        "300m less 100m offset": (deadline, False, "200m"),
        "capped at 5s, less 100m": (deadline, False, "4900m"),
        "9 digits with leading zeros": (deadline, False, "200m"),
        "0 ends at once": (deadline, False, "(not reached)"),
        "the offset not below it: 0": (deadline, False, "(not reached)"),
        "response started: reset": ({":status": "200", "content-type": "application/grpc"},
                                    True, "200m"),
        "unparseable: ignored": (answered, False, "300x"),
        "too big: ignored": (answered, False, "123456789m"),
        "no header: no deadline": (answered, False, None)}
    for kind in KINDS:
        for name, h, t, reset, seen, elapsed in got[kind]:
            w_h, w_reset, w_seen = want[name]
            assert (h, t, reset) == (w_h, {}, w_reset), (kind, name, h, t, reset)
            if w_seen != "(not reached)":
                assert seen == w_seen, (kind, name, seen)
            # (0.2 s, 4.9 s and at once: the upper bounds leave a loaded box room and still
            # tell each from the next longer one)
            if name.startswith(("300m", "9 digits", "response")):
                assert 0.15 < elapsed < 4, (kind, name, elapsed)
            elif name.startswith("capped"):
                assert 4.7 < elapsed < 15, (kind, name, elapsed)
            else:
                assert elapsed < 3, (kind, name, elapsed)
    assert [c[:4] for c in got["envoi"]] == [c[:4] for c in got["envoy"]]


class SilentUpstream:
    """Accepts connections and reads them, never answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    @staticmethod
    def _drain(c: socket.socket) -> None:
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()


def _plain_yaml(port: int, admin: int, upstream: int, log: Path) -> str:
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: plain
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: plain
          common_http_protocol_options: {{max_stream_duration: 1.2s}}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                text_format: "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n"
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/route"}}
                route:
                  cluster: silent
                  timeout: 0s
                  max_stream_duration: {{max_stream_duration: 0.2s}}
              - match: {{prefix: "/ignored"}}
                route:
                  cluster: silent
                  timeout: 0.2s
                  max_stream_duration: {{max_stream_duration: 1.8s}}
              - match: {{prefix: "/direct"}}
                direct_response: {{status: 200, body: {{inline_string: "hi"}}}}
              - match: {{prefix: "/"}}
                route: {{cluster: silent, timeout: 0s}}
  clusters:
  - name: silent
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: silent
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"""


def _h1(port: int, request: bytes) -> tuple[str, str, float]:
    """One raw HTTP/1.1 exchange: (status line, body, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), rest.decode(), time.monotonic() - t0


def test_max_stream_duration_plain_http(proxy_process: Callable[..., Any],
                                        tmp_path: Path) -> None:
    up = SilentUpstream()
    try:
        got: dict[str, Any] = {}
        logs: dict[str, list[str]] = {}
        for kind in KINDS:
            port, admin = free_port(), free_port()
            log = tmp_path / f"{kind}.log"
            proc = proxy_process(kind, _plain_yaml(port, admin, up.port, log), admin)
            get = b"GET %s HTTP/1.1\r\nhost: a\r\n\r\n"
            got[kind] = [
                _h1(port, get % b"/hcm"),
                _h1(port, get % b"/route"),
                _h1(port, get % b"/ignored"),
                _h1(port, get % b"/direct"),
                _h1(port, b"POST /hcm HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nab"),
            ]
            name = "http.plain.downstream_rq_max_duration_reached"
            wait_for(lambda p=proc, n=name: p.stats().get(n) == 4, what=f"{kind}: {name} == 4",
                     timeout=10)
            logs[kind] = wait_for(lambda lg=log: len(lines := sorted(
                lg.read_text().splitlines() if lg.exists() else [])) == 5 and lines,
                what=f"{kind}: 5 access log lines", timeout=10)
        for kind in KINDS:
            hcm, route, ignored, direct, partial = got[kind]
            assert hcm[:2] == ("HTTP/1.1 504 Gateway Timeout", DEADLINE_BODY), (kind, hcm)
            # (the timers: HCM 1.2 s, /route 0.2 s, /ignored 1.8 s, far enough apart that a
            # loaded box does not blur them; the upper bounds leave it room)
            assert 1.1 < hcm[2] < 8, (kind, hcm)
            assert route[:2] == ("HTTP/1.1 504 Gateway Timeout", DEADLINE_BODY), (kind, route)
            assert route[2] < 1.0, (kind, route)
            # A route with max_stream_duration has no route timeout (Envoy's "new timeouts").
            assert ignored[:2] == ("HTTP/1.1 504 Gateway Timeout", DEADLINE_BODY), kind
            assert ignored[2] > 1.5, (kind, ignored)
            assert direct[:2] == ("HTTP/1.1 200 OK", "hi"), (kind, direct)
            assert partial[:2] == ("HTTP/1.1 408 Request Timeout", DEADLINE_BODY), (kind, partial)
        assert [g[:2] for g in got["envoi"]] == [g[:2] for g in got["envoy"]]
        # No response flag; the details say why.
        assert logs["envoy"] == ["200 - direct_response", "408 - max_duration_timeout"] + [
            "504 - max_duration_timeout"] * 3, logs
        assert logs["envoi"] == logs["envoy"]
    finally:
        up.close()
