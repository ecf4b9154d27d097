"""bench/http_hot_path.py keeps working: it builds the server from its config, proxies through
fake transports and checks every request got its response on one pooled connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hot_path_bench_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "http_hot_path.py"), "-n", "300",
                          "--reps", "1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "per request (process CPU): min" in out.stdout


def test_hot_path_bench_runs_with_one_extra_filter() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "http_hot_path.py"), "-n", "300",
                          "--reps", "1", "--filter"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "per request (process CPU): min" in out.stdout


def test_hot_path_bench_with_tracing_counts_calls() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "http_hot_path.py"), "-n", "300",
                          "--tracing", "1", "--calls"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "Python calls per request: " in out.stdout
    assert "bytecode instructions per request: " in out.stdout


def test_grpc_hot_path_bench_runs() -> None:
    """bench/grpc_hot_path.py proxies gRPC calls h2c both sides through fake transports; its
    warm-up decodes everything envoi wrote downstream and exits non-zero unless every call got
    its reply and ``grpc-status: 0`` trailers."""
    for extra in ([], ["--calls"]):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "grpc_hot_path.py"), "-n",
                              "160", "--reps", "1", *extra], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert ("Python calls per gRPC call: " if extra else "per gRPC call (process CPU, 8 per") \
            in out.stdout
