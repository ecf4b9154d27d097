"""Sans-IO HTTP/1.1 codecs for envoi-http: bytes in, events out; events in, bytes out.

Two interchangeable back-ends sit behind ``base.Http1Codec``: ``h11`` (pure Python, the
reference) and ``httptools`` (llhttp, the fast path). ``make_codec("auto", ...)`` picks httptools
when it is importable. Both pass the same test suite (tests/http/test_codec*.py). Nothing here
imports asyncio or does I/O.

Where the back-ends still differ (the wrapper cannot change the parser; each is asserted in
tests/http/test_codec_smuggling.py::test_documented_differences):

- bare LF line endings in a head: llhttp refuses them (400 ``http1.codec_error``), h11 accepts;
- obs-fold (a header line continued with leading whitespace): llhttp refuses, h11 unfolds;
- duplicate identical ``Content-Length`` (or ``3, 3``): llhttp refuses (400), h11 accepts;
  conflicting values are refused by both;
- a blank line before the request line: llhttp skips it (RFC 9112 2.2), h11 refuses it;
- methods: llhttp knows a fixed list (GET, POST, ..., PURGE; no lower-case or custom tokens), h11
  accepts any token;
- an over-long chunk size (> 64 bits): llhttp refuses at once, h11 waits for data that never
  comes (the HCM's timeouts end it);
- error ``details`` for a garbage request line may differ (both give 400).

Made the same by the wrapper: Transfer-Encoding other than exactly ``chunked`` (501), CL with TE
(400), missing Host on HTTP/1.1 (400), HTTP versions other than 1.0/1.1 (400), control characters
in values (400), header count and size limits (431), trailing whitespace in values (stripped),
upgrade detection (Upgrade + ``Connection: upgrade``, or CONNECT; ``h2c`` is served as HTTP/1.1),
an upgrade request with a body (400), HTTP/1.0 connections never kept alive (as h11 does).
"""

from __future__ import annotations

from typing import Any, Literal

from .base import CodecLimits, Http1Codec, Role
from .events import (
    Body,
    ConnectionClosed,
    Event,
    Headers,
    Informational,
    ProtocolError,
    RequestHeaders,
    ResponseHeaders,
    StreamReset,
    Trailers,
    UpgradeRequested,
)

Backend = Literal["h11", "httptools", "auto"]

__all__ = [
    "Backend", "Body", "CodecLimits", "ConnectionClosed", "Event", "Headers", "Http1Codec",
    "Informational", "ProtocolError", "RequestHeaders", "ResponseHeaders", "Role", "StreamReset",
    "Trailers", "UpgradeRequested", "available_backends", "make_codec",
]


def available_backends() -> list[str]:
    names = ["h11"]
    try:
        import httptools  # noqa: F401
    except ImportError:
        return names
    return [*names, "httptools"]


def make_codec(backend: Backend, role: Role, **limits: Any) -> Http1Codec:
    """Build a codec. ``limits`` are ``CodecLimits`` fields (``max_request_headers_kb``,
    ``max_headers_count``, ``enable_trailers``)."""
    config = CodecLimits(**limits)
    if backend == "auto":
        backend = "httptools" if "httptools" in available_backends() else "h11"
    if backend == "httptools":
        from .httptools_backend import HttptoolsCodec

        return HttptoolsCodec(role, config)
    if backend == "h11":
        from .h11_backend import H11Codec

        return H11Codec(role, config)
    raise ValueError(f"unknown HTTP/1 codec back-end {backend!r}")
