"""``http2_protocol_options.connection_keepalive``: PING-based liveness for an HTTP/2
connection, downstream and upstream, as Envoy's codec does it.

Every ``interval`` (plus up to ``interval_jitter`` percent, 15 by default) a PING goes out;
when ``timeout`` passes with neither its ACK nor any other frame from the peer (a busy
connection's PING ACK may wait behind DATA, so any frame counts), the connection is closed at
once and ``http2.keepalive_timeout`` counts it. No new PING is sent while one is unanswered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from envoi_http.codec.h2_options import KeepaliveOptions

__all__ = ["Keepalive", "KeepaliveOptions"]


class Keepalive:
    """One connection's PING timers. ``ping(opaque)`` sends a PING; ``expired()`` closes the
    connection. Call ``received()`` whenever frames arrive and ``acked()`` on a PING ACK."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: KeepaliveOptions,
                 ping: Callable[[bytes], None], expired: Callable[[], None],
                 rand: Callable[[], float] = random.random) -> None:
        self.loop = loop
        self.options = options
        self.ping = ping
        self.expired = expired
        self.rand = rand
        self.send_timer: asyncio.TimerHandle | None = None
        self.timeout_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.acked()  # the first PING after one interval

    def _send(self) -> None:
        self.send_timer = None
        if self.closed or self.timeout_timer is not None:
            return
        # the time in milliseconds as the opaque data, as Envoy sends it (handy when debugging)
        self.ping(int(time.time() * 1000).to_bytes(8, "big"))
        self.timeout_timer = self.loop.call_later(self.options.timeout, self._timeout)

    def _timeout(self) -> None:
        self.timeout_timer = None
        if not self.closed:
            self.close()
            self.expired()

    def received(self) -> None:
        """Frames arrived: an unanswered PING's deadline starts again."""
        t = self.timeout_timer
        if t is not None:
            t.cancel()
            self.timeout_timer = self.loop.call_later(self.options.timeout, self._timeout)

    def acked(self) -> None:
        if self.timeout_timer is not None:
            self.timeout_timer.cancel()
            self.timeout_timer = None
        opts = self.options
        if opts.interval > 0 and not self.closed and self.send_timer is None:
            delay = opts.interval * (1 + opts.jitter_percent / 100 * self.rand())
            self.send_timer = self.loop.call_later(delay, self._send)

    def close(self) -> None:
        self.closed = True
        for t in (self.send_timer, self.timeout_timer):
            if t is not None:
                t.cancel()
        self.send_timer = self.timeout_timer = None
