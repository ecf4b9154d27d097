"""The server: one envoi process (or the main process of several) that serves its listeners,
runs the clusters' checks and stats flushes, drains and stops. What it is built from is in
:mod:`envoi.server_config`, what it reports to the admin in :mod:`envoi.server_admin`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

from envoi.access_log import set_flush_interval
from envoi.config import ConfigError, ConfigIssue
from envoi.context import LocalInfo
from envoi.factory_context import FactoryContextImpl
from envoi.network.listener import ActiveListener
from envoi.plugins import Plugins
from envoi.runtime import Runtime
from envoi.server_admin import ListenerManagerStats, ServerStats, WorkerPoolApi
from envoi.server_config import BootstrapLoader
from envoi.server_options import Options, command_line_options, flush_interval_s
from envoi.stats import Store
from envoi.stats.sink import StatsFlusher
from envoi.stats.statsd import close_sinks
from envoi.tap import TapHub, WorkerTaps
from envoi.tracing.export import flush_exporters
from envoi.upstream import health_sync  # registers the host_health worker operation
from envoi.upstream.cluster_manager import ClusterManager
from envoi.xds.routes import RouteConfigProviders
from envoi.xds.state import DynamicState

__all__ = ["Options", "Server", "ServerView", "WorkerPoolApi", "flush_interval_s"]

log = logging.getLogger("envoi")


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


class Server(BootstrapLoader):
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
        self.command_line_options = command_line_options(options)

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
