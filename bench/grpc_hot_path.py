"""Python cost of one proxied gRPC unary call (h2c both sides), without sockets: the
``grpc-unary`` scenario's shape -- h2load POSTs a framed ``HelloRequest`` on 8 streams per read;
the upstream (nghttpd in the peer benchmark) answers every call with HEADERS, one DATA frame (a
framed ``HelloReply``) and a ``grpc-status: 0`` trailer on one pooled HTTP/2 connection.

    .venv/bin/python bench/grpc_hot_path.py [-n 16000] [--reps 5] [--calls] [--profile]

Both fake peers write their frames by hand (a fixed HPACK block, struct-packed frame headers),
so what is measured is envoi's work: the downstream h2 codec, the connection manager, router
and the upstream h2 pool and codec. ``--calls`` prints Python function calls per call (one
repetition under cProfile): independent of the machine's load, unlike the timings. Compare with
``bench/h2_hot_path.py`` (h2-small: the same downstream, an HTTP/1.1 upstream).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from envoi.network.connection import Connection
from envoi.network.listener import ListenerStats
from envoi.server import Options, Server
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

sys.path.insert(0, str(Path(__file__).parent))
from configs import GRPC_PATH, GRPC_REPLY, GRPC_REQUEST, grpc_proxy
from http_hot_path import FakeTransport

BATCH = 8


class Transport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.kept: bytearray | None = None  # every write, while the warm-up checks them

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.kept is not None:
            self.kept += data

    def get_write_buffer_size(self) -> int:
        return 0


def answered(data: bytes) -> int:
    """How many streams in envoi's downstream output ended with ``grpc-status: 0`` trailers
    after the reply message (frames walked by hand, header blocks decoded in order)."""
    decoder, pos, done = Decoder(), 0, 0
    replied: set[int] = set()
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        payload = data[pos + 9:pos + 9 + length]
        pos += 9 + length
        if kind == DATA and payload == GRPC_REPLY:
            replied.add(sid)
        elif kind == HEADERS:
            fields = dict(decoder.decode(payload, raw=True))
            if flags & END_STREAM and fields.get(b"grpc-status") == b"0" and sid in replied:
                done += 1
    return done

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
BIG = (1 << 31) - 1


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + \
        struct.pack(">I", sid) + payload


def hello() -> bytes:
    """A peer's first SETTINGS: windows that never close (as h2load's), then its connection
    window opened as far as it goes."""
    return frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, BIG)) + \
        frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", BIG - 65535))


class Client:
    """h2load's side: the request block HPACK-coded with a table, as h2load codes it (the
    first block adds to the table, the later ones refer to it)."""

    def __init__(self) -> None:
        self.encoder = Encoder()
        self.next_sid = 1
        self.preface = PREFACE + hello() + frame(SETTINGS, ACK, 0)

    def reads(self, n: int, batch: int) -> list[bytes]:
        headers = [(b":method", b"POST"), (b":path", GRPC_PATH.encode()), (b":scheme", b"http"),
                   (b":authority", b"127.0.0.1:19000"), (b"te", b"trailers"),
                   (b"content-type", b"application/grpc"),
                   (b"user-agent", b"h2load nghttp2/1.52.0"), (b"content-length", b"12")]
        out = []
        for _ in range(n // batch):
            chunk = []
            for _ in range(batch):
                sid = self.next_sid
                self.next_sid += 2
                chunk.append(frame(HEADERS, END_HEADERS, sid, self.encoder.encode(headers)))
                chunk.append(frame(DATA, END_STREAM, sid, GRPC_REQUEST))
            out.append(b"".join(chunk))
        return out


class Upstream:
    """nghttpd's side on one connection: answers each stream envoi opened (1, 3, 5...)."""

    def __init__(self) -> None:
        enc = Encoder()  # never-indexed literals: the same bytes every time, no table
        self.head = enc.encode([NeverIndexedHeaderTuple(k, v) for k, v in (
            (b":status", b"200"), (b"server", b"nghttpd nghttp2/1.52.0"),
            (b"date", b"Tue, 24 Nov 2026 14:17:41 GMT"), (b"content-length", b"18"),
            (b"last-modified", b"Tue, 24 Nov 2026 14:00:00 GMT"))])
        self.trailer = enc.encode([NeverIndexedHeaderTuple(b"grpc-status", b"0")])
        self.next_sid = 1

    def answers(self, n: int) -> bytes:
        out = []
        for _ in range(n):
            sid = self.next_sid
            self.next_sid += 2
            out.append(frame(HEADERS, END_HEADERS, sid, self.head))
            out.append(frame(DATA, 0, sid, GRPC_REPLY))
            out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, self.trailer))
        return b"".join(out)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=16000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=BATCH, help="calls per downstream read")
    ap.add_argument("--calls", action="store_true", help="Python function calls per call")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--dump", help="also write the profile (pstats) to this file")
    ap.add_argument("--sort", default="tottime", help="profile order (pstats key)")
    ap.add_argument("--top", type=int, default=40, help="profile lines")
    args = ap.parse_args()
    tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
    tmp.write(grpc_proxy(19901, 19000, 18080))
    tmp.close()
    server = Server(Options(config_path=tmp.name))
    server.load()
    Path(tmp.name).unlink()
    listener = server.listeners[0]
    listener.stats = ListenerStats(listener.scope.scope("listener.127.0.0.1_19000"))
    upstreams: list[tuple[Any, FakeTransport]] = []
    for cluster in server.cluster_manager.clusters.values():
        async def connect(host: Any, factory: Any, **kw: Any) -> tuple[FakeTransport, Any]:
            protocol = factory()
            transport = Transport()
            protocol.connection_made(transport)
            protocol.data_received(hello() + frame(SETTINGS, ACK, 0))
            upstreams.append((protocol, transport))
            return transport, protocol
        cluster.connect = connect  # type: ignore[method-assign]

    client, peer = Client(), Upstream()
    downstream = Transport()
    downstream.kept = bytearray()
    conn = Connection(listener)
    conn.connection_made(downstream)  # type: ignore[arg-type]
    conn.data_received(client.preface)

    async def batch(data: bytes, calls: int) -> None:
        conn.data_received(data)
        for _ in range(3):
            await asyncio.sleep(0)  # the pool's connection (first time), its deferred write
        upstreams[0][0].data_received(peer.answers(calls))
        await asyncio.sleep(0)  # the deferred downstream write

    for data in client.reads(BATCH * 4, BATCH):
        await batch(data, BATCH)
    if len(upstreams) != 1:
        sys.exit(f"expected one pooled upstream connection, got {len(upstreams)}")
    got = answered(bytes(downstream.kept))
    downstream.kept = None
    if got != BATCH * 4:
        sys.exit(f"{got} complete gRPC answers came out of {BATCH * 4} calls")

    async def run(reads: list[bytes]) -> int:
        before = downstream.writes
        for data in reads:
            await batch(data, args.batch)
        return downstream.writes - before

    if args.profile or args.calls:
        reads = client.reads(args.n, args.batch)
        prof = cProfile.Profile()
        prof.enable()
        await run(reads)
        prof.disable()
        if args.dump:
            prof.dump_stats(args.dump)
        stats = pstats.Stats(prof)
        if args.calls:
            print(f"Python calls per gRPC call: {stats.total_calls / args.n:.1f} "  # type: ignore[attr-defined]
                  f"({args.n} calls, {args.batch} per read)")
            return
        stats.sort_stats(args.sort).print_stats(args.top)
        return
    results = []
    for _ in range(args.reps):
        reads = client.reads(args.n, args.batch)  # (before the clock: the client's cost)
        t0 = time.process_time()
        writes = await run(reads)
        results.append((time.process_time() - t0) / args.n * 1e6)
        if writes < args.n // args.batch:
            sys.exit(f"answers missing: {writes} writes for {args.n // args.batch} batches")
    results.sort()
    print(f"µs per gRPC call (process CPU, {args.batch} per read): min {results[0]:.2f}  "
          f"median {results[len(results) // 2]:.2f}  max {results[-1]:.2f}  "
          f"({args.reps} x {args.n})")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
