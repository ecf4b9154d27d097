"""``envoy.tracers.zipkin``: B3 in, Zipkin JSON v2 out (HTTP POST to a cluster).

As Envoy 1.39.3's Zipkin tracer does it (seen against it, with its default
``shared_span_context: true``):

* a request's B3 context (``x-b3-*`` or ``b3``) is joined: the ingress span keeps the caller's
  trace id, span id and parent (a shared span), sampled as ``x-b3-sampled`` says when it says;
  without one a new trace starts, 64-bit (``trace_id_128bit``: 128), whose root span id is the
  trace id's low 64 bits, sampled by Envoy's decision. W3C headers are not read;
* the router's egress span shares its parent's context (same ids, ``kind: SERVER``,
  ``shared: true``), so the upstream sees the ingress span's ids in ``x-b3-traceid``,
  ``x-b3-spanid``, ``x-b3-parentspanid`` (when there is a parent) and ``x-b3-sampled``;
* spans are JSON v2 objects: ``traceId``, ``id``, ``parentId``, ``name``, ``kind``,
  ``timestamp`` and ``duration`` in microseconds, ``localEndpoint`` (``serviceName``: the node's
  cluster), an ``ss`` annotation at the end, ``tags``, ``shared``;
* reports go to ``collector_cluster`` at ``collector_endpoint`` (``Host``:
  ``collector_hostname``, else the cluster's name), ``application/json``; stats
  ``tracing.zipkin.spans_sent``, ``.timer_flushed``, ``.reports_sent``, ``.reports_dropped``
  (the collector refused), ``.reports_failed`` (not delivered),
  ``.reports_skipped_no_cluster``; runtime ``tracing.zipkin.min_flush_spans`` (5) and
  ``.flush_interval_ms`` (5000).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.stats import Counter, StatsGroup
from envoi.tracing.export import BatchExporter, HttpPoster, PostResult
from envoi.tracing.propagation import Getter, Setter, extract_b3, inject_b3
from envoi.tracing.span import HeaderBytes, Span, SpanKind, new_id

__all__ = ["ZipkinTracer", "encode_spans"]

# The B3 headers a request's context is read from (propagation.extract_b3).
_B3_NAMES = frozenset((b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid",
                       b"x-b3-sampled", b"x-b3-flags"))

implements("envoy.config.trace.v3.ZipkinConfig", "collector_cluster", "collector_endpoint",
           "trace_id_128bit", "shared_span_context", "collector_endpoint_version",
           "collector_hostname")


class ZipkinStats(StatsGroup):
    spans_sent: Counter
    timer_flushed: Counter
    reports_sent: Counter
    reports_dropped: Counter
    reports_failed: Counter
    reports_skipped_no_cluster: Counter


def _local_ipv4() -> str:
    """The address Zipkin's ``localEndpoint`` names: this host's outward IPv4 (no packet is
    sent: a UDP socket is only pointed at a documentation address)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def encode_spans(spans: Sequence[Span], service_name: str, ipv4: str) -> bytes:
    out = []
    for span in spans:
        end_us = span.end_ns // 1000
        start_us = span.start_ns // 1000
        doc: dict[str, Any] = {"traceId": span.trace_id, "id": span.span_id}
        if span.parent_id:
            doc["parentId"] = span.parent_id
        doc["name"] = span.name
        doc["kind"] = (span.extra or {}).get("zipkin_kind", span.kind.value)
        doc["timestamp"] = start_us
        doc["duration"] = max(0, end_us - start_us)
        doc["localEndpoint"] = {"serviceName": service_name, "ipv4": ipv4, "port": 0}
        doc["annotations"] = [{"timestamp": end_us, "value": "ss"}]
        # Envoy's Zipkin spans keep no empty tag (the ingress span's ``zone`` without one).
        doc["tags"] = {k: v for k, v in (span.tags or {}).items() if v}
        if (span.extra or {}).get("shared"):
            doc["shared"] = True
        out.append(doc)
    return json.dumps(out, separators=(",", ":")).encode()


