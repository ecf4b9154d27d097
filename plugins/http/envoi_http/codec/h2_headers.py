"""Checks on received HTTP/2 header blocks, made once, in the one pass that splits them.

``h2`` is run with its own header validation and normalisation off (they cost more than the rest
of the request path); these are the checks Envoy's codec makes (RFC 9113 §8.2 and §8.3): names
lower-case tokens, no NUL/CR/LF in values, no connection-specific fields, ``te`` only
``trailers``, pseudo-header fields known, once each, before the regular ones, and the ones a
request or response needs present. A failure is an HTTP messaging error
(``http2.rx_messaging_error``); the codec decides whether it ends the stream or the connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from .events import Headers

# Bytes allowed in a field name: RFC 9110 token characters, lower-case only.
_NAME_OK = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
# Bytes refused in a value (RFC 9113 §8.2.1: NUL, CR, LF; Envoy allows the rest).
_bad_value = re.compile(rb"[\x00\r\n]").search

_HOST, _COOKIE, _TE, _BAD, _EXPECT = range(5)
_SPECIAL = {
    b"host": _HOST,
    b"cookie": _COOKIE,
    b"te": _TE,
    b"expect": _EXPECT,
    b"connection": _BAD,
    b"keep-alive": _BAD,
    b"proxy-connection": _BAD,
    b"transfer-encoding": _BAD,
    b"upgrade": _BAD,
}
_special = _SPECIAL.get

INVALID_FIELD = "http2.invalid.header.field"
MESSAGING = "http2.violation.of.messaging.rule"


class Request(NamedTuple):
    method: bytes
    path: bytes
    scheme: bytes
    authority: bytes
    protocol: bytes  # extended CONNECT (RFC 8441) ``:protocol``, else b""
    headers: Headers
    size: int  # Envoy's header byte size: names plus values, pseudo-header fields included
    expect_continue: bool


class Response(NamedTuple):
    status: int
    headers: Headers
    size: int


class MessagingError(Exception):
    """A header block that breaks the HTTP/2 message rules; ``details`` is Envoy's name."""

    def __init__(self, details: str, message: str) -> None:
        super().__init__(message)
        self.details = details


def _bad_field(name: bytes, value: bytes) -> MessagingError:
    if not name or name.translate(None, _NAME_OK):
        return MessagingError(INVALID_FIELD, f"invalid header name {name[:64]!r}")
    return MessagingError(INVALID_FIELD, f"invalid character in value of {name[:64]!r}")


def split_request(block: Iterable[tuple[bytes, bytes]], allow_connect: bool) -> Request:
    """Pseudo-header fields out, checks made, ``cookie`` crumbs joined with ``; `` (as Envoy's
    server codec does for HTTP/1 upstreams). ``host`` stays only when there is no
    ``:authority`` (then it becomes the authority)."""
    method = path = scheme = authority = protocol = None
    regular: Headers = []
    size = 0
    cookies: list[bytes] | None = None
    host: bytes | None = None
    expect = False
    for name, value in block:
        size += len(name) + len(value)
        if name[:1] == b":":
            if regular or cookies is not None or host is not None:
                raise MessagingError(MESSAGING, "pseudo-header field after a regular one")
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            elif name == b":protocol" and protocol is None and allow_connect:
                protocol = value
            else:
                raise MessagingError(MESSAGING, f"unexpected pseudo-header field {name!r}")
            if _bad_value(value):
                raise _bad_field(name, value)
            continue
        if not name or name.translate(None, _NAME_OK) or _bad_value(value):
            raise _bad_field(name, value)
        kind = _special(name)
        if kind is None:
            regular.append((name, value))
        elif kind == _COOKIE:
            if cookies is None:
                cookies = []
            cookies.append(value)
        elif kind == _HOST:
            host = value
        elif kind == _TE:
            if value.lower() != b"trailers":
                raise MessagingError(MESSAGING, "te other than trailers")
            regular.append((name, value))
        elif kind == _EXPECT:
            expect = value.lower() == b"100-continue"
            regular.append((name, value))
        else:
            raise MessagingError(MESSAGING, f"connection-specific header {name!r}")
    if method is None:
        raise MessagingError(MESSAGING, "missing :method")
    if method == b"CONNECT" and protocol is None:
        if path is not None or scheme is not None or authority is None:
            raise MessagingError(MESSAGING, "CONNECT needs :authority and no :path/:scheme")
        path = scheme = b""
    elif path is None or scheme is None or not path:
        raise MessagingError(MESSAGING, "missing :path or :scheme")
    if protocol is not None and method != b"CONNECT":
        raise MessagingError(MESSAGING, ":protocol on a request other than CONNECT")
    if authority is None:
        authority = host or b""
    elif host is not None and host != authority:
        regular.append((b"host", host))  # kept as sent; the proxy layer decides what wins
    if cookies is not None:
        regular.append((b"cookie", cookies[0] if len(cookies) == 1 else b"; ".join(cookies)))
    return Request(method, path, scheme, authority, protocol or b"", regular, size, expect)


def split_response(block: Iterable[tuple[bytes, bytes]]) -> Response:
    status: bytes | None = None
    regular: Headers = []
    size = 0
    for name, value in block:
        size += len(name) + len(value)
        if name[:1] == b":":
            if name != b":status" or status is not None or regular:
                raise MessagingError(MESSAGING, f"unexpected pseudo-header field {name!r}")
            status = value
            continue
        if not name or name.translate(None, _NAME_OK) or _bad_value(value):
            raise _bad_field(name, value)
        if _special(name) == _BAD:
            raise MessagingError(MESSAGING, f"connection-specific header {name!r}")
        regular.append((name, value))
    if status is None or len(status) != 3 or not status.isdigit():
        raise MessagingError(MESSAGING, f"missing or invalid :status {status!r}")
    return Response(int(status), regular, size)


def split_trailers(block: Iterable[tuple[bytes, bytes]]) -> tuple[Headers, int]:
    """Trailers: regular fields only."""
    out: Headers = []
    size = 0
    for name, value in block:
        size += len(name) + len(value)
        if name[:1] == b":":
            raise MessagingError(MESSAGING, "pseudo-header field in trailers")
        if not name or name.translate(None, _NAME_OK) or _bad_value(value):
            raise _bad_field(name, value)
        if _special(name) == _BAD:
            raise MessagingError(MESSAGING, f"connection-specific header {name!r}")
        out.append((name, value))
    return out, size
