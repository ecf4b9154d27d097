"""tcp_proxy end to end: envoi as a real process, curl and a Python HTTP server, raw sockets."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from tcp_configs import tcp_proxy_yaml

Start = Callable[..., EnvoiProcess]


def curl(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args, url],
                          capture_output=True, timeout=60)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def test_curl_through_tcp_proxy_bytes_identical(
        envoi_process: Start, http_upstream: tuple[int, Path], tmp_path: Path) -> None:
    up, root = http_upstream
    admin, port = free_port(), free_port()
    log = tmp_path / "access.log"
    proc = envoi_process(tcp_proxy_yaml(admin, port, up, access_log=str(log)), admin)
    small = curl(f"http://127.0.0.1:{port}/hello.txt")
    assert small.returncode == 0, small.stderr
    assert small.stdout == b"hello from the upstream\n"
    out = tmp_path / "got.bin"
    big = curl(f"http://127.0.0.1:{port}/big.bin", "-o", str(out))
    assert big.returncode == 0, big.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(
        (root / "big.bin").read_bytes()).digest()
    proc.wait_stat("listener.tcp_in.downstream_cx_destroy", 2)
    # (the upstream side closes a moment after the downstream one)
    proc.wait_stat("cluster.echo.upstream_cx_destroy", 2)
    stats = proc.stats()
    assert stats["tcp.tcp_echo.downstream_cx_total"] == 2
    assert stats["listener.tcp_in.downstream_cx_total"] == 2
    assert stats["listener.tcp_in.downstream_cx_active"] == 0
    assert stats["cluster.echo.upstream_cx_total"] == 2
    assert stats["cluster.echo.upstream_cx_active"] == 0
    assert stats["tcp.tcp_echo.downstream_cx_tx_bytes_total"] > 10 * 1024 * 1024
    assert stats["tcp.tcp_echo.downstream_cx_tx_bytes_total"] == stats[
        "cluster.echo.upstream_cx_rx_bytes_total"]
    assert stats["tcp.tcp_echo.downstream_cx_rx_bytes_total"] == stats[
        "cluster.echo.upstream_cx_tx_bytes_total"]
    lines = wait_for(lambda: (lambda t: t if t.count("\n") >= 2 else None)(
        log.read_text() if log.exists() else ""), what="2 access log lines").splitlines()
    # Envoy's default TCP line: [START] "- - -" 0 - rx tx duration - "-" "-" "-" "-" "host"
    assert lines[0].split('] ', 1)[1].startswith('"- - -" 0 - ')
    assert lines[1].endswith(f'"-" "-" "-" "-" "127.0.0.1:{up}"')
    assert int(lines[1].split()[7]) > 10 * 1024 * 1024  # bytes sent


def test_half_close_and_echo(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    envoi_process(tcp_proxy_yaml(admin, port, up), admin)
    with connect(port) as s:
        s.sendall(b"ping\n")
        assert recv_exactly(s, 5) == b"ping\n"
        s.shutdown(socket.SHUT_WR)  # half-close: we can still read the rest
        assert s.recv(10) == b""  # the echo server's FIN came back through envoi


def test_upstream_refusing_is_counted_and_server_keeps_serving(
        envoi_process: Start, peer: Callable[[str], int]) -> None:
    admin, port, dead = free_port(), free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, dead, connect_attempts=2), admin)
    for _ in range(3):
        with connect(port) as s:
            s.sendall(b"x")
            assert s.recv(10) == b""  # closed by envoi, nothing sent back
    proc.wait_stat("cluster.echo.upstream_cx_connect_fail", 6)
    stats = proc.stats()
    assert stats["cluster.echo.upstream_cx_connect_attempts_exceeded"] == 3
    assert stats["tcp.tcp_echo.downstream_cx_total"] == 3
    # As Envoy 1.39.3 counts a refused connection (tests/e2e/test_refused_upstream_tcp_oracle.py)
    assert stats["cluster.echo.upstream_cx_total"] == 6
    assert stats["cluster.echo.upstream_cx_destroy_remote"] == 6
    assert stats["cluster.echo.upstream_rq_pending_failure_eject"] == 6
    assert stats["cluster.echo.upstream_rq_total"] == 0
    assert proc.get("/ready") == (200, "LIVE\n")


def test_upstream_reset_closes_downstream(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("reset")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin)
    with connect(port) as s:
        s.sendall(b"hello upstream")
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(10) == b""
    proc.wait_stat("cluster.echo.upstream_cx_destroy_remote", 1)
    proc.wait_stat("listener.tcp_in.downstream_cx_active", 0)
    assert proc.get("/ready")[0] == 200


def test_round_robin_over_two_hosts(envoi_process: Start, peer: Callable[[str], int]) -> None:
    a, b = peer("echo"), peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, a, extra_hosts=(b,)), admin)
    for _ in range(4):
        with connect(port) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
    _, body = proc.get("/clusters")
    assert f"echo::127.0.0.1:{a}::cx_total::2" in body
    assert f"echo::127.0.0.1:{b}::cx_total::2" in body


def test_backpressure_keeps_memory_bounded(envoi_process: Start,
                                           peer: Callable[[str], int]) -> None:
    """A stalled upstream: envoi stops reading the client instead of buffering."""
    up = peer("sink")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up, buffer_limit=65536), admin)
    with connect(port) as s:
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        chunk = b"x" * 65536
        while time.monotonic() < deadline and sent < 200 * 1024 * 1024:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        proc.wait_stat("tcp.tcp_echo.downstream_flow_control_paused_reading_total",
                       lambda v: v >= 1)
        # Kernel buffers on both hops absorb a few MiB at most; the proxy holds ~the limit.
        assert sent < 64 * 1024 * 1024, f"client could push {sent} bytes into a stalled upstream"
    rss_kib = int(Path(f"/proc/{proc.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])  # type: ignore[union-attr]
    assert rss_kib < 200 * 1024


def test_idle_timeout_closes_connection(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    # (long enough that the echo's answer, a peer process on a loaded box, comes within it)
    proc = envoi_process(tcp_proxy_yaml(admin, port, up, idle_timeout="2s"), admin)
    with connect(port) as s:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
        s.settimeout(20)
        assert s.recv(1) == b""  # closed by the idle timeout
    assert proc.wait_stat("tcp.tcp_echo.idle_timeout", 1) == 1


def test_drain_on_sigterm_lets_open_connection_finish(
        envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, args=["--drain-time-s", "30"])
    s = connect(port)
    s.sendall(b"before\n")
    assert recv_exactly(s, 7) == b"before\n"
    proc.signal(signal.SIGTERM)
    # New connections are refused once draining starts...
    wait_for(lambda: _refused(port), what="listener closed")
    # ...while the open one keeps working.
    s.sendall(b"during\n")
    assert recv_exactly(s, 7) == b"during\n"
    assert proc.proc is not None and proc.proc.poll() is None
    s.close()
    assert proc.wait(20) == 0


def test_second_signal_exits_at_once(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, args=["--drain-time-s", "600"])
    s = connect(port)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    proc.signal(signal.SIGTERM)
    wait_for(lambda: _refused(port), what="draining")
    proc.signal(signal.SIGINT)
    assert proc.wait(10) == 0
    s.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_admin_endpoints(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin)
    assert proc.get("/listeners") == (200, f"tcp_in::127.0.0.1:{port}\n")
    status, body = proc.get("/server_info")
    assert status == 200 and '"state": "LIVE"' in body.replace('":"', '": "')
    assert "envoy.filters.network.tcp_proxy" in body
    assert proc.get("/config_dump")[0] == 200
    assert proc.get("/stats/prometheus")[1].count(
        'envoy_tcp_downstream_cx_total{envoy_tcp_prefix="tcp_echo"} 0') == 1
    assert proc.get("/healthcheck/fail")[0] == 405
    assert proc.post("/healthcheck/fail") == (200, "OK\n")
    assert proc.get("/ready") == (503, "DRAINING\n")
    assert proc.stats()["server.live"] == 0
    assert proc.post("/healthcheck/ok")[0] == 200
    assert proc.get("/ready") == (200, "LIVE\n")
    with connect(port) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
    proc.wait_stat("tcp.tcp_echo.downstream_cx_total", 1)
    assert proc.post("/reset_counters")[0] == 200
    assert proc.stats()["tcp.tcp_echo.downstream_cx_total"] == 0
    assert proc.post("/drain_listeners")[0] == 200
    wait_for(lambda: _refused(port), what="listener stopped")
    assert proc.stats()["listener_manager.listener_stopped"] == 1
    assert proc.get("/ready")[0] == 200  # still LIVE, as Envoy
    assert proc.post("/quitquitquit")[0] == 200
    assert proc.wait(20) == 0


@pytest.mark.parametrize("alias", [["-m", "envoi"]])
def test_version_and_module_alias(alias: list[str]) -> None:
    import sys

    out = subprocess.run([sys.executable, *alias, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("envoi version: ")


def test_max_downstream_connection_duration(envoi_process: Start,
                                            peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    # (long enough that the echo's answer, a peer process on a loaded box, comes within it)
    proc = envoi_process(tcp_proxy_yaml(admin, port, up, max_duration="3s"), admin)
    with connect(port) as s:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
        s.settimeout(20)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(1) == b""
    assert proc.wait_stat("tcp.tcp_echo.max_downstream_connection_duration", 1) == 1


def test_runtime_admin_endpoints(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    text = tcp_proxy_yaml(admin, port, up) + """layered_runtime:
  layers:
  - name: static_layer_0
    static_layer: {mongo.proxy_enabled: 0}
  - name: admin_layer_0
    admin_layer: {}
