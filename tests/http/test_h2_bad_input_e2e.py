"""Bad HTTP/2 input against the real Envoy 1.39.3 and envoi, same config, same bytes: floods,
the rapid-reset pattern, malformed frames, oversized header lists. Each must be answered the
way Envoy answers it (GOAWAY or not, RST_STREAM code, connection closed or kept, which counter
moves), with a well-behaved connection opened meanwhile still served."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from envoi.testing import free_port
from h2_frames import Peer, request_block
from h2_peers import curl, proxy_yaml
from http_peers import EchoServer
from hyperframe.frame import GoAwayFrame, RstStreamFrame
from scripted_upstream import send_then_read

KINDS = ["envoy", "envoi"]


@pytest.fixture(scope="module")
def blackhole() -> Iterator[int]:
    """An upstream that accepts and never answers: streams to it stay open."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture(params=KINDS)
def proxy(request: pytest.FixtureRequest, proxy_process: Callable[..., Any],
          blackhole: int) -> Iterator[tuple[Any, int]]:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        yaml_text = proxy_yaml(port, admin, echo.port, blackhole).replace(
            'route: {cluster: h1, prefix_rewrite: "/"}',
            'route: {cluster: h1, prefix_rewrite: "/", timeout: 60s}')
        proc = proxy_process(request.param, yaml_text.replace(
            "- match: {prefix: \"/h1/\"}",
            "- match: {prefix: \"/slow\"}\n                route: {cluster: h1_slow}\n"
            "              - match: {prefix: \"/h1/\"}").replace(
            "  - name: h2\n", f"""  - name: h1_slow
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: h1_slow
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {blackhole}}}}}}}
  - name: h2
"""), admin)
        yield proc, port


@dataclass
class Outcome:
    closed: bool
    goaway: list[int]  # GOAWAY error codes received
    resets: list[tuple[int, int]]  # (stream, code) of RST_STREAMs received
    delta: dict[str, int]


def attack(proc: Any, port: int, payload: bytes, wait: float = 2.0) -> Outcome:
    before = proc.stats()
    peer = Peer()
    got = send_then_read(port, peer.hello(), payload, wait=wait, poll=0.2)
    closed, out = got.closed, peer.parse(got.data)
    after = proc.stats()
    delta = {k: after[k] - before.get(k, 0) for k in after
             if isinstance(after[k], int) and after[k] != before.get(k, 0)}
    return Outcome(closed, [f.error_code for f in out.of(GoAwayFrame)],
                   [(f.stream_id, f.error_code) for f in out.of(RstStreamFrame)], delta)


def served_meanwhile(port: int) -> None:
    r = curl(f"http://127.0.0.1:{port}/direct", "--http2-prior-knowledge")
    assert (r.status, r.body) == (200, b"direct")


