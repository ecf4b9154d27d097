"""Route ``idle_timeout`` (RouteAction.idle_timeout): the per-route stream idle timeout.

As Envoy does, a route's ``idle_timeout`` replaces the HCM's ``stream_idle_timeout`` for the
streams it routes (longer or shorter); ``0s`` turns the stream idle timeout off for them. What
fires is the HCM's stream idle timeout, with its answers: ``504 stream timeout`` while waiting
for the response, ``408`` before the request is complete, a reset once the response started;
``http.<prefix>.downstream_rq_idle_timeout`` either way (never ``upstream_rq_timeout``). The
timer restarts on activity either way (a request read, a response write).

Nothing runs per request: the HCM's connection timer reads the stream's route's
``idle_timeout`` when it fires, and its tick is at most the shortest route idle timeout
(:func:`shortest`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envoi_http.router.config import RouteTable


def route_idle_timeouts(table: RouteTable | None) -> list[float]:
    """Every route ``idle_timeout`` set in the table (0 included)."""
    if table is None:
        return []
    return [r.idle_timeout for vh in table.virtual_hosts() for r in vh.routes
            if r.idle_timeout is not None]


def shortest(table: RouteTable | None) -> float:
    """The shortest non-zero route idle timeout (0.0: none), for the HCM timer's tick."""
    vals = [v for v in route_idle_timeouts(table) if v > 0]
    return min(vals) if vals else 0.0
