"""Tracing on the HTTP path: the connection manager's ``tracing``, a route's ``decorator`` and
``tracing``, and the spans of a stream (the router's egress spans: ``router/tracing.py``).

What Envoy 1.39.3 does, and this module with it (``tests/http/test_tracing_oracle.py`` runs
both on one config):

* per request, after routing: the tracing decision is packed into ``x-request-id``
  (:func:`envoi.tracing.sampling.mutate_request_id`, with the route's ``tracing`` percentages
  when it has them, else the connection manager's) and counted
  (``http.<prefix>.tracing.random_sampling`` / ``service_forced`` / ``client_enabled`` /
  ``not_traceable``);
* the stream's span starts (``ingress``, or ``egress <host>`` on a listener whose
  ``traffic_direction`` is OUTBOUND; the Zipkin tracer names it after the host), joined to the
  caller's trace when the request carries one the tracer reads; the route's
  ``decorator.operation`` renames it;
* ingress: a request's ``x-envoy-decorator-operation`` renames it again (the header is removed
  before the request goes on), and the response carries ``x-envoy-decorator-operation`` when
  the route's decorator named the span, ``propagate`` is on (the default) and the request did
  not override it;
* egress: the upstream request carries the decorator's operation in
  ``x-envoy-decorator-operation`` (``propagate`` on), and that header in the response renames
  the span (and is removed before the response goes on);
* when the stream ends the span gets Envoy's tags (:mod:`envoi.tracing.tags`) and the custom
  tags (the connection manager's, then the route's) and is finished: a sampled one goes to the
  tracer's exporter, off the request path.

An unsampled request still gets a span: it propagates ``sampled=0`` upstream, and is never sent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.extensions import FactoryContext, TracerFactory
from envoi.stats import Counter, Scope, StatsGroup
from envoi.tracing.propagation import Getter, Setter
from envoi.tracing.sampling import Percent, SamplingConfig, decision, mutate_request_id
from envoi.tracing.span import Span, SpanKind, Tracer
from envoi.tracing.tags import (
    DEFAULT_MAX_PATH_TAG_LENGTH,
    CustomTag,
    downstream_tags,
    http_url,
    parse_custom_tags,
)

if TYPE_CHECKING:
    from envoi.http.headers import HeaderMap

__all__ = ["Decorator", "HttpTracing", "RouteTracing", "StreamTrace", "build_tracing",
           "route_decorator", "route_tracing"]

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
implements(_HCM + ".Tracing", "provider", "client_sampling", "random_sampling",
           "overall_sampling", "custom_tags", "max_path_tag_length", "spawn_upstream_span",
           "verbose")
implements("envoy.config.trace.v3.Tracing.Http", "name", "typed_config")
implements("envoy.config.route.v3.Decorator", "operation", "propagate")
implements("envoy.config.route.v3.Tracing", "client_sampling", "random_sampling",
           "overall_sampling", "custom_tags")
implements("envoy.type.v3.Percent", "value")
implements("envoy.type.v3.FractionalPercent", "numerator", "denominator")

DECORATOR_OPERATION = "x-envoy-decorator-operation"
DECORATOR_BYTES = DECORATOR_OPERATION.encode()
_NAMES: dict[str, bytes] = {}  # header names the tracers ask for, as bytes


def _name(name: str) -> bytes:
    b = _NAMES.get(name)
    if b is None:
        b = _NAMES[name] = name.lower().encode()
    return b


def header_getter(h: HeaderMap) -> Getter:
    """``h`` as the tracers read headers (``get(name) -> str | None``), without
    ``HeaderMap.get``'s name normalisation per call."""
    get_bytes = h.get_bytes

    def get(name: str) -> str | None:
        v = get_bytes(_name(name))
        return None if v is None else v.decode("latin-1")

    return get


def header_setter(h: HeaderMap) -> Setter:
    set_bytes = h.set_bytes

    def put(name: str, value: str) -> None:
        set_bytes(_name(name), value.encode("latin-1"))

    return put
_DENOMINATORS = (100, 10_000, 1_000_000)  # FractionalPercent's HUNDRED, TEN_THOUSAND, MILLION


class TracingStats(StatsGroup):
    """``http.<stat_prefix>.tracing.*``: why each request was, or was not, traced."""

    random_sampling: Counter
    service_forced: Counter
    client_enabled: Counter
    not_traceable: Counter
    health_check: Counter


@dataclass(frozen=True, slots=True)
class Decorator:
    """A route's ``decorator``."""

    operation: str
    propagate: bool = True