"""
    proc = envoi_process(text, admin, args=["--concurrency", "2"])
    assert proc.get("/runtime_modify")[0] == 405
    assert proc.post("/runtime_modify")[0] == 400
    assert proc.post("/runtime_modify?mongo.proxy_enabled=100") == (200, "OK\n")
    import json

    doc = json.loads(proc.get("/runtime")[1])
    assert doc["entries"]["mongo.proxy_enabled"] == {"layer_values": ["0", "100"],
                                                     "final_value": "100"}
    assert proc.stats()["runtime.admin_overrides_active"] == 1


def test_connect_timeout_is_counted(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("blackhole")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin)  # connect_timeout: 1s
    started = time.monotonic()
    with connect(port) as s:
        s.settimeout(15)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(1) == b""
    assert time.monotonic() - started >= 0.9
    proc.wait_stat("cluster.echo.upstream_cx_connect_timeout", 1)
    assert proc.stats()["cluster.echo.upstream_cx_connect_fail"] == 1


def test_a_failing_filter_closes_its_connection_only(envoi_process: Start,
                                                    peer: Callable[[str], int]) -> None:
    import os

    up = peer("echo")
    admin, port = free_port(), free_port()
    crashy = "      - name: test.filters.network.crashy\n"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = envoi_process(tcp_proxy_yaml(admin, port, up, extra_filter=crashy), admin,
                         args=["-p", "crashy_filter", "--crashy-word", "kaboom"], env=env)
    other = connect(port)
    other.sendall(b"fine")
    assert recv_exactly(other, 4) == b"fine"
    other.sendall(b"boom")  # not the word given on the command line: passes
    assert recv_exactly(other, 4) == b"boom"
    with connect(port) as s:
        s.sendall(b"kaboom")
        s.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(10) == b""
    other.sendall(b"still")  # the other connection is unaffected
    assert recv_exactly(other, 5) == b"still"
    other.close()
    wait_for(lambda: "the filter failed" in proc.log(), what="the error in the log")
    assert "RuntimeError" in proc.log()
    assert proc.get("/ready")[0] == 200
