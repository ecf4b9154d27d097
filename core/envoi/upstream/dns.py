"""STRICT_DNS and LOGICAL_DNS clusters: endpoints named by host name, resolved and refreshed.

STRICT_DNS keeps every address each name resolves to as a host; LOGICAL_DNS keeps only the
first address of each name (Envoy's intent: one logical host behind a name that resolves to a
changing set). Names are resolved once at config time, blocking, so the cluster has hosts when
the first connection arrives (Envoy warms the cluster the same way), then again every
``dns_refresh_rate`` (5 s default) on the event loop. A failed refresh keeps the hosts it had.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoi.config import ConfigError, ConfigIssue, duration_seconds
from envoi.extensions import ClusterTypeFactory, FactoryContext
from envoi.upstream.cluster import Cluster, Host

log = logging.getLogger("envoi.dns")

DEFAULT_REFRESH = 5.0

# dns_lookup_family -> (families to ask for, preferred family or None for "keep all")
_FAMILIES: dict[str, tuple[int, int | None]] = {
    "AUTO": (socket.AF_UNSPEC, socket.AF_INET6),  # v6 when there is one, else v4 (Envoy's AUTO)
    "V4_ONLY": (socket.AF_INET, None),
    "V6_ONLY": (socket.AF_INET6, None),
    "V4_PREFERRED": (socket.AF_UNSPEC, socket.AF_INET),
    "ALL": (socket.AF_UNSPEC, None),
}


@dataclass(frozen=True)
class _Endpoint:
    name: str
    port: int
    weight: int
    priority: int
    locality: tuple[str, str, str]


def _pick(infos: Sequence[Any], prefer: int | None, first_only: bool) -> list[str]:
    addrs: list[str] = []
    for family, _, _, _, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr not in addrs and (prefer is None or family == prefer):
            addrs.append(addr)
    if prefer is not None and not addrs:  # no address of the preferred family: take the rest
        addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
    return addrs[:1] if first_only else addrs


class DnsDiscovery:
    """Resolves a cluster's names and keeps its host list up to date."""

    def __init__(self, endpoints: list[_Endpoint], family: str, refresh: float,
                 first_only: bool) -> None:
        self.endpoints = endpoints
        self.family, self.prefer = _FAMILIES[family]
        self.refresh = refresh
        self.first_only = first_only

    def _hosts(self, resolved: list[list[str]], old: dict[tuple[str, int], Host]) -> list[Host]:
        hosts = []
        for ep, addrs in zip(self.endpoints, resolved, strict=True):
            for addr in addrs:
                # Keep a host's object (and its counters) when its address did not change.
                h = old.get((addr, ep.port)) or Host(addr, ep.port, hostname=ep.name,
                                                     weight=ep.weight, priority=ep.priority,
                                                     locality=ep.locality)
                hosts.append(h)
        return hosts

    def resolve_now(self, cluster: Cluster) -> list[Host]:
        """Blocking first resolution, at config time."""
        cluster.stats.update_attempt.inc()
        resolved: list[list[str]] = []
        failed = False
        for ep in self.endpoints:
            try:
                infos = socket.getaddrinfo(ep.name, ep.port, self.family, socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("cluster %s: cannot resolve %s: %s", cluster.name, ep.name, exc)
                failed = True
                resolved.append([])
                continue
            resolved.append(_pick(infos, self.prefer, self.first_only))
        if failed:
            cluster.stats.update_failure.inc()
        else:
            cluster.stats.update_success.inc()
        hosts = self._hosts(resolved, {})
        _note_max_weight(cluster, hosts)
        return hosts

    async def run(self, cluster: Cluster) -> None:
        """Refresh every ``dns_refresh_rate`` for as long as the server runs."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.refresh)
            cluster.stats.update_attempt.inc()
            resolved: list[list[str]] = []
            try:
                for ep in self.endpoints:
                    infos = await loop.getaddrinfo(ep.name, ep.port, family=self.family,
                                                   type=socket.SOCK_STREAM)
                    resolved.append(_pick(infos, self.prefer, self.first_only))
            except OSError as exc:
                log.warning("cluster %s: DNS refresh failed: %s", cluster.name, exc)
                cluster.stats.update_failure.inc()
                continue
            cluster.stats.update_success.inc()
            old = {(h.address, h.port): h for h in cluster.hosts}
            hosts = self._hosts(resolved, old)
            if [h.address_string for h in hosts] == [h.address_string for h in cluster.hosts]:
                cluster.stats.update_no_rebuild.inc()
                continue
            cluster.set_hosts(hosts)
            _note_max_weight(cluster, hosts)


def _note_max_weight(cluster: Cluster, hosts: list[Host]) -> None:
    """Envoy's dynamic host lists (DNS, EDS) set the ``max_host_weight`` gauge; STATIC leaves
    it at 0."""
    cluster.stats.max_host_weight.set(max((h.weight for h in hosts), default=0))


class _DnsClusterFactory(ClusterTypeFactory):
    first_only = False

    def create_cluster(self, cluster_config: Any, context: FactoryContext) -> DnsDiscovery:
        cfg = cluster_config
        path = context.path
        endpoints: list[_Endpoint] = []
        issues: list[ConfigIssue] = []
        for i, locality_eps in enumerate(cfg.load_assignment.endpoints):
            loc = locality_eps.locality
            for j, lb_ep in enumerate(locality_eps.lb_endpoints):
                sa = lb_ep.endpoint.address.socket_address
                if not sa.address:
                    issues.append(ConfigIssue(
                        f"{path}.load_assignment.endpoints[{i}].lb_endpoints[{j}].endpoint"
                        ".address", "a socket_address is required"))
                    continue
                weight = (lb_ep.load_balancing_weight.value
                          if lb_ep.HasField("load_balancing_weight") else 1)
                endpoints.append(_Endpoint(sa.address, sa.port_value, weight,
                                           locality_eps.priority,
                                           (loc.region, loc.zone, loc.sub_zone)))
        if self.first_only and len(endpoints) != 1:
            issues.append(ConfigIssue(path + ".load_assignment",
                                      "LOGICAL_DNS clusters must have a single host"))
        if issues:
            raise ConfigError(issues)
        fd = cfg.DESCRIPTOR.fields_by_name["dns_lookup_family"]
        family = fd.enum_type.values_by_number[cfg.dns_lookup_family].name
        refresh = (duration_seconds(cfg.dns_refresh_rate)
                   if cfg.HasField("dns_refresh_rate") else DEFAULT_REFRESH)
        return DnsDiscovery(endpoints, family, refresh or DEFAULT_REFRESH, self.first_only)


class StrictDnsCluster(_DnsClusterFactory):
    name = "envoy.cluster.strict_dns"
    cluster_types = ("STRICT_DNS",)


class LogicalDnsCluster(_DnsClusterFactory):
    name = "envoy.cluster.logical_dns"
    cluster_types = ("LOGICAL_DNS",)
    first_only = True
