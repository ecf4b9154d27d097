"""--concurrency N: worker processes share each listener; the admin shows the sums."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
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


# -- supervision ---------------------------------------------------------------------------------


class Monotonic:
    """Polls ``/stats?type=Counters`` and ``/stats/prometheus`` and notes every counter (and
    histogram series) that ever went down."""

    def __init__(self, proc: EnvoiProcess) -> None:
        self.proc = proc
        self.last: dict[str, float] = {}
        self.backwards: list[str] = []
        self.polls = 0

    def _counters(self) -> dict[str, float]:
        status, body = self.proc.get("/stats?format=json&type=Counters")
        assert status == 200, body
        out: dict[str, float] = {e["name"]: e["value"] for e in json.loads(body)["stats"]
                                 if "name" in e}
        status, body = self.proc.get("/stats/prometheus")
        assert status == 200, body
        kinds: dict[str, str] = {}
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                kinds[name] = kind
            elif line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                base = series.split("{", 1)[0]
                family = base.rsplit("_", 1)[0] if base.endswith(("_bucket", "_sum", "_count")) \
                    else base
                if kinds.get(base) == "counter" or kinds.get(family) == "histogram":
                    out["prom:" + series] = float(value)
        return out

    def poll(self) -> None:
        now = self._counters()
        for name, v in now.items():
            if v < self.last.get(name, 0):
                self.backwards.append(f"{name}: {self.last[name]} -> {v}")
        self.last.update(now)
        self.polls += 1


class EchoLoad:
    """``clients`` threads, each connecting, echoing one byte and closing, until stopped."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                echo_once(self.port)
                self.ok += 1
            except (OSError, AssertionError) as exc:  # reset, or closed before the echo
                self.failed.append(repr(exc))

    def __enter__(self) -> EchoLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_a_killed_worker_is_replaced_and_no_counter_goes_back(
        envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin,
                         args=["--concurrency", "2", "--drain-time-s", "20"])
    before = worker_pids(proc)
    assert len(before) == 2
    mono = Monotonic(proc)
    with EchoLoad(port) as load:
        wait_for(lambda: load.ok >= 200, what="load running")
        ok_before_kill = load.ok
        mono.poll()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def replaced() -> list[int] | None:
            mono.poll()
            pids = worker_pids(proc)
            return pids if len(pids) == 2 and victim not in pids else None

        after = wait_for(replaced, timeout=10, what="a replacement worker")
        took = time.monotonic() - killed_at
        assert took < 3.0, f"replacement took {took:.1f}s"
        wait_for(lambda: "started again" in proc.log(), what="the restart logged")
        ok_then = load.ok
        wait_for(lambda: mono.poll() or load.ok >= ok_then + 300, timeout=30,
                 what="load after the restart")
    assert proc.proc is not None and proc.proc.poll() is None  # the server stayed up
    assert len(load.failed) <= 8, load.failed  # only what was in flight on the dead worker
    mono.poll()
    assert mono.backwards == [], mono.backwards
    assert mono.polls >= 3
    log = proc.log()
    assert f"(pid {victim}) was killed by signal 9 (SIGKILL)" in log, log
    stats = proc.stats()
    assert stats["server.worker_restarts"] == 1
    # Counted up to the last report of the dead worker (what it counted after that is lost).
    assert stats["tcp.tcp_echo.downstream_cx_total"] >= ok_before_kill
    # Both workers take connections after the restart.
    per_worker = [stats[f"listener.tcp_in.worker_{i}.downstream_cx_total"] for i in (0, 1)]
    for _ in range(60):
        echo_once(port)
    stats = proc.stats()
    grown = [stats[f"listener.tcp_in.worker_{i}.downstream_cx_total"] - per_worker[i]
             for i in (0, 1)]
    assert all(g > 0 for g in grown), grown
    assert sorted(after) == sorted(worker_pids(proc))
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _failing_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}


def test_a_worker_that_cannot_start_is_retried_with_backoff(
        envoi_process: Start, peer: Callable[[str], int], tmp_path: Path) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, env=_failing_env(),
                         wait_ready=False,
                         args=["--concurrency", "2", "-p", "failing_worker_plugin",
                               "--fail-worker-starts", "100000",
                               "--fail-worker-ledger", str(tmp_path / "ledger")])
    reason = "RuntimeError: failing_worker_plugin refuses to start this worker"
    wait_for(lambda: ", 4 times in a row" in proc.log(), timeout=30, what="four failures")
    log = proc.log()
    assert "worker 0 (pid " in log and f"exited with status 1 while starting ({reason})" in log
    # The admin answers, and says the server is not live.
    assert proc.get("/ready")[0] == 503
    assert proc.stats()["server.state"] == 3  # INITIALIZING
    # Backoff: 0, 0.25, 0.5, 1, 2 ... s, so a few seconds hold only a handful of attempts.
    time.sleep(2)
    attempts = (tmp_path / "ledger").read_text().count("x")
    assert attempts <= 2 * 7, attempts
    delays = [float(m) for m in re.findall(r"starting a replacement in ([0-9.]+)s", proc.log())]
    assert max(delays) >= 1.0, delays
    # SIGTERM while both wait for their next attempt: exits at once, with 0.
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not worker_pids(proc)


