"""bench/h2_codec_cost.py keeps working (it also asserts every stream it opened was closed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_h2_codec_cost_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "h2_codec_cost.py"), "-n", "200",
                          "--reps", "1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == [
        "h2", "h2", "envoi", "envoi"]
