"""``envoy.filters.http.buffer``: hold the whole request body (up to ``max_request_bytes``)
before it goes on; bigger requests get 413, as in Envoy."""

from __future__ import annotations

from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamDecoderFilter,
)
from envoi.http.headers import HeaderMap
from envoi.stats import Counter

implements("envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes")


class BufferFilter(StreamDecoderFilter):
    def __init__(self, max_bytes: int, too_large: Counter) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.too_large = too_large  # http.<stat_prefix>.downstream_rq_too_large

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if end_stream:
            return FilterHeadersStatus.CONTINUE
        cl = headers.get_bytes(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.max_bytes:
            self._too_large()
            return FilterHeadersStatus.STOP_ITERATION
        return FilterHeadersStatus.STOP_ITERATION

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        self.size += len(data)
        if self.size > self.max_bytes:
            self._too_large()
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        if end_stream:
            return FilterDataStatus.CONTINUE
        return FilterDataStatus.STOP_ITERATION_AND_BUFFER

    def _too_large(self) -> None:
        self.too_large.value += 1
        self.decoder_callbacks.send_local_reply(413, b"Payload Too Large",
                                                details="request_payload_too_large")


class BufferFactory(HttpFilterFactory):
    name = "envoy.filters.http.buffer"
    type_urls = ("envoy.extensions.filters.http.buffer.v3.Buffer",)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        if config is None or not config.HasField("max_request_bytes"):
            raise ConfigError([ConfigIssue(context.path + ".max_request_bytes", "required")])
        limit = config.max_request_bytes.value
        # Envoy counts a request the buffer filter refuses as the connection manager's own
        # downstream_rq_too_large (the same counter, by name, as the HCM's stats).
        too_large = context.stats.root.scope(f"http.{context.stat_prefix}").counter(
            "downstream_rq_too_large")

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_decoder_filter(BufferFilter(limit, too_large))

        return add
