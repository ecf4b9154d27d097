"""The envoi-dynamodb plugin module (entry point ``dynamodb`` in group ``envoi``): registers the
HTTP filter ``envoy.filters.http.dynamo`` and the schema of its config type.

Envoy's config message ``envoy.extensions.filters.http.dynamo.v3.Dynamo`` is empty and lives in
Envoy's contrib protos, which ``xds-protos`` does not carry; its schema here is an empty
dataclass, so any field in it is a config error naming its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoi import hookimpl
from envoi.extensions import ConfigSchema, FactoryContext, HttpFilterFactory
from envoi.http import HttpFilterChainBuilder, HttpFilterFactoryCb
from envoi.schema import config_schema

from envoi_dynamodb.filter import DynamoFilter, DynamoShared
from envoi_dynamodb.stats import DynamoStats

TYPE_URL = "envoy.extensions.filters.http.dynamo.v3.Dynamo"


@dataclass(frozen=True)
class DynamoConfig:
    """``envoy.extensions.filters.http.dynamo.v3.Dynamo``: an empty message."""


class DynamoFactory(HttpFilterFactory):
    name = "envoy.filters.http.dynamo"
    aliases = ("envoy.http_dynamo_filter",)  # Envoy's legacy name
    type_urls = (TYPE_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        # config is a DynamoConfig (or None from a test driver without config): the message is
        # empty either way. Stats: http.<hcm stat_prefix>.dynamodb.*
        stats = DynamoStats.for_scope(
            context.stats.root.scope(f"http.{context.stat_prefix}.dynamodb"), context.runtime)
        shared = DynamoShared(stats, context.runtime, context.tap_point(self.name))

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_filter(DynamoFilter(shared))

        return add


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    return [DynamoFactory()]


@hookimpl
def envoi_config_schemas() -> Sequence[ConfigSchema]:
    return [config_schema(TYPE_URL, DynamoConfig)]
