"""The router filter: pick the route's cluster and host, proxy the exchange over a pooled
HTTP/1.1 connection, retry and time out as the route says, and count Envoy's stats."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    StreamDecoderFilter,
)
from envoi.http.headers import HeaderMap
from envoi.upstream.cluster import Cluster, Host
from envoi.upstream.lb import LoadBalancerContext
from envoi.upstream.outlier import LOCAL_ORIGIN_CONNECT_FAILED, LOCAL_ORIGIN_TIMEOUT

from envoi_http.codec import Backend
from envoi_http.codec import events as ev
from envoi_http.router import retry_headers
from envoi_http.router.pool import Http1Pool, UpstreamConnection, pool_for
from envoi_http.router.stats import ClusterHttpStats

if TYPE_CHECKING:
    from envoi.context import ClusterManager

    from envoi_http.hcm.stream import ActiveStream
    from envoi_http.router.config import RetryPolicy, Route

H_CONTINUE = FilterHeadersStatus.CONTINUE
D_CONTINUE = FilterDataStatus.CONTINUE
T_CONTINUE = FilterTrailersStatus.CONTINUE
RESET_BEFORE = "upstream connect error or disconnect/reset before headers. reset reason: "
_RESP_DROP = (b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection")
_GATEWAY = frozenset((502, 503, 504))


class RouterConfig:
    __slots__ = ("backend", "cluster_manager", "plans", "respect_expected_rq_timeout",
                 "suppress_envoy_headers")

    def __init__(self, cm: ClusterManager, suppress: bool, backend: Backend,
                 respect_expected_rq_timeout: bool = False) -> None:
        self.cluster_manager = cm
        self.suppress_envoy_headers = suppress
        self.backend = backend
        self.respect_expected_rq_timeout = respect_expected_rq_timeout
        # route -> RoutePlan, worked out on the route's first request (route tables are static)
        self.plans: dict[Route, RoutePlan] = {}


class RoutePlan:
    """What a route's requests need beyond plain forwarding, decided once per route."""

    __slots__ = ("expected_ms", "express", "hstats", "hstats_of", "request_work", "response_work",
                 "stats")

    def __init__(self, route: Route, table: Any) -> None:
        vh = route.vhost
        self.request_work = bool(
            route.request_mutations or vh.request_mutations or table.request_mutations
            or route.prefix_rewrite is not None or route.regex_rewrite is not None
            or route.host_rewrite is not None)
        self.response_work = bool(
            route.response_mutations or vh.response_mutations or table.response_mutations)
        self.stats = route.stats is not None or bool(vh.vclusters)
        self.expected_ms = b"%d" % int(route.timeout * 1000)  # x-envoy-expected-rq-timeout-ms
        # The HCM's express lane (hcm/express.py) may run this route's plain requests.
        self.express = (route.kind == "cluster" and route.retry_policy is None
                        and route.hash_policy is None and route.priority == "DEFAULT"
                        and not vh.include_request_attempt_count
                        and not vh.include_attempt_count_in_response
                        and not (self.request_work or self.response_work or self.stats))
        # The express lane's memo of cluster_http_stats(cluster) for the cluster it last used.
        self.hstats: ClusterHttpStats | None = None
        self.hstats_of: Cluster | None = None


def _redirect_host(h: HeaderMap, scheme: bytes, port: bytes) -> bytes:
    """The request's host for a redirect's ``location``, as Envoy's ``processRequestHost``: its
    port goes when a ``port_redirect`` replaces it, or when the scheme changes and the port is
    the default of the request's ``x-forwarded-proto``; otherwise it stays."""
    host = h.authority
    end = host.rfind(b"]:") + 1 if host[:1] == b"[" else host.rfind(b":")
    if end <= 0:
        return host
    remove = bool(port)
    proto = h.get_bytes(b"x-forwarded-proto") or b""
    if not remove and scheme != proto:
        tail = host[end:]
        remove = (proto == b"https" and tail == b":443") or (proto == b"http" and tail == b":80")
    return host[:end] if remove else host


def cluster_http_stats(cluster: Cluster) -> ClusterHttpStats:
    s: ClusterHttpStats | None = cluster.extra.get("envoi_http_stats")
    if s is None:
        s = cluster.extra["envoi_http_stats"] = ClusterHttpStats(cluster.stats.scope)
    return s


