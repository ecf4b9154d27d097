"""The code-quality gates are part of the suite: ruff everywhere, mypy --strict on the packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_ruff() -> None:
    out = run(str(BIN / "ruff"), "check", "core", "plugins", "examples", "tests", "bench")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_core_and_plugins() -> None:
    out = run(str(BIN / "mypy"), "--strict", "core/envoi", "plugins/http/envoi_http",
              "plugins/mongo/envoi_mongo", "plugins/grpc/envoi_grpc",
              "plugins/dynamodb/envoi_dynamodb")
    assert out.returncode == 0, out.stdout + out.stderr
