"""The DynamoDB peers of the tests: moto's server on a free port, a boto3 client, the workload
the issue names (every result checked), and what the dynamo filter must count for it.

moto (``moto[server,dynamodb]``, pinned in requirements/test.txt) answers every request with
``Connection: close``, so each call is a new upstream connection: the proxy's pool must cope.
"""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

CONFIGS = Path(__file__).resolve().parent / "configs"


@contextmanager
def moto_server() -> Iterator[str]:
    """A DynamoDB-compatible endpoint (``http://127.0.0.1:<port>``) for the block, empty (moto
    keeps its state per process, so a second server would see the first one's tables)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        reset_moto(endpoint)
        yield endpoint
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    req = urllib.request.Request(endpoint + "/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def client(endpoint: str) -> Any:
    """A boto3 DynamoDB client for ``endpoint`` that never retries: a response the proxy
    damaged (a body that no longer matches ``x-amz-crc32``) fails the call instead of being
    retried away."""
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"},
                                      connect_timeout=10, read_timeout=30))


@dataclass
class Calls:
    """What the client sent and got: (operation, HTTP status) per call, and the results."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    results: dict[str, Any] = field(default_factory=dict)

    def record(self, ddb: Any) -> None:
        def seen(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
            self.statuses[(operation_model.name, response_dict["status_code"])] += 1

        ddb.meta.events.register("before-parse.dynamodb.*", seen)


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs from run to run (request ids, dates, timestamps)."""
    out = {k: v for k, v in result.items() if k != "ResponseMetadata"}
    table = out.get("TableDescription") or out.get("Table")
    if isinstance(table, dict):
        table = {k: v for k, v in table.items()
                 if k not in ("CreationDateTime", "TableArn", "TableId", "LatestStreamArn")}
        out["TableDescription" if "TableDescription" in out else "Table"] = table
    assert result["ResponseMetadata"]["RetryAttempts"] == 0
    return out


def _error(exc: ClientError) -> dict[str, Any]:
    return {"code": exc.response["Error"]["Code"],
            "status": exc.response["ResponseMetadata"]["HTTPStatusCode"]}


def issue_workload(endpoint: str, table: str = "orders") -> Calls:
    """The issue's sequence through ``endpoint``: every result checked here, returned (without
    what varies between runs) for comparison across proxies."""
    ddb = client(endpoint)
    calls = Calls()
    calls.record(ddb)
    r = calls.results

    r["create"] = _strip(ddb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}]))
    ddb.get_waiter("table_exists").wait(TableName=table,
                                        WaiterConfig={"Delay": 1, "MaxAttempts": 20})

    item = {"pk": {"S": "a"}, "sk": {"N": "0"}, "v": {"S": "first"}}
    r["put"] = _strip(ddb.put_item(TableName=table, Item=item))
    got = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}, "sk": {"N": "0"}},
                       ConsistentRead=True)
    assert got["Item"] == item
    r["get"] = _strip(got)

    batch = [{"PutRequest": {"Item": {"pk": {"S": "q"}, "sk": {"N": str(i)},
                                      "blob": {"S": "x" * (i * 10)}}}} for i in range(1, 11)]
    written = ddb.batch_write_item(RequestItems={table: batch})
    assert not written["UnprocessedItems"]
    r["batch_write"] = _strip(written)

    keys = [{"pk": {"S": "q"}, "sk": {"N": str(i)}} for i in (2, 4, 6, 8)]
    fetched = ddb.batch_get_item(RequestItems={table: {"Keys": keys}})
    assert sorted(int(i["sk"]["N"]) for i in fetched["Responses"][table]) == [2, 4, 6, 8]
    assert not fetched["UnprocessedKeys"]
    r["batch_get"] = sorted(int(i["sk"]["N"]) for i in fetched["Responses"][table])

    pages: list[list[int]] = []
    start: dict[str, Any] | None = None
    while True:
        kw: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        page = ddb.query(TableName=table, KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": {"S": "q"}}, Limit=4, **kw)
        pages.append([int(i["sk"]["N"]) for i in page["Items"]])
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert [sk for p in pages for sk in p] == list(range(1, 11))
    assert all(len(p) <= 4 for p in pages) and len(pages) >= 3
    r["query_pages"] = pages

    scanned = ddb.scan(TableName=table)
    assert scanned["Count"] == 11
    r["scan_count"] = scanned["Count"]

    updated = ddb.update_item(
        TableName=table, Key={"pk": {"S": "a"}, "sk": {"N": "0"}},
        UpdateExpression="SET v = :v ADD n :one",
        ExpressionAttributeValues={":v": {"S": "second"}, ":one": {"N": "1"}},
        ReturnValues="ALL_NEW")
    assert updated["Attributes"]["v"] == {"S": "second"}
    assert updated["Attributes"]["n"] == {"N": "1"}
    r["update"] = _strip(updated)

    with pytest.raises(ClientError) as failed:
        ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
    assert _error(failed.value) == {"code": "ConditionalCheckFailedException", "status": 400}
    r["conditional_put"] = _error(failed.value)

    with pytest.raises(ClientError) as missing:
        ddb.describe_table(TableName="missing")
    assert _error(missing.value) == {"code": "ResourceNotFoundException", "status": 400}
    r["describe_missing"] = _error(missing.value)

    r["transact"] = _strip(ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": table, "Item": {"pk": {"S": "t"}, "sk": {"N": "1"}}}},
        {"Update": {"TableName": table, "Key": {"pk": {"S": "a"}, "sk": {"N": "0"}},
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": {"S": "third"}}}}]))
    got = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}, "sk": {"N": "0"}})
    assert got["Item"]["v"] == {"S": "third"}

    stmt = ddb.execute_statement(Statement=f'SELECT * FROM "{table}" WHERE pk = ?',
                                 Parameters=[{"S": "t"}])
    assert [i["pk"] for i in stmt["Items"]] == [{"S": "t"}]
    r["statement"] = stmt["Items"]

    r["delete"] = _strip(ddb.delete_table(TableName=table))["TableDescription"]["TableName"]
    return calls


def reference_workload(endpoint: str) -> Calls:
    """The boto3 run of ``envoy-observed.md`` section 4 (what Envoy's passthrough carried):
    CreateTable, PutItem, GetItem, BatchWriteItem (4 items), Query, a failed conditional PutItem,
    DescribeTable on a missing table, DeleteTable."""
    ddb = client(endpoint)
    calls = Calls()
    calls.record(ddb)
    r = calls.results
    r["create"] = _strip(ddb.create_table(
        TableName="orders", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}]))
    r["put"] = _strip(ddb.put_item(TableName="orders", Item={"pk": {"S": "a"}}))
    r["get"] = _strip(ddb.get_item(TableName="orders", Key={"pk": {"S": "a"}}))
    r["batch"] = _strip(ddb.batch_write_item(RequestItems={"orders": [
        {"PutRequest": {"Item": {"pk": {"S": f"b{i}"}}}} for i in range(4)]}))
    r["query"] = _strip(ddb.query(TableName="orders", KeyConditionExpression="pk = :p",
                                  ExpressionAttributeValues={":p": {"S": "a"}}))
    with pytest.raises(ClientError) as failed:
        ddb.put_item(TableName="orders", Item={"pk": {"S": "a"}},
                     ConditionExpression="attribute_not_exists(pk)")
    r["conditional_put"] = _error(failed.value)
    with pytest.raises(ClientError) as missing:
        ddb.describe_table(TableName="missing")
    r["describe_missing"] = _error(missing.value)
    r["delete"] = _strip(ddb.delete_table(TableName="orders"))["TableDescription"]["TableName"]
    return calls


def expected_dynamo_stats(calls: Calls, prefix: str, table: str = "orders",
                          missing: str = "missing") -> dict[str, int]:
    """Every non-zero counter the dynamo filter must have under ``http.<prefix>.dynamodb.`` for
    ``calls`` (each call names ``table``, except DescribeTable on ``missing``)."""
    p = f"http.{prefix}.dynamodb."
    out: Counter[str] = Counter()
    for (op, status), n in calls.statuses.items():
        group = f"{status // 100}xx"
        name = missing if (op, status) == ("DescribeTable", 400) else table
        for kind, entity in (("operation", op), ("table", name)):
            for suffix in ("", f"_{group}", f"_{status}"):
                out[f"{p}{kind}.{entity}.upstream_rq_total{suffix}"] += n
    for (op, status), n in calls.statuses.items():
        if (op, status) == ("PutItem", 400):
            out[f"{p}error.{table}.ConditionalCheckFailedException"] += n
        elif (op, status) == ("DescribeTable", 400):
            out[f"{p}error.{missing}.ResourceNotFoundException"] += n
        else:
            assert status == 200, (op, status)
    return dict(out)


def dynamo_counters(stats: dict[str, Any], prefix: str) -> dict[str, int]:
    p = f"http.{prefix}.dynamodb."
    return {k: v for k, v in stats.items() if k.startswith(p) and v}


def histogram_counts(prometheus_text: str, metric_prefix: str) -> dict[str, int]:
    """``<metric>{labels}`` -> sample count, for the histograms whose name starts with
    ``metric_prefix`` (``envoy_http_dynamodb_``) in ``/stats/prometheus`` output."""
    out: dict[str, int] = {}
    for line in prometheus_text.splitlines():
        if line.startswith(metric_prefix) and "_count{" in line:
            key, value = line.rsplit(" ", 1)
            out[key.replace("_count{", "{", 1)] = int(float(value))
    return out
