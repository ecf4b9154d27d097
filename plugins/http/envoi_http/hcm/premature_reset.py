"""Envoy's answer to the HTTP/2 rapid-reset attack (CVE-2023-44487): a connection on which too
many streams end *prematurely* is closed.

A stream ends prematurely when it lived no longer than
``overload.premature_reset_min_stream_lifetime_seconds`` (runtime, default 1; whole seconds, as
Envoy truncates the lifetime) and no response code was set for it (the client reset it before
an answer). With ``overload.premature_reset_total_stream_count`` (runtime, default 500) as N:
before N streams have ended, N/2 premature ones close the connection; after, half of all ended
streams being premature does. Envoy 1.39.3 closes the connection at once (no GOAWAY) and counts
``http.<prefix>.downstream_rq_too_many_premature_resets``: with the defaults the 250th
HEADERS+RST_STREAM pair ends it (checked against the running Envoy: 250
``downstream_rq_rx_reset``, one ``downstream_rq_too_many_premature_resets``).

The concurrent-stream limit does not stop this attack (each stream is gone before the next is
opened); this count does, on whatever protocol carries it.
"""

from __future__ import annotations

TOTAL_KEY = "overload.premature_reset_total_stream_count"
LIFETIME_KEY = "overload.premature_reset_min_stream_lifetime_seconds"


class PrematureResets:
    """Per connection. ``stream_ended`` returns True when the connection must be closed."""

    __slots__ = ("closed", "limit", "min_lifetime", "premature", "tripped")

    def __init__(self, limit: int = 500, min_lifetime: int = 1) -> None:
        self.limit = limit
        self.min_lifetime = min_lifetime
        self.closed = 0
        self.premature = 0
        self.tripped = False

    def stream_ended(self, lifetime_s: float, responded: bool) -> bool:
        """A stream ended (not destroyed by envoi itself); ``responded``: a response code was
        set for it. True once, when the connection has had too many premature ends."""
        self.closed += 1
        if not responded and int(lifetime_s) <= self.min_lifetime:
            self.premature += 1
        if self.tripped or not self.premature:
            return False
        if self.closed < self.limit:
            if self.premature * 2 < self.limit:
                return False
        elif self.premature * 2 < self.closed:
            return False
        self.tripped = True
        return True
