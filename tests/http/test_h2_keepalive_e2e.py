"""connection_keepalive downstream, Envoy 1.39.3 and envoi on the same config: a client that
does not answer PINGs is disconnected after interval + timeout (http2.keepalive_timeout); one
that answers keeps its connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from h2_frames import Peer, request_block
from h2_peers import proxy_yaml
from http_peers import EchoServer
from hyperframe.frame import PingFrame

KEEPALIVE = """
          http2_protocol_options:
            connection_keepalive: {interval: 0.3s, timeout: 2s, interval_jitter: {value: 0}}"""
# (a timeout a loaded box does not miss between a PING and the test's ACK)


def answer_pings(s: socket.socket, peer: Peer, kind: str, end: float,
                 until_stream: int | None = None) -> bool:
    """Read until ``end`` (or a frame on ``until_stream``: then True), ACKing every PING."""
    while time.monotonic() < end:
        try:
            data = s.recv(65536)
        except TimeoutError:
            continue
        assert data, f"{kind} closed a connection that answers its PINGs"
        frames = peer.parse(data).frames
        for f in frames:
            if isinstance(f, PingFrame) and "ACK" not in f.flags:
                s.sendall(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]).serialize())
        if until_stream is not None and any(f.stream_id == until_stream for f in frames):
            return True
    return False


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_unanswered_pings_close_the_connection(kind: str,
                                               proxy_process: Callable[..., Any]) -> None:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        proc = proxy_process(kind, proxy_yaml(port, admin, echo.port, echo.port,
                                              extra_hcm=KEEPALIVE), admin)
        peer = Peer()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(peer.hello() + peer.settings_ack())
        s.settimeout(0.1)
        pings, closed, end = 0, False, time.monotonic() + 20
        while time.monotonic() < end and not closed:
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            if not data:
                closed = True
                break
            pings += len([f for f in peer.parse(data).frames
                          if isinstance(f, PingFrame) and "ACK" not in f.flags])
        s.close()
        assert closed and pings >= 1, (kind, pings)
        wait_for(lambda: proc.stats().get("http2.keepalive_timeout") == 1, 20,
                 what=f"{kind}: http2.keepalive_timeout")
        # a client that answers the PINGs keeps its connection past several intervals
        peer = Peer()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(peer.hello() + peer.settings_ack())
        s.settimeout(0.05)
        # several intervals, and longer than interval + timeout
        answer_pings(s, peer, kind, time.monotonic() + 3.5)
        s.sendall(peer.headers(1, request_block(b"/direct")))
        assert answer_pings(s, peer, kind, time.monotonic() + 20, until_stream=1), kind
        s.close()
        st = proc.stats()
        assert st["http2.keepalive_timeout"] == 1, kind
