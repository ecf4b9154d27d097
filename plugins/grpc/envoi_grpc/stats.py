"""The ``grpc.`` and ``grpc-web.`` stats of a cluster, named and created as Envoy's
``Grpc::ContextImpl`` names and creates them.

Every name sits in the route's cluster scope: ``cluster.<cluster>.<protocol>.[<service>.<method>.]
<suffix>`` with protocol ``grpc`` or ``grpc-web`` and suffix ``success``, ``failure``,
``total``, the ``grpc-status`` value (``0``, ``14``, or whatever the peer sent),
``request_message_count``, ``response_message_count`` or the histogram ``upstream_rq_time``.
Stats are made when first charged (lazily, as Envoy's ``counterFromElements``): a method that never
answered a message has no ``response_message_count``.

Service and method names come from the client's ``:path``, so per-method names are bounded: a
cluster keeps at most :data:`MAX_DYNAMIC_METHODS` per-method sets made from paths (Envoy makes
them without limit when ``stats_for_all_methods`` is on, envoy#10445); calls to further methods
are counted under the un-prefixed names, as methods outside an allowlist are.
"""

from __future__ import annotations

import weakref

from envoi.http.filter import StreamDecoderFilterCallbacks as _Callbacks
from envoi.stats import Counter, Histogram, Scope, Store

GRPC = "grpc"
GRPC_WEB = "grpc-web"
#: Per-method stat sets a cluster makes from client-chosen paths before it buckets the rest.
MAX_DYNAMIC_METHODS = 1000


class MethodStats:
    """The stats of one (cluster, protocol, service/method or none) triple; each counter is
    made on first use and kept."""

    __slots__ = ("_counters", "_prefix", "_rq_time", "_scope")

    def __init__(self, scope: Scope, prefix: str) -> None:
        self._scope = scope
        self._prefix = prefix  # "grpc." or "grpc.<service>.<method>."
        self._counters: dict[str, Counter] = {}
        self._rq_time: Histogram | None = None

    def counter(self, suffix: str) -> Counter:
        c = self._counters.get(suffix)
        if c is None:
            c = self._counters[suffix] = self._scope.counter(self._prefix + suffix)
        return c

    def charge_status(self, grpc_status: bytes) -> None:
        """A call ended with ``grpc-status`` (any value the peer sent)."""
        self.counter(grpc_status.decode("latin-1")).inc()
        self.charge_success(grpc_status == b"0")

    def charge_success(self, success: bool) -> None:
        self.counter("success" if success else "failure").inc()
        self.counter("total").inc()

    def charge_request_messages(self, n: int) -> None:
        self.counter("request_message_count").inc(n)

    def charge_response_messages(self, n: int) -> None:
        self.counter("response_message_count").inc(n)

    def record_upstream_rq_time(self, ms: int) -> None:
        h = self._rq_time
        if h is None:
            h = self._rq_time = self._scope.histogram(self._prefix + "upstream_rq_time")
        h.record(ms)


class ClusterGrpcStats:
    """One cluster's gRPC stat sets, by protocol and service/method."""

    __slots__ = ("_dynamic", "_sets", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope  # cluster.<name>.
        self._sets: dict[tuple[str, bytes, bytes] | str, MethodStats] = {}
        self._dynamic = 0

    def unprefixed(self, protocol: str) -> MethodStats:
        s = self._sets.get(protocol)
        if s is None:
            s = self._sets[protocol] = MethodStats(self.scope, protocol + ".")
        return s

    def method(self, protocol: str, service: bytes, method: bytes,
               dynamic: bool = True) -> MethodStats:
        """The per-method set; a ``dynamic`` one (named by a client's path, not by config)
        counts towards :data:`MAX_DYNAMIC_METHODS`, past which the un-prefixed set answers."""
        key = (protocol, service, method)
        s = self._sets.get(key)
        if s is None:
            if dynamic:
                if self._dynamic >= MAX_DYNAMIC_METHODS:
                    return self.unprefixed(protocol)
                self._dynamic += 1
            name = f"{protocol}.{service.decode('latin-1')}.{method.decode('latin-1')}."
            s = self._sets[key] = MethodStats(self.scope, name)
        return s


class GrpcStatsRegistry:
    """Every cluster's gRPC stats in one store: ``grpc_stats`` and ``grpc_web`` of every
    listener share it (:func:`registry`), so the per-method bound is per cluster."""

    __slots__ = ("_clusters", "_root")

    def __init__(self, root: Scope) -> None:
        self._root = root
        self._clusters: dict[str, ClusterGrpcStats] = {}

    def cluster(self, name: str) -> ClusterGrpcStats:
        c = self._clusters.get(name)
        if c is None:
            c = self._clusters[name] = ClusterGrpcStats(self._root.scope(f"cluster.{name}"))
        return c


_registries: weakref.WeakKeyDictionary[Store, GrpcStatsRegistry] = weakref.WeakKeyDictionary()


def registry(store: Store) -> GrpcStatsRegistry:
    """The registry of ``store`` (made on first use)."""
    r = _registries.get(store)
    if r is None:
        r = _registries[store] = GrpcStatsRegistry(store.root)
    return r


def stream_cluster(callbacks: _Callbacks) -> str | None:
    """The cluster a stream's stats go to, known when the request headers are decoded (Envoy's
    ``clusterInfo()``): the one the router already chose, else the route's cluster. The router
    runs after the gRPC filters, so in a real chain it is the route's; a route that picks its
    cluster per request (``weighted_clusters``, ``cluster_header``) has none here and its calls
    are not counted."""
    chosen = callbacks.cluster_name
    if chosen is not None:
        return chosen
    route = callbacks.route()
    return route.cluster_name if route is not None else None
