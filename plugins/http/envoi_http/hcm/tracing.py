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

A request that is not sampled gets no span object (with the built-in tracers): its tracer keeps
the context it propagates upstream (``sampled=0``, as Envoy) as header bytes, and the sampling
percentages with the runtime's overrides are worked out once per runtime snapshot, so an
unsampled request costs a few header reads and writes. The usual request, with none of the
headers tracing reads (:attr:`HttpTracing.reads`, looked for in the connection manager's own
pass over the request's fields) and an ``x-request-id`` the connection manager made, takes
:meth:`HttpTracing.start_new`: the decision from that id's random hex digits, and when it is
not sampled one shared :class:`StreamTrace` and nothing made for it; the router's first attempt
draws its new trace's ids straight into the upstream request (``inject_unsampled`` without a
context), and a retry keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.extensions import FactoryContext, TracerFactory
from envoi.stats import Counter, Scope, StatsGroup
from envoi.tracing.propagation import Getter, Setter
from envoi.tracing.sampling import Percent, SamplingConfig
from envoi.tracing.span import RequestTracer, Span, SpanKind, Tracer
from envoi.tracing.tags import (
    DEFAULT_MAX_PATH_TAG_LENGTH,
    CustomTag,
    downstream_tags,
    http_url,
    parse_custom_tags,
)

from envoi_http.hcm.internal import MUTATE_READS

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
    """One stream's tracing: its ingress span (None when the request is not sampled: then
    ``context`` is what its tracer propagates upstream) and what the response and the router
    need."""

    __slots__ = ("context", "response_operation", "span", "tracing")

    def __init__(self, tracing: HttpTracing, span: Span | None, response_operation: str,
                 context: object = None) -> None:
        self.tracing = tracing
        self.span = span
        #: x-envoy-decorator-operation for the response ("" for none; ingress only)
        self.response_operation = response_operation
        self.context = context

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
                if value and self.span is not None:
                    self.span.set_operation(value.decode("latin-1"))

    @property
    def spawn_upstream_span(self) -> bool:
        return self.tracing.spawn_upstream_span

    def custom_tags(self, route: Any) -> Sequence[CustomTag]:
        rt: RouteTracing | None = getattr(route, "tracing", None)
        if rt is None or not rt.custom_tags:
            return self.tracing.custom_tags
        return self.tracing.custom_tags + rt.custom_tags


# The trace reason in x-request-id's version digit (envoi.tracing.sampling), as a byte.
_SAMPLED, _FORCED, _CLIENT, _NOT_TRACED = 0x39, 0x61, 0x62, 0x34  # '9' 'a' 'b' '4'
_TRACED = frozenset((_SAMPLED, _FORCED, _CLIENT))
_NO_FIELDS: Mapping[bytes, bytes] = {}
# What the decision reads besides x-request-id (and the decorator override, ingress).
_DECISION_READS = frozenset((b"x-client-trace-id", b"x-envoy-force-trace", DECORATOR_BYTES))
_DENOMINATOR_NAMES = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
# (numerator, denominator) of client, random and overall sampling
Thresholds = tuple[int, int, int, int, int, int]


def _sampled_table(thresholds: Thresholds) -> bytes:
    """Whether each decision value (an x-request-id's, 0-9999) is sampled by random and
    overall sampling (``mutate_request_id`` with neither client nor forced trace)."""
    _, _, rn, rd, on, od = thresholds
    return bytes(v % rd < rn and v % od < on for v in range(10_000))


def _effective(percent: Percent, override: Any) -> tuple[int, int]:
    """``sampling._feature_enabled``'s percentage: the runtime's value when the key is set."""
    if isinstance(override, dict):
        return (int(override.get("numerator", 0)),
                _DENOMINATOR_NAMES.get(str(override.get("denominator", "HUNDRED")), 100))
    if isinstance(override, int | float) and not isinstance(override, bool):
        return int(override), 100
    return percent.numerator, percent.denominator


