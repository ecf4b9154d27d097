"""An HTTP/2 connection when envoi drains (SIGTERM): a busy one gets Envoy's drain sequence --
GOAWAY(2^31-1) at once, the final GOAWAY with the last stream after the HCM's
``drain_timeout`` -- the streams already open finish, a stream opened after the final GOAWAY is
refused, and the connection closes when its last stream ends; an idle one gets the final GOAWAY
and closes at once (as an idle HTTP/1.1 connection closes)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from envoi.testing import free_port
from h2_frames import Peer, request_block
from h2_peers import proxy_yaml
from http_peers import EchoServer
from hyperframe.frame import GoAwayFrame, HeadersFrame, RstStreamFrame


def read_frames(sock: socket.socket, peer: Peer, seconds: float,
                until: Callable[[list[Any]], bool] | None = None) -> tuple[list[Any], bool]:
    """The frames read in ``seconds`` (or until ``until(frames)`` holds) and whether the peer
    closed."""
    frames: list[Any] = []
    sock.settimeout(0.05)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (until and until(frames)):
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return frames, True
        frames += peer.parse(data).frames
    return frames, False


def goaways(frames: list[Any]) -> list[tuple[int, int]]:
    return [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)]


def headers_on(stream_id: int) -> Callable[[list[Any]], bool]:
    return lambda fs: any(isinstance(f, HeadersFrame) and f.stream_id == stream_id for f in fs)


def test_goaway_sequence_on_drain(envoi_process: Callable[..., Any]) -> None:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        # drain_timeout long enough that stream 5 is taken before the final GOAWAY on a loaded
        # box; every step waits for the frame it expects, not a fixed time.
        yaml_text = proxy_yaml(port, admin, echo.port, echo.port,
                               extra_hcm="\n          drain_timeout: 3s")
        proc = envoi_process(yaml_text, admin, args=["--drain-time-s", "10"])
        peer = Peer()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(peer.hello() + peer.settings_ack() +
                     peer.headers(1, request_block(b"/direct")) +
                     peer.headers(3, request_block(b"/h1/x", b"POST", extra=[
                         (b"content-length", b"4")]), False))  # busy: its body is to come
        frames, _ = read_frames(sock, peer, 5.0, until=headers_on(1))
        assert headers_on(1)(frames)
        assert not goaways(frames)
        proc.wait_stat("http.h2_in.downstream_rq_active", 1)  # stream 3 is taken

        proc.signal(signal.SIGTERM)  # the server drains: GOAWAY(2^31-1) on this busy one
        frames, closed = read_frames(sock, peer, 5.0, until=lambda fs: bool(goaways(fs)))
        assert goaways(frames) == [(2**31 - 1, 0)]
        sock.sendall(peer.headers(5, request_block(b"/h1/x"), True))  # still taken
        frames, closed = read_frames(sock, peer, 5.0, until=headers_on(5))
        assert headers_on(5)(frames)
        assert not closed
        assert not goaways(frames)  # (before drain_timeout)

        frames, closed = read_frames(sock, peer, 8.0, until=lambda fs: bool(goaways(fs)))
        assert goaways(frames) == [(5, 0)]  # drain_timeout: the final GOAWAY
        assert not closed  # stream 3 is open
        sock.sendall(peer.data(3, b"body", True))
        frames, closed = read_frames(sock, peer, 5.0)
        assert headers_on(3)(frames)
        assert closed  # no stream left: the connection goes
        sock.close()


def test_idle_connection_closes_with_goaway_on_drain(
        envoi_process: Callable[..., Any]) -> None:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        proc = envoi_process(proxy_yaml(port, admin, echo.port, echo.port), admin,
                             args=["--drain-time-s", "10"])
        peer = Peer()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(peer.hello() + peer.settings_ack() +
                     peer.headers(1, request_block(b"/direct")))
        frames, _ = read_frames(sock, peer, 5.0, until=headers_on(1))
        assert headers_on(1)(frames)
        proc.signal(signal.SIGTERM)  # idle: the last GOAWAY at once, then the close
        frames, closed = read_frames(sock, peer, 5.0)
        assert goaways(frames) == [(1, 0)]
        assert closed
        sock.close()


def test_stream_after_final_goaway_is_refused_and_open_ones_finish(
        envoi_process: Callable[..., Any]) -> None:
    with EchoServer() as echo:
        port, admin = free_port(), free_port()
        # drain_timeout long enough that stream 3 reaches envoi before the final GOAWAY on a
        # loaded box; every step waits for the frame it expects, not a fixed time.
        yaml_text = proxy_yaml(port, admin, echo.port, echo.port,
                               extra_hcm="\n          drain_timeout: 2s")
        proc = envoi_process(yaml_text, admin, args=["--drain-time-s", "10"])
        peer = Peer()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(peer.hello() + peer.settings_ack() +
                     peer.headers(1, request_block(b"/h1/x", b"POST", extra=[
                         (b"content-length", b"4")]), False))  # the body is still to come
        proc.wait_stat("http.h2_in.downstream_rq_active", 1)  # stream 1 is taken: a busy one
        proc.signal(signal.SIGTERM)
        frames, _ = read_frames(sock, peer, 5.0, until=lambda fs: bool(goaways(fs)))
        assert goaways(frames) == [(2**31 - 1, 0)]  # drain starts
        sock.sendall(peer.headers(3, request_block(b"/direct")))
        more, _ = read_frames(sock, peer, 8.0, until=lambda fs: bool(goaways(fs)))
        frames += more  # the final GOAWAY names stream 3, the last one taken
        assert [g[0] for g in goaways(frames)] == [2**31 - 1, 3]
        sock.sendall(peer.headers(5, request_block(b"/direct")))
        frames, closed = read_frames(sock, peer, 5.0, until=lambda fs: any(
            isinstance(f, RstStreamFrame) for f in fs))
        assert [(f.stream_id, f.error_code) for f in frames
                if isinstance(f, RstStreamFrame)] == [(5, 7)]
        assert not closed  # stream 1 is still open
        sock.sendall(peer.data(1, b"body", True))
        frames, closed = read_frames(sock, peer, 5.0)
        assert any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in frames)
        assert closed
        sock.close()
