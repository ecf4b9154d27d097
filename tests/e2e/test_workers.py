"""--concurrency N: worker processes share each listener; the admin shows the sums."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from envoi.testing import EnvoiProcess, free_port, wait_for
from tcp_configs import tcp_proxy_yaml

Start = Callable[..., EnvoiProcess]


def echo_once(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"


def worker_pids(proc: EnvoiProcess) -> list[int]:
    assert proc.proc is not None
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.proc.pid)],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_stats_are_summed_over_workers(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, args=["--concurrency", "2"])
    assert len(worker_pids(proc)) == 2
    for _ in range(40):
        echo_once(port)
    stats = proc.wait_stat("tcp.tcp_echo.downstream_cx_total", 40)
    stats = proc.stats()
    per_worker = [stats[f"listener.tcp_in.worker_{i}.downstream_cx_total"] for i in (0, 1)]
    assert sum(per_worker) == 40
    assert all(n > 0 for n in per_worker), per_worker  # SO_REUSEPORT spread them
    assert stats["listener.tcp_in.downstream_cx_total"] == 40
    assert stats["cluster.echo.upstream_cx_total"] == 40
    assert stats["server.concurrency"] == 2
    assert stats["listener_manager.workers_started"] == 2
    assert f"echo::127.0.0.1:{up}::cx_total::40" in proc.get("/clusters")[1]
    assert 'envoy_tcp_downstream_cx_total{envoy_tcp_prefix="tcp_echo"} 40' in proc.get(
        "/stats/prometheus")[1]
    assert proc.post("/reset_counters")[0] == 200
    assert proc.stats()["tcp.tcp_echo.downstream_cx_total"] == 0
    echo_once(port)
    proc.wait_stat("tcp.tcp_echo.downstream_cx_total", 1)


def test_sigterm_drains_every_worker(envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin,
                         args=["--concurrency", "2", "--drain-time-s", "30"])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"a")
    assert s.recv(1) == b"a"
    proc.signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        return False

    wait_for(refused, what="listeners closed in every worker")
    s.sendall(b"b")
    assert s.recv(1) == b"b"  # the open connection keeps working while draining
    s.close()
    assert proc.wait(30) == 0


def test_a_crashed_worker_stops_the_server(envoi_process: Start,
                                           peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, args=["--concurrency", "2"])
    os.kill(worker_pids(proc)[0], signal.SIGKILL)
    assert proc.wait(30) == 1
    assert "exited unexpectedly" in proc.log()
    wait_for(lambda: not worker_pids(proc) or None, what="the other worker gone")


def test_port_in_use_with_workers(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(tcp_proxy_yaml(free_port(), port, 1))
        out = subprocess.run([sys.executable, "-m", "envoi", "-c", str(cfg), "--concurrency", "2"],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "Address already in use" in out.stderr
