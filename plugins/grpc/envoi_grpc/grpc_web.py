"""``envoy.filters.http.grpc_web``: gRPC-Web clients (HTTP/1.1 or HTTP/2) to a native gRPC
upstream, as Envoy 1.39's filter does it.

Request (``content-type`` ``application/grpc-web``, ``-web+proto``, ``-web-text`` or
``-web-text+proto``, with a path): ``content-length`` is removed, ``content-type`` becomes
``application/grpc``, ``te: trailers`` is set, ``grpc-accept-encoding: identity,deflate,gzip`` is
added when absent; a ``-text`` body is base64-decoded as it streams (bad base64 is a local
``400``, details ``grpc_base_64_decode_failed`` / ``..._bad_size``). ``accept:
application/grpc-web-text[+proto]`` asks for a text response.

Response: ``content-type`` becomes ``application/grpc-web+proto`` (``-web-text+proto`` for a
text response, whose body is then base64, message by message); the trailers become the body's
last frame (flag ``0x80``, ``name:value\\r\\n`` lines) and the response ends there. A response that
is neither gRPC nor proto-encoded gRPC-Web (a ``404`` direct response, an HTML error page)
becomes a gRPC error: ``grpc-status`` mapped from the HTTP status, its body (16 KiB at most when
it came in pieces) as ``grpc-message``, and no body.

Stats: ``cluster.<c>.grpc-web.<service>.<method>.{success,failure,total,<status>}`` for every
call with a ``/<service>/<method>`` path and a route to a cluster (names from client paths are
bounded, :data:`envoi_grpc.stats.MAX_DYNAMIC_METHODS`). A later ``grpc_stats`` filter sees the
rewritten request as gRPC and counts it again under ``grpc.``; an earlier one does not count it
(it is not ``application/grpc`` yet), as in Envoy.
"""

from __future__ import annotations

from typing import Any

from envoi.extensions import FactoryContext, HttpFilterFactory
from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    StreamFilter,
)
from envoi.http.grpc import (
    CONTENT_TYPE,
    GRPC_WEB_CONTENT_TYPES,
    http_to_grpc_status,
    is_grpc_response,
    percent_encode_message,
    service_and_method,
)
from envoi.http.headers import HeaderMap
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2  # noqa: F401 (registers it)

from envoi_grpc.stats import GRPC_WEB, GrpcStatsRegistry, MethodStats, registry, stream_cluster
from envoi_grpc.web_codec import Base64Error, TextDecoder, TextEncoder, encode_text, trailer_frame

NAME = "envoy.filters.http.grpc_web"
TYPE_URL = "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"

#: How much of a non-gRPC response body becomes ``grpc-message`` when it came in pieces.
MAX_BUFFERED_PLAINTEXT_LENGTH = 16384
#: What Envoy adds when the client names no ``grpc-accept-encoding``.
DEFAULT_ACCEPT_ENCODING = b"identity,deflate,gzip"

_TEXT_TYPES = (b"application/grpc-web-text", b"application/grpc-web-text+proto")
_WEB_PROTO = b"application/grpc-web+proto"
_WEB_TEXT_PROTO = b"application/grpc-web-text+proto"
_CT = b"content-type"
_CL = b"content-length"
_GRPC_STATUS = b"grpc-status"
BAD_BASE64_BODY = "Bad gRPC-web request, invalid base64 data."
DETAILS_BAD_SIZE = "grpc_base_64_decode_failed_bad_size"
DETAILS_BAD_DATA = "grpc_base_64_decode_failed"


def _is_proto_grpc_web_response(status: int, content_type: bytes | None) -> bool:
    """200 with ``application/grpc-web`` or ``-web+proto`` (parameters ignored, any case)."""
    if status != 200 or content_type is None:
        return False
    media = content_type.split(b";", 1)[0].rstrip().lower()
    return media in (b"application/grpc-web", _WEB_PROTO)


