"""Python cost of one proxied HTTP/2 request (h2c downstream, HTTP/1.1 upstream), without
sockets: bench/http_hot_path.py's harness with the benchmark's h2-small shape -- 8 requests per
downstream read (h2load -m8), each answered by nginx's 100-byte response on its own pooled
upstream connection, the responses leaving in one downstream write per loop iteration.

    .venv/bin/python bench/h2_hot_path.py [-n 16000] [--reps 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.settings
from envoi.network.connection import Connection
from envoi.network.listener import ListenerStats
from envoi.server import Options, Server

sys.path.insert(0, str(Path(__file__).parent))
from http_hot_path import RESPONSE, FakeTransport

BATCH = 8
REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "http"),
           (":authority", "127.0.0.1:19000"), ("user-agent", "h2load nghttp2/1.52.0")]


def client() -> tuple[h2.connection.H2Connection, bytes]:
    """h2load's side (big windows, so it never has to acknowledge anything) and its preface."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    c.initiate_connection()
    c.increment_flow_control_window(2**31 - 1 - 65535)
    return c, c.data_to_send()


def requests(c: h2.connection.H2Connection, n: int) -> list[bytes]:
    """``n`` more requests, ``BATCH`` per read."""
    reads = []
    for _ in range(n // BATCH):
        for _ in range(BATCH):
            c.send_headers(c.get_next_available_stream_id(), REQUEST, end_stream=True)
        reads.append(c.data_to_send())
    return reads


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=16000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--config", default=str(Path(__file__).with_name("http_hot_path.yaml")))
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    server = Server(Options(config_path=args.config))
    server.load()
    listener = server.listeners[0]
    listener.stats = ListenerStats(listener.scope.scope("listener.127.0.0.1_19000"))
    upstreams: list[tuple[Any, FakeTransport]] = []
    for cluster in server.cluster_manager.clusters.values():
        async def connect(host: Any, factory: Any, **kw: Any) -> tuple[FakeTransport, Any]:
            protocol = factory()
            transport = FakeTransport()
            protocol.connection_made(transport)
            upstreams.append((protocol, transport))
            return transport, protocol
        cluster.connect = connect  # type: ignore[method-assign]

    h2c, hello = client()
    warm = requests(h2c, BATCH * 4)
    downstream = FakeTransport()
    conn = Connection(listener)
    conn.connection_made(downstream)  # type: ignore[arg-type]
    conn.data_received(hello)

    async def batch(data: bytes) -> None:
        before = len(upstreams)
        conn.data_received(data)
        for _ in range(3):
            await asyncio.sleep(0)  # new upstream connections (tasks) get made
        del before
        busy = [p for p, t in upstreams if p.handler is not None]
        for p in busy:
            p.data_received(RESPONSE)
        await asyncio.sleep(0)  # the deferred downstream write

    for data in warm:
        await batch(data)
    if len(upstreams) != BATCH:
        sys.exit(f"expected {BATCH} pooled upstream connections, got {len(upstreams)}")

    async def run(reads: list[bytes]) -> int:
        before = downstream.writes
        for data in reads:
            await batch(data)
        return downstream.writes - before

    if args.profile:
        reads = requests(h2c, args.n)
        prof = cProfile.Profile()
        prof.enable()
        await run(reads)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)
        return
    results = []
    for _ in range(args.reps):
        reads = requests(h2c, args.n)  # (made before the clock starts: the client's cost)
        t0 = time.process_time()
        writes = await run(reads)
        results.append((time.process_time() - t0) / args.n * 1e6)
        if writes < args.n // BATCH:
            sys.exit(f"responses missing: {writes} writes for {args.n // BATCH} batches")
    results.sort()
    print(f"µs per request (process CPU, {BATCH} per read): min {results[0]:.2f}  "
          f"median {results[len(results) // 2]:.2f}  max {results[-1]:.2f}  "
          f"({args.reps} x {args.n})")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
