"""Processes for the benchmark: start them pinned, stop them by PID, and read a whole process
tree's CPU time and memory from /proc."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """A scenario could not run: a peer missing, a process that died, a wrong answer."""


def _die_with_parent() -> None:
    # A child of the benchmark gets SIGTERM if the benchmark itself is killed.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in (task / "children").read_text().split()]
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (all their threads)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree_cpu(pid: int) -> float:
    return cpu_seconds(tree(pid))


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def tree_rss(pid: int) -> int:
    """Resident bytes of the tree, summed (pages shared by forked workers count in each)."""
    return sum(_status_kib(p, "VmRSS:") for p in tree(pid)) * 1024


def max_process_rss(pid: int) -> int:
    """Resident bytes of the tree's largest process (the issue's per-worker memory target)."""
    return max((_status_kib(p, "VmRSS:") for p in tree(pid)), default=0) * 1024


def tree_pss(pid: int) -> int:
    """Proportional set size of the tree: shared pages divided among their sharers."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total * 1024


def pin(pid: int, cpus: set[int] | None) -> None:
    """Set the CPU affinity of every thread of every process in the tree."""
    if cpus is None:
        cpus = set(range(os.cpu_count() or 1))
    for p in tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(cond: Callable[[], object], timeout: float, what: str,
               proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.popen.poll() is not None:
            raise BenchError(f"{what}: {proc.name} exited with {proc.popen.returncode}:\n"
                             f"{proc.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            if cond():
                return
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Proc:
    """One process of the benchmark, its output in a log file."""

    def __init__(self, name: str, cmd: Sequence[str], log_dir: Path,
                 cpus: set[int] | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        allowed = cpus if cpus is not None else set(range(os.cpu_count() or 1))

        def setup() -> None:  # in the child, before exec: its threads and forks inherit both
            _die_with_parent()
            os.sched_setaffinity(0, allowed)

        try:
            self.popen = subprocess.Popen(list(cmd), stdout=self._log, stderr=subprocess.STDOUT,
                                          env=env, cwd=cwd, preexec_fn=setup)
        except FileNotFoundError as exc:
            self._log.close()
            raise BenchError(f"{name}: {cmd[0]} not found") from exc

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


@contextlib.contextmanager
def running(proc: Proc, ready: Callable[[], object], what: str,
            timeout: float = 60) -> Iterator[Proc]:
    try:
        wait_until(ready, timeout, what, proc)
        yield proc
    finally:
        proc.stop()