def test_priority_flood(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    o = attack(proc, port, b"".join(Peer.priority(1) for _ in range(150)))
    assert o.closed and not o.goaway
    assert o.delta["http2.inbound_priority_frames_flood"] == 1
    assert "http.h2_in.downstream_cx_protocol_error" not in o.delta
    served_meanwhile(port)


def test_window_update_flood(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    o = attack(proc, port, b"".join(Peer.window_update(0, 1) for _ in range(10)))
    assert o.closed and not o.goaway
    assert o.delta["http2.inbound_window_update_frames_flood"] == 1
    served_meanwhile(port)


def test_empty_frames_flood(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    o = attack(proc, port, p.headers(1, request_block(b"/slow"), False) +
               b"".join(p.data(1, b"") for _ in range(3)))
    assert o.closed and not o.goaway
    assert o.delta["http2.inbound_empty_frames_flood"] == 1
    served_meanwhile(port)


@pytest.mark.parametrize("frame", ["ping", "settings"])
def test_control_frame_flood(proxy: tuple[Any, int], frame: str) -> None:
    proc, port = proxy
    one = Peer.ping() if frame == "ping" else Peer().settings_ack()[:0] + \
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    o = attack(proc, port, one * 2000)
    assert o.closed
    assert o.delta["http2.outbound_control_flood"] == 1
    served_meanwhile(port)


def test_rapid_reset(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    pairs = []
    for i in range(400):
        sid = 1 + 2 * i
        pairs.append(p.headers(sid, request_block(b"/slow")) + Peer.rst(sid, 8))
    o = attack(proc, port, b"".join(pairs))
    assert o.closed
    assert o.delta["http.h2_in.downstream_rq_too_many_premature_resets"] == 1
    # Envoy stops reading at the 250th; envoi has parsed the whole read by then (documented).
    assert o.delta["http2.rx_reset"] >= 250
    served_meanwhile(port)


def test_too_many_headers_resets_the_stream(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    extra = [(b"x-h%d" % i, b"v") for i in range(120)]
    o = attack(proc, port, p.headers(1, request_block(b"/direct", extra=extra)), wait=1.0)
    assert not o.closed and o.resets == [(1, 2)]
    assert o.delta["http2.header_overflow"] == 1 and o.delta["http2.tx_reset"] == 1


def test_header_list_too_large_resets_the_stream(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    extra = [(b"x-big%d" % i, b"a" * 8000) for i in range(10)]
    o = attack(proc, port, p.headers(1, request_block(b"/direct", extra=extra), split=16000),
               wait=1.0)
    assert not o.closed and o.resets == [(1, 2)]
    assert o.delta["http2.header_list_size_too_large"] == 1


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x00\x00\x03\x04\x00\x00\x00\x00\x00abc", 6),
    (b"\x00\x00\x01\x00\x00\x00\x00\x00\x03x", 1),
    (b"\xff" * 50, 6),
], ids=["settings-size", "data-on-idle-stream", "garbage"])
def test_framing_errors_goaway(proxy: tuple[Any, int], payload: bytes, code: int) -> None:
    proc, port = proxy
    o = attack(proc, port, payload)
    assert o.closed and o.goaway == [code]
    assert o.delta["http.h2_in.downstream_cx_protocol_error"] == 1
    served_meanwhile(port)


@pytest.mark.parametrize("extra", [[(b"X-Upper", b"v")], [(b"connection", b"keep-alive")],
                                   [(b"te", b"gzip")]], ids=["upper", "connection", "te"])
def test_messaging_errors_close_without_goaway(proxy: tuple[Any, int],
                                               extra: list[tuple[bytes, bytes]]) -> None:
    proc, port = proxy
    o = attack(proc, port, Peer().headers(1, request_block(b"/direct", extra=extra)))
    assert o.closed and not o.goaway
    assert o.delta["http2.rx_messaging_error"] == 1
    assert o.delta["http.h2_in.downstream_cx_protocol_error"] == 1


def test_too_many_streams_before_settings_ack_refused(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    o = attack(proc, port, b"".join(
        p.headers(1 + 2 * i, request_block(b"/slow")) for i in range(1030)), wait=2.0)
    assert not o.closed
    assert [code for _, code in o.resets] == [7] * 6
    assert o.delta["http2.stream_refused_errors"] == 6


def test_too_many_streams_after_settings_ack_ends_connection(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    o = attack(proc, port, p.settings_ack() + b"".join(
        p.headers(1 + 2 * i, request_block(b"/slow")) for i in range(1030)), wait=2.0)
    assert o.closed and not o.goaway
    assert o.delta["http.h2_in.downstream_cx_protocol_error"] == 1


def test_client_goaway_is_ignored(proxy: tuple[Any, int]) -> None:
    proc, port = proxy
    p = Peer()
    o = attack(proc, port, p.headers(1, request_block(b"/direct")) + Peer.goaway(0), wait=1.0)
    assert not o.closed and o.delta["http.h2_in.downstream_rq_2xx"] == 1