class Router(StreamDecoderFilter):
    # Immutable defaults live on the class: a request sets only what it changes (one Router is
    # made per request, so its __init__ is on the hot path).
    stream: ActiveStream | None = None
    route: Route | None = None
    cluster: Cluster | None = None
    hstats: ClusterHttpStats | None = None
    headers: HeaderMap | None = None
    pool: Http1Pool | None = None
    upstream: UpstreamConnection | None = None
    host: Host | None = None
    request_end = False
    trailers: HeaderMap | None = None
    response_started = False
    attempts = 0
    retries_left = 0
    attempt_start = 0.0
    global_armed = False
    try_timer: asyncio.TimerHandle | None = None
    retry_timer: asyncio.TimerHandle | None = None
    timeout = 0.0
    per_try = 0.0
    done = False
    upstream_read_paused = False
    rq_active = False
    upgrade = False  # an accepted Upgrade request (hcm/upgrade.py)
    tunnel = False  # the upstream answered 101: bytes pass through
    retry_policy: RetryPolicy | None = None  # the route's, with the x-envoy-* headers applied
    count_attempts = False  # vhost include_request_attempt_count
    attempt_count_in_response = False
    retry_exhausted = False  # a retry was wanted but none was left: not a retry success
    retry_reserved = False  # holds one of the cluster's max_retries while a retry is pending
    plan: RoutePlan | None = None
    # decode_* always return CONTINUE and never add data: a stream may call them directly.
    always_continues = True

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.pending_body: list[tuple[bytes, bool]] = []
        self.retry_body: bytearray | None = bytearray()

    # -- decoding ---------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        cb = self.decoder_callbacks
        stream: ActiveStream = cb  # type: ignore[assignment]
        self.stream = stream
        hstats = stream.hcm.stats
        hstats.rq_total.value += 1
        route = stream.route()
        info = stream.stream_info
        if route is None:
            hstats.no_route.value += 1
            info.response_flags.append("NR")
            cb.send_local_reply(404, b"", details="route_not_found")
            return H_CONTINUE
        self.route = route
        table = stream.hcm.config.route_table
        assert table is not None
        if route.kind != "cluster":
            hstats.rq_direct_response.value += 1
            if route.kind == "redirect":  # (rq_redirect counts internal redirects only)
                self._redirect(route, headers)
            else:
                self._direct(route)
            return H_CONTINUE
        name = route.pick_cluster(headers)
        cluster = self.config.cluster_manager.get(name) if name else None
        if cluster is None:
            hstats.no_cluster.value += 1
            info.response_flags.append("NC")
            cb.send_local_reply(route.not_found_code, b"", details="cluster_not_found")
            return H_CONTINUE
        self.cluster = cluster
        stream.cluster_name_ = cluster.name
        info.upstream_cluster = cluster.name
        self.hstats = cluster_http_stats(cluster)
        plan = self.config.plans.get(route)
        if plan is None:
            plan = self.config.plans[route] = RoutePlan(route, table)
        self.plan = plan
        if plan.request_work:
            # Header mutations: route, then virtual host, then route config (least specific
            # wins).
            route.request_mutations.apply(headers, stream)
            route.vhost.request_mutations.apply(headers, stream)
            table.request_mutations.apply(headers, stream)
            self._rewrite(route, headers)
        # Retry policy, timeouts, x-envoy-* request headers (router/retry_headers.py).
        retry_headers.setup(self, route, headers)
        self.headers = headers
        self.request_end = end_stream
        if stream.hcm.upgrade_stream is stream:
            self.upgrade = True
            self.retries_left = 0
        stream.add_downstream_watermark_callbacks(self)
        self._start_attempt()
        if end_stream:
            self._arm_global_timer()
        return H_CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        if self.done:
            return D_CONTINUE
        rb = self.retry_body
        if rb is not None and self.retries_left:
            rb += data
            if len(rb) > self.decoder_callbacks.buffer_limit:
                self.retry_body = None  # too big to replay: no more retries
        up = self.upstream
        if end_stream:
            self.request_end = True
            self._arm_global_timer()
        if up is not None and (self.tunnel or not self.upgrade):
            up.send_data(data, end_stream)
        else:  # no upstream yet, or an upgrade waiting for the 101
            self.pending_body.append((data, end_stream))
            if sum(len(d) for d, _ in self.pending_body) > self.decoder_callbacks.buffer_limit:
                self.decoder_callbacks.on_decoder_filter_above_write_buffer_high_watermark()
        return D_CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        self.request_end = True
        self.trailers = trailers
        self._arm_global_timer()
        if self.upstream is not None:
            self.upstream.send(ev.Trailers(0, trailers.headers))
        return T_CONTINUE

    # -- local answers ----------------------------------------------------------------------

    def _reply(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        stream = self.stream
        assert stream is not None and self.route is not None
        stream.local_complete = True
        hm = HeaderMap(extra, status=status)
        if body:
            hm.add_bytes(b"content-type", b"text/plain")
            hm.add_bytes(b"content-length", b"%d" % len(body))
        self._response_mutations(hm)
        stream.encode_headers(hm, not body)
        if body:
            stream.encode_data(body, True)

    def _direct(self, route: Route) -> None:
        self.stream.stream_info.response_code_details = "direct_response"  # type: ignore[union-attr]
        self._reply(route.direct_status, route.direct_body, [])

    def _redirect(self, route: Route, h: HeaderMap) -> None:
        rd = route.redirect
        assert rd is not None
        # Envoy's :scheme of an HTTP/1.1 request is its (trusted) x-forwarded-proto.
        scheme = rd.scheme or h.get_bytes(b"x-forwarded-proto") or h.scheme or b"http"
        port = b":%d" % rd.port if rd.port else b""
        # require_tls keeps the Host as received, port and all (Envoy's SslRedirector).
        host = rd.host or (h.authority if rd.keep_port else _redirect_host(h, scheme, port))
        path, sep, query = h.path.partition(b"?")
        if rd.path is not None:
            path = rd.path
        elif rd.prefix_rewrite is not None and route.prefix is not None:
            path = rd.prefix_rewrite + path[len(route.prefix):]
        if sep and not rd.strip_query and b"?" not in path:
            path = path + b"?" + query
        self.stream.stream_info.response_code_details = "direct_response"  # type: ignore[union-attr]
        self._reply(rd.response_code, b"", [(b"location", scheme + b"://" + host + port + path)])

    def _rewrite(self, route: Route, h: HeaderMap) -> None:
        if route.prefix_rewrite is not None and route.prefix is not None:
            if not self.config.suppress_envoy_headers:
                h.set_bytes(b"x-envoy-original-path", h.path)
            h.path = route.prefix_rewrite + h.path[len(route.prefix):]
        elif route.regex_rewrite is not None:
            path, sep, query = h.path.partition(b"?")
            h.set_bytes(b"x-envoy-original-path", h.path)
            h.path = route.regex_rewrite(path) + sep + query
        if route.host_rewrite is not None:
            h.set_bytes(b"x-envoy-original-host", h.authority)
            h.authority = route.host_rewrite

    def _response_mutations(self, hm: HeaderMap) -> None:
        plan = self.plan
        if plan is not None and not plan.response_work:
            return
        stream = self.stream
        route = self.route
        assert stream is not None and route is not None
        route.response_mutations.apply(hm, stream)
        route.vhost.response_mutations.apply(hm, stream)
        table = stream.hcm.config.route_table
        if table is not None:
            table.response_mutations.apply(hm, stream)

    # -- attempts ---------------------------------------------------------------------------

    def _start_attempt(self) -> None:
        cluster = self.cluster
        stream = self.stream
        assert cluster is not None and stream is not None
        host = cluster.choose_host(self._lb_context())
        if host is None:
            stream.stream_info.response_flags.append("UH")
            self._fail(503, b"no healthy upstream", "no_healthy_upstream")
            return
        self.host = host
        requests = cluster.resources[self.route.priority].requests  # type: ignore[union-attr]
        if not requests.can_create():  # max_requests (Envoy counts it as a pending overflow)
            cluster.stats.upstream_rq_pending_overflow.value += 1
            self._overflow()
            return
        requests.inc()
        self.attempts += 1
        if self.count_attempts or self.attempts > 1:
            retry_headers.on_attempt(self)
        self.attempt_start = time.monotonic()
        cluster.stats.upstream_rq_active.inc()
        self.rq_active = True
        host.rq_active += 1
        if self.plan is None or self.plan.stats:
            for rs in self._request_stats():
                rs.upstream_rq_total.value += 1
        pool = self.pool = pool_for(cluster, host, self.config.backend,
                                    priority=self.route.priority)  # type: ignore[union-attr]
        stream.stream_info.upstream_host = pool.address_string
        pool.request(self)

    # -- upstream hooks: load-balancer context and outlier reports (keep these small) -------

    def _lb_context(self) -> LoadBalancerContext | None:
        """The route's ``hash_policy`` hash for RING_HASH/MAGLEV clusters (None: no policy)."""
        hp = self.route.hash_policy if self.route is not None else None
        if hp is None or self.headers is None:
            return None
        info = self.stream.stream_info  # type: ignore[union-attr]
        return LoadBalancerContext(hp.compute(self.headers, info.downstream_remote_address))

    def _outlier(self, result: int) -> None:
        """Report a local-origin result (timeout, reset) to the host's outlier detector."""
        host = self.host
        if host is not None and host.outlier is not None:
            host.outlier.put_result(result)

    def _request_stats(self) -> list[Any] | tuple[()]:
        route = self.route
        plan = self.plan
        if route is None or (plan is not None and not plan.stats) or (
                route.stats is None and not route.vhost.vclusters):
            return ()
        out = []
        if route is not None:
            if route.stats is not None:
                out.append(route.stats)
            vh = route.vhost
            if vh.vclusters and self.headers is not None:
                h = self.headers
                for _, m, rs in vh.vclusters:
                    if m(h, b"", b""):
                        out.append(rs)
                        break
                else:
                    if vh.vcluster_other is not None:
                        out.append(vh.vcluster_other)
        return out

    def on_pool_ready(self, conn: UpstreamConnection) -> None:
        if self.done:
            conn.release()
            return
        self.upstream = conn
        # Envoy counts a request when it is attached to a connection (not while it waits).
        self.cluster.stats.upstream_rq_total.value += 1  # type: ignore[union-attr]
        self.host.rq_total += 1  # type: ignore[union-attr]
        h = self.headers
        assert h is not None
        pending = self.pending_body
        body_follows = bool(pending) or not self.request_end or (
            self.attempts > 1 and bool(self.retry_body))
        if self.upgrade:  # the head goes alone; tunnel bytes wait for the 101
            body_follows = pending = False  # type: ignore[assignment]
        conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers,
                       not body_follows)
        if self.attempts > 1 and self.retry_body:
            conn.send(ev.Body(0, bytes(self.retry_body), self.request_end
                              and self.trailers is None))
        elif pending:
            self.pending_body = []
            for data, end in pending:
                conn.send(ev.Body(0, data, end))
            self.decoder_callbacks.on_decoder_filter_below_write_buffer_low_watermark()
        if self.trailers is not None and self.request_end:
            conn.send(ev.Trailers(0, self.trailers.headers))
        if self.per_try:
            self.try_timer = self.stream.hcm.loop.call_later(  # type: ignore[union-attr]
                self.per_try, self._on_per_try_timeout)

    def on_pool_failure(self, reason: str, host: Host, detail: str = "") -> None:
        if self.done:
            return
        self._end_attempt(success=False)
        stream = self.stream
        assert stream is not None
        if reason == "overflow":
            self._overflow()
            return
        stream.stream_info.upstream_host = host.address_string
        if self._maybe_retry(None, reset=True):
            return
        stream.stream_info.response_flags.append("UF")
        self._charge_abort(503)
        if reason == "timeout":
            why, details = "connection timeout", "connection_timeout"
        else:
            why = "remote connection failure"
            # Envoy adds the transport's failure reason: the socket error of the connect.
            details = "remote_connection_failure" + (
                "|delayed_connect_error:_" + detail.replace(" ", "_") if detail else "")
        self._fail(503, (RESET_BEFORE + why).encode(),
                   "upstream_reset_before_response_started{" + details + "}")

    def _charge_abort(self, code: int) -> None:
        """Envoy's ``chargeUpstreamAbort``: a local answer for an upstream that failed before
        the response started counts as that upstream's answer."""
        hs = self.hstats
        if hs is not None:
            hs.answered(code)
        for rs in self._request_stats():
            rs.codes.record(code)

    def _overflow(self) -> None:
        self.stream.stream_info.response_flags.append("UO")  # type: ignore[union-attr]
        self._fail(503, (RESET_BEFORE + "overflow").encode(),
                   "upstream_reset_before_response_started{overflow}",
                   {"x-envoy-overloaded": "true"} if not self.config.suppress_envoy_headers
                   else None)

    def _fail(self, status: int, body: bytes, details: str,
              headers: dict[str, str] | None = None) -> None:
        self.done = True
        self._cancel_timers()
        if self.attempt_count_in_response and self.attempts:
            headers = {**(headers or {}), "x-envoy-attempt-count": str(self.attempts)}
        self.decoder_callbacks.send_local_reply(status, body, headers, details)

    def _end_attempt(self, success: bool) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        if self.rq_active:
            self.rq_active = False
            assert self.cluster is not None and self.host is not None
            self.cluster.stats.upstream_rq_active.dec()
            self.cluster.resources[self.route.priority].requests.dec()  # type: ignore[union-attr]
            self.host.rq_active -= 1
            if not success:
                self.host.rq_error += 1

    def _maybe_retry(self, status: int | None, reset: bool) -> bool:
        route = self.route
        rp = self.retry_policy if route is not None else None
        if rp is None or self.response_started:
            return False
        on = rp.retry_on
        wanted = False
        if status is None:
            wanted = bool(on & {"5xx", "gateway-error", "reset", "connect-failure",
                                "reset-before-request"})
        elif (("5xx" in on and status >= 500) or ("gateway-error" in on and status in _GATEWAY)
              or ("retriable-4xx" in on and status == 409)
              or ("retriable-status-codes" in on and status in rp.retriable_status_codes)):
            wanted = True
        if not wanted:
            return False
        cluster = self.cluster
        assert cluster is not None
        rstats = self._request_stats()
        if self.retries_left <= 0 or (self.retry_body is None):
            cluster.stats.upstream_rq_retry_limit_exceeded.value += 1
            for rs in rstats:
                rs.upstream_rq_retry_limit_exceeded.value += 1
            self.retry_exhausted = True
            return False
        retries = cluster.resources[route.priority].retries  # type: ignore[union-attr]
        if not retries.can_create():  # max_retries / retry_budget
            cluster.stats.upstream_rq_retry_overflow.value += 1
            self.retry_exhausted = True
            return False
        retries.inc()
        self.retry_reserved = True
        self.retries_left -= 1
        cluster.stats.upstream_rq_retry.value += 1
        cluster.stats.upstream_rq_retry_backoff_exponential.value += 1
        for rs in rstats:
            rs.upstream_rq_retry.value += 1
        n = rp.num_retries - self.retries_left
        delay = random.uniform(0, min(rp.max_interval, rp.base_interval * (2 ** n - 1)))
        self.retry_timer = asyncio.get_running_loop().call_later(delay, self._retry)
        return True

    def _release_retry(self) -> None:
        if self.retry_reserved:
            self.retry_reserved = False
            self.cluster.resources[self.route.priority].retries.dec()  # type: ignore[union-attr]

    def _retry(self) -> None:
        self.retry_timer = None
        self._release_retry()
        if not self.done:
            self._start_attempt()

    # -- upstream events --------------------------------------------------------------------

    def on_upstream_events(self, events: list[ev.Event]) -> None:
        stream = self.stream
        if stream is None or not stream.hcm.cork():
            self._on_upstream_events(events)
            return
        try:
            self._on_upstream_events(events)
        finally:
            stream.hcm.uncork()

    def _on_upstream_events(self, events: list[ev.Event]) -> None:
        up = self.upstream
        for e in events:
            if self.done or self.upstream is not up:
                # Over, or this attempt was discarded for a retry (the rest of its read --
                # typically the 503's body -- belongs to no one).
                return
            t = type(e)
            if t is ev.Body:
                end = e.end_stream  # type: ignore[union-attr]
                if end:
                    self._complete()
                self.decoder_callbacks.encode_data(e.data, end)  # type: ignore[union-attr]
            elif t is ev.ResponseHeaders:
                self._on_response_headers(e)  # type: ignore[arg-type]
            elif t is ev.Trailers:
                self._complete()
                self.decoder_callbacks.encode_trailers(HeaderMap(e.headers))  # type: ignore[union-attr]
            elif t is ev.ProtocolError:
                assert self.cluster is not None
                self.cluster.stats.upstream_cx_protocol_error.value += 1
                self._upstream_reset("protocol error")
            elif t is ev.StreamReset or t is ev.ConnectionClosed:
                self._upstream_reset("connection termination")
            elif t is ev.UpgradeRequested and self.upgrade:
                self._open_tunnel(e.data)  # type: ignore[union-attr]

    def _open_tunnel(self, data: bytes) -> None:
        self.tunnel = True
        if data:
            self.decoder_callbacks.encode_data(data, False)
        pending, self.pending_body = self.pending_body, []
        up = self.upstream
        if up is not None:
            for chunk, end in pending:
                up.send(ev.Body(0, chunk, end))
            if pending:
                self.decoder_callbacks.on_decoder_filter_below_write_buffer_low_watermark()

    def _on_response_headers(self, e: ev.ResponseHeaders) -> None:
        status = e.status
        cluster = self.cluster
        hs = self.hstats
        assert cluster is not None and hs is not None
        if self.host is not None and self.host.outlier is not None:
            self.host.outlier.put_http_response_code(status)
        if (status >= 500 or status == 409 or (
                self.route is not None and self.retry_policy is not None
                and status >= 400)) and self._maybe_retry(status, reset=False):
            hs.retry.record(status)
            self._end_attempt(success=False)
            up = self.upstream
            self.upstream = None
            if up is not None:
                if e.end_stream:
                    up.release()  # a complete answer: the connection is reusable, as in Envoy
                else:
                    up.abort()  # the rest of this response is not wanted
            return
        if self.attempts > 1 and not self.retry_exhausted:
            cluster.stats.upstream_rq_retry_success.value += 1
            for rs in self._request_stats():
                rs.upstream_rq_retry_success.value += 1
        self.response_started = True
        elapsed = (time.monotonic() - self.attempt_start) * 1000
        hs.answered(status)
        hs.rq_time.record(elapsed)
        if self.plan is None or self.plan.stats:
            for rs in self._request_stats():
                rs.codes.record(status)
                rs.upstream_rq_time.record(elapsed)
        host = self.host
        if host is not None:
            if status >= 500:
                host.rq_error += 1
            else:
                host.rq_success += 1
        raw = e.headers
        for name, _ in raw:
            if name in _RESP_DROP and status != 101:
                raw = [(k, v) for k, v in raw if k not in _RESP_DROP]
                break
        hm = HeaderMap(raw, status=status)
        self.stream.stream_info.response_code_details = "via_upstream"  # type: ignore[union-attr]
        if not self.config.suppress_envoy_headers and status != 101:
            hm.add_bytes(b"x-envoy-upstream-service-time", b"%d" % int(elapsed))
        if self.attempt_count_in_response:
            hm.add_bytes(b"x-envoy-attempt-count", b"%d" % self.attempts)
        self._response_mutations(hm)
        if e.end_stream:
            self._complete()
        self.decoder_callbacks.encode_headers(hm, e.end_stream)

    def _complete(self) -> None:
        self._end_attempt(success=True)
        self._cancel_timers()
        self.done = True
        up = self.upstream
        self.upstream = None
        if up is not None:
            if self.tunnel:  # the upstream closed the tunnel (EOF): never back to the pool
                up.handler = None
                up.reset_active = True  # the transport closes itself after the EOF
                return
            if self.upstream_read_paused and up.transport is not None:
                up.transport.resume_reading()
            up.release()

    def _upstream_reset(self, reason: str) -> None:
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        self._outlier(LOCAL_ORIGIN_CONNECT_FAILED)
        self._end_attempt(success=False)
        if self.response_started:
            self.done = True
            self._cancel_timers()
            stream = self.stream
            assert stream is not None
            stream.stream_info.response_flags.append("UC")
            stream.hcm.stats.rq_reset_after_downstream_response_started.value += 1
            self.decoder_callbacks.reset_stream()
            return
        if self._maybe_retry(None, reset=True):
            return
        self.stream.stream_info.response_flags.append("UC")  # type: ignore[union-attr]
        self._charge_abort(503)
        self._fail(503, (RESET_BEFORE + reason).encode(),
                   "upstream_reset_before_response_started{" + reason.replace(" ", "_") + "}")

    def on_upstream_closed(self) -> None:
        if not self.done:
            self._upstream_reset("connection termination")

    def on_upstream_above_high_watermark(self) -> None:
        self.decoder_callbacks.on_decoder_filter_above_write_buffer_high_watermark()

    def on_upstream_below_low_watermark(self) -> None:
        self.decoder_callbacks.on_decoder_filter_below_write_buffer_low_watermark()

    # -- downstream flow control ------------------------------------------------------------

    def on_above_write_buffer_high_watermark(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and not self.upstream_read_paused:
            self.upstream_read_paused = True
            up.transport.pause_reading()
            assert self.cluster is not None
            self.cluster.stats.upstream_flow_control_paused_reading_total.value += 1

    def on_below_write_buffer_low_watermark(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and self.upstream_read_paused:
            self.upstream_read_paused = False
            up.transport.resume_reading()
            assert self.cluster is not None
            self.cluster.stats.upstream_flow_control_resumed_reading_total.value += 1

    # -- timeouts --------------------------------------------------------------------------

    def _arm_global_timer(self) -> None:
        # No timer per request: the HCM keeps one deadline per connection (``route_deadline``).
        if self.timeout and not self.global_armed and not self.done:
            self.global_armed = True
            hcm = self.stream.hcm  # type: ignore[union-attr]
            hcm.route_deadline(self, hcm.loop.time() + self.timeout)

    def on_global_timeout(self) -> None:
        self.global_armed = False
        self._timeout(per_try=False)

    def _on_per_try_timeout(self) -> None:
        self.try_timer = None
        cluster = self.cluster
        assert cluster is not None
        cluster.stats.upstream_rq_per_try_timeout.value += 1
        self._outlier(LOCAL_ORIGIN_TIMEOUT)
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        self._end_attempt(success=False)
        if self._maybe_retry(504, reset=False):
            return
        self._timeout(per_try=True)

    def _timeout(self, per_try: bool) -> None:
        if self.done:
            return
        cluster = self.cluster
        stream = self.stream
        assert cluster is not None and stream is not None
        if not per_try:
            cluster.stats.upstream_rq_timeout.value += 1
            if self.host is not None:
                self.host.rq_timeout += 1
            if self.rq_active:
                self._outlier(LOCAL_ORIGIN_TIMEOUT)
        for rs in self._request_stats():
            rs.upstream_rq_timeout.value += 1
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        self._end_attempt(success=False)
        if self.pool is not None:
            self.pool.cancel(self)
        stream.stream_info.response_flags.append("UT")
        if self.response_started:
            self.done = True
            self._cancel_timers()
            self.decoder_callbacks.reset_stream()
            return
        assert self.hstats is not None
        self.hstats.codes.record(504)
        self._fail(504, b"upstream request timeout", "response_timeout")

    def _cancel_timers(self) -> None:
        if self.global_armed:
            self.global_armed = False
            hcm = self.stream.hcm  # type: ignore[union-attr]
            if hcm.deadline_router is self:
                hcm.deadline_router = None
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        self._release_retry()

    def on_destroy(self) -> None:
        if self.done and self.upstream is None and not self.rq_active and \
                not self.global_armed and self.try_timer is None and self.retry_timer is None:
            return  # completed: nothing left to release
        self._cancel_timers()
        if self.pool is not None and self.upstream is None and not self.done:
            self.pool.cancel(self)
        up = self.upstream
        self.upstream = None
        if up is not None:
            # The downstream went away mid-exchange: the connection cannot be reused.
            up.abort()
        self._end_attempt(success=False)
        self.done = True
