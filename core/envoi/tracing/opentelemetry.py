"""``envoy.tracers.opentelemetry``: W3C trace context in, OTLP out (gRPC or HTTP).

As Envoy 1.39's OpenTelemetry tracer (checked against it: ``tests/http/test_tracing_*``):

* a request's ``traceparent`` (and ``tracestate``) makes the ingress span a child of the
  caller's span, in its trace, sampled only when both the caller's flag and Envoy's own
  decision say so (seen against Envoy 1.39.3: a sampled caller on a request its decision does
  not trace gets ``-00`` upstream and no span); without one a new 128-bit trace starts,
  sampled by Envoy's decision;
* spans are ``SPAN_KIND_SERVER`` (ingress) or ``SPAN_KIND_CLIENT`` (egress), tags are string
  attributes; the upstream request gets ``traceparent`` and ``tracestate`` (empty too);
* reports are ``ExportTraceServiceRequest``s with one resource (``service.name`` from
  ``service_name``, default ``unknown_service:envoy``; ``telemetry.sdk.*`` naming envoi) and one
  scope, sent to ``grpc_service.envoy_grpc.cluster_name`` (``TraceService/Export``) or as a
  protobuf POST to ``http_service`` (``http_uri``: cluster, path, timeout; ``request_headers_
  to_add``);
* stats ``tracing.opentelemetry.spans_sent``, ``.spans_dropped``, ``.timer_flushed``; runtime
  ``tracing.opentelemetry.min_flush_spans`` (5), ``.flush_interval_ms`` (5000); at most
  ``max_cache_size`` spans (1024) wait.

The wire format is the OpenTelemetry protos (PyPI ``opentelemetry-proto``). ``xds-protos``
ships an older copy of the same modules; if that copy is the one installed, this module says so
instead of sending spans the collector cannot read.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, cast

from envoi import __version__
from envoi.config import ConfigError, ConfigIssue, duration_seconds, implements
from envoi.stats import Counter, Scope, StatsGroup
from envoi.tracing.export import BatchExporter, GrpcPoster, HttpPoster, PostResult
from envoi.tracing.ids import unsampled_traceparent
from envoi.tracing.propagation import (
    Getter,
    Setter,
    extract_w3c,
    format_traceparent,
    inject_w3c,
    parse_traceparent,
)
from envoi.tracing.span import HeaderBytes, Span, SpanKind, new_id, new_span_id, set_pair

__all__ = ["OpenTelemetryTracer", "build_request", "otlp_protos"]

implements("envoy.config.trace.v3.OpenTelemetryConfig", "grpc_service", "http_service",
           "service_name", "max_cache_size")
implements("envoy.config.core.v3.GrpcService", "envoy_grpc", "timeout")
implements("envoy.config.core.v3.GrpcService.EnvoyGrpc", "cluster_name")
implements("envoy.config.core.v3.HttpService", "http_uri", "request_headers_to_add")
implements("envoy.config.core.v3.HttpUri", "uri", "cluster", "timeout")

_EMPTY_TRACESTATE = (b"tracestate", b"")
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
USER_AGENT = f"OTel-OTLP-Exporter-envoi/{__version__}"


class OpenTelemetryStats(StatsGroup):
    spans_sent: Counter
    spans_dropped: Counter
    timer_flushed: Counter


def otlp_protos() -> tuple[Any, Any]:
    """The OTLP modules (trace_pb2, trace_service_pb2), checked to be the current ones."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    if "scope_spans" not in trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_name:
        raise ConfigError([ConfigIssue("", (
            "the installed opentelemetry.proto modules are an old copy (xds-protos ships one, "
            "without ResourceSpans.scope_spans): run 'pip install --force-reinstall --no-deps "
            "opentelemetry-proto' (scripts/setup.sh does)"))])
    return trace_pb2, trace_service_pb2


