"""The connection manager's tracing fast path (``hcm/tracing.py``, the built-in tracers'
``begin``/``inject_unsampled``) against the reference functions it must agree with: the same
``x-request-id`` decision and counters as :func:`envoi.tracing.sampling.mutate_request_id` for
random request ids, headers, route percentages and runtime overrides (which take effect on the
next request after ``/runtime_modify``), no span object for a request that is not sampled, and
the context that goes upstream as ``start_span``/``inject`` would send it."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import pytest
from envoi.http.headers import HeaderMap
from envoi.stats import Store
from envoi.testing import StandaloneServer, factory_context
from envoi.tracing import sampling as smp
from envoi.tracing.ids import unsampled_traceparent
from envoi.tracing.opentelemetry import OpenTelemetryTracer
from envoi.tracing.span import SpanKind
from envoi.tracing.zipkin import ZipkinTracer
from envoi.upstream.cluster import Cluster, ClusterStats
from envoi.upstream.host import Host
from envoi.upstream.lb import LbParams, RoundRobin
from envoi_http.hcm.tracing import HttpTracing, RouteTracing, TracingStats
from envoi_http.router import tracing as router_tracing
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from google.protobuf import json_format

TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$")


def _context() -> Any:
    stats = Store()
    c = Cluster(name="collector", stats=ClusterStats(stats.root.scope("cluster.collector")))
    c.lb = RoundRobin([], LbParams(), c)
    c.set_hosts([Host("127.0.0.1", 9)])
    return factory_context(server=StandaloneServer(stats=stats, clusters={"collector": c}))


def _otel(ctx: Any) -> OpenTelemetryTracer:
    return OpenTelemetryTracer(json_format.ParseDict(
        {"grpc_service": {"envoy_grpc": {"cluster_name": "collector"}}},
        opentelemetry_pb2.OpenTelemetryConfig()), ctx)


def _zipkin(ctx: Any) -> ZipkinTracer:
    return ZipkinTracer(json_format.ParseDict(
        {"collector_cluster": "collector", "collector_endpoint": "/api/v2/spans",
         "collector_endpoint_version": "HTTP_JSON"}, zipkin_pb2.ZipkinConfig()), ctx)


def _tracing(ctx: Any, tracer: Any, sampling: smp.SamplingConfig,
             spawn: bool = False) -> HttpTracing:
    return HttpTracing(tracer, sampling, (), 256, spawn,
                       TracingStats(ctx.stats.root.scope("http.test.tracing")), ctx.runtime,
                       "node", "")


def _request(rid: str | None, **extra: str) -> HeaderMap:
    fields = [(b"x-forwarded-proto", b"http")]
    for k, v in extra.items():
        fields.append((k.replace("_", "-").encode(), v.encode()))
    if rid is not None:
        fields.append((b"x-request-id", rid.encode("latin-1")))
    return HeaderMap(fields, method=b"GET", path=b"/", authority=b"example.com",
                     scheme=b"http")


class Route:
    def __init__(self, tracing: RouteTracing | None = None) -> None:
        self.tracing = tracing
        self.decorator = None


def _rids(rng: random.Random) -> list[str | None]:
    out: list[str | None] = [None, "short", "not-a-uuid-but-36-characters-long!!!",
                             "zzzzzzzz-6f55-44ba-ad80-413f09f48a28"]
    for _ in range(300):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append(rid[:14] + rng.choice("49abx") + rid[15:])
    return out


@pytest.mark.parametrize("runtime_values", [
    {}, {"tracing.random_sampling": 30}, {"tracing.global_enabled": 60},
    {"tracing.client_enabled": {"numerator": 5000, "denominator": "TEN_THOUSAND"}},
])
def test_the_decision_is_mutate_request_ids(runtime_values: dict[str, Any]) -> None:
    ctx = _context()
    if runtime_values:
        assert ctx.runtime.modify({k: str(v) if not isinstance(v, dict) else
                                   __import__("json").dumps(v)
                                   for k, v in runtime_values.items()}) is None
    sampling = smp.SamplingConfig(client=smp.Percent(40, 100),
                                  random=smp.Percent.from_percent(25.5),
                                  overall=smp.Percent.from_percent(80))
    route_sampling = smp.SamplingConfig(random=smp.Percent(3, 100))
    tracing = _tracing(ctx, _otel(ctx), sampling)
    rng = random.Random(7)
    expected_counts: dict[str, int] = {}
    for rid in _rids(rng):
        for extra in ({}, {"x_client_trace_id": "c"}, {"x_envoy_force_trace": "1"},
                      {"x_client_trace_id": "c", "x_envoy_force_trace": "1"}):
            for route in (None, Route(), Route(RouteTracing(route_sampling))):
                h = _request(rid, **extra)
                tracing.start(h, route)
                cfg = route.tracing.sampling if route is not None and \
                    route.tracing is not None else sampling
                want = smp.mutate_request_id(
                    rid, cfg, ctx.runtime, client_trace_id="x_client_trace_id" in extra,
                    force_trace="x_envoy_force_trace" in extra)
                assert h.get("x-request-id") == want, (rid, extra, route)
                reason = smp.decision(want).reason.stat
                expected_counts[reason] = expected_counts.get(reason, 0) + 1
    stats = tracing.stats
    assert {name: getattr(stats, name).value for name in expected_counts} == expected_counts
    assert sum(expected_counts.values()) == sum(
        getattr(stats, n).value for n in ("random_sampling", "service_forced",
                                          "client_enabled", "not_traceable"))


@pytest.mark.parametrize("runtime_values", [
    {}, {"tracing.random_sampling": "30"}, {"tracing.global_enabled": "60"}])
def test_start_new_decides_as_start(runtime_values: dict[str, str]) -> None:
    """The short path (the connection manager made the id, the request has none of the
    headers the decision reads) takes the decision start() takes, and counts it the same."""
    ctx = _context()
    if runtime_values:
        assert ctx.runtime.modify(runtime_values) is None
    sampling = smp.SamplingConfig(random=smp.Percent.from_percent(25.5),
                                  overall=smp.Percent.from_percent(80))
    route_sampling = smp.SamplingConfig(random=smp.Percent(3, 100))
    short, ref = (_tracing(ctx, _otel(ctx), sampling) for _ in range(2))
    rng = random.Random(11)
    for _ in range(400):
        rid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for route in (None, Route(), Route(RouteTracing(route_sampling))):
            h, want = _request(rid), _request(rid)
            trace = short.start_new(h, route)
            ref_trace = ref.start(want, route)
            assert h.get("x-request-id") == want.get("x-request-id"), (rid, route)
            assert (trace.span is None) == (ref_trace.span is None)
            if trace.span is None:
                assert trace is short.unsampled  # nothing made for it
    for name in ("random_sampling", "service_forced", "client_enabled", "not_traceable"):
        assert getattr(short.stats, name).value == getattr(ref.stats, name).value, name
    assert short.stats.random_sampling.value > 0 and short.stats.not_traceable.value > 0


def test_a_runtime_change_applies_to_the_short_path_too() -> None:
    ctx = _context()
    route = Route(RouteTracing(smp.SamplingConfig(random=smp.Percent(20, 100))))
    tracing = _tracing(ctx, _otel(ctx), smp.SamplingConfig())  # 100 %
    rid = "125a4afb-6f55-44ba-ad80-413f09f48a28"  # (0x125a4afb % 10,000 = 7,323)
    for runtime, hcm, on_route in (("", True, False), ("0", False, False),
                                   ("30", True, True), ("", True, False)):
        ctx.runtime.modify({"tracing.random_sampling": runtime})
        assert (tracing.start_new(_request(rid), None).span is not None) is hcm, runtime
        assert (tracing.start_new(_request(rid), route).span is not None) is on_route, runtime


def test_the_shared_unsampled_trace_keeps_its_context_across_attempts() -> None:
    """A new unsampled trace has no state of its own: the first attempt draws its ids, a retry
    keeps them (a child span: a new span id in the same trace), and a traceparent a filter
    wrote before the first attempt is replaced (Envoy injects its span's context)."""
    ctx = _context()
    for tracer in (_otel(ctx), _zipkin(ctx)):
        tracing = _tracing(ctx, tracer, smp.SamplingConfig(random=smp.Percent(0, 100)))
        name = b"traceparent" if isinstance(tracer, OpenTelemetryTracer) \
            else b"x-b3-traceid"
        h = _request(str(uuid.uuid4()))
        trace = tracing.start_new(h, None)
        assert trace is tracing.unsampled
        assert router_tracing.start_attempt(trace, False, "web", h, 0) is None
        first = h.get_bytes(name)
        assert first is not None
        router_tracing.start_attempt(trace, False, "web", h, 1)
        assert h.get_bytes(name) == first and len(h.get_all(name.decode())) == 1
        router_tracing.start_attempt(trace, True, "web", h, 2)
        again = h.get_bytes(name)
        if name == b"traceparent":
            assert again is not None and again[:36] == first[:36] and again != first
            assert h.get_all("tracestate") == [""]
        else:  # (Zipkin's egress span shares the ingress span's context)
            assert again == first and h.get("x-b3-sampled") == "0"
        other = _request(str(uuid.uuid4()))
        router_tracing.start_attempt(tracing.start_new(other, None), False, "web", other, 0)
        assert other.get_bytes(name) != first  # a new trace per request
        filtered = _request(str(uuid.uuid4()))
        trace = tracing.start_new(filtered, None)
        filtered.set_bytes(name, b"written-by-a-filter")
        router_tracing.start_attempt(trace, False, "web", filtered, 0)
        assert filtered.get_all(name.decode()) != ["written-by-a-filter"]
        assert len(filtered.get_all(name.decode())) == 1


def test_zipkin_reads_b3_from_the_fields_not_through_headers_get(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context()
    tracing = _tracing(ctx, _zipkin(ctx), smp.SamplingConfig(random=smp.Percent(0, 100)))

    def no_get(*args: Any) -> Any:
        raise AssertionError("HeaderMap.get on the unsampled path")

    h = _request(str(uuid.uuid4()), x_b3_traceid="463ac35c9f6413ad",
                 x_b3_spanid="a2fb4a1d1a96d312")
    monkeypatch.setattr(HeaderMap, "get", no_get)
    trace = tracing.start(h, None)
    router_tracing.start_attempt(trace, False, "web", h, 0)
    monkeypatch.undo()
    assert trace.span is None
    assert h.get("x-b3-traceid") == "463ac35c9f6413ad" and h.get("x-b3-sampled") == "0"


def test_a_runtime_change_applies_to_the_next_request() -> None:
    ctx = _context()
    tracing = _tracing(ctx, _otel(ctx), smp.SamplingConfig())  # 100 %
    rid = "125a4afb-6f55-44ba-ad80-413f09f48a28"
    h = _request(rid)
    assert tracing.start(h, None).span is not None
    ctx.runtime.modify({"tracing.random_sampling": "0"})
    h = _request(rid)
    assert tracing.start(h, None).span is None
    assert h.get("x-request-id") == rid  # not traced: the plain v4 digit stays
    ctx.runtime.modify({"tracing.random_sampling": ""})
    assert tracing.start(_request(rid), None).span is not None


def test_unsampled_requests_get_no_span_and_propagate_sampled_0() -> None:
    ctx = _context()
    tracing = _tracing(ctx, _otel(ctx), smp.SamplingConfig(random=smp.Percent(0, 100)))
    # A new trace: a fresh trace id per request, the same context on every attempt.
    h = _request(str(uuid.uuid4()))
    trace = tracing.start(h, None)
    assert trace.span is None
    router_tracing.start_attempt(trace, False, "web", h, 0)
    first = h.get_bytes(b"traceparent")
    assert first is not None and TRACEPARENT.match(first)
    assert TRACEPARENT.match(first).group(3) == b"0"  # type: ignore[union-attr]
    assert h.get_all("tracestate") == [""]
    router_tracing.start_attempt(trace, False, "web", h, 1)  # a retry: the same context
    assert h.get_all("traceparent") == [first.decode()]
    other = _request(str(uuid.uuid4()))
    t2 = tracing.start(other, None)
    router_tracing.start_attempt(t2, False, "web", other, 0)
    assert other.get_bytes(b"traceparent")[3:35] != first[3:35]  # type: ignore[index]
    # start_child_span: the child's own span id, the same trace, on every attempt a new one.
    router_tracing.start_attempt(trace, True, "web", h, 0)
    child = h.get_bytes(b"traceparent")
    assert child is not None and child[:36] == first[:36] and child != first
    # A caller's context: its trace id and tracestate go on, with a span id of ours.
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    h = _request(str(uuid.uuid4()), traceparent=caller, tracestate="k=v")
    trace = tracing.start(h, None)
    assert trace.span is None
    router_tracing.start_attempt(trace, False, "web", h, 0)
    sent = h.get_bytes(b"traceparent")
    m = TRACEPARENT.match(sent or b"")
    assert m is not None and m.group(1) == b"0af7651916cd43dd8448eb211c80319c"
    assert m.group(2) != b"b7ad6b7169203331" and m.group(3) == b"0"
    assert h.get_all("traceparent") == [sent.decode()]  # type: ignore[union-attr]
    assert h.get_all("tracestate") == ["k=v"]


def test_zipkin_unsampled_context_is_start_spans() -> None:
    ctx = _context()
    tracer = _zipkin(ctx)
    tracing = _tracing(ctx, tracer, smp.SamplingConfig(random=smp.Percent(0, 100)))
    caller = {"x_b3_traceid": "463ac35c9f6413ad", "x_b3_spanid": "a2fb4a1d1a96d312",
              "x_b3_parentspanid": "0020000000000001"}
    h = _request(str(uuid.uuid4()), **caller)
    trace = tracing.start(h, None)
    assert trace.span is None
    router_tracing.start_attempt(trace, True, "web", h, 0)
    # The reference: start_span's span injected the usual way.
    ref = tracer.start_span("ingress", SpanKind.SERVER, _request(None, **caller).get, False, 0)
    want: dict[str, str] = {}
    tracer.inject(ref.spawn_child("router web egress"), want.__setitem__)
    assert {k: h.get(k) for k in want} == want and want["x-b3-sampled"] == "0"


def test_unsampled_traceparents_are_valid_and_distinct() -> None:
    values = [unsampled_traceparent() for _ in range(1000)]
    assert len(set(values)) == 1000
    for v in values:
        m = TRACEPARENT.match(v)
        assert m is not None and m.group(3) == b"0"
        assert m.group(1) != b"0" * 32 and m.group(2) != b"0" * 16


class PlainTracer:
    """A third-party tracer with only ``Tracer``'s methods (no fast path)."""

    def __init__(self, inner: OpenTelemetryTracer) -> None:
        self.inner = inner

    def start_span(self, *args: Any) -> Any:
        return self.inner.start_span(*args)

    def child(self, *args: Any) -> Any:
        return self.inner.child(*args)

    def inject(self, *args: Any) -> None:
        self.inner.inject(*args)


def test_a_tracer_without_the_fast_path_gets_a_span_per_request() -> None:
    ctx = _context()
    tracing = _tracing(ctx, PlainTracer(_otel(ctx)),
                       smp.SamplingConfig(random=smp.Percent(0, 100)))
    h = _request(str(uuid.uuid4()))
    trace = tracing.start(h, None)
    assert trace.span is not None and not trace.span.sampled  # as before the fast path
    assert router_tracing.start_attempt(trace, True, "web", h, 0) is not None
    m = TRACEPARENT.match(h.get_bytes(b"traceparent") or b"")
    assert m is not None and m.group(1).decode() == trace.span.trace_id and m.group(3) == b"0"
