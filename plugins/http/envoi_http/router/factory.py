"""``envoy.filters.http.router`` factory."""

from __future__ import annotations

from typing import Any

from envoi.config import implements
from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import HttpFilterChainBuilder, HttpFilterFactoryCb

from envoi_http.options import http1_codec
from envoi_http.router.filter import Router
from envoi_http.router.plan import RouterConfig
from envoi_http.router.stats import RouterStats

implements("envoy.extensions.filters.http.router.v3.Router",
           "suppress_envoy_headers", "respect_expected_rq_timeout", "start_child_span")


class RouterFactory(HttpFilterFactory):
    name = "envoy.filters.http.router"
    aliases = ("envoy.router",)
    type_urls = ("envoy.extensions.filters.http.router.v3.Router",)
    terminal = True

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        suppress = bool(config.suppress_envoy_headers) if config is not None else False
        respect = bool(config.respect_expected_rq_timeout) if config is not None else False
        stats = RouterStats(context.stats.root.scope(f"http.{context.stat_prefix}"))
        cfg = RouterConfig(context.cluster_manager, suppress, http1_codec(context), stats,
                           respect)
        # An egress span per upstream attempt (router/tracing.py), when the stream is traced.
        cfg.start_child_span = bool(config.start_child_span) if config is not None else False

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_decoder_filter(Router(cfg))

        return add
