"""Drive HTTP filters without a server: headers, body and trailers in; statuses, what went on,
the local reply and the stats out.

The driver is the filter callbacks object (:class:`envoi.http.filter.StreamDecoderFilterCallbacks`
and ``StreamEncoderFilterCallbacks``) for the filters one factory adds to one stream, and a small
model of Envoy's filter manager around them: decoder filters run first to last, encoder filters
last to first; a filter that stops holds what follows (headers, buffered body, trailers) until
it calls ``continue_decoding()`` / ``continue_encoding()``; ``send_local_reply()`` ends the
request path and runs the reply through the encoder filters, as Envoy does. What passes the last
decoder filter is what the router would get (``request``); what passes the last encoder filter
is what the client would get (``response``).

Every filter call runs inside the driver's event loop, so ``async def`` methods, timers and
tasks work; ``run_until(predicate)`` runs the loop until a filter's background work is done.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import (
    DownstreamWatermarkCallbacks,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterState,
    FilterTrailersStatus,
    HttpStreamInfo,
    ModifyHeaders,
    RouteInfo,
    StreamDecoderFilter,
    StreamEncoderFilter,
    StreamFilter,
)
from envoi.http.headers import HeaderMap
from envoi.network.filter import Connection
from envoi.testing.driver import FakeTransport, StatsDelta
from envoi.testing.filter_manager_model import (
    Direction,
    FilterManagerModel,
    HeadersLike,
    LocalReply,
    Message,
    to_header_map,
)

_stream_ids = itertools.count(1)


class HttpFilterDriver(FilterManagerModel):
    """The filters of ``factory`` for one stream, driven by hand::

        d = HttpFilterDriver(TenantFactory(), {"header": "x-tenant"})
        assert d.decode_headers({"x-tenant": "a"}, end_stream=True) is FilterHeadersStatus.CONTINUE
        d.encode_headers({":status": "200"}, end_stream=True)
        assert d.response.headers["x-served-for"] == "a"
        assert d.stats["http.test.tenant.allowed"] == 1

    ``config``: the object the factory's ``create_filter_factory`` takes; a mapping is parsed
    first, by the plugin's registered ``ConfigSchema`` for the factory's first type URL (or as
    that proto message); None is the factory's default (empty) config. ``context``: a factory
    context (``envoi.testing.factory_context()`` by default; its ``stat_prefix`` is ``test``).
    """

    def __init__(self, factory: HttpFilterFactory, config: Any = None, *,
                 route_config: Any = None, route_name: str = "route",
                 cluster: str | None = "cluster",
                 context: FactoryContext | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 remote_address: str = "127.0.0.1:40000",
                 local_address: str = "127.0.0.1:10000") -> None:
        from envoi.testing.context import factory_context

        self.context = context if context is not None else factory_context()
        self.loop = loop if loop is not None else asyncio.new_event_loop()
        self._own_loop = loop is None
        self.stats = StatsDelta(self.context.stats).__enter__()
        self.decoders: list[StreamDecoderFilter] = []
        self.encoders: list[StreamEncoderFilter] = []
        self.stream_id = next(_stream_ids)
        self.stream_info = HttpStreamInfo(remote_address, local_address)
        self.filter_state = FilterState()
        self.request_headers: HeaderMap | None = None
        self.request = Message()
        self.response = Message()
        self.local_reply: LocalReply | None = None
        self.was_reset = False
        self.cluster_name: str | None = cluster
        per_filter = {}
        if route_config is not None:
            parsed = _parse_config(factory, route_config, self.context, route=True)
            per_filter[factory.name] = self.context.run_factory(
                factory, lambda: factory.create_route_config(parsed, self.context))
        #: What ``callbacks.route()`` answers; ``route_config`` is the per-route config of this
        #: filter (what a route's ``typed_per_filter_config`` would hold under its name).
        self.route_info: RouteInfo | None = DriverRoute(route_name, cluster, "vhost", per_filter)
        self.route_cache_cleared = 0
        self.buffer_limit = 1024 * 1024
        self.watermark_callbacks: list[DownstreamWatermarkCallbacks] = []
        self.upgrade = b""  # what the stream's accepted upgrade would be
        # start_deadline()'s pending callbacks, as loop timers
        self.deadlines: dict[Callable[[], None], asyncio.TimerHandle] = {}
        self.above_write_buffer_high_watermark = 0
        self.connection: Connection = _DriverConnection(self)
        self._tasks: list[asyncio.Task[Any]] = []
        cb = self.context.run_factory(factory, lambda: factory.create_filter_factory(
            _parse_config(factory, config, self.context), self.context))
        self._run(lambda: cb(self))
        self._dec = Direction(list(self.decoders), decode=True)
        self._enc = Direction(list(reversed(self.encoders)), decode=False)

    # -- HttpFilterChainBuilder ----------------------------------------------------------------

    def add_decoder_filter(self, f: StreamDecoderFilter) -> None:
        f.set_decoder_filter_callbacks(_DecoderCallbacks(self))
        self.decoders.append(f)

    def add_encoder_filter(self, f: StreamEncoderFilter) -> None:
        f.set_encoder_filter_callbacks(_EncoderCallbacks(self))
        self.encoders.append(f)

    def add_filter(self, f: StreamFilter) -> None:
        self.add_decoder_filter(f)
        self.add_encoder_filter(f)

    # -- feeding the request -------------------------------------------------------------------

    def decode_headers(self, headers: HeadersLike = None, *, end_stream: bool = False,
                       method: str = "GET", path: str = "/", authority: str = "example.com",
                       scheme: str = "http") -> FilterHeadersStatus:
        """Request headers (a mapping, pairs or a HeaderMap); ``:method`` ``GET``, ``:path``
        ``/`` and ``:authority`` ``example.com`` unless given. Returns the status of the filter
        that stopped iteration, or ``CONTINUE``."""
        hm = to_header_map(headers, method=method, path=path, authority=authority,
                           scheme=scheme)
        self.request_headers = hm
        return FilterHeadersStatus(self._run(lambda: self._headers(self._dec, hm, end_stream)))

    def decode_data(self, data: bytes, *, end_stream: bool = False) -> FilterDataStatus:
        return FilterDataStatus(self._run(lambda: self._data(self._dec, data, end_stream)))

    def decode_trailers(self, trailers: HeadersLike) -> FilterTrailersStatus:
        tm = to_header_map(trailers)
        return FilterTrailersStatus(self._run(lambda: self._trailers(self._dec, tm)))

    # -- feeding the response (what the upstream answered) -------------------------------------

    def encode_headers(self, headers: HeadersLike = None, *, status: int = 200,
                       end_stream: bool = False) -> FilterHeadersStatus:
        hm = to_header_map(headers)
        if not hm.status:
            hm.status = status
        return FilterHeadersStatus(self._run(lambda: self._headers(self._enc, hm, end_stream)))

    def encode_data(self, data: bytes, *, end_stream: bool = False) -> FilterDataStatus:
        return FilterDataStatus(self._run(lambda: self._data(self._enc, data, end_stream)))

    def encode_trailers(self, trailers: HeadersLike) -> FilterTrailersStatus:
        tm = to_header_map(trailers)
        return FilterTrailersStatus(self._run(lambda: self._trailers(self._enc, tm)))

    # -- results ---------------------------------------------------------------------------------

    @property
    def decoding_continued(self) -> int:
        """How often a decoder filter called ``continue_decoding()``."""
        return self._dec.continued

    @property
    def encoding_continued(self) -> int:
        return self._enc.continued

    def json_body(self) -> Any:
        """The response body as JSON (a filter that answers JSON)."""
        return json.loads(self.response.body)

    def run_until(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Run the loop until ``predicate()`` is true (a filter's task or timer finished)."""
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.001)

        self.loop.run_until_complete(asyncio.wait_for(wait(), timeout))
        self.loop.run_until_complete(self._drain())

    def complete(self) -> None:
        """The stream is over: ``on_stream_complete`` then ``on_destroy`` on every filter."""
        seen: list[Any] = []
        for f in [*self.decoders, *self.encoders]:
            if not any(f is s for s in seen):
                seen.append(f)

        def done() -> None:
            for f in seen:
                f.on_stream_complete()
            for f in seen:
                f.on_destroy()

        self._run(done)

    def close(self) -> None:
        if self._own_loop and not self.loop.is_closed():
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    def __enter__(self) -> HttpFilterDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class DriverRoute:
    """The route a driven stream is on (``callbacks.route()``)."""

    name: str
    cluster_name: str | None
    virtual_host_name: str
    per_filter: dict[str, object] = field(default_factory=dict)

    def per_filter_config(self, name: str) -> object | None:
        return self.per_filter.get(name)


