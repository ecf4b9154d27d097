"""``auto_config``: HTTP/2 or HTTP/1.1 to each host, as the host chooses by TLS ALPN.

The first request to a host opens one TLS connection offering ``h2`` and ``http/1.1`` (or the
cluster's own ALPN list) only to learn which one the host picks; that connection is closed and
the choice kept for the host, whose requests then go to its HTTP/2 or its HTTP/1.1 pool (which
offer only the chosen protocol). Requests that arrive meanwhile wait for the answer (counted as
pending, within ``max_pending_requests``). A failed probe fails the waiting requests as a failed
connection would and is tried again by the next request.

Envoy keeps the first connection and speaks the negotiated protocol on it; envoi spends one TLS
connection per host to learn it (visible in ``upstream_cx_total``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from envoi.tls.info import negotiated_protocol
from envoi.upstream.cluster import Cluster, Host, UpstreamConnectError

from envoi_http.codec import Backend
from envoi_http.codec.h2_options import Http2Options
from envoi_http.router.h2_pool import H2Pool, h2_pool_for
from envoi_http.router.pool import Http1Pool, pool_for

_KEY = "envoi_auto_alpn"  # cluster.extra: host -> "h2" | "http/1.1"


class _Probe(asyncio.Protocol):
    """A connection opened only for its TLS handshake (closed at once, accounted as closed)."""

    def __init__(self, pool: AutoPool) -> None:
        self.pool = pool
        self.started = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        pool = self.pool
        pool.cluster.connection_closed(pool.host, self.started, local=True,
                                       priority=pool.priority)


class AutoPool:
    def __init__(self, cluster: Cluster, host: Host, backend: Backend, options: Http2Options,
                 max_requests: int | None, priority: str = "DEFAULT") -> None:
        self.cluster = cluster
        self.host = host
        self.address_string = host.address_string
        self.backend = backend
        self.options = options
        self.max_requests = max_requests
        self.priority = priority
        self.resources = cluster.resources[priority]
        self.waiting: deque[Any] = deque()
        self.probing = False

    @property
    def chosen(self) -> str | None:
        known: dict[Host, str] = self.cluster.extra.setdefault(_KEY, {})
        return known.get(self.host)

    @property
    def protocol(self) -> str:
        """What the host speaks, once known (an egress span's http.protocol)."""
        return "HTTP/2" if self.chosen == "h2" else "HTTP/1.1"

    def pool(self, alpn: str) -> Http1Pool | H2Pool:
        if alpn == "h2":
            return h2_pool_for(self.cluster, self.host, self.options, self.max_requests,
                               self.priority)
        return pool_for(self.cluster, self.host, self.backend, self.max_requests, self.priority)

    def take_idle(self, cb: Any) -> Any:
        """The chosen protocol's pool's idle connection (stream); None before the probe."""
        chosen = self.chosen
        return None if chosen is None else self.pool(chosen).take_idle(cb)

    def request(self, cb: Any) -> None:
        chosen = self.chosen
        if chosen is not None:
            self.pool(chosen).request(cb)
            return
        st = self.cluster.stats
        rm = self.resources
        if not rm.pending_requests.can_create():
            st.upstream_rq_pending_overflow.value += 1
            cb.on_pool_failure("overflow", self.host)
            return
        st.upstream_rq_pending_total.value += 1
        st.upstream_rq_pending_active.inc()
        rm.pending_requests.inc()
        self.waiting.append(cb)
        if not self.probing:
            self.probing = True
            asyncio.get_running_loop().create_task(self._probe())

    def _unpend(self) -> None:
        self.cluster.stats.upstream_rq_pending_active.dec()
        self.resources.pending_requests.dec()

    def cancel(self, cb: Any) -> None:
        chosen = self.chosen
        if chosen is not None:
            self.pool(chosen).cancel(cb)
            return
        try:
            self.waiting.remove(cb)
        except ValueError:
            return
        self._unpend()
        self.cluster.stats.upstream_rq_cancelled.value += 1

    async def _probe(self) -> None:
        try:
            transport, _ = await self.cluster.connect(
                self.host, lambda: _Probe(self), priority=self.priority,
                alpn_fallback=("h2", "http/1.1"))
        except UpstreamConnectError as exc:
            self.probing = False
            reason = "timeout" if exc.timeout else "connection_failure"
            waiting, self.waiting = self.waiting, deque()
            for cb in waiting:
                self._unpend()
                self.cluster.stats.upstream_rq_pending_failure_eject.value += 1
                cb.on_pool_failure(reason, self.host, exc.reason)
            return
        alpn = negotiated_protocol(transport) or "http/1.1"
        transport.close()
        self.cluster.extra.setdefault(_KEY, {})[self.host] = "h2" if alpn == "h2" else "http/1.1"
        self.probing = False
        waiting, self.waiting = self.waiting, deque()
        pool = self.pool(alpn)
        for cb in waiting:
            self._unpend()
            pool.request(cb)


def auto_pool_for(cluster: Cluster, host: Host, backend: Backend, options: Http2Options,
                  max_requests: int | None = None, priority: str = "DEFAULT") -> AutoPool:
    pools: dict[Any, AutoPool] = cluster.extra.setdefault("envoi_auto_pools", {})
    key = host if priority == "DEFAULT" else (host, priority)
    p = pools.get(key)
    if p is None:
        p = pools[key] = AutoPool(cluster, host, backend, options, max_requests, priority)
    return p
