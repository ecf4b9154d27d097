"""A test plugin (loaded with ``-p crashy_filter``): a network filter that raises when it reads
the word given by its own command-line option ``--crashy-word`` (``envoi_addoption``)."""

from __future__ import annotations

import argparse
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
    def __init__(self, word: bytes) -> None:
        self.word = word

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        if self.word in data:
            raise RuntimeError("the filter failed")
        return FilterStatus.CONTINUE


class CrashyFactory(NetworkFilterFactory):
    name = "test.filters.network.crashy"

    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        word = context.plugin_options.crashy_word.encode()

        def add(builder: FilterChainBuilder) -> None:
            builder.add_read_filter(Crashy(word))

        return add


@hookimpl
def envoi_addoption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crashy-word", default="boom", help="the word that makes it raise")


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [CrashyFactory()]
