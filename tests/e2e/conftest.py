"""Fixtures for end-to-end tests: real peer processes on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from envoi.testing import free_port, wait_for

HERE = Path(__file__).parent


def _start(cmd: list[str], ready: Callable[[], bool] | None, what: str
           ) -> subprocess.Popen[bytes]:
    """Start a peer; wait until ``ready()`` or, without one, until it prints ``READY``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def said_ready() -> bool:
        return proc.stdout is not None and proc.stdout.readline().startswith(b"READY")

    check = ready or said_ready
    try:
        wait_for(lambda: proc.poll() is None and check(), 20, what=what)
    except TimeoutError:
        proc.kill()
        out = proc.stdout.read().decode() if proc.stdout else ""
        raise AssertionError(f"{what} did not start: {out}") from None
    return proc


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def peer() -> Iterator[Callable[[str], int]]:
    """``peer("echo")`` starts a peer process from peers.py and returns its port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(kind: str) -> int:
        port = free_port()
        procs.append(_start([sys.executable, str(HERE / "peers.py"), kind, str(port)],
                            None, f"{kind} peer"))
        return port

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def http_upstream(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``python -m http.server`` serving a directory that holds a 10 MiB random file."""
    import os

    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    (root / "hello.txt").write_text("hello from the upstream\n")
    port = free_port()
    proc = _start([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                   "--directory", str(root)], lambda: port_open(port), "http.server")
    yield port, root
    proc.kill()
    proc.wait()
