"""``example.filters.network.uppercase_echo``: a terminal network filter that echoes what it reads,
upper-cased, and counts lines in ``example.<stat_prefix>.*``.

It shows the whole plugin contract in one file: a config schema for a type that ``xds-protos``
does not have, a factory that turns config into a per-connection callback once, a filter object
per connection, stats made once per config, and the two hooks that register it all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoi import hookimpl
from envoi.extensions import ConfigSchema, FactoryContext, NetworkFilterFactory
from envoi.network.filter import (
    FilterChainBuilder,
    FilterStatus,
    NetworkFilterFactoryCb,
    ReadFilter,
)
from envoi.stats import Counter, StatsGroup

TYPE_URL = "example.filters.network.uppercase_echo.v1.UppercaseEcho"


@dataclass(frozen=True)
class UppercaseEchoConfig:
    stat_prefix: str
    max_line_bytes: int = 4096


#: The keys this filter implements: the core refuses any other key, with its path, before
#: parse_config runs, so a config never sets something the filter would silently ignore.
CONFIG_FIELDS = ("stat_prefix", "max_line_bytes")


def parse_config(data: Mapping[str, Any]) -> UppercaseEchoConfig:
    prefix = data.get("stat_prefix")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("stat_prefix: a non-empty string is required")
    max_line = data.get("max_line_bytes", 4096)
    if not isinstance(max_line, int | float) or int(max_line) < 1:
        raise ValueError("max_line_bytes: must be a positive integer")
    return UppercaseEchoConfig(prefix, int(max_line))


class EchoStats(StatsGroup):
    cx_total: Counter
    lines: Counter
    rx_bytes: Counter


class UppercaseEcho(ReadFilter):
    def __init__(self, stats: EchoStats) -> None:
        self.stats = stats

    def on_new_connection(self) -> FilterStatus:
        self.stats.cx_total.inc()
        return FilterStatus.CONTINUE

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        self.stats.rx_bytes.inc(len(data))
        self.stats.lines.inc(data.count(b"\n"))
        self.read_callbacks.connection.write(data.upper(), end_stream)
        return FilterStatus.STOP_ITERATION  # terminal: nothing after us


class UppercaseEchoFactory(NetworkFilterFactory):
    name = "example.filters.network.uppercase_echo"
    type_urls = (TYPE_URL,)
    terminal = True

    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        if not isinstance(config, UppercaseEchoConfig):
            raise ValueError("typed_config is required")
        stats = EchoStats(context.stats.root.scope(f"example.{config.stat_prefix}"))

        def add(builder: FilterChainBuilder) -> None:
            builder.add_read_filter(UppercaseEcho(stats))

        return add


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [UppercaseEchoFactory()]


@hookimpl
def envoi_config_schemas() -> Sequence[ConfigSchema]:
    return [ConfigSchema(TYPE_URL, parse_config, fields=CONFIG_FIELDS)]