@dataclass(frozen=True, slots=True)
class RouteTracing:
    """A route's ``tracing``: its own sampling percentages (each unset one is 100 %, as in
    Envoy) and custom tags added to the connection manager's."""

    sampling: SamplingConfig
    custom_tags: tuple[CustomTag, ...] = ()


def route_decorator(msg: Any) -> Decorator:
    return Decorator(msg.operation,
                     msg.propagate.value if msg.HasField("propagate") else True)


def _fractional(msg: Any) -> Percent:
    return Percent(msg.numerator, _DENOMINATORS[msg.denominator]
                   if 0 <= msg.denominator < len(_DENOMINATORS) else 100)


def route_tracing(msg: Any, path: str) -> RouteTracing:
    full = Percent(100, 100)
    sampling = SamplingConfig(
        client=_fractional(msg.client_sampling) if msg.HasField("client_sampling") else full,
        random=_fractional(msg.random_sampling) if msg.HasField("random_sampling") else full,
        overall=_fractional(msg.overall_sampling) if msg.HasField("overall_sampling")
        else full)
    return RouteTracing(sampling, parse_custom_tags(msg.custom_tags, path + ".custom_tags"))


class StreamTrace:
    """One stream's tracing: its ingress span and what the response and the router need."""

    __slots__ = ("response_operation", "span", "tracing")

    def __init__(self, tracing: HttpTracing, span: Span, response_operation: str) -> None:
        self.tracing = tracing
        self.span = span
        #: x-envoy-decorator-operation for the response ("" for none; ingress only)
        self.response_operation = response_operation

    def response_head(self, raw: list[tuple[bytes, bytes]]) -> None:
        """The response head's fields as they leave (in place): the decorator's operation for
        the client (ingress), or the upstream's operation for the span (egress)."""
        if not self.tracing.egress:
            if self.response_operation:  # (replacing the upstream's, as Envoy)
                raw[:] = [kv for kv in raw if kv[0] != DECORATOR_BYTES]
                raw.append((DECORATOR_BYTES, self.response_operation.encode()))
            return
        for i in range(len(raw) - 1, -1, -1):
            if raw[i][0] == DECORATOR_BYTES:
                value = raw.pop(i)[1]
                if value:
                    self.span.set_operation(value.decode("latin-1"))

    @property
    def spawn_upstream_span(self) -> bool:
        return self.tracing.spawn_upstream_span

    def custom_tags(self, route: Any) -> Sequence[CustomTag]:
        rt: RouteTracing | None = getattr(route, "tracing", None)
        if rt is None or not rt.custom_tags:
            return self.tracing.custom_tags
        return self.tracing.custom_tags + rt.custom_tags


