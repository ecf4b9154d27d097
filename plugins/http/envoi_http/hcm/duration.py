"""A stream's maximum duration: the HCM's ``common_http_protocol_options.max_stream_duration``
and the route's ``max_stream_duration`` (``max_stream_duration``, ``grpc_timeout_header_max``,
``grpc_timeout_header_offset``), as Envoy 1.39.3's connection manager applies them
(``refreshDurationTimeout``, ``onStreamMaxDurationReached``).

* A stream gets the HCM's duration when it starts; once routed to a cluster, the route decides:
  with ``grpc_timeout_header_max`` set and a parseable ``grpc-timeout`` header, the header's
  value (capped by the max unless the max is 0, then less the offset, 0 when the offset is not
  below it); otherwise the route's ``max_stream_duration`` (``0s``: none), else the HCM's.
  The time the stream has already lived is taken off.
* A route with ``max_stream_duration`` ("new timeouts") rewrites a gRPC request's
  ``grpc-timeout`` to the timeout (before that time is taken off), so the server sees the
  deadline the proxy enforces; with no timeout it removes the header.
* When it fires: ``http.<prefix>.downstream_rq_max_duration_reached``, and a local reply
  ``downstream duration timeout`` (504 once the request is complete, else 408; to a gRPC
  request a trailers-only ``grpc-status: 4`` DEADLINE_EXCEEDED), details
  ``max_duration_timeout``, no response flag; a stream whose response started is reset.

The deadline is one entry in the stream's deadline table (``ActiveStream.start_deadline``):
the connection's one timer serves it, as it serves the router's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from envoi.http.grpc import DEADLINE_EXCEEDED, format_timeout, parse_timeout_ms

if TYPE_CHECKING:
    from envoi.http.headers import HeaderMap

    from envoi_http.router.config import Route

class ActiveStream(Protocol):
    """What this module uses of hcm/stream.py's ActiveStream (which calls it)."""

    request_headers: HeaderMap
    deadlines: dict[Callable[[], None], float] | None
    is_grpc: bool
    start: float
    hcm: Any

    @property
    def request_complete(self) -> bool: ...
    def start_deadline(self, delay: float, callback: Callable[[], None]) -> None: ...
    def cancel_deadline(self, callback: Callable[[], None]) -> None: ...
    def max_duration_reached(self) -> None: ...
    def send_local_reply(self, status: int, body: bytes | str = b"",
                         headers: dict[str, str] | None = None, details: str = "",
                         modify_headers: Any = None, flag: str = "",
                         grpc_status: int | None = None) -> None: ...


GRPC_TIMEOUT = b"grpc-timeout"
BODY = b"downstream duration timeout"
DETAILS = "max_duration_timeout"


def refresh(s: ActiveStream, route: Route | None, hcm_max_ms: int) -> None:
    """(Re)arm ``s``'s duration deadline for ``route`` (None, or a direct response/redirect
    route: the HCM's, armed when the stream started, stays)."""
    if route is None or route.kind != "cluster":
        return
    h = s.request_headers
    msd = route.max_duration
    header_max = msd.grpc_timeout_header_max if msd is not None else None
    grpc_ms = parse_timeout_ms(h.get_bytes(GRPC_TIMEOUT)) if header_max is not None else None
    timeout = 0
    if grpc_ms is None or header_max is None:
        if msd is not None and msd.max_stream_duration is not None:
            timeout = msd.max_stream_duration  # (0: none)
        else:
            timeout = hcm_max_ms
        if not timeout:
            if s.deadlines and s.max_duration_reached in s.deadlines:
                s.cancel_deadline(s.max_duration_reached)
                if msd is not None and s.is_grpc:
                    h.remove_bytes(GRPC_TIMEOUT)
            return
    else:
        timeout = grpc_ms
        if header_max and timeout > header_max:
            timeout = header_max
        offset = msd.grpc_timeout_header_offset if msd is not None else None
        if timeout and offset is not None:
            timeout = timeout - offset if offset < timeout else 0
    if msd is not None and s.is_grpc:
        h.set_bytes(GRPC_TIMEOUT, format_timeout(timeout))
    left = timeout / 1000 - (time.monotonic() - s.start)
    s.start_deadline(max(0.0, left), s.max_duration_reached)


def reached(s: ActiveStream) -> None:
    """The deadline fired: count it and answer (or reset a stream whose response started)."""
    s.hcm.stats.downstream_rq_max_duration_reached.value += 1
    s.send_local_reply(504 if s.request_complete else 408, BODY, details=DETAILS,
                       grpc_status=DEADLINE_EXCEEDED)


def start(s: ActiveStream, route: Route | None, hcm_max_ms: int) -> None:
    """A new stream: the HCM's duration from now, then its route's say."""
    if hcm_max_ms:
        s.start_deadline(hcm_max_ms / 1000, s.max_duration_reached)
    refresh(s, route, hcm_max_ms)
