"""A test plugin (loaded with ``-p crashy_filter``): a network filter that raises on "boom"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import FactoryContext, NetworkFilterFactory
from envoi.network.filter import (
    FilterChainBuilder,
    FilterStatus,
    NetworkFilterFactoryCb,
    ReadFilter,
)


class Crashy(ReadFilter):
    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        if b"boom" in data:
            raise RuntimeError("the filter failed")
        return FilterStatus.CONTINUE


class CrashyFactory(NetworkFilterFactory):
    name = "test.filters.network.crashy"

    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        def add(builder: FilterChainBuilder) -> None:
            builder.add_read_filter(Crashy())

        return add


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [CrashyFactory()]
