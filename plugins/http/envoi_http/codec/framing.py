"""HTTP/1.1 message framing and serialisation, shared by both back-ends.

The httptools back-end serialises with these functions (llhttp only parses); the h11 back-end
uses ``frame_response``/``frame_request`` to make the same framing decisions before handing the
head to h11, so both back-ends put the same framing on the wire. Local replies after a protocol
error also go through here, because h11 refuses to send once its peer state is ERROR.

Framing rules (RFC 9112 section 6, and what Envoy does):
- 1xx, 204, 304 and responses to HEAD carry no body whatever the headers say;
- an explicit ``content-length`` wins; ``transfer-encoding: chunked`` is kept as given;
- a head with ``end_stream`` and no length gets ``content-length: 0`` (as Envoy adds it);
- otherwise HTTP/1.1 peers get chunked, HTTP/1.0 peers a close-delimited body.
"""

from __future__ import annotations

from http import HTTPStatus

from .events import Headers

# How the body of the message being sent is delimited.
NONE = 0  # no body may follow (HEAD, 204, 304, end_stream on the head)
LENGTH = 1  # content-length: body bytes are written as they are
CHUNKED = 2  # chunked transfer coding
CLOSE = 3  # delimited by closing the connection (HTTP/1.0 peer, unknown length)
RAW = 4  # after a protocol switch: bytes pass through untouched

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
# Where Envoy's table (CodeUtility::toString, RFC 9110 names) differs from Python 3.11's: other
# names, codes it lacks (those are "Unknown", as for any code not in either) and 599.
_REASONS.update({413: b"Payload Too Large", 414: b"URI Too Long", 416: b"Range Not Satisfiable",
                 599: b"Last Unassigned Server Error Code"})
for _code in (102, 103, 418, 451):
    del _REASONS[_code]
# The common status lines, built once; the hot path is one dict lookup.
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()}
_CRLF = b"\r\n"
_SEP = b": "
_LAST_CHUNK = b"0\r\n\r\n"
_END_HEAD = b"\r\n\r\n"
_RESPONSE_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_REQUEST_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"host"))
# Methods Envoy sends without content-length when the request has no body.
_NO_BODY_METHODS = frozenset((b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"))


def reason_phrase(status: int, reason: bytes) -> bytes:
    return reason or _REASONS.get(status, b"Unknown")


def status_line(status: int, reason: bytes) -> bytes:
    if not reason:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = _REASONS.get(status, b"Unknown")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def _has_close(value: bytes) -> bool:
    return value.lower().find(b"close") >= 0  # (not ``in``: see HeadInfo in base.py)


def frame_response(
    status: int,
    headers: Headers,
    end_stream: bool,
    *,
    head_request: bool,
    peer_http10: bool,
    keep_alive: bool,
) -> tuple[Headers, int, bool]:
    """Decide the framing of a response; returns (headers to send, body mode, keep_alive).

    ``headers`` is returned unchanged (not copied) when nothing must be added, which is the
    common case for a proxied response that already has a content-length."""
    length = chunked = close = False
    for name, value in headers:
        if name in _RESPONSE_FRAMING:  # (one set test for the usual header)
            if name == b"content-length":
                length = True
            elif name == b"transfer-encoding":
                chunked = True
            elif _has_close(value):
                close = True
    extra: Headers = []
    if status < 200:
        return headers, (RAW if status == 101 else NONE), keep_alive
    if head_request or status == 204 or status == 304:
        mode = NONE
    elif length:
        mode = LENGTH
    elif chunked and not peer_http10:
        mode = CHUNKED
    elif end_stream:
        mode = NONE
        extra.append((b"content-length", b"0"))
    elif peer_http10:
        mode = CLOSE
        keep_alive = False
    else:
        mode = CHUNKED
        extra.append((b"transfer-encoding", b"chunked"))
    if close:
        keep_alive = False
    elif not keep_alive:
        extra.append((b"connection", b"close"))
    if extra:
        headers = headers + extra
    return headers, mode, keep_alive


def frame_request(
    method: bytes, authority: bytes, headers: Headers, end_stream: bool
) -> tuple[Headers, int]:
    """Decide the framing of a request; adds ``host`` from ``authority`` when it is missing."""
    length = chunked = host = False
    for name, _ in headers:
        if name in _REQUEST_FRAMING:
            if name == b"content-length":
                length = True
            elif name == b"transfer-encoding":
                chunked = True
            else:
                host = True
    extra: Headers = []
    if length:
        mode = LENGTH
    elif chunked:
        mode = CHUNKED
    elif end_stream:
        mode = NONE
        if method not in _NO_BODY_METHODS:
            # Envoy says so for a method whose request may carry a body (RFC 9110 8.6).
            extra.append((b"content-length", b"0"))
    else:
        mode = CHUNKED
        extra.append((b"transfer-encoding", b"chunked"))
    if method == b"CONNECT":
        mode = RAW
    if extra:
        headers = headers + extra
    if not host and authority:
        headers = [(b"host", authority), *headers]
    return headers, mode


def encode_head(first_line: bytes, headers: Headers) -> bytes:
    if headers:  # one join, the per-header work in C
        return first_line + _CRLF.join(map(_SEP.join, headers)) + _END_HEAD
    return first_line + _CRLF


def encode_data(mode: int, data: bytes, end_stream: bool) -> bytes:
    if mode == CHUNKED:
        if data:
            out = b"%x\r\n%s\r\n" % (len(data), data)
            return out + _LAST_CHUNK if end_stream else out
        return _LAST_CHUNK if end_stream else b""
    if mode == NONE:
        return b""  # e.g. a body an upstream wrongly sent with a HEAD response
    return data


def encode_trailers(mode: int, trailers: Headers, enabled: bool) -> bytes:
    """Chunked trailers; dropped (only the body is ended) unless enabled, as in Envoy."""
    if mode != CHUNKED:
        return b""
    if not enabled or not trailers:
        return _LAST_CHUNK
    return encode_head(b"0\r\n", trailers)
