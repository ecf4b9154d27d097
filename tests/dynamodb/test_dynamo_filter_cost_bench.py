"""bench/dynamo_filter_cost.py keeps working: it builds the server from the benchmark's DynamoDB
configs (with and without the filter, and with it switched off by runtime), proxies boto3's
PutItem and GetItem bytes through fake transports, and checks every response came out and the
filter counted every request (and, switched off, none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dynamo_filter_cost_bench_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.dynamo_filter_cost", "-n", "300",
                          "--reps", "1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "and the filter's own work:" in out.stdout
