"""What a server is built from: the bootstrap (with the command line's overrides), loaded,
checked against Envoy's rules and the fields envoi implements, and built into the runtime,
clusters, stats sinks, listeners and xDS subscriptions.

:class:`BootstrapLoader` is a base of :class:`envoi.server.Server`.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, cast

from envoi.config import (
    ConfigError,
    ConfigIssue,
    duration_seconds,
    implements,
    load_bootstrap,
    parse_bootstrap,
    unimplemented_fields,
    validate_message,
)
from envoi.context import LocalInfo
from envoi.extensions import StatsSinkFactory
from envoi.factory_context import FactoryContextImpl
from envoi.network.builder import build_listener
from envoi.plugins import Plugins
from envoi.runtime import Runtime
from envoi.server_admin import ServerAdmin
from envoi.stats.sink import StatsFlusher, StatsSink
from envoi.xds.routes import RouteConfigProviders

if TYPE_CHECKING:
    from envoi.context import ServerContext
    from envoi.network.listener import ListenerOwner


# The Bootstrap fields the server acts on (envoi.config.implemented refuses the others).
# node: the local info, and shown in /server_info and /config_dump as Envoy shows it.
implements("envoy.config.bootstrap.v3.Bootstrap",
           "admin", "static_resources", "layered_runtime", "stats_flush_interval", "node",
           "stats_sinks")
implements("envoy.config.metrics.v3.StatsSink", "name", "typed_config")
implements("envoy.config.bootstrap.v3.Bootstrap.StaticResources", "listeners", "clusters")
implements("envoy.config.core.v3.Node", "id", "cluster", "metadata", "locality")
implements("envoy.config.core.v3.Locality", "region", "zone", "sub_zone")
# admin.address (its port can be overridden with --admin-port); the admin access log, profile
# path and socket options are not implemented.
implements("envoy.config.bootstrap.v3.Admin", "address")


def _merge_issues(unimplemented: list[ConfigIssue],
                  built: list[ConfigIssue]) -> list[ConfigIssue]:
    """Both lists, without a builder's complaint about a field already reported as not
    implemented (or about something inside it), and without repeats."""
    refused = [i.path for i in unimplemented]
    out = list(unimplemented)
    seen = {(i.path, i.message) for i in out}
    for issue in built:
        if any(_within(issue.path, p) for p in refused):
            continue
        if (issue.path, issue.message) in seen:
            continue
        seen.add((issue.path, issue.message))
        out.append(issue)
    return out


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith((ancestor + ".", ancestor + "["))


class BootstrapLoader(ServerAdmin):
    """The config half of the server: ``load`` parses and checks the bootstrap, ``build``
    builds what it names."""

    # Set by envoi.server.Server.__init__.
    plugins: Plugins
    bootstrap: Any
    local_info: LocalInfo
    factory_context: FactoryContextImpl
    route_configs: RouteConfigProviders
    xds_manager: Any
    admin_address: tuple[str, int] | None
    stats_flusher: StatsFlusher
    view: ServerContext
    _flush_interval: float

    def load(self) -> None:
        """Parse and build everything; raises ConfigError with every problem found."""
        t0 = time.monotonic()
        try:
            self.bootstrap = self._load_bootstrap()
        except ConfigError as exc:
            raise self._with_type_hints(exc) from None
        # Envoy's validation rules and the fields envoi does not implement are reported
        # together; the builders run only on a config that passes the rules.
        problems = validate_message(self.bootstrap)
        if problems:
            unimplemented = unimplemented_fields(
                self.bootstrap, known_type_urls=self.plugins.config_type_urls)
            raise self._with_type_hints(ConfigError(_merge_issues(unimplemented, problems)))
        self.build()
        self.server_stats.initialization_time_ms.record((time.monotonic() - t0) * 1000)

    def _load_bootstrap(self) -> Any:
        """``-c`` and/or ``--config-yaml``: the inline YAML is merged over the file as Envoy
        merges it (protobuf MergeFrom: scalars set there win, lists are appended)."""
        opts, urls = self.options, self.plugins.plugin_type_urls
        # Validated by load() once merged (validate_message), with the unimplemented fields.
        bootstrap = (load_bootstrap(opts.config_path, plugin_type_urls=urls, validate=False)
                     if opts.config_path else None)
        if opts.config_yaml:
            inline = parse_bootstrap(opts.config_yaml, source="--config-yaml",
                                     plugin_type_urls=urls, validate=False)
            if bootstrap is None:
                return inline
            bootstrap.MergeFrom(inline)
        return bootstrap

    def _with_type_hints(self, exc: ConfigError) -> ConfigError:
        """An unknown ``@type`` gets the closest known type and the plugins' types."""
        issues = []
        for issue in exc.errors:
            if issue.message.startswith("could not find @type '"):
                url = issue.message.split("'")[1]
                issue = ConfigIssue(issue.path, f"{issue.message}; "
                                    f"{self.plugins.unknown_type_hint(url)}")
            issues.append(issue)
        return ConfigError(issues, source=exc.source)

    def build(self) -> None:
        bs = self.bootstrap
        # Every set field that no part of envoi implements, first: the builders below then
        # report only the problems that are not about such a field (see _merge_issues).
        unimplemented = unimplemented_fields(bs, known_type_urls=self.plugins.config_type_urls)
        issues: list[ConfigIssue] = []
        self.cluster_manager.resolve_names = self.options.mode != "validate"
        try:
            self.runtime = Runtime(
                bs.layered_runtime if bs.HasField("layered_runtime") else None, self.stats.root
            )
        except ConfigError as exc:
            issues.extend(exc.errors)
        if bs.HasField("stats_flush_interval"):
            self._flush_interval = duration_seconds(bs.stats_flush_interval) or 5.0
        # --service-* override the bootstrap's node, as in Envoy (and /server_info shows it).
        opts = self.options
        if opts.service_node:
            bs.node.id = opts.service_node
        if opts.service_cluster:
            bs.node.cluster = opts.service_cluster
        if opts.service_zone:
            bs.node.locality.zone = opts.service_zone
        node = bs.node
        self.local_info = LocalInfo(node_id=node.id, cluster=node.cluster,
                                    zone=node.locality.zone)
        try:
            self.cluster_manager.add_static(bs.static_resources.clusters, self.factory_context)
        except ConfigError as exc:
            issues.extend(exc.errors)
        issues += self._build_stats_sinks(bs.stats_sinks)
        dynamic = bs.HasField("dynamic_resources") and bool(bs.dynamic_resources.ListFields())
        if dynamic and bs.dynamic_resources.HasField("cds_config"):
            self.cluster_manager.dynamic_clusters = True  # clusters may arrive over CDS
        names: set[str] = set()
        # The listeners report their connections to the Server this is a base of.
        owner = cast("ListenerOwner", self)
        for i, lcfg in enumerate(bs.static_resources.listeners):
            path = f"static_resources.listeners[{i}]"
            if lcfg.name and lcfg.name in names:
                issues.append(ConfigIssue(path + ".name",
                                          f"duplicate listener name '{lcfg.name}'"))
                continue
            names.add(lcfg.name)
            try:
                self.listeners.append(self.route_configs.build_listener(functools.partial(
                    build_listener, self.factory_context, owner, lcfg, path,
                    reuse_port=self.options.concurrency > 1)))
                self.lm_stats.listener_added.inc()
            except ConfigError as exc:
                self.lm_stats.listener_create_failure.inc()
                issues.extend(exc.errors)
        if not issues and (dynamic or self.route_configs.providers or any(
                c.config.type == c.config.EDS for c in self.cluster_manager.clusters.values())):
            from envoi.xds.manager import XdsManager

            self.xds_manager = XdsManager(self)
            try:
                self.xds_manager.configure(bs)
            except ConfigError as exc:
                issues.extend(exc.errors)
        if bs.HasField("admin") and bs.admin.HasField("address"):
            sa = bs.admin.address.socket_address
            self.admin_address = (sa.address, sa.port_value)
        issues = _merge_issues(unimplemented, issues)
        if issues:
            raise self._with_type_hints(ConfigError(issues))
        self._update_cert_expiry()
        self.plugins.pm.hook.envoi_configured(server=self.view)

    def _build_stats_sinks(self, entries: Any) -> list[ConfigIssue]:
        """``stats_sinks``: each through its factory (``envoi_stats_sinks``), after the clusters
        (a TCP statsd sink names one)."""
        issues: list[ConfigIssue] = []
        sinks: list[StatsSink] = []
        for i, entry in enumerate(entries):
            path = f"stats_sinks[{i}]"
            try:
                factory, config = self.factory_context.resolve_extension(
                    StatsSinkFactory, entry, path)  # type: ignore[type-abstract]
                ctx = self.factory_context.with_path(path + ".typed_config")
                sinks.append(ctx.run_factory(
                    factory, lambda: factory.create_sink(config, ctx)))  # noqa: B023
            except ConfigError as exc:
                issues.extend(exc.errors)
        self.stats_flusher = StatsFlusher(sinks)
        self.stats.set_histogram_observer(self.stats_flusher.histogram_observer())
        return issues
