"""Protocol-neutral stream events shared by the HTTP/1.1 codecs (and, later, HTTP/2).

A codec turns received bytes into these events and turns these events into bytes to send. They
are slotted dataclasses, frozen except for the three that every request creates (``RequestHeaders``,
``ResponseHeaders``, ``Body``): a frozen dataclass pays ``object.__setattr__`` per field, which
made those three cost 3x as much. Treat them as immutable all the same; the ``headers`` list is
the one part meant to be edited in place (filters edit headers instead of copying them).

Conventions that every codec follows:

- Header names are lower-case ``bytes``, values are ``bytes`` with surrounding whitespace removed,
  in the order received. ``headers`` is the very list the parser built; nothing copies it.
- For HTTP/1 the ``host`` header stays in ``headers``; ``authority`` is a copy of its value (or of
  the absolute-form target's authority), so HTTP/1 and HTTP/2 consumers can both read ``authority``.
- ``end_stream`` says the message ends with this event. A message with no body is one headers event
  with ``end_stream=True``; otherwise ``Body`` events follow and the last one (or a ``Trailers``)
  ends it. Body data is streamed: a ``Body`` carries whatever arrived, never the whole body.
- ``stream_id`` numbers the exchanges on a connection: 1, 2, 3... for HTTP/1 (in request order),
  the HTTP/2 stream id for HTTP/2. ``0`` means the connection as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHeaders:
    """A request head. ``target`` is the request-target as sent (origin-form ``/a?b``,
    absolute-form ``http://h/a``, or authority-form ``h:443`` for CONNECT)."""

    stream_id: int
    method: bytes
    target: bytes
    authority: bytes
    scheme: bytes
    headers: Headers
    http_version: bytes = b"1.1"
    end_stream: bool = True
    # The peer allows another request on this connection after this one (HTTP/1 only; the codec
    # already folds in HTTP/1.0 and ``Connection: close``).
    keep_alive: bool = True
    # ``Expect: 100-continue`` was sent: the HCM decides whether to answer 100 itself.
    expect_continue: bool = False
    # Lower-cased Upgrade token (b"websocket", b"h2c", b"connect" for CONNECT) or b"".
    # b"h2c" is only reported: such a request is served as plain HTTP/1.1, as Envoy does.
    upgrade: bytes = b""


@dataclass(slots=True)
class ResponseHeaders:
    """A final (>= 200) response head, or a 101 Switching Protocols."""

    stream_id: int
    status: int
    headers: Headers
    reason: bytes = b""
    end_stream: bool = False
    http_version: bytes = b"1.1"
    keep_alive: bool = True


@dataclass(frozen=True, slots=True)
class Informational:
    """A 1xx interim response other than 101 (100 Continue, 103 Early Hints)."""

    stream_id: int
    status: int
    headers: Headers = field(default_factory=list)
    reason: bytes = b""


@dataclass(slots=True)
class Body:
    """A piece of a message body. ``data`` may be empty when only ``end_stream`` is news."""

    stream_id: int
    data: bytes
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class Trailers:
    """Trailer fields; they always end the message (as in HTTP/2)."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer went away in the middle of a message (Envoy: remote reset / connection
    termination). ``reason`` is an Envoy-style reset reason such as ``connection_termination``."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer sent bytes the codec refuses. The connection cannot be parsed any further.

    ``error_status_hint`` is the status a server should answer with (400, 413, 431, 501; 503 on
    the client side) and ``details`` Envoy's response code details (``http1.codec_error``...).
    After this event the codec only serialises (a local reply, with ``connection: close``).
    """

    stream_id: int
    error_status_hint: int
    details: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its sending side (EOF) and no message was in progress."""

    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class UpgradeRequested:
    """The connection leaves HTTP/1: server side, an Upgrade (WebSocket...) or CONNECT request
    was received; client side, the upstream answered 101 (or 2xx to CONNECT). ``data`` holds the
    raw bytes that followed the head in the same read. From then on the codec passes bytes
    through: ``receive`` yields them as ``Body`` events, ``send(Body)`` writes them unframed."""

    stream_id: int
    protocol: bytes
    data: bytes = b""


Event = (
    RequestHeaders
    | ResponseHeaders
    | Informational
    | Body
    | Trailers
    | StreamReset
    | ProtocolError
    | ConnectionClosed
    | UpgradeRequested
)

# Response code details, named as Envoy names them (source/common/http/http1/codec_impl.cc).
CODEC_ERROR = "http1.codec_error"
TOO_MANY_HEADERS = "http1.too_many_headers"
HEADERS_TOO_LARGE = "http1.headers_too_large"
INVALID_TRANSFER_ENCODING = "http1.invalid_transfer_encoding"
CL_AND_CHUNKED = "http1.content_length_and_chunked_not_allowed"
INVALID_CHARACTERS = "http1.invalid_characters"
INVALID_CONTENT_LENGTH = "http1.invalid_content_length"
INVALID_CHUNK_SIZE = "http1.invalid_chunk_size"
INVALID_METHOD = "http1.invalid_method"
INVALID_VERSION = "http1.invalid_http_version"
MISSING_HOST = "missing_host_header"
UPGRADE_WITH_BODY = "http1.upgrade_with_body"
UNEXPECTED_RESPONSE = "http1.unexpected_response"
