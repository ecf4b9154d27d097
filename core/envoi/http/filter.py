"""The HTTP filter contract, Envoy's ``envoy/http/filter.h`` in Python names.

A stream runs its *decoder filters* first to last on the request (``decode_headers``,
``decode_data``, ``decode_trailers``) and its *encoder filters* last to first on the response
(``encode_*``). Each call returns a status saying whether iteration goes on:

* headers: ``CONTINUE``; ``STOP_ITERATION`` (later filters wait for the headers; this filter still
  sees the body); ``CONTINUE_AND_DONT_END_STREAM``; ``STOP_ALL_ITERATION_AND_BUFFER`` /
  ``..._AND_WATERMARK`` (neither headers nor body go anywhere, the body is buffered -- over the
  buffer limit, ``AND_BUFFER`` fails the stream with 413 on requests / 500 on responses and
  ``AND_WATERMARK`` pauses the sender instead);
* data: ``CONTINUE``; ``STOP_ITERATION_AND_BUFFER`` (keep the data, this filter sees more);
  ``STOP_ITERATION_AND_WATERMARK``; ``STOP_ITERATION_NO_BUFFER`` (drop it);
* trailers: ``CONTINUE`` or ``STOP_ITERATION``.

A data method that changes the chunk it was given (Envoy's filters edit the buffer in place;
``bytes`` cannot be edited) returns ``(status, new_data)``: ``new_data`` goes on to the next
filter, or is what the status buffers, instead of the original chunk.

A stopped filter resumes iteration with ``callbacks.continue_decoding()`` /
``continue_encoding()`` (from a timer, a task, anything on the loop) or ends the stream with
``callbacks.send_local_reply(...)``.

Any of the six methods may be ``async def``. The stream notices that once, when it builds the
chain, and runs only those methods as tasks: while one runs, the stream holds iteration (body data
is buffered), and the status it finally returns applies as if it had been returned at once. A sync
filter pays nothing for this. Nothing a filter does may block the loop.

A factory (:class:`envoi.extensions.HttpFilterFactory`) returns a :data:`HttpFilterFactoryCb`,
run once per stream with an :class:`HttpFilterChainBuilder` to add fresh filter objects.

The callbacks are everything a filter may touch of its stream, the terminal filter (the router)
included: the route, the stream info, timers (``start_deadline`` and the ``loop``), the accepted
upgrade, local replies, resets, flow control, and the encoder chain (``encode_*``; a response read
whole goes out through ``encode_response`` in one write). A filter never needs, and never gets,
the connection manager or the stream class behind them; the same callbacks serve HTTP/1.1 and
HTTP/2 streams.
"""

from __future__ import annotations

import enum
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from envoi.http.headers import HeaderMap
from envoi.network.filter import Connection
from envoi.stream_info import StreamInfo

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")


class FilterHeadersStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1
    CONTINUE_AND_DONT_END_STREAM = 2
    STOP_ALL_ITERATION_AND_BUFFER = 3
    STOP_ALL_ITERATION_AND_WATERMARK = 4


class FilterDataStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION_AND_BUFFER = 1
    STOP_ITERATION_AND_WATERMARK = 2
    STOP_ITERATION_NO_BUFFER = 3


class FilterTrailersStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1


class StateKey(Generic[T]):
    """A typed key for :class:`FilterState` (like pytest's ``StashKey``): each key is its own
    identity, so two plugins can never collide on a name."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StateKey({self.name!r})"


class FilterState:
    """Per-stream state shared between filters, addressed by :class:`StateKey`."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[StateKey[Any], Any] = {}

    def __setitem__(self, key: StateKey[T], value: T) -> None:
        self._d[key] = value

    def __getitem__(self, key: StateKey[T]) -> T:
        return self._d[key]  # type: ignore[no-any-return]

    def get(self, key: StateKey[T], default: T | None = None) -> T | None:
        return self._d.get(key, default)

    def __contains__(self, key: StateKey[Any]) -> bool:
        return key in self._d

    def __delitem__(self, key: StateKey[Any]) -> None:
        del self._d[key]

    def setdefault(self, key: StateKey[T], default: T) -> T:
        return self._d.setdefault(key, default)  # type: ignore[no-any-return]