def _parse_config(factory: HttpFilterFactory, config: Any, context: FactoryContext,
                  route: bool = False) -> Any:
    urls = factory.route_type_urls if route else factory.type_urls
    if config is None or not isinstance(config, Mapping):
        if config is None and not route:
            from envoi.factory_context import default_config

            return default_config(factory)
        return config
    if not urls:
        if route:
            raise ValueError(f"{factory.name} has no per-route config (route_type_urls)")
        return config
    from envoi.testing.context import installed_plugins

    type_url = urls[0].rsplit("/", 1)[-1]
    schema = installed_plugins().schemas.get(type_url)
    if schema is not None:
        from envoi.config import ConfigError, ConfigIssue

        try:
            return schema.parse(config)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError([ConfigIssue(context.path, str(exc))]) from exc
    from google.protobuf import json_format, symbol_database

    from envoi.config import ensure_protos_loaded

    ensure_protos_loaded()
    message = symbol_database.Default().GetSymbol(type_url)()
    json_format.ParseDict(dict(config), message)
    return message


class _Callbacks:
    """What both paths' callbacks share; each filter gets its own object."""

    def __init__(self, driver: HttpFilterDriver) -> None:
        self._d = driver

    @property
    def connection(self) -> Connection:
        return self._d.connection

    @property
    def stream_id(self) -> int:
        return self._d.stream_id

    @property
    def stream_info(self) -> HttpStreamInfo:
        return self._d.stream_info

    @property
    def filter_state(self) -> FilterState:
        return self._d.filter_state

    @property
    def request_headers(self) -> HeaderMap | None:
        return self._d.request_headers

    def route(self) -> RouteInfo | None:
        return self._d.route_info

    def clear_route_cache(self) -> None:
        self._d.route_cache_cleared += 1

    @property
    def cluster_name(self) -> str | None:
        return self._d.cluster_name

    @property
    def upgrade(self) -> bytes:
        return self._d.upgrade

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._d.loop

    def start_deadline(self, delay: float, callback: Callable[[], None]) -> None:
        self.cancel_deadline(callback)
        deadlines = self._d.deadlines

        def fire() -> None:
            deadlines.pop(callback, None)
            callback()

        deadlines[callback] = self._d.loop.call_later(delay, fire)

    def cancel_deadline(self, callback: Callable[[], None]) -> None:
        handle = self._d.deadlines.pop(callback, None)
        if handle is not None:
            handle.cancel()

    def send_local_reply(self, status: int, body: bytes | str = b"",
                         headers: dict[str, str] | None = None, details: str = "",
                         modify_headers: ModifyHeaders | None = None) -> None:
        self._d._send_local_reply(status, body, headers, details, modify_headers)

    def reset_stream(self) -> None:
        self._d.was_reset = True

    @property
    def buffer_limit(self) -> int:
        return self._d.buffer_limit


