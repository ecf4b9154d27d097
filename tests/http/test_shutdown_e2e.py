"""Shutdown and drain of HTTP connections, through the real Envoy 1.39.3 and envoi.

SIGTERM or SIGINT with an idle keep-alive client: Envoy exits at once; envoi used to wait for
the client to leave, up to ``--drain-time-s`` (600 s by default). Draining now closes idle HTTP
connections at once and answers the current request of a busy one with ``connection: close``
before closing it (Envoy's drain close). The same drain runs when a connection's
``idle_timeout`` fires after it served a request: a request in the ``drain_timeout`` window is
answered with ``connection: close`` (envoi used to drop it)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import ALL_ROUTES, HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import Request, ScriptedUpstream, read_reply, response

CONFIG = HCM_LISTENER + """\
          stat_prefix: sd
          {extra}
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
""" + UP_CLUSTER
GET = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"


SLOW = 4.0  # the slow answer: long enough that the idle close comes first on a loaded box


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    return [(response(200, b"ok"), SLOW if req.path == "/slow" else 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def sees_close(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def send_signal(proc: Any, sig: int) -> None:
    proc.proc.send_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_signal_with_an_idle_keep_alive_client_exits_at_once(
        kind: str, sig: int, upstream: ScriptedUpstream,
        proxy_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    proc = proxy_process(kind, CONFIG.format(admin=admin, port=port, up=upstream.port,
                                             extra=""), admin)
    with connect(port) as idle:
        idle.sendall(GET)
        assert read_reply(idle).status == 200  # served; now idle, kept alive
        t0 = time.monotonic()
        send_signal(proc, sig)
        assert proc.proc.wait(30) == 0  # (envoi's --drain-time-s is 600 s here)
        took = time.monotonic() - t0
        assert sees_close(idle, 5)
    # Well under a second for both (Envoy ~0.05 s); the bound only tells "at once" from
    # "after the drain time" (600 s), with room for a loaded machine's slow exit.
    assert took < 20, (kind, took)


def test_drain_answers_the_busy_request_with_connection_close(
        upstream: ScriptedUpstream, envoi_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    proc = envoi_process(CONFIG.format(admin=admin, port=port, up=upstream.port, extra=""),
                         admin)
    idle = connect(port)
    idle.sendall(GET)
    assert read_reply(idle).status == 200
    busy = connect(port)
    busy.sendall(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
    wait_for(lambda: proc.stats().get("cluster.up.upstream_rq_active") == 1, 10,
             what="the slow request upstream")
    proc.signal(signal.SIGTERM)
    assert sees_close(idle, SLOW - 1)  # the idle one closes before the slow answer comes
    idle.close()
    r = read_reply(busy)
    assert (r.status, r.body, r.header("connection")) == (200, b"ok", "close")
    assert sees_close(busy, 5)
    busy.close()
    assert proc.wait(10) == 0


# A drain window a loaded box does not miss between the idle timeout and the request (seeing
# the stat can take a few slow admin polls).
IDLE = "common_http_protocol_options: {idle_timeout: 0.3s}\n          drain_timeout: 10s"


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_a_request_in_the_idle_drain_window_gets_connection_close(
        kind: str, upstream: ScriptedUpstream, proxy_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    proc = proxy_process(kind, CONFIG.format(admin=admin, port=port, up=upstream.port,
                                             extra=IDLE), admin)
    with connect(port) as s:
        s.sendall(GET)
        assert read_reply(s).header("connection") is None
        wait_for(lambda: proc.stats().get("http.sd.downstream_cx_idle_timeout") == 1, 10,
                 what="the idle timeout")
        s.sendall(GET)  # inside the 10 s drain window
        r = read_reply(s)
        assert (r.status, r.body, r.header("connection")) == (200, b"ok", "close")
        assert sees_close(s, 30)  # (Envoy closes it when the drain window ends)
