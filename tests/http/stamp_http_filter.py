"""A test plugin (``Options(extra_plugins=["stamp_http_filter"])`` or ``-p stamp_http_filter``):
``test.filters.http.stamp`` adds ``x-stamp: <value>`` to every response, ``value`` from its
typed_config or, when a route has one, from its per-route config
(``test.filters.http.stamp.v1.StampPerRoute``): a filter whose presence on a stream shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoi import hookimpl
from envoi.extensions import ConfigSchema, FactoryContext, HttpFilterFactory
from envoi.http import FilterHeadersStatus, HeaderMap, HttpFilterChainBuilder, HttpFilterFactoryCb
from envoi.http.filter import StreamEncoderFilter
from envoi.schema import config_schema

NAME = "test.filters.http.stamp"
TYPE_URL = "test.filters.http.stamp.v1.Stamp"
ROUTE_TYPE_URL = "test.filters.http.stamp.v1.StampPerRoute"


@dataclass(frozen=True)
class Stamp:
    value: str = "on"


class StampFilter(StreamEncoderFilter):
    def __init__(self, config: Stamp) -> None:
        self.config = config

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        route = self.encoder_callbacks.route()
        per_route = route.per_filter_config(NAME) if route is not None else None
        value = per_route.value if isinstance(per_route, Stamp) else self.config.value
        headers.add("x-stamp", value)
        return FilterHeadersStatus.CONTINUE


class StampFactory(HttpFilterFactory):
    name = NAME
    type_urls = (TYPE_URL,)
    route_type_urls = (ROUTE_TYPE_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        cfg = config if isinstance(config, Stamp) else Stamp()

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_encoder_filter(StampFilter(cfg))

        return add


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    return [StampFactory()]


@hookimpl
def envoi_config_schemas() -> Sequence[ConfigSchema]:
    return [config_schema(TYPE_URL, Stamp), config_schema(ROUTE_TYPE_URL, Stamp)]
