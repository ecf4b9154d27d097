"""Events only a multiplexed (HTTP/2) codec produces, beside the shared ones in ``events``.

The HTTP/2 codecs report requests, responses, bodies, trailers and resets with the shared
events (``RequestHeaders``, ``ResponseHeaders``, ``Informational``, ``Body``, ``Trailers``,
``StreamReset``, ``ProtocolError``) carrying the HTTP/2 stream id; these are the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer sent GOAWAY: no new streams on this connection. Streams above
    ``last_stream_id`` were not processed and are reported reset (``remote_refused_stream_reset``,
    safe to retry) right after this event; the others may still complete."""

    last_stream_id: int
    error_code: int
    debug_data: bytes = b""
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """Client side: the peer sent SETTINGS (every SETTINGS frame, the first one included: it
    says the connection is ready). ``max_concurrent_streams`` is how many streams envoi may open
    (``None`` while the peer sets no limit)."""

    max_concurrent_streams: int | None
    initial_window_size: int
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """A stream's send buffer fell below its low watermark (the peer opened its flow-control
    window): whoever stopped feeding it because it was above the high watermark may go on."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Flood:
    """The peer broke one of Envoy's flood limits (``details`` is Envoy's name for it, and the
    ``http2.*`` counter has been moved). The connection must be closed at once, without a GOAWAY,
    as Envoy closes it; it is not a protocol error (``downstream_cx_protocol_error`` stays)."""

    details: str
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class PingAck:
    """The peer acknowledged one of our PINGs (``send_ping``): connection keepalive."""

    data: bytes
    stream_id: int = 0


H2Event = GoAwayReceived | PeerSettings | StreamWritable | Flood | PingAck