class ZipkinTracer:
    def __init__(self, config: Any, context: Any) -> None:
        path = context.path
        if config.collector_endpoint_version not in (0, 1):  # unset, or HTTP_JSON
            raise ConfigError([ConfigIssue(f"{path}.collector_endpoint_version",
                                           "only HTTP_JSON is implemented")])
        if config.trace_context_option:
            raise ConfigError([ConfigIssue(f"{path}.trace_context_option",
                                           "only USE_B3 is implemented")])
        cm = context.cluster_manager
        cluster_name = config.collector_cluster
        cluster = cm.get(cluster_name)
        if cluster is None and not getattr(cm, "dynamic_clusters", False):
            raise ConfigError([ConfigIssue(f"{path}.collector_cluster",
                                           f"unknown cluster '{cluster_name}'")])
        if cluster is not None and cluster.tls is not None:
            raise ConfigError([ConfigIssue(f"{path}.collector_cluster", (
                f"cluster '{cluster_name}' has a TLS transport socket: exporting spans over "
                "TLS is not implemented by envoi (they would go out in the clear)"))])
        if not config.collector_endpoint:
            raise ConfigError([ConfigIssue(f"{path}.collector_endpoint", "required")])
        self.trace_id_128 = config.trace_id_128bit
        self.shared = (config.shared_span_context.value
                       if config.HasField("shared_span_context") else True)
        self.service_name = context.local_info.cluster
        self.ipv4 = _local_ipv4()
        self.stats = stats = ZipkinStats(context.stats.root.scope("tracing.zipkin"))
        self.poster = poster = HttpPoster(
            cm, cluster_name, config.collector_endpoint,
            config.collector_hostname or cluster_name,
            [("content-type", "application/json")], 5.0)

        async def send(spans: list[Span]) -> PostResult:
            if cm.get(cluster_name) is None:
                stats.reports_skipped_no_cluster.inc()
                return False
            return await poster.post(encode_spans(spans, self.service_name, self.ipv4))

        def result(r: PostResult) -> None:
            if r:
                stats.reports_sent.inc()
            elif r is False:
                stats.reports_dropped.inc()
            else:
                stats.reports_failed.inc()

        self.exporter = BatchExporter(
            send, runtime=context.runtime, runtime_prefix="tracing.zipkin",
            on_sent=lambda n: stats.spans_sent.inc(n), on_result=result,
            on_timer=lambda: stats.timer_flushed.inc())

    # -- Tracer ---------------------------------------------------------------------------------

    def start_span(self, name: str, kind: SpanKind, get_header: Getter, traced: bool,
                   start_ns: int) -> Span:
        # Envoy's Zipkin tracer names the ingress span after the request's host (a route
        # decorator renames it afterwards).
        name = get_header(":authority") or get_header("host") or name
        trace_id, span_id, parent, sampled, shared = self._context(kind, get_header, traced)
        span = Span(name, kind, trace_id, span_id, parent, sampled, "", start_ns,
                    sink=self.exporter, tracer=self)
        span.extra = {"shared": shared}
        return span

    def _context(self, kind: SpanKind, get_header: Getter,
                 traced: bool) -> tuple[str, str, str, bool, bool]:
        """The ingress span's trace id, span id, parent id, sampled and shared flags."""
        ctx = extract_b3(get_header)
        if ctx is not None and ctx.trace_id:
            # An egress operation (an OUTBOUND listener's, kind CLIENT) is a span of its own,
            # never shared with the caller's.
            shared = self.shared and kind is SpanKind.SERVER
            return (ctx.trace_id, ctx.span_id if shared else new_id(8),
                    ctx.parent_id if shared else ctx.span_id,
                    traced if ctx.sampled is None else ctx.sampled, shared)
        if ctx is not None and ctx.sampled is not None:  # a sampling decision alone
            traced = ctx.sampled
        trace_id = new_id(16 if self.trace_id_128 else 8)
        return trace_id, trace_id[-16:], "", traced, kind is SpanKind.SERVER

    def child(self, parent: Span, name: str, start_ns: int) -> Span:
        # Envoy 1.39's Zipkin egress span shares its parent's context.
        span = Span(name, parent.kind, parent.trace_id, parent.span_id, parent.parent_id,
                    parent.sampled, "", start_ns, sink=self.exporter, tracer=self)
        span.extra = {"shared": True, "zipkin_kind": parent.kind.value}
        return span

    def inject(self, span: Span, set_header: Setter) -> None:
        inject_b3(set_header, span.trace_id, span.span_id, span.parent_id, span.sampled)

    # -- the connection manager's fast path (span.RequestTracer) ------------------------------

    context_headers = _B3_NAMES

    def begin(self, name: str, kind: SpanKind, headers: HeaderBytes,
              fields: Mapping[bytes, bytes], traced: bool) -> tuple[Span | None, object]:
        """``start_span``, without a span when the request is not sampled: its context is then
        ``(trace id, span id, parent id)`` as header bytes (the egress span shares it)."""
        def get(name: str) -> str | None:  # (B3's names, from the fields the HCM read)
            v = fields.get(name.encode())
            return None if v is None else v.decode("latin-1")

        trace_id, span_id, parent, sampled, shared = self._context(kind, get, traced)
        if not sampled:
            return None, (trace_id.encode(), span_id.encode(), parent.encode())
        span = Span(headers.get(":authority") or name, kind, trace_id, span_id, parent, True,
                    "", time.time_ns(), sink=self.exporter, tracer=self)
        span.extra = {"shared": shared}
        return span, None

    def inject_headers(self, span: Span, headers: HeaderBytes) -> None:
        set_bytes = headers.set_bytes
        set_bytes(b"x-b3-traceid", span.trace_id.encode())
        set_bytes(b"x-b3-spanid", span.span_id.encode())
        if span.parent_id:
            set_bytes(b"x-b3-parentspanid", span.parent_id.encode())
        set_bytes(b"x-b3-sampled", b"1" if span.sampled else b"0")

    def inject_unsampled(self, context: object, headers: HeaderBytes, child: bool,
                         retries: int = 0) -> None:
        if context is None:  # a new trace (the egress span shares the context: child or not)
            hs = headers.headers
            present = dict(hs)  # (a C-level pass)
            if retries and b"x-b3-traceid" in present:
                return  # (the first attempt's)
            new = new_id(16 if self.trace_id_128 else 8).encode()
            if _B3_NAMES.isdisjoint(present):
                hs.append((b"x-b3-traceid", new))
                hs.append((b"x-b3-spanid", new[-16:]))
                hs.append((b"x-b3-sampled", b"0"))
                return
            context = (new, new[-16:], b"")
        trace_id, span_id, parent = cast("tuple[bytes, bytes, bytes]", context)
        set_bytes = headers.set_bytes
        set_bytes(b"x-b3-traceid", trace_id)
        set_bytes(b"x-b3-spanid", span_id)
        if parent:
            set_bytes(b"x-b3-parentspanid", parent)
        set_bytes(b"x-b3-sampled", b"0")
