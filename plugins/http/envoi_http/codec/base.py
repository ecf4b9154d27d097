"""The one interface both HTTP/1.1 back-ends implement, and the checks they share.

Interface (all methods are synchronous and do no I/O):

- ``receive(data) -> list[Event]``: feed bytes read from the peer; ``b""`` means EOF.
- ``send(event) -> bytes``: serialise one event (server: ``Informational``, ``ResponseHeaders``,
  ``Body``, ``Trailers``; client: ``RequestHeaders``, ``Body``, ``Trailers``).
- ``start_next_cycle() -> list[Event]`` (server): call once the response has been sent in full;
  returns the events of the next pipelined request that were already received.
- ``keep_alive``: whether the connection may carry another exchange after the current one.
- ``idle``: no exchange is in progress (a client pool may reuse the connection when
  ``idle and keep_alive``).

Pipelining (server role) works by *holding back*: ``receive`` returns only the events of the
request being answered. Events of later pipelined requests are parsed (httptools) or left in
h11's buffer (h11, which is PAUSED), and handed out by ``start_next_cycle`` one request at a time,
so responses can never interleave. If the response ends before its request does, the connection
is not reused (``keep_alive`` turns False), as Envoy closes it in that case.

The checks here are the ones where llhttp and h11 disagree with each other or with Envoy; running
them in the wrapper makes both back-ends answer the same way (see ``__init__`` for what remains).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from . import events as ev
from .events import Event, Headers

Role = Literal["server", "client"]


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Envoy's HTTP/1 limits and options that the codec enforces (HCM field names)."""

    max_request_headers_kb: int = 60
    max_headers_count: int = 100
    enable_trailers: bool = False


# Header names the codec itself must look at; everything else passes through untouched.
_AUTHORITY, _CL, _TE, _CONNECTION, _EXPECT, _UPGRADE = range(6)
_SPECIAL = {
    b"host": _AUTHORITY,
    b"content-length": _CL,
    b"transfer-encoding": _TE,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
}
_get_special = _SPECIAL.get


class HeadInfo:
    """What the codec needs to know about a head, found in one pass over its headers."""

    __slots__ = (
        "authority", "close", "conn_upgrade", "content_length", "expect", "size", "te", "upgrade",
    )

    def __init__(self, headers: Headers) -> None:
        self.authority = b""
        self.content_length: bytes | None = None
        self.te: bytes | None = None
        self.close = self.conn_upgrade = self.expect = False
        self.upgrade = b""
        size = 0  # Envoy's header-map byte size: names plus values
        for name, value in headers:
            size += len(name) + len(value)
            kind = _get_special(name)
            if kind is None:
                continue
            if kind == _AUTHORITY:
                self.authority = value
            elif kind == _CL:
                self.content_length = value
            elif kind == _TE:
                self.te = value if self.te is None else self.te + b"," + value
            elif kind == _CONNECTION:
                low = value.lower()
                # find, not ``in``: ``bytes in bytes`` tries the needle as an int first and
                # formats and clears a TypeError (~2,000 instructions each, per request)
                self.close = self.close or low.find(b"close") >= 0
                self.conn_upgrade = self.conn_upgrade or low.find(b"upgrade") >= 0
            elif kind == _EXPECT:
                self.expect = value.lower() == b"100-continue"
            else:
                self.upgrade = value.lower()
        self.size = size

    @property
    def has_body(self) -> bool:
        return self.te is not None or (
            self.content_length is not None and self.content_length.strip(b"0") != b""
        )


def upgrade_token(info: HeadInfo, method: bytes) -> bytes:
    """The protocol a request asks to switch to, by llhttp's rule (Upgrade plus Connection:
    upgrade, or CONNECT); applied to h11 too, which only looks at the Upgrade header."""
    if method == b"CONNECT":
        return b"connect"
    if info.upgrade and info.conn_upgrade:
        return info.upgrade
    return b""


# The methods Envoy 1.39.3 takes (llhttp's HTTP methods without QUERY and M-SEARCH, which it
# refuses); any other token, lower case included, is a 400 (tests/http/test_h1_strict_oracle.py).
ENVOY_METHODS = frozenset((
    b"DELETE", b"GET", b"HEAD", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"TRACE", b"COPY",
    b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK", b"BIND",
    b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"NOTIFY",
    b"SUBSCRIBE", b"UNSUBSCRIBE", b"PATCH", b"PURGE", b"MKCALENDAR", b"LINK", b"UNLINK",
    b"SOURCE"))

# Envoy answers any other HTTP/<digit>.<digit> as it answers HTTP/1.0 without accept_http_10.
_OLD_OR_ODD_VERSIONS = frozenset(b"%d.%d" % (a, b) for a in range(10) for b in range(10))


