"""A boto3 DynamoDB load loop: N client processes, each ``PutItem`` + ``GetItem`` (checked) in a
loop against ``http://127.0.0.1:<port>``. The table (``bench``) is made first if it is missing.
Prints ``start`` when every client has warmed up, ``end`` when the measured window is over, then
one JSON line: ops, seconds, p50/p99 per operation in ms, errors. Same protocol as
``bench.mongo_load``.

    python -m bench.dynamodb_load --port 8000 --seconds 5 --warmup 1 --clients 4
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.client_loop import main, timed_loop

TABLE = "bench"


def client(port: int) -> Any:
    import boto3
    import botocore.config

    return boto3.client(
        "dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
        # No retries: an answer the proxy damaged (x-amz-crc32) is an error, not a retry.
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"},
                                      max_pool_connections=1))


def ensure_table(port: int) -> None:
    from botocore.exceptions import ClientError

    ddb = client(port)
    try:
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    ddb.get_waiter("table_exists").wait(TableName=TABLE,
                                        WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def _loop(port: int, index: int, warmup: float, seconds: float, barrier: Any,
          results: Any) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    ddb = client(port)
    prefix = f"c{index}-{os.getpid()}-"
    latencies: list[float] = []
    errors = 0
    i = 0

    def one_pair(record: bool) -> None:
        nonlocal i, errors
        key = {"pk": {"S": f"{prefix}{i}"}}
        item = {**key, "sku": {"S": f"sku-{i}"}, "qty": {"N": str(i % 17)},
                "tags": {"SS": ["a", "b"]}}
        try:
            t0 = time.perf_counter()
            ddb.put_item(TableName=TABLE, Item=item)
            t1 = time.perf_counter()
            got = ddb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
            t2 = time.perf_counter()
        except (ClientError, BotoCoreError):
            errors += 1
        else:
            if got.get("Item") != item:
                errors += 1
            if record:
                latencies.extend((t1 - t0, t2 - t1))
        i += 1

    timed_loop(one_pair, warmup, seconds, barrier)
    results.put((latencies, errors))


if __name__ == "__main__":
    main(_loop, patience=120, prepare=ensure_table)
