"""The core's built-in cluster types (STATIC, STRICT_DNS, LOGICAL_DNS), load balancers
and health checkers, registered like any plugin's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import (
    ClusterTypeFactory,
    FactoryContext,
    HealthCheckerFactory,
    LoadBalancerFactory,
)
from envoi.upstream.assignment import LoadAssignment, parse_load_assignment
from envoi.upstream.hash_lb import Maglev, RingHash
from envoi.upstream.lb import LbParams, LeastRequest, LoadBalancer, Random, RoundRobin


class StaticCluster(ClusterTypeFactory):
    name = "envoy.cluster.static"
    cluster_types = ("STATIC",)

    def create_cluster(self, cluster_config: Any, context: FactoryContext) -> LoadAssignment:
        la, _ = parse_load_assignment(cluster_config.load_assignment,
                                      context.path + ".load_assignment")
        return la


class _PolicyFactory(LoadBalancerFactory):
    lb_class: type[LoadBalancer] = RoundRobin

    def create_load_balancer(self, cluster: Any, config: Any) -> LoadBalancer:
        params = getattr(cluster, "lb_params", None) or LbParams()
        return self.lb_class(cluster.hosts, params, cluster)


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


class RingHashPolicy(_PolicyFactory):
    name = "envoy.load_balancing_policies.ring_hash"
    lb_policies = ("RING_HASH",)
    type_urls = ("envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",)
    lb_class = RingHash


class MaglevPolicy(_PolicyFactory):
    name = "envoy.load_balancing_policies.maglev"
    lb_policies = ("MAGLEV",)
    type_urls = ("envoy.extensions.load_balancing_policies.maglev.v3.Maglev",)
    lb_class = Maglev


@hookimpl
def envoi_cluster_types() -> Sequence[ClusterTypeFactory]:
    from envoi.upstream.dns import LogicalDnsCluster, StrictDnsCluster

    return [StaticCluster(), StrictDnsCluster(), LogicalDnsCluster()]


@hookimpl
def envoi_load_balancers() -> Sequence[LoadBalancerFactory]:
    return [RoundRobinPolicy(), RandomPolicy(), LeastRequestPolicy(), RingHashPolicy(),
            MaglevPolicy()]


@hookimpl
def envoi_health_checkers() -> Sequence[HealthCheckerFactory]:
    from envoi.upstream.health_checkers import HttpHealthChecker, TcpHealthChecker

    return [HttpHealthChecker(), TcpHealthChecker()]
