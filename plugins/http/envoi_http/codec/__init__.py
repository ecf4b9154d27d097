"""Sans-IO HTTP/1.1 codecs for envoi-http: bytes in, events out; events in, bytes out.

Two interchangeable back-ends sit behind ``base.Http1Codec``: ``h11`` (pure Python, the
reference) and ``httptools`` (llhttp, the fast path). ``make_codec("auto", ...)`` picks httptools
when it is importable. Both pass the same test suite (tests/http/test_codec*.py). Nothing here
imports asyncio or does I/O.

Where the back-ends still differ (each asserted in
tests/http/test_codec_smuggling.py::test_documented_differences, and against Envoy 1.39.3 in
tests/http/test_h1_strict_oracle.py):

- bare LF line endings in a head: llhttp refuses them (400 ``http1.codec_error``), h11 accepts
  (as Envoy does);
- obs-fold (a header line continued with leading whitespace): llhttp refuses, h11 unfolds (as
  Envoy does);
- an LF alone after chunk data: h11 refuses (400), llhttp and Envoy take it;
- error ``details`` for a garbage request line may differ (both give 400).

Made the same by the wrapper (and Envoy's): Transfer-Encoding other than exactly ``chunked``
(501), CL with TE (400), a repeated ``Content-Length`` or a list (``5, 5``: 400), missing Host on
HTTP/1.1 (400), methods: Envoy's list only (no lower-case or custom tokens, no QUERY or M-SEARCH:
400), blank lines before a request line (skipped), HTTP versions: 1.0/1.1, any other
``<digit>.<digit>`` or none is 426, anything else 400; control characters in values (400), header
count and size limits (431), a chunk size over 64 bits or a chunk-size line ended by LF alone
(400), trailing whitespace in values (stripped), upgrade detection (Upgrade + ``Connection:
upgrade``, or CONNECT; ``h2c`` is served as HTTP/1.1), an upgrade request with a body (400),
HTTP/1.0 connections never kept alive (as h11 does). Bytes that can never become a valid request
are refused as they arrive, not when a blank line comes (h11: ``h11_early``).
"""

from __future__ import annotations

import functools
import importlib.metadata
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
    "Trailers", "UpgradeRequested", "available_backends", "describe_backend", "make_codec",
    "resolve_backend",
]


@functools.cache
def _httptools_installed() -> bool:
    # Asked once: a failed import is not cached by Python and costs ~0.2 ms (every path entry
    # and finder is searched again) -- once per connection, that made ``auto`` without
    # httptools slower than ``h11``.
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    return ["h11", "httptools"] if _httptools_installed() else ["h11"]


def resolve_backend(backend: Backend) -> Backend:
    """``auto`` -> ``httptools`` when installed, else ``h11``; the others as they are."""
    if backend == "auto":
        return "httptools" if _httptools_installed() else "h11"
    return backend


def describe_backend(backend: Backend) -> str:
    """``httptools 0.9.0 (llhttp)`` or ``h11 0.16.0`` for what ``backend`` resolves to."""
    name = resolve_backend(backend)
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"{name} {version}" + (" (llhttp)" if name == "httptools" else " (pure Python)")


def make_codec(backend: Backend, role: Role, **limits: Any) -> Http1Codec:
    """Build a codec. ``limits`` are ``CodecLimits`` fields (``max_request_headers_kb``,
    ``max_headers_count``, ``enable_trailers``)."""
    config = CodecLimits(**limits)
    backend = resolve_backend(backend)
    if backend == "httptools":
        from .httptools_backend import HttptoolsCodec

        return HttptoolsCodec(role, config)
    if backend == "h11":
        from .h11_backend import H11Codec

        return H11Codec(role, config)
    raise ValueError(f"unknown HTTP/1 codec back-end {backend!r}")
