"""STRICT_DNS and LOGICAL_DNS clusters: endpoints named by host name, resolved and refreshed.

STRICT_DNS keeps every address each name resolves to as a host; LOGICAL_DNS keeps only the
first address of its one name (Envoy's intent: one logical host behind a name that resolves to a
changing set). Resolution is c-ares through ``aiodns`` — non-blocking, with the answers' TTLs,
``/etc/hosts`` first, and the nameservers the config names (``typed_dns_resolver_config``'s
c-ares ``resolvers``, ``dns_resolution_config.resolvers`` or the deprecated ``dns_resolvers``;
the system's ``/etc/resolv.conf`` otherwise).

Names are resolved once at config time (bounded by the query timeout), so the cluster has hosts
when the first connection arrives, as Envoy warms a cluster; then each name again after
``dns_refresh_rate`` (5 s), or after the answer's TTL with ``respect_dns_ttl``, plus up to
``dns_jitter``; after a failure, after ``dns_failure_refresh_rate`` (growing from its
``base_interval`` to its ``max_interval``). Every answer goes through the cluster's one host-set
update path (``Cluster.update_hosts``): a host whose address stays keeps its object, its
counters and its requests in flight. A failed resolution (no such name, no answer, a garbage
answer, a timeout) counts ``update_failure`` and keeps the hosts the name had.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiodns

from envoi.config import ConfigError, ConfigIssue, duration_seconds, implements
from envoi.extensions import ClusterTypeFactory, FactoryContext
from envoi.upstream.assignment import parse_load_assignment
from envoi.upstream.cluster import Cluster, Host

log = logging.getLogger("envoi.dns")

DEFAULT_REFRESH = 5.0
QUERY_TIMEOUT = 5.0  # c-ares' per-try timeout (Envoy's query_timeout_seconds default)
QUERY_TRIES = 4

# dns_lookup_family -> (families to ask for, preferred family or None for "keep all")
_FAMILIES: dict[str, tuple[int, int | None]] = {
    "AUTO": (socket.AF_UNSPEC, socket.AF_INET6),  # v6 when there is one, else v4 (Envoy's AUTO)
    "V4_ONLY": (socket.AF_INET, None),
    "V6_ONLY": (socket.AF_INET6, None),
    "V4_PREFERRED": (socket.AF_UNSPEC, socket.AF_INET),
    "ALL": (socket.AF_UNSPEC, None),
}
#: The Cluster fields DNS clusters act on (beyond the common ones).
IMPLEMENTED_FIELDS = frozenset({"dns_refresh_rate", "dns_failure_refresh_rate",
                                 "respect_dns_ttl", "dns_lookup_family", "dns_jitter",
                                 "dns_resolvers", "dns_resolution_config",
                                 "typed_dns_resolver_config"})
_CARES_FIELDS = frozenset({"resolvers", "query_timeout_seconds", "query_tries",
                           "dns_resolver_options"})


@dataclass(frozen=True)
class DnsSettings:
    """How a cluster resolves its names."""

    family: str = "AUTO"
    refresh: float = DEFAULT_REFRESH
    respect_ttl: bool = False
    jitter: float = 0.0
    failure_base: float | None = None  # dns_failure_refresh_rate; None: ``refresh``
    failure_max: float | None = None
    nameservers: tuple[str, ...] = ()  # "ip:port"; empty: the system's
    timeout: float = QUERY_TIMEOUT
    tries: int = QUERY_TRIES
    use_tcp: bool = False


@dataclass
class _Target:
    """One endpoint name: its template host and the addresses it resolved to last."""

    name: str
    port: int
    template: Host
    addresses: list[str] = field(default_factory=list)
    failures: int = 0


def note_max_weight(cluster: Cluster, hosts: list[Host]) -> None:
    """Envoy's dynamic host lists (DNS, EDS) set the ``max_host_weight`` gauge; STATIC leaves
    it at 0."""
    cluster.stats.max_host_weight.set(max((h.weight for h in hosts), default=0))


def pick_addresses(infos: Sequence[tuple[int, str]], prefer: int | None,
                   first_only: bool) -> list[str]:
    """(family, address) answers to the addresses ``dns_lookup_family`` keeps, in order."""
    addrs: list[str] = []
    for family, addr in infos:
        if addr not in addrs and (prefer is None or family == prefer):
            addrs.append(addr)
    if prefer is not None and not addrs:  # none of the preferred family: take the rest
        addrs = list(dict.fromkeys(a for _, a in infos))
    return addrs[:1] if first_only else addrs


def _socket_address_str(sa: Any) -> str:
    port = sa.port_value or 53
    return f"[{sa.address}]:{port}" if ":" in sa.address else f"{sa.address}:{port}"


class DnsDiscovery:
    """Resolves a cluster's names and keeps its hosts up to date."""

    def __init__(self, targets: list[_Target], settings: DnsSettings, first_only: bool) -> None:
        self.targets = targets
        self.settings = settings
        self.ask_family, self.prefer = _FAMILIES[settings.family]
        self.first_only = first_only
        self.rng = random.Random()

    def _resolver(self, loop: asyncio.AbstractEventLoop,
                  tries: int | None = None) -> aiodns.DNSResolver:
        s = self.settings
        kw: dict[str, Any] = {"timeout": s.timeout, "tries": tries or s.tries}
        if s.use_tcp:
            import pycares

            kw["flags"] = pycares.ARES_FLAG_USEVC
        return aiodns.DNSResolver(nameservers=list(s.nameservers) or None, loop=loop, **kw)

    async def _resolve(self, resolver: aiodns.DNSResolver, t: _Target
                       ) -> tuple[list[str], float | None]:
        """(addresses, smallest TTL) for one name; raises on any failure."""
        res = await resolver.getaddrinfo(t.name, family=socket.AddressFamily(self.ask_family),
                                         port=t.port, type=socket.SOCK_STREAM)
        infos = []
        ttls = []
        for node in res.nodes:
            addr = node.addr[0]
            infos.append((int(node.family), addr.decode() if isinstance(addr, bytes) else addr))
            if node.ttl:
                ttls.append(float(node.ttl))
        addrs = pick_addresses(infos, self.prefer, self.first_only)
        if not addrs:
            raise OSError(f"no addresses for {t.name}")
        return addrs, (min(ttls) if ttls else None)

    def _hosts(self) -> dict[int, list[Host]]:
        out: dict[int, list[Host]] = {}
        for t in self.targets:
            for addr in t.addresses:
                h = t.template
                out.setdefault(h.priority, []).append(Host(
                    addr, t.port, hostname=t.name, weight=h.weight, priority=h.priority,
                    locality=h.locality, health_check_address=h.health_check_address))
        return out

    def _apply(self, cluster: Cluster) -> bool:
        hosts = self._hosts()
        note_max_weight(cluster, [h for hs in hosts.values() for h in hs])
        top = max([len(cluster.priority_set) - 1, *hosts], default=-1)
        changed = False
        for p in range(top + 1):
            added, removed = cluster.update_hosts(p, hosts.get(p, []))
            changed = changed or bool(added or removed)
        return changed

    async def _round(self, cluster: Cluster, resolver: aiodns.DNSResolver,
                     t: _Target) -> float:
        """Resolve one name and apply it; returns the seconds until its next resolution."""
        s = self.settings
        st = cluster.stats
        st.update_attempt.inc()
        try:
            addrs, ttl = await self._resolve(resolver, t)
        except (aiodns.error.DNSError, OSError, ValueError) as exc:
            st.update_failure.inc()
            t.failures += 1
            log.warning("cluster %s: cannot resolve %s: %s", cluster.name, t.name, exc)
            if s.failure_base is None:
                return s.refresh
            backoff: float = s.failure_base * 2.0 ** (t.failures - 1)
            return min(backoff, s.failure_max or s.refresh)
        t.failures = 0
        st.update_success.inc()
        if addrs == t.addresses:
            st.update_no_rebuild.inc()
        else:
            t.addresses = addrs
            if not self._apply(cluster):
                st.update_no_rebuild.inc()
        delay = ttl if s.respect_ttl and ttl else s.refresh
        if s.jitter:
            delay += self.rng.uniform(0, s.jitter)
        return delay

    def resolve_now(self, cluster: Cluster) -> list[Host]:
        """The first resolution, at config time (bounded by the query timeout). Inside a
        running event loop (a cluster added later) the refresh task does it instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return []
        loop = asyncio.new_event_loop()
        try:
            self._next = loop.run_until_complete(self._first_round(cluster, loop))
        finally:
            loop.close()
        hosts = [h for hs in self._hosts().values() for h in hs]
        note_max_weight(cluster, hosts)
        return hosts

    async def _first_round(self, cluster: Cluster,
                           loop: asyncio.AbstractEventLoop) -> list[float]:
        # At most two tries here: an unreachable nameserver must not hold the start long.
        resolver = self._resolver(loop, tries=min(2, self.settings.tries))
        try:
            return list(await asyncio.gather(*(
                self._round_first(cluster, resolver, t, self.settings) for t in self.targets)))
        finally:
            await resolver.close()

    async def _round_first(self, cluster: Cluster, resolver: aiodns.DNSResolver, t: _Target,
                           s: DnsSettings) -> float:
        st = cluster.stats
        st.update_attempt.inc()
        try:
            t.addresses, ttl = await self._resolve(resolver, t)
        except (aiodns.error.DNSError, OSError, ValueError) as exc:
            st.update_failure.inc()
            t.failures += 1
            log.warning("cluster %s: cannot resolve %s: %s", cluster.name, t.name, exc)
            return s.failure_base or s.refresh
        st.update_success.inc()
        return float(ttl if s.respect_ttl and ttl else s.refresh)

    async def run(self, cluster: Cluster) -> None:
        """Re-resolve each name on its own schedule for as long as the server runs."""
        delays: list[float] = getattr(self, "_next", None) or [0.0] * len(self.targets)
        await asyncio.gather(*(self._keep(cluster, t, d)
                               for t, d in zip(self.targets, delays, strict=True)))

    async def _keep(self, cluster: Cluster, t: _Target, delay: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(delay)
            # A fresh c-ares channel each time: c-ares would otherwise answer from its query
            # cache for the record's whole TTL, and dns_refresh_rate asks the servers anew.
            resolver = self._resolver(loop)
            try:
                delay = await self._round(cluster, resolver, t)
            finally:
                await resolver.close()


# envoi.config.implemented: the DNS fields dns_settings reads (it refuses the values it does
# not handle itself).
implements("envoy.config.cluster.v3.Cluster",
           "dns_lookup_family", "dns_refresh_rate", "respect_dns_ttl", "dns_jitter",
           "dns_failure_refresh_rate", "dns_resolvers", "use_tcp_for_dns_lookups",
           "dns_resolution_config", "typed_dns_resolver_config")
implements("envoy.config.cluster.v3.Cluster.RefreshRate", "base_interval", "max_interval")
implements("envoy.config.core.v3.DnsResolutionConfig", "resolvers", "dns_resolver_options")
implements("envoy.config.core.v3.DnsResolverOptions", "use_tcp_for_dns_lookups")
implements("envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
           *_CARES_FIELDS)


def dns_settings(cfg: Any, path: str) -> DnsSettings:
    """A cluster's DNS fields to DnsSettings; raises ConfigError naming unsupported fields."""
    issues: list[ConfigIssue] = []
    fd = cfg.DESCRIPTOR.fields_by_name["dns_lookup_family"]
    kw: dict[str, Any] = {"family": fd.enum_type.values_by_number[cfg.dns_lookup_family].name}
    if cfg.HasField("dns_refresh_rate"):
        kw["refresh"] = duration_seconds(cfg.dns_refresh_rate) or DEFAULT_REFRESH
    kw["respect_ttl"] = cfg.respect_dns_ttl
    if cfg.HasField("dns_jitter"):
        kw["jitter"] = duration_seconds(cfg.dns_jitter)
    if cfg.HasField("dns_failure_refresh_rate"):
        fr = cfg.dns_failure_refresh_rate
        kw["failure_base"] = duration_seconds(fr.base_interval)
        kw["failure_max"] = (duration_seconds(fr.max_interval) if fr.HasField("max_interval")
                             else kw["failure_base"] * 10)
        if kw["failure_max"] < kw["failure_base"]:
            issues.append(ConfigIssue(path + ".dns_failure_refresh_rate.max_interval",
                                      "must not be smaller than base_interval"))
    servers: list[str] = [_socket_address_str(a.socket_address) for a in cfg.dns_resolvers]
    if cfg.use_tcp_for_dns_lookups:
        kw["use_tcp"] = True
    if cfg.HasField("dns_resolution_config"):
        rc = cfg.dns_resolution_config
        servers += [_socket_address_str(a.socket_address) for a in rc.resolvers]
        kw["use_tcp"] = kw.get("use_tcp", False) or rc.dns_resolver_options.use_tcp_for_dns_lookups
        if rc.dns_resolver_options.no_default_search_domain:
            issues.append(ConfigIssue(path + ".dns_resolution_config.dns_resolver_options."
                                      "no_default_search_domain", "is not supported by envoi"))
    if cfg.HasField("typed_dns_resolver_config"):
        tdr = cfg.typed_dns_resolver_config
        p = path + ".typed_dns_resolver_config"
        url = tdr.typed_config.type_url.rsplit("/", 1)[-1]
        if url != "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig":
            issues.append(ConfigIssue(p, f"DNS resolver {tdr.name or url} is not supported by "
                                      "envoi (only envoy.network.dns_resolver.cares)"))
        else:
            from envoy.extensions.network.dns_resolver.cares.v3 import (
                cares_dns_resolver_pb2 as cares,
            )

            cc = cares.CaresDnsResolverConfig()
            tdr.typed_config.Unpack(cc)
            issues += [ConfigIssue(f"{p}.typed_config.{f.name}", "is not supported by envoi")
                       for f, _ in cc.ListFields() if f.name not in _CARES_FIELDS]
            servers += [_socket_address_str(a.socket_address) for a in cc.resolvers]
            if cc.query_timeout_seconds.value:
                kw["timeout"] = float(cc.query_timeout_seconds.value)
            if cc.query_tries.value:
                kw["tries"] = cc.query_tries.value
            opts = cc.dns_resolver_options
            kw["use_tcp"] = kw.get("use_tcp", False) or opts.use_tcp_for_dns_lookups
            if opts.no_default_search_domain:
                issues.append(ConfigIssue(f"{p}.typed_config.dns_resolver_options."
                                          "no_default_search_domain",
                                          "is not supported by envoi"))
    kw["nameservers"] = tuple(servers)
    if issues:
        raise ConfigError(issues)
    return DnsSettings(**kw)


class _DnsClusterFactory(ClusterTypeFactory):
    first_only = False

    def create_cluster(self, cluster_config: Any, context: FactoryContext) -> DnsDiscovery:
        cfg = cluster_config
        path = context.path
        la, names = parse_load_assignment(cfg.load_assignment, path + ".load_assignment",
                                          resolve_names=True)
        targets = [_Target(name, port, template) for name, port, template in names]
        # An IP address resolves to itself (Envoy accepts them in DNS clusters too).
        targets += [_Target(h.address, h.port, h) for h in la.hosts]
        if self.first_only and len(targets) != 1:
            raise ConfigError([ConfigIssue(path + ".load_assignment",
                                           "LOGICAL_DNS clusters must have a single host")])
        return DnsDiscovery(targets, dns_settings(cfg, path), self.first_only)


class StrictDnsCluster(_DnsClusterFactory):
    name = "envoy.cluster.strict_dns"
    cluster_types = ("STRICT_DNS",)


class LogicalDnsCluster(_DnsClusterFactory):
    name = "envoy.cluster.logical_dns"
    cluster_types = ("LOGICAL_DNS",)
    first_only = True
