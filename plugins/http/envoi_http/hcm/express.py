"""The express lane: the common exchange of a router-only connection manager, without the
filter-chain machinery.

When an HCM's ``http_filters`` is the router alone and the connection has no access log, most
requests are a bodiless request routed to a cluster, with no retry policy, no header mutations
and no route stats, answered by a pooled upstream connection. For those, the general path
builds an ``ActiveStream`` with its stream info, a ``Router`` and its ``HeaderMap`` for the
response, and walks the decoder and encoder paths one call per step. ``Express`` does the same
work, with the same stats, headers and bytes on the wire, in a handful of calls on one object
that lives as long as the connection.

It never has to be right about anything unusual, because it hands over: whenever something
other than the plain case happens while an exchange is in flight (an interim response, an upstream
reset or protocol error, a pool failure, the route timeout, a watermark, the connection closing,
the HCM's idle timer), :meth:`Express.promote` builds the ``ActiveStream`` and the ``Router``
the general path would have built by then, in the same state, and gives them the event. From
there the general path runs the exchange to its end. A request that does not qualify never
enters: :meth:`Express.start` decides before it changes anything.

``ENVOI_HTTP_EXPRESS=0`` in the environment turns the lane off (every request takes the general
path), which is how the tests compare the two.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from envoi.http.headers import HeaderMap

from envoi_http.codec import events as ev
from envoi_http.hcm.stream import ActiveStream
from envoi_http.router.filter import RoutePlan, RouterConfig, cluster_http_stats
from envoi_http.router.pool import pool_for
from envoi_http.router.retry_headers import _CONTROL, EXPECTED

if TYPE_CHECKING:
    from envoi.upstream.cluster import Host

    from envoi_http.hcm.connection_manager import ConnectionManager
    from envoi_http.router.filter import Router
    from envoi_http.router.pool import Http1Pool, UpstreamConnection

# What the HCM drops from a proxied response (it adds its own date and server); a superset of
# what the router drops, so one pass does both.
_RESP_DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                        b"upgrade", b"date", b"server"))
_SERVICE_TIME = b"x-envoy-upstream-service-time"
log = logging.getLogger("envoi.http")
_monotonic = time.monotonic
ResponseHeaders = ev.ResponseHeaders
Body = ev.Body


def enabled() -> bool:
    return os.environ.get("ENVOI_HTTP_EXPRESS", "1") != "0"


class Express:
    """One per connection of a router-only HCM; at most one exchange in flight (HTTP/1.1)."""

    __slots__ = (
        "attempt_start",
        "busy",
        "bytes_sent",
        "cluster",
        "hcm",
        "head",
        "headers",
        "host",
        "hstats",
        "last_activity",
        "plan",
        "pool",
        "pools",
        "rc",
        "response_raw",
        "route",
        "server_name",
        "sid",
        "started",
        "status",
        "suppress",
        "trace",
        "upstream",
    )

    def __init__(self, hcm: ConnectionManager, rc: RouterConfig) -> None:
        self.hcm = hcm
        self.rc = rc
        self.suppress = rc.suppress_envoy_headers
        self.server_name = hcm.config.server_name
        self.busy = False
        # The pool of each host this connection's lane used (pool_for, without its lookups;
        # pools are never replaced, a host of a new cluster is a new key).
        self.pools: dict[Host, Http1Pool] = {}
        # Asked once per connection: a disabled debug log costs one attribute test per request.
        self.trace = log.isEnabledFor(logging.DEBUG)
        self._clear()

    def _clear(self) -> None:
        self.headers: HeaderMap | None = None
        self.route: Any = None
        self.cluster: Any = None
        self.hstats: Any = None
        self.plan: RoutePlan | None = None
        self.host: Host | None = None
        self.pool: Http1Pool | None = None
        self.upstream: UpstreamConnection | None = None
        self.response_raw: list[tuple[bytes, bytes]] | None = None
        self.head = False
        self.sid = 0
        self.status = 0
        self.bytes_sent = 0
        self.started = self.attempt_start = self.last_activity = 0.0

    # -- the request --------------------------------------------------------------------------

    def start(self, sid: int, h: HeaderMap, plain: bool) -> bool:
        """Take a complete bodiless request, or return False having changed nothing. ``plain``:
        the request carries none of the internal-only ``x-envoy-*`` headers (the HCM saw)."""
        hcm = self.hcm
        table = hcm.config.route_table
        if table is None:
            return False
        route = table.route(h)
        if route is None:
            return False
        rc = self.rc
        plan = rc.plans.get(route)
        if plan is None:
            plan = rc.plans[route] = RoutePlan(route, table)
        if not plan.express:
            return False
        name = route.pick_cluster(h)
        cluster = rc.cluster_manager.clusters.get(name) if name else None
        if cluster is None:
            return False
        lb = cluster.lb
        if lb is None or not lb.healthy:
            return False
        if not plain:
            for k, _ in h.headers:  # x-envoy-* retry and timeout headers: the router's work
                if k in _CONTROL:
                    return False
        cst = cluster.stats
        active = cst.upstream_rq_active
        requests = cluster.resources["DEFAULT"].requests  # max_requests circuit breaker
        if hcm.conn.above_high_watermark or not requests.can_create():
            return False
        # Committed: from here on this is the router's decode_headers and first attempt.
        if self.trace:
            log.debug("express lane: stream %d %s %s", sid, h.method.decode("latin-1"),
                      h.path.decode("latin-1"))
        self.busy = True
        self.sid = sid
        self.headers = h
        self.head = h.method == b"HEAD"
        self.route = route
        self.cluster = cluster
        self.plan = plan
        hstats = plan.hstats
        if plan.hstats_of is not cluster:  # (a cluster replaced by CDS gets its own)
            hstats = plan.hstats = cluster_http_stats(cluster)
            plan.hstats_of = cluster
        self.hstats = hstats
        hcm.stats.rq_total.value += 1
        timeout = route.timeout
        if timeout and not self.suppress:
            h.headers.append((EXPECTED, plan.expected_ms))
        host = self.host = lb.choose_host(None)  # lb.healthy is not empty: never None
        # The HCM stamped last_activity when it read this request (or started the next cycle).
        self.started = self.attempt_start = self.last_activity = hcm.last_activity
        active.inc()
        requests.inc()
        host.rq_active += 1
        pools = self.pools
        pool = pools.get(host)
        if pool is None:
            pool = pools[host] = pool_for(cluster, host, rc.backend)
        self.pool = pool
        if timeout:
            when = hcm.loop.time() + timeout
            if hcm.deadline_timer is not None and hcm.deadline_when <= when:
                hcm.deadline_router = self  # route_deadline's usual case: the timer is armed
                hcm.deadline = when
            else:
                hcm.route_deadline(self, when)
        idle = pool.idle
        while idle:  # Http1Pool.request's first step, inline: an idle connection
            conn = idle.pop()
            if not conn.closed:
                conn.handler = self
                self.upstream = conn
                cst.upstream_rq_total.value += 1  # counted once attached, as Envoy does
                host.rq_total += 1
                conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers,
                               True)
                return True
        pool.request(self)  # connect, queue, or overflow
        return True

    # -- PoolCallbacks ------------------------------------------------------------------------

    def on_pool_ready(self, conn: UpstreamConnection) -> None:
        if not self.busy:
            conn.release()
            return
        self.upstream = conn
        self.cluster.stats.upstream_rq_total.value += 1
        host = self.host
        assert host is not None
        host.rq_total += 1
        h = self.headers
        assert h is not None
        conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers, True)

    def on_pool_failure(self, reason: str, host: Host, detail: str = "") -> None:
        self.promote("pool failure").on_pool_failure(reason, host, detail)

    def on_upstream_closed(self) -> None:
        self.promote("upstream closed").on_upstream_closed()

    def on_upstream_above_high_watermark(self) -> None:
        self.promote("upstream watermark").on_upstream_above_high_watermark()

    def on_upstream_below_low_watermark(self) -> None:
        self.promote("upstream watermark").on_upstream_below_low_watermark()

    def on_global_timeout(self) -> None:  # the HCM's route deadline
        self.promote("route timeout").on_global_timeout()

    def on_upstream_events(self, events: list[ev.Event]) -> None:
        hcm = self.hcm
        if len(events) == 2 and self.response_raw is None:
            # The usual small response: the head and its whole body in one read.
            e, b = events
            if type(e) is ResponseHeaders and type(b) is Body and b.end_stream and \
                    e.status != 101 and not e.end_stream:
                self._whole_response(e, b.data)
                return
        corked = hcm.cork()
        sid = self.sid
        try:
            for e in events:
                if not self.busy or self.sid != sid:
                    # This exchange is over (the router ignores what follows, too); the lane
                    # may already run the next pipelined request, which these are not for.
                    return
                t = type(e)
                if t is Body and self.response_raw is not None:
                    self._data(e.data, e.end_stream)  # type: ignore[union-attr]
                elif t is ResponseHeaders and self.response_raw is None and \
                        e.status != 101:  # type: ignore[union-attr]
                    self._response_head(e)  # type: ignore[arg-type]
                else:
                    rest = events[next(i for i, x in enumerate(events) if x is e):]
                    self.promote(t.__name__)._on_upstream_events(rest)
                    return
        finally:
            if corked:
                hcm.uncork()

    # -- the response -------------------------------------------------------------------------

    def _whole_response(self, e: ev.ResponseHeaders, body: bytes) -> None:
        """``_response_head`` then ``_data(body, True)``, written in one piece."""
        hcm = self.hcm
        codec = hcm.codec
        raw = self._head_fields(e)
        self._upstream_done()
        if not self.head:
            self.bytes_sent = len(body)
        out = codec.send_response_head(self.sid, self.status, raw, False)
        tail = codec.send_data(self.sid, body, True)
        hcm._write(out + tail if tail else out)
        self._done()

    def _response_head(self, e: ev.ResponseHeaders) -> None:
        raw = self._head_fields(e)
        hcm = self.hcm
        end = e.end_stream
        if end:
            self._upstream_done()
        hcm._write(hcm.codec.send_response_head(self.sid, self.status, raw, end))
        if end:
            self._done()

    def _head_fields(self, e: ev.ResponseHeaders) -> list[tuple[bytes, bytes]]:
        """The upstream response head's stats and the header fields to send downstream."""
        status = self.status = e.status
        hs = self.hstats
        now = self.last_activity = _monotonic()
        elapsed = (now - self.attempt_start) * 1000
        hs.answered(status)
        hs.rq_time.record(elapsed)
        host = self.host
        assert host is not None
        if status >= 500:
            host.rq_error += 1
        else:
            host.rq_success += 1
        if host.outlier is not None:  # outlier detection hears every response
            host.outlier.put_http_response_code(status)
        raw = [kv for kv in e.headers if kv[0] not in _RESP_DROP]
        if not self.suppress:
            raw.append((_SERVICE_TIME, b"%d" % int(elapsed)))
        self.response_raw = raw  # for a promotion (the HCM's date and server included)
        hcm = self.hcm
        raw.append((b"date", hcm.date()))
        raw.append((b"server", self.server_name))
        if hcm.closing or hcm.drain_close or hcm.conn.closed:
            raw.append((b"connection", b"close"))
        return raw

    def _data(self, data: bytes, end: bool) -> None:
        if end:
            self._upstream_done()
        if not self.head:
            self.bytes_sent += len(data)
        hcm = self.hcm
        self.last_activity = _monotonic()
        out = hcm.codec.send_data(self.sid, data, end)
        if out:
            hcm._write(out)
        if end:
            self._done()

    def _upstream_done(self) -> None:
        """The router's ``_complete``: the attempt ended well; the connection goes back."""
        cluster = self.cluster
        host = self.host
        assert host is not None
        cluster.stats.upstream_rq_active.value -= 1  # (inc()ed in start: already marked used)
        cluster.resources["DEFAULT"].requests.dec()
        host.rq_active -= 1
        hcm = self.hcm
        if hcm.deadline_router is self:
            hcm.deadline_router = None
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.release()

    def _done(self) -> None:
        """The HCM's ``_response_done`` and ``_finish`` for this exchange."""
        self.busy = False
        hcm = self.hcm
        st = hcm.stats
        cls = self.status // 100
        if 1 <= cls <= 5:
            st.by_class[cls].value += 1
            hcm.listener_stats.by_class[cls].value += 1
        st.downstream_rq_completed.value += 1
        hcm.listener_stats.downstream_rq_completed.value += 1
        st.downstream_rq_active.value -= 1  # (the HCM inc()ed it: already marked used)
        now = self.last_activity  # stamped by the response bytes just handled
        st.downstream_rq_time.record((now - self.started) * 1000)
        # The next start() sets every field it reads; only the response state is reset here.
        self.response_raw = None
        self.bytes_sent = 0
        hcm.next_cycle(True, now)

    # -- handing over to the general path ---------------------------------------------------------

    def promote(self, why: str) -> Router:
        """Build the stream and router the general path would have by now, in the same state,
        and leave the exchange to them."""
        assert self.busy
        if self.trace:
            log.debug("express lane: stream %d promoted to the general path: %s", self.sid, why)
        self.busy = False
        hcm = self.hcm
        h = self.headers
        assert h is not None
        s = ActiveStream(hcm, self.sid, h)
        info = s.stream_info
        now = _monotonic()
        info.start_time -= now - self.started
        info.start_monotonic = s.start = self.started
        s.last_activity = self.last_activity
        s.request_complete = True
        hcm.stream = s
        for factory in hcm.config.filter_factories:
            factory(s)
        router: Router = s.filters[0]
        route = self.route
        s._route = route
        s._route_resolved = True
        info.route_name = route.name
        info.virtual_host_name = route.vhost.name
        cluster = self.cluster
        s.cluster_name_ = info.upstream_cluster = cluster.name
        pool = self.pool
        assert pool is not None
        info.upstream_host = pool.address_string
        router.stream = s
        router.route = route
        router.cluster = cluster
        router.hstats = self.hstats
        router.plan = self.plan
        router.retries_left = 0
        router.timeout = route.timeout
        router.headers = h
        router.request_end = True
        router.attempts = 1
        router.attempt_start = self.attempt_start
        router.host = self.host
        router.pool = pool
        router.rq_active = True
        s.watermark_cbs.append(router)
        if hcm.deadline_router is self:
            hcm.deadline_router = router
            router.global_armed = True
        up = self.upstream
        if up is not None:
            up.handler = router
            router.upstream = up
        elif self in pool.pending:
            pool.pending[pool.pending.index(self)] = router
        if self.response_raw is not None:
            router.response_started = s.response_started = True
            info.response_code = self.status
            info.response_code_details = "via_upstream"
            s.response_headers = HeaderMap(self.response_raw, status=self.status)
            info.bytes_sent = self.bytes_sent
        self._clear()
        return router
