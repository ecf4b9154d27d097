"""The connection manager's tap point: HTTP request and response heads on the live tap
(``GET /tap``, :mod:`envoi.tap`), as the MongoDB, DynamoDB and gRPC sniffers publish theirs.

The point is ``envoy.filters.network.http_connection_manager`` on each listener. Per stream, when
a session listens:

* ``http.request`` when the request head is decoded (before the filters run; the hop-by-hop
  fields are already gone): ``stream``, ``protocol`` (``HTTP/1.1``, ``HTTP/1.0``, ``HTTP/2``),
  ``method``, ``path``, ``authority``, ``scheme``, ``headers`` (``[name, value]`` pairs in the
  order they came);
* ``http.response`` when the stream ends: the request's ``method``, ``path`` and
  ``authority`` again (so one match keeps both events of a request), ``status`` (0 when no
  response was sent), the response ``headers`` as they left, ``duration_ms`` from the request
  head to the end, and ``reset: true`` when the stream was reset instead of completed.

Each event also carries ``connection`` (the downstream connection's id), ``listener``,
``filter`` and ``worker`` (:meth:`envoi.tap.TapPoint.publish`). Nothing is built while nobody
listens: the connection manager reads ``tap.active`` and goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envoi.http.headers import HeaderMap
    from envoi.tap import TapPoint

__all__ = ["TAP_POINT", "publish_request", "publish_response"]

TAP_POINT = "envoy.filters.network.http_connection_manager"


def _pairs(h: HeaderMap | None) -> list[list[str]]:
    if h is None:
        return []
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in h.headers]


def publish_request(tap: TapPoint, connection: int, stream_id: int, protocol: str,
                    h: HeaderMap) -> None:
    tap.publish("http.request", connection, {
        "stream": stream_id, "protocol": protocol,
        "method": h.method.decode("latin-1"), "path": h.path.decode("latin-1"),
        "authority": h.authority.decode("latin-1"), "scheme": h.scheme.decode("latin-1"),
        "headers": _pairs(h)})


def publish_response(tap: TapPoint, connection: int, s: Any, now: float,
                     reset: bool = False) -> None:
    """``s`` is the stream (an ``ActiveStream``) as it ends, at ``now`` (monotonic)."""
    h = s.request_headers
    info = s.stream_info
    fields: dict[str, Any] = {
        "stream": s.stream_id, "protocol": info.protocol or "HTTP/1.1",
        "method": h.method.decode("latin-1"), "path": h.path.decode("latin-1"),
        "authority": h.authority.decode("latin-1"), "status": info.response_code,
        "headers": _pairs(s.response_headers),
        "duration_ms": round((now - s.start) * 1000, 3)}
    if reset:
        fields["reset"] = True
    tap.publish("http.response", connection, fields)
