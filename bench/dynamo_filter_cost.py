"""What the dynamo filter costs per request, without sockets or event-loop turns.

Builds the real server twice from the benchmark suite's DynamoDB configs (``bench.configs``:
HCM + router, and HCM + ``envoy.filters.http.dynamo`` + router), opens one downstream connection
on a fake transport, lets the router's pool connect through a fake one, and then feeds, per
request, the bytes boto3 sends for a PutItem or a GetItem (alternately) and the bytes DynamoDB
answers (keep-alive, with ``x-amz-crc32``). The difference of the two configs' process CPU per
request is the filter's cost, with far less noise than the load benchmark (whose moto backend
and boto3 clients share the machine). It checks that every response came out byte for byte and
that the filter counted every request.

    .venv/bin/python -m bench.dynamo_filter_cost [-n 20000] [--reps 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoi.network.connection import Connection
from envoi.network.listener import ListenerStats
from envoi.server import Options, Server

from bench import configs
from bench.http_hot_path import FakeTransport

ADMIN, LISTEN, BACKEND = 19901, 19000, 18080


def boto3_request(operation: str, body: dict[str, Any]) -> bytes:
    """A request as botocore 1.44 writes it (headers in its order, a SigV4 Authorization)."""
    data = json.dumps(body).encode()
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{LISTEN}\r\nAccept-Encoding: identity\r\n"
        f"X-Amz-Target: DynamoDB_20120810.{operation}\r\n"
        "Content-Type: application/x-amz-json-1.0\r\n"
        "User-Agent: Boto3/1.44.5 md/Botocore#1.44.8 ua/2.1 os/linux#6.1 md/arch#x86_64 "
        "lang/python#3.11.7 md/pyimpl#CPython m/Z,E,b cfg/retry-mode#standard Botocore/1.44.8\r\n"
        "X-Amz-Date: 20261203T101500Z\r\n"
        "Authorization: AWS4-HMAC-SHA256 Credential=bench/20261203/us-east-1/dynamodb/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
        "5cda22b643373d9e65537a10796f62c5867285a3363811275fa7ddf5c81bb764\r\n"
        "amz-sdk-invocation-id: d5a80d49-8e51-4c14-a4c7-867e4fa6f28b\r\n"
        "amz-sdk-request: attempt=1; max=1\r\n"
        f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


def dynamodb_response(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = ("HTTP/1.1 200 OK\r\nServer: Server\r\nDate: Thu, 03 Dec 2026 10:15:00 GMT\r\n"
            "Content-Type: application/x-amz-json-1.0\r\n"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n"
            "x-amzn-RequestId: AdppXcIApXOUEabQY3hjMui77Wt9QjSul4ghOiqz3yqKXBw83p8L\r\n"
            f"x-amz-crc32: {zlib.crc32(data)}\r\n\r\n")
    return head.encode() + data


ITEM = {"pk": {"S": "c0-4242-17"}, "sku": {"S": "sku-17"}, "qty": {"N": "0"},
        "tags": {"SS": ["a", "b"]}}
EXCHANGES = [
    (boto3_request("PutItem", {"TableName": "bench", "Item": ITEM}), dynamodb_response({})),
    (boto3_request("GetItem", {"TableName": "bench", "Key": {"pk": ITEM["pk"]},
                               "ConsistentRead": True}), dynamodb_response({"Item": ITEM})),
]


def dynamodb_filter_off(admin: int, listen: int, backend: int) -> str:
    """The filter in the chain but switched off by runtime (``dynamodb.filter_enabled: 0``): what
    one more filter costs the connection manager, before the filter does any work."""
    return configs.dynamodb_filter(admin, listen, backend) + (
        "layered_runtime:\n  layers:\n  - name: static\n"
        "    static_layer: {dynamodb.filter_enabled: 0}\n")


async def build(config: Callable[[int, int, int], str], tmp: Path
                ) -> tuple[Server, Callable[[int], None], FakeTransport]:
    path = tmp / f"{config.__name__}.yaml"
    path.write_text(config(ADMIN, LISTEN, BACKEND))
    server = Server(Options(config_path=str(path)))
    server.load()
    listener = server.listeners[0]
    listener.stats = ListenerStats(listener.scope.scope(f"listener.127.0.0.1_{LISTEN}"))
    upstreams: list[tuple[Any, FakeTransport]] = []
    for cluster in server.cluster_manager.clusters.values():
        async def connect(host: Any, factory: Any, timeout: float | None = None,
                          cluster: Any = cluster, **_: Any) -> tuple[FakeTransport, Any]:
            protocol = factory()
            transport = FakeTransport()
            protocol.connection_made(transport)
            cluster.stats.upstream_cx_total.value += 1
            cluster.stats.upstream_cx_active.inc()
            upstreams.append((protocol, transport))
            return transport, protocol
        cluster.connect = connect  # type: ignore[method-assign,assignment]

    downstream = FakeTransport()
    conn = Connection(listener)
    conn.connection_made(downstream)  # type: ignore[arg-type]
    request, response = EXCHANGES[0]
    conn.data_received(request)  # the first request makes the pool connect (a task)
    for _ in range(10):
        await asyncio.sleep(0)
    upstream, up_transport = upstreams[0]
    if not up_transport.last.endswith(request.split(b"\r\n\r\n", 1)[1]):
        sys.exit(f"{config.__name__}: no request went upstream: {up_transport.last!r}")
    upstream.data_received(response)
    if not downstream.last.endswith(response.split(b"\r\n\r\n", 1)[1]):
        sys.exit(f"{config.__name__}: no response came out: {downstream.last!r}")
    feed_down, feed_up = conn.data_received, upstream.data_received

    def run(n: int) -> None:
        for i in range(n):
            req, resp = EXCHANGES[i & 1]
            feed_down(req)
            feed_up(resp)
            if i < 2 and not downstream.last.endswith(resp.split(b"\r\n\r\n", 1)[1]):
                sys.exit(f"{config.__name__}: a response did not come out whole")

    if len(upstreams) != 1:
        sys.exit("the pool opened more than one upstream connection")
    return server, run, downstream


def measure(run: Callable[[int], None], downstream: FakeTransport, n: int, reps: int
            ) -> list[float]:
    results = []
    for _ in range(reps):
        before = downstream.writes
        t0 = time.process_time()
        run(n)
        results.append((time.process_time() - t0) / n * 1e6)
        if downstream.writes - before < n:
            sys.exit("a request did not get its response")
    return sorted(results)


def _counted(server: Server) -> int:
    total = 0
    for stat in server.stats:
        if stat.name.startswith("http.ddb.dynamodb.operation.") and \
                stat.name.endswith(".upstream_rq_total") and hasattr(stat, "value"):
            total += int(stat.value)
    return total


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="requests per repetition")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", action="store_true",
                    help="cProfile one repetition with the filter instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="envoi-dynamo-cost-") as tmp:
        _, base_run, base_down = await build(configs.dynamodb_route, Path(tmp))
        off, off_run, off_down = await build(dynamodb_filter_off, Path(tmp))
        server, filter_run, filter_down = await build(configs.dynamodb_filter, Path(tmp))
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(filter_run, args.n)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    base: list[float] = []
    switched_off: list[float] = []
    with_filter: list[float] = []
    for _ in range(args.reps):  # interleaved, so a busy moment hits all three alike
        base += measure(base_run, base_down, args.n, 1)
        switched_off += measure(off_run, off_down, args.n, 1)
        with_filter += measure(filter_run, filter_down, args.n, 1)
    counted = _counted(server)
    if counted != args.n * args.reps + 1 or _counted(off) != 0:
        sys.exit(f"the filter counted {counted} requests, expected {args.n * args.reps + 1}")
    for values in (base, switched_off, with_filter):
        values.sort()
    mid = len(base) // 2
    print(f"µs per request (process CPU), median of {args.reps} x {args.n}, boto3 PutItem and "
          f"GetItem alternately:")
    print(f"  HCM + router:                            {base[mid]:.2f}  (min {base[0]:.2f})")
    print(f"  HCM + dynamo filter (off) + router:      {switched_off[mid]:.2f}  "
          f"(min {switched_off[0]:.2f})")
    print(f"  HCM + dynamo filter + router:            {with_filter[mid]:.2f}  "
          f"(min {with_filter[0]:.2f})")
    print(f"  the dynamo filter in all:                {with_filter[mid] - base[mid]:+.2f}  "
          f"(min to min {with_filter[0] - base[0]:+.2f})")
    print(f"  of which one more filter in the chain:   {switched_off[mid] - base[mid]:+.2f}  "
          f"(min to min {switched_off[0] - base[0]:+.2f})")
    print(f"  and the filter's own work:               {with_filter[mid] - switched_off[mid]:+.2f}"
          f"  (min to min {with_filter[0] - switched_off[0]:+.2f})")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
