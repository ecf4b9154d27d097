"""envoi-mongo's plugin module: registers ``envoy.filters.network.mongo_proxy``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import FactoryContext, NetworkFilterFactory
from envoi.network.filter import FilterChainBuilder, NetworkFilterFactoryCb

from envoi_mongo.access_log import AccessLog
from envoi_mongo.config import from_proto
from envoi_mongo.proxy import MongoProxyFilter, MongoProxyShared


class MongoProxyFactory(NetworkFilterFactory):
    name = "envoy.filters.network.mongo_proxy"
    aliases = ("envoy.mongo_proxy",)
    type_urls = ("envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy",)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        cfg = from_proto(config)
        access_log = AccessLog.for_path(cfg.access_log) if cfg.access_log else None
        shared = MongoProxyShared(cfg, context.scope, context, access_log,
                                  context.tap_point(self.name))

        def cb(builder: FilterChainBuilder) -> None:
            builder.add_filter(MongoProxyFilter(shared))

        return cb


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [MongoProxyFactory()]