def test_workers_that_fail_at_first_then_serve(envoi_process: Start, peer: Callable[[str], int],
                                                tmp_path: Path) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, env=_failing_env(),
                         args=["--concurrency", "2", "-p", "failing_worker_plugin",
                               "--fail-worker-starts", "3",
                               "--fail-worker-ledger", str(tmp_path / "ledger")])
    for _ in range(20):
        echo_once(port)
    stats = proc.stats()
    assert stats["server.worker_restarts"] == 3
    assert stats["tcp.tcp_echo.downstream_cx_total"] == 20
    assert len(worker_pids(proc)) == 2
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_sigterm_right_after_a_worker_died_drains_and_exits_0(
        envoi_process: Start, peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin,
                         args=["--concurrency", "2", "--drain-time-s", "30"])
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    for s in held:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
    pids = worker_pids(proc)
    os.kill(pids[0], signal.SIGKILL)
    proc.signal(signal.SIGTERM)
    # Connections on the surviving worker keep working while it drains.
    alive = []
    for s in held:
        try:
            s.sendall(b"b")
            if s.recv(1) == b"b":
                alive.append(s)
        except OSError:
            pass
    assert alive, "no connection survived on the other worker"
    for s in held:
        s.close()
    assert proc.wait(30) == 0
    assert not worker_pids(proc)


def test_ctrl_c_stops_every_process_quietly(envoi_process: Start,
                                            peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, args=["--concurrency", "2"])
    assert proc.proc is not None
    echo_once(port)
    # A terminal's Ctrl-C sends SIGINT to the whole process group: main and workers at once.
    for pid in (*worker_pids(proc), proc.proc.pid):
        os.kill(pid, signal.SIGINT)
    assert proc.wait(30) == 0
    log = proc.log()
    assert "did not answer" not in log, log
    assert "[error]" not in log and "[critical]" not in log, log


def test_default_concurrency_is_one_worker_per_core(envoi_process: Start,
                                                    peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, concurrency=None)
    cores = os.cpu_count() or 1
    assert proc.stats()["server.concurrency"] == cores
    assert len(worker_pids(proc)) == (cores if cores > 1 else 0)
    echo_once(port)


def _socket_inode(port: int, peer_port: int = 0) -> str:
    """The inode of the socket on local ``port``: listening, or connected to ``peer_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if local == port and (remote == peer_port if peer_port else f[3] == "0A"):
            return f[9]
    raise AssertionError(f"no socket on {port} (peer {peer_port})")


def _holds_socket(pid: int, inode: str) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd) == f"socket:[{inode}]" for fd in fd_dir.iterdir())


def test_replacements_start_clean(envoi_process: Start, peer: Callable[[str], int]) -> None:
    """Workers forked from the running main process: DNS refreshes work in them (their own
    event loop and resolver) and they hold none of the main's admin sockets."""
    from test_dns_cluster import config as dns_config

    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(dns_config(admin, port, up, "STRICT_DNS"), admin,
                         args=["--concurrency", "2"])
    assert proc.proc is not None
    # An admin connection held open by a client while the workers are replaced.
    held = socket.create_connection(("127.0.0.1", admin), timeout=10)
    held.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held.recv(100).startswith(b"HTTP/1.1 200")
    first = worker_pids(proc)
    for pid in first:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: len(worker_pids(proc)) == 2 and pid not in worker_pids(proc),
                 what="a replacement")
    new = worker_pids(proc)
    assert not set(new) & set(first)
    main_only = [_socket_inode(admin), _socket_inode(admin, held.getsockname()[1])]
    for inode in main_only:
        assert _holds_socket(proc.proc.pid, inode)
        for pid in new:
            # A replacement shows in ps at fork; it lets go of the main's descriptors as its
            # first step, which on a loaded box can come a moment later.
            wait_for(lambda pid=pid, inode=inode: not _holds_socket(pid, inode),
                     what=f"worker {pid} to let go of the main's admin socket {inode}")
        assert _holds_socket(proc.proc.pid, inode)
    held.close()
    base = proc.stats()["cluster.named.update_success"]
    proc.wait_stat("cluster.named.update_success", lambda v: v >= base + 6)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"dns")
        assert s.recv(3) == b"dns"
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_stuck_worker_does_not_hold_up_the_admin(envoi_process: Start,
                                                   peer: Callable[[str], int]) -> None:
    up = peer("echo")
    admin, port = free_port(), free_port()
    proc = envoi_process(tcp_proxy_yaml(admin, port, up), admin, args=["--concurrency", "2"])
    for _ in range(20):
        echo_once(port)
    before = proc.stats()["tcp.tcp_echo.downstream_cx_total"]
    assert before == 20
    stuck = worker_pids(proc)[0]
    os.kill(stuck, signal.SIGSTOP)  # as a worker spinning in a filter would be
    try:
        t0 = time.monotonic()
        assert proc.stats()["tcp.tcp_echo.downstream_cx_total"] == 20  # its last answer counts
        first = time.monotonic() - t0
        t0 = time.monotonic()
        assert proc.stats()["tcp.tcp_echo.downstream_cx_total"] == 20
        second = time.monotonic() - t0
        assert first < 8 and second < 2, (first, second)
        assert "did not answer stats: timed out" in proc.log()
    finally:
        os.kill(stuck, signal.SIGCONT)
    proc.wait_stat("tcp.tcp_echo.downstream_cx_total", 20)
    for _ in range(10):
        echo_once(port)
    proc.wait_stat("tcp.tcp_echo.downstream_cx_total", 30)
    assert stuck in worker_pids(proc)  # a slow answer is no reason to replace it


def test_admin_port_in_use_with_workers_leaves_no_worker(tmp_path: Path,
                                                         peer: Callable[[str], int]) -> None:
    up = peer("echo")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        admin = busy.getsockname()[1]
        port = free_port()
        cfg = tmp_path / "c.yaml"
        cfg.write_text(tcp_proxy_yaml(admin, port, up))
        out = subprocess.run([sys.executable, "-m", "envoi", "-c", str(cfg), "--concurrency", "2"],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "address already in use" in out.stderr.lower()

    def refused() -> bool:  # no worker left holding the listener
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        return False

    wait_for(refused, timeout=10, what="the listener closed")
