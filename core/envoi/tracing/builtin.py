"""The core's tracers, registered like any plugin's: ``envoy.tracers.opentelemetry`` and
``envoy.tracers.zipkin``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import FactoryContext, TracerFactory
from envoi.tracing.span import Tracer

# The tracer modules (and their config-field declarations) are imported when a tracer is made:
# until the HTTP connection manager acts on ``tracing``, no config reaches them, and the
# implemented-fields list must not claim them.


class OpenTelemetryTracerFactory(TracerFactory):
    name = "envoy.tracers.opentelemetry"
    type_urls = ("envoy.config.trace.v3.OpenTelemetryConfig",)

    def create_tracer(self, config: Any, context: FactoryContext) -> Tracer:
        from envoi.tracing.opentelemetry import OpenTelemetryTracer

        return OpenTelemetryTracer(config, context)


class ZipkinTracerFactory(TracerFactory):
    name = "envoy.tracers.zipkin"
    aliases = ("envoy.zipkin",)
    type_urls = ("envoy.config.trace.v3.ZipkinConfig",)

    def create_tracer(self, config: Any, context: FactoryContext) -> Tracer:
        from envoi.tracing.zipkin import ZipkinTracer

        return ZipkinTracer(config, context)


@hookimpl
def envoi_tracers() -> Sequence[TracerFactory]:
    return [OpenTelemetryTracerFactory(), ZipkinTracerFactory()]
