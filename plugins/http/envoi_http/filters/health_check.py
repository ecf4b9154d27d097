"""``envoy.filters.http.health_check``: answer (or pass through) health-check requests, and
answer 503 while the server is failed via ``/healthcheck/fail``."""

from __future__ import annotations

from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.extensions import FactoryContext, HttpFilterFactory, ServerContext
from envoi.http.filter import (
    FilterHeadersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamFilter,
)
from envoi.http.headers import HeaderMap

from envoi_http.router.matchers import header_matcher

implements("envoy.extensions.filters.http.health_check.v3.HealthCheck",
           "pass_through_mode", "headers")


class HealthCheckFilter(StreamFilter):
    def __init__(self, server: ServerContext, pass_through: bool,
                 matchers: tuple[Any, ...]) -> None:
        self.server = server
        self.pass_through = pass_through
        self.matchers = matchers
        self.is_hc = False

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if not all(m(headers) for m in self.matchers):
            return FilterHeadersStatus.CONTINUE
        self.is_hc = True
        self.decoder_callbacks.stream_info.extra["health_check"] = True
        if self.server.healthcheck_failed:
            self.decoder_callbacks.send_local_reply(503, b"", details="health_check_failed")
            return FilterHeadersStatus.STOP_ITERATION
        if self.pass_through:
            return FilterHeadersStatus.CONTINUE
        self.decoder_callbacks.send_local_reply(200, b"", details="health_check_ok")
        return FilterHeadersStatus.STOP_ITERATION

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if self.is_hc and self.server.healthcheck_failed:
            headers.status = 503
            headers.set_bytes(b"x-envoy-immediate-health-check-fail", b"true")
        return FilterHeadersStatus.CONTINUE


class HealthCheckFactory(HttpFilterFactory):
    name = "envoy.filters.http.health_check"
    type_urls = ("envoy.extensions.filters.http.health_check.v3.HealthCheck",)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        if config is None or not config.HasField("pass_through_mode"):
            raise ConfigError([ConfigIssue(context.path + ".pass_through_mode", "required")])
        pass_through = config.pass_through_mode.value
        matchers = tuple(header_matcher(h, f"{context.path}.headers[{i}]")
                         for i, h in enumerate(config.headers))
        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_filter(HealthCheckFilter(context, pass_through, matchers))

        return add