class _FallbackTracer:
    """A tracer with only :class:`Tracer`'s methods, driven as a :class:`RequestTracer`: a
    span per request, sampled or not."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def begin(self, name: str, kind: SpanKind, headers: HeaderMap, fields: Mapping[bytes, bytes],
              traced: bool) -> tuple[Span | None, object]:
        return self.tracer.start_span(name, kind, header_getter(headers), traced,
                                      time.time_ns()), None

    def inject_headers(self, span: Span, headers: HeaderMap) -> None:
        self.tracer.inject(span, header_setter(headers))

    def inject_unsampled(self, context: object, headers: HeaderMap, child: bool,
                         retries: int = 0) -> None:
        raise AssertionError("a fallback tracer always makes a span")  # pragma: no cover


class HttpTracing:
    """A connection manager's ``tracing``, made once at config time."""

    def __init__(self, tracer: Tracer, sampling: SamplingConfig,
                 custom_tags: tuple[CustomTag, ...], max_path_tag_length: int,
                 spawn_upstream_span: bool, stats: TracingStats, runtime: Any,
                 node_id: str, zone: str, egress: bool = False) -> None:
        self.tracer = tracer
        #: the tracer's fast path (span.RequestTracer), or Tracer's methods behind it
        self.fast: RequestTracer | _FallbackTracer = (
            tracer if all(hasattr(tracer, m) for m in ("begin", "inject_headers",
                                                       "inject_unsampled"))
            else _FallbackTracer(tracer))  # type: ignore[assignment]
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
        self.kind = SpanKind.CLIENT if egress else SpanKind.SERVER
        #: the counter of each value of x-request-id's trace digit (a byte)
        self.by_reason = [stats.not_traceable] * 256
        self.by_reason[_SAMPLED] = stats.random_sampling
        self.by_reason[_FORCED] = stats.service_forced
        self.by_reason[_CLIENT] = stats.client_enabled
        # The sampling thresholds with the runtime's overrides, per runtime snapshot (a
        # runtime change makes a new snapshot), not per request.
        self._snapshot: object = getattr(runtime, "snapshot", self)  # (the runtime's dict)
        self._live = hasattr(runtime, "snapshot")  # (else: thresholds() per request)
        self._thresholds: Thresholds = self._compute(sampling)
        self._route_thresholds: dict[int, tuple[SamplingConfig, Thresholds]] = {}
        #: per value of an x-request-id's decision (0-9999): is a request that only random
        #: and overall sampling decide sampled (start_new), for the percentages in force
        self._sampled = _sampled_table(self._thresholds)
        self._route_tables: dict[Thresholds, bytes] = {}
        self._not_traceable = stats.not_traceable
        #: the request headers the connection manager's own header pass looks for: its own
        #: (``internal.MUTATE_READS``), the decision's and the tracer's; a request with none
        #: of them and the id the connection manager made takes :meth:`start_new` (None: a
        #: tracer that does not say what it reads never does)
        names = getattr(tracer, "context_headers", None)
        self.reads: frozenset[bytes] | None = (
            None if names is None or isinstance(self.fast, _FallbackTracer)
            else MUTATE_READS | _DECISION_READS | names)
        #: the trace of every request without a span nor per-request state: not sampled, in a
        #: new trace (the router's first attempt draws its ids), on a route without decorator
        self.unsampled = StreamTrace(self, None, "")

    def thresholds(self, sampling: SamplingConfig | None) -> Thresholds:
        """The client, random and overall percentages in force (``sampling`` a route's, or
        None for the connection manager's)."""
        # (A runtime without snapshots, a test's, is read per request.)
        runtime = self.runtime
        snapshot = None if runtime is None else getattr(runtime, "snapshot", self)
        if snapshot is not self._snapshot or snapshot is self:
            self._snapshot = snapshot
            self._route_thresholds.clear()
            thresholds = self._compute(self.sampling)
            if thresholds != self._thresholds:
                self._sampled = _sampled_table(thresholds)
            self._thresholds = thresholds
        if sampling is None:
            return self._thresholds
        cached = self._route_thresholds.get(id(sampling))
        if cached is None or cached[0] is not sampling:
            cached = self._route_thresholds[id(sampling)] = (sampling, self._compute(sampling))
        return cached[1]

    def _compute(self, sampling: SamplingConfig) -> Thresholds:
        runtime = self.runtime
        get = runtime.get if runtime is not None else (lambda key: None)
        return (_effective(sampling.client, get("tracing.client_enabled"))
                + _effective(sampling.random, get("tracing.random_sampling"))
                + _effective(sampling.overall, get("tracing.global_enabled")))

    def start(self, headers: HeaderMap, route: Any) -> StreamTrace:
        """The request's tracing decision and ingress span (the headers are the request's, as
        routed; the decision is written into their ``x-request-id``). The decision is
        :func:`envoi.tracing.sampling.mutate_request_id`'s, on the request id's bytes."""
        # The regular fields, each with its first value (as get_bytes): one C-level pass.
        fields = dict(reversed(headers.headers))
        rid = fields.get(b"x-request-id")
        reason = _NOT_TRACED
        if rid is not None and len(rid) == 36:  # (else the decision leaves it alone)
            reason = rid[14]
            try:
                value = int(rid[:8], 16) % 10_000
            except ValueError:
                pass  # not a UUID: left alone, its digit says
            else:
                rt: RouteTracing | None = getattr(route, "tracing", None)
                if rt is None and self._live and self.runtime.snapshot is self._snapshot:
                    cn, cd, rn, rd, on, od = self._thresholds
                else:
                    cn, cd, rn, rd, on, od = self.thresholds(
                        rt.sampling if rt is not None else None)
                was = reason
                if reason not in _TRACED:
                    if b"x-client-trace-id" in fields and value % cd < cn:
                        reason = _CLIENT
                    elif b"x-envoy-force-trace" in fields:
                        reason = _FORCED
                    elif value % rd < rn:
                        reason = _SAMPLED
                if value % od >= on:
                    reason = _NOT_TRACED
                if reason != was:
                    headers.set_bytes(b"x-request-id", rid[:14] + bytes((reason,)) + rid[15:])
        self.by_reason[reason].value += 1
        return self._begin(headers, route, fields, reason in _TRACED)

    def start_new(self, headers: HeaderMap, route: Any) -> StreamTrace:
        """:meth:`start` for a request in which the connection manager's header pass found
        none of :attr:`reads`, and whose ``x-request-id`` it has just made (the last field):
        the decision comes from that id's random hex digits (Envoy's, with no client or forced
        trace to consider), and an unsampled request on a route without a decorator gets the
        shared :attr:`unsampled` trace: no span, no header written, nothing per request."""
        raw = headers.headers
        rid = raw[-1][1]
        rt: RouteTracing | None = getattr(route, "tracing", None)
        if rt is None and self._live and self.runtime.snapshot is self._snapshot:
            table = self._sampled
        else:
            self.thresholds(rt.sampling if rt is not None else None)  # (a new snapshot?)
            table = self._sampled if rt is None else self._sampled_of(rt.sampling)
        if table[int(rid[:8], 16) % 10_000]:
            raw[-1] = (b"x-request-id", rid[:14] + b"9" + rid[15:])  # (_SAMPLED)
            self.stats.random_sampling.value += 1
            return self._begin(headers, route, _NO_FIELDS, True)
        self._not_traceable.value += 1
        if getattr(route, "decorator", None) is None:
            return self.unsampled
        return self._begin(headers, route, _NO_FIELDS, False)

    def _sampled_of(self, sampling: SamplingConfig) -> bytes:
        """:func:`_sampled_table` of a route's percentages in force (cached per snapshot)."""
        thresholds = self.thresholds(sampling)
        cached = self._route_tables.get(thresholds)
        if cached is None:
            if len(self._route_tables) >= 64:  # (bounded: runtime changes make new ones)
                self._route_tables.clear()
            cached = self._route_tables[thresholds] = _sampled_table(thresholds)
        return cached

    def _begin(self, headers: HeaderMap, route: Any, fields: Mapping[bytes, bytes],
               traced: bool) -> StreamTrace:
        """The decision is made: the stream's span (or unsampled context) and decorator."""
        egress = self.egress
        span, context = self.fast.begin(
            "egress " + headers.authority.decode("latin-1") if egress else "ingress",
            self.kind, headers, fields, traced)
        operation = ""
        dec: Decorator | None = getattr(route, "decorator", None)
        if dec is not None and dec.operation:
            if span is not None:
                span.set_operation(dec.operation)
            if dec.propagate:
                operation = dec.operation
        if egress:
            if operation:  # for the upstream's own span
                headers.set_bytes(DECORATOR_BYTES, operation.encode())
            return StreamTrace(self, span, "", context)
        override = fields.get(DECORATOR_BYTES)
        if override is not None:
            if override:
                if span is not None:
                    span.set_operation(override.decode("latin-1"))
                operation = ""
            headers.remove_bytes(DECORATOR_BYTES)
        return StreamTrace(self, span, operation, context)

    def finish(self, trace: StreamTrace, s: Any) -> None:
        """The stream ended: the ingress span's tags, then the span is finished (a span that
        is not sampled goes nowhere: it gets no tags)."""
        span = trace.span
        if span is None or not span.sampled:
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
            span, node_id=self.node_id, zone=self.zone,
            request_id=h.get("x-request-id") or "", url=url,
            method=h.method.decode("latin-1"),
            downstream_cluster=h.get("x-envoy-downstream-service-cluster") or "",
            user_agent=h.get("user-agent") or "", protocol=info.protocol or "HTTP/1.1",
            peer_address=peer, request_size=info.bytes_received,
            response_size=info.bytes_sent, upstream_cluster=info.upstream_cluster or "",
            status=info.response_code, response_flags=",".join(info.response_flags),
            custom=trace.custom_tags(route), get_header=h.get,
            client_trace_id=h.get("x-client-trace-id") or "")
        span.finish()


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
