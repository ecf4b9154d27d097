"""A test plugin (loaded with ``-p raising_http_filter``): ``test.filters.http.raising`` raises
in the method named by the request's ``x-raise`` header (``decode_headers``, ``decode_data``,
``encode_headers``, ``encode_data``); ``test.filters.http.bad_config`` raises ValueError from
``create_filter_factory`` (the documented way to refuse a config), ``test.filters.http.buggy``
raises RuntimeError there (a plugin bug)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http import (
    FilterDataStatus,
    FilterHeadersStatus,
    HeaderMap,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamFilter,
)


class Raising(StreamFilter):
    where = ""

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.where = headers.get("x-raise") or ""
        self._maybe("decode_headers")
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        self._maybe("decode_data")
        return FilterDataStatus.CONTINUE

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self._maybe("encode_headers")
        return FilterHeadersStatus.CONTINUE

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        self._maybe("encode_data")
        return FilterDataStatus.CONTINUE

    def _maybe(self, method: str) -> None:
        if self.where == method:
            raise RuntimeError(f"raising filter: asked to fail in {method}")


class RaisingFactory(HttpFilterFactory):
    name = "test.filters.http.raising"

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_filter(Raising())

        return add


class BadConfigFactory(HttpFilterFactory):
    name = "test.filters.http.bad_config"

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        raise ValueError("threshold: must be positive")


class BuggyFactory(HttpFilterFactory):
    name = "test.filters.http.buggy"

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        raise RuntimeError("oops")


@hookimpl
def envoi_http_filters() -> Sequence[HttpFilterFactory]:
    return [RaisingFactory(), BadConfigFactory(), BuggyFactory()]
