"""Route ``idle_timeout`` (RouteAction), end to end through the real Envoy 1.39.3 and envoi with
the same config: it replaces the HCM's ``stream_idle_timeout`` (shorter or longer; ``0s`` turns
it off), restarts on response bytes, and answers as the stream idle timeout does."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_peers import ALL_ROUTES, HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import Proxy, TcpUpstream, read_head, send_then_read, start_config

CONFIG = HCM_LISTENER + """\
          stat_prefix: t
          stream_idle_timeout: 1s
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/short/"}}
                route: {{cluster: up, idle_timeout: 0.4s, prefix_rewrite: "/"}}
              - match: {{prefix: "/long/"}}
                route: {{cluster: up, idle_timeout: 3s, prefix_rewrite: "/"}}
              - match: {{prefix: "/off/"}}
                route: {{cluster: up, idle_timeout: 0s, timeout: 2s, prefix_rewrite: "/"}}
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
""" + UP_CLUSTER


class ScriptedUpstream(TcpUpstream):
    """Answers by path: /stall never, /mid a head and 3 of 10 bytes, /drip one byte every
    0.25 s (2 s in all), /late after 1.5 s."""

    def serve(self, c: socket.socket) -> None:
        got = read_head(c)
        if got is None:
            return
        path = got[0].split(b" ", 2)[1]
        if path == b"/mid":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        elif path == b"/drip":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
            for _ in range(8):
                self.stop.wait(0.25)  # the upstream's pacing (what is tested)
                c.sendall(b"x")
        elif path == b"/late":
            self.stop.wait(1.5)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.stop.wait(30)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    yield up
    up.close()


@pytest.fixture(params=["envoy", "envoi"])
def server(request: pytest.FixtureRequest, upstream: ScriptedUpstream,
           proxy_process: Callable[[str, str, int], Any]) -> Iterator[Proxy]:
    yield start_config(request.param, CONFIG, proxy_process, up=upstream.port)


def exchange(port: int, data: bytes, wait: float = 3.0) -> tuple[bytes, bool, float, float]:
    """Send, read until the peer closes or ``wait`` passes. Returns (bytes, closed, seconds to
    the first byte, seconds to the last byte or the close)."""
    got = send_then_read(port, data, wait=wait, poll=0.02)
    return got.data, got.closed, got.first, got.last


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode()


def wait_stat(server: Proxy, name: str, want: int) -> dict[str, Any]:
    """The HCM's and the cluster's request stats once ``name`` is ``want``."""
    return {k: v for k, v in server.wait_stat(name, want).items()
            if k.startswith(("http.t.", "cluster.up.upstream_rq"))}


STREAM_TIMEOUT_504 = b"HTTP/1.1 504 Gateway Timeout"


def test_shorter_route_idle_timeout_before_headers_is_504(server: Proxy) -> None:
    out, closed, first, _ = exchange(server.port, get("/short/stall"), wait=1.5)
    assert out.startswith(STREAM_TIMEOUT_504) and out.endswith(b"\r\n\r\nstream timeout"), out
    assert not closed  # the connection is kept, as for the HCM's stream idle timeout
    assert 0.35 < first < 0.9, (server.kind, first)  # the route's 0.4 s, not the HCM's 1 s
    st = wait_stat(server, "http.t.downstream_rq_idle_timeout", 1)
    assert st["http.t.downstream_rq_5xx"] == 1
    assert st.get("cluster.up.upstream_rq_timeout", 0) == 0  # not the route timeout


def test_longer_route_idle_timeout_outlasts_the_hcm_one(server: Proxy) -> None:
    out, _, first, _ = exchange(server.port, get("/long/late"), wait=2.5)
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"ok"), out
    assert first > 1.3
    assert server.stats().get("http.t.downstream_rq_idle_timeout", 0) == 0


def test_hcm_stream_idle_timeout_applies_without_a_route_one(server: Proxy) -> None:
    out, _, first, _ = exchange(server.port, get("/late"), wait=2.5)
    assert out.startswith(STREAM_TIMEOUT_504), out
    assert 0.9 < first < 1.4


def test_zero_route_idle_timeout_turns_it_off(server: Proxy) -> None:
    # The HCM's 1 s does not fire; the route's 2 s timeout does.
    out, closed, first, _ = exchange(server.port, get("/off/stall"), wait=3.0)
    assert out.startswith(STREAM_TIMEOUT_504) and out.endswith(b"upstream request timeout"), out
    assert first > 1.8 and not closed
    st = wait_stat(server, "cluster.up.upstream_rq_timeout", 1)
    assert st.get("http.t.downstream_rq_idle_timeout", 0) == 0


def test_response_bytes_restart_the_idle_timer(server: Proxy) -> None:
    # One byte every 0.25 s for 2 s against a 0.4 s route idle timeout: never idle.
    out, _, _, _ = exchange(server.port, get("/short/drip"), wait=2.8)
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\nxxxxxxxx"), out
    assert server.stats().get("http.t.downstream_rq_idle_timeout", 0) == 0


def test_idle_before_the_request_ends_is_408(server: Proxy) -> None:
    req = b"POST /short/stall HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab"
    out, closed, first, _ = exchange(server.port, req, wait=2.5)
    assert out.startswith(b"HTTP/1.1 408 Request Timeout") and out.endswith(b"stream timeout")
    assert b"connection: close" in out and closed
    assert 0.35 < first < 0.9
    st = wait_stat(server, "http.t.downstream_rq_idle_timeout", 1)
    assert st["http.t.downstream_rq_4xx"] == 1


def test_stall_mid_response_resets(server: Proxy) -> None:
    out, closed, _, last = exchange(server.port, get("/short/mid"), wait=3.0)
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\nabc"), out
    assert closed
    st = wait_stat(server, "http.t.downstream_rq_idle_timeout", 1)
    assert st["http.t.downstream_rq_tx_reset"] == 1
    assert st["cluster.up.upstream_rq_200"] == 1
    assert st.get("cluster.up.upstream_rq_timeout", 0) == 0
    if server.kind == "envoy":
        # Envoy closes after its delayed-close timeout (1 s) and counts the response as
        # completed 2xx, with an rx reset; envoi closes at once and counts neither (README).
        assert 1.2 < last < 2.0
        assert st["http.t.downstream_rq_2xx"] == 1 and st["http.t.downstream_rq_rx_reset"] == 1
        assert st["http.t.downstream_cx_delayed_close_timeout"] == 1
    else:
        assert 0.35 < last < 0.9
        assert st.get("http.t.downstream_rq_2xx", 0) == 0
        assert st.get("http.t.downstream_rq_rx_reset", 0) == 0
