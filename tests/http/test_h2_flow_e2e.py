"""HTTP/2 flow control end to end through envoi: a stream whose client does not read stalls
neither the other streams of its connection nor envoi's memory, and a 1 GiB download to a slow
HTTP/2 client keeps envoi's RSS flat (backpressure reaches the upstream, per stream)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from h2_frames import Peer, request_block
from h2_peers import Nghttpd, make_docroot, proxy_yaml
from http_peers import EchoServer
from hyperframe.frame import DataFrame, HeadersFrame

GIB = 1 << 30


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_docroot(tmp_path_factory.mktemp("www"), {"8m": 8 << 20, "64m": 64 << 20})
    with open(root / "1g", "wb") as f:  # sparse: no disk, nghttpd reads zeros
        f.truncate(GIB)
    return root


@pytest.fixture
def envoi(envoi_process: Callable[..., Any], docroot: Path) -> Iterator[tuple[Any, int]]:
    with EchoServer() as echo, Nghttpd(docroot) as ng:
        port, admin = free_port(), free_port()
        proc = envoi_process(proxy_yaml(port, admin, echo.port, ng.port), admin)
        yield proc, port


class RawClient:
    """An HTTP/2 client on a socket that acknowledges (WINDOW_UPDATE) only the streams it is
    told to read."""

    def __init__(self, port: int, window: int = 65535) -> None:
        self.peer = Peer()
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(self.peer.hello({4: window}) + self.peer.settings_ack())
        self.got: dict[int, int] = {}
        self.ended: set[int] = set()

    def get(self, sid: int, path: bytes) -> None:
        self.sock.sendall(self.peer.headers(sid, request_block(path)))

    def read(self, ack: set[int], seconds: float) -> None:
        end = time.monotonic() + seconds
        self.sock.settimeout(0.05)
        while time.monotonic() < end:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            assert data, "envoi closed the connection"
            out = self.peer.parse(data)
            taken: dict[int, int] = {}
            for f in out.frames:
                if isinstance(f, DataFrame):
                    self.got[f.stream_id] = self.got.get(f.stream_id, 0) + len(f.data)
                    taken[f.stream_id] = taken.get(f.stream_id, 0) + f.flow_controlled_length
                if isinstance(f, (DataFrame, HeadersFrame)) and "END_STREAM" in f.flags:
                    self.ended.add(f.stream_id)
            total = sum(taken.values())
            acks = Peer.window_update(0, total) if total else b""  # the connection: always
            for sid, n in taken.items():
                if sid in ack and n:
                    acks += Peer.window_update(sid, n)
            if acks:
                self.sock.sendall(acks)
            if ack and ack <= self.ended:
                return


def test_unread_stream_does_not_stall_others(envoi: tuple[Any, int]) -> None:
    proc, port = envoi
    c = RawClient(port)
    c.get(1, b"/h2/64m")  # not acknowledged: stalls at its 64 KiB window
    c.read(set(), 1.0)
    assert c.got.get(1, 0) <= 65535
    for sid in (3, 5, 7):
        c.get(sid, b"/h2/8m")
    c.read({3, 5, 7}, 30.0)
    assert {3, 5, 7} <= c.ended
    assert all(c.got[s] == 8 << 20 for s in (3, 5, 7))
    assert 1 not in c.ended
    # (stream 1's buffer may still be filling when the others end, on a loaded box)
    st = wait_for(lambda: (st := proc.stats()).get("http2.pending_send_bytes", 0) > 16 << 20
                  and st, 30, what="stream 1's 16 MiB buffer full")
    assert st["http2.streams_active"] == 1  # stream 1, waiting
    # Envoy's per-stream buffer (the 16 MiB initial window) filled, then the upstream stream was
    # paused: the rest waits in nghttpd, not in envoi (its window: 16 MiB more at most)
    assert st["cluster.h2.http2.streams_active"] == 1
    assert 16 << 20 < st["http2.pending_send_bytes"] <= 33 << 20
    c.sock.sendall(Peer.window_update(1, c.got[1]))  # now read it: all of it arrives
    c.read({1}, 60.0)
    assert c.got[1] == 64 << 20 and 1 in c.ended


def test_gib_to_a_slow_client_keeps_rss_flat(envoi: tuple[Any, int]) -> None:
    proc, port = envoi
    base = rss_mib(proc.proc.pid)
    c = RawClient(port, window=1 << 20)
    c.get(1, b"/h2/1g")
    peak = base
    # slow: about 4 MiB/s for 3 seconds
    end = time.monotonic() + 3
    while time.monotonic() < end:
        c.read({1}, 0.02)  # (about one 1 MiB window per read)
        time.sleep(0.25)
        peak = max(peak, rss_mib(proc.proc.pid))
    slow_got = c.got.get(1, 0)
    assert slow_got < 256 << 20
    # then as fast as it goes, to the end
    while 1 not in c.ended:
        c.read({1}, 1.0)
        peak = max(peak, rss_mib(proc.proc.pid))
    assert c.got[1] == GIB
    print(f"envoi RSS: {base:.0f} MiB at start, {peak:.0f} MiB at most")
    assert peak - base < 80, (base, peak)  # flat: windows and buffers, not the download
