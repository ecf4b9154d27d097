"""Tracing without the HTTP path: W3C and B3 headers read and written, Envoy's sampling
decision in the x-request-id (and its percentages over 2,000 requests), the OpenTelemetry tracer
exporting to a real grpcio OTLP collector and to an OTLP/HTTP receiver, the Zipkin tracer to a
Zipkin receiver, and exporters that stay bounded and never wait when the collector is down or
hangs."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from envoi.config import ConfigError
from envoi.stats import Store
from envoi.testing import StandaloneServer, factory_context
from envoi.tracing import propagation as prop
from envoi.tracing import sampling as smp
from envoi.tracing.export import BatchExporter
from envoi.tracing.opentelemetry import OpenTelemetryTracer
from envoi.tracing.span import Span, SpanKind
from envoi.tracing.tags import CustomTag, downstream_tags, upstream_tags
from envoi.tracing.zipkin import ZipkinTracer
from envoi.upstream.cluster import Cluster, ClusterStats
from envoi.upstream.host import Host
from envoi.upstream.lb import LbParams, RoundRobin
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg


def headers(**kv: str) -> Any:
    h = {k.replace("_", "-"): v for k, v in kv.items()}
    return h.get


# -- propagation -------------------------------------------------------------------------------

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_w3c_extract() -> None:
    got = prop.extract_w3c(headers(traceparent=TP, tracestate="k=v"))
    assert got == prop.TraceParent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331",
                                   True, "k=v")
    assert prop.extract_w3c(headers(traceparent=TP[:-1] + "0")).sampled is False
    for bad in ("", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                TP + "-extra", "00-xyz"):
        assert prop.extract_w3c(headers(traceparent=bad)) is None, bad
    # A future version may carry more fields.
    assert prop.extract_w3c(headers(traceparent="01" + TP[2:] + "-more")) is not None
    assert prop.extract_w3c(headers()) is None


def test_w3c_inject() -> None:
    out: dict[str, str] = {}
    prop.inject_w3c(out.__setitem__, "a" * 32, "b" * 16, False, "")
    assert out == {"traceparent": f"00-{'a' * 32}-{'b' * 16}-00", "tracestate": ""}


def test_b3_extract() -> None:
    ctx = prop.extract_b3(headers(x_b3_traceid="80f198ee56343ba864fe8b2a57d3eff7",
                                  x_b3_spanid="e457b5a2e4d86bd1", x_b3_sampled="1",
                                  x_b3_parentspanid="05e3ac9a4f6e3b90"))
    assert ctx == prop.B3Context("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1",
                                 "05e3ac9a4f6e3b90", True)
    single = prop.extract_b3(headers(b3="80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-"
                                        "05e3ac9a4f6e3b90"))
    assert single == prop.B3Context("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1",
                                    "05e3ac9a4f6e3b90", True, True)
    assert prop.extract_b3(headers(b3="0")) == prop.B3Context("", "", "", False)
    assert prop.extract_b3(headers(x_b3_sampled="0")) == prop.B3Context("", "", "", False)
    assert prop.extract_b3(headers(x_b3_flags="1")).sampled is True  # debug: sampled
    for bad in ({"x_b3_traceid": "xyz", "x_b3_spanid": "e457b5a2e4d86bd1"},
                {"x_b3_traceid": "80f198ee56343ba8", "x_b3_spanid": "0" * 16},
                {"b3": "80f198ee56343ba8-e457b5a2e4d86bd1-x"}, {"b3": "a-b-c-d-e"}):
        assert prop.extract_b3(headers(**bad)) is None, bad
    out: dict[str, str] = {}
    prop.inject_b3(out.__setitem__, "80f198ee56343ba8", "e457b5a2e4d86bd1", "", True)
    assert out == {"x-b3-traceid": "80f198ee56343ba8", "x-b3-spanid": "e457b5a2e4d86bd1",
                   "x-b3-sampled": "1"}


# -- sampling ----------------------------------------------------------------------------------


def test_trace_reason_in_the_request_id() -> None:
    rid = "125a4afb-6f55-44ba-ad80-413f09f48a28"
    assert smp.trace_reason(rid) is smp.Reason.NOT_TRACEABLE
    for reason, char in ((smp.Reason.SAMPLING, "9"), (smp.Reason.SERVICE_FORCED, "a"),
                         (smp.Reason.CLIENT_FORCED, "b")):
        marked = smp.set_trace_reason(rid, reason)
        assert marked[14] == char and smp.trace_reason(marked) is reason
        assert smp.decision(marked) == smp.Decision(reason, True)
        assert smp.decision(marked, health_check=True) == smp.Decision(
            smp.Reason.HEALTH_CHECK, False)
    assert smp.set_trace_reason("short", smp.Reason.SAMPLING) == "short"
    assert smp.request_id_integer(rid) == 0x125a4afb
    assert smp.request_id_integer("xyz") is None


class Rt:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, key: str) -> Any:
        return self.values.get(key)


def test_mutate_request_id_as_envoy() -> None:
    rid = "125a4afb-6f55-44ba-ad80-413f09f48a28"  # 0x125a4afb % 10000 = 7323
    full = smp.SamplingConfig()
    m = smp.mutate_request_id
    assert smp.trace_reason(m(rid, full, None, client_trace_id=False, force_trace=False)) \
        is smp.Reason.SAMPLING
    assert smp.trace_reason(m(rid, full, None, client_trace_id=True, force_trace=True)) \
        is smp.Reason.CLIENT_FORCED
    assert smp.trace_reason(m(rid, full, None, client_trace_id=False, force_trace=True)) \
        is smp.Reason.SERVICE_FORCED
    none = smp.SamplingConfig(random=smp.Percent(0, 100))
    assert smp.trace_reason(m(rid, none, None, client_trace_id=False, force_trace=False)) \
        is smp.Reason.NOT_TRACEABLE
    # 7323 < 7324 passes, < 7323 does not: the request id decides, everywhere.
    assert smp.trace_reason(m(rid, smp.SamplingConfig(random=smp.Percent(7324, 10000)), None,
                              client_trace_id=False, force_trace=False)) is smp.Reason.SAMPLING
    assert smp.trace_reason(m(rid, smp.SamplingConfig(random=smp.Percent(7323, 10000)), None,
                              client_trace_id=False, force_trace=False)) \
        is smp.Reason.NOT_TRACEABLE
    # An already traced request is kept; overall sampling can still turn it off.
    traced = smp.set_trace_reason(rid, smp.Reason.SERVICE_FORCED)
    assert m(traced, none, None, client_trace_id=False, force_trace=False) == traced
    assert smp.trace_reason(m(traced, smp.SamplingConfig(overall=smp.Percent(0, 100)), None,
                              client_trace_id=False, force_trace=False)) \
        is smp.Reason.NOT_TRACEABLE
    # Runtime keys replace the config's percentages.
    assert smp.trace_reason(m(rid, full, Rt({"tracing.random_sampling": 0}),
                              client_trace_id=False, force_trace=False)) \
        is smp.Reason.NOT_TRACEABLE
    assert smp.trace_reason(m(rid, none, Rt({"tracing.random_sampling": {
        "numerator": 1, "denominator": "HUNDRED"}}), client_trace_id=False,
        force_trace=False)) is smp.Reason.NOT_TRACEABLE  # 7323 % 100 = 23
    assert m("not-a-uuid", full, None, client_trace_id=False, force_trace=False) == "not-a-uuid"
    assert m(None, full, None, client_trace_id=False, force_trace=False) is None


@pytest.mark.parametrize(("random", "overall", "expected"),
                         [(1.0, 100.0, 0.01), (25.0, 100.0, 0.25), (100.0, 50.0, 0.5),
                          (50.0, 50.0, 0.5)])
def test_sampling_percentages_over_2000_requests(random: float, overall: float,
                                                 expected: float) -> None:
    cfg = smp.SamplingConfig(random=smp.Percent.from_percent(random),
                             overall=smp.Percent.from_percent(overall))
    n = 2000
    traced = sum(smp.decision(smp.mutate_request_id(str(uuid.uuid4()), cfg, None,
                                                    client_trace_id=False,
                                                    force_trace=False)).traced
                 for _ in range(n))
    # Within 4.5 standard deviations of the binomial (a flaky test is a broken one).
    sd = (n * expected * (1 - expected)) ** 0.5
    assert abs(traced - n * expected) <= 4.5 * sd + 1, (traced, n * expected)


# -- tags ----------------------------------------------------------------------------------------


def test_standard_and_custom_tags() -> None:
    span = Span("ingress", SpanKind.SERVER, "a" * 32, "b" * 16)
    custom = (CustomTag("lit", "v1"), CustomTag("hdr", header="x-tag", default="none"))
    downstream_tags(span, node_id="n", zone="", request_id="rid", url="http://h/p",
                    method="GET", downstream_cluster="", user_agent="ua", protocol="HTTP/1.1",
                    peer_address="127.0.0.1", request_size=0, response_size=7,
                    upstream_cluster="web", status=503, response_flags="UF", custom=custom,
                    get_header=headers(x_tag="t1"))
    assert span.tags == {
        "node_id": "n", "zone": "", "guid:x-request-id": "rid", "http.url": "http://h/p",
        "http.method": "GET", "downstream_cluster": "-", "user_agent": "ua",
        "http.protocol": "HTTP/1.1", "peer.address": "127.0.0.1", "request_size": "0",
        "response_size": "7", "component": "proxy", "upstream_cluster": "web",
        "upstream_cluster.name": "web", "http.status_code": "503", "response_flags": "UF",
        "error": "true", "lit": "v1", "hdr": "t1"}
    child = Span("router web egress", SpanKind.CLIENT, "a" * 32, "c" * 16, "b" * 16)
    upstream_tags(child, protocol="HTTP/1.1", upstream_address="127.0.0.1:80",
                  upstream_cluster="web", status=200, response_flags="", custom=custom)
    assert child.tags == {
        "http.protocol": "HTTP/1.1", "upstream_address": "127.0.0.1:80",
        "peer.address": "127.0.0.1:80", "component": "proxy", "upstream_cluster": "web",
        "upstream_cluster.name": "web", "http.status_code": "200", "response_flags": "-",
        "lit": "v1", "hdr": "none"}


# -- tracers against real collectors ---------------------------------------------------------------


class Collector(tsg.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        return ts.ExportTraceServiceResponse()

    def spans(self) -> list[Any]:
        return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans
                for s in ss.spans]


@pytest.fixture
def otlp_collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    c = Collector()
    tsg.add_TraceServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield c, port
    server.stop(0)


class _Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.got.append((self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    s.got = []  # type: ignore[attr-defined]
    s.status = 202  # type: ignore[attr-defined]
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def cluster(name: str, port: int, stats: Store) -> Cluster:
    c = Cluster(name=name, stats=ClusterStats(stats.root.scope(f"cluster.{name}")))
    c.lb = RoundRobin([], LbParams(), c)
    c.set_hosts([Host("127.0.0.1", port)])
    return c


def context(**clusters: int) -> Any:
    stats = Store()
    from envoi.context import LocalInfo

    server = StandaloneServer(stats=stats, clusters={
        n: cluster(n, p, stats) for n, p in clusters.items()},
        local_info=LocalInfo(node_id="node-1", cluster="svc-cluster"))
    return factory_context(server=server)


def otel_config(**kw: Any) -> Any:
    return json_format.ParseDict(kw, opentelemetry_pb2.OpenTelemetryConfig())


def run_spans(tracer: Any, *, traceparent: str | None = None, n: int = 1) -> list[Span]:
    """Ingress spans with an egress child each, finished, as the HTTP path would."""
    spans = []
    get = headers(traceparent=traceparent) if traceparent else headers()
    for i in range(n):
        root = tracer.start_span("ingress", SpanKind.SERVER, get, True, time.time_ns())
        root.set_tag("http.url", f"http://h/{i}")
        child = root.spawn_child("router web egress")
        upstream: dict[str, str] = {}
        child.inject(upstream.__setitem__)
        child.set_tag("http.status_code", "200")
        child.finish()
        root.finish()
        spans += [root, child]
        spans[-1].extra = {"injected": upstream}
    return spans


def test_opentelemetry_over_grpc_to_a_real_collector(
        otlp_collector: tuple[Collector, int]) -> None:
    collector, port = otlp_collector

    async def scenario() -> list[Span]:
        ctx = context(otlp=port)
        tracer = OpenTelemetryTracer(otel_config(
            grpc_service={"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "2s"},
            service_name="svc-a"), ctx)
        spans = run_spans(tracer, traceparent=TP, n=3)  # 6 spans: one report at 5, one later
        await tracer.exporter.close(5)
        assert tracer.stats.spans_sent.value == 6
        return spans

    spans = asyncio.run(scenario())
    got = collector.spans()
    assert len(got) == 6
    by_id = {s.span_id.hex(): s for s in got}
    for root, child in zip(spans[::2], spans[1::2], strict=True):
        r, c = by_id[root.span_id], by_id[child.span_id]
        assert r.trace_id.hex() == c.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
        assert r.parent_span_id.hex() == "b7ad6b7169203331"  # the caller's span
        assert c.parent_span_id.hex() == root.span_id
        assert (r.name, r.kind, c.name, c.kind) == ("ingress", 2, "router web egress", 3)
        assert r.end_time_unix_nano >= r.start_time_unix_nano > 0
        # What the upstream got: the egress span's context.
        assert child.extra == {"injected": {
            "traceparent": f"00-0af7651916cd43dd8448eb211c80319c-{child.span_id}-01",
            "tracestate": ""}}
    resource = {a.key: a.value.string_value
                for a in collector.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "svc-a"
    assert collector.metadata[0]["user-agent"].startswith("OTel-OTLP-Exporter-envoi/")


def test_opentelemetry_over_http(receiver: Any) -> None:
    async def scenario() -> None:
        ctx = context(otlp_http=receiver.server_address[1])
        tracer = OpenTelemetryTracer(otel_config(http_service={
            "http_uri": {"uri": "http://collector:4318/v1/traces", "cluster": "otlp_http",
                         "timeout": "2s"},
            "request_headers_to_add": [{"header": {"key": "X-Token", "value": "t"}}]}), ctx)
        run_spans(tracer, n=1)
        await tracer.exporter.close(5)

    asyncio.run(scenario())
    (path, hdrs, body), = receiver.got
    assert path == "/v1/traces"
    assert hdrs["content-type"] == "application/x-protobuf" and hdrs["x-token"] == "t"
    assert hdrs["host"] == "collector:4318"
    request = ts.ExportTraceServiceRequest.FromString(body)
    spans = request.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["router web egress", "ingress"]
    assert len(spans[1].trace_id) == 16 and not spans[1].parent_span_id  # a new trace


def test_unsampled_spans_propagate_but_are_not_exported(
        otlp_collector: tuple[Collector, int]) -> None:
    collector, port = otlp_collector

    async def scenario() -> None:
        tracer = OpenTelemetryTracer(otel_config(
            grpc_service={"envoy_grpc": {"cluster_name": "otlp"}}), context(otlp=port))
        spans = run_spans(tracer, traceparent=TP[:-1] + "0")
        assert spans[1].extra["injected"]["traceparent"].endswith("-00")
        await tracer.exporter.close(2)

    asyncio.run(scenario())
    assert collector.spans() == []


def test_zipkin_json_v2(receiver: Any) -> None:
    async def scenario() -> list[Span]:
        ctx = context(zipkin=receiver.server_address[1])
        config = json_format.ParseDict({"collector_cluster": "zipkin",
                                        "collector_endpoint": "/api/v2/spans",
                                        "collector_endpoint_version": "HTTP_JSON"},
                                       zipkin_pb2.ZipkinConfig())
        tracer = ZipkinTracer(config, ctx)
        root = tracer.start_span("ingress", SpanKind.SERVER, headers(
            x_b3_traceid="80f198ee56343ba864fe8b2a57d3eff7", x_b3_spanid="e457b5a2e4d86bd1",
            x_b3_sampled="1"), True, time.time_ns())
        fresh = tracer.start_span("ingress", SpanKind.SERVER, headers(), True, time.time_ns())
        out: dict[str, str] = {}
        fresh.spawn_child("router web egress").inject(out.__setitem__)
        for s in (root, fresh):
            s.set_tag("http.method", "GET")
            s.finish()
        await tracer.exporter.close(5)
        assert tracer.stats.reports_sent.value == 1 and tracer.stats.spans_sent.value == 2
        assert out == {"x-b3-traceid": fresh.trace_id, "x-b3-spanid": fresh.trace_id,
                       "x-b3-sampled": "1"}
        return [root, fresh]

    _root, fresh = asyncio.run(scenario())
    (path, hdrs, body), = receiver.got
    assert path == "/api/v2/spans" and hdrs["content-type"] == "application/json"
    assert hdrs["host"] == "zipkin"
    docs = json.loads(body)
    assert docs[0]["traceId"] == "80f198ee56343ba864fe8b2a57d3eff7"
    assert docs[0]["id"] == "e457b5a2e4d86bd1" and docs[0]["shared"] is True
    assert docs[1]["traceId"] == docs[1]["id"] == fresh.trace_id and len(fresh.trace_id) == 16
    for d in docs:
        assert d["kind"] == "SERVER" and d["tags"] == {"http.method": "GET"}
        assert d["localEndpoint"]["serviceName"] == "svc-cluster"
        assert d["annotations"][0]["value"] == "ss" and d["duration"] >= 0


def test_zipkin_refused_report_and_down_collector_are_counted(receiver: Any) -> None:
    receiver.status = 500

    async def scenario() -> tuple[Any, Any]:
        config = json_format.ParseDict({"collector_cluster": "zipkin",
                                        "collector_endpoint": "/api/v2/spans"},
                                       zipkin_pb2.ZipkinConfig())
        refused = ZipkinTracer(config, context(zipkin=receiver.server_address[1]))
        run_spans(refused)
        await refused.exporter.close(5)
        down = ZipkinTracer(config, context(zipkin=closed_port()))
        run_spans(down)
        await down.exporter.close(5)
        return refused.stats, down.stats

    refused, down = asyncio.run(scenario())
    assert (refused.reports_dropped.value, refused.reports_sent.value) == (1, 0)
    assert (down.reports_failed.value, down.spans_sent.value) == (1, 0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_hanging_collector_costs_counted_drops_not_latency() -> None:
    """A collector that accepts and never answers: reports wait (two at most), spans wait in
    the buffer up to its bound, the rest are dropped and counted, and adding a span never
    waits."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)

    async def scenario() -> Any:
        tracer = OpenTelemetryTracer(otel_config(
            grpc_service={"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "30s"},
            max_cache_size=100), context(otlp=hang.getsockname()[1]))
        worst = 0.0
        for _ in range(5000):
            t0 = time.perf_counter()
            span = tracer.start_span("ingress", SpanKind.SERVER, headers(), True,
                                     time.time_ns())
            span.finish()
            worst = max(worst, time.perf_counter() - t0)
            if len(tracer.exporter.in_flight) >= 2:
                await asyncio.sleep(0)
        assert len(tracer.exporter.in_flight) <= 2 and len(tracer.exporter.spans) <= 100
        for task in tracer.exporter.in_flight:
            task.cancel()
        return tracer.stats, worst

    try:
        stats, worst = asyncio.run(scenario())
    finally:
        hang.close()
    # (two reports of five wait, a hundred spans wait in the buffer: the rest are dropped)
    assert stats.spans_dropped.value >= 4850 and stats.spans_sent.value == 0
    # A span is handed over, never sent inline: waiting on the collector would take its 30 s
    # timeout; the bound is loose because a loaded 2-core box pauses a process for tens of ms.
    assert worst < 0.5


def test_buffer_bound_and_timer_flush() -> None:
    sent: list[int] = []

    async def send(spans: list[Span]) -> bool:
        sent.append(len(spans))
        return True

    class Runtime:
        def get_integer(self, key: str, default: int) -> int:
            return {"t.min_flush_spans": 1000, "t.flush_interval_ms": 20}.get(key, default)

    async def scenario() -> None:
        dropped: list[int] = []
        timer: list[int] = []
        ex = BatchExporter(send, runtime=Runtime(), runtime_prefix="t", max_spans=3,
                           on_dropped=dropped.append, on_timer=lambda: timer.append(1))
        for _ in range(5):
            ex.add(Span("s", SpanKind.SERVER, "a" * 32, "b" * 16))
        assert dropped == [1, 1] and not sent
        for _ in range(500):  # the 20 ms flush timer sends them (a loaded box: later)
            await asyncio.sleep(0.01)
            if sent:
                break
        assert sent == [3] and timer
        await ex.close()

    asyncio.run(scenario())


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown cluster 'nope'"):
        OpenTelemetryTracer(otel_config(grpc_service={"envoy_grpc": {"cluster_name": "nope"}}),
                            context())
    with pytest.raises(ConfigError, match="grpc_service or http_service is required"):
        OpenTelemetryTracer(otel_config(), context())
    with pytest.raises(ConfigError, match="only envoy_grpc"):
        OpenTelemetryTracer(otel_config(grpc_service={"google_grpc": {
            "target_uri": "x", "stat_prefix": "y"}}), context())
    for bad, match in (({"collector_cluster": "z", "collector_endpoint": "/",
                         "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION"},
                        "only USE_B3"),
                       ({"collector_cluster": "z", "collector_endpoint": "/",
                         "collector_endpoint_version": "HTTP_PROTO"}, "only HTTP_JSON"),
                       ({"collector_cluster": "nope", "collector_endpoint": "/"},
                        "unknown cluster"),
                       ({"collector_cluster": "z"}, "required")):
        with pytest.raises(ConfigError, match=match):
            ZipkinTracer(json_format.ParseDict(bad, zipkin_pb2.ZipkinConfig()),
                         context(z=1))

