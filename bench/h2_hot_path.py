"""Python cost of one proxied HTTP/2 request (h2c downstream, HTTP/1.1 upstream), without
sockets: bench/http_hot_path.py's harness with the benchmark's h2-small shape -- 8 requests per
downstream read (h2load -m8), each answered by nginx's 100-byte response on its own pooled
upstream connection, the responses leaving in one downstream write per loop iteration.

    .venv/bin/python bench/h2_hot_path.py [-n 16000] [--reps 5] [--profile]
    .venv/bin/python bench/h2_hot_path.py --body 65536   # h2-64k's shape (nginx's 64 KiB file)

``--body N``: the upstream answers N bytes instead (in reads of ``--read`` bytes, as a socket
hands them over); the downstream client's windows never close, as h2load's (2^30-1) do not.
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


def upstream_reads(body: int, read: int) -> list[bytes]:
    """nginx's answer with a ``body``-byte file, cut into socket reads of ``read`` bytes."""
    if not body:
        return [RESPONSE]
    head = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 14:17:41 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            b"Last-Modified: Tue, 24 Nov 2026 14:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"6744a0e0-10000\"\r\nAccept-Ranges: bytes\r\n\r\n" % body)
    whole = head + bytes(body)
    return [whole[i:i + read] for i in range(0, len(whole), read)]

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


def requests(c: h2.connection.H2Connection, n: int, batch: int) -> list[bytes]:
    """``n`` more requests, ``batch`` per read."""
    reads = []
    for _ in range(n // batch):
        sids = [c.get_next_available_stream_id() + 2 * i for i in range(batch)]
        for sid in sids:
            c.send_headers(sid, REQUEST, end_stream=True)
        reads.append(c.data_to_send())
        # The client never reads the answers: end its streams (RST_STREAM frames thrown away),
        # or they would pile up in h2 and make the garbage collector's full passes, inside the
        # clock, grow with every repetition.
        for sid in sids:
            c.reset_stream(sid)
        c.clear_outbound_data_buffer()
    return reads


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=16000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--config", default=str(Path(__file__).with_name("http_hot_path.yaml")))
    ap.add_argument("--batch", type=int, default=BATCH, help="requests per downstream read")
    ap.add_argument("--body", type=int, default=0, help="response body bytes (0: nginx's 100)")
    ap.add_argument("--read", type=int, default=65536, help="upstream bytes per read (--body)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--dump", help="also write the profile (pstats) to this file")
    ap.add_argument("--sort", default="tottime", help="profile order (pstats key)")
    ap.add_argument("--top", type=int, default=40, help="profile lines")
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

    answer = upstream_reads(args.body, args.read)
    h2c, hello = client()
    warm = requests(h2c, BATCH * 4, BATCH)
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
            for chunk in answer:
                p.data_received(chunk)
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
        reads = requests(h2c, args.n, args.batch)
        prof = cProfile.Profile()
        prof.enable()
        await run(reads)
        prof.disable()
        if args.dump:
            prof.dump_stats(args.dump)
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
        return
    results = []
    for _ in range(args.reps):
        reads = requests(h2c, args.n, args.batch)  # (before the clock: the client's cost)
        t0 = time.process_time()
        writes = await run(reads)
        results.append((time.process_time() - t0) / args.n * 1e6)
        if writes < args.n // args.batch:
            sys.exit(f"responses missing: {writes} writes for {args.n // args.batch} batches")
    results.sort()
    print(f"µs per request (process CPU, {args.batch} per read): min {results[0]:.2f}  "
          f"median {results[len(results) // 2]:.2f}  max {results[-1]:.2f}  "
          f"({args.reps} x {args.n})")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
