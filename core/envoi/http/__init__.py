"""The HTTP layer's contract, in the core so protocol plugins share it without importing each
other: :mod:`envoi.http.headers` (HeaderMap) and :mod:`envoi.http.filter` (statuses, filter base
classes, callbacks, filter state)."""

from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterState,
    FilterTrailersStatus,
    HttpFilterChainBuilder,
    HttpFilterFactoryCb,
    HttpStreamInfo,
    ModifyHeaders,
    RouteInfo,
    StateKey,
    StreamDecoderFilter,
    StreamDecoderFilterCallbacks,
    StreamEncoderFilter,
    StreamEncoderFilterCallbacks,
    StreamFilter,
)
from envoi.http.headers import HeaderMap

__all__ = [
    "FilterDataStatus",
    "FilterHeadersStatus",
    "FilterState",
    "FilterTrailersStatus",
    "HeaderMap",
    "HttpFilterChainBuilder",
    "HttpFilterFactoryCb",
    "HttpStreamInfo",
    "ModifyHeaders",
    "RouteInfo",
    "StateKey",
    "StreamDecoderFilter",
    "StreamDecoderFilterCallbacks",
    "StreamEncoderFilter",
    "StreamEncoderFilterCallbacks",
    "StreamFilter",
]