class HttpStreamInfo(StreamInfo):
    """Envoy's StreamInfo for one HTTP request: the L4 fields plus what HTTP adds."""

    __slots__ = ("protocol", "response_code", "response_code_details", "route_name",
                 "upstream_service_time_ms", "virtual_host_name")

    def __init__(self, remote: str, local: str, start_monotonic: float | None = None) -> None:
        # StreamInfo's fields set here, not through super().__init__: one is made per request.
        self.start_time = time.time()
        self.start_monotonic = time.monotonic() if start_monotonic is None else start_monotonic
        self.end_time: float | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.downstream_remote_address = remote
        self.downstream_local_address = local
        self.upstream_host: str | None = None
        self.upstream_cluster: str | None = None
        self.upstream_local_address: str | None = None
        self.response_flags: list[str] = []
        self.extra: dict[str, Any] = {}
        self.requested_server_name = ""
        self.downstream_ssl: Any = None
        self.protocol = "HTTP/1.1"
        self.response_code = 0
        self.response_code_details = ""
        self.route_name = ""
        self.virtual_host_name = ""
        self.upstream_service_time_ms: int | None = None


class RouteInfo(Protocol):
    """What a filter can learn about the route chosen for its stream."""

    @property
    def name(self) -> str: ...
    @property
    def cluster_name(self) -> str | None: ...
    @property
    def virtual_host_name(self) -> str: ...
    def per_filter_config(self, name: str) -> object | None:
        """The most specific ``typed_per_filter_config`` for the filter configured as ``name``
        (route, else virtual host, else route config), as its factory's
        ``create_route_config`` made it; None when none is set."""


#: Changes a local reply's headers before it is encoded (Envoy's ``modify_headers``).
ModifyHeaders = Callable[[HeaderMap], None]


