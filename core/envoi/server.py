"""The server: loads the config, builds clusters and listeners, serves, drains and stops."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from envoi import __version__
from envoi.config import ConfigError, ConfigIssue, duration_seconds, load_bootstrap
from envoi.extensions import FactoryContext
from envoi.network.builder import build_listener
from envoi.network.listener import ActiveListener
from envoi.plugins import Plugins
from envoi.stats import Counter, Gauge, Histogram, StatsGroup, Store
from envoi.upstream.cluster_manager import ClusterManager

log = logging.getLogger("envoi")

STATE_CODES = {"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2, "INITIALIZING": 3}


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
    initialization_time_ms: Histogram


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
        self.listeners: list[ActiveListener] = []
        self.bootstrap: Any = None
        self._state = "PRE_INITIALIZING"
        self.healthcheck_failed = False
        self.draining = False
        #: True when clusters may arrive later (CDS); until then unknown names are config errors.
        self.dynamic_clusters = False
        self.admin: Any = None
        self.admin_address: tuple[str, int] | None = None
        self._stop_event: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._flush_interval = 5.0
        self.command_line_options: dict[str, Any] = {
            "config_path": options.config_path,
            "mode": options.mode.capitalize(),
            "log_level": options.log_level,
            "drain_time": f"{options.drain_time_s:g}s",
            "concurrency": options.concurrency,
        }

    # -- config ------------------------------------------------------------------------------

    def load(self) -> None:
        """Parse and build everything; raises ConfigError with every problem found."""
        t0 = time.monotonic()
        self.bootstrap = load_bootstrap(
            self.options.config_path, plugin_type_urls=self.plugins.plugin_type_urls
        )
        self.build()
        self.server_stats.initialization_time_ms.record((time.monotonic() - t0) * 1000)

    def build(self) -> None:
        bs = self.bootstrap
        issues: list[ConfigIssue] = []
        if bs.HasField("dynamic_resources") and bs.dynamic_resources.ListFields():
            issues.append(ConfigIssue("dynamic_resources", "dynamic resources (xDS) are not "
                                      "supported yet"))
        if bs.HasField("stats_flush_interval"):
            self._flush_interval = duration_seconds(bs.stats_flush_interval) or 5.0
        ctx = FactoryContext(
            server=self,
            stats=self.stats,
            scope=self.stats.root,
            cluster_manager=self.cluster_manager,
            loop=None,
        )
        try:
            self.cluster_manager.add_static(bs.static_resources.clusters, ctx)
        except ConfigError as exc:
            issues.extend(exc.errors)
        names: set[str] = set()
        for i, lcfg in enumerate(bs.static_resources.listeners):
            path = f"static_resources.listeners[{i}]"
            if lcfg.name and lcfg.name in names:
                issues.append(ConfigIssue(path + ".name",
                                          f"duplicate listener name '{lcfg.name}'"))
                continue
            names.add(lcfg.name)
            try:
                self.listeners.append(build_listener(self, lcfg, path))
                self.lm_stats.listener_added.inc()
            except ConfigError as exc:
                self.lm_stats.listener_create_failure.inc()
                issues.extend(exc.errors)
        if bs.HasField("admin") and bs.admin.HasField("address"):
            sa = bs.admin.address.socket_address
            self.admin_address = (sa.address, sa.port_value)
        if issues:
            raise ConfigError(issues)
        self.plugins.pm.hook.envoi_configured(server=self)

    # -- serving -----------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every listener before serving, so a port in use fails the start cleanly."""
        for lst in self.listeners:
            try:
                lst.bind()
            except OSError as exc:
                for other in self.listeners:
                    if other.sock is not None:
                        other.sock.close()
                raise ConfigError(
                    [ConfigIssue(f"listener '{lst.name}'",
                                 f"cannot bind to {lst.host}:{lst.port}: {exc.strerror or exc}")]
                ) from exc
            self.lm_stats.listener_create_success.inc()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._drained = asyncio.Event()
        for lst in self.listeners:
            await lst.start()
        self.lm_stats.total_listeners_active.set(len(self.listeners))
        self.lm_stats.workers_started.set(1)
        if self.admin_address is not None:
            from envoi.admin import start_admin

            host, port = self.admin_address
            if self.options.admin_port_override is not None:
                port = self.options.admin_port_override
            self.admin = await start_admin(self, host, port)
            log.info("admin address: %s:%d", host, self.admin.port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._state = "LIVE"
        self._update_server_gauges()
        flush = loop.call_later(self._flush_interval, self._flush_stats)
        self.plugins.pm.hook.envoi_server_started(server=self)
        for lst in self.listeners:
            log.info("listener '%s' serving on %s:%d", lst.name, lst.host, lst.port)
        log.info("starting main dispatch loop")
        await self._stop_event.wait()
        flush.cancel()
        await self._drain()
        self.plugins.pm.hook.envoi_stopped(server=self)
        if self.admin is not None:
            await self.admin.close()
        from envoi.access_log import flush_all

        flush_all()
        log.info("exiting")
        return 0

    def _on_signal(self, sig: int) -> None:
        if self.draining:
            log.warning("second signal %s: exiting now", signal.Signals(sig).name)
            from envoi.access_log import flush_all

            flush_all()
            os._exit(0)
        log.info("caught %s", signal.Signals(sig).name)
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
        self.plugins.pm.hook.envoi_draining(server=self)
        if self._open_connections():
            log.info("draining %d connections for up to %gs", self._open_connections(),
                     self.options.drain_time_s)
            assert self._drained is not None
            try:
                await asyncio.wait_for(self._drained.wait(), self.options.drain_time_s)
            except TimeoutError:
                log.info("drain time over: closing %d connections", self._open_connections())
        for lst in self.listeners:
            for conn in list(lst.connections):
                conn.close()
        await asyncio.sleep(0)

    def _open_connections(self) -> int:
        return sum(len(lst.connections) for lst in self.listeners)

    def on_connection_closed(self, listener: ActiveListener) -> None:
        if self.draining and self._drained is not None and not self._open_connections():
            self._drained.set()

    def _flush_stats(self) -> None:
        for stat in self.stats:
            flush = getattr(stat, "flush", None)
            if flush is not None:
                flush()
        self._update_server_gauges()
        loop = asyncio.get_running_loop()
        loop.call_later(self._flush_interval, self._flush_stats)

    def _update_server_gauges(self) -> None:
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
        for c in self.cluster_manager.clusters.values():
            th = {
                prio: CircuitBreakerThresholds(t.max_connections, t.max_pending_requests,
                                               t.max_requests, t.max_retries)
                for prio, t in c.thresholds.items()
            }
            hosts = [
                HostInfo(
                    host=h.address, port=h.port, hostname=h.hostname,
                    health_flags="".join(sorted(h.health_flags)) or "healthy",
                    weight=h.weight, priority=h.priority, region=h.locality[0],
                    zone=h.locality[1], sub_zone=h.locality[2], cx_active=h.cx_active,
                    cx_connect_fail=h.cx_connect_fail, cx_total=h.cx_total,
                    rq_active=h.rq_active, rq_error=h.rq_error, rq_success=h.rq_success,
                    rq_timeout=h.rq_timeout, rq_total=h.rq_total,
                    rq_pending_active=h.rq_pending_active,
                )
                for h in c.hosts
            ]
            out.append(ClusterInfo(
                name=c.name, observability_name=c.observability_name,
                added_via_api=c.added_via_api, default_priority=th["DEFAULT"],
                high_priority=th["HIGH"], hosts=hosts,
            ))
        return out

    def healthcheck_fail(self) -> None:
        self.healthcheck_failed = True
        self._update_server_gauges()

    def healthcheck_ok(self) -> None:
        self.healthcheck_failed = False
        self._update_server_gauges()

    def drain_listeners(self, graceful: bool, inbound_only: bool) -> None:
        for lst in self.listeners:
            if inbound_only and lst.traffic_direction != "INBOUND":
                continue
            if lst.accepting:
                lst.stop_accepting()
                self.lm_stats.listener_stopped.inc()

    @property
    def version(self) -> str:
        return __version__
