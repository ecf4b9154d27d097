"""ActiveStream: one request/response exchange, whatever protocol carries it, and its HTTP filter
chain.

The stream is the callbacks object of every filter on it (Envoy keeps one per filter; here the
filter paths track the stop positions, so one object serves all and a stream whose chain is the
router alone allocates nothing more). It also implements the access-log ``LogContext``.

Its life is one small state, ``state``: three facts about the exchange plus two flags, as bits.

======================================  ==============  ============================
state                                   request         response
======================================  ==============  ============================
``OPEN``                                arriving        not started
``REMOTE_DONE``                         complete        not started  (HTTP/2: half-closed remote)
``STARTED``                             arriving        head sent
``REMOTE_DONE | STARTED``               complete        head sent
``STARTED | LOCAL_DONE``                arriving        complete (an early answer)
``REMOTE_DONE | STARTED | LOCAL_DONE``  complete        complete: the stream finishes
======================================  ==============  ============================

``LOCAL_REPLY``: a local reply owns the response; the rest of the request reaches no filter.
``CLOSED``: finished (completed or reset): its filters were destroyed and it was logged; nothing
happens to it any more. Transitions only add bits: the request ends once (``REMOTE_DONE``), the
response starts once and ends once, a stream closes once. Flow control adds ``READ_PAUSED`` (this
stream stopped the downstream read) and ``SOURCE_PAUSED`` (its response source was told to wait).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from envoi.http.filter import (
    DownstreamWatermarkCallbacks,
    FilterState,
    HttpStreamInfo,
    ModifyHeaders,
    StreamDecoderFilter,
    StreamEncoderFilter,
    StreamFilter,
)
from envoi.http.grpc import is_grpc_request
from envoi.http.grpc import local_reply_headers as grpc_local_reply_headers
from envoi.http.headers import HeaderMap

from envoi_http.hcm import duration, upgrade
from envoi_http.hcm.filter_path import FilterPath
from envoi_http.hcm.local_reply import grpc_error

if TYPE_CHECKING:
    from envoi.network.filter import Connection
    from envoi.stats import Counter

    from envoi_http.hcm.local_reply import LocalReply
    from envoi_http.hcm.stats import HcmStats
    from envoi_http.hcm.tracing import StreamTrace
    from envoi_http.router.config import Route

OPEN = 0
REMOTE_DONE = 1
STARTED = 2
LOCAL_DONE = 4
LOCAL_REPLY = 8
CLOSED = 16
READ_PAUSED = 32
SOURCE_PAUSED = 64

_NO_TASKS: set[asyncio.Task[Any]] = set()  # shared and always empty (see FilterPath._adapter)
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
            426: "Upgrade Required", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}
# Hop-by-hop response fields no protocol forwards (the proxy sets date and server itself), as
# Envoy's mutateResponseHeaders drops them.
_RESP_DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                        b"upgrade", b"date", b"server"))
_SET_DECODER_CALLBACKS = StreamDecoderFilter.set_decoder_filter_callbacks
_SET_ENCODER_CALLBACKS = StreamEncoderFilter.set_encoder_filter_callbacks
_ON_STREAM_COMPLETE = (StreamDecoderFilter.on_stream_complete,
                       StreamEncoderFilter.on_stream_complete)
_ON_DESTROY = (StreamDecoderFilter.on_destroy, StreamEncoderFilter.on_destroy)
_date_cache: list[Any] = [0, b""]
_monotonic = time.monotonic


def http_date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
    return _date_cache[1]  # type: ignore[no-any-return]


class ServerProtocol(Protocol):
    """The protocol half of a connection manager (see the module docstring)."""

    multiplexed: bool
    rq_total: Counter  # http.<prefix>.downstream_rq_http1_total / _http2_total

    def on_data(self, data: bytes, end_stream: bool) -> None: ...
    def write_head(self, s: ActiveStream, headers: HeaderMap, data: bytes | None,
                   end: bool) -> None: ...
    def write_data(self, s: ActiveStream, data: bytes, end: bool) -> None: ...
    def write_trailers(self, s: ActiveStream, trailers: HeaderMap) -> None: ...
    def write_informational(self, s: ActiveStream, headers: HeaderMap) -> None: ...
    def cork(self) -> bool: ...
    def uncork(self) -> None: ...
    def flush(self) -> None: ...
    def stream_done(self, s: ActiveStream) -> None: ...
    def stream_reset(self, s: ActiveStream, local: bool) -> None: ...
    def read_disable(self, s: ActiveStream, disable: bool) -> None: ...
    def acknowledge(self, s: ActiveStream, nbytes: int) -> None: ...
    def drain(self) -> None: ...
    def on_event(self, e: Any) -> None: ...
    def on_connection_closed(self) -> None: ...


class DurationConfig(Protocol):
    """What a stream reads of its HCM's config (hcm/settings.py's HcmConfig)."""

    durations: bool  # some max_stream_duration is set (hcm/duration.py)
    max_stream_duration: int


class StreamOwner(Protocol):
    """What a stream needs of its connection manager (``connection_manager.ConnectionManager``)."""

    proto: ServerProtocol
    conn: Connection
    loop: asyncio.AbstractEventLoop
    stats: HcmStats
    server_name: bytes
    remote_address: str
    local_address: str
    conn_info: Any
    buffer_limit: int
    local_reply: LocalReply | None
    deadline_timer: asyncio.TimerHandle | None
    deadline_when: float

    @property
    def config(self) -> DurationConfig: ...
    def arm_deadline(self, when: float) -> None: ...
    def route_for(self, headers: HeaderMap) -> Route | None: ...
    def response_done(self, s: ActiveStream) -> None: ...
    def reset_stream(self, s: ActiveStream, *, local: bool) -> None: ...
    def log_filter_error(self, exc: BaseException, filt: object, method: str) -> None: ...


class ActiveStream:
    # Slots, every one set in __init__: a slot read is the cheapest attribute read there is
    # (a class-level default read through an instance is not specialised, ~3x as slow).
    __slots__ = (
        "__weakref__",
        "_dec",
        "_enc",
        "_filter_state",
        "_route",
        "_route_resolved",
        "deadlines",
        "filters",
        "hcm",
        "is_grpc",
        "last_activity",
        "lone",
        "request_headers",
        "response_headers",
        "response_trailers",
        "start",
        "state",
        "stream_id",
        "stream_info",
        "tasks",
        "trace",
        "upgrade",
        "watermark_cbs",
    )

    def __init__(self, hcm: StreamOwner, stream_id: int, headers: HeaderMap,
                 now: float, route: Route | None = None, resolved: bool = False,
                 is_grpc: bool | None = None) -> None:
        self.hcm = hcm
        self.stream_id = stream_id
        self.state = OPEN
        self.request_headers = headers
        # As the request came (before filters rewrite it: grpc_web's requests are not gRPC);
        # ``is_grpc``: the caller already knows (it saw the content-type).
        self.is_grpc = is_grpc_request(headers.get_bytes(b"content-type"), headers.path) \
            if is_grpc is None else is_grpc
        self.response_headers: HeaderMap | None = None
        self.response_trailers: HeaderMap | None = None
        info = self.stream_info = HttpStreamInfo(hcm.remote_address, hcm.local_address, now)
        conn_info = hcm.conn_info
        if conn_info.downstream_ssl is not None or conn_info.requested_server_name:
            info.downstream_ssl = conn_info.downstream_ssl
            info.requested_server_name = conn_info.requested_server_name
        self.start = self.last_activity = now
        self.filters: list[Any] = []
        # The filter paths are made when first needed: a stream whose chain is the router alone
        # (``lone``: it always continues) and no encoder filter has neither.
        self.lone: Any = None
        self._dec: FilterPath | None = None
        self._enc: FilterPath | None = None
        self._filter_state: FilterState | None = None  # made on first use
        self._route = route
        self._route_resolved = resolved
        if route is not None:
            info.route_name = route.name
            info.virtual_host_name = route.vhost.name
        self.upgrade = b""  # the accepted upgrade (hcm/upgrade.py)
        self.trace: StreamTrace | None = None  # its tracing, when the HCM traces (hcm/tracing.py)
        self.watermark_cbs: list[DownstreamWatermarkCallbacks] | None = None
        self.tasks: set[asyncio.Task[Any]] = _NO_TASKS  # a set of its own once a task runs
        # This stream's filters' deadlines (start_deadline): callback -> loop time; the
        # connection manager's one timer serves every stream's (ConnectionManager.arm_deadline).
        self.deadlines: dict[Callable[[], None], float] | None = None

    @property
    def proto(self) -> ServerProtocol:
        return self.hcm.proto

    @property
    def head_request(self) -> bool:
        """A response to HEAD: its body bytes are never sent."""
        return self.request_headers.method == b"HEAD"

    # -- the state, by name (the hot paths test the bits) ---------------------------------------

    @property
    def request_complete(self) -> bool:
        return bool(self.state & REMOTE_DONE)

    @property
    def response_started(self) -> bool:
        return bool(self.state & STARTED)

    @property
    def local_complete(self) -> bool:
        return bool(self.state & LOCAL_REPLY)

    @property
    def destroyed(self) -> bool:
        return bool(self.state & CLOSED)

    @property
    def filter_state(self) -> FilterState:
        fs = self._filter_state
        if fs is None:
            fs = self._filter_state = FilterState()
        return fs

    @property
    def dec(self) -> FilterPath:
        d = self._dec
        if d is None:
            d = self._dec = FilterPath(self, True)
            lone = self.lone
            if lone is not None:
                self.lone = None
                d.add(lone)
        return d

    @property
    def enc(self) -> FilterPath:
        e = self._enc
        if e is None:
            e = self._enc = FilterPath(self, False)
        return e

    # -- HttpFilterChainBuilder -------------------------------------------------------------

    def add_decoder_filter(self, f: StreamDecoderFilter) -> None:
        if type(f).set_decoder_filter_callbacks is _SET_DECODER_CALLBACKS:
            f.decoder_callbacks = self  # what the base class's method does, without the call
        else:
            f.set_decoder_filter_callbacks(self)
        filters = self.filters
        if self._dec is None and self.lone is None and getattr(f, "always_continues", False):
            # Called directly, as the decoder path would call it: its decode methods always
            # return CONTINUE, are not coroutines and never add data. (Encoder-only filters
            # before it do not need a decoder path either.)
            self.lone = f
        else:
            self.dec.add(f)
        filters.append(f)

    def add_encoder_filter(self, f: StreamEncoderFilter) -> None:
        if type(f).set_encoder_filter_callbacks is _SET_ENCODER_CALLBACKS:
            f.encoder_callbacks = self  # what the base class's method does, without the call
        else:
            f.set_encoder_filter_callbacks(self)
        enc = self._enc  # (the enc property, inline)
        if enc is None:
            enc = self._enc = FilterPath(self, False)
        enc.add(f)  # (encoders run last-added first: the path keeps them in that order)
        filters = self.filters
        if not filters or (filters[-1] is not f and f not in filters):  # (add_filter: it is)
            filters.append(f)

    def add_filter(self, f: StreamFilter) -> None:
        self.add_decoder_filter(f)
        self.add_encoder_filter(f)

    # -- the request, from the connection manager (which starts it: decode_headers) -----------

    def decode_data(self, data: bytes, end_stream: bool) -> None:
        self.stream_info.bytes_received += len(data)
        state = self.state
        if end_stream:
            self.state = state | REMOTE_DONE
        if not state & (LOCAL_REPLY | CLOSED):
            lone = self.lone
            if lone is not None:
                try:
                    lone.decode_data(data, end_stream)
                except Exception as exc:  # free in 3.11 until something raises
                    self.filter_raised(exc, lone.decode_data)
            else:
                self.dec.run_data(0, data, end_stream)

    def decode_trailers(self, trailers: HeaderMap) -> None:
        state = self.state
        self.state = state | REMOTE_DONE
        if not state & (LOCAL_REPLY | CLOSED):
            lone = self.lone
            if lone is not None:
                try:
                    lone.decode_trailers(trailers)
                except Exception as exc:
                    self.filter_raised(exc, lone.decode_trailers)
            else:
                self.dec.run_trailers(0, trailers)

    # -- callbacks: common ----------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        return self.hcm.conn

    @property
    def buffer_limit(self) -> int:
        return self.hcm.buffer_limit

    def route(self) -> Route | None:
        if not self._route_resolved:
            self.set_route(self.hcm.route_for(self.request_headers))
        return self._route

    def set_route(self, route: Route | None) -> None:
        self._route_resolved = True
        self._route = route
        if route is not None:
            info = self.stream_info
            info.route_name = route.name
            info.virtual_host_name = route.vhost.name
        cfg = self.hcm.config
        if cfg.durations:  # a new route: a new max_stream_duration (Envoy's setRoute)
            duration.refresh(self, route, cfg.max_stream_duration)

    def max_duration_reached(self) -> None:
        """The stream's max_stream_duration deadline (hcm/duration.py)."""
        duration.reached(self)

    def clear_route_cache(self) -> None:
        self._route_resolved = False
        self._route = None

    @property
    def cluster_name(self) -> str | None:
        return self.stream_info.upstream_cluster

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.hcm.loop

    def start_deadline(self, delay: float, callback: Callable[[], None]) -> None:
        hcm = self.hcm
        when = hcm.loop.time() + delay
        table = self.deadlines
        if table is None:
            self.deadlines = {callback: when}
        else:
            table[callback] = when
        if hcm.deadline_timer is None or hcm.deadline_when > when:
            hcm.arm_deadline(when)

    def cancel_deadline(self, callback: Callable[[], None]) -> None:
        table = self.deadlines
        if table:
            table.pop(callback, None)

    def send_local_reply(self, status: int, body: bytes | str = b"",
                         headers: dict[str, str] | None = None, details: str = "",
                         modify_headers: ModifyHeaders | None = None, flag: str = "",
                         grpc_status: int | None = None) -> None:
        """``flag``: a response flag the reply sets once made (Envoy's DPE is not yet set when
        ``local_reply_config`` looks at a codec error's reply); ``grpc_status``: the status of
        the reply to a gRPC request (default: mapped from ``status``)."""
        state = self.state
        if state & CLOSED:
            return
        if isinstance(body, str):
            body = body.encode()
        self.stream_info.response_code_details = details
        if state & STARTED:
            # Too late for a reply: the client already has a status line.
            self.reset_stream()
            return
        self.state = state | LOCAL_REPLY
        rewrite = self.hcm.local_reply
        if self.is_grpc and rewrite is None:
            # A gRPC client reads a gRPC error: trailers-only, HTTP 200, grpc-status mapped
            # from the HTTP code and the body as grpc-message (Envoy's sendLocalReply).
            hm = HeaderMap(status=200)
            for name, value in grpc_local_reply_headers(status, body, grpc_status):
                hm.add_bytes(name, value)
            body = b""
        else:
            hm = HeaderMap(status=status)
            if body and rewrite is None:
                hm.add_bytes(b"content-type", b"text/plain")
                hm.add_bytes(b"content-length", b"%d" % len(body))
        if headers:
            for k, v in headers.items():
                hm.set(k, v)
        if modify_headers is not None:
            modify_headers(hm)
        if rewrite is not None:  # local_reply_config (hcm/local_reply.py)
            body, _ = rewrite.apply(self.stream_info, self.request_headers, hm, body)
            if self.is_grpc:  # the rewritten reply becomes the gRPC error, as in Envoy
                body = grpc_error(hm, body, grpc_status)
        if flag:
            self.stream_info.response_flags.append(flag)
        enc = self._enc
        if enc is not None and (enc.stop >= 0 or enc.headers is not None):
            # Raised from inside the encoder chain: skip it, the reply goes straight out.
            self.write_head(hm, body or None, True)
            return
        if body:
            self.encode_response(hm, body, True)
        else:
            self.encode_headers(hm, True)

    def reset_stream(self) -> None:
        self.hcm.reset_stream(self, local=True)

    def filter_raised(self, exc: BaseException, method: Any) -> None:
        """A filter's ``method`` raised: log it with the filter's name, count it, and answer
        500 (or reset the stream when the response has started); the connection goes on."""
        if self.state & CLOSED:
            return
        self.hcm.log_filter_error(exc, getattr(method, "__self__", None),
                                  getattr(method, "__name__", "?"))
        self.send_local_reply(500, b"", details="filter_raised_exception")

    # -- callbacks: decoder --------------------------------------------------------------------

    def continue_decoding(self) -> None:
        if not self.state & (LOCAL_REPLY | CLOSED) and self._dec is not None:
            self._dec.resume()

    def add_decoded_data(self, data: bytes) -> None:
        self.dec._hold(data, False)

    def decoding_buffer(self) -> bytes:
        return bytes(self.dec.buf or b"")

    def inject_decoded_data(self, data: bytes, end_stream: bool) -> None:
        self.dec.run_data(self.dec.stop + 1 if self.dec.stop >= 0 else 0, data, end_stream)

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        self.response_headers = headers
        enc = self._enc
        if enc is None:  # no encoder filter
            self.write_head(headers, None, end_stream)
        else:
            enc.run_headers(0, headers, end_stream)

    def encode_response(self, headers: HeaderMap, data: bytes, end_stream: bool) -> None:
        self.response_headers = headers
        enc = self._enc
        if enc is None:  # no encoder filter: head and data in one write
            self.write_head(headers, data, end_stream)
            return
        if enc.data_passes and enc.stop < 0 and enc.buf is None:
            # No encoder filter looks at body data: the head goes through them, and the body
            # leaves with it (unless a filter stops the head; then it follows as usual).
            if enc.run_headers(0, headers, False, data, end_stream):
                return
            self.encode_data(data, end_stream)
            return
        proto = self.hcm.proto
        corked = proto.cork()  # whatever the encoder filters pass on leaves in one write
        try:
            enc.run_headers(0, headers, False)
            self.encode_data(data, end_stream)
        finally:
            if corked:
                proto.uncork()

    def encode_1xx_headers(self, headers: HeaderMap) -> None:
        self.proto.write_informational(self, headers)

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        if not self.state & CLOSED:
            enc = self._enc
            if enc is None:
                self.write_data(data, end_stream)
            else:
                enc.run_data(0, data, end_stream)

    def encode_trailers(self, trailers: HeaderMap) -> None:
        if not self.state & CLOSED:
            enc = self._enc
            if enc is None:
                self.write_trailers(trailers)
            else:
                enc.run_trailers(0, trailers)

    def add_downstream_watermark_callbacks(self, cbs: DownstreamWatermarkCallbacks) -> None:
        if self.watermark_cbs is None:
            self.watermark_cbs = [cbs]
        else:
            self.watermark_cbs.append(cbs)
        if self.hcm.conn.above_high_watermark:
            cbs.on_above_write_buffer_high_watermark()

    def on_decoder_filter_above_write_buffer_high_watermark(self) -> None:
        """The upstream cannot take more request body: stop reading the client."""
        if not self.state & READ_PAUSED:
            self.state |= READ_PAUSED
            self.proto.read_disable(self, True)
            self.hcm.stats.downstream_flow_control_paused_reading_total.value += 1

    def on_decoder_filter_below_write_buffer_low_watermark(self) -> None:
        if self.state & READ_PAUSED:
            self.state &= ~READ_PAUSED
            self.proto.read_disable(self, False)
            self.hcm.stats.downstream_flow_control_resumed_reading_total.value += 1

    # -- callbacks: encoder --------------------------------------------------------------------

    def continue_encoding(self) -> None:
        if not self.state & CLOSED and self._enc is not None:
            self._enc.resume()

    def add_encoded_data(self, data: bytes) -> None:
        self.enc._hold(data, False)

    def encoding_buffer(self) -> bytes:
        return bytes(self.enc.buf or b"")

    def inject_encoded_data(self, data: bytes, end_stream: bool) -> None:
        self.enc.run_data(self.enc.stop + 1 if self.enc.stop >= 0 else 0, data, end_stream)

    # -- flow control, from the connection and the filter paths ------------------------------------

    def above_write_buffer_high_watermark(self) -> None:
        """The client is slow (the connection's, or this stream's, send buffer is full)."""
        for cb in self.watermark_cbs or ():
            cb.on_above_write_buffer_high_watermark()

    def below_write_buffer_low_watermark(self) -> None:
        for cb in self.watermark_cbs or ():
            cb.on_below_write_buffer_low_watermark()

    def buffer_over_limit(self, path: FilterPath, watermark: bool) -> None:
        if watermark:
            if path.decode:
                self.on_decoder_filter_above_write_buffer_high_watermark()
            elif not self.state & SOURCE_PAUSED:
                self.state |= SOURCE_PAUSED
                self.above_write_buffer_high_watermark()
            return
        path.buf = None
        if path.decode:
            self.hcm.stats.downstream_rq_too_large.value += 1
            self.send_local_reply(413, b"Payload Too Large", details="request_payload_too_large")
        else:
            self.hcm.stats.rs_too_large.value += 1
            self.response_headers = None
            self.send_local_reply(500, b"Internal Server Error",
                                  details="response_payload_too_large")

    def buffer_drained(self, path: FilterPath) -> None:
        if path.decode:
            self.on_decoder_filter_below_write_buffer_low_watermark()
        elif self.state & SOURCE_PAUSED:
            self.state &= ~SOURCE_PAUSED
            self.below_write_buffer_low_watermark()

    # -- the end of the encoder chain: to the protocol --------------------------------------------

    def write_headers(self, headers: HeaderMap, end: bool) -> None:
        self.write_head(headers, None, end)

    def write_head(self, headers: HeaderMap, data: bytes | None, end: bool) -> None:
        """The end of the encoder chain for a response head, with its first body bytes when
        they are at hand (``data``; one write). State and stream info, and Envoy's
        ``mutateResponseHeaders`` in one pass: a new list without the hop-by-hop fields (the
        upstream's included: the router passes its header list on as it came), then date and
        server. The stream's headers become that list: the access log sees what was sent."""
        self.state |= STARTED
        self.response_headers = headers
        status = headers.status
        info = self.stream_info
        info.response_code = status
        if data is not None and self.request_headers.method != b"HEAD":
            info.bytes_sent += len(data)  # (a HEAD answer's body is never sent)
        drop = upgrade.RESP_DROP_101 if status == 101 else _RESP_DROP
        raw = [kv for kv in headers.headers if kv[0] not in drop]
        trace = self.trace
        if trace is not None and (trace.response_operation or trace.tracing.egress):
            trace.response_head(raw)  # x-envoy-decorator-operation (hcm/tracing.py)
        raw.append((b"date", http_date()))
        raw.append((b"server", self.hcm.server_name))
        headers.headers = raw
        self.last_activity = _monotonic()  # response bytes restart the stream idle timer
        hcm = self.hcm
        hcm.proto.write_head(self, headers, data, end)
        if end:
            hcm.response_done(self)

    def write_data(self, data: bytes, end: bool) -> None:
        self.last_activity = _monotonic()
        if not self.head_request:
            self.stream_info.bytes_sent += len(data)
        self.proto.write_data(self, data, end)
        if end:
            self.hcm.response_done(self)

    def write_trailers(self, trailers: HeaderMap) -> None:
        self.last_activity = _monotonic()
        self.response_trailers = trailers
        self.proto.write_trailers(self, trailers)
        self.hcm.response_done(self)

    def destroy(self) -> None:
        """Finished: the filters are told and let go (the stream and its filters reference each
        other; cutting the links lets refcounting free them at once, not the cyclic GC)."""
        state = self.state
        if state & CLOSED:
            return
        self.state = state | CLOSED
        if self.tasks:
            for t in self.tasks:
                t.cancel()
        filters = self.filters
        for f in filters:
            if type(f).on_stream_complete not in _ON_STREAM_COMPLETE:  # (the base: nothing)
                f.on_stream_complete()
        for f in filters:
            if type(f).on_destroy not in _ON_DESTROY:  # (the base: nothing)
                f.on_destroy()
        filters.clear()
        if self.lone is not None:
            self.lone = None
        if self.watermark_cbs is not None:
            self.watermark_cbs = None
        if self.deadlines is not None:  # (pending ones end with the stream)
            self.deadlines = None
        if self._dec is not None:
            self._dec.unlink()
            self._dec = None
        if self._enc is not None:
            self._enc.unlink()
            self._enc = None

    # -- access log context -------------------------------------------------------------------

    def request_header(self, name: str) -> str | None:
        return self.request_headers.get(name)

    def response_header(self, name: str) -> str | None:
        h = self.response_headers
        return h.get(name) if h is not None else None

    def response_trailer(self, name: str) -> str | None:
        h = self.response_trailers
        return h.get(name) if h is not None else None

    @property
    def protocol(self) -> str | None:
        return self.stream_info.protocol

    @property
    def response_code(self) -> int:
        return self.stream_info.response_code

    @property
    def duration_ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)


def reason(status: int) -> str:
    return _REASONS.get(status, "")
