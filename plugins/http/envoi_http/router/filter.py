"""The router filter: the terminal HTTP filter. It picks the route's cluster and host, proxies the
exchange over a pooled HTTP/1.1 connection, retries and times out as the route says, and counts
Envoy's stats.

It sees its stream only through the filter-callbacks contract (``envoi.http.filter``): the route,
the stream info, deadlines, the accepted upgrade, local replies, resets, watermarks and the
encoder chain. It never knows which connection manager or protocol serves the stream.

One exchange, one state at a time (``Router.state``)::

    IDLE --decode_headers--> WAITING --pool ready--> UPSTREAM --response head--> RESPONDING
      |                        |  ^                     |                          |
      | local answer           |  | retry               | 101                      | last byte
      v                        v  |                     v                          v
    DONE <--fail/timeout--- BETWEEN <--reset/5xx--- (any attempt)        TUNNEL --EOF--> DONE

``WAITING``..``TUNNEL`` are the states in which an attempt is active (counted in
``upstream_rq_active``); ``BETWEEN`` is after an attempt ended and before the next one (or the
failure answer); ``DONE`` is final.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from envoi.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    StreamDecoderFilter,
)
from envoi.http.grpc import MAXIMUM_KNOWN, parse_grpc_status
from envoi.http.headers import HeaderMap
from envoi.upstream.cluster import Cluster, Host
from envoi.upstream.lb import LoadBalancerContext
from envoi.upstream.outlier import LOCAL_ORIGIN_CONNECT_FAILED, LOCAL_ORIGIN_TIMEOUT

from envoi_http.codec import events as ev
from envoi_http.router import retry_headers, tracing
from envoi_http.router.direct import redirect_location, rewrite
from envoi_http.router.plan import RoutePlan, RouterConfig
from envoi_http.router.pools import select_pool
from envoi_http.router.retry_headers import CONTROL, EXPECTED
from envoi_http.router.shadow import Shadow, start_shadows

if TYPE_CHECKING:
    from envoi.tracing.span import Span

    from envoi_http.hcm.tracing import StreamTrace
    from envoi_http.router.auto_pool import AutoPool
    from envoi_http.router.config import RetryPolicy, Route
    from envoi_http.router.h2_pool import H2Pool
    from envoi_http.router.pool import Http1Pool, UpstreamHandle
    from envoi_http.router.stats import ClusterHttpStats

H_CONTINUE = FilterHeadersStatus.CONTINUE
D_CONTINUE = FilterDataStatus.CONTINUE
T_CONTINUE = FilterTrailersStatus.CONTINUE
RESET_BEFORE = "upstream connect error or disconnect/reset before headers. reset reason: "
_RESET_RETRIED = ("upstream connect error or disconnect/reset before headers. retried and the "
                  "latest reset reason: ")
_GATEWAY = frozenset((502, 503, 504))
# The upstream reset the stream (codec StreamReset reasons): Envoy's reset reason text and the
# UR response flag (Filter::streamResetReasonToResponseFlag); any other reason is the
# connection's end (UC, "connection termination").
_REMOTE_RESETS = {"remote_reset": "remote reset",
                  "remote_refused_stream_reset": "remote refused stream reset",
                  "connect_error": "remote error with CONNECT request"}
# retry_on conditions that retry a stream the router reset itself (Envoy's LocalReset)
_RESET_RETRIES = frozenset(("5xx", "gateway-error", "reset"))
_SERVICE_TIME = b"x-envoy-upstream-service-time"
_monotonic = time.monotonic
ResponseHeaders = ev.ResponseHeaders
Body = ev.Body

IDLE, WAITING, UPSTREAM, RESPONDING, TUNNEL, BETWEEN, DONE = range(7)


def _grpc_status(raw: list[tuple[bytes, bytes]]) -> int | None:
    """The ``grpc-status`` of response headers (Envoy's ``getGrpcStatus``: -1 when not a known
    code, None when absent)."""
    for k, v in raw:
        if k == b"grpc-status":
            code = parse_grpc_status(v)
            return code if code is not None and code <= MAXIMUM_KNOWN else -1
    return None


def _body(events: list[ev.Event], i: int, first: ev.Body) -> tuple[bytes, bool, int]:
    """``first`` and the body pieces right after it (from ``events[i]`` on) as one piece:
    (data, end_stream, index of the next event)."""
    if first.end_stream or i >= len(events) or type(events[i]) is not Body:
        return first.data, first.end_stream, i
    parts = [first.data]
    end = False
    while i < len(events) and not end:
        e = events[i]
        if type(e) is not Body:
            break
        parts.append(e.data)
        end = e.end_stream
        i += 1
    return b"".join(parts), end, i

__all__ = ["RoutePlan", "Router", "RouterConfig"]


class Router(StreamDecoderFilter):
    # One Router is made per request. What every request reads is a slot set in __init__ (a
    # slot read is the cheapest; a class-level default read through an instance is not
    # specialised, ~3x as slow); what only retries, bodies and upgrades read keeps a
    # class-level default until a request sets it.
    __slots__ = (
        "attempt_start", "attempts", "cluster", "config", "count_attempts", "global_armed",
        "headers", "host", "hstats", "plan", "pool", "request_end", "response_started",
        "route", "simple", "state", "timeout", "upstream", "upstream_read_paused",
    )
    trailers: HeaderMap | None = None
    upgrade = False  # the connection manager accepted an Upgrade for this stream
    # timeouts and retries (router/retry_headers.py sets them from the route and the request)
    per_try = 0.0
    retry_policy: RetryPolicy | None = None
    retries_left = 0
    retry_exhausted = False  # a retry was wanted but none was left: not a retry success
    # the cluster's common_http_protocol_options.max_stream_duration: each attempt's limit
    upstream_duration = 0.0
    grpc_timeout = False  # the timeout is max_grpc_timeout's: grpc-timeout goes with it
    retry_reserved = False  # holds one of the cluster's max_retries while a retry is pending
    attempt_count_in_response = False
    watching = False  # registered for the downstream's watermarks (_watch_downstream)
    pending_body: list[tuple[bytes, bool]] | None = None  # request body with no upstream yet
    # The request body as sent so far, to replay on a retry (made on its first byte); None once
    # it is too big to keep.
    retry_body: bytearray | bytes | None = b""
    shadows: list[Shadow] | None = None  # request_mirror_policies (router/shadow.py)
    # decode_* always return CONTINUE and never add data: a stream may call them directly.
    always_continues = True
    # tracing (router/tracing.py): the stream's trace, the attempt's egress span and the
    # upstream's status for it
    trace: StreamTrace | None = None
    trace_child: Span | None = None
    trace_status = 0
    trace_flags_at = 0

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.state = IDLE
        self.route: Route | None = None
        self.plan: RoutePlan | None = None
        self.cluster: Cluster | None = None
        self.hstats: ClusterHttpStats | None = None
        self.headers: HeaderMap | None = None
        self.request_end = False
        self.timeout = 0.0
        # Nothing but forwarding for this request: a plain route (RoutePlan.plain), no
        # x-envoy-* control header, no upgrade. The hot paths test this one flag.
        self.simple = False
        self.response_started = False  # a response head went downstream: no more retries
        self.global_armed = False
        self.count_attempts = False  # vhost include_request_attempt_count
        # the current attempt
        self.attempts = 0
        self.host: Host | None = None
        self.pool: Http1Pool | H2Pool | AutoPool | None = None
        self.upstream: UpstreamHandle | None = None
        self.attempt_start = 0.0
        self.upstream_read_paused = False  # the client is slow: the upstream is not read

    # -- decoding ---------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> Any:
        cb = self.decoder_callbacks
        cfg = self.config
        stats = cfg.stats
        stats.rq_total.value += 1
        # Routes come from this plugin's route table (hcm/config.py builds it).
        route: Route | None = cb.route()  # type: ignore[assignment]
        info = cb.stream_info
        if route is None:
            stats.no_route.value += 1
            info.response_flags.append("NR")
            self.state = DONE
            cb.send_local_reply(404, b"", details="route_not_found")
            return H_CONTINUE
        self.route = route
        plan = cfg.plans.get(route)
        if plan is None:
            plan = cfg.plan(route)
        self.plan = plan
        if route.kind != "cluster":
            stats.rq_direct_response.value += 1
            self._local_answer(route, headers)
            return H_CONTINUE
        name = route.cluster
        if name is None:
            name = route.pick_cluster(headers)
        cluster = cfg.cluster_manager.clusters.get(name) if name else None
        if cluster is None:
            stats.no_cluster.value += 1
            info.response_flags.append("NC")
            self.state = DONE
            cb.send_local_reply(route.not_found_code, b"", details="cluster_not_found")
            return H_CONTINUE
        self.cluster = cluster
        info.upstream_cluster = cluster.name
        self.hstats = plan.hstats if plan.hstats_of is cluster else plan.http_stats(cluster)
        if plan.request_work:
            # Header mutations: route, then virtual host, then route config (least specific
            # wins), then the rewrites.
            vh = route.vhost
            route.request_mutations.apply(headers, cb)
            vh.request_mutations.apply(headers, cb)
            vh.config_request_mutations.apply(headers, cb)
            rewrite(route, headers, cfg.suppress_envoy_headers)
        raw = headers.headers
        for k, _ in raw:
            if k in CONTROL:
                # Retry policy and timeouts from x-envoy-* request headers too.
                rr = retry_headers.setup(route, headers, cfg.respect_expected_rq_timeout,
                                         cfg.suppress_envoy_headers)
                self.timeout, self.per_try, rp = rr.timeout, rr.per_try, rr.policy
                if rr.grpc:
                    self.grpc_timeout = True
                if rp is not None:
                    self.retry_policy = rp
                    self.retries_left = rp.num_retries
                vh = route.vhost
                self.count_attempts = vh.include_request_attempt_count
                self.attempt_count_in_response = vh.include_attempt_count_in_response
                break
        else:  # what retry_headers.setup() comes to, worked out once for the route
            self.timeout = plan.timeout
            self.simple = plan.plain
            if route.retry_policy is not None:
                self.retry_policy = route.retry_policy
                self.retries_left = plan.retries
                self.per_try = plan.per_try
            if plan.expected is not None:
                raw.append((EXPECTED, plan.expected))
            if not plan.plain:
                self.count_attempts = plan.count_attempts
                self.attempt_count_in_response = plan.attempt_count_in_response
                if plan.grpc_timeouts:  # (deprecated max_grpc_timeout: a gRPC request's own)
                    tt = retry_headers.grpc_timeouts(route, headers, cfg.suppress_envoy_headers)
                    if tt is not None:
                        self.timeout, self.per_try = tt
                        self.grpc_timeout = True
        if plan.upstream_duration:  # (the plan's, read for this cluster above)
            self.upstream_duration = plan.upstream_duration
            self.simple = False  # on_pool_ready starts its timer
        self.headers = headers
        self.request_end = end_stream
        trace = getattr(cb, "trace", None)  # (the connection manager's streams have one)
        if trace is not None:
            self.trace = trace
        if route.mirrors:  # shadows leave before the request: they never wait for it
            self.shadows = start_shadows(route.mirrors, headers, end_stream, cfg, self.timeout,
                                         cb.buffer_limit, info.protocol == "HTTP/2")
        if cb.upgrade:
            self.upgrade = True
            self.retries_left = 0
            self.simple = False
        self._start_attempt()
        if end_stream and self.timeout and self.state != DONE:
            self.global_armed = True
            cb.start_deadline(self.timeout, self.on_global_timeout)
        return H_CONTINUE

    def decode_data(self, data: bytes, end_stream: bool) -> Any:
        if self.state == DONE:
            return D_CONTINUE
        rb = self.retry_body
        if rb is not None and self.retries_left:
            if type(rb) is bytes:
                rb = self.retry_body = bytearray()
            rb += data
            if len(rb) > self.decoder_callbacks.buffer_limit:
                self.retry_body = None  # too big to replay: no more retries
        shadows = self.shadows
        if shadows is not None:
            for sh in shadows:
                sh.send_data(data, end_stream)
        up = self.upstream
        if end_stream:
            self.request_end = True
            self._arm_global_timer()
        if up is not None and (not self.upgrade or self.state == TUNNEL):
            up.send_data(data, end_stream)
        else:  # no upstream yet, or an upgrade waiting for the 101
            pending = self.pending_body
            if pending is None:
                pending = self.pending_body = []
            pending.append((data, end_stream))
            if sum(len(d) for d, _ in pending) > self.decoder_callbacks.buffer_limit:
                self.decoder_callbacks.on_decoder_filter_above_write_buffer_high_watermark()
        return D_CONTINUE

    def decode_trailers(self, trailers: HeaderMap) -> Any:
        self.request_end = True
        self.trailers = trailers
        if self.shadows is not None:
            for sh in self.shadows:
                sh.send_trailers(trailers)
        self._arm_global_timer()
        if self.upstream is not None:
            self.upstream.send(ev.Trailers(0, trailers.headers))
        return T_CONTINUE

    # -- local answers ----------------------------------------------------------------------

    def _local_answer(self, route: Route, headers: HeaderMap) -> None:
        """A ``direct_response`` or ``redirect`` route: answered here, with the route's
        response header mutations."""
        self.state = DONE
        if route.kind == "redirect":  # (rq_redirect counts internal redirects only)
            assert route.redirect is not None
            location = redirect_location(route, headers)
            status, body = route.redirect.response_code, b""

            def modify(hm: HeaderMap) -> None:
                hm.add_bytes(b"location", location)
                self._response_mutations(hm)
        else:
            status, body = route.direct_status, route.direct_body
            modify = self._response_mutations
        self.decoder_callbacks.send_local_reply(status, body, details="direct_response",
                                                modify_headers=modify)

    def _response_mutations(self, hm: HeaderMap) -> None:
        plan = self.plan
        route = self.route
        if route is None or (plan is not None and not plan.response_work):
            return
        cb = self.decoder_callbacks
        vh = route.vhost
        route.response_mutations.apply(hm, cb)
        vh.response_mutations.apply(hm, cb)
        vh.config_response_mutations.apply(hm, cb)

    # -- attempts ---------------------------------------------------------------------------

    def _start_attempt(self) -> None:
        cluster: Cluster = self.cluster  # type: ignore[assignment]
        route: Route = self.route  # type: ignore[assignment]
        host = cluster.choose_host(None if self.simple else self._lb_context())
        if host is None:
            self.decoder_callbacks.stream_info.response_flags.append("UH")
            self._fail(503, b"no healthy upstream", "no_healthy_upstream")
            return
        self.host = host
        requests = cluster.resources[route.priority].requests
        if not requests.can_create():  # max_requests (Envoy counts it as a pending overflow)
            cluster.stats.upstream_rq_pending_overflow.value += 1
            self._overflow()
            return
        requests.inc()
        attempts = self.attempts = self.attempts + 1
        if attempts > 1 or self.count_attempts:
            retry_headers.on_attempt(self.headers, attempts, self.count_attempts,  # type: ignore[arg-type]
                                     self.timeout, self.per_try,
                                     self.decoder_callbacks.stream_info.start_monotonic,
                                     self.config.suppress_envoy_headers, self.grpc_timeout)
        if self.trace is not None:
            child = self.trace_child = tracing.start_attempt(
                self.trace, self.config.start_child_span, cluster.name,
                self.headers, attempts - 1)  # type: ignore[arg-type]
            if child is not None:  # (an egress span: what its tags need)
                self.trace_status = 0
                self.trace_flags_at = len(self.decoder_callbacks.stream_info.response_flags)
        self.attempt_start = _monotonic()
        cluster.stats.upstream_rq_active.inc()
        host.rq_active += 1
        self.state = WAITING
        plan: RoutePlan = self.plan  # type: ignore[assignment]
        if plan.stats:
            for rs in self._request_stats():
                rs.upstream_rq_total.value += 1
        info = self.decoder_callbacks.stream_info
        h2 = info.protocol == "HTTP/2"
        # The route's HTTP/1.1 pools of this cluster, remembered by the plan (select_pool's
        # answer for an HTTP/1.1 downstream, without its lookups); a host without one yet, an
        # HTTP/2 downstream or another cluster asks select_pool.
        pool: Http1Pool | H2Pool | AutoPool | None = (
            plan.h1_pools.get(host) if plan.pools_of is cluster and not h2 else None)
        if pool is None:
            pool = select_pool(cluster, host, self.config.backend, h2, route.priority)
            if not h2:
                plan.remember_pools(cluster, pool, route.priority)
        self.pool = pool
        info.upstream_host = pool.address_string
        conn = pool.take_idle(self)
        if conn is None:
            pool.request(self)  # a new connection, or a wait
        elif self.simple:  # on_pool_ready's work for a request with nothing but its head
            self.state = UPSTREAM
            self.upstream = conn
            # Envoy counts a request when it is attached to a connection (not while it waits).
            cluster.stats.upstream_rq_total.value += 1
            host.rq_total += 1
            h: HeaderMap = self.headers  # type: ignore[assignment]
            conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers,
                           self.request_end)
        else:
            self.on_pool_ready(conn)

    # -- upstream hooks: load-balancer context and outlier reports (keep these small) -------

    def _lb_context(self) -> LoadBalancerContext | None:
        """The route's ``hash_policy`` hash for RING_HASH/MAGLEV clusters (None: no policy)."""
        hp = self.route.hash_policy if self.route is not None else None
        if hp is None or self.headers is None:
            return None
        info = self.decoder_callbacks.stream_info
        return LoadBalancerContext(hp.compute(self.headers, info.downstream_remote_address))

    def _outlier(self, result: int) -> None:
        """Report a local-origin result (timeout, reset) to the host's outlier detector."""
        host = self.host
        if host is not None and host.outlier is not None:
            host.outlier.put_result(result)

    def _request_stats(self) -> list[Any] | tuple[()]:
        route = self.route
        plan = self.plan
        if route is None or (plan is not None and not plan.stats):
            return ()
        out = []
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

    def on_pool_ready(self, conn: UpstreamHandle) -> None:
        if self.state != WAITING:
            conn.release()
            return
        self.state = UPSTREAM
        self.upstream = conn
        # Envoy counts a request when it is attached to a connection (not while it waits).
        self.cluster.stats.upstream_rq_total.value += 1  # type: ignore[union-attr]
        self.host.rq_total += 1  # type: ignore[union-attr]
        h = self.headers
        assert h is not None
        pending = self.pending_body
        retry_body = self.retry_body if self.attempts > 1 else None
        if self.upgrade:  # the head goes alone; tunnel bytes wait for the 101
            conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers, True)
        else:
            end = not pending and self.request_end and not retry_body
            conn.send_head(h.method, h.path, h.authority, h.scheme or b"http", h.headers, end)
            if retry_body:
                conn.send(ev.Body(0, bytes(retry_body), self.request_end
                                  and self.trailers is None))
            elif pending:
                self.pending_body = None
                for data, data_end in pending:
                    conn.send(ev.Body(0, data, data_end))
                self.decoder_callbacks.on_decoder_filter_below_write_buffer_low_watermark()
            if self.trailers is not None and self.request_end:
                conn.send(ev.Trailers(0, self.trailers.headers))
        if self.per_try:
            self.decoder_callbacks.start_deadline(self.per_try, self._on_per_try_timeout)
        if self.upstream_duration:
            self.decoder_callbacks.start_deadline(self.upstream_duration,
                                                  self._on_upstream_duration)

    def on_pool_failure(self, reason: str, host: Host, detail: str = "") -> None:
        if self.state != WAITING:
            return
        if self.trace_child is not None:  # (no connection: no protocol, Envoy's reset reason)
            self._end_trace("overflow" if reason == "overflow" else "connection timeout"
                            if reason == "timeout" else "remote connection failure",
                            "UO" if reason == "overflow" else "UF", connected=False)
        self._end_attempt(success=False)
        if reason == "overflow":
            self._overflow()
            return
        info = self.decoder_callbacks.stream_info
        info.upstream_host = host.address_string
        if self._maybe_retry(None):
            return
        info.response_flags.append("UF")
        self._charge_abort(503)
        if reason == "timeout":
            why, details = "connection timeout", "connection_timeout"
        else:
            why = "remote connection failure"
            # Envoy adds the transport's failure reason: the socket error of the connect.
            details = "remote_connection_failure" + (
                "|delayed_connect_error:_" + detail.replace(" ", "_") if detail else "")
        self._fail(503, self._reset_body(why),
                   "upstream_reset_before_response_started{" + details + "}")

    def _reset_body(self, reason: str) -> bytes:
        """The local reply's body for an upstream that failed before its response (Envoy's
        ``onUpstreamReset``: it says when the request was retried)."""
        if self.attempts > 1:
            return (_RESET_RETRIED + reason).encode()
        return (RESET_BEFORE + reason).encode()

    def _charge_abort(self, code: int) -> None:
        """Envoy's ``chargeUpstreamAbort``: a local answer for an upstream that failed before
        the response started counts as that upstream's answer."""
        hs = self.hstats
        if hs is not None:
            hs.answered(code)
        for rs in self._request_stats():
            rs.codes.record(code)

    def _overflow(self) -> None:
        self.decoder_callbacks.stream_info.response_flags.append("UO")
        self._fail(503, (RESET_BEFORE + "overflow").encode(),
                   "upstream_reset_before_response_started{overflow}",
                   {"x-envoy-overloaded": "true"} if not self.config.suppress_envoy_headers
                   else None)

    def _fail(self, status: int, body: bytes, details: str,
              headers: dict[str, str] | None = None) -> None:
        self.state = DONE
        self._cancel_timers()
        if self.attempt_count_in_response and self.attempts:
            headers = {**(headers or {}), "x-envoy-attempt-count": str(self.attempts)}
        self.decoder_callbacks.send_local_reply(status, body, headers, details)

    def _end_attempt(self, success: bool) -> None:
        """The attempt is over (``BETWEEN``): its timer and its place in the active counts go."""
        state = self.state
        if WAITING <= state <= TUNNEL:
            self.state = BETWEEN
            if self.per_try:
                self.decoder_callbacks.cancel_deadline(self._on_per_try_timeout)
            if self.upstream_duration:
                self.decoder_callbacks.cancel_deadline(self._on_upstream_duration)
            assert self.cluster is not None and self.host is not None
            self.cluster.stats.upstream_rq_active.value -= 1  # (inc()ed: marked used)
            self.cluster.resources[self.route.priority].requests.dec()  # type: ignore[union-attr]
            self.host.rq_active -= 1
            if not success:
                self.host.rq_error += 1
            if self.trace_child is not None:
                self._end_trace()

    def _end_trace(self, reset: str = "", flag: str = "", connected: bool = True) -> None:
        child = self.trace_child
        self.trace_child = None
        tracing.end_attempt(self.trace, child, self.decoder_callbacks.stream_info,  # type: ignore[arg-type]
                            self.trace_status, self.route, self.headers,  # type: ignore[arg-type]
                            self.trace_flags_at, reset, flag,
                            getattr(self.pool, "protocol", "HTTP/1.1") if connected else "-")

    def _maybe_retry(self, status: int | None, grpc: int | None = None) -> bool:
        """A retry for this failure (``status``: the response's; None: a reset or connect
        failure; ``grpc``: the response headers' grpc-status) when the retry policy asks for
        one and one is left; the back-off starts."""
        rp = self.retry_policy
        if rp is None or self.response_started:
            return False
        on = rp.retry_on
        wanted = False
        if status is None:
            wanted = bool(on & {"5xx", "gateway-error", "reset", "connect-failure",
                                "reset-before-request"})
        elif (("5xx" in on and status >= 500) or ("gateway-error" in on and status in _GATEWAY)
              or ("retriable-4xx" in on and status == 409)
              or ("retriable-status-codes" in on and status in rp.retriable_status_codes)
              or grpc in rp.grpc_codes):
            wanted = True
        if not wanted:
            return False
        cluster = self.cluster
        assert cluster is not None
        rstats = self._request_stats()
        if self.retries_left <= 0 or self.retry_body is None:
            cluster.stats.upstream_rq_retry_limit_exceeded.value += 1
            for rs in rstats:
                rs.upstream_rq_retry_limit_exceeded.value += 1
            self.retry_exhausted = True
            # Envoy's URX (UpstreamRetryLimitExceeded): the answer is the last attempt's.
            self.decoder_callbacks.stream_info.response_flags.append("URX")
            return False
        retries = cluster.resources[self.route.priority].retries  # type: ignore[union-attr]
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
        self.decoder_callbacks.start_deadline(delay, self._retry)
        return True

    def _release_retry(self) -> None:
        if self.retry_reserved:
            self.retry_reserved = False
            self.cluster.resources[self.route.priority].retries.dec()  # type: ignore[union-attr]

    def _retry(self) -> None:
        self._release_retry()
        if self.state == BETWEEN:
            self._start_attempt()

    # -- upstream events --------------------------------------------------------------------

    def on_upstream_events(self, events: list[ev.Event]) -> None:
        """One upstream read's events. What of a response arrives in one read leaves in one
        write: a head with body bytes goes out through ``encode_response``, and body pieces
        that follow each other are passed on together."""
        n = len(events)
        if n == 2:
            # The usual small response: its head and whole body in one read.
            e, b = events
            if type(e) is ResponseHeaders and type(b) is Body and b.end_stream and \
                    self.state == UPSTREAM and e.status != 101:
                hm = self._response_head(e)
                if hm is not None:
                    self._complete()
                    self.decoder_callbacks.encode_response(hm, b.data, True)
                return
        up = self.upstream
        cb = self.decoder_callbacks
        i = 0
        while i < n:
            if self.state == DONE or self.upstream is not up:
                # Over, or this attempt was discarded for a retry (the rest of its read --
                # typically the 503's body -- belongs to no one).
                return
            e = events[i]
            i += 1
            t = type(e)
            if t is Body:
                data, end, i = _body(events, i, e)  # type: ignore[arg-type]
                if end:
                    self._complete()
                elif not self.watching:
                    self._watch_downstream()
                cb.encode_data(data, end)
            elif t is ResponseHeaders:
                hm = self._response_head(e)  # type: ignore[arg-type]
                if hm is None:
                    continue
                if e.end_stream:  # type: ignore[union-attr]
                    self._complete()
                    cb.encode_headers(hm, True)
                elif i < n and type(events[i]) is Body and e.status != 101:  # type: ignore[union-attr]
                    data, end, i = _body(events, i + 1, events[i])  # type: ignore[arg-type]
                    if end:
                        self._complete()
                    elif not self.watching:
                        self._watch_downstream()
                    cb.encode_response(hm, data, end)
                else:
                    if not self.watching:
                        self._watch_downstream()
                    cb.encode_headers(hm, False)
            elif t is ev.Trailers:
                self._complete()
                cb.encode_trailers(HeaderMap(e.headers))  # type: ignore[union-attr]
            elif t is ev.ProtocolError:
                assert self.cluster is not None
                self.cluster.stats.upstream_cx_protocol_error.value += 1
                self._upstream_reset("protocol error")
            elif t is ev.StreamReset:
                why: str = e.reason  # type: ignore[union-attr,assignment]
                remote = _REMOTE_RESETS.get(why)
                if remote is None:
                    self._upstream_reset("connection termination")
                else:
                    if why == "remote_reset":
                        self.cluster.stats.upstream_rq_rx_reset.value += 1  # type: ignore[union-attr]
                    self._upstream_reset(remote, "UR")
            elif t is ev.ConnectionClosed:
                self._upstream_reset("connection termination")
            elif t is ev.UpgradeRequested and self.upgrade:
                self._open_tunnel(e.data)  # type: ignore[union-attr]

    def _watch_downstream(self) -> None:
        """A response is streaming: from now on a slow client pauses the upstream (a response
        read whole never needs it)."""
        self.watching = True
        self.decoder_callbacks.add_downstream_watermark_callbacks(self)

    def _open_tunnel(self, data: bytes) -> None:
        self.state = TUNNEL
        cb = self.decoder_callbacks
        if data:
            cb.encode_data(data, False)
        pending, self.pending_body = self.pending_body, None
        up = self.upstream
        if up is not None and pending:
            for chunk, end in pending:
                up.send(ev.Body(0, chunk, end))
            cb.on_decoder_filter_below_write_buffer_low_watermark()

    def _response_head(self, e: ev.ResponseHeaders) -> HeaderMap | None:
        """The upstream's response head: a retry (None), or the stats and the head to send
        downstream. The head keeps the upstream's header list (the connection manager drops
        the hop-by-hop fields once, as the response leaves)."""
        status = e.status
        if self.trace_child is not None:
            self.trace_status = status
        hs: ClusterHttpStats = self.hstats  # type: ignore[assignment]
        simple = self.simple
        host: Host = self.host  # type: ignore[assignment]
        if host.outlier is not None:
            host.outlier.put_http_response_code(status)
        if not simple:
            rp = self.retry_policy
            grpc = None
            if rp is not None and rp.grpc_codes:  # gRPC retry_on: grpc-status in the headers
                grpc = _grpc_status(e.headers)
            if (status >= 500 or status == 409 or (rp is not None and status >= 400)
                    or grpc is not None) and self._maybe_retry(status, grpc):
                hs.retry.record(status)
                if self.trace_child is not None:  # (Envoy resets the attempt it retries)
                    self.trace_child.set_tag("canceled", "true")
                self._end_attempt(success=False)
                up = self.upstream
                self.upstream = None
                if up is not None:
                    if e.end_stream:
                        up.release()  # a complete answer: the connection is reusable (Envoy)
                    else:
                        up.abort()  # the rest of this response is not wanted
                return None
            if self.attempts > 1 and not self.retry_exhausted:
                self.cluster.stats.upstream_rq_retry_success.value += 1  # type: ignore[union-attr]
                for rs in self._request_stats():
                    rs.upstream_rq_retry_success.value += 1
        self.state = RESPONDING
        self.response_started = True
        elapsed = (_monotonic() - self.attempt_start) * 1000
        hs.answered(status)
        hs.rq_time.record(elapsed)
        if status >= 500:
            host.rq_error += 1
        else:
            host.rq_success += 1
        raw = e.headers
        if status != 101 and not self.config.suppress_envoy_headers:
            raw.append((_SERVICE_TIME, b"%d" % int(elapsed)))
        hm = HeaderMap(raw, status=status)
        self.decoder_callbacks.stream_info.response_code_details = "via_upstream"
        if not simple:
            plan = self.plan
            if plan is not None and plan.stats:
                for rs in self._request_stats():
                    rs.codes.record(status)
                    rs.upstream_rq_time.record(elapsed)
            if self.attempt_count_in_response:
                hm.add_bytes(b"x-envoy-attempt-count", b"%d" % self.attempts)
            if plan is None or plan.response_work:
                self._response_mutations(hm)
        return hm

    def _complete(self) -> None:
        """The upstream response ended: the attempt succeeded and its connection goes back to
        the pool (before the response's last bytes go downstream: a pipelined request may
        reuse it)."""
        state = self.state
        if WAITING <= state <= TUNNEL:  # _end_attempt(success=True), inline
            cluster = self.cluster
            cluster.stats.upstream_rq_active.value -= 1  # type: ignore[union-attr]
            cluster.resources[self.route.priority].requests.dec()  # type: ignore[union-attr]
            self.host.rq_active -= 1  # type: ignore[union-attr]
            if self.upstream_duration:
                self.decoder_callbacks.cancel_deadline(self._on_upstream_duration)
            if self.trace_child is not None:
                self._end_trace()
        # DONE: a deadline still pending (the request timeout, the attempt's) finds nothing to
        # do, and ends with the stream, which ends now that the response is complete.
        self.state = DONE
        up = self.upstream
        self.upstream = None
        if up is not None:
            if state == TUNNEL:  # the upstream closed the tunnel (EOF): never back to the pool
                up.handler = None
                up.reset_active = True  # the transport closes itself after the EOF
                return
            if self.upstream_read_paused and up.transport is not None:
                up.transport.resume_reading()
            up.release()

    def _upstream_reset(self, reason: str, flag: str = "UC") -> None:
        """The upstream stream ended before its response did: ``reason`` is Envoy's reset reason
        (its words), ``flag`` the response flag it maps to."""
        started = self.response_started
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        self._outlier(LOCAL_ORIGIN_CONNECT_FAILED)
        if self.trace_child is not None:
            self._end_trace(reason)
        self._end_attempt(success=False)
        cb = self.decoder_callbacks
        if started:
            self.state = DONE
            self._cancel_timers()
            cb.stream_info.response_flags.append(flag)
            self.config.stats.rq_reset_after_downstream_response_started.value += 1
            cb.reset_stream()
            return
        if self._maybe_retry(None):
            return
        cb.stream_info.response_flags.append(flag)
        self._charge_abort(503)
        self._fail(503, self._reset_body(reason),
                   "upstream_reset_before_response_started{" + reason.replace(" ", "_") + "}")

    def on_upstream_closed(self) -> None:
        if self.state != DONE:
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
        if self.timeout and not self.global_armed and self.state != DONE:
            self.global_armed = True
            self.decoder_callbacks.start_deadline(self.timeout, self.on_global_timeout)

    def on_global_timeout(self) -> None:
        self.global_armed = False
        self._timeout(per_try=False)

    def _on_per_try_timeout(self) -> None:
        if self.state == DONE:
            return
        cluster = self.cluster
        assert cluster is not None
        cluster.stats.upstream_rq_per_try_timeout.value += 1
        self._outlier(LOCAL_ORIGIN_TIMEOUT)
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        self._end_attempt(success=False)
        if self._maybe_retry(504):
            return
        self._timeout(per_try=True)

    def _on_upstream_duration(self) -> None:
        """The cluster's ``max_stream_duration`` ran out for this attempt (Envoy's
        ``onStreamMaxDurationReached``): the upstream stream is reset, a ``reset`` (or 5xx,
        gateway-error) retry policy retries, else 504 (408 while the request is unfinished)
        "upstream max stream duration reached", flag UMSDR, no upstream code charged; a
        response that started is reset."""
        if not UPSTREAM <= self.state <= TUNNEL:
            return
        cluster = self.cluster
        assert cluster is not None
        cluster.stats.upstream_rq_max_duration_reached.value += 1
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        self._end_attempt(success=False)
        rp = self.retry_policy
        if rp is not None and rp.retry_on & _RESET_RETRIES and self._maybe_retry(None):
            return
        self.decoder_callbacks.stream_info.response_flags.append("UMSDR")
        self._fail(504 if self.request_end else 408, b"upstream max stream duration reached",
                   "upstream_max_stream_duration_reached")

    def _timeout(self, per_try: bool) -> None:
        if self.state == DONE:
            return
        started = self.response_started
        cluster = self.cluster
        assert cluster is not None
        if not per_try:
            cluster.stats.upstream_rq_timeout.value += 1
            if self.host is not None:
                self.host.rq_timeout += 1
            if WAITING <= self.state <= TUNNEL:
                self._outlier(LOCAL_ORIGIN_TIMEOUT)
        for rs in self._request_stats():
            rs.upstream_rq_timeout.value += 1
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()
        if self.trace_child is not None:  # (Envoy resets the attempt that timed out)
            self.trace_child.set_tag("canceled", "true")
        waiting = self.state == WAITING
        self._end_attempt(success=False)
        if waiting and self.pool is not None:
            self.pool.cancel(self)
        cb = self.decoder_callbacks
        cb.stream_info.response_flags.append("UT")
        if started:
            self.state = DONE
            self._cancel_timers()
            cb.reset_stream()
            return
        assert self.hstats is not None
        self.hstats.answered(504)  # (Envoy charges the external codes too)
        self._fail(504, b"upstream request timeout", "response_timeout")

    def _cancel_timers(self) -> None:
        cb = self.decoder_callbacks
        if self.global_armed:
            self.global_armed = False
            cb.cancel_deadline(self.on_global_timeout)
        if self.per_try:
            cb.cancel_deadline(self._on_per_try_timeout)
        if self.upstream_duration:
            cb.cancel_deadline(self._on_upstream_duration)
        if self.retry_policy is not None:
            cb.cancel_deadline(self._retry)
        self._release_retry()

    def on_destroy(self) -> None:
        if self.shadows is not None and not self.request_end:
            for sh in self.shadows:  # the request will never end: neither will its shadows
                sh.abort()
        state = self.state
        if state == DONE and self.upstream is None:
            return  # completed, or answered locally: nothing left to release
        if state != IDLE:
            self._cancel_timers()
        if state == WAITING and self.pool is not None:
            self.pool.cancel(self)
        up = self.upstream
        self.upstream = None
        if up is not None:
            # The downstream went away mid-exchange: the connection cannot be reused.
            up.abort()
        if self.trace_child is not None:
            self.trace_child.set_tag("canceled", "true")
        self._end_attempt(success=False)
        self.state = DONE
