"""bench/h2_codec_cost.py keeps working, its gRPC rows too (it asserts every stream it opened was
closed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_h2_codec_cost_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "h2_codec_cost.py"), "-n", "200",
                          "--reps", "1", "--grpc"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [line.rsplit(None, 2)[0] for line in out.stdout.splitlines()[1:]
            if not line.startswith("(")]
    expected = ["h2 default", "h2 bare", "envoi", "envoi no-memo", "envoi gRPC", "h2 bare gRPC"]
    assert [r for r in rows if not r.startswith("ngh2")] == expected
