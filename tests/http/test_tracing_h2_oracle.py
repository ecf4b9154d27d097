"""Tracing over HTTP/2, through the real Envoy 1.39.3 and envoi on one config: an HTTP/2 (h2c)
upstream (hypercorn) behind a cluster with ``http2_protocol_options``, requests over HTTP/1.1 and
over HTTP/2 (httpx, prior knowledge) downstream, OpenTelemetry spans with ``start_child_span``
into a grpcio OTLP collector. The ingress and egress spans of each request must have the same
names, kinds, structure and tags in both; in particular the egress span's ``http.protocol`` is
the upstream's protocol (``HTTP/2``), the ingress span's the downstream's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from envoi.testing import free_port
from h2_peers import Hypercorn
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg
from test_tracing_oracle import Collector, _otel_spans

CONFIG = """
node: {{id: node-a, cluster: cluster-a}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
layered_runtime:
  layers:
  - name: static
    static_layer:
      tracing.opentelemetry.flush_interval_ms: 200
static_resources:
  clusters:
  - name: up
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: up
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {up}}}}}}}}}]}}]
  - name: otlp
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: otlp
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {otlp}}}}}}}}}]}}]
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: ing
          codec_type: AUTO
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {{envoy_grpc: {{cluster_name: otlp}}, timeout: 1s}}
                service_name: svc
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              start_child_span: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
"""
# path -> the client's HTTP version downstream (HTTP/2: prior knowledge, h2c)
REQUESTS = {"/anything/h1": 1, "/anything/h2": 2}
VOLATILE = ("guid:x-request-id", "peer.address", "request_size", "response_size")


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Any]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    collector = Collector()
    tsg.add_TraceServiceServicer_to_server(collector, server)
    otlp = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with Hypercorn() as up:
        yield {"collector": collector, "otlp": otlp, "up": up.port}
    server.stop(0)


def run(kind: str, peers: dict[str, Any], proxy_process: Any) -> dict[str, Any]:
    admin, port = free_port(), free_port()
    collector = peers["collector"]
    collector.requests.clear()
    proxy_process(kind, CONFIG.format(admin=admin, port=port, up=peers["up"],
                                      otlp=peers["otlp"]), admin)
    # The clients keep their connections open until the spans are in: a client that closes as
    # soon as it has the response can beat the upstream's end of stream, and Envoy then tags
    # the spans DC / canceled (a race of the test's, not what is compared).
    clients = [httpx.Client(http1=(version == 1), http2=(version == 2), timeout=10)
               for version in REQUESTS.values()]
    try:
        for (path, _), client in zip(REQUESTS.items(), clients, strict=True):
            r = client.get(f"http://127.0.0.1:{port}{path}", headers={"host": "example.com"})
            assert r.status_code == 200, (kind, path, r)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_otel_spans(collector)) < 2 * len(REQUESTS):
            time.sleep(0.1)
        time.sleep(0.5)  # nothing more comes
        spans = _otel_spans(collector)
    finally:
        for client in clients:
            client.close()
    assert len(spans) == 2 * len(REQUESTS), (kind, spans)
    shaped: dict[str, Any] = {}
    for root in (s for s in spans if "http.url" in s["tags"]):
        path = root["tags"]["http.url"].removeprefix("http://example.com")
        egress = [s for s in spans if s["parent"] == root["id"]]
        shaped[path] = [{"name": s["name"], "kind": s["kind"],
                         "tags": {k: v for k, v in s["tags"].items() if k not in VOLATILE}}
                        for s in [root, *egress]]
    return shaped


def test_spans_over_http2_as_envoy(peers: dict[str, Any], proxy_process: Any) -> None:
    envoy = run("envoy", peers, proxy_process)
    envoi = run("envoi", peers, proxy_process)
    assert set(envoy) == set(REQUESTS)
    for path in REQUESTS:
        assert envoi[path] == envoy[path], f"{path}\nenvoi {envoi[path]}\nenvoy {envoy[path]}"
    # What the comparison is about: the upstream's protocol on the egress span.
    for path in REQUESTS:
        ingress, egress = envoy[path]
        assert egress["tags"]["http.protocol"] == "HTTP/2"
        assert ingress["tags"]["http.protocol"] == ("HTTP/2" if path.endswith("h2")
                                                    else "HTTP/1.1")
