"""``--http1-codec h11|httptools|auto`` (envoi_http's ``envoi_addoption``), end to end: the same
bytes through envoi started with each back-end, on an input only one of them accepts (bare LF
after the request line or the status line: h11 accepts it, llhttp answers 400; README's codec
differences). ``ENVOI_HTTP1_CODEC`` is the option's default; the option wins over it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from envoi.testing import EnvoiProcess, free_port
from http_peers import ALL_ROUTES, HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER
from scripted_upstream import TcpUpstream, read_head

CONFIG = HCM_LISTENER + """\
          stat_prefix: t
""" + ROUTER_ONLY + ALL_ROUTES + """\
              - match: {{prefix: "/up"}}
                route: {{cluster: up}}
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "ok"}}}}
  clusters:
""" + UP_CLUSTER

BARE_LF_REQUEST = b"GET / HTTP/1.1\nHost: a\r\nConnection: close\r\n\r\n"
UPSTREAM_REQUEST = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


class BareLfUpstream(TcpUpstream):
    """Answers every request with a status line ended by a bare LF."""

    def serve(self, c: socket.socket) -> None:
        read_head(c)
        c.sendall(b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nup")


@pytest.fixture(scope="module")
def bare_lf_upstream() -> Iterator[int]:
    with BareLfUpstream() as up:
        yield up.port


def ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.split(b"\r\n", 1)[0]


def start(envoi_process: Callable[..., EnvoiProcess], up: int, args: list[str],
          env_codec: str | None) -> int:
    port, admin = free_port(), free_port()
    env = dict(os.environ)
    env.pop("ENVOI_HTTP1_CODEC", None)
    if env_codec is not None:
        env["ENVOI_HTTP1_CODEC"] = env_codec
    envoi_process(CONFIG.format(port=port, admin=admin, up=up), admin, args=args, env=env)
    return port


@pytest.mark.parametrize(("args", "env_codec", "backend"), [
    (["--http1-codec", "h11"], None, "h11"),
    (["--http1-codec", "httptools"], None, "httptools"),
    ([], "h11", "h11"),  # the environment variable is the option's default
    (["--http1-codec", "httptools"], "h11", "httptools"),  # the option wins
    (["--http1-codec", "h11"], "httptools", "h11"),
    (["--http1-codec", "auto"], None, "httptools"),  # httptools is installed in the test set-up
], ids=["h11", "httptools", "env-h11", "flag-over-env-httptools", "flag-over-env-h11", "auto"])
def test_http1_codec_option_selects_the_backend(
        envoi_process: Callable[..., EnvoiProcess], bare_lf_upstream: int, args: list[str],
        env_codec: str | None, backend: str) -> None:
    port = start(envoi_process, bare_lf_upstream, args, env_codec)
    # Downstream (the HCM's codec): h11 accepts the bare LF, llhttp refuses it.
    want = b"HTTP/1.1 200 OK" if backend == "h11" else b"HTTP/1.1 400 Bad Request"
    assert ask(port, BARE_LF_REQUEST) == want
    # Upstream (the router's pools read the same option): h11 parses the upstream's answer,
    # llhttp counts a protocol error and envoi answers 503.
    want = b"HTTP/1.1 200 OK" if backend == "h11" else b"HTTP/1.1 503 Service Unavailable"
    assert ask(port, UPSTREAM_REQUEST) == want


def test_http1_codec_option_rejects_unknown_backends() -> None:
    out = subprocess.run([sys.executable, "-m", "envoi", "--http1-codec", "llhttp", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--http1-codec" in out.stderr
