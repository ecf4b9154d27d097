"""A pymongo load loop: N client processes, each ``insert_one`` + ``find_one`` (checked) in a
loop. Prints ``start`` when every client has warmed up, ``end`` when the measured window is
over, then one JSON line: ops, seconds, p50/p99 per operation in ms, errors.

    python -m bench.mongo_load --port 27017 --seconds 5 --warmup 1 --clients 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from typing import Any


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
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            one_pair(False)
        barrier.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            one_pair(True)
    finally:
        client.close()
    results.put((latencies, errors))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(args.port, i, args.warmup, args.seconds, barrier,
                                               results)) for i in range(args.clients)]
    for p in procs:
        p.start()
    barrier.wait(timeout=60 + args.warmup)
    t0 = time.perf_counter()
    print("start", flush=True)
    collected = [results.get(timeout=args.seconds + 60) for _ in procs]
    elapsed = time.perf_counter() - t0
    print("end", flush=True)
    for p in procs:
        p.join(30)
    latencies = sorted(x for lat, _ in collected for x in lat)
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else 0.0

    print(json.dumps({"ops": n, "seconds": elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                      "errors": sum(e for _, e in collected)}), flush=True)


if __name__ == "__main__":
    main()
