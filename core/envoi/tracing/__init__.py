"""Distributed tracing: Envoy's sampling decision, W3C and B3 propagation, a span model, and
tracers (``envoy.tracers.opentelemetry``, ``envoy.tracers.zipkin``) whose batching exporters
send spans off the request path, bounded. See each module; the HTTP connection manager is
what starts spans (``tracing`` in its config)."""

from envoi.tracing.propagation import B3Context, TraceParent, extract_b3, extract_w3c
from envoi.tracing.sampling import Decision, Percent, Reason, SamplingConfig
from envoi.tracing.span import Span, SpanKind, Tracer

__all__ = [
    "B3Context",
    "Decision",
    "Percent",
    "Reason",
    "SamplingConfig",
    "Span",
    "SpanKind",
    "TraceParent",
    "Tracer",
    "extract_b3",
    "extract_w3c",
]
