"""What the router decides once rather than per request: its config (one per router factory, so
per connection manager) and, per route, a :class:`RoutePlan` made on the route's first request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError
from envoi.upstream.cluster import Cluster

from envoi_http.codec import Backend
from envoi_http.router.pool import POOLS, Http1Pool
from envoi_http.router.pools import upstream_protocol
from envoi_http.router.retry_headers import route_timeouts
from envoi_http.router.stats import ClusterHttpStats, RouterStats

if TYPE_CHECKING:
    from envoi.context import ClusterManager

    from envoi_http.router.config import Route


class RouterConfig:
    __slots__ = ("backend", "cluster_manager", "plans", "respect_expected_rq_timeout",
                 "start_child_span", "stats", "suppress_envoy_headers")

    def __init__(self, cm: ClusterManager, suppress: bool, backend: Backend,
                 stats: RouterStats, respect_expected_rq_timeout: bool = False) -> None:
        self.cluster_manager = cm
        self.suppress_envoy_headers = suppress
        self.backend = backend
        self.stats = stats
        self.respect_expected_rq_timeout = respect_expected_rq_timeout
        self.start_child_span = False
        # route -> RoutePlan, worked out on the route's first request (route tables are static)
        self.plans: dict[Route, RoutePlan] = {}

    def plan(self, route: Route) -> RoutePlan:
        plan = self.plans.get(route)
        if plan is None:
            plan = self.plans[route] = RoutePlan(route, self.suppress_envoy_headers)
        return plan


class RoutePlan:
    """What a route's requests need beyond plain forwarding, decided once per route, and the
    lookup a request would repeat (the cluster's HTTP stats), memoized."""

    __slots__ = ("attempt_count_in_response", "count_attempts", "expected", "grpc_timeouts",
                 "h1_pools", "hstats", "hstats_of", "per_try", "plain", "pools_of",
                 "request_work", "response_work", "retries", "stats", "timeout",
                 "upstream_duration")

    def __init__(self, route: Route, suppress_envoy_headers: bool = False) -> None:
        vh = route.vhost
        # What router/retry_headers.setup() comes to for a request without x-envoy-* control
        # headers: the route's timeouts and retries, and x-envoy-expected-rq-timeout-ms.
        self.timeout, self.per_try = route_timeouts(route)
        rp = route.retry_policy
        self.retries = rp.num_retries if rp is not None else 0
        expected = self.per_try or self.timeout
        self.expected = (b"%d" % int(expected * 1000)
                         if expected and not suppress_envoy_headers else None)
        self.count_attempts = vh.include_request_attempt_count
        self.attempt_count_in_response = vh.include_attempt_count_in_response
        self.request_work = bool(
            route.request_mutations or vh.request_mutations or vh.config_request_mutations
            or route.prefix_rewrite is not None or route.regex_rewrite is not None
            or route.host_rewrite is not None)
        self.response_work = bool(
            route.response_mutations or vh.response_mutations or vh.config_response_mutations)
        self.stats = route.stats is not None or bool(vh.vclusters)
        # the deprecated max_grpc_timeout: a gRPC request's timeouts are its own
        self.grpc_timeouts = route.max_grpc_timeout is not None and route.max_duration is None
        # Nothing but forwarding: no retries, mutations, rewrites, route stats, attempt counts,
        # hash policy or priority.
        self.plain = (route.kind == "cluster" and route.retry_policy is None
                      and route.hash_policy is None and route.priority == "DEFAULT"
                      and not vh.include_request_attempt_count
                      and not vh.include_attempt_count_in_response and not self.grpc_timeouts
                      and not (self.request_work or self.response_work or self.stats))
        self.hstats: ClusterHttpStats | None = None
        self.hstats_of: Cluster | None = None
        # hstats_of's common_http_protocol_options.max_stream_duration (0: none)
        self.upstream_duration = 0.0
        # The HTTP/1.1 pools (by host) that select_pool picks from for this route's cluster
        # and an HTTP/1.1 downstream (remember_pools); ``pools_of``: that cluster.
        self.h1_pools: dict[Any, Http1Pool] = {}
        self.pools_of: Cluster | None = None

    def remember_pools(self, cluster: Cluster, pool: Any, priority: str) -> None:
        """``pool`` is select_pool's answer for an HTTP/1.1 downstream: when it is one of the
        cluster's plain HTTP/1.1 pools (``pool_for``'s, by host), later requests look the host
        up there directly. (A pool of a host that leaves the cluster leaves that dict.)"""
        if self.pools_of is cluster or priority != "DEFAULT" or type(pool) is not Http1Pool:
            return
        pools = cluster.extra.get(POOLS)
        if pools is not None and pools.get(pool.host) is pool:
            self.h1_pools = pools
            self.pools_of = cluster

    def http_stats(self, cluster: Cluster) -> ClusterHttpStats:
        hs = self.hstats
        if self.hstats_of is not cluster or hs is None:  # (a cluster replaced by CDS: its own)
            hs = self.hstats = cluster_http_stats(cluster)
            self.hstats_of = cluster
            try:
                self.upstream_duration = upstream_protocol(cluster).max_stream_duration
            except ConfigError:  # (a CDS cluster's bad options: select_pool says so)
                self.upstream_duration = 0.0
        return hs


def cluster_http_stats(cluster: Cluster) -> ClusterHttpStats:
    s: ClusterHttpStats | None = cluster.extra.get("envoi_http_stats")
    if s is None:
        s = cluster.extra["envoi_http_stats"] = ClusterHttpStats(cluster.stats.scope)
    return s
