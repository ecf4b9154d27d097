"""The cluster manager: builds clusters from config and finds them by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError, ConfigIssue, duration_seconds
from envoi.extensions import ClusterTypeFactory, FactoryContext, LoadBalancerFactory
from envoi.stats import Counter, Gauge, Scope, StatsGroup
from envoi.upstream.cluster import Cluster, ClusterStats, Thresholds

if TYPE_CHECKING:
    from envoi.plugins import Plugins


class ClusterManagerStats(StatsGroup):
    cluster_added: Counter
    cluster_modified: Counter
    cluster_removed: Counter
    cluster_updated: Counter
    cluster_updated_via_merge: Counter
    update_merge_cancelled: Counter
    update_out_of_merge_window: Counter
    active_clusters: Gauge
    warming_clusters: Gauge


class ClusterManager:
    def __init__(self, plugins: Plugins, scope: Scope) -> None:
        self.plugins = plugins
        self.scope = scope
        self.clusters: dict[str, Cluster] = {}
        #: True when clusters may arrive later (CDS); until then unknown names are config errors.
        self.dynamic_clusters = False
        self.stats = ClusterManagerStats(scope.scope("cluster_manager"))
        self.stats.warming_clusters.set(0)

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def add_static(self, configs: Any, context: FactoryContext) -> None:
        issues: list[ConfigIssue] = []
        for i, cfg in enumerate(configs):
            path = f"static_resources.clusters[{i}]"
            if cfg.name in self.clusters:
                issues.append(ConfigIssue(path + ".name", f"duplicate cluster name '{cfg.name}'"))
                continue
            try:
                self.add(cfg, context, path)
            except ConfigError as exc:
                issues.extend(exc.errors)
        if issues:
            raise ConfigError(issues)

    def add(self, cfg: Any, context: FactoryContext, path: str) -> Cluster:
        stat_name = cfg.alt_stat_name or cfg.name
        stats = ClusterStats(self.scope.scope(f"cluster.{stat_name}"))
        cluster = Cluster(
            name=cfg.name,
            stats=stats,
            observability_name=stat_name,
            config=cfg,
        )
        if cfg.HasField("connect_timeout"):
            cluster.connect_timeout = duration_seconds(cfg.connect_timeout)
        if cfg.HasField("per_connection_buffer_limit_bytes"):
            cluster.buffer_limit = cfg.per_connection_buffer_limit_bytes.value
        for t in cfg.circuit_breakers.thresholds:
            prio = "HIGH" if t.priority == 1 else "DEFAULT"
            th = Thresholds()
            if t.HasField("max_connections"):
                th.max_connections = t.max_connections.value
            if t.HasField("max_pending_requests"):
                th.max_pending_requests = t.max_pending_requests.value
            if t.HasField("max_requests"):
                th.max_requests = t.max_requests.value
            if t.HasField("max_retries"):
                th.max_retries = t.max_retries.value
            cluster.thresholds[prio] = th
        ctx = context.with_path(path, scope=stats.scope)
        type_factory = self._cluster_type(cfg, path)
        result = ctx.run_factory(type_factory, lambda: type_factory.create_cluster(cfg, ctx))
        if not isinstance(result, Sequence):
            # A discovery (DNS, EDS...): it resolves its first hosts now and refreshes them
            # from a task the server starts.
            cluster.discovery = result
            hosts = result.resolve_now(cluster)
        else:
            hosts = list(result)
        lb_factory = self._lb_policy(cfg, path)
        cluster.hosts = list(hosts) if hosts is not None else []
        cluster.lb = lb_factory.create_load_balancer(cluster, cfg)
        cluster.set_hosts(cluster.hosts)
        cluster.count_new_hosts(len(cluster.hosts))
        stats.membership_change.value = 1 if cluster.hosts else 0
        self.clusters[cfg.name] = cluster
        self.stats.cluster_added.inc()
        self.stats.active_clusters.set(len(self.clusters))
        return cluster

    def _cluster_type(self, cfg: Any, path: str) -> ClusterTypeFactory:
        if cfg.HasField("cluster_type"):
            ext = cfg.cluster_type
            url = ext.typed_config.type_url if ext.HasField("typed_config") else None
            return self.plugins.lookup(
                ClusterTypeFactory,  # type: ignore[type-abstract]
                ext.name, url, path + ".cluster_type"
            )
        type_name = cfg.DiscoveryType.Name(cfg.type)
        for factory in self.plugins.factories(ClusterTypeFactory.category):
            assert isinstance(factory, ClusterTypeFactory)
            if type_name in factory.cluster_types:
                return factory
        raise ConfigError(
            [ConfigIssue(path + ".type", f"cluster type {type_name} is not supported by envoi")]
        )

    def _lb_policy(self, cfg: Any, path: str) -> LoadBalancerFactory:
        policy = cfg.LbPolicy.Name(cfg.lb_policy)
        for factory in self.plugins.factories(LoadBalancerFactory.category):
            assert isinstance(factory, LoadBalancerFactory)
            if policy in factory.lb_policies:
                return factory
        raise ConfigError(
            [ConfigIssue(path + ".lb_policy", f"lb_policy {policy} is not supported by envoi")]
        )
