"""Load balancers. State is per process, as Envoy's is per worker.

Every policy shares Envoy's two-level choice (LoadBalancerBase): first a *priority*, by the
priority load that healthy (then degraded) hosts earn — ``overprovisioning_factor`` (140 %) times
the healthy share, spilling to the next priority when a level is not healthy enough — then a host
inside that priority. A priority whose healthy share is under ``healthy_panic_threshold`` (50 %)
is in *panic*: its hosts are chosen from all of them, healthy or not (``lb_healthy_panic``).
With ``locality_weighted_lb_config`` a locality is chosen first, by its weight times its
availability. The policies differ in how they pick inside a set of hosts:

* ROUND_ROBIN: in turn; weighted (earliest-deadline-first) when weights differ;
* LEAST_REQUEST: the fewest active requests of ``choice_count`` random picks, or weighted EDF
  with ``weight / (active + 1) ** active_request_bias`` when weights differ;
* RANDOM: uniformly at random (weights ignored, as in Envoy);
* RING_HASH and MAGLEV (:mod:`envoi.upstream.hash_lb`): by the request's hash.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from envoi.upstream.host import Host, HostSet

if TYPE_CHECKING:
    from envoi.upstream.cluster import Cluster

#: ``pick(hash_key)`` returns a host of the set it was built for (hash_key may be None).
Picker = Callable[[int | None], Host]
T = TypeVar("T")


class LoadBalancerContext:
    """What one request tells the load balancer: ``hash_key``, the route's ``hash_policy`` hash
    (None: no hash; consistent-hash policies then pick at random)."""

    __slots__ = ("hash_key",)

    def __init__(self, hash_key: int | None = None) -> None:
        self.hash_key = hash_key


@dataclass(frozen=True)
class LbParams:
    """The cluster's load-balancing settings (``common_lb_config`` and the policy's own)."""

    panic_threshold: float = 50.0
    locality_weighted: bool = False
    choice_count: int = 2
    active_request_bias: float = 1.0
    ring_min: int = 1024
    ring_max: int = 8 * 1024 * 1024
    use_hostname_for_hashing: bool = False
    maglev_table_size: int = 65537
    #: ``common_lb_config.ignore_new_hosts_until_first_hc``: a new host takes no traffic until
    #: its first health check (``/pending_active_hc``).
    ignore_new_hosts_until_first_hc: bool = False


class EdfScheduler(Generic[T]):
    """Earliest deadline first: each pick takes the entry with the earliest deadline and puts it
    back ``1 / weight`` later, so picks are proportional to weight and evenly interleaved."""

    def __init__(self, items: Sequence[T], weight: Callable[[T], float]) -> None:
        self.weight = weight
        self._order = itertools.count()
        self.heap: list[tuple[float, int, T]] = []
        for item in items:
            w = weight(item)
            if w > 0:
                self.heap.append((1.0 / w, next(self._order), item))
        heapq.heapify(self.heap)

    def pick(self) -> T | None:
        if not self.heap:
            return None
        deadline, _, item = heapq.heappop(self.heap)
        w = self.weight(item)
        heapq.heappush(self.heap, (deadline + 1.0 / max(w, 1e-9), next(self._order), item))
        return item


def _equal_weights(hosts: Sequence[Host]) -> bool:
    return len({h.weight for h in hosts}) <= 1


class LoadBalancer:
    """Base: ``choose_host(context)`` returns a host or None; ``hosts_changed`` is called
    whenever the cluster's membership or some host's health changed. ``healthy`` holds every
    host ``choose_host`` may return (empty: it returns None)."""

    def __init__(self, hosts: list[Host], params: LbParams | None = None,
                 cluster: Cluster | None = None) -> None:
        self.params = params or LbParams()
        self.cluster = cluster
        self.rng = random.Random()
        self.hosts_changed(hosts)

    # -- the priority level ----------------------------------------------------------------

    def _host_sets(self, hosts: list[Host]) -> list[HostSet]:
        if self.cluster is not None and self.cluster.priority_set:
            return self.cluster.priority_set
        sets: list[HostSet] = []
        for h in hosts:
            while len(sets) <= h.priority:
                sets.append(HostSet(len(sets)))
            sets[h.priority].hosts.append(h)
        return sets

    def hosts_changed(self, hosts: list[Host]) -> None:
        self.all_hosts = hosts
        sets = self._host_sets(hosts)
        self.host_sets = sets
        n = len(sets)
        healthy = [[h for h in s.hosts if h.healthy] for s in sets]
        degraded = [[h for h in s.hosts if h.degraded] for s in sets]
        healthy_av = [0] * n
        degraded_av = [0] * n
        panic = [False] * n
        for i, s in enumerate(sets):
            total = len(s.hosts) - sum(1 for h in s.hosts if h.excluded)
            if total > 0:
                of = s.overprovisioning_factor
                healthy_av[i] = min(100, of * len(healthy[i]) // total)
                degraded_av[i] = min(100, of * len(degraded[i]) // total)
            share = 100.0 * (len(healthy[i]) + len(degraded[i])) / total if total > 0 else 0.0
            panic[i] = self.params.panic_threshold > 0 and share < self.params.panic_threshold
        total_av = min(100, sum(healthy_av) + sum(degraded_av))
        healthy_load = [0] * n
        degraded_load = [0] * n
        if n and total_av == 0:
            # Every level is unusable: Envoy's "total panic" spreads load by host count.
            all_count = sum(len(s.hosts) for s in sets)
            if all_count:
                for i, s in enumerate(sets):
                    healthy_load[i] = 100 * len(s.hosts) // all_count
                first = next(i for i, s in enumerate(sets) if s.hosts)
                healthy_load[first] += 100 - sum(healthy_load)
            panic = [bool(self.params.panic_threshold > 0)] * n
        elif n:
            left = 100
            for i in range(n):
                healthy_load[i] = min(left, healthy_av[i] * 100 // total_av)
                left -= healthy_load[i]
            for i in range(n):
                degraded_load[i] = min(left, degraded_av[i] * 100 // total_av)
                left -= degraded_load[i]
            if left:  # rounding: to the first level with any availability
                first = next(i for i in range(n) if healthy_av[i] or degraded_av[i])
                if healthy_av[first]:
                    healthy_load[first] += left
                else:
                    degraded_load[first] += left
        self.healthy_load = healthy_load
        self.degraded_load = degraded_load
        self.panic = panic
        self._healthy_lists = healthy
        self._degraded_lists = degraded
        # (cumulative load, priority, degraded?) for the levels that take any load.
        steps: list[tuple[int, int, bool]] = []
        acc = 0
        for i in range(n):
            if healthy_load[i]:
                acc += healthy_load[i]
                steps.append((acc, i, False))
        for i in range(n):
            if degraded_load[i]:
                acc += degraded_load[i]
                steps.append((acc, i, True))
        self._steps = steps
        usable: list[Host] = []
        for _, i, deg in steps:
            usable.extend(self._candidates(i, deg))
        self.healthy = usable
        self._pickers: dict[Any, Picker | None] = {}
        self._rebuild()
        # The common case, one level taking all the load and not in panic, skips the choice.
        self._fast: Picker | None = None
        if len(steps) == 1 and not panic[steps[0][1]] and not self._locality_weighted(
                steps[0][1]):
            self._fast = self._picker((steps[0][1], steps[0][2], None))

    def _candidates(self, priority: int, degraded: bool) -> list[Host]:
        if self.panic[priority]:
            return list(self.host_sets[priority].hosts)
        return (self._degraded_lists if degraded else self._healthy_lists)[priority]

    def _locality_weighted(self, priority: int) -> bool:
        return self.params.locality_weighted and bool(self.host_sets[priority].locality_weights)

    def _choose_level(self, r: int) -> tuple[int, bool] | None:
        """The level that the number ``r`` in [0, 100) falls in."""
        for acc, i, deg in self._steps:
            if r < acc:
                return i, deg
        if self._steps:
            _, i, deg = self._steps[-1]
            return i, deg
        return None

    def _rebuild(self) -> None:
        """Hook: a subclass drops whatever it precomputed for the old hosts."""

    def _make_picker(self, hosts: list[Host]) -> Picker | None:
        raise NotImplementedError

    def _picker(self, key: tuple[int, bool, Any]) -> Picker | None:
        if key in self._pickers:
            return self._pickers[key]
        priority, degraded, locality = key
        hosts = self._candidates(priority, degraded)
        if locality is not None:
            hosts = [h for h in hosts if h.locality == locality]
        p = self._make_picker(hosts) if hosts else None
        self._pickers[key] = p
        return p

    def _choose_locality(self, priority: int, degraded: bool) -> Any:
        key = ("locality", priority, degraded)
        sched = self._pickers.get(key)
        if sched is None:
            hs = self.host_sets[priority]
            cands = self._candidates(priority, degraded)
            weights: dict[Any, float] = {}
            for loc, w in hs.locality_weights.items():
                total = sum(1 for h in hs.hosts if h.locality == loc)
                ok = sum(1 for h in cands if h.locality == loc)
                if total and ok:
                    weights[loc] = w * min(1.0, hs.overprovisioning_factor / 100 * ok / total)
            edf: EdfScheduler[Any] = EdfScheduler(list(weights), weights.__getitem__)
            sched = self._pickers[key] = lambda _k: edf.pick()  # type: ignore[assignment,return-value]
        return sched(None) if sched is not None else None

    def _select(self, hash_key: int | None, r: int) -> Host | None:
        level = self._choose_level(r)
        if level is None:
            return None
        priority, degraded = level
        if self.panic[priority] and self.cluster is not None:
            self.cluster.stats.lb_healthy_panic.value += 1
        locality = None
        if self._locality_weighted(priority) and not self.panic[priority]:
            locality = self._choose_locality(priority, degraded)
        p = self._picker((priority, degraded, locality))
        return p(hash_key) if p is not None else None

    def choose_host(self, context: Any = None) -> Host | None:
        fast = self._fast
        if fast is not None:
            return fast(None)
        return self._select(None, self.rng.randrange(100))


class RoundRobin(LoadBalancer):
    """In turn; weighted round robin (earliest deadline first) when the weights differ."""

    def _make_picker(self, hosts: list[Host]) -> Picker | None:
        if _equal_weights(hosts):
            ring = list(hosts)
            size = len(ring)
            state = [0]

            def pick(_key: int | None) -> Host:
                i = state[0]
                if i >= size:
                    i = 0
                state[0] = i + 1
                return ring[i]

            return pick
        edf = EdfScheduler(hosts, lambda h: float(max(1, h.weight)))
        return lambda _key: edf.pick()  # type: ignore[return-value]


class Random(LoadBalancer):
    """Uniformly at random among the usable hosts (Envoy's RANDOM ignores weights)."""

    def _make_picker(self, hosts: list[Host]) -> Picker | None:
        choice = self.rng.choice
        return lambda _key: choice(hosts)


class LeastRequest(LoadBalancer):
    """Power of ``choice_count`` choices on active requests; weighted EDF when weights differ."""

    choice_count = 2

    def _make_picker(self, hosts: list[Host]) -> Picker | None:
        params = self.params
        if len(hosts) == 1:
            only = hosts[0]
            return lambda _key: only
        if _equal_weights(hosts):
            n = params.choice_count
            rand = self.rng.randrange
            size = len(hosts)

            def pick(_key: int | None) -> Host:
                best = hosts[rand(size)]
                for _ in range(n - 1):
                    h = hosts[rand(size)]
                    if h.rq_active < best.rq_active:
                        best = h
                return best

            return pick
        bias = params.active_request_bias

        def weight(h: Host) -> float:
            if bias == 0:
                return float(h.weight)
            if bias == 1.0:
                return h.weight / (h.rq_active + 1)
            return float(h.weight / (h.rq_active + 1) ** bias)

        edf = EdfScheduler(hosts, weight)
        return lambda _key: edf.pick()  # type: ignore[return-value]