class GrpcWebFilter(StreamFilter):
    __slots__ = ("is_web", "registry", "response_headers", "stats", "text_decoder",
                 "text_encoder", "transform", "transform_buf", "transform_buffered")

    def __init__(self, stats_registry: GrpcStatsRegistry) -> None:
        self.registry = stats_registry
        self.is_web = False
        self.stats: MethodStats | None = None
        self.text_decoder: TextDecoder | None = None
        self.text_encoder: TextEncoder | None = None
        self.transform = False  # the response is not gRPC: it becomes a gRPC error
        self.transform_buf = bytearray()
        self.transform_buffered = False
        self.response_headers: HeaderMap | None = None

    # -- request ---------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        content_type = headers.get_bytes(_CT)
        if not headers.path or content_type not in GRPC_WEB_CONTENT_TYPES:
            return FilterHeadersStatus.CONTINUE
        self.is_web = True
        headers.remove_bytes(_CL)
        cluster = stream_cluster(self.decoder_callbacks)
        if cluster is not None:
            names = service_and_method(headers.path)
            if names is not None:
                self.stats = self.registry.cluster(cluster).method(GRPC_WEB, *names)
        if content_type in _TEXT_TYPES:
            self.text_decoder = TextDecoder()
        headers.set_bytes(_CT, CONTENT_TYPE)
        if headers.get_bytes(b"accept") in _TEXT_TYPES:
            self.text_encoder = TextEncoder()
        headers.set_bytes(b"te", b"trailers")
        if headers.get_bytes(b"grpc-accept-encoding") is None:
            headers.add_bytes(b"grpc-accept-encoding", DEFAULT_ACCEPT_ENCODING)
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        decoder = self.text_decoder
        if decoder is None:
            return FilterDataStatus.CONTINUE
        if not end_stream and decoder.pending + len(data) < 4:
            # Not one whole group yet: held here until more comes (Envoy does the same).
            decoder.feed(data, False)
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        try:
            decoded = decoder.feed(data, end_stream)
        except Base64Error as exc:
            self.decoder_callbacks.send_local_reply(
                400, BAD_BASE64_BODY,
                details=DETAILS_BAD_SIZE if exc.bad_size else DETAILS_BAD_DATA)
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        return FilterDataStatus.CONTINUE, decoded

    # -- response --------------------------------------------------------------------------

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        if not self.is_web:
            return FilterHeadersStatus.CONTINUE
        grpc_status = headers.get_bytes(_GRPC_STATUS)
        if self.stats is not None and grpc_status is not None:
            self.stats.charge_status(grpc_status)
        content_type = headers.get_bytes(_CT)
        self.transform = (
            not is_grpc_response(headers.status, content_type, grpc_status, end_stream)
            and not _is_proto_grpc_web_response(headers.status, content_type))
        headers.set_bytes(_CT, _WEB_TEXT_PROTO if self.text_encoder is not None else _WEB_PROTO)
        if end_stream:
            return FilterHeadersStatus.CONTINUE
        # The body changes length (the trailer frame, base64): no content-length (HTTP/1.1
        # clients then get it chunked).
        headers.remove_bytes(_CL)
        if not self.transform:
            return FilterHeadersStatus.CONTINUE
        self.response_headers = headers
        return FilterHeadersStatus.STOP_ITERATION

    def encode_data(self, data: bytes, end_stream: bool) -> Any:
        if not self.is_web:
            return FilterDataStatus.CONTINUE
        if self.transform:
            if not end_stream:
                buf = self.transform_buf
                self.transform_buffered = True
                room = MAX_BUFFERED_PLAINTEXT_LENGTH - len(buf)
                if room > 0:
                    buf += data[:room]
                return FilterDataStatus.STOP_ITERATION_NO_BUFFER
            self._become_grpc_error(data)
            return FilterDataStatus.CONTINUE, b""
        encoder = self.text_encoder
        if encoder is None:
            return FilterDataStatus.CONTINUE
        out = encoder.feed(data)
        if end_stream:
            out += encoder.flush()
        if not out and not end_stream:
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        return FilterDataStatus.CONTINUE, out

    def encode_trailers(self, trailers: HeaderMap) -> Any:
        if not self.is_web:
            return FilterTrailersStatus.CONTINUE
        grpc_status = trailers.get_bytes(_GRPC_STATUS)
        if self.stats is not None and grpc_status is not None:
            self.stats.charge_status(grpc_status)
        if self.transform:
            self._become_grpc_error(None)
            return FilterTrailersStatus.CONTINUE
        frame = trailer_frame(trailers.headers)
        encoder = self.text_encoder
        if encoder is not None:
            frame = encoder.flush() + encode_text(frame)
        trailers.headers.clear()  # they travel in the body now
        self.encoder_callbacks.add_encoded_data(frame)
        return FilterTrailersStatus.CONTINUE

    def _become_grpc_error(self, last: bytes | None) -> None:
        """The held headers of a non-gRPC response become a gRPC error's (Envoy's
        ``setTransformedNonProtoEncodedResponseHeaders``)."""
        headers = self.response_headers
        self.transform = False
        if headers is None:
            return
        if self.transform_buffered:
            body = bytes(self.transform_buf)
            if last:
                body = (body + last)[:MAX_BUFFERED_PLAINTEXT_LENGTH]
        else:
            body = last or b""
        headers.set_bytes(b"grpc-message", percent_encode_message(body))
        headers.set_bytes(_GRPC_STATUS, b"%d" % http_to_grpc_status(headers.status))
        headers.set_bytes(_CL, b"0")


class GrpcWebFactory(HttpFilterFactory):
    name = NAME
    type_urls = (TYPE_URL,)

    def create_filter_factory(self, config: Any, context: FactoryContext) -> HttpFilterFactoryCb:
        stats_registry = registry(context.stats)

        def add(builder: HttpFilterChainBuilder) -> None:
            builder.add_filter(GrpcWebFilter(stats_registry))

        return add
