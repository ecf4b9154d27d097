"""The HTTP filter template, as a third party would use it: copied out of the repository, built
into a fresh venv that holds only envoi's public packages (envoi, envoi-http) and pytest, and
its own tests run there -- the socket-free driver and the envoi_process fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "examples" / "third_party_http_filter"


def run(*cmd: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                         env=env, timeout=900)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


def pinned(name: str) -> str:
    for line in (ROOT / "requirements" / "test.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise AssertionError(f"{name} is not pinned in requirements/test.txt")


def test_template_builds_and_passes_its_own_tests_in_a_fresh_venv(tmp_path: Path) -> None:
    work = tmp_path / "acme-filter"
    shutil.copytree(TEMPLATE, work, ignore=shutil.ignore_patterns(
        "*.egg-info", "__pycache__", "build"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    base = getattr(sys, "_base_executable", sys.executable)
    venv = tmp_path / "venv"
    run(base, "-m", "venv", venv, cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    pip = (py, "-m", "pip", "install", "-q")
    # The pinned runtime requirements, then envoi's two public packages and the template.
    run(*pip, "-r", ROOT / "requirements" / "core.txt", "-r", ROOT / "requirements" / "http.txt",
        pinned("pytest"), cwd=tmp_path, env=env)
    run(*pip, "--no-deps", ROOT, ROOT / "plugins" / "http", cwd=tmp_path, env=env)
    run(*pip, "--no-deps", f"{work}[test]", cwd=tmp_path, env=env)
    listed = run(py, "-m", "pip", "list", "--format=freeze", cwd=tmp_path, env=env).stdout
    names = {line.split("==")[0].lower() for line in listed.split()}
    assert {"envoi", "envoi-http", "envoi-example-http-filter"} <= names
    assert not names & {"envoi-mongo", "envoi-grpc", "envoi-dynamodb", "httpx"}
    out = run(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=work, env=env)
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout
