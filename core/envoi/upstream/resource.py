"""Circuit breakers: Envoy's per-priority resource manager of a cluster.

Each routing priority (DEFAULT, HIGH) has its own limits on connections, pending requests,
requests, retries and connection pools. A user asks ``can_create()`` before taking one, then
``inc()``/``dec()``. The ``circuit_breakers.<priority>.*_open`` gauges are 1 while a resource is
at its limit; with ``track_remaining`` the ``remaining_*`` gauges say how many are left. A
``retry_budget`` replaces ``max_retries`` by a share of the active and pending requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoi.config import implements
from envoi.stats import Gauge, Scope

UINT64_MAX = 18446744073709551615  # max_connection_pools' default: no limit


#: The CircuitBreakers.Thresholds fields envoi acts on (``max_connection_pools`` is not).
IMPLEMENTED_FIELDS = frozenset({"priority", "max_connections", "max_pending_requests",
                                "max_requests", "max_retries", "retry_budget",
                                "track_remaining"})
implements("envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget",
           "budget_percent", "min_retry_concurrency")
implements("envoy.type.v3.Percent", "value")


@dataclass
class Thresholds:
    """One ``circuit_breakers.thresholds`` entry; Envoy's defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    max_connection_pools: int = UINT64_MAX
    track_remaining: bool = False
    #: ``retry_budget``: (budget_percent, min_retry_concurrency), or None for ``max_retries``.
    retry_budget: tuple[float, int] | None = None


def thresholds_from_proto(t: Any) -> Thresholds:
    """A ``Cluster.CircuitBreakers.Thresholds`` message to :class:`Thresholds`."""
    th = Thresholds()
    for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries",
                 "max_connection_pools"):
        if t.HasField(name):
            setattr(th, name, getattr(t, name).value)
    th.track_remaining = t.track_remaining
    if t.HasField("retry_budget"):
        rb = t.retry_budget
        percent = rb.budget_percent.value if rb.HasField("budget_percent") else 20.0
        minimum = rb.min_retry_concurrency.value if rb.HasField("min_retry_concurrency") else 3
        th.retry_budget = (percent, minimum)
    return th


class Resource:
    """One limited resource: a count, a limit, and the gauges that show them."""

    __slots__ = ("_max", "count", "open_gauge", "remaining_gauge")

    def __init__(self, limit: int, open_gauge: Gauge, remaining_gauge: Gauge | None) -> None:
        self._max = limit
        self.count = 0
        self.open_gauge = open_gauge
        self.remaining_gauge = remaining_gauge
        self._update()

    def max(self) -> int:
        return self._max

    # can_create/inc/dec run for every request: the plain limit is read as ``_max`` (one
    # attribute), the budget overrides them with its computed ``max()``.

    def can_create(self) -> bool:
        return self.count < self._max

    def inc(self) -> None:
        count = self.count = self.count + 1
        # _update() changes nothing below the limit, closed and without a remaining gauge
        # (every request's case: one comparison instead of a call).
        if count >= self._max or self.open_gauge.value or self.remaining_gauge is not None:
            self._update()

    def dec(self) -> None:
        count = self.count
        if count > 0:
            count = self.count = count - 1
        if count >= self._max or self.open_gauge.value or self.remaining_gauge is not None:
            self._update()

    def _update(self) -> None:
        # Set only on a change: Envoy's never-touched gauges stay out of ``?usedonly``.
        limit = self._max
        count = self.count
        is_open = 1 if count >= limit else 0
        if self.open_gauge.value != is_open:
            self.open_gauge.set(is_open)
        rg = self.remaining_gauge
        if rg is not None and (rg.value != limit - count or not rg.used):
            rg.set(max(0, limit - count))


class RetryBudget(Resource):
    """Retries limited to ``percent`` of the active + pending requests (at least ``minimum``)."""

    __slots__ = ("minimum", "pending", "percent", "requests")

    def __init__(self, percent: float, minimum: int, requests: Resource, pending: Resource,
                 open_gauge: Gauge, remaining_gauge: Gauge | None) -> None:
        self.percent = percent
        self.minimum = minimum
        self.requests = requests
        self.pending = pending
        super().__init__(0, open_gauge, remaining_gauge)

    def max(self) -> int:
        budget = int((self.requests.count + self.pending.count) * self.percent / 100)
        return max(budget, self.minimum)

    def can_create(self) -> bool:
        return self.count < self.max()

    # The budget's limit moves with other resources: always brought up to date.

    def inc(self) -> None:
        self.count += 1
        self._update()

    def dec(self) -> None:
        if self.count > 0:
            self.count -= 1
        self._update()

    def _update(self) -> None:
        self._max = self.max()  # (what the base class's checks read)
        super()._update()
        # Envoy: the budget depends on other resources, so its remaining gauge just says 0.
        if self.remaining_gauge is not None:
            self.remaining_gauge.set(0)


class ResourceManager:
    """The resources of one priority (``default`` or ``high``) of one cluster."""

    def __init__(self, th: Thresholds, scope: Scope, priority: str) -> None:
        self.thresholds = th
        s = scope.scope(f"circuit_breakers.{priority}")

        def remaining(name: str) -> Gauge | None:
            return s.gauge(f"remaining_{name}") if th.track_remaining else None

        self.connections = Resource(th.max_connections, s.gauge("cx_open"), remaining("cx"))
        self.pending_requests = Resource(th.max_pending_requests, s.gauge("rq_pending_open"),
                                         remaining("pending"))
        self.requests = Resource(th.max_requests, s.gauge("rq_open"), remaining("rq"))
        self.connection_pools = Resource(th.max_connection_pools, s.gauge("cx_pool_open"),
                                         remaining("cx_pools"))
        if th.retry_budget is not None:
            percent, minimum = th.retry_budget
            self.retries: Resource = RetryBudget(percent, minimum, self.requests,
                                                 self.pending_requests, s.gauge("rq_retry_open"),
                                                 remaining("retries"))
        else:
            self.retries = Resource(th.max_retries, s.gauge("rq_retry_open"),
                                    remaining("retries"))
