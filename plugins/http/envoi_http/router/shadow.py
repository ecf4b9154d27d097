"""The shadow requests of ``request_mirror_policies`` (``router/mirror.py`` reads the
policies): a copy of the request to the shadow cluster, fire and forget."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from envoi.http.headers import HeaderMap
from envoi.stats import Histogram

from envoi_http.codec import events as ev
from envoi_http.hcm.xff import local_address
from envoi_http.router.mirror import MirrorPolicy
from envoi_http.router.plan import cluster_http_stats
from envoi_http.router.pools import select_pool
from envoi_http.router.stats import CodeStats

if TYPE_CHECKING:
    from envoi.upstream.cluster import Cluster, Host

    from envoi_http.router.auto_pool import AutoPool
    from envoi_http.router.h2_pool import H2Pool
    from envoi_http.router.plan import RouterConfig
    from envoi_http.router.pool import Http1Pool, UpstreamHandle

_XFF = b"x-forwarded-for"
_INTERNAL = b"x-envoy-internal"


def shadow_host(host: bytes) -> bytes:
    """``svc`` -> ``svc-shadow``, ``svc:8080`` -> ``svc-shadow:8080`` (an IPv6 literal keeps
    its brackets: ``[::1]-shadow:80``)."""
    if host.startswith(b"["):
        end = host.find(b"]")
        if end > 0:
            return host[: end + 1] + b"-shadow" + host[end + 1 :]
    name, sep, port = host.partition(b":")
    return name + b"-shadow" + sep + port


def start_shadows(policies: tuple[MirrorPolicy, ...], headers: HeaderMap, end_stream: bool,
                  config: RouterConfig, timeout: float, buffer_limit: int,
                  http2: bool = False) -> list[Shadow] | None:
    """The shadows of one request (None when no policy sends one)."""
    out: list[Shadow] | None = None
    for p in policies:
        name = p.cluster_for(headers)
        cluster = config.cluster_manager.clusters.get(name) if name else None
        if cluster is None or not p.sampled():
            continue
        h = headers.copy()
        if p.suffix and h.authority:
            h.authority = shadow_host(h.authority)
        h.set_bytes(_INTERNAL, b"true")  # (before the XFF, as Envoy's async client)
        existing = h.get_bytes(_XFF)
        if existing:
            h.set_bytes(_XFF, existing + b"," + local_address())
        else:
            h.headers.append((_XFF, local_address()))
        p.async_rq_total.value += 1
        shadow = Shadow(cluster, h, end_stream, config, timeout, buffer_limit, http2)
        if out is None:
            out = []
        out.append(shadow)
        shadow.start()
    return out


class Shadow:
    """One shadow request: the pool's callbacks; the response is counted and dropped."""

    def __init__(self, cluster: Cluster, headers: HeaderMap, end_stream: bool,
                 config: RouterConfig, timeout: float, buffer_limit: int,
                 http2: bool = False) -> None:
        self.cluster = cluster
        self.http2 = http2  # the request came over HTTP/2 (a USE_DOWNSTREAM_PROTOCOL cluster)
        self.headers = headers
        self.request_end = end_stream
        self.config = config
        self.timeout = timeout
        self.buffer_limit = buffer_limit
        self.host: Host | None = None
        self.pool: Http1Pool | H2Pool | AutoPool | None = None
        self.upstream: UpstreamHandle | None = None
        self.pending: list[ev.Event] = []
        self.pending_bytes = 0
        self.active = False  # counted in upstream_rq_active / the requests breaker
        self.done = False
        self.timer: asyncio.TimerHandle | None = None
        self.sent = 0.0  # when the head left

    def start(self) -> None:
        cluster = self.cluster
        host = cluster.choose_host(None)
        if host is None:
            self.done = True
            return
        requests = cluster.resources["DEFAULT"].requests
        if not requests.can_create():
            cluster.stats.upstream_rq_pending_overflow.value += 1
            self.done = True
            return
        requests.inc()
        self.active = True
        self.host = host
        cluster.stats.upstream_rq_active.inc()
        host.rq_active += 1
        if self.timeout:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)
        pool = self.pool = select_pool(cluster, host, self.config.backend, self.http2)
        conn = pool.take_idle(self)
        if conn is None:
            pool.request(self)
        else:
            self.on_pool_ready(conn)

    # -- the request body, as the main request's arrives -----------------------------------

    def send_data(self, data: bytes, end_stream: bool) -> None:
        self._send(ev.Body(0, data, end_stream), len(data), end_stream)

    def send_trailers(self, trailers: HeaderMap) -> None:
        self._send(ev.Trailers(0, list(trailers.headers)), 0, True)

    def _send(self, event: ev.Event, size: int, end: bool) -> None:
        if self.done:
            return
        if end:
            self.request_end = True
        up = self.upstream
        if up is not None:
            up.send(event)
            return
        self.pending.append(event)
        self.pending_bytes += size
        if self.pending_bytes > self.buffer_limit:
            self.abort()  # the shadow's upstream is slower than the request: it is dropped

    def abort(self) -> None:
        """The main request was reset before its end, or the shadow overflowed: stop it."""
        if self.done:
            return
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        elif self.pool is not None:
            self.pool.cancel(self)
        self._finish(False)

    # -- pool callbacks ---------------------------------------------------------------------

    def on_pool_ready(self, conn: UpstreamHandle) -> None:
        if self.done:
            conn.release()
            return
        self.upstream = conn
        self.sent = time.monotonic()
        self.cluster.stats.upstream_rq_total.value += 1
        assert self.host is not None
        self.host.rq_total += 1
        h = self.headers
        pending, self.pending = self.pending, []
        conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers,
                       self.request_end and not pending)
        for e in pending:
            conn.send(e)

    def on_pool_failure(self, reason: str, host: Host, detail: str = "") -> None:
        if not self.done:
            self._answered(503)
            self._finish(False)

    def on_upstream_events(self, events: list[ev.Event]) -> None:
        for e in events:
            if self.done:
                return
            t = type(e)
            if t is ev.ResponseHeaders:
                self._answered(e.status, timed=True)  # type: ignore[union-attr]
                if e.end_stream:  # type: ignore[union-attr]
                    self._complete()
            elif (t is ev.Body and e.end_stream) or t is ev.Trailers:  # type: ignore[union-attr]
                self._complete()
            elif t is ev.ProtocolError:
                self.cluster.stats.upstream_cx_protocol_error.value += 1
                self.abort()
            elif t is ev.StreamReset or t is ev.ConnectionClosed:
                self.abort()

    def on_upstream_closed(self) -> None:
        self.upstream = None
        if not self.done:
            self._finish(False)

    def on_upstream_above_high_watermark(self) -> None:
        pass  # the shadow holds nothing back: what it cannot send waits in the transport

    def on_upstream_below_low_watermark(self) -> None:
        pass

    # -- ending -----------------------------------------------------------------------------

    def _answered(self, status: int, timed: bool = False) -> None:
        hs = cluster_http_stats(self.cluster)
        hs.codes.record(status)
        extra = self.cluster.extra
        internal: tuple[CodeStats, Histogram] | None = extra.get("envoi_http_internal_stats")
        if internal is None:
            scope = self.cluster.stats.scope
            internal = extra["envoi_http_internal_stats"] = (
                CodeStats(scope, "internal."), scope.histogram("internal.upstream_rq_time"))
        internal[0].record(status)
        if timed:
            elapsed = (time.monotonic() - self.sent) * 1000
            hs.rq_time.record(elapsed)
            internal[1].record(elapsed)

    def _timed_out(self) -> None:
        self.timer = None
        if not self.done:
            self.cluster.stats.upstream_rq_timeout.value += 1
            self.abort()

    def _complete(self) -> None:
        up = self.upstream
        self.upstream = None
        self._finish(True)
        if up is not None:
            if self.request_end:
                up.release()
            else:  # answered before the request was all sent: the connection is not reusable
                up.abort()

    def _finish(self, success: bool) -> None:
        self.done = True
        self.pending = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active:
            self.active = False
            self.cluster.stats.upstream_rq_active.value -= 1
            self.cluster.resources["DEFAULT"].requests.dec()
            if self.host is not None:
                self.host.rq_active -= 1
                if not success:
                    self.host.rq_error += 1
