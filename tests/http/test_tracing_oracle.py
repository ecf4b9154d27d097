"""Tracing through the real Envoy 1.39.3 and envoi, one config, the same requests: the spans a
real OTLP collector (grpcio, the ``opentelemetry-proto`` TraceService) and a Zipkin receiver get,
the trace headers the upstream sees, the ``x-envoy-decorator-operation`` the client gets, and
the ``http.<prefix>.tracing.*`` counters.

Compared, per request (ids and timestamps aside): the number of spans, their names and kinds,
parent/child structure (the egress span under the ingress span, the ingress span under the
caller's), the trace the upstream's headers name, and every tag."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from envoi.testing import free_port
from http_peers import ALL_ROUTES
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg
from scripted_upstream import Request, ScriptedUpstream, exchange, response

TP = "0af7651916cd43dd8448eb211c80319c"
B3_TRACE, B3_SPAN, B3_PARENT = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", \
    "05e3ac9a4f6e3b90"
# path -> extra request headers
REQUESTS = {
    "/plain": "",
    "/dec/x?q=1": "x-tag: T\r\n",
    "/direct": "",
    "/fail": "x-status: 503\r\n",
    "/tp": f"traceparent: 00-{TP}-b7ad6b7169203331-01\r\ntracestate: k=v\r\n",
    "/tp0": f"traceparent: 00-{TP}-b7ad6b7169203332-00\r\n",
    "/b3": (f"x-b3-traceid: {B3_TRACE}\r\nx-b3-spanid: {B3_SPAN}\r\n"
            f"x-b3-parentspanid: {B3_PARENT}\r\nx-b3-sampled: 1\r\n"),
    "/dec/op": "x-envoy-decorator-operation: reqop\r\n",
    "/dec/resp": "x-resp-op: upop\r\n",  # the upstream answers x-envoy-decorator-operation
    "/client": "x-client-trace-id: c1\r\n",
    "/rs": "",  # the route's own random_sampling: 0
    "/retry": "x-status: 503\r\n",  # two attempts: two egress spans with child spans
    "/dead": "",  # the upstream refuses the connection: an egress span with status 0
    "/" + "p" * 40: "",
}

OTEL = """
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {envoy_grpc: {cluster_name: otlp}, timeout: 1s}
                service_name: svc"""
ZIPKIN = """
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON"""
VARIANTS = {
    # provider, router start_child_span, extra HCM tracing fields, spans expected (one per
    # sampled request, and one per upstream attempt with child spans)
    "otel": (OTEL, "false", "", 12),
    "otel_child": (OTEL, "true", "max_path_tag_length: 20", 24),
    "otel_spawn": (OTEL, "false", "spawn_upstream_span: true", 24),
    # only the x-client-trace-id request, and the routes with a tracing of their own (whose
    # unset percentages are 100 %) are traced
    "otel_unsampled": (OTEL, "true", "random_sampling: {value: 0}", 8),
    "zipkin_child": (ZIPKIN, "true", "", 26),
    # on an OUTBOUND listener: egress operations
    "otel_outbound": (OTEL, "true", "", 24),
    "zipkin_outbound": (ZIPKIN, "false", "", 13),
}
CONFIG = """
node: {{id: node-a, cluster: cluster-a}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
layered_runtime:
  layers:
  - name: static
    static_layer:
      tracing.opentelemetry.flush_interval_ms: 200
      tracing.zipkin.flush_interval_ms: 200
static_resources:
  clusters:
  - name: up
    type: STATIC
    load_assignment:
      cluster_name: up
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {up}}}}}}}}}]}}]
  - name: dead
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {dead}}}}}}}}}]}}]
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
  - name: zipkin
    type: STATIC
    load_assignment:
      cluster_name: zipkin
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {zipkin}}}}}}}}}]}}]
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    traffic_direction: {direction}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: ing
          # (internal clients: their x-envoy-decorator-operation is read)
          use_remote_address: true
          internal_address_config: {{cidr_ranges: [{{address_prefix: 127.0.0.0, prefix_len: 8}}]}}
          tracing:
            {provider}
            {extra}
            custom_tags:
            - {{tag: lit, literal: {{value: v1}}}}
            - {{tag: hdr, request_header: {{name: x-tag, default_value: none}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              start_child_span: {child}
""" + ALL_ROUTES + """\
              - match: {{prefix: "/dec"}}
                route: {{cluster: up}}
                decorator: {{operation: my-op}}
                tracing:
                  custom_tags: [{{tag: route_tag, literal: {{value: r}}}}]
              - match: {{prefix: "/rs"}}
                route: {{cluster: up}}
                tracing: {{random_sampling: {{numerator: 0}}}}
              - match: {{prefix: "/retry"}}
                route: {{cluster: up, retry_policy: {{retry_on: 5xx, num_retries: 1}}}}
              - match: {{prefix: "/dead"}}
                route: {{cluster: dead}}
              - match: {{prefix: "/direct"}}
                direct_response: {{status: 200, body: {{inline_string: hi}}}}
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
"""


class Collector(tsg.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return ts.ExportTraceServiceResponse()


class _ZipkinReceiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if self.headers.get("transfer-encoding") == "chunked":  # (Envoy sends chunks)
            body = b""
            while (n := int(self.rfile.readline().strip(), 16)) > 0:
                body += self.rfile.read(n)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.got.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, Any]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    collector = Collector()
    tsg.add_TraceServiceServicer_to_server(collector, server)
    otlp = server.add_insecure_port("127.0.0.1:0")
    server.start()
    zs = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ZipkinReceiver)
    zs.got = []  # type: ignore[attr-defined]
    threading.Thread(target=zs.serve_forever, daemon=True).start()

    def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
        op = req.headers.get("x-resp-op")
        return [(response(int(req.headers.get("x-status", "200")), b"ok",
                          extra=f"x-envoy-decorator-operation: {op}\r\n" if op else ""), 0.0)]

    with ScriptedUpstream(answer) as up:
        yield {"collector": collector, "otlp": otlp, "zipkin": zs, "up": up,
               "dead": free_port()}
    zs.shutdown()
    zs.server_close()
    server.stop(0)


def _otel_spans(collector: Collector) -> list[dict[str, Any]]:
    out = []
    kinds = {2: "SERVER", 3: "CLIENT"}
    for r in collector.requests:
        for rs in r.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append({"name": s.name, "kind": kinds.get(s.kind, str(s.kind)),
                                "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(), "state": s.trace_state,
                                "tags": {a.key: a.value.string_value for a in s.attributes}})
    return out


def _zipkin_spans(receiver: Any) -> list[dict[str, Any]]:
    out = []
    for _, body in receiver.got:
        for s in json.loads(body):
            out.append({"name": s["name"], "kind": s.get("kind"), "trace": s["traceId"],
                        "id": s["id"], "parent": s.get("parentId", ""), "state": "",
                        "shared": s.get("shared", False), "tags": s.get("tags", {}),
                        "service": s["localEndpoint"]["serviceName"]})
    return out


def _shape(spans: list[dict[str, Any]], upstream: dict[str, list[dict[str, str]]],
           replies: dict[str, Any], max_path: int) -> dict[str, Any]:
    """Per request: its spans with ids replaced by roles (the caller's, this trace's ingress
    and egress span), the upstream's trace headers in those roles, the client's decorator
    header."""
    ingress = {s["tags"]["http.url"]: s for s in spans if "http.url" in s["tags"]}
    out: dict[str, Any] = {}
    for path, reply in replies.items():
        root = ingress.get("http://example.com" + path[:max_path])
        group = [] if root is None else [root] + [
            s for s in spans if s is not root and "http.url" not in s["tags"]
            and s["trace"] == root["trace"] and root["id"] in (s["parent"], s["id"])]
        ids = {"": "none", TP: "caller-trace", B3_TRACE: "caller-trace",
               "b7ad6b7169203331": "caller-span", "b7ad6b7169203332": "caller-span",
               B3_SPAN: "caller-span", B3_PARENT: "caller-parent"}
        for i, s in enumerate(group):  # (egress spans in the order they were exported)
            ids.setdefault(s["trace"], "trace")
            ids.setdefault(s["id"], "ingress" if s is root else f"egress{i}")
        shaped = [{**{k: v for k, v in s.items() if k not in ("tags", "trace", "id", "parent")},
                   "trace": ids.get(s["trace"], "?"), "id": ids.get(s["id"], "?"),
                   "parent": ids.get(s["parent"], "?"),
                   "tags": {k: v for k, v in s["tags"].items() if k != "guid:x-request-id"}}
                  for s in group]
        heads: list[dict[str, Any]] = []
        for attempt in upstream.get(path, []):  # each attempt's headers
            heads.append({})
            for k, v in attempt.items():
                if k == "traceparent":
                    ver, trace, span, flags = v.split("-")
                    heads[-1][k] = (ver, ids.get(trace, "?"), ids.get(span, "?"), flags)
                elif k in ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid"):
                    heads[-1][k] = ids.get(v, "?")
                elif k in ("tracestate", "x-b3-sampled", "b3", "x-envoy-decorator-operation"):
                    heads[-1][k] = v
        out[path] = {"spans": shaped, "upstream": heads, "status": reply.status,
                     "decorator": reply.header("x-envoy-decorator-operation")}
    return out


def run(kind: str, variant: str, peers: dict[str, Any], proxy_process: Any) -> dict[str, Any]:
    provider, child, extra, expected = VARIANTS[variant]
    admin, port = free_port(), free_port()
    text = CONFIG.format(admin=admin, port=port, up=peers["up"].port, otlp=peers["otlp"],
                         dead=peers["dead"],
                         zipkin=peers["zipkin"].server_address[1], provider=provider.strip(),
                         extra=extra, child=child,
                         direction="OUTBOUND" if "outbound" in variant else "UNSPECIFIED")
    collector, receiver, up = peers["collector"], peers["zipkin"], peers["up"]
    collector.requests.clear()
    receiver.got.clear()
    up.seen.clear()
    proxy = proxy_process(kind, text, admin)
    replies = {}
    for path, extra_headers in REQUESTS.items():
        replies[path] = exchange(port, (
            f"GET {path} HTTP/1.1\r\nhost: example.com\r\nx-test-id: {path}\r\n"
            f"user-agent: ua\r\n{extra_headers}\r\n").encode())
    deadline = time.monotonic() + 20
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = _zipkin_spans(receiver) if "zipkin" in provider else _otel_spans(collector)
        if len(spans) >= expected:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # nothing more comes
    spans = _zipkin_spans(receiver) if "zipkin" in provider else _otel_spans(collector)
    stats = proxy.stats()
    counters = {k: v for k, v in stats.items() if k.startswith("http.ing.tracing.")}
    upstream = {p: [r.headers for r in reqs] for p, reqs in up.seen.items()}
    max_path = 20 if "max_path_tag_length" in extra else 256
    return {"n": len(spans), "shape": _shape(spans, upstream, replies, max_path),
            "counters": counters}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_spans_and_propagation_as_envoy(variant: str, peers: dict[str, Any],
                                        proxy_process: Any) -> None:
    envoy = run("envoy", variant, peers, proxy_process)
    envoi = run("envoi", variant, peers, proxy_process)
    assert envoi["n"] == envoy["n"], {p: (len(envoi["shape"][p]["spans"]),
                                          len(envoy["shape"][p]["spans"])) for p in REQUESTS}
    for path in REQUESTS:
        mine, theirs = envoi["shape"][path], envoy["shape"][path]
        assert mine == theirs, f"{path}\nenvoi {mine}\nenvoy {theirs}"
    assert envoi["counters"] == envoy["counters"]
