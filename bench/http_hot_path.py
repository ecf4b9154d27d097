"""Python cost of one proxied HTTP/1.1 request, without sockets or event-loop turns.

Builds the real server from a real config (default: the peer benchmark's HCM + router config,
``bench/http_hot_path.yaml``), opens one downstream connection on a fake transport and lets the
router's pool connect through a fake one; then, per request, feeds wrk's request bytes downstream
and nginx's 100-byte response upstream, and checks a response came out. What it measures is the
Python work per request that the peer benchmark's CPU figure contains (it leaves out uvloop's
reads, writes and polling, the same for every Python proxy), with far less noise: use it to tell
whether a change to the hot path helps before running the peer benchmark.

``--filter`` adds one sync, header-only HTTP filter before the router (the example plugin's
``example.filters.http.add_header``, from ``examples/third_party_http_filter``): what one such
filter costs on top of the router alone.

``--tracing PCT`` adds the connection manager's ``tracing`` with ``envoy.tracers.opentelemetry``
(OTLP/gRPC to a collector cluster that is never reached: spans wait in the exporter's bounded
buffer, then are dropped and counted) and ``random_sampling`` PCT: what tracing costs a request
at 1 % or 100 % sampling. ``--calls`` prints the Python function calls per request (cProfile's
count over one repetition) and the bytecode instructions run per request (``sys.settrace``
with opcode events): both independent of the machine's load, unlike the timings.

    .venv/bin/python bench/http_hot_path.py [-n 20000] [--reps 5] [--config FILE] [--filter]
                                            [--tracing PCT] [--calls] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from envoi.network.connection import Connection
from envoi.network.listener import ListenerStats
from envoi.server import Options, Server

ADD_HEADER = """\
          - name: example.filters.http.add_header
            typed_config:
              "@type": type.googleapis.com/example.filters.http.add_header.v1.AddHeader
              header: x-example
              value: added-by-plugin
"""
CALLS_N = 2000  # requests of the profiled repetition that counts calls per request
TRACING = """\
          tracing:
            random_sampling: {{value: {pct}}}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {{envoy_grpc: {{cluster_name: otel_collector}}}}
                service_name: bench
"""
COLLECTOR = """\
  - name: otel_collector
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: otel_collector
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 4317}}}
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:19000\r\n\r\n"  # what wrk sends
BODY = b"x" * 100
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 14:17:41 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
            + BODY)  # what the benchmark's nginx answers


class FakeTransport:
    """Counts writes and keeps the last one; enough of a transport for both sides."""

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 19000)}.get(
            name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


def count_opcodes(run: Any, n: int) -> float:
    """Bytecode instructions per request over ``n`` requests."""
    count = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        run(n)
    finally:
        sys.settrace(None)
    return count / n


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="requests per repetition")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--config", default=str(Path(__file__).with_name("http_hot_path.yaml")))
    ap.add_argument("--filter", action="store_true",
                    help="one extra sync header-only filter (add_header) before the router")
    ap.add_argument("--tracing", type=float, metavar="PCT",
                    help="OpenTelemetry tracing with random_sampling PCT (0-100)")
    ap.add_argument("--calls", action="store_true",
                    help="print Python function calls per request (one repetition)")
    ap.add_argument("--profile", action="store_true", help="cProfile one repetition instead")
    args = ap.parse_args()

    config = args.config
    if args.filter or args.tracing is not None:
        text = Path(config).read_text()
        marker = "          - name: envoy.filters.http.router\n"
        if args.filter:
            if marker not in text:
                sys.exit(f"--filter: no router entry to put the filter before in {config}")
            text = text.replace(marker, ADD_HEADER + marker)
        if args.tracing is not None:
            filters = "          http_filters:\n"
            if filters not in text or "  clusters:\n" not in text:
                sys.exit(f"--tracing: no http_filters or clusters to extend in {config}")
            text = text.replace(filters, TRACING.format(pct=args.tracing) + filters, 1)
            text = text.replace("  clusters:\n", "  clusters:\n" + COLLECTOR, 1)
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
        tmp.write(text)
        tmp.close()
        config = tmp.name
    server = Server(Options(config_path=config))
    server.load()
    listener = server.listeners[0]
    listener.stats = ListenerStats(listener.scope.scope("listener.127.0.0.1_19000"))
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
        cluster.connect = connect  # type: ignore[method-assign]

    downstream = FakeTransport()
    conn = Connection(listener)
    conn.connection_made(downstream)  # type: ignore[arg-type]
    conn.data_received(REQUEST)  # the first request makes the pool connect (a task)
    for _ in range(10):
        await asyncio.sleep(0)
    upstream, up_transport = upstreams[0]
    if not up_transport.last.startswith(b"GET / HTTP/1.1\r\n"):
        sys.exit(f"no request went upstream: {up_transport.last!r}")
    upstream.data_received(RESPONSE)
    if not downstream.last.startswith(b"HTTP/1.1 200 OK"):
        sys.exit(f"no response came out: {downstream.last!r}")
    if args.filter and b"x-example: added-by-plugin\r\n" not in downstream.last:
        sys.exit(f"the extra filter did not run: {downstream.last!r}")
    feed_down, feed_up = conn.data_received, upstream.data_received

    def run(n: int) -> None:
        for _ in range(n):
            feed_down(REQUEST)
            feed_up(RESPONSE)

    if args.profile or args.calls:
        prof = cProfile.Profile()
        prof.runcall(run, args.n)
        stats = pstats.Stats(prof)
        if args.calls:
            ops = count_opcodes(run, min(args.n, 2000))
            print(f"Python calls per request: {stats.total_calls / args.n:.1f}, "  # type: ignore[attr-defined]
                  f"bytecode instructions per request: {ops:.0f} ({args.n} requests)")
            return
        stats.sort_stats("tottime").print_stats(40)
        return
    # Python calls per request (functions and builtins, as cProfile counts them): independent of
    # the machine's load, so the figure to compare changes by.
    prof = cProfile.Profile()
    prof.runcall(run, CALLS_N)
    calls = sum(nc for _, nc, _, _, _ in pstats.Stats(prof).stats.values())  # type: ignore[attr-defined]
    print(f"Python calls per request: {(calls - 1) / CALLS_N:.1f}")
    results = []
    for _ in range(args.reps):
        before = downstream.writes
        t0 = time.process_time()
        run(args.n)
        results.append((time.process_time() - t0) / args.n * 1e6)
        if downstream.writes - before != args.n or len(upstreams) != 1:
            sys.exit("a request did not get its response on the one pooled connection")
    results.sort()
    print(f"µs per request (process CPU): min {results[0]:.2f}  "
          f"median {results[len(results) // 2]:.2f}  max {results[-1]:.2f}  "
          f"({args.reps} x {args.n})")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
