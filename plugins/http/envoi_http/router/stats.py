"""Per-response-code stats: ``cluster.<c>.upstream_rq_<code>`` and the vhost/route sets.

Envoy creates ``upstream_rq_200`` and friends on first use; so do we, caching the counters of
each code so a response costs one dict lookup.
"""

from __future__ import annotations

from envoi.stats import Counter, Histogram, Scope, StatsGroup


class CodeStats:
    """``<prefix>upstream_rq_<code>``, ``_<class>xx`` and ``_completed``, made on first use."""

    __slots__ = ("_by_code", "_completed", "prefix", "scope")

    def __init__(self, scope: Scope, prefix: str = "") -> None:
        self.scope = scope
        self.prefix = prefix
        self._by_code: dict[int, tuple[Counter, Counter]] = {}
        self._completed: Counter | None = None  # made with the first code, as Envoy does

    @property
    def completed(self) -> Counter:
        c = self._completed
        if c is None:
            c = self._completed = self.scope.counter(self.prefix + "upstream_rq_completed")
        return c

    def record(self, code: int) -> None:
        pair = self._by_code.get(code)
        if pair is None:
            pair = self.pair(code)
        pair[0].value += 1
        pair[1].value += 1
        self.completed.value += 1

    def pair(self, code: int) -> tuple[Counter, Counter]:
        """The ``_<code>`` and ``_<class>xx`` counters (made on first use)."""
        pair = self._by_code.get(code)
        if pair is None:
            p = self.prefix
            pair = (self.scope.counter(f"{p}upstream_rq_{code}"),
                    self.scope.counter(f"{p}upstream_rq_{code // 100}xx"))
            self._by_code[code] = pair
        return pair


class RouterStats(StatsGroup):
    """The router's ``http.<stat_prefix>.*`` stats (Envoy's ``ALL_ROUTER_STATS``), beside the
    connection manager's in the same scope."""

    rq_total: Counter
    rq_direct_response: Counter
    rq_redirect: Counter
    no_route: Counter
    no_cluster: Counter
    rq_reset_after_downstream_response_started: Counter
    passthrough_internal_redirect_bad_location: Counter
    passthrough_internal_redirect_unsafe_scheme: Counter
    passthrough_internal_redirect_too_many_redirects: Counter
    passthrough_internal_redirect_no_route: Counter
    passthrough_internal_redirect_predicate: Counter


class RequestStats(StatsGroup):
    """The set Envoy keeps per virtual cluster and per route with a ``stat_prefix``."""

    upstream_rq_total: Counter
    upstream_rq_retry: Counter
    upstream_rq_retry_limit_exceeded: Counter
    upstream_rq_retry_success: Counter
    upstream_rq_retry_overflow: Counter
    upstream_rq_timeout: Counter
    upstream_rq_time: Histogram

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.codes = CodeStats(scope)


class ClusterHttpStats:
    """What the router adds to a cluster's scope: per-code sets for all, retried and external
    responses, and the upstream request time."""

    __slots__ = ("_answered", "codes", "external", "retry", "rq_time")

    def __init__(self, scope: Scope) -> None:
        self.codes = CodeStats(scope)
        self.retry = CodeStats(scope, "retry.")
        self.external = CodeStats(scope, "external.")
        self.rq_time = scope.histogram("upstream_rq_time")
        self._answered: dict[int, tuple[Counter, ...]] = {}

    def answered(self, code: int) -> None:
        """``codes.record(code)`` and ``external.record(code)`` in one lookup (every proxied
        response counts both)."""
        c = self._answered.get(code)
        if c is None:
            c = self._answered[code] = (*self.codes.pair(code), self.codes.completed,
                                        *self.external.pair(code), self.external.completed)
        a, b, d, e, f, g = c
        a.value += 1
        b.value += 1
        d.value += 1
        e.value += 1
        f.value += 1
        g.value += 1
