"""``envoy.filters.http.grpc_http1_bridge``: unary gRPC calls from HTTP/1.1 clients that cannot
read trailers, as Envoy 1.39's filter does it.

For an HTTP/1.x request with a gRPC content type (or, with ``upgrade_protobuf_to_grpc``, an
``application/x-protobuf`` one, which is framed into one gRPC message and sent as
``application/grpc``): the response is held whole; when its trailers come, a ``grpc-status``
other than ``0`` (or not a number) turns the HTTP status into ``503``, ``grpc-status`` and
``grpc-message`` are copied into the response headers, and ``content-length`` is set to the body
held, so the client sees a complete, plain HTTP/1.1 response (the trailers themselves go nowhere:
the HTTP/1.1 codec drops them). With ``upgrade_protobuf_to_grpc`` the response body loses its
5-byte gRPC prefix. ``ignore_query_parameters`` strips the query from the path of bridged
requests (gRPC servers answer "unknown method" to ``/pkg.Svc/M?x=1``).

The request body (protobuf upgrade) and the response are held up to the stream's buffer limit:
over it, a request is answered ``413`` and a response ``500``, as buffering filters are.
"""

from __future__ import annotations

from typing import Any

from envoi.config import implements
from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamFilter,
)
from envoi.http.grpc import CONTENT_TYPE, is_grpc_request
from envoi.http.headers import HeaderMap
from envoy.extensions.filters.http.grpc_http1_bridge.v3 import config_pb2  # noqa: F401

from envoi_grpc.framing import PREFIX_SIZE, prefix

NAME = "envoy.filters.http.grpc_http1_bridge"
TYPE_URL = "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config"
implements(TYPE_URL, "upgrade_protobuf_to_grpc", "ignore_query_parameters")

_CT = b"content-type"
_CL = b"content-length"
_PROTOBUF = b"application/x-protobuf"


class Http1BridgeFilter(StreamFilter):
    __slots__ = ("bridging", "framing", "ignore_query", "request_body", "response_body",
                 "response_headers", "strip", "upgrade")

    def __init__(self, upgrade: bool, ignore_query: bool) -> None:
        self.upgrade = upgrade
        self.ignore_query = ignore_query
        self.bridging = False
        self.framing = False  # the request was protobuf, framed here into one gRPC message
        self.strip = False  # the response's gRPC prefix is still to be removed
        self.request_body = bytearray()
        self.response_body = bytearray()
        self.response_headers: HeaderMap | None = None

    # -- request ---------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        cb = self.decoder_callbacks
        if self.upgrade and headers.path and headers.get_bytes(_CT) == _PROTOBUF:
            self.framing = self.strip = True
            headers.set_bytes(_CT, CONTENT_TYPE)
            headers.remove_bytes(_CL)  # the message length is in the gRPC prefix
            cb.clear_route_cache()
        if is_grpc_request(headers.get_bytes(_CT), headers.path) \
                and not cb.stream_info.protocol.startswith("HTTP/2"):
            self.bridging = True
            if self.ignore_query:
                q = headers.path.find(b"?")
                if q >= 0:
                    headers.path = headers.path[:q]
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        if not (self.bridging and self.framing):
            return FilterDataStatus.CONTINUE
        body = self.request_body
        body += data
        if len(body) > self.decoder_callbacks.buffer_limit:
            self.decoder_callbacks.send_local_reply(413, b"Payload Too Large",
                                                    details="request_payload_too_large")
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        if not end_stream:
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        whole = prefix(len(body)) + bytes(body)
        self.request_body = bytearray()
        return FilterDataStatus.CONTINUE, whole

    # -- response --------------------------------------------------------------------------

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if not self.bridging or end_stream:
            return FilterHeadersStatus.CONTINUE
        self.response_headers = headers
        return FilterHeadersStatus.STOP_ITERATION

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        if not self.bridging:
            return FilterDataStatus.CONTINUE
        if self.strip and data:
            # Envoy drains the prefix from the first chunk; a chunk shorter than the prefix
            # is handled by taking the rest from the next one.
            held = bytes(self.response_body) + data
            if len(held) < PREFIX_SIZE and not end_stream:
                self.response_body = bytearray(held)
                return FilterDataStatus.STOP_ITERATION_NO_BUFFER
            data = held[PREFIX_SIZE:]
            self.response_body = bytearray()
            self.strip = False
        if end_stream:
            whole = bytes(self.response_body) + data
            self.response_body = bytearray()
            return FilterDataStatus.CONTINUE, whole
        body = self.response_body
        body += data
        if len(body) > self.encoder_callbacks.buffer_limit:
            self.response_headers = None
            self.response_body = bytearray()
            self.bridging = False  # the reply below passes this filter as it is
            self.encoder_callbacks.send_local_reply(500, b"Internal Server Error",
                                                    details="response_payload_too_large")
        return FilterDataStatus.STOP_ITERATION_NO_BUFFER

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        headers = self.response_headers
        if not self.bridging or headers is None:
            return FilterTrailersStatus.CONTINUE
        grpc_status = trailers.get_bytes(b"grpc-status")
        if grpc_status is not None:
            if not grpc_status.isdigit() or int(grpc_status) != 0:
                headers.status = 503
            headers.set_bytes(b"grpc-status", grpc_status)
        grpc_message = trailers.get_bytes(b"grpc-message")
        if grpc_message is not None:
            headers.set_bytes(b"grpc-message", grpc_message)
        body = bytes(self.response_body)
        self.response_body = bytearray()
        headers.set_bytes(_CL, b"%d" % len(body))
        if body:
            self.encoder_callbacks.add_encoded_data(body)
        return FilterTrailersStatus.CONTINUE


class Http1BridgeFactory(HttpFilterFactory):
    name = NAME
    type_urls = (TYPE_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        upgrade = bool(config is not None and config.upgrade_protobuf_to_grpc)
        ignore_query = bool(config is not None and config.ignore_query_parameters)

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_filter(Http1BridgeFilter(upgrade, ignore_query))

        return add
