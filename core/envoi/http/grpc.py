"""What HTTP code needs to know about gRPC, shared by the connection manager, the router and the
gRPC filters (Envoy's ``Grpc::Common`` and ``Grpc::Utility``): which requests and responses are
gRPC, the service and method a path names, status codes both ways, ``grpc-timeout`` values, and
the percent-encoding of ``grpc-message``. Pure functions on bytes; nothing here does I/O.
"""

from __future__ import annotations

# Status codes (grpc/include/grpcpp/support/status_code_enum.h).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION = 6, 7, 8, 9
ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS = 10, 11, 12, 13, 14, 15
UNAUTHENTICATED = 16
MAXIMUM_KNOWN = UNAUTHENTICATED

CONTENT_TYPE = b"application/grpc"
GRPC_WEB_CONTENT_TYPES = frozenset((b"application/grpc-web", b"application/grpc-web+proto",
                                    b"application/grpc-web-text",
                                    b"application/grpc-web-text+proto"))
#: gRPC's limit on the digits of a timeout value.
MAX_TIMEOUT_VALUE = 99_999_999

_HTTP_TO_GRPC = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED,
                 404: UNIMPLEMENTED, 429: UNAVAILABLE, 502: UNAVAILABLE, 503: UNAVAILABLE,
                 504: UNAVAILABLE}
_GRPC_TO_HTTP = {OK: 200, CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400,
                 DEADLINE_EXCEEDED: 504, NOT_FOUND: 404, ALREADY_EXISTS: 409,
                 PERMISSION_DENIED: 403, RESOURCE_EXHAUSTED: 429, FAILED_PRECONDITION: 400,
                 ABORTED: 409, OUT_OF_RANGE: 400, UNIMPLEMENTED: 501, INTERNAL: 500,
                 UNAVAILABLE: 503, DATA_LOSS: 500, UNAUTHENTICATED: 401}
_TIMEOUT_UNITS_MS = {0x48: 3_600_000, 0x4D: 60_000, 0x53: 1000, 0x6D: 1}  # H M S m


def is_grpc_content_type(value: bytes | None) -> bool:
    """``application/grpc`` or ``application/grpc+<subtype>`` (``application/grpc-web`` is
    not gRPC)."""
    if value is None or not value.startswith(CONTENT_TYPE):
        return False
    return len(value) == len(CONTENT_TYPE) or value[len(CONTENT_TYPE)] == 0x2B  # '+'


def is_grpc_request(content_type: bytes | None, path: bytes) -> bool:
    """Envoy's ``isGrpcRequestHeaders``: a path and a gRPC content type."""
    return bool(path) and is_grpc_content_type(content_type)


def is_grpc_web_content_type(value: bytes | None) -> bool:
    return value in GRPC_WEB_CONTENT_TYPES


def is_grpc_response(status: int, content_type: bytes | None, grpc_status: bytes | None,
                     end_stream: bool) -> bool:
    """Envoy's ``isGrpcResponseHeaders``: a trailers-only response (headers that end the
    stream) needs only ``grpc-status``; any other needs 200 and a gRPC content type."""
    if end_stream:
        return grpc_status is not None
    return status == 200 and is_grpc_content_type(content_type)


def service_and_method(path: bytes) -> tuple[bytes, bytes] | None:
    """``/<service>/<method>`` (query ignored, empty segments skipped, as Envoy's
    ``resolveServiceAndMethod``); None for any other shape."""
    q = path.find(b"?")
    if q >= 0:
        path = path[:q]
    parts = [p for p in path.split(b"/") if p]
    if len(parts) != 2:
        return None
    return parts[0], parts[1]


def http_to_grpc_status(http_status: int) -> int:
    """The gRPC status a client sees for an HTTP status (gRPC's http-grpc-status-mapping)."""
    return _HTTP_TO_GRPC.get(http_status, UNKNOWN)


def grpc_to_http_status(grpc_status: int) -> int:
    """Envoy's ``grpcToHttpStatus`` (the HTTP/1.1 bridge's answer to a failed call)."""
    return _GRPC_TO_HTTP.get(grpc_status, 500)


def parse_grpc_status(value: bytes | None) -> int | None:
    """A ``grpc-status`` value as a number (None when absent, empty or not a number)."""
    if not value or not value.isdigit():
        return None
    return int(value)


def parse_timeout_ms(value: bytes | None) -> int | None:
    """A ``grpc-timeout`` header (``<TimeoutValue><H|M|S|m|u|n>``) in milliseconds, ``u`` and
    ``n`` rounded up; None when absent or malformed (Envoy then ignores it). As Envoy's
    ``getGrpcTimeout``: the value is read as ``absl::SimpleAtoi`` reads it (spaces around it and
    one sign allowed, decimal digits only) and must be 0..99,999,999 -- the 8-digit limit is on
    the value, so leading zeros beyond 8 digits still parse."""
    if not value or len(value) < 2:
        return None
    digits, unit = value[:-1].strip(b" \t\n\v\f\r"), value[-1]
    if digits[:1] in (b"+", b"-"):
        sign, digits = digits[:1], digits[1:]
    else:
        sign = b""
    if not digits.isdigit():
        return None
    n = int(digits)
    if sign == b"-" and n:
        return None
    if n > MAX_TIMEOUT_VALUE:
        return None
    mult = _TIMEOUT_UNITS_MS.get(unit)
    if mult is not None:
        return n * mult
    if unit == 0x75:  # u
        return -(-n // 1000)
    if unit == 0x6E:  # n
        return -(-n // 1_000_000)
    return None


def format_timeout(ms: int) -> bytes:
    """Milliseconds as a ``grpc-timeout`` value, in the smallest unit that fits 8 digits
    (Envoy's ``toGrpcTimeout``: ``2000m``, then seconds, minutes, hours)."""
    t = max(0, ms)
    units = b"mSMH"
    i = 0
    if t > MAX_TIMEOUT_VALUE:
        t //= 1000
        i = 1
    while t > MAX_TIMEOUT_VALUE:
        if i == 3:
            t = MAX_TIMEOUT_VALUE
        else:
            t //= 60
            i += 1
    return b"%d" % t + units[i:i + 1]


def percent_encode_message(text: bytes) -> bytes:
    """``grpc-message`` encoding: bytes outside printable ASCII, and ``%``, as ``%XX``."""
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in text):
        return text
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c
                    for c in text)


def percent_decode_message(text: bytes) -> bytes:
    """The inverse of :func:`percent_encode_message`; a malformed escape stays as it is."""
    if b"%" not in text:
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == 0x25 and i + 2 < n and _is_hex(text[i + 1:i + 3]):
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


def local_reply_headers(http_status: int, body: bytes,
                        grpc_status: int | None = None) -> list[tuple[bytes, bytes]]:
    """The headers of a local reply to a gRPC request, as Envoy's ``sendLocalReply`` makes it:
    a trailers-only response (``:status`` 200 is the caller's, with end of stream) carrying
    ``content-type: application/grpc``, ``grpc-status`` (given, else mapped from the HTTP
    status) and the body, as it is (a trailing newline too: Envoy 1.39.3 sends ``%0A``), as
    ``grpc-message``."""
    code = grpc_status if grpc_status is not None else http_to_grpc_status(http_status)
    out = [(b"content-type", CONTENT_TYPE), (b"grpc-status", b"%d" % code)]
    if body:
        out.append((b"grpc-message", percent_encode_message(body)))
    return out