def build_request(spans: Sequence[Span], service_name: str) -> Any:
    """The ``ExportTraceServiceRequest`` of a report."""
    trace_pb2, trace_service_pb2 = otlp_protos()
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("telemetry.sdk.version", __version__), ("service.name", service_name),
                       ("telemetry.sdk.language", "python"), ("telemetry.sdk.name", "envoi")):
        attr = rs.resource.attributes.add()
        attr.key = key
        attr.value.string_value = value
    scope = rs.scope_spans.add()
    scope.scope.name = "envoi"
    scope.scope.version = __version__
    server, client = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
    for span in spans:
        out = scope.spans.add()
        out.trace_id = bytes.fromhex(span.trace_id)
        out.span_id = bytes.fromhex(span.span_id)
        if span.parent_id:
            out.parent_span_id = bytes.fromhex(span.parent_id)
        if span.tracestate:
            out.trace_state = span.tracestate
        out.name = span.name
        out.kind = server if span.kind is SpanKind.SERVER else client
        out.start_time_unix_nano = span.start_ns
        out.end_time_unix_nano = span.end_ns
        for key, value in (span.tags or {}).items():
            attr = out.attributes.add()
            attr.key = key
            attr.value.string_value = value
    return request


class OpenTelemetryTracer:
    """One per ``tracing.provider`` (per HCM); spans of every stream go through it."""

    def __init__(self, config: Any, context: Any) -> None:
        path = context.path
        otlp_protos()  # fail at config time, not at the first report
        self.service_name = config.service_name or "unknown_service:envoy"
        self.stats = OpenTelemetryStats(context.stats.root.scope("tracing.opentelemetry"))
        cm = context.cluster_manager
        send: Any
        if config.HasField("grpc_service"):
            gs = config.grpc_service
            if not gs.HasField("envoy_grpc"):
                raise ConfigError([ConfigIssue(f"{path}.grpc_service",
                                               "only envoy_grpc is implemented")])
            cluster = gs.envoy_grpc.cluster_name
            _check_cluster(cm, cluster, f"{path}.grpc_service.envoy_grpc.cluster_name")
            timeout = duration_seconds(gs.timeout) if gs.HasField("timeout") else 0.0
            grpc = GrpcPoster(cm, cluster, EXPORT_METHOD, lambda r: r.SerializeToString(),
                              timeout, user_agent=USER_AGENT)
            self.closer: Any = grpc

            async def send_grpc(spans: list[Span]) -> PostResult:
                return await grpc.call(build_request(spans, self.service_name))

            send = send_grpc
        elif config.HasField("http_service"):
            hs = config.http_service
            uri = hs.http_uri
            cluster = uri.cluster
            _check_cluster(cm, cluster, f"{path}.http_service.http_uri.cluster")
            parsed = urllib.parse.urlsplit(uri.uri)
            headers = [("content-type", "application/x-protobuf")]
            for i, h in enumerate(hs.request_headers_to_add):
                if h.keep_empty_value or h.append_action or h.HasField("append") \
                        or h.header.raw_value:
                    raise ConfigError([ConfigIssue(
                        f"{path}.http_service.request_headers_to_add[{i}]",
                        "only header.key and header.value are implemented")])
                headers.append((h.header.key.lower(), h.header.value))
            http = HttpPoster(cm, cluster, parsed.path or "/v1/traces",
                              parsed.netloc or cluster, headers,
                              duration_seconds(uri.timeout) or 5.0)
            self.closer = http

            async def send_http(spans: list[Span]) -> PostResult:
                return await http.post(build_request(spans, self.service_name)
                                       .SerializeToString())

            send = send_http
        else:
            raise ConfigError([ConfigIssue(path, "grpc_service or http_service is required")])
        stats = self.stats
        self.exporter = BatchExporter(
            send, runtime=context.runtime, runtime_prefix="tracing.opentelemetry",
            max_spans=config.max_cache_size.value if config.HasField("max_cache_size")
            else 1024,
            on_sent=lambda n: stats.spans_sent.inc(n),
            on_dropped=lambda n: stats.spans_dropped.inc(n),
            on_timer=lambda: stats.timer_flushed.inc())

    # -- Tracer ---------------------------------------------------------------------------------

    def start_span(self, name: str, kind: SpanKind, get_header: Getter, traced: bool,
                   start_ns: int) -> Span:
        parent = extract_w3c(get_header)
        if parent is None:
            return Span(name, kind, new_id(16), new_id(8), "", traced, "", start_ns,
                        sink=self.exporter, tracer=self)
        # Sampled when the caller and the decision both say so, as in Envoy 1.39.3.
        return Span(name, kind, parent.trace_id, new_id(8), parent.parent_id,
                    parent.sampled and traced,
                    parent.tracestate, start_ns, sink=self.exporter, tracer=self)

    def child(self, parent: Span, name: str, start_ns: int) -> Span:
        return Span(name, SpanKind.CLIENT, parent.trace_id, new_id(8), parent.span_id,
                    parent.sampled, parent.tracestate, start_ns, sink=self.exporter,
                    tracer=self)

    def inject(self, span: Span, set_header: Setter) -> None:
        inject_w3c(set_header, span.trace_id, span.span_id, span.sampled, span.tracestate)

    # -- the connection manager's fast path (span.RequestTracer) ------------------------------

    context_headers = frozenset((b"traceparent", b"tracestate"))

    def begin(self, name: str, kind: SpanKind, headers: HeaderBytes,
              fields: Mapping[bytes, bytes], traced: bool) -> tuple[Span | None, object]:
        """``start_span``, without a span when the request is not sampled: its context is then
        ``(traceparent, tracestate)`` as header bytes."""
        raw = fields.get(b"traceparent")
        parent = None if raw is None else parse_traceparent(raw.decode("latin-1"))
        if parent is None:
            if traced:
                return Span(name, kind, new_id(16), new_id(8), "", True, "", time.time_ns(),
                            sink=self.exporter, tracer=self), None
            return None, (unsampled_traceparent(), b"")  # a new trace
        tracestate = fields.get(b"tracestate") or b""
        if parent.sampled and traced:  # as start_span: the caller and the decision agree
            return Span(name, kind, parent.trace_id, new_id(8), parent.parent_id, True,
                        tracestate.decode("latin-1"), time.time_ns(), sink=self.exporter,
                        tracer=self), None
        return None, (b"00-%s-%s-00" % (parent.trace_id.encode(), new_span_id()), tracestate)

    def inject_headers(self, span: Span, headers: HeaderBytes) -> None:
        set_pair(headers, b"traceparent",
                 format_traceparent(span.trace_id, span.span_id, span.sampled).encode(),
                 b"tracestate", span.tracestate.encode("latin-1"))

    def inject_unsampled(self, context: object, headers: HeaderBytes, child: bool,
                         retries: int = 0) -> None:
        hs = headers.headers  # (set_pair, inline: once per unsampled request)
        present = dict(hs)  # (a C-level pass)
        if context is None:  # a new trace: drawn now, or kept from the first attempt
            if not retries and b"traceparent" not in present and b"tracestate" not in present:
                # (the usual request; a child span's id would be as random as this one)
                hs += ((b"traceparent", unsampled_traceparent()), _EMPTY_TRACESTATE)
                return
            kept = present.get(b"traceparent") if retries else None
            if kept is not None and len(kept) == 55:
                if child:  # (the retry's own child span id, in the same trace)
                    headers.set_bytes(b"traceparent", kept[:36] + new_span_id() + b"-00")
                return
            traceparent, tracestate = unsampled_traceparent(), b""
        else:
            traceparent, tracestate = cast("tuple[bytes, bytes]", context)
            if child:  # (the child's span id: it is never sent, but the upstream sees it)
                traceparent = traceparent[:36] + new_span_id() + b"-00"
        if b"traceparent" in present or b"tracestate" in present:
            headers.set_bytes(b"traceparent", traceparent)
            headers.set_bytes(b"tracestate", tracestate)
        else:
            hs.append((b"traceparent", traceparent))
            hs.append((b"tracestate", tracestate))




def _check_cluster(cm: Any, name: str, path: str) -> None:
    if cm.get(name) is None and not getattr(cm, "dynamic_clusters", False):
        raise ConfigError([ConfigIssue(path, f"unknown cluster '{name}'")])
    cluster = cm.get(name)
    if cluster is not None and cluster.tls is not None:
        raise ConfigError([ConfigIssue(path, (
            f"cluster '{name}' has a TLS transport socket: exporting spans over TLS is not "
            "implemented by envoi (they would go out in the clear)"))])


def register(scope: Scope) -> None:  # pragma: no cover - kept for symmetry with zipkin
    OpenTelemetryStats(scope.scope("tracing.opentelemetry"))
