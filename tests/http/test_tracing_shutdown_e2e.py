"""Spans still buffered when envoi stops are sent: with a flush interval and batch size that keep
every span in the exporter's buffer, the requests made just before SIGTERM reach the OTLP
collector (grpcio) during the graceful shutdown, in one process and with two workers; a
collector that is down costs a bounded wait, and envoi still exits."""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from envoi.testing import free_port
from http_peers import HCM_LISTENER, ROUTER_ONLY, UP_CLUSTER, EchoServer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg
from test_tracing_oracle import Collector, _otel_spans

CONFIG = """
layered_runtime:
  layers:
  - name: static
    static_layer:
      tracing.opentelemetry.min_flush_spans: 1000
      tracing.opentelemetry.flush_interval_ms: 600000
""" + HCM_LISTENER + """\
          stat_prefix: ing
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {{envoy_grpc: {{cluster_name: otlp}}, timeout: 1s}}
                service_name: svc
""" + ROUTER_ONLY + """\
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
  - name: otlp
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: otlp
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {otlp}}}}}}}}}]}}]
""" + UP_CLUSTER


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Any]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    collector = Collector()
    tsg.add_TraceServiceServicer_to_server(collector, server)
    otlp = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with EchoServer() as echo:
        yield {"collector": collector, "otlp": otlp, "up": echo.port}
    server.stop(0)


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize("concurrency", [1, 2])
def test_buffered_spans_are_sent_at_sigterm(envoi_process: Callable[..., Any],
                                            peers: dict[str, Any], concurrency: int) -> None:
    collector = peers["collector"]
    collector.requests.clear()
    admin, port = free_port(), free_port()
    proc = envoi_process(CONFIG.format(admin=admin, port=port, up=peers["up"],
                                       otlp=peers["otlp"]), admin, concurrency=concurrency)
    paths = [f"/last/{i}" for i in range(5)]
    for path in paths:
        assert get(port, path) == 200
    # Buffered, not sent: the batch size and interval are far off.
    proc.wait_stat("http.ing.tracing.random_sampling", len(paths))
    assert int(proc.stats().get("tracing.opentelemetry.spans_sent", 0)) == 0
    assert collector.requests == []
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    urls = sorted(s["tags"]["http.url"] for s in _otel_spans(collector))
    assert urls == sorted(f"http://127.0.0.1:{port}{p}" for p in paths)


def test_a_dead_collector_does_not_hold_the_exit(envoi_process: Callable[..., Any],
                                                 peers: dict[str, Any]) -> None:
    admin, port = free_port(), free_port()
    proc = envoi_process(CONFIG.format(admin=admin, port=port, up=peers["up"],
                                       otlp=free_port()), admin)  # nobody listens there
    assert get(port, "/x") == 200
    proc.wait_stat("http.ing.tracing.random_sampling", 1)
    start = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - start < 15  # the flush is bounded (2 s), the drain short
