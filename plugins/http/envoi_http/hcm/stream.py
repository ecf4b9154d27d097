"""ActiveStream: one request/response exchange and its HTTP filter chain.

The stream is the callbacks object of every filter on it (Envoy keeps one per filter; here the
filter manager tracks the stop position itself, so one object serves all and a stream with only
the router allocates nothing extra). It also implements the access-log ``LogContext``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from envoi.http.filter import (
    DownstreamWatermarkCallbacks,
    FilterState,
    HttpStreamInfo,
    StreamDecoderFilter,
    StreamEncoderFilter,
    StreamFilter,
)
from envoi.http.headers import HeaderMap

from envoi_http.hcm.filter_path import FilterPath

if TYPE_CHECKING:
    from envoi.network.filter import Connection

    from envoi_http.hcm.connection_manager import ConnectionManager
    from envoi_http.router.config import Route

_NO_TASKS: set[asyncio.Task[Any]] = set()  # shared and always empty (see FilterPath._adapter)
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
            426: "Upgrade Required", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


class ActiveStream:
    __slots__ = (
        "__weakref__",
        "_dec",
        "_enc",
        "_filter_state",
        "_route",
        "_route_resolved",
        "cluster_name_",
        "destroyed",
        "filters",
        "hcm",
        "head_request",
        "http10",
        "last_activity",
        "local_complete",
        "lone",
        "read_paused",
        "request_complete",
        "request_headers",
        "response_complete",
        "response_headers",
        "response_started",
        "response_trailers",
        "start",
        "stream_id",
        "stream_info",
        "tasks",
        "upstream_paused",
        "watermark_cbs",
    )

    def __init__(self, hcm: ConnectionManager, stream_id: int, headers: HeaderMap) -> None:
        self.hcm = hcm
        self.stream_id = stream_id
        self.request_headers = headers
        self.response_headers: HeaderMap | None = None
        self.response_trailers: HeaderMap | None = None
        conn = hcm.conn
        conn_info = conn.stream_info
        info = self.stream_info = HttpStreamInfo(conn_info.downstream_remote_address,
                                                 conn_info.downstream_local_address)
        if conn_info.downstream_ssl is not None or conn_info.requested_server_name:
            info.downstream_ssl = conn_info.downstream_ssl
            info.requested_server_name = conn_info.requested_server_name
        self.start = info.start_monotonic
        self.last_activity = self.start
        self._filter_state: FilterState | None = None  # made on first use
        self.filters: list[Any] = []
        # The filter paths are made when first needed: a stream whose chain is the router alone
        # (``lone``; it always continues) and no encoder filter has neither.
        self._dec: FilterPath | None = None
        self._enc: FilterPath | None = None
        self.lone: Any = None
        self.local_complete = False
        self.response_started = False
        self.request_complete = False
        self.response_complete = False
        self.destroyed = False
        self.tasks: set[asyncio.Task[Any]] = _NO_TASKS  # a set of its own once a task runs
        self._route: Route | None = None
        self._route_resolved = False
        self.watermark_cbs: list[DownstreamWatermarkCallbacks] = []
        self.read_paused = False
        self.upstream_paused = False
        self.head_request = headers.method == b"HEAD"
        self.http10 = False
        self.cluster_name_: str | None = None

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
            e.sink_headers = self._write_headers
            e.sink_data = self._write_data
            e.sink_trailers = self._write_trailers
        return e

    # -- HttpFilterChainBuilder -------------------------------------------------------------

    def add_decoder_filter(self, f: StreamDecoderFilter) -> None:
        f.set_decoder_filter_callbacks(self)
        if self._dec is None and self.lone is None and not self.filters and \
                getattr(f, "always_continues", False):
            # Called directly, as the decoder path would call it: its decode methods always
            # return CONTINUE, are not coroutines and never add data.
            self.lone = f
        else:
            self.dec.add(f)
        self.filters.append(f)

    def add_encoder_filter(self, f: StreamEncoderFilter) -> None:
        f.set_encoder_filter_callbacks(self)
        # Encoders run last-added first: keep the path in iteration order.
        path = self.enc
        path.add(f)
        path.headers_fns.insert(0, path.headers_fns.pop())
        path.data_fns.insert(0, path.data_fns.pop())
        path.trailers_fns.insert(0, path.trailers_fns.pop())
        if f not in self.filters:
            self.filters.append(f)

    def add_filter(self, f: StreamFilter) -> None:
        self.add_decoder_filter(f)
        self.add_encoder_filter(f)

    # -- codec events -------------------------------------------------------------------------

    def decode_headers(self, end_stream: bool) -> None:
        if end_stream:
            self.request_complete = True
            self.hcm.request_done(self)
        lone = self.lone
        if lone is not None:
            try:
                lone.decode_headers(self.request_headers, end_stream)
            except Exception as exc:
                self.filter_raised(exc, lone.decode_headers)
        else:
            self.dec.run_headers(0, self.request_headers, end_stream)

    def decode_data(self, data: bytes, end_stream: bool) -> None:
        self.stream_info.bytes_received += len(data)
        if end_stream:
            self.request_complete = True
            self.hcm.request_done(self)
        if not self.local_complete:
            lone = self.lone
            if lone is not None:
                try:
                    lone.decode_data(data, end_stream)
                except Exception as exc:
                    self.filter_raised(exc, lone.decode_data)
            else:
                self.dec.run_data(0, data, end_stream)

    def decode_trailers(self, trailers: HeaderMap) -> None:
        self.request_complete = True
        self.hcm.request_done(self)
        if not self.local_complete:
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
            self._route_resolved = True
            table = self.hcm.config.route_table
            self._route = table.route(self.request_headers) if table is not None else None
            if self._route is not None:
                self.stream_info.route_name = self._route.name
                self.stream_info.virtual_host_name = self._route.vhost.name
        return self._route

    def clear_route_cache(self) -> None:
        self._route_resolved = False
        self._route = None

    @property
    def cluster_name(self) -> str | None:
        return self.cluster_name_

    def send_local_reply(self, status: int, body: bytes | str = b"",
                         headers: dict[str, str] | None = None, details: str = "") -> None:
        if self.destroyed:
            return
        if isinstance(body, str):
            body = body.encode()
        self.stream_info.response_code_details = details
        if self.response_started:
            # Too late for a reply: the client already has a status line.
            self.reset_stream()
            return
        self.local_complete = True
        hm = HeaderMap(status=status)
        if body:
            hm.add_bytes(b"content-type", b"text/plain")
            hm.add_bytes(b"content-length", b"%d" % len(body))
        if headers:
            for k, v in headers.items():
                hm.set(k, v)
        enc = self._enc
        if enc is not None and (enc.stop >= 0 or enc.headers is not None):
            # Raised from inside the encoder chain: skip it, the reply goes straight out.
            self._write_headers(hm, not body)
            if body:
                self._write_data(body, True)
            return
        self.encode_headers(hm, not body)
        if body and not self.destroyed:
            self.encode_data(body, True)

    def reset_stream(self) -> None:
        self.hcm.reset_stream(self, local=True)

    def filter_raised(self, exc: BaseException, method: Any) -> None:
        """A filter's ``method`` raised: log it with the filter's name, count it, and answer
        500 (or reset the stream when the response has started); the connection goes on."""
        if self.destroyed:
            return
        self.hcm.log_filter_error(exc, getattr(method, "__self__", None),
                                  getattr(method, "__name__", "?"))
        self.send_local_reply(500, b"", details="filter_raised_exception")

    # -- callbacks: decoder --------------------------------------------------------------------

    def continue_decoding(self) -> None:
        if not self.local_complete and not self.destroyed and self._dec is not None:
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
            self._write_headers(headers, end_stream)
        else:
            enc.run_headers(0, headers, end_stream)

    def encode_1xx_headers(self, headers: HeaderMap) -> None:
        self.hcm.write_informational(self, headers)

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        if not self.destroyed:
            enc = self._enc
            if enc is None:
                self._write_data(data, end_stream)
            else:
                enc.run_data(0, data, end_stream)

    def encode_trailers(self, trailers: HeaderMap) -> None:
        if not self.destroyed:
            enc = self._enc
            if enc is None:
                self._write_trailers(trailers)
            else:
                enc.run_trailers(0, trailers)

    def add_downstream_watermark_callbacks(self, cbs: DownstreamWatermarkCallbacks) -> None:
        self.watermark_cbs.append(cbs)
        if self.hcm.conn.above_high_watermark:
            cbs.on_above_write_buffer_high_watermark()

    def on_decoder_filter_above_write_buffer_high_watermark(self) -> None:
        """The upstream cannot take more request body: stop reading the client."""
        if not self.read_paused:
            self.read_paused = True
            self.hcm.conn.read_disable(True)
            self.hcm.stats.downstream_flow_control_paused_reading_total.value += 1

    def on_decoder_filter_below_write_buffer_low_watermark(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.hcm.conn.read_disable(False)
            self.hcm.stats.downstream_flow_control_resumed_reading_total.value += 1

    # -- callbacks: encoder --------------------------------------------------------------------

    def continue_encoding(self) -> None:
        if not self.destroyed and self._enc is not None:
            self._enc.resume()

    def add_encoded_data(self, data: bytes) -> None:
        self.enc._hold(data, False)

    def encoding_buffer(self) -> bytes:
        return bytes(self.enc.buf or b"")

    def inject_encoded_data(self, data: bytes, end_stream: bool) -> None:
        self.enc.run_data(self.enc.stop + 1 if self.enc.stop >= 0 else 0, data, end_stream)

    # -- buffer limits ----------------------------------------------------------------------------

    def buffer_over_limit(self, path: FilterPath, watermark: bool) -> None:
        if watermark:
            if path.decode:
                self.on_decoder_filter_above_write_buffer_high_watermark()
            elif not self.upstream_paused:
                self.upstream_paused = True
                for cb in self.watermark_cbs:
                    cb.on_above_write_buffer_high_watermark()
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
        elif self.upstream_paused:
            self.upstream_paused = False
            for cb in self.watermark_cbs:
                cb.on_below_write_buffer_low_watermark()

    # -- the end of the encoder chain: to the codec -----------------------------------------------

    def _write_headers(self, headers: HeaderMap, end: bool) -> None:
        self.response_started = True
        self.response_headers = headers
        self.stream_info.response_code = headers.status
        self.hcm.write_headers(self, headers, end)

    def _write_data(self, data: bytes, end: bool) -> None:
        if not self.head_request:  # a HEAD answer's body is never sent
            self.stream_info.bytes_sent += len(data)
        self.hcm.write_data(self, data, end)

    def _write_trailers(self, trailers: HeaderMap) -> None:
        self.response_trailers = trailers
        self.hcm.write_trailers(self, trailers)

    def destroy(self) -> None:
        if self.destroyed:
            return
        self.destroyed = True
        for t in self.tasks:
            t.cancel()
        for f in self.filters:
            f.on_stream_complete()
        for f in self.filters:
            f.on_destroy()
        # Break the stream <-> filter cycles (filters hold the stream as their callbacks), so
        # refcounting frees a finished stream at once instead of the cyclic GC.
        self.filters = []
        self.lone = None
        self.watermark_cbs = []
        if self._dec is not None:
            self._dec.unlink()
        if self._enc is not None:
            self._enc.unlink()

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
