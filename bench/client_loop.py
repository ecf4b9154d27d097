"""What the client-loop load generators (``bench.mongo_load``, ``bench.dynamodb_load``) share:
N forked client processes, each running its operation for ``--warmup`` seconds, waiting for the
others, then for ``--seconds`` recording latencies. The parent prints ``start`` when every client
has warmed up, ``end`` when the measured window is over, then one JSON line: ops, seconds,
p50/p99 per operation in ms, errors (what ``bench.load`` reads)."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

#: ``client(port, index, warmup, seconds, barrier, results)``: one client process; it puts
#: ``(latencies, errors)`` on ``results``.
Client = Callable[[int, int, float, float, Any, Any], None]


def timed_loop(one: Callable[[bool], None], warmup: float, seconds: float, barrier: Any) -> None:
    """``one(False)`` for ``warmup`` seconds, the barrier, then ``one(True)`` for ``seconds``."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        one(False)
    barrier.wait()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        one(True)


def main(client: Client, patience: float,
         prepare: Callable[[int], None] | None = None) -> None:
    """Parse ``--port --seconds --warmup --clients``, run ``prepare(port)`` then the clients;
    ``patience`` seconds more than the window are allowed for starting and finishing."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    if prepare is not None:
        prepare(args.port)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=client, args=(args.port, i, args.warmup, args.seconds, barrier,
                                              results)) for i in range(args.clients)]
    for p in procs:
        p.start()
    barrier.wait(timeout=patience + args.warmup)
    t0 = time.perf_counter()
    print("start", flush=True)
    collected = [results.get(timeout=args.seconds + patience) for _ in procs]
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
