"""The core's built-in cluster type (STATIC) and load balancers, registered like any plugin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.config import ConfigError, ConfigIssue
from envoi.extensions import ClusterTypeFactory, FactoryContext, LoadBalancerFactory
from envoi.upstream.cluster import Host
from envoi.upstream.lb import LeastRequest, LoadBalancer, Random, RoundRobin


def hosts_from_load_assignment(assignment: Any, path: str) -> list[Host]:
    """Turn a ClusterLoadAssignment into hosts; STATIC needs IP addresses, not names."""
    import ipaddress

    hosts: list[Host] = []
    for i, locality_eps in enumerate(assignment.endpoints):
        loc = locality_eps.locality
        for j, lb_ep in enumerate(locality_eps.lb_endpoints):
            ep_path = f"{path}.endpoints[{i}].lb_endpoints[{j}].endpoint.address"
            sa = lb_ep.endpoint.address.socket_address
            if not sa.address:
                raise ConfigError([ConfigIssue(ep_path, "a socket_address is required")])
            try:
                ipaddress.ip_address(sa.address)
            except ValueError:
                raise ConfigError(
                    [
                        ConfigIssue(
                            ep_path + ".socket_address.address",
                            f"malformed IP address: {sa.address} (STATIC clusters take IP "
                            "addresses; use STRICT_DNS for names)",
                        )
                    ]
                ) from None
            weight = lb_ep.load_balancing_weight.value if lb_ep.HasField(
                "load_balancing_weight"
            ) else 1
            host = Host(
                sa.address,
                sa.port_value,
                hostname=lb_ep.endpoint.hostname,
                weight=weight,
                priority=locality_eps.priority,
                locality=(loc.region, loc.zone, loc.sub_zone),
            )
            hosts.append(host)
    return hosts


class StaticCluster(ClusterTypeFactory):
    name = "envoy.cluster.static"
    cluster_types = ("STATIC",)

    def create_cluster(self, cluster_config: Any, context: FactoryContext) -> list[Host]:
        return hosts_from_load_assignment(cluster_config.load_assignment, context.path +
                                          ".load_assignment")


class _PolicyFactory(LoadBalancerFactory):
    lb_class: type[LoadBalancer] = RoundRobin

    def create_load_balancer(self, cluster: Any, config: Any) -> LoadBalancer:
        return self.lb_class(cluster.hosts)


class RoundRobinPolicy(_PolicyFactory):
    name = "envoy.load_balancing_policies.round_robin"
    lb_policies = ("ROUND_ROBIN",)
    type_urls = ("envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",)
    lb_class = RoundRobin


class RandomPolicy(_PolicyFactory):
    name = "envoy.load_balancing_policies.random"
    lb_policies = ("RANDOM",)
    type_urls = ("envoy.extensions.load_balancing_policies.random.v3.Random",)
    lb_class = Random


class LeastRequestPolicy(_PolicyFactory):
    name = "envoy.load_balancing_policies.least_request"
    lb_policies = ("LEAST_REQUEST",)
    type_urls = ("envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",)
    lb_class = LeastRequest


@hookimpl
def envoi_cluster_types() -> Sequence[ClusterTypeFactory]:
    from envoi.upstream.dns import LogicalDnsCluster, StrictDnsCluster

    return [StaticCluster(), StrictDnsCluster(), LogicalDnsCluster()]


@hookimpl
def envoi_load_balancers() -> Sequence[LoadBalancerFactory]:
    return [RoundRobinPolicy(), RandomPolicy(), LeastRequestPolicy()]
