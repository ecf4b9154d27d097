"""ClusterLoadAssignment (``load_assignment``, and EDS) to hosts, by priority.

:func:`parse_load_assignment` turns the message into a :class:`LoadAssignment`, which
:meth:`LoadAssignment.apply` hands to :meth:`envoi.upstream.cluster.Cluster.update_hosts`, one
priority at a time. This is the EDS cluster side: an xDS subscription only has to call
:func:`apply_eds_update` with each ``ClusterLoadAssignment`` it receives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError, ConfigIssue, address_issue, implements
from envoi.upstream.host import DEGRADED_EDS_HEALTH, FAILED_EDS_HEALTH, Host

if TYPE_CHECKING:
    from envoi.upstream.cluster import Cluster

Locality = tuple[str, str, str]
# envoy.config.core.v3.HealthStatus: UNKNOWN 0, HEALTHY 1, UNHEALTHY 2, DRAINING 3, TIMEOUT 4,
# DEGRADED 5.
_EDS_UNHEALTHY = frozenset((2, 3, 4))
_EDS_DEGRADED = 5
_ENDPOINT_FIELDS = frozenset({"address", "hostname", "health_check_config"})
_LB_ENDPOINT_FIELDS = frozenset({"endpoint", "health_status", "load_balancing_weight"})
_LOCALITY_FIELDS = frozenset({"locality", "lb_endpoints", "load_balancing_weight", "priority"})

# envoi.config.implemented, from the lists parse_load_assignment checks.
implements("envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name", "endpoints",
           "policy")
implements("envoy.config.endpoint.v3.ClusterLoadAssignment.Policy", "overprovisioning_factor")
implements("envoy.config.endpoint.v3.LocalityLbEndpoints", *_LOCALITY_FIELDS)
implements("envoy.config.endpoint.v3.LbEndpoint", *_LB_ENDPOINT_FIELDS)
implements("envoy.config.endpoint.v3.Endpoint", *_ENDPOINT_FIELDS)
implements("envoy.config.endpoint.v3.Endpoint.HealthCheckConfig", "port_value", "address")
implements("envoy.config.core.v3.Locality", "region", "zone", "sub_zone")


@dataclass
class LoadAssignment:
    """Hosts and locality weights per priority, and the overprovisioning factor."""

    priorities: dict[int, list[Host]] = field(default_factory=dict)
    locality_weights: dict[int, dict[Locality, int]] = field(default_factory=dict)
    overprovisioning_factor: int | None = None

    @property
    def hosts(self) -> list[Host]:
        return [h for p in sorted(self.priorities) for h in self.priorities[p]]

    def apply(self, cluster: Cluster) -> bool:
        """Update ``cluster``; every priority it had and this one lacks is emptied. Returns
        whether the membership changed."""
        top = max([len(cluster.priority_set) - 1, *self.priorities], default=-1)
        changed = False
        for p in range(top + 1):
            added, removed = cluster.update_hosts(
                p, self.priorities.get(p, []),
                locality_weights=self.locality_weights.get(p),
                overprovisioning_factor=self.overprovisioning_factor)
            changed = changed or bool(added or removed)
        return changed


def _unsupported(msg: Any, implemented: frozenset[str], path: str) -> list[ConfigIssue]:
    return [ConfigIssue(f"{path}.{fd.name}", "is not supported by envoi")
            for fd, _ in msg.ListFields() if fd.name not in implemented]


def parse_load_assignment(cla: Any, path: str, *, resolve_names: bool = False
                          ) -> tuple[LoadAssignment, list[tuple[str, int, Host]]]:
    """Parse a ClusterLoadAssignment. Addresses must be IPs unless ``resolve_names`` (DNS
    clusters): then named endpoints are returned as ``(name, port, template host)`` for the
    caller to resolve, and the assignment holds only the IP ones."""
    la = LoadAssignment()
    names: list[tuple[str, int, Host]] = []
    issues: list[ConfigIssue] = []
    if cla.HasField("policy"):
        pol = cla.policy
        issues += _unsupported(pol, frozenset({"overprovisioning_factor"}), path + ".policy")
        if pol.HasField("overprovisioning_factor"):
            la.overprovisioning_factor = pol.overprovisioning_factor.value
    if cla.named_endpoints:
        issues.append(ConfigIssue(path + ".named_endpoints", "is not supported by envoi"))
    for i, leps in enumerate(cla.endpoints):
        lpath = f"{path}.endpoints[{i}]"
        issues += _unsupported(leps, _LOCALITY_FIELDS, lpath)
        loc = (leps.locality.region, leps.locality.zone, leps.locality.sub_zone)
        prio = leps.priority
        la.priorities.setdefault(prio, [])
        if leps.HasField("load_balancing_weight"):
            la.locality_weights.setdefault(prio, {})[loc] = leps.load_balancing_weight.value
        for j, lb_ep in enumerate(leps.lb_endpoints):
            epath = f"{lpath}.lb_endpoints[{j}]"
            issues += _unsupported(lb_ep, _LB_ENDPOINT_FIELDS, epath)
            ep = lb_ep.endpoint
            issues += _unsupported(ep, _ENDPOINT_FIELDS, epath + ".endpoint")
            sa = ep.address.socket_address
            if not sa.address:
                # A pipe/internal address is one "not implemented" line (merged with the
                # implemented-fields check), not also "socket_address required".
                issues.append(address_issue(ep.address, epath + ".endpoint.address")
                              if ep.address.WhichOneof("address") not in (None, "socket_address")
                              else ConfigIssue(epath + ".endpoint.address",
                                               "a socket_address is required"))
                continue
            weight = lb_ep.load_balancing_weight.value if lb_ep.HasField(
                "load_balancing_weight") else 1
            hc_addr = None
            if ep.HasField("health_check_config"):
                hcc = ep.health_check_config
                issues += _unsupported(hcc, frozenset({"port_value", "address"}),
                                       epath + ".endpoint.health_check_config")
                hc_host = sa.address
                if hcc.HasField("address"):
                    hc_host = hcc.address.socket_address.address
                hc_port = hcc.port_value or (hcc.address.socket_address.port_value
                                             if hcc.HasField("address") else 0) or sa.port_value
                hc_addr = (hc_host, hc_port)
            host = Host(sa.address, sa.port_value, hostname=ep.hostname, weight=weight,
                        priority=prio, locality=loc, health_check_address=hc_addr)
            if lb_ep.health_status in _EDS_UNHEALTHY:
                host.health_flags.add(FAILED_EDS_HEALTH)
            elif lb_ep.health_status == _EDS_DEGRADED:
                host.health_flags.add(DEGRADED_EDS_HEALTH)
            try:
                ipaddress.ip_address(sa.address)
            except ValueError:
                if resolve_names:
                    names.append((sa.address, sa.port_value, host))
                    continue
                issues.append(ConfigIssue(
                    epath + ".endpoint.address.socket_address.address",
                    f"malformed IP address: {sa.address} (STATIC and EDS clusters take IP "
                    "addresses; use STRICT_DNS for names)"))
                continue
            la.priorities[prio].append(host)
    if issues:
        raise ConfigError(issues)
    return la, names


def apply_eds_update(cluster: Cluster, cla: Any, path: str = "ClusterLoadAssignment") -> None:
    """Apply one EDS ``ClusterLoadAssignment`` to ``cluster``, counting Envoy's
    ``update_attempt``/``update_success``/``update_empty``/``update_no_rebuild``/``update_rejected``
    (the last for an assignment that does not parse; the hosts are then left as they were)."""
    st = cluster.stats
    st.update_attempt.inc()
    try:
        la, _ = parse_load_assignment(cla, path)
    except ConfigError:
        cluster.stats.scope.counter("update_rejected").inc()
        raise
    st.update_success.inc()
    # Envoy's dynamic host lists set max_host_weight (STATIC leaves it at 0).
    st.max_host_weight.set(max((h.weight for h in la.hosts), default=0))
    if not la.hosts:
        st.update_empty.inc()
    if not la.apply(cluster):
        st.update_no_rebuild.inc()
