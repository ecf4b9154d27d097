"""The cluster manager: builds clusters from config and finds them by name."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from envoi.config import ConfigError, ConfigIssue, duration_seconds, implements
from envoi.extensions import (
    ClusterTypeFactory,
    FactoryContext,
    HealthCheckerFactory,
    LoadBalancerFactory,
)
from envoi.stats import Counter, Gauge, Scope, StatsGroup
from envoi.upstream import outlier
from envoi.upstream.assignment import LoadAssignment
from envoi.upstream.cluster import Cluster, ClusterStats, Host, Thresholds
from envoi.upstream.health_check import (
    CHANGED,
    ActiveHealthChecker,
    HealthCheckStats,
    HealthCheckTiming,
)
from envoi.upstream.health_check import IMPLEMENTED_FIELDS as HC_FIELDS
from envoi.upstream.lb_config import lb_params
from envoi.upstream.resource import IMPLEMENTED_FIELDS as BREAKER_FIELDS
from envoi.upstream.resource import thresholds_from_proto

if TYPE_CHECKING:
    from envoi.plugins import Plugins

log = logging.getLogger("envoi.upstream")

# What of a Cluster the cluster manager acts on (envoi.config.implemented refuses the rest);
# cluster types, load balancers and envoi-http's pools add theirs. type and lb_policy values
# without a factory are config errors below; the health check, outlier, breaker and LB messages
# are declared next to their code, from the same lists their checks use.
implements("envoy.config.cluster.v3.Cluster",
           "name", "alt_stat_name", "type", "cluster_type", "connect_timeout",
           "per_connection_buffer_limit_bytes", "lb_policy", "load_assignment",
           "circuit_breakers", "health_checks", "outlier_detection", "load_balancing_policy",
           "transport_socket")
implements("envoy.config.cluster.v3.Cluster.CustomClusterType", "name", "typed_config")
implements("envoy.config.cluster.v3.CircuitBreakers", "thresholds")
implements("envoy.config.cluster.v3.CircuitBreakers.Thresholds", *BREAKER_FIELDS)
implements("envoy.config.cluster.v3.LoadBalancingPolicy", "policies")
implements("envoy.config.cluster.v3.LoadBalancingPolicy.Policy", "typed_extension_config")
implements("envoy.config.core.v3.TypedExtensionConfig", "name", "typed_config")
implements("envoy.config.core.v3.HealthCheck", *HC_FIELDS)
implements("envoy.config.core.v3.HealthCheck.CustomHealthCheck", "name", "typed_config")
implements("envoy.config.cluster.v3.OutlierDetection", *outlier.IMPLEMENTED_FIELDS)


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
        self.failed: set[str] = set()  # configured clusters whose config was an error
        #: False in --mode validate: the config is checked without resolving names (as Envoy).
        self.resolve_names = True
        #: True when clusters may arrive later (CDS); until then unknown names are config errors.
        self.dynamic_clusters = False
        self.stats = ClusterManagerStats(scope.scope("cluster_manager"))
        self.stats.warming_clusters.set(0)
        self._tasks: list[asyncio.Task[None]] = []

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def is_configured(self, name: str) -> bool:
        return name in self.clusters or name in self.failed

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
                self.failed.add(cfg.name)
                issues.extend(exc.errors)
        if issues:
            raise ConfigError(issues)

    def add(self, cfg: Any, context: FactoryContext, path: str) -> Cluster:
        cluster = self.build(cfg, context, path)
        self.clusters[cfg.name] = cluster
        self.stats.cluster_added.inc()
        self.stats.active_clusters.set(len(self.clusters))
        return cluster

    def build(self, cfg: Any, context: FactoryContext, path: str) -> Cluster:
        """A cluster from its config, not yet registered (CDS registers it when it is warm)."""
        stat_name = cfg.alt_stat_name or cfg.name
        stats = ClusterStats(self.scope.scope(f"cluster.{stat_name}"))
        issues: list[ConfigIssue] = []
        thresholds: dict[str, Thresholds] = {}
        cb = cfg.circuit_breakers
        if cb.per_host_thresholds:
            issues.append(ConfigIssue(path + ".circuit_breakers.per_host_thresholds",
                                      "is not supported by envoi"))
        for i, t in enumerate(cb.thresholds):
            prio = "HIGH" if t.priority == 1 else "DEFAULT"
            issues += [ConfigIssue(f"{path}.circuit_breakers.thresholds[{i}].{fd.name}",
                                   "is not supported by envoi")
                       for fd, _ in t.ListFields() if fd.name not in BREAKER_FIELDS]
            if prio in thresholds:
                issues.append(ConfigIssue(f"{path}.circuit_breakers.thresholds[{i}].priority",
                                          f"a second {prio} entry"))
            thresholds[prio] = thresholds_from_proto(t)
        cluster = Cluster(
            name=cfg.name,
            stats=stats,
            observability_name=stat_name,
            config=cfg,
            thresholds=thresholds,
        )
        if cfg.HasField("connect_timeout"):
            cluster.connect_timeout = duration_seconds(cfg.connect_timeout)
        if cfg.HasField("per_connection_buffer_limit_bytes"):
            cluster.buffer_limit = cfg.per_connection_buffer_limit_bytes.value
        ctx = context.with_path(path, scope=stats.scope)
        if cfg.HasField("transport_socket"):
            try:
                self._transport_socket(cluster, cfg.transport_socket, path + ".transport_socket")
            except ConfigError as exc:
                issues.extend(exc.errors)
        if cfg.transport_socket_matches:
            issues.append(ConfigIssue(path + ".transport_socket_matches",
                                      "not implemented by envoi"))
        try:
            cluster.lb_params = lb_params(cfg, path)
        except ConfigError as exc:
            issues.extend(exc.errors)
        try:
            lb_factory: LoadBalancerFactory | None = self._lb_policy(cfg, path)
        except ConfigError as exc:
            issues.extend(exc.errors)
            lb_factory = None
        try:
            type_factory: ClusterTypeFactory | None = self._cluster_type(cfg, path)
            assert type_factory is not None
            tf = type_factory
            result = ctx.run_factory(tf, lambda: tf.create_cluster(cfg, ctx))
        except ConfigError as exc:
            issues.extend(exc.errors)
            type_factory = result = None
        try:
            probes = self._health_checks(cluster, cfg, ctx, path)
        except ConfigError as exc:
            issues.extend(exc.errors)
            probes = []
        if cfg.HasField("outlier_detection"):
            od = cfg.outlier_detection
            issues += [ConfigIssue(f"{path}.outlier_detection.{fd.name}",
                                   "is not supported by envoi")
                       for fd, _ in od.ListFields()
                       if fd.name not in outlier.IMPLEMENTED_FIELDS]
            ocfg = outlier.OutlierConfig.from_proto(od)
            if ocfg.max_ejection_time < ocfg.base_ejection_time:
                issues.append(ConfigIssue(path + ".outlier_detection.max_ejection_time",
                                          "cannot be smaller than base_ejection_time"))
        if issues:
            raise ConfigError(issues)
        assert lb_factory is not None and result is not None
        if not isinstance(result, LoadAssignment | Sequence):
            # A discovery (DNS, EDS...): it resolves its first hosts now and refreshes them
            # from a task the server starts.
            cluster.discovery = result
            # --mode validate checks the config without resolving names, as Envoy's does.
            result = result.resolve_now(cluster) if self.resolve_names else []
        cluster.lb = lb_factory.create_load_balancer(cluster, cfg)
        if isinstance(result, LoadAssignment):
            result.apply(cluster)
        else:
            cluster.set_hosts(list(result))
        if cfg.HasField("outlier_detection"):
            det = outlier.Detector(ocfg, stats.scope, clock=time.monotonic,
                                   on_change=lambda _h: cluster.health_changed())
            for h in cluster.hosts:
                det.add_host(h)
            cluster.add_member_update_cb(det.hosts_changed)
            cluster.outlier_detector = det
        ignore_new = cluster.lb_params.ignore_new_hosts_until_first_hc
        for hc_cfg, probe_factory, kind in probes:
            hstats = HealthCheckStats(stats.scope.scope("health_check"))
            checker = ActiveHealthChecker(cluster, HealthCheckTiming.from_proto(hc_cfg),
                                          probe_factory, hstats, kind=kind,
                                          exclude_new_hosts=ignore_new)
            cluster.add_member_update_cb(checker.hosts_changed)
            checker.callbacks.append(self._on_health_check(cluster))
            cluster.health_checkers.append(checker)
        if probes:
            cluster.health_changed()  # every host starts /failed_active_hc
        stats.membership_change.value = 1 if cluster.hosts else 0
        return cluster

    @staticmethod
    def _on_health_check(cluster: Cluster) -> Callable[[Host, str, bool], None]:
        def done(host: Host, transition: str, healthy: bool) -> None:
            det = cluster.outlier_detector
            if det is not None:
                det.on_health_check(host, healthy)  # a pass may un-eject (that rebuilds too)
            if transition == CHANGED:
                cluster.health_changed()

        return done

    def _health_checks(self, cluster: Cluster, cfg: Any, ctx: FactoryContext,
                       path: str) -> list[tuple[Any, Any, str]]:
        """(HealthCheck message, probe factory, kind) per ``health_checks`` entry."""
        out = []
        issues: list[ConfigIssue] = []
        for i, hc in enumerate(cfg.health_checks):
            p = f"{path}.health_checks[{i}]"
            issues += [ConfigIssue(f"{p}.{fd.name}", "is not supported by envoi")
                       for fd, _ in hc.ListFields() if fd.name not in HC_FIELDS]
            for name in ("timeout", "interval"):
                if not hc.HasField(name):
                    issues.append(ConfigIssue(f"{p}.{name}", "required"))
            for name in ("unhealthy_threshold", "healthy_threshold"):
                if not hc.HasField(name):
                    issues.append(ConfigIssue(f"{p}.{name}", "required"))
            kind = hc.WhichOneof("health_checker")
            if kind is None:
                issues.append(ConfigIssue(p, "one of http_health_check, tcp_health_check, "
                                          "grpc_health_check, custom_health_check is required"))
                continue
            hc_ctx = ctx.with_path(p)
            try:
                factory = self._health_checker(hc, kind, p)
                out.append((hc, hc_ctx.run_factory(
                    factory, lambda f=factory, c=hc_ctx, h=hc:  # type: ignore[misc]
                    f.create_health_checker(cluster, h, c)), kind))
            except ConfigError as exc:
                issues.extend(exc.errors)
        if issues:
            raise ConfigError(issues)
        return out

    def _health_checker(self, hc: Any, kind: str, path: str) -> HealthCheckerFactory:
        if kind == "custom_health_check":
            c = hc.custom_health_check
            url = c.typed_config.type_url if c.HasField("typed_config") else None
            return self.plugins.lookup(
                HealthCheckerFactory,  # type: ignore[type-abstract]
                c.name, url, path + ".custom_health_check")
        known: list[str] = []
        for factory in self.plugins.factories(HealthCheckerFactory.category):
            assert isinstance(factory, HealthCheckerFactory)
            if kind in factory.health_check_fields:
                return factory
            known.extend(factory.health_check_fields)
        hint = " (the envoi-grpc plugin provides it)" if kind == "grpc_health_check" else ""
        raise ConfigError([ConfigIssue(
            f"{path}.{kind}", f"no installed health checker handles {kind}{hint}; installed: "
            + ", ".join(sorted(known)))])

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start health checking and outlier detection (a single process does both)."""
        self.start_health_checks(loop)
        self.start_outlier_detection(loop)

    def start_health_checks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Active health checks run once per server: in the single process, or in the main
        process of worker processes (``envoi.upstream.health_sync`` tells the workers)."""
        for c in self.clusters.values():
            for hc in c.health_checkers:
                hc.start(loop)

    def start_outlier_detection(self, loop: asyncio.AbstractEventLoop) -> None:
        """Outlier detection runs where the traffic is: in each process that serves."""
        for c in self.clusters.values():
            det = c.outlier_detector
            if det is not None:
                self._tasks.append(loop.create_task(_run_detector(det)))

    async def warm(self, limit: float = 5.0) -> None:
        """Wait until every health-checked host had its first check (bounded)."""
        waits = [hc.first_round(min(limit, hc.timing.timeout + 0.5))
                 for c in self.clusters.values() for hc in c.health_checkers]
        if waits:
            await asyncio.gather(*waits)

    def stop(self) -> None:
        for c in self.clusters.values():
            for hc in c.health_checkers:
                hc.stop()
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
    def _transport_socket(self, cluster: Cluster, ts: Any, path: str) -> None:
        """The cluster's ``UpstreamTlsContext``: every connection to its hosts uses it."""
        from envoi.tls.context import UPSTREAM_TYPE, build_client_context, unpack_transport_socket
        from envoi.tls.stats import CertificateGauges, SocketFactoryStats, SslStats

        cfg = unpack_transport_socket(ts, path, UPSTREAM_TYPE)
        if cfg is None:
            return  # raw_buffer: plaintext
        tls = build_client_context(cfg, path + ".typed_config")
        cluster.tls = tls
        scope = cluster.stats.scope
        cluster.ssl_stats = SslStats(scope.scope("ssl"))
        SocketFactoryStats(scope.scope("client_ssl_socket_factory"))
        gauges = CertificateGauges(scope.scope("ssl"))
        for cert in tls.cert_chain:
            gauges.set_expiry(gauges.LEAF, int(cert.not_after.timestamp()))
        for cert in tls.ca_certs[:1]:
            gauges.set_expiry(gauges.CA, int(cert.not_after.timestamp()))

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
        factories = [f for f in self.plugins.factories(LoadBalancerFactory.category)
                     if isinstance(f, LoadBalancerFactory)]
        if cfg.HasField("load_balancing_policy"):
            # The first policy of the list that envoi has, as Envoy picks.
            names = []
            for pol in cfg.load_balancing_policy.policies:
                ext = pol.typed_extension_config
                url = ext.typed_config.type_url.rsplit("/", 1)[-1]
                names.append(url or ext.name)
                for f in factories:
                    if url in f.type_urls or ext.name == f.name:
                        if ext.typed_config.value:
                            raise ConfigError([ConfigIssue(
                                path + ".load_balancing_policy",
                                f"settings inside {url or ext.name} are not supported by envoi; "
                                "use lb_policy and the cluster's *_lb_config fields")])
                        return f
            raise ConfigError([ConfigIssue(
                path + ".load_balancing_policy",
                f"no installed load balancing policy among {', '.join(names) or '(none)'}; "
                "installed: " + ", ".join(sorted(f.name for f in factories)))])
        policy = cfg.LbPolicy.Name(cfg.lb_policy)
        for factory in factories:
            if policy in factory.lb_policies:
                return factory
        known = sorted(p for f in factories for p in f.lb_policies)
        raise ConfigError([ConfigIssue(
            path + ".lb_policy", f"lb_policy {policy} is not supported by envoi; known: "
            + ", ".join(known))])


async def _run_detector(det: outlier.Detector) -> None:
    """Outlier detection's ``interval`` tick."""
    while True:
        await asyncio.sleep(det.config.interval)
        try:
            det.on_interval(det.clock())
        except Exception:  # a bug here must not stop later rounds
            log.exception("outlier detection round failed")