class HttpTracing:
    """A connection manager's ``tracing``, made once at config time."""

    def __init__(self, tracer: Tracer, sampling: SamplingConfig,
                 custom_tags: tuple[CustomTag, ...], max_path_tag_length: int,
                 spawn_upstream_span: bool, stats: TracingStats, runtime: Any,
                 node_id: str, zone: str, egress: bool = False) -> None:
        self.tracer = tracer
        self.sampling = sampling
        self.custom_tags = custom_tags
        self.max_path_tag_length = max_path_tag_length
        self.spawn_upstream_span = spawn_upstream_span
        self.stats = stats
        self.runtime = runtime
        self.node_id = node_id
        self.zone = zone
        #: on an OUTBOUND listener: Envoy's egress operation (span name, decorator headers)
        self.egress = egress

    def start(self, headers: HeaderMap, route: Any) -> StreamTrace:
        """The request's tracing decision and ingress span (the headers are the request's, as
        routed; the decision is written into their ``x-request-id``)."""
        rt: RouteTracing | None = getattr(route, "tracing", None) if route is not None else None
        raw_rid = headers.get_bytes(b"x-request-id")
        rid = None if raw_rid is None else raw_rid.decode("latin-1")
        if rid is not None:
            new = mutate_request_id(
                rid, rt.sampling if rt is not None else self.sampling, self.runtime,
                client_trace_id=headers.get_bytes(b"x-client-trace-id") is not None,
                force_trace=headers.get_bytes(b"x-envoy-force-trace") is not None)
            if new is not None and new != rid:
                headers.set_bytes(b"x-request-id", new.encode())
                rid = new
        d = decision(rid)
        getattr(self.stats, d.reason.stat).inc()
        egress = self.egress
        name = "egress " + headers.authority.decode("latin-1") if egress else "ingress"
        span = self.tracer.start_span(name, SpanKind.CLIENT if egress else SpanKind.SERVER,
                                      header_getter(headers), d.traced, time.time_ns())
        operation = ""
        dec: Decorator | None = getattr(route, "decorator", None) if route is not None else None
        if dec is not None and dec.operation:
            span.set_operation(dec.operation)
            if dec.propagate:
                operation = dec.operation
        if egress:
            if operation:  # for the upstream's own span
                headers.set_bytes(DECORATOR_BYTES, operation.encode())
            return StreamTrace(self, span, "")
        override = headers.get_bytes(DECORATOR_BYTES)
        if override is not None:
            if override:
                span.set_operation(override.decode("latin-1"))
                operation = ""
            headers.remove_bytes(DECORATOR_BYTES)
        return StreamTrace(self, span, operation)

    def finish(self, trace: StreamTrace, s: Any) -> None:
        """The stream ended: the ingress span's tags, then the span is finished (a span that
        is not sampled goes nowhere: it gets no tags)."""
        if not trace.span.sampled:
            return
        h = s.request_headers
        info = s.stream_info
        path = h.path.decode("latin-1")
        url = http_url(h.scheme.decode("latin-1") or "http", h.authority.decode("latin-1"),
                       path, self.max_path_tag_length)
        peer = info.downstream_remote_address
        if peer.startswith("["):
            peer = peer[1:peer.find("]")]
        elif peer.count(":") == 1:
            peer = peer.rsplit(":", 1)[0]
        route = s._route
        downstream_tags(
            trace.span, node_id=self.node_id, zone=self.zone,
            request_id=h.get("x-request-id") or "", url=url,
            method=h.method.decode("latin-1"),
            downstream_cluster=h.get("x-envoy-downstream-service-cluster") or "",
            user_agent=h.get("user-agent") or "", protocol=info.protocol or "HTTP/1.1",
            peer_address=peer, request_size=info.bytes_received,
            response_size=info.bytes_sent, upstream_cluster=info.upstream_cluster or "",
            status=info.response_code, response_flags=",".join(info.response_flags),
            custom=trace.custom_tags(route), get_header=h.get,
            client_trace_id=h.get("x-client-trace-id") or "")
        trace.span.finish()


def build_tracing(config: Any, path: str, context: FactoryContext, stat_prefix: str,
                  tracer_context: FactoryContext | None = None) -> HttpTracing | None:
    """The connection manager's ``tracing`` (None when unset). Without a ``provider`` Envoy
    1.39 makes no spans (and counts nothing); neither does envoi: the field is then refused,
    since nothing would act on it."""
    if not config.HasField("tracing"):
        return None
    tc = config.tracing
    tpath = path + ".tracing"
    issues: list[ConfigIssue] = []
    if not tc.HasField("provider"):
        issues.append(ConfigIssue(tpath + ".provider", (
            "required by envoi: without a provider Envoy 1.39 makes no spans, and envoi "
            "accepts no config it does not act on")))
    if tc.verbose:
        issues.append(ConfigIssue(tpath + ".verbose",
                                  "span logs (verbose) are not implemented by envoi"))
    try:
        custom = parse_custom_tags(tc.custom_tags, tpath + ".custom_tags")
    except ConfigError as exc:
        issues.extend(exc.errors)
        custom = ()
    tracer: Tracer | None = None
    if not issues:
        ppath = tpath + ".provider"
        try:
            factory, cfg = context.resolve_extension(
                TracerFactory, tc.provider, ppath)  # type: ignore[type-abstract]
            sub = (tracer_context or context).with_path(ppath + ".typed_config")
            tracer = sub.run_factory(factory, lambda: factory.create_tracer(cfg, sub))
        except ConfigError as exc:
            issues.extend(exc.errors)
    if issues or tracer is None:
        raise ConfigError(issues)

    def pct(name: str) -> Percent:
        return Percent.from_percent(getattr(tc, name).value) if tc.HasField(name) \
            else Percent(100, 100)

    scope: Scope = context.stats.root.scope(f"http.{stat_prefix}.tracing")
    local = context.local_info
    return HttpTracing(
        tracer, SamplingConfig(client=pct("client_sampling"), random=pct("random_sampling"),
                               overall=pct("overall_sampling")),
        custom,
        tc.max_path_tag_length.value if tc.HasField("max_path_tag_length")
        else DEFAULT_MAX_PATH_TAG_LENGTH,
        tc.spawn_upstream_span.value if tc.HasField("spawn_upstream_span") else False,
        TracingStats(scope), context.runtime, local.node_id, local.zone,
        egress=getattr(context, "traffic_direction", "UNSPECIFIED") == "OUTBOUND")
