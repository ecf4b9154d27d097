"""Start envoi as a real process from a YAML file, on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


# Ports handed out by free_port in this process: a test that asks for several ports before
# binding any gets distinct ones.
_HANDED_OUT: set[int] = set()
_PICK = random.Random()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, never one handed out before in this process.

    Picked below the kernel's ephemeral range: a port taken with ``bind(0)`` is one the kernel
    may give the next moment to an outgoing connection (of the test's own clients or proxies),
    and a server started on it then fails with "address already in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = 20000, _ephemeral_low()
    for _ in range(200 if high - low >= 1000 else 0):
        port = _PICK.randrange(low, high)
        if port not in _HANDED_OUT and _bindable(family, host, port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket(family, socket.SOCK_STREAM) as s:  # no usable range: the kernel picks
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _HANDED_OUT.add(port)
    return port


def wait_for(predicate: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the predicate may fail while the server starts
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


class EnvoiExited(AssertionError):
    """The proxy process exited while it was starting; the message is its own output."""

    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(f"envoi exited with status {returncode} while starting:\n"
                         f"{output.rstrip()}")
        self.returncode = returncode
        self.output = output


class EnvoiProcess:
    """``python -m envoi -c <file>`` in a subprocess, with helpers to read its admin.

    Its output goes to a temporary log file (``log()``), removed by ``stop()`` (``log()`` still
    answers afterwards). A process that exits while starting fails ``start()`` at once with
    :class:`EnvoiExited`, whose message is the proxy's own error.

    It runs ``--concurrency 1`` (one process, as a test usually wants: stats and load-balancing
    order are then exact) unless ``args`` says ``--concurrency`` or ``concurrency`` is given;
    ``concurrency=None`` leaves envoi's default (one worker per core)."""

    def __init__(self, config: str | Path, admin_port: int, *,
                 args: Sequence[str] = (), env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, command: Sequence[str] | None = None,
                 concurrency: int | None = 1) -> None:
        self.config_path = Path(config)
        self.admin_port = admin_port
        self.args = list(args)
        if concurrency is not None and not any(
                a == "--concurrency" or a.startswith("--concurrency=") for a in self.args):
            self.args += ["--concurrency", str(concurrency)]
        self.env = env
        self.cwd = cwd
        self.command = list(command) if command else [sys.executable, "-m", "envoi"]
        self.proc: subprocess.Popen[bytes] | None = None
        # Kept open for the process's life; the path is read back by log().
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="envoi-", suffix=".log", delete=False
        )
        self._final_log: str | None = None

    @classmethod
    def from_yaml(cls, text: str, directory: str | Path, admin_port: int,
                  **kw: Any) -> EnvoiProcess:
        path = Path(directory) / "envoi.yaml"
        path.write_text(text)
        return cls(path, admin_port, **kw)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> EnvoiProcess:
        env = dict(os.environ if self.env is None else self.env)
        self.proc = subprocess.Popen(
            [*self.command, "-c", str(self.config_path), *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
        )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for ``/ready``; raise :class:`EnvoiExited` as soon as the process exits."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                output = self.log()
                self.stop()
                raise EnvoiExited(self.proc.returncode, output)
            try:
                if self.get("/ready", timeout=1.0)[0] == 200:
                    return
            except OSError as exc:  # not listening yet
                last = exc
            time.sleep(0.02)
        raise TimeoutError(f"envoi was not ready after {timeout}s (last error: {last}); "
                           f"its output:\n{self.log()}")

    def get(self, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, str]:
        req = urllib.request.Request(self.admin_url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str) -> tuple[int, str]:
        return self.get(path, method="POST")

    def stats(self) -> dict[str, Any]:
        """Counters and gauges from ``/stats?format=json`` by name."""
        status, body = self.get("/stats?format=json")
        assert status == 200, body
        out: dict[str, Any] = {}
        for entry in json.loads(body)["stats"]:
            if "name" in entry:
                out[entry["name"]] = entry["value"]
        return out

    def wait_stat(self, name: str, predicate: Callable[[Any], bool] | int,
                  timeout: float = 20.0) -> Any:
        """Wait until stat ``name`` equals ``predicate`` (or satisfies it); return its value."""
        want = predicate

        def check(v: Any) -> bool:
            return bool(want(v)) if callable(want) else bool(v == want)

        def probe() -> tuple[Any] | None:
            v = self.stats().get(name)
            return (v,) if v is not None and check(v) else None

        return wait_for(probe, timeout, what=f"stat {name}")[0]

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def _remove_log(self) -> None:
        self._final_log = self.log()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL after 10 s), and remove the log file."""
        if self.proc is None:
            if self._final_log is None:
                self._remove_log()
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._final_log is None:
            self._remove_log()
        return self.proc.returncode

    def __enter__(self) -> EnvoiProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
