"""envoi.testing.HttpFilterDriver: the HTTP filter callbacks and a model of Envoy's filter
manager, without a server."""

from __future__ import annotations

import asyncio
from typing import Any

from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HeaderMap,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamDecoderFilter,
    StreamEncoderFilter,
    StreamFilter,
)
from envoi.stats import Counter, StatsGroup
from envoi.testing import HttpFilterDriver, factory_context

H, D, T = FilterHeadersStatus, FilterDataStatus, FilterTrailersStatus


class Stats(StatsGroup):
    seen: Counter


class Buffering(StreamDecoderFilter):
    """Holds the whole request body, then adds a header with its length and goes on later."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        self.headers = headers
        return H.CONTINUE if end_stream else H.STOP_ITERATION

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        if not end_stream:
            return D.STOP_ITERATION_AND_BUFFER
        body = self.decoder_callbacks.decoding_buffer() + data
        self.headers.set("x-body-length", str(len(body)))
        self.stats.seen.inc()
        asyncio.get_running_loop().call_later(0.01, self.decoder_callbacks.continue_decoding)
        return D.STOP_ITERATION_AND_BUFFER


class Factory(HttpFilterFactory):
    name = "test.buffering"

    def __init__(self, make: Any) -> None:
        self.make = make

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        stats = Stats(context.stats.root.scope(f"http.{context.stat_prefix}.buffering"))

        def add(builder: HttpFilterChainBuilder) -> None:
            f = self.make(stats)
            if isinstance(f, StreamFilter):
                builder.add_filter(f)
            elif isinstance(f, StreamDecoderFilter):
                builder.add_decoder_filter(f)
            else:
                builder.add_encoder_filter(f)

        return add


def test_stop_buffer_and_continue_later() -> None:
    with HttpFilterDriver(Factory(Buffering)) as d:
        assert d.decode_headers(method="POST", path="/up") is H.STOP_ITERATION
        assert d.request.headers is None
        assert d.decode_data(b"abc") is D.STOP_ITERATION_AND_BUFFER
        assert d.decode_data(b"de", end_stream=True) is D.STOP_ITERATION_AND_BUFFER
        d.run_until(lambda: d.decoding_continued)
        assert d.request.headers is not None and d.request.headers["x-body-length"] == "5"
        assert (d.request.body, d.request.end_stream) == (b"abcde", True)
        assert d.stats.changed() == {"http.test.buffering.seen": 1}


class AsyncReject(StreamFilter):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        await asyncio.sleep(0.01)
        if "x-tenant" not in headers:
            self.decoder_callbacks.send_local_reply(401, "who are you?\n",
                                                    {"www-authenticate": "tenant"}, "no_tenant")
            return H.STOP_ITERATION
        return H.CONTINUE

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        headers.set("x-seen-by", "async-reject")
        return H.CONTINUE


def test_async_local_reply_is_encoded_too() -> None:
    with HttpFilterDriver(Factory(AsyncReject)) as d:
        assert d.decode_headers({"x-other": "1"}) is H.STOP_ITERATION
        reply = d.local_reply
        assert reply is not None
        assert (reply.status, reply.body, reply.details) == (401, b"who are you?\n", "no_tenant")
        assert d.response.headers is not None
        assert d.response.headers.status == 401
        assert d.response.headers["x-seen-by"] == "async-reject"
        assert d.response.headers["www-authenticate"] == "tenant"
        assert d.response.body == b"who are you?\n" and d.response.end_stream
        assert d.stream_info.response_code_details == "no_tenant"
        assert d.request.headers is None


def test_async_continue_passes_through() -> None:
    with HttpFilterDriver(Factory(AsyncReject)) as d:
        assert d.decode_headers({"x-tenant": "a"}) is H.CONTINUE
        assert d.decode_data(b"x", end_stream=True) is D.CONTINUE
        assert d.decode_trailers({"grpc-status": "0"}) is T.CONTINUE
        assert d.request.body == b"x" and d.request.end_stream
        assert d.local_reply is None


class DropBody(StreamEncoderFilter):
    def __init__(self, stats: Stats) -> None:
        pass

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        return D.CONTINUE if end_stream else D.STOP_ITERATION_NO_BUFFER

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        trailers.set("x-trailer", "1")
        return T.CONTINUE


def test_encoder_path() -> None:
    with HttpFilterDriver(Factory(DropBody)) as d:
        d.decode_headers(end_stream=True)
        assert d.encode_headers(status=200) is H.CONTINUE
        assert d.encode_data(b"dropped") is D.STOP_ITERATION_NO_BUFFER
        # The stopped filter sees what comes next; its CONTINUE lets it through.
        assert d.encode_data(b"kept", end_stream=False) is D.STOP_ITERATION_NO_BUFFER
        assert d.encode_trailers({"grpc-status": "0"}) is T.CONTINUE
        assert d.response.body == b"" and d.response.trailers is not None
        assert d.response.trailers["x-trailer"] == "1"


def test_context_is_a_factory_context() -> None:
    ctx = factory_context(stat_prefix="ingress")
    with HttpFilterDriver(Factory(Buffering), context=ctx) as d:
        d.decode_headers(end_stream=True)
        d.complete()
    assert ctx.stat_prefix == "ingress" and not ctx.draining and not ctx.healthcheck_failed
