"""The benchmark suite's short mode (``python -m bench --short``) runs every scenario against
the direct path, Envoy and envoi at --concurrency 1 and 2, and the memory scaling tests, and
fails if any of them errors or a peer is missing. No figures are asserted: those are compared
in a full run, as ratios against Envoy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_short_benchmark_suite_runs_everything(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--short", "--json", str(out_json),
                          "--markdown", str(out_md)], capture_output=True, text=True,
                         timeout=880, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    doc = json.loads(out_json.read_text())
    assert doc["failed"] == []
    meta = doc["meta"]
    assert meta["event_loop"] and meta["http1_codec"] and "1.39.3" in meta["envoy"]
    ran = {(r["scenario"], r["concurrency"], r["peer"]) for r in doc["rows"]}
    pending = {p["scenario"] for p in doc["pending"]}
    assert doc["concurrency"] == [1, 2]
    assert {"h1-small", "h1-64k", "tcp_proxy", "mongo", "dynamodb"} <= \
        set(doc["scenarios"]) - pending
    for name in doc["scenarios"]:
        if name in pending:
            continue
        for c in (1, 2):
            for peer in ("direct", "envoy", "envoi"):
                assert (name, c, peer) in ran, (name, c, peer)
    for c in (1, 2):  # the dynamo filter's cost: envoi without it, in the same run
        assert ("dynamodb", c, "envoi-base") in ran
    for r in doc["rows"]:
        assert not r["error"] and r["errors"] == 0 and r["rps"] > 0, r
        if r["peer"] != "direct":
            assert r["cpu_us_per_req"] > 0 and r["rss_bytes"] > 0, r
            assert 0 < r["rss_max_process_bytes"] <= r["rss_bytes"], r
            if r["concurrency"] == 1 and r["peer"] != "envoy":
                assert r["rss_max_process_bytes"] == r["rss_bytes"], r
    tests = {(m["test"], m["concurrency"], m["peer"]) for m in doc["memory"]}
    assert {("idle", 1, "envoi"), ("idle", 2, "envoi"), ("upload", 1, "envoi"),
            ("idle", 1, "envoy"), ("upload", 1, "envoy")} <= tests
    assert not any(m.get("error") for m in doc["memory"])
    table = out_md.read_text()
    assert "| h1-small |" in table and "Envoy" in table
    assert "dynamodb --concurrency 1: the filter costs" in table


@pytest.mark.timeout(300)
def test_scaling_breakdown_runs(tmp_path: Path) -> None:
    """``python -m bench.scaling``: CPU per request of the proxy, wrk and nginx, connections and
    CPU per worker (two workers: each accepted some of wrk's 64 connections), and the ceilings."""
    out_json = tmp_path / "scaling.json"
    run = subprocess.run([sys.executable, "-m", "bench.scaling", "--peers", "envoi",
                          "--layouts", "c1-pinned,c2-shared", "--seconds", "1", "--reps", "1",
                          "--json", str(out_json)], capture_output=True, text=True,
                         timeout=280, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    runs = {r["layout"]: r for r in json.loads(out_json.read_text())}
    assert runs.keys() == {"c1-pinned", "c2-shared"}
    for r in runs.values():
        assert r["rps"] > 0 and r["proxy_us"] > 0 and r["wrk_us"] > 0 and r["nginx_us"] > 0, r
    c2 = runs["c2-shared"]
    assert len(c2["worker_cx"]) == 2 and sum(c2["worker_cx"]) >= 64, c2
    assert len(c2["worker_cpu_share"]) == 2, c2
    assert "c2 / c1: measured" in run.stdout and "ceilings" in run.stdout
