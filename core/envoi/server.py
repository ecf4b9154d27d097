"""The server: loads the config, builds clusters and listeners, serves, drains and stops."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoi import __version__
from envoi.access_log import set_flush_interval
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
from envoi.network.listener import ActiveListener
from envoi.plugins import Plugins
from envoi.runtime import Runtime
from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup, Store
from envoi.stats.sink import StatsFlusher, StatsSink
from envoi.stats.statsd import close_sinks
from envoi.tap import TapHub, WorkerTaps
from envoi.tracing.export import flush_exporters
from envoi.upstream import health_sync  # registers the host_health worker operation
from envoi.upstream.cluster_manager import ClusterManager
from envoi.upstream.host import health_flags_string
from envoi.xds.routes import RouteConfigProviders
from envoi.xds.state import DynamicState

log = logging.getLogger("envoi")

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

STATE_CODES = {"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2, "INITIALIZING": 3}


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


@dataclass
class Options:
    config_path: str = ""
    mode: str = "serve"
    log_level: str = "info"
    drain_time_s: float = 600.0
    concurrency: int = 1
    admin_port_override: int | None = None
    blocked_plugins: list[str] = field(default_factory=list)
    extra_plugins: list[str] = field(default_factory=list)
    autoload: bool | None = None
    #: Values of the options plugins added with ``envoi_addoption``.
    plugin_options: argparse.Namespace = field(default_factory=argparse.Namespace)
    #: Inline YAML merged over the file's bootstrap (Envoy's ``--config-yaml``).
    config_yaml: str = ""
    component_log_level: str = ""
    log_path: str = ""
    log_format: str = ""
    service_cluster: str = ""
    service_node: str = ""
    service_zone: str = ""
    file_flush_interval_ms: int | None = None
    #: ``--event-loop``: auto (uvloop when installed), uvloop or asyncio.
    event_loop: str = "auto"


def flush_interval_s(options: Options) -> float:
    """Access-log files are flushed this often: ``--file-flush-interval-msec``, else 0.2 s
    (Envoy's default is 10 s; envoi's shorter one is a documented difference)."""
    ms = options.file_flush_interval_ms
    return 0.2 if ms is None else ms / 1000


def _duration_text(seconds: float) -> str:
    """``10s``, ``0.200s``: a Duration as /server_info writes it."""
    return f"{seconds:g}s" if seconds == int(seconds) else f"{seconds:.3f}s"


class ServerStats(StatsGroup):
    live: Gauge
    state: Gauge
    uptime: Gauge
    concurrency: Gauge
    total_connections: Gauge
    memory_allocated: Gauge
    memory_heap_size: Gauge
    memory_physical_size: Gauge
    version: Gauge
    hot_restart_epoch: Gauge
    parent_connections: Gauge
    days_until_first_cert_expiring: Gauge
    dynamic_unknown_fields: Counter
    static_unknown_fields: Counter
    envoy_bug_failures: Counter
    debug_assertion_failures: Counter
    #: envoi's own: worker processes started again after one died (``--concurrency`` > 1).
    worker_restarts: Counter
    dropped_stat_flushes: Counter
    envoy_notifications: Counter
    wip_protos: Counter
    seconds_until_first_ocsp_response_expiring: Gauge
    initialization_time_ms: Histogram

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        scope.gauge("compilation_settings.fips_mode").set(0)  # not a FIPS build, as Envoy's


class ListenerManagerStats(StatsGroup):
    listener_added: Counter
    listener_modified: Counter
    listener_removed: Counter
    listener_stopped: Counter
    listener_in_place_updated: Counter
    listener_create_success: Counter
    listener_create_failure: Counter
    total_listeners_active: Gauge
    total_listeners_warming: Gauge
    total_listeners_draining: Gauge
    total_filter_chains_draining: Gauge
    workers_started: Gauge
    workers_pinned: Gauge


class WorkerPoolApi(Protocol):
    """What the main process asks of its worker processes (``envoi.workers.WorkerPool``)."""

    count: int

    @property
    def alive(self) -> int: ...
    async def supervise(self, poll_interval: float) -> None: ...
    async def wait_ready(self) -> None: ...
    async def stop(self, grace: float) -> None: ...
    def broadcast(self, msg: dict[str, Any]) -> None: ...
    def apply_update(self, name: str, payload: Any) -> str | None: ...
    def kill(self) -> None: ...
    def merged_stats(self) -> Store: ...
    def host_counters(self) -> dict[str, list[list[int]]]: ...
    def counter_reported(self, name: str) -> bool: ...
    def reset_counters(self) -> None: ...
    def drain_listeners(self, graceful: bool, inbound_only: bool) -> None: ...


class ServerView:
    """The server as plugins see it: :class:`envoi.context.ServerContext`, and nothing more
    (the lifecycle hooks' ``server``; every factory context reads through it)."""

    __slots__ = ("_server",)

    def __init__(self, server: Server) -> None:
        self._server = server

    @property
    def runtime(self) -> Runtime:
        return self._server.runtime

    @property
    def draining(self) -> bool:
        return self._server.draining

    @property
    def healthcheck_failed(self) -> bool:
        return self._server.healthcheck_failed

    @property
    def cluster_manager(self) -> ClusterManager:
        return self._server.cluster_manager

    @property
    def stats(self) -> Store:
        return self._server.stats

    @property
    def plugin_options(self) -> argparse.Namespace:
        return self._server.options.plugin_options

    @property
    def local_info(self) -> LocalInfo:
        return self._server.local_info

    @property
    def tap_hub(self) -> TapHub:
        return self._server.tap_hub

    @property
    def route_configs(self) -> RouteConfigProviders:
        return self._server.route_configs

    def __repr__(self) -> str:
        return f"<envoi server {self._server.state}>"


class Server:
    """One envoi process. Implements :class:`envoi.admin.api.AdminServerApi` for the admin."""

    def __init__(self, options: Options, plugins: Plugins | None = None) -> None:
        self.options = options
        self.started_monotonic = time.monotonic()
        self.start_time = time.time()
        self.stats = Store()
        self.server_stats = ServerStats(self.stats.root.scope("server"))
        self.total_connections = self.server_stats.total_connections
        self.lm_stats = ListenerManagerStats(self.stats.root.scope("listener_manager"))
        self.lm_stats.total_listeners_warming.set(0)
        # No TLS certificates: Envoy reports the largest uint32.
        self.server_stats.days_until_first_cert_expiring.set(4294967295)
        self.plugins = plugins or Plugins(
            autoload=options.autoload,
            blocked=options.blocked_plugins,
            extra=options.extra_plugins,
        )
        self.cluster_manager = ClusterManager(self.plugins, self.stats.root)
        self.local_info = LocalInfo()
        set_flush_interval(flush_interval_s(options))
        #: What plugins see: the lifecycle hooks' ``server`` and the root factory context.
        self.view = ServerView(self)
        self.factory_context = FactoryContextImpl(self.view, self.plugins)
        self.listeners: list[ActiveListener] = []
        #: LDS/CDS/EDS state (every process) and, in the main one, its subscriptions.
        self.xds = DynamicState(self)
        self.xds_manager: Any = None
        #: RDS: the route configurations HCMs name (``rds``), in every process.
        self.route_configs = RouteConfigProviders(self)
        self.bootstrap: Any = None
        self._state = "PRE_INITIALIZING"
        self.healthcheck_failed = False
        self.draining = False
        self.admin: Any = None
        #: Set in a worker process (0..N-1); None in a single process or the main one.
        self.worker_index: int | None = None
        self.pool: WorkerPoolApi | None = None
        #: Envoy's layered runtime (feature flags); rebuilt from the bootstrap in ``build``.
        self.runtime = Runtime(None, self.stats.root)
        self.admin_address: tuple[str, int] | None = None
        self._stop_event: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._flush_interval = 5.0
        self._flush_handle: asyncio.TimerHandle | None = None
        #: The live tap (``/tap``): every filter's tap point and the open sessions.
        self.tap_hub = TapHub.create(self.stats.root)
        #: The ``stats_sinks``, fed every flush interval (``envoi.stats.sink``).
        self.stats_flusher = StatsFlusher()
        self.command_line_options: dict[str, Any] = {
            "config_path": options.config_path,
            "mode": options.mode.capitalize(),
            "log_level": options.log_level,
            "drain_time": f"{options.drain_time_s:g}s",
            "concurrency": options.concurrency,
            "config_yaml": options.config_yaml,
            "component_log_level": options.component_log_level,
            "log_path": options.log_path,
            "log_format": options.log_format,
            "service_cluster": options.service_cluster,
            "service_node": options.service_node,
            "service_zone": options.service_zone,
            "file_flush_interval": _duration_text(flush_interval_s(options)),
        }

    # -- config ------------------------------------------------------------------------------

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
        for i, lcfg in enumerate(bs.static_resources.listeners):
            path = f"static_resources.listeners[{i}]"
            if lcfg.name and lcfg.name in names:
                issues.append(ConfigIssue(path + ".name",
                                          f"duplicate listener name '{lcfg.name}'"))
                continue
            names.add(lcfg.name)
            try:
                self.listeners.append(self.route_configs.build_listener(functools.partial(
                    build_listener, self.factory_context, self, lcfg, path,
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

    @property
    def tls_contexts(self) -> list[Any]:
        """Every TLS context of the config: the clusters', then the listeners' chains'."""
        out = [c.tls for c in self.cluster_manager.clusters.values() if c.tls is not None]
        for lst in self.listeners:
            out += [ch.tls for ch in lst.all_chains if ch.tls is not None]
        return out

    def _update_cert_expiry(self) -> None:
        """``server.days_until_first_cert_expiring``: the fewest days any certificate in the
        config (a chain or a trusted CA) has left; the largest uint32 without TLS."""
        contexts = self.tls_contexts
        if not contexts:
            return
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        days = min((c.days_until_expiration(now) for ctx in contexts
                    for c in (*ctx.cert_chain, *ctx.ca_certs)), default=None)
        if days is not None:  # TLS without any certificate (a client with no CA): unchanged
            self.server_stats.days_until_first_cert_expiring.set(days)

    # -- serving -----------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every listener before serving, so a port in use fails the start cleanly."""
        for lst in self.listeners:
            if lst.sock is not None:
                continue  # an LDS listener, bound when it was loaded
            try:
                lst.bind(self.options.concurrency)
            except OSError as exc:
                for other in self.listeners:
                    for s in (other.sock, *other.worker_socks):
                        if s is not None:
                            s.close()
                raise ConfigError(
                    [ConfigIssue(f"listener '{lst.name}'",
                                 f"cannot bind to {lst.host}:{lst.port}: {exc.strerror or exc}")]
                ) from exc
            # Envoy counts it once per worker that added the listener.
            self.lm_stats.listener_create_success.inc(self.options.concurrency)

    async def _start_admin(self) -> None:
        if self.admin_address is None:
            return
        from envoi.admin import start_admin

        host, port = self.admin_address
        if self.options.admin_port_override is not None:
            port = self.options.admin_port_override
        self.admin = await start_admin(self, host, port)
        log.info("admin address: %s:%d", host, self.admin.port)

    def runtime_info(self) -> dict[str, str]:
        """What this server runs on: the event loop, and what plugins report
        (``envoi_runtime_info``), e.g. envoi-http's HTTP/1.1 codec back-end."""
        from envoi.event_loop import describe

        info: dict[str, str] = {}
        with contextlib.suppress(RuntimeError):  # no loop runs (validate mode, tests)
            info["event_loop"] = describe(asyncio.get_running_loop())
        for found in self.plugins.pm.hook.envoi_runtime_info(server=self.view):
            info.update(found or {})
        return info

    def _log_runtime(self) -> None:
        log.info("running on %s", ", ".join(f"{k}: {v}" for k, v in self.runtime_info().items()))

    async def serve(self, *, admin: bool = True,
                    control: Callable[[Server], Coroutine[Any, Any, None]] | None = None) -> int:
        """Serve the listeners until a signal (or the main process) says stop, then drain.
        In a worker process ``admin`` is False and ``control`` serves its link to the main."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._drained = asyncio.Event()
        # Health checks and outlier detection run before the listeners open, and the first
        # round of checks is awaited (bounded), as Envoy warms its clusters. A worker leaves
        # active health checking to the main process (envoi.upstream.health_sync).
        if control is None:
            self.cluster_manager.start(loop)
            await self.cluster_manager.warm()
        else:
            self.tap_hub.worker = self.worker_index
            self.cluster_manager.start_outlier_detection(loop)
        for lst in self.listeners:
            if lst.sock is not None:  # None: drained before this worker was forked
                await lst.start()
        if self.worker_index is None:  # with workers, the main process owns these gauges
            self.lm_stats.total_listeners_active.set(len(self.listeners))
            self.lm_stats.workers_started.set(1)
        if admin:
            await self._start_admin()
        control_task = None
        if control is not None:
            control_task = loop.create_task(control(self))
        discovery_tasks = [
            loop.create_task(c.discovery.run(c))
            for c in self.cluster_manager.clusters.values() if c.discovery is not None
        ]
        self.xds.serving = True
        if self.xds_manager is not None and control is None:
            self.xds_manager.start(loop)
        # A worker leaves SIGINT to the main process (Ctrl-C reaches the whole process group);
        # SIGTERM sent to a worker alone drains it, and the main process starts a new one.
        signals = (signal.SIGTERM,) if control is not None else (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._state = "LIVE"
        self._update_server_gauges()
        self._flush_handle = loop.call_later(self._flush_interval, self._flush_stats)
        if self.worker_index is None:
            self._log_runtime()
            self.plugins.pm.hook.envoi_server_started(server=self.view)
        for lst in self.listeners:
            log.info("listener '%s' serving on %s:%d", lst.name, lst.host, lst.port)
        log.info("starting main dispatch loop")
        await self._stop_event.wait()
        self._flush_handle.cancel()
        await self._drain()
        await flush_exporters()  # the last requests' spans, before their clusters stop
        if self.worker_index is None:
            self.plugins.pm.hook.envoi_stopped(server=self.view)
        if self.admin is not None:
            await self.admin.close()
        if control_task is not None:
            control_task.cancel()
        for task in discovery_tasks:
            task.cancel()
        if self.xds_manager is not None:
            self.xds_manager.stop()
        self.cluster_manager.stop()
        self._flush_once()
        close_sinks(self.stats_flusher.sinks)
        from envoi.access_log import flush_all

        flush_all()
        log.info("exiting")
        return 0

    async def serve_main(self, pool: WorkerPoolApi) -> int:
        """The main process with worker processes: the admin, signals, and the workers (see
        :mod:`envoi.workers.pool`, which forks and replaces them)."""
        loop = asyncio.get_running_loop()
        self.pool = pool
        self.tap_hub.remote = WorkerTaps(self.tap_hub, pool.broadcast)
        self._stop_event = asyncio.Event()
        self._state = "INITIALIZING"  # until every worker accepts: /ready answers 503
        await self._start_admin()
        self._log_runtime()  # (the workers run the same loop and codecs)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self.lm_stats.total_listeners_active.set(len(self.listeners))
        self.lm_stats.workers_started.set(pool.count)
        self._update_server_gauges()
        self._flush_handle = loop.call_later(self._flush_interval, self._flush_stats)
        supervise = loop.create_task(pool.supervise(self._flush_interval))
        health = self._start_main_health_checks(loop, pool)
        self.xds.serving = True
        if self.xds_manager is not None:
            self.xds_manager.start(loop)
        stop = loop.create_task(self._stop_event.wait())
        ready = loop.create_task(pool.wait_ready())
        await asyncio.wait({stop, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            self._state = "LIVE"
            self._update_server_gauges()
            self.plugins.pm.hook.envoi_server_started(server=self.view)
            log.info("%d workers started", pool.count)
        ready.cancel()
        await stop
        self.draining = True
        self._state = "DRAINING"
        self._update_server_gauges()
        self.plugins.pm.hook.envoi_draining(server=self.view)
        if self.xds_manager is not None:
            self.xds_manager.stop()
        await pool.stop(self.options.drain_time_s + 5)
        for task in health:
            task.cancel()
        self.cluster_manager.stop()
        self._flush_once()
        close_sinks(self.stats_flusher.sinks)
        supervise.cancel()
        self._flush_handle.cancel()
        self.plugins.pm.hook.envoi_stopped(server=self.view)
        if self.admin is not None:
            await self.admin.close()
        log.info("exiting")
        return 0

    def _start_main_health_checks(self, loop: asyncio.AbstractEventLoop,
                                  pool: WorkerPoolApi) -> list[asyncio.Task[None]]:
        """With workers: the main process keeps every DNS cluster's hosts current (for the
        admin, and for the checks), runs the active health checks once for the server and
        pushes flag changes to the workers."""
        cm = self.cluster_manager
        tasks = [loop.create_task(c.discovery.run(c)) for c in cm.clusters.values()
                 if c.discovery is not None]
        checked = [c for c in cm.clusters.values() if c.health_checkers]
        if not checked:
            return tasks
        for c in checked:
            stat = f"cluster.{c.observability_name}.upstream_cx_total"
            for hc in c.health_checkers:
                hc.traffic_probe = lambda stat=stat: pool.counter_reported(stat)
        self._health_broadcaster = health_sync.HealthBroadcaster(cm, pool.broadcast, loop)
        cm.start_health_checks(loop)
        return tasks

    def watch_cluster_health(self, cluster: Any) -> None:
        """A cluster added over CDS with health checks: its flag changes reach the workers."""
        assert self.pool is not None
        broadcaster = getattr(self, "_health_broadcaster", None)
        if broadcaster is None:
            loop = asyncio.get_running_loop()
            self._health_broadcaster = health_sync.HealthBroadcaster(
                self.cluster_manager, self.pool.broadcast, loop)
        else:
            cluster.add_health_change_cb(broadcaster.changed)

    def _on_signal(self, sig: int) -> None:
        if self.draining:
            log.warning("second signal %s: exiting now", signal.Signals(sig).name)
            from envoi.access_log import flush_all

            flush_all()
            if self.pool is not None:
                self.pool.kill()
            os._exit(0)
        log.info("caught %s", signal.Signals(sig).name)
        self.draining = True
        self.shutdown()

    def shutdown(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    async def _drain(self) -> None:
        """Stop accepting, then give open connections ``--drain-time-s`` to finish."""
        self.draining = True
        self._state = "DRAINING"
        self._update_server_gauges()
        for lst in self.listeners:
            lst.stop_accepting()
        self.plugins.pm.hook.envoi_draining(server=self.view)
        if self._open_connections():
            log.info("draining %d connections for up to %gs", self._open_connections(),
                     self.options.drain_time_s)
            assert self._drained is not None
            try:
                await asyncio.wait_for(self._drained.wait(), self.options.drain_time_s)
            except TimeoutError:
                log.info("drain time over: closing %d connections", self._open_connections())
        for lst in [*self.listeners, *self.xds.draining]:
            for conn in list(lst.connections):
                conn.close()
        await asyncio.sleep(0)

    def _open_connections(self) -> int:
        return sum(len(lst.connections) for lst in self.listeners) + \
            self.xds.open_connections()

    def on_connection_closed(self, listener: ActiveListener) -> None:
        self.xds.connection_closed(listener)
        if self.draining and self._drained is not None and not self._open_connections():
            self._drained.set()

    def _flush_stats(self) -> None:
        self._flush_once()
        loop = asyncio.get_running_loop()
        self._flush_handle = loop.call_later(self._flush_interval, self._flush_stats)

    def _flush_once(self) -> None:
        """Close the histograms' interval (handing their values to the sinks) and, in the
        main process, flush the server's stats to the sinks: once for the server, with
        workers their stats summed (a worker's sinks only send the values it records). Envoy
        flushes every ``stats_flush_interval`` and once more when it stops."""
        for stat in self.stats:
            flush = getattr(stat, "flush", None)
            if flush is not None:
                flush()
        self._update_server_gauges()
        if self.worker_index is None and self.stats_flusher.sinks:
            self.stats_flusher.flush(self.stats_snapshot(), time.time())

    def _update_server_gauges(self) -> None:
        if self.worker_index is not None:
            return  # the main process reports the server's state; worker gauges are summed
        s = self.server_stats
        s.uptime.set(int(time.monotonic() - self.started_monotonic))
        s.state.set(STATE_CODES.get(self.state, 0))
        s.live.set(1 if self.state == "LIVE" else 0)
        s.concurrency.set(self.options.concurrency)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        s.memory_allocated.set(rss)
        s.memory_heap_size.set(rss)
        s.memory_physical_size.set(rss)

    # -- AdminServerApi ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Envoy's server state; a failed health check reports DRAINING, as Envoy does."""
        return "DRAINING" if self.healthcheck_failed else self._state

    def listeners_info(self) -> list[Any]:
        from envoi.admin.api import ListenerInfo

        return [ListenerInfo(name=lst.name, host=lst.host, port=lst.port)
                for lst in self.listeners]

    def clusters_info(self) -> list[Any]:
        from envoi.admin.api import CircuitBreakerThresholds, ClusterInfo, HostInfo

        out = []
        # With worker processes the host counters live in the workers.
        worker_hosts = self.pool.host_counters() if self.pool is not None else {}
        for c in self.cluster_manager.clusters.values():
            extra = worker_hosts.get(c.name, [])
            th = {
                prio: CircuitBreakerThresholds(t.max_connections, t.max_pending_requests,
                                               t.max_requests, t.max_retries)
                for prio, t in c.thresholds.items()
            }
            hosts = []
            for i, h in enumerate(c.hosts):
                own = (h.cx_active, h.cx_connect_fail, h.cx_total, h.rq_active, h.rq_error,
                       h.rq_success, h.rq_timeout, h.rq_total, h.rq_pending_active)
                n = [a + b for a, b in zip(own, extra[i], strict=True)] if i < len(extra) \
                    else list(own)
                hosts.append(HostInfo(
                    host=h.address, port=h.port, hostname=h.hostname,
                    health_flags=health_flags_string(h.health_flags),
                    success_rate=h.success_rate,
                    local_origin_success_rate=h.local_origin_success_rate,
                    weight=h.weight, priority=h.priority, region=h.locality[0],
                    zone=h.locality[1], sub_zone=h.locality[2], cx_active=n[0],
                    cx_connect_fail=n[1], cx_total=n[2], rq_active=n[3], rq_error=n[4],
                    rq_success=n[5], rq_timeout=n[6], rq_total=n[7], rq_pending_active=n[8],
                ))
            det = c.outlier_detector
            out.append(ClusterInfo(
                name=c.name, observability_name=c.observability_name,
                added_via_api=c.added_via_api, default_priority=th["DEFAULT"],
                high_priority=th["HIGH"], hosts=hosts,
                outlier=None if det is None else (*det.success_rate_nums,
                                                  *det.local_success_rate_nums),
            ))
        return out

    def certs_info(self) -> list[Any]:
        """Every TLS context's certificates, in config order (``/certs``)."""
        from envoi.admin.api import CertificateInfo

        return [CertificateInfo(cert_chain=list(ctx.cert_chain), ca_certs=list(ctx.ca_certs[:1]))
                for ctx in self.tls_contexts]

    def runtime_json(self) -> str:
        return self.runtime.to_json()

    def runtime_modify(self, updates: dict[str, str]) -> str | None:
        if self.pool is not None:  # every worker, or none (envoi.workers.updates)
            return self.pool.apply_update("runtime_modify", updates)
        return self.runtime.modify(updates)

    def stats_snapshot(self) -> Store:
        return self.pool.merged_stats() if self.pool is not None else self.stats

    def reset_counters(self) -> None:
        self.stats.reset_counters()
        if self.pool is not None:
            self.pool.reset_counters()

    def healthcheck_fail(self) -> None:
        self.healthcheck_failed = True
        self._update_server_gauges()
        if self.pool is not None:
            self.pool.broadcast({"op": "healthcheck", "failed": True})

    def healthcheck_ok(self) -> None:
        self.healthcheck_failed = False
        self._update_server_gauges()
        if self.pool is not None:
            self.pool.broadcast({"op": "healthcheck", "failed": False})

    def drain_listeners(self, graceful: bool, inbound_only: bool) -> None:
        if self.pool is not None:
            self.pool.drain_listeners(graceful, inbound_only)
            self.lm_stats.listener_stopped.inc(sum(
                1 for lst in self.listeners
                if not inbound_only or lst.traffic_direction == "INBOUND"))
            return
        for lst in self.listeners:
            if inbound_only and lst.traffic_direction != "INBOUND":
                continue
            if lst.accepting:
                lst.stop_accepting()
                self.lm_stats.listener_stopped.inc()

    @property
    def version(self) -> str:
        return __version__
