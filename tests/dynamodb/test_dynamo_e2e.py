"""boto3 -> envoi (http_connection_manager + envoy.filters.http.dynamo + router) -> moto.

The reference config (``configs/dynamo.yaml``, the one the stock Envoy refuses) runs in a real
envoi process; boto3 runs the issue's workload through it with retries off, so every result is
checked as it arrives and a damaged response (``x-amz-crc32``) would fail the call. Every
``http.ddb.dynamodb.*`` counter is then asserted by name and value, every histogram by its
sample count, and the upstream pool's stats show moto's close-per-response was absorbed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddb_workload import (
    CONFIGS,
    dynamo_counters,
    expected_dynamo_stats,
    histogram_counts,
    issue_workload,
    moto_server,
)
from envoi.testing import EnvoiProcess, free_port


def dynamo_config(upstream_port: int) -> tuple[str, int, int]:
    admin, listen = free_port(), free_port()
    text = (CONFIGS / "dynamo.yaml").read_text()
    text = text.replace("18005", str(admin)).replace("18500", str(listen))
    return text.replace("18501", str(upstream_port)), admin, listen


def test_boto3_workload_through_the_dynamo_filter(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    with moto_server() as upstream:
        text, admin, listen = dynamo_config(int(upstream.rsplit(":", 1)[1]))
        proc = envoi_process(text, admin)
        calls = issue_workload(f"http://127.0.0.1:{listen}")
        stats = proc.stats()
        prometheus = proc.get("/stats/prometheus")[1]

    n = sum(calls.statuses.values())
    ops = {op for op, _ in calls.statuses}
    assert ops == {"CreateTable", "DescribeTable", "PutItem", "GetItem", "BatchWriteItem",
                   "BatchGetItem", "Query", "Scan", "UpdateItem", "TransactWriteItems",
                   "ExecuteStatement", "DeleteTable"}

    # Every dynamo counter, by name and value; nothing else (no invalid_*, no *_missing).
    expected = expected_dynamo_stats(calls, "ddb")
    assert dynamo_counters(stats, "ddb") == expected
    assert expected["http.ddb.dynamodb.error.orders.ConditionalCheckFailedException"] == 1
    assert expected["http.ddb.dynamodb.error.missing.ResourceNotFoundException"] == 1
    assert expected["http.ddb.dynamodb.table.missing.upstream_rq_total_400"] == 1
    assert expected["http.ddb.dynamodb.operation.Query.upstream_rq_total_200"] >= 3

    # Each upstream_rq_time histogram got one sample per call it covers.
    counts = histogram_counts(prometheus, "envoy_http_dynamodb_")
    want: dict[str, int] = {}
    for name, value in expected.items():
        if ".upstream_rq_total" not in name:
            continue
        parts = name.split(".")  # http ddb dynamodb <kind> <entity> upstream_rq_total[_x]
        kind, entity, stat = parts[3], parts[4], parts[5]
        metric = f"envoy_http_dynamodb_{kind}_{stat.replace('total', 'time')}"
        label = "envoy_dynamo_operation" if kind == "operation" else "envoy_dynamo_table"
        want[f'{metric}{{{label}="{entity}",envoy_http_conn_manager_prefix="ddb"}}'] = value
    assert counts == want

    # The HTTP side: one downstream connection, one upstream connection per request (moto
    # closes after each response), no failures.
    assert stats["http.ddb.downstream_rq_total"] == n
    assert stats["http.ddb.downstream_cx_total"] == 1
    assert stats["cluster.dynamodb.upstream_rq_total"] == n
    assert stats["cluster.dynamodb.upstream_cx_total"] == n
    assert stats["cluster.dynamodb.upstream_rq_400"] == 2
    assert stats["cluster.dynamodb.upstream_rq_200"] == n - 2
    assert stats.get("cluster.dynamodb.upstream_rq_503", 0) == 0
    assert stats.get("cluster.dynamodb.upstream_cx_connect_fail", 0) == 0


def test_runtime_switch_turns_the_filter_off_and_on(
        envoi_process: Callable[..., EnvoiProcess]) -> None:
    from ddb_workload import client

    with moto_server() as upstream:
        text, admin, listen = dynamo_config(int(upstream.rsplit(":", 1)[1]))
        text += "layered_runtime:\n  layers:\n  - name: admin\n    admin_layer: {}\n"
        proc = envoi_process(text, admin)
        ddb = client(f"http://127.0.0.1:{listen}")
        assert proc.post("/runtime_modify?dynamodb.filter_enabled=0")[0] == 200
        assert ddb.list_tables()["TableNames"] == []
        stats: dict[str, Any] = proc.stats()
        assert dynamo_counters(stats, "ddb") == {}
        assert stats["http.ddb.downstream_rq_total"] == 1
        assert proc.post("/runtime_modify?dynamodb.filter_enabled=100")[0] == 200
        assert ddb.list_tables()["TableNames"] == []
        assert dynamo_counters(proc.stats(), "ddb") == {
            "http.ddb.dynamodb.operation.ListTables.upstream_rq_total": 1,
            "http.ddb.dynamodb.operation.ListTables.upstream_rq_total_2xx": 1,
            "http.ddb.dynamodb.operation.ListTables.upstream_rq_total_200": 1,
            "http.ddb.dynamodb.table_missing": 1,
        }
