"""A pymongo load loop: N client processes, each ``insert_one`` + ``find_one`` (checked) in a
loop. Prints ``start`` when every client has warmed up, ``end`` when the measured window is
over, then one JSON line: ops, seconds, p50/p99 per operation in ms, errors.

    python -m bench.mongo_load --port 27017 --seconds 5 --warmup 1 --clients 4
"""

from __future__ import annotations

import time
from typing import Any

from bench.client_loop import main, timed_loop


def _client(port: int, index: int, warmup: float, seconds: float, barrier: Any,
            results: Any) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=10000")
    coll = client.bench[f"c{index}_{int(time.time() * 1000)}"]
    latencies: list[float] = []
    errors = 0
    i = 0

    def one_pair(record: bool) -> None:
        nonlocal i, errors
        t0 = time.perf_counter()
        coll.insert_one({"_id": i, "sku": f"sku-{i}", "qty": i % 17, "tags": ["a", "b"]})
        t1 = time.perf_counter()
        doc = coll.find_one({"_id": i})
        t2 = time.perf_counter()
        if doc is None or doc["qty"] != i % 17:
            errors += 1
        if record:
            latencies.extend((t1 - t0, t2 - t1))
        i += 1

    try:
        timed_loop(one_pair, warmup, seconds, barrier)
    finally:
        client.close()
    results.put((latencies, errors))


if __name__ == "__main__":
    main(_client, patience=60)
