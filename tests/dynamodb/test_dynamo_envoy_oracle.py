"""The real Envoy as the oracle for DynamoDB traffic.

Stock Envoy 1.39.3 has no dynamo filter (it lives in Envoy's contrib build): it refuses
``configs/dynamo.yaml``. What it can run is ``configs/dynamo_passthrough.yaml`` (the same HCM and
router, with an access log of ``X-Amz-Target``). The same boto3 run (the reference run of
``envoy-observed.md`` section 4) goes through Envoy on that config, envoi on that config, and
envoi with the dynamo filter; boto3's results, the access-log lines and the HTTP and cluster
stats must be equal, and the dynamo filter must add exactly the stat names the reference
derives from Envoy's contrib source (``envoy.md`` section e).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddb_workload import (
    CONFIGS,
    dynamo_counters,
    expected_dynamo_stats,
    moto_server,
    reference_workload,
    reset_moto,
)
from envoi.testing import EnvoyProcess, free_port, wait_for

COMPARED = (
    "http.ddb.downstream_rq_total", "http.ddb.downstream_rq_2xx", "http.ddb.downstream_rq_4xx",
    "http.ddb.downstream_rq_completed", "http.ddb.downstream_cx_total",
    "cluster.dynamodb.upstream_rq_total", "cluster.dynamodb.upstream_rq_200",
    "cluster.dynamodb.upstream_rq_400", "cluster.dynamodb.upstream_rq_completed",
    "cluster.dynamodb.upstream_cx_total", "cluster.dynamodb.upstream_cx_close_notify",
    "cluster.dynamodb.upstream_cx_connect_fail",
    "cluster.dynamodb.upstream_rq_pending_failure_eject",
)
LINE = re.compile(r"^ddb target=(\S+) status=(\d+) rx=(\d+) tx=\d+ dur=\d+$", re.M)


def render(name: str, admin: int, listen: int, upstream: int) -> str:
    text = (CONFIGS / name).read_text()
    return text.replace("18005", str(admin)).replace("18500", str(listen)) \
        .replace("18501", str(upstream))


def access_lines(log: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in LINE.finditer(log)]


def test_passthrough_and_filter_against_envoy(
        proxy_process: Callable[[str, str, int], Any], tmp_path: Path) -> None:
    runs: dict[str, tuple[Any, dict[str, Any], list[tuple[str, ...]]]] = {}
    with moto_server() as upstream:
        port = int(upstream.rsplit(":", 1)[1])
        for label, kind, config in (("envoy", "envoy", "dynamo_passthrough.yaml"),
                                    ("envoi", "envoi", "dynamo_passthrough.yaml"),
                                    ("envoi+dynamo", "envoi", "dynamo.yaml")):
            reset_moto(upstream)
            admin, listen = free_port(), free_port()
            proc = proxy_process(kind, render(config, admin, listen, port), admin)
            calls = reference_workload(f"http://127.0.0.1:{listen}")
            n = sum(calls.statuses.values())
            wait_for(lambda p=proc, n=n: p.stats().get("http.ddb.downstream_rq_completed") == n,
                     20, what=f"{label}: {n} requests completed")
            log = proc.log.read_text() if isinstance(proc, EnvoyProcess) else proc.log()
            if config == "dynamo_passthrough.yaml":
                wait_for(lambda p=proc, n=n: len(access_lines(
                    p.log.read_text() if isinstance(p, EnvoyProcess) else p.log())) == n, 20,
                    what=f"{label}: access log")
                log = proc.log.read_text() if isinstance(proc, EnvoyProcess) else proc.log()
            runs[label] = (calls, proc.stats(), access_lines(log))

    envoy_calls, envoy_stats, envoy_log = runs["envoy"]
    assert len(envoy_log) == 8
    assert [t for t, _, _ in envoy_log] == [
        "DynamoDB_20120810." + op for op in (
            "CreateTable", "PutItem", "GetItem", "BatchWriteItem", "Query", "PutItem",
            "DescribeTable", "DeleteTable")]
    for label in ("envoi", "envoi+dynamo"):
        calls, stats, log = runs[label]
        assert calls.results == envoy_calls.results, label
        assert calls.statuses == envoy_calls.statuses, label
        for name in COMPARED:
            assert stats.get(name, 0) == envoy_stats.get(name, 0), (label, name)
        if label == "envoi":
            assert log == envoy_log  # target, status and request bytes per request
    # Envoy opened one upstream connection per request (moto closes), kept one downstream.
    assert envoy_stats["cluster.dynamodb.upstream_cx_total"] == 8
    assert envoy_stats["http.ddb.downstream_cx_total"] == 1

    # What the contrib filter would add for this run, per envoy.md section e.
    calls, stats, _ = runs["envoi+dynamo"]
    got = dynamo_counters(stats, "ddb")
    assert got == expected_dynamo_stats(calls, "ddb")
    ops = {"CreateTable", "PutItem", "GetItem", "BatchWriteItem", "Query", "DescribeTable",
           "DeleteTable"}
    assert {k.split(".")[4] for k in got if ".operation." in k} == ops
    for name in ("table.orders.upstream_rq_total_200", "table.orders.upstream_rq_total_400",
                 "table.missing.upstream_rq_total_400"):
        assert got["http.ddb.dynamodb." + name] >= 1, name
    assert got["http.ddb.dynamodb.error.orders.ConditionalCheckFailedException"] == 1
    assert got["http.ddb.dynamodb.error.missing.ResourceNotFoundException"] == 1
    assert not any(k in got for k in ("http.ddb.dynamodb.invalid_req_body",
                                      "http.ddb.dynamodb.invalid_resp_body",
                                      "http.ddb.dynamodb.table_missing"))


def test_stock_envoy_refuses_the_dynamo_filter_envoi_runs_it(tmp_path: Path) -> None:
    """Envoy's own answer to configs/dynamo.yaml (why the passthrough is the oracle), and
    envoi validating the same file."""
    import subprocess
    import sys

    from envoi.testing import envoy_binary

    cfg = tmp_path / "dynamo.yaml"
    cfg.write_text(render("dynamo.yaml", free_port(), free_port(), free_port()))
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(cfg)],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode != 0
    assert "envoy.extensions.filters.http.dynamo.v3.Dynamo" in envoy.stdout + envoy.stderr
    envoi = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                           capture_output=True, text=True, timeout=60)
    assert envoi.returncode == 0, envoi.stderr