def check_request(
    info: HeadInfo, headers: Headers, method: bytes, target: bytes, version: bytes,
    limits: CodecLimits, stream_id: int,
) -> ev.ProtocolError | None:
    """Envoy's request-head checks that neither parser makes on its own, or not alike."""
    if method not in ENVOY_METHODS:
        return ev.ProtocolError(stream_id, 400, ev.INVALID_METHOD, "invalid method")
    if len(headers) > limits.max_headers_count:
        return ev.ProtocolError(stream_id, 431, ev.TOO_MANY_HEADERS, "too many headers")
    if info.size + len(target) + len(method) > limits.max_request_headers_kb * 1024:
        return ev.ProtocolError(stream_id, 431, ev.HEADERS_TOO_LARGE, "headers size exceeds limit")
    if version != b"1.1" and version != b"1.0":
        if version in _OLD_OR_ODD_VERSIONS:
            # Envoy: "not HTTP/1.1" (0.9, 1.2, 2.0, 3.0...): 426.
            return ev.ProtocolError(stream_id, 426, "low_version", "unsupported HTTP version")
        return ev.ProtocolError(stream_id, 400, ev.INVALID_VERSION, "unsupported HTTP version")
    if info.te is not None:
        if info.te.lower().strip() != b"chunked":
            return ev.ProtocolError(
                stream_id, 501, ev.INVALID_TRANSFER_ENCODING, "unsupported transfer encoding")
        if info.content_length is not None:
            return ev.ProtocolError(
                stream_id, 400, ev.CL_AND_CHUNKED, "content-length with chunked")
    if version == b"1.1" and not info.authority:
        return ev.ProtocolError(stream_id, 400, ev.MISSING_HOST, "missing host header")
    token = upgrade_token(info, method)
    if token and info.has_body:
        # llhttp hands a body after an upgrade head over as tunnel bytes (h2c included), h11
        # parses it as a body; refusing it keeps both back-ends (and the tunnel) unambiguous.
        return ev.ProtocolError(stream_id, 400, ev.UPGRADE_WITH_BODY, "upgrade request with body")
    return None


def authority_and_scheme(target: bytes, host: bytes) -> tuple[bytes, bytes]:
    """Absolute-form targets carry their own authority, which wins over Host (RFC 9112 3.2.2)."""
    if target[:1] == b"/":
        return host, b"http"
    if target.startswith((b"http://", b"https://")):
        scheme, _, rest = target.partition(b"://")
        return rest.split(b"/", 1)[0].split(b"?", 1)[0], scheme
    return host, b"http"


class Http1Codec(ABC):
    """Base of both back-ends: limits, role and the connection-level flags."""

    backend: str = ""

    def __init__(self, role: Role, limits: CodecLimits) -> None:
        self.role: Role = role
        self.limits = limits
        self.keep_alive = True
        self.error: ev.ProtocolError | None = None

    @abstractmethod
    def receive(self, data: bytes) -> list[Event]:
        """Feed received bytes (``b""`` for EOF); return the events now deliverable."""

    @abstractmethod
    def send(self, event: Event) -> bytes:
        """Serialise one event to the bytes to write."""

    # Direct forms of ``send`` for the hot path (no event object); a back-end may override them.

    def send_response_head(self, stream_id: int, status: int, headers: Headers,
                           end_stream: bool) -> bytes:
        return self.send(ev.ResponseHeaders(stream_id, status, headers, end_stream=end_stream))

    def send_request_head(self, method: bytes, target: bytes, authority: bytes, scheme: bytes,
                          headers: Headers, end_stream: bool) -> bytes:
        return self.send(ev.RequestHeaders(0, method, target, authority, scheme, headers,
                                           end_stream=end_stream))

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> bytes:
        return self.send(ev.Body(stream_id, data, end_stream))

    def send_response(self, stream_id: int, status: int, headers: Headers, data: bytes,
                      end_stream: bool) -> bytes:
        """A response head and its (first) body bytes: ``send_response_head`` then
        ``send_data``, as one piece of bytes."""
        out = self.send_response_head(stream_id, status, headers, False)
        tail = self.send_data(stream_id, data, end_stream)
        return out + tail if tail else out

    @abstractmethod
    def protocol_error(self, event: ev.ProtocolError) -> None:
        """The connection is given up as HTTP/1.1 (by the codec itself, or by its user: the
        connection manager's request header timeout): no more parsing, no keep-alive, and
        ``event`` comes out of the next ``receive``/``start_next_cycle`` (client: as a 503)."""

    @abstractmethod
    def start_next_cycle(self) -> list[Event]:
        """Server: the response is complete; return held-back events of the next request."""

    @property
    @abstractmethod
    def idle(self) -> bool:
        """No exchange is in progress on this connection."""
