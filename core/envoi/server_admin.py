"""What the server reports: its own stats (``server.*``, ``listener_manager.*``) and the
admin's view of it (:class:`envoi.admin.api.AdminServerApi`), with worker processes summed in.

:class:`ServerAdmin` is a base of :class:`envoi.server.Server`; it reads the server's state and
changes only what the admin asks for (health-check state, counters, runtime, drained listeners).
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Any, Protocol

from envoi import __version__
from envoi.network.listener import ActiveListener
from envoi.runtime import Runtime
from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup, Store
from envoi.upstream.cluster_manager import ClusterManager
from envoi.upstream.host import health_flags_string

if TYPE_CHECKING:
    from envoi.server_options import Options


STATE_CODES = {"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2, "INITIALIZING": 3}


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


class ServerAdmin:
    """The admin's half of the server: the server gauges, the TLS contexts' expiry, and
    the :class:`envoi.admin.api.AdminServerApi` methods."""

    # Set by envoi.server.Server.__init__.
    options: Options
    stats: Store
    server_stats: ServerStats
    lm_stats: ListenerManagerStats
    started_monotonic: float
    cluster_manager: ClusterManager
    listeners: list[ActiveListener]
    runtime: Runtime
    pool: WorkerPoolApi | None
    worker_index: int | None
    healthcheck_failed: bool
    _state: str

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
