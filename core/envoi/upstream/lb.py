"""Load balancers. State is per process, as Envoy's is per worker."""

from __future__ import annotations

import random
from typing import Any

from envoi.upstream.cluster import Host


class LoadBalancer:
    """Base: ``choose_host`` returns a healthy host or None. ``hosts_changed`` is called when the
    cluster's membership or health changes."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts_changed(hosts)

    def hosts_changed(self, hosts: list[Host]) -> None:
        self.all_hosts = hosts
        healthy = [h for h in hosts if h.healthy]
        # Envoy's panic threshold (50 %): with too few healthy hosts, balance over all of them.
        if hosts and len(healthy) * 2 < len(hosts):
            healthy = list(hosts)
        self.healthy = healthy

    def choose_host(self, context: Any = None) -> Host | None:
        raise NotImplementedError


class RoundRobin(LoadBalancer):
    """Weighted round robin: a host with weight 3 appears three times in the rotation."""

    def hosts_changed(self, hosts: list[Host]) -> None:
        super().hosts_changed(hosts)
        ring: list[Host] = []
        for h in self.healthy:
            ring.extend([h] * max(1, h.weight))
        self._ring = ring
        self._next = 0

    def choose_host(self, context: Any = None) -> Host | None:
        ring = self._ring
        if not ring:
            return None
        i = self._next
        if i >= len(ring):
            i = 0
        self._next = i + 1
        return ring[i]


class Random(LoadBalancer):
    def choose_host(self, context: Any = None) -> Host | None:
        if not self.healthy:
            return None
        return random.choices(self.healthy, weights=[max(1, h.weight) for h in self.healthy])[0]


class LeastRequest(LoadBalancer):
    """Power of two choices on active requests (Envoy's default ``choice_count`` is 2)."""

    choice_count = 2

    def choose_host(self, context: Any = None) -> Host | None:
        hosts = self.healthy
        if not hosts:
            return None
        if len(hosts) == 1:
            return hosts[0]
        picks = random.sample(hosts, min(self.choice_count, len(hosts)))
        return min(picks, key=lambda h: (h.rq_active + h.cx_active) / max(1, h.weight))
