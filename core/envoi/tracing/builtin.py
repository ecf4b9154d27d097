"""The core's tracers, registered like any plugin's: ``envoy.tracers.opentelemetry`` and
``envoy.tracers.zipkin``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import FactoryContext, TracerFactory
from envoi.tracing.opentelemetry import OpenTelemetryTracer
from envoi.tracing.span import Tracer
from envoi.tracing.zipkin import ZipkinTracer

# (Imported here, with the factories: their modules declare the config fields they act on.)


class OpenTelemetryTracerFactory(TracerFactory):
    name = "envoy.tracers.opentelemetry"
    type_urls = ("envoy.config.trace.v3.OpenTelemetryConfig",)

    def create_tracer(self, config: Any, context: FactoryContext) -> Tracer:
        return OpenTelemetryTracer(config, context)


class ZipkinTracerFactory(TracerFactory):
    name = "envoy.tracers.zipkin"
    aliases = ("envoy.zipkin",)
    type_urls = ("envoy.config.trace.v3.ZipkinConfig",)

    def create_tracer(self, config: Any, context: FactoryContext) -> Tracer:
        return ZipkinTracer(config, context)


@hookimpl
def envoi_tracers() -> Sequence[TracerFactory]:
    return [OpenTelemetryTracerFactory(), ZipkinTracerFactory()]