class _DecoderCallbacks(_Callbacks):
    def continue_decoding(self) -> None:
        self._d._continue(self._d._dec)

    def add_decoded_data(self, data: bytes) -> None:
        self._d._dec.buffer += data

    def decoding_buffer(self) -> bytes:
        return bytes(self._d._dec.buffer)

    def inject_decoded_data(self, data: bytes, end_stream: bool) -> None:
        self._d.request.body += data
        self._d.request.end_stream = end_stream

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        self._d._spawn(self._d._headers(self._d._enc, headers, end_stream))

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        self._d._spawn(self._d._data(self._d._enc, data, end_stream))

    def encode_trailers(self, trailers: HeaderMap) -> None:
        self._d._spawn(self._d._trailers(self._d._enc, trailers))

    def encode_response(self, headers: HeaderMap, data: bytes, end_stream: bool) -> None:
        self.encode_headers(headers, False)
        self.encode_data(data, end_stream)

    def on_decoder_filter_above_write_buffer_high_watermark(self) -> None:
        self._d.above_write_buffer_high_watermark += 1

    def on_decoder_filter_below_write_buffer_low_watermark(self) -> None:
        self._d.above_write_buffer_high_watermark -= 1

    def add_downstream_watermark_callbacks(self, cbs: DownstreamWatermarkCallbacks) -> None:
        self._d.watermark_callbacks.append(cbs)


class _EncoderCallbacks(_Callbacks):
    def continue_encoding(self) -> None:
        self._d._continue(self._d._enc)

    def add_encoded_data(self, data: bytes) -> None:
        self._d._enc.buffer += data

    def encoding_buffer(self) -> bytes:
        return bytes(self._d._enc.buffer)

    def inject_encoded_data(self, data: bytes, end_stream: bool) -> None:
        self._d.response.body += data
        self._d.response.end_stream = end_stream


class _DriverConnection:
    """The downstream connection as a filter sees it (nothing is sent anywhere)."""

    def __init__(self, driver: HttpFilterDriver) -> None:
        self._driver = driver
        self.id = driver.stream_id
        self.stream_info = HttpStreamInfo(driver.stream_info.downstream_remote_address,
                                          driver.stream_info.downstream_local_address)
        self.closed = False
        self.above_high_watermark = False
        self.read_disabled = 0
        self.transport = FakeTransport()
        # A plaintext connection: no TLS facts (set ``ssl`` to an SslInfo to test TLS paths).
        self.ssl: Any = None
        self.next_protocol = ""
        self.requested_server_name = ""

    @property
    def remote_address(self) -> str:
        return self.stream_info.downstream_remote_address

    @property
    def local_address(self) -> str:
        return self.stream_info.downstream_local_address

    def write(self, data: bytes, end_stream: bool = False) -> None:
        self.transport.write(data)

    def close(self, close_type: Any = None) -> None:
        self.closed = True

    def read_disable(self, disable: bool) -> None:
        self.read_disabled += 1 if disable else -1

    def add_connection_callbacks(self, cb: Any) -> None:
        pass

    def add_watermark_callbacks(self, on_high: Callable[[], None],
                                on_low: Callable[[], None]) -> None:
        pass