class _Callbacks(Protocol):
    @property
    def connection(self) -> Connection: ...
    @property
    def stream_id(self) -> int: ...
    @property
    def stream_info(self) -> HttpStreamInfo: ...
    @property
    def filter_state(self) -> FilterState: ...
    @property
    def request_headers(self) -> HeaderMap | None: ...
    def route(self) -> RouteInfo | None:
        """The stream's route (resolved once, again after ``clear_route_cache``)."""
    def clear_route_cache(self) -> None: ...
    @property
    def cluster_name(self) -> str | None:
        """The upstream cluster the terminal filter chose (``stream_info.upstream_cluster``)."""
    @property
    def upgrade(self) -> bytes:
        """The upgrade the connection manager accepted for this stream (``b"websocket"``...):
        once the response is a ``101``, body data in both directions is the tunnel's bytes.
        ``b""`` for an ordinary request."""
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the stream runs on (Envoy's dispatcher): timers, tasks."""
    def start_deadline(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, ``delay`` seconds from now, unless ``cancel_deadline``
        comes first or the stream ends. One timer per connection serves the deadlines of all
        its streams, so a deadline per request costs a dict entry, not a timer; starting a
        pending callback again moves its deadline."""
    def cancel_deadline(self, callback: Callable[[], None]) -> None: ...
    def send_local_reply(self, status: int, body: bytes | str = b"",
                         headers: dict[str, str] | None = None, details: str = "",
                         modify_headers: ModifyHeaders | None = None) -> None:
        """Answer the stream from here (decoding stops; the encoder filters see the reply).
        ``details`` is Envoy's response code details; ``modify_headers`` runs on the reply's
        headers before they are encoded."""
    def reset_stream(self) -> None: ...
    @property
    def buffer_limit(self) -> int: ...


class StreamDecoderFilterCallbacks(_Callbacks, Protocol):
    def continue_decoding(self) -> None: ...
    def add_decoded_data(self, data: bytes) -> None: ...
    def decoding_buffer(self) -> bytes: ...
    def inject_decoded_data(self, data: bytes, end_stream: bool) -> None: ...
    # A decoder filter (the router) that produces the response starts the encoder chain:
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> None: ...
    def encode_data(self, data: bytes, end_stream: bool) -> None: ...
    def encode_trailers(self, trailers: HeaderMap) -> None: ...
    def encode_response(self, headers: HeaderMap, data: bytes, end_stream: bool) -> None:
        """``encode_headers(headers, False)`` then ``encode_data(data, end_stream)`` in one call:
        a response whose head and body bytes are at hand (read whole from the upstream) leaves
        in one write, the bytes as given (no copy) when no encoder filter holds them."""
    def on_decoder_filter_above_write_buffer_high_watermark(self) -> None: ...
    def on_decoder_filter_below_write_buffer_low_watermark(self) -> None: ...
    def add_downstream_watermark_callbacks(self, cbs: DownstreamWatermarkCallbacks) -> None: ...


class StreamEncoderFilterCallbacks(_Callbacks, Protocol):
    def continue_encoding(self) -> None: ...
    def add_encoded_data(self, data: bytes) -> None: ...
    def encoding_buffer(self) -> bytes: ...
    def inject_encoded_data(self, data: bytes, end_stream: bool) -> None: ...


class DownstreamWatermarkCallbacks(Protocol):
    """For a filter that streams a response: pause its source while the client is slow."""

    def on_above_write_buffer_high_watermark(self) -> None: ...
    def on_below_write_buffer_low_watermark(self) -> None: ...


class StreamDecoderFilter:
    """Base class for request-path filters; every method passes through."""

    decoder_callbacks: StreamDecoderFilterCallbacks

    def set_decoder_filter_callbacks(self, callbacks: StreamDecoderFilterCallbacks) -> None:
        self.decoder_callbacks = callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        return FilterDataStatus.CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        return FilterTrailersStatus.CONTINUE

    def on_stream_complete(self) -> None:
        """The stream is done (response sent, or reset); access logs have not run yet."""

    def on_destroy(self) -> None:
        """Release everything: the stream is gone (completed or reset)."""


class StreamEncoderFilter:
    """Base class for response-path filters; every method passes through."""

    encoder_callbacks: StreamEncoderFilterCallbacks

    def set_encoder_filter_callbacks(self, callbacks: StreamEncoderFilterCallbacks) -> None:
        self.encoder_callbacks = callbacks

    def encode_1xx_headers(self, headers: HeaderMap) -> Any:
        return FilterHeadersStatus.CONTINUE

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        return FilterHeadersStatus.CONTINUE

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        return FilterDataStatus.CONTINUE

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        return FilterTrailersStatus.CONTINUE

    def on_stream_complete(self) -> None:
        pass

    def on_destroy(self) -> None:
        pass


class StreamFilter(StreamDecoderFilter, StreamEncoderFilter):
    """A filter on both paths (Envoy's ``Http::StreamFilter``)."""


class HttpFilterChainBuilder(Protocol):
    """What an HTTP filter factory callback gets: the new stream's filter manager."""

    def add_decoder_filter(self, f: StreamDecoderFilter) -> None: ...
    def add_encoder_filter(self, f: StreamEncoderFilter) -> None: ...
    def add_filter(self, f: StreamFilter) -> None: ...


HttpFilterFactoryCb = Callable[[HttpFilterChainBuilder], None]

DECODE_METHODS = ("decode_headers", "decode_data", "decode_trailers")
ENCODE_METHODS = ("encode_headers", "encode_data", "encode_trailers")

_async_cache: dict[tuple[type, str], bool] = {}


def is_async_method(filter_obj: object, method: str) -> bool:
    """Whether ``filter_obj.method`` is ``async def``; cached per class, so a chain decides it
    once per filter type, never per call."""
    key = (type(filter_obj), method)
    found = _async_cache.get(key)
    if found is None:
        found = inspect.iscoroutinefunction(getattr(filter_obj, method, None))
        _async_cache[key] = found
    return found
