"""Clusters and hosts: the upstream side that every terminal filter connects through."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup

P = TypeVar("P", bound=asyncio.BaseProtocol)


class ClusterStats(StatsGroup):
    """``cluster.<name>.*`` as Envoy names them (the ones envoi can count)."""

    upstream_cx_total: Counter
    upstream_cx_http1_total: Counter
    upstream_cx_http2_total: Counter
    upstream_cx_connect_fail: Counter
    upstream_cx_connect_timeout: Counter
    upstream_cx_connect_attempts_exceeded: Counter
    upstream_cx_overflow: Counter
    upstream_cx_pool_overflow: Counter
    upstream_cx_destroy: Counter
    upstream_cx_destroy_local: Counter
    upstream_cx_destroy_remote: Counter
    upstream_cx_destroy_with_active_rq: Counter
    upstream_cx_destroy_local_with_active_rq: Counter
    upstream_cx_destroy_remote_with_active_rq: Counter
    upstream_cx_close_notify: Counter
    upstream_cx_rx_bytes_total: Counter
    upstream_cx_tx_bytes_total: Counter
    upstream_cx_protocol_error: Counter
    upstream_cx_max_requests: Counter
    upstream_cx_none_healthy: Counter
    upstream_cx_idle_timeout: Counter
    upstream_cx_max_duration_reached: Counter
    upstream_flow_control_paused_reading_total: Counter
    upstream_flow_control_resumed_reading_total: Counter
    upstream_flow_control_backed_up_total: Counter
    upstream_flow_control_drained_total: Counter
    upstream_rq_total: Counter
    upstream_rq_completed: Counter
    upstream_rq_pending_total: Counter
    upstream_rq_pending_overflow: Counter
    upstream_rq_pending_failure_eject: Counter
    upstream_rq_cancelled: Counter
    upstream_rq_maintenance_mode: Counter
    upstream_rq_timeout: Counter
    upstream_rq_max_duration_reached: Counter
    upstream_rq_per_try_timeout: Counter
    upstream_rq_per_try_idle_timeout: Counter
    upstream_rq_rx_reset: Counter
    upstream_rq_tx_reset: Counter
    upstream_rq_retry: Counter
    upstream_rq_retry_success: Counter
    upstream_rq_retry_overflow: Counter
    upstream_rq_retry_limit_exceeded: Counter
    upstream_rq_retry_backoff_exponential: Counter
    upstream_rq_retry_backoff_ratelimited: Counter
    retry_or_shadow_abandoned: Counter
    membership_change: Counter
    update_attempt: Counter
    update_success: Counter
    update_failure: Counter
    update_empty: Counter
    update_no_rebuild: Counter
    assignment_stale: Counter
    assignment_timeout_received: Counter
    bind_errors: Counter
    lb_healthy_panic: Counter
    upstream_cx_active: Gauge
    upstream_cx_rx_bytes_buffered: Gauge
    upstream_cx_tx_bytes_buffered: Gauge
    upstream_rq_active: Gauge
    upstream_rq_pending_active: Gauge
    membership_total: Gauge
    membership_healthy: Gauge
    membership_degraded: Gauge
    membership_excluded: Gauge
    max_host_weight: Gauge
    version: Gauge
    upstream_cx_connect_ms: Histogram
    upstream_cx_length_ms: Histogram

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        for prio in ("default", "high"):
            for flag in ("cx_open", "cx_pool_open", "rq_open", "rq_pending_open", "rq_retry_open"):
                scope.gauge(f"circuit_breakers.{prio}.{flag}")
        # Envoy sets these at start, so they show under ?usedonly even at 0.
        for name in ("circuit_breakers.default.cx_open", "circuit_breakers.default.rq_open",
                     "circuit_breakers.default.rq_pending_open", "membership_degraded",
                     "membership_excluded", "warming_state", "upstream_cx_rx_bytes_buffered"):
            scope.gauge(name).set(0)


@dataclass
class Thresholds:
    """One ``circuit_breakers.thresholds`` entry; Envoy's defaults."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


class Host:
    """One upstream endpoint. The per-host counters are what ``/clusters`` shows."""

    __slots__ = (
        "address",
        "cx_active",
        "cx_connect_fail",
        "cx_total",
        "health_flags",
        "hostname",
        "locality",
        "port",
        "priority",
        "rq_active",
        "rq_error",
        "rq_pending_active",
        "rq_success",
        "rq_timeout",
        "rq_total",
        "weight",
    )

    def __init__(
        self,
        address: str,
        port: int,
        *,
        hostname: str = "",
        weight: int = 1,
        priority: int = 0,
        locality: tuple[str, str, str] = ("", "", ""),
    ) -> None:
        self.address = address
        self.port = port
        self.hostname = hostname
        self.weight = weight
        self.priority = priority
        self.locality = locality
        self.health_flags: set[str] = set()
        self.cx_active = 0
        self.cx_connect_fail = 0
        self.cx_total = 0
        self.rq_active = 0
        self.rq_error = 0
        self.rq_pending_active = 0
        self.rq_success = 0
        self.rq_timeout = 0
        self.rq_total = 0

    @property
    def healthy(self) -> bool:
        return not self.health_flags

    @property
    def address_string(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def __repr__(self) -> str:
        return f"Host({self.address_string})"


class UpstreamConnectError(Exception):
    """A connect attempt failed; ``timeout`` tells a timeout from a refusal."""

    def __init__(self, host: Host, reason: str, *, timeout: bool = False) -> None:
        super().__init__(f"{host.address_string}: {reason}")
        self.host = host
        self.reason = reason
        self.timeout = timeout


@dataclass
class Cluster:
    """A named set of hosts with a load balancer and Envoy's stats."""

    name: str
    stats: ClusterStats
    connect_timeout: float = 5.0
    buffer_limit: int = 1024 * 1024
    hosts: list[Host] = field(default_factory=list)
    thresholds: dict[str, Thresholds] = field(
        default_factory=lambda: {"DEFAULT": Thresholds(), "HIGH": Thresholds()}
    )
    observability_name: str = ""
    added_via_api: bool = False
    lb: Any = None  # a LoadBalancer; set by the cluster manager
    discovery: Any = None  # keeps ``hosts`` up to date (``async run(cluster)``), if dynamic
    config: Any = None  # the envoy.config.cluster.v3.Cluster proto
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.observability_name:
            self.observability_name = self.name

    def set_hosts(self, hosts: list[Host]) -> None:
        changed = [h.address_string for h in hosts] != [h.address_string for h in self.hosts]
        known = {id(h) for h in self.hosts}
        self.count_new_hosts(sum(1 for h in hosts if id(h) not in known))
        self.hosts = hosts
        if changed:
            self.stats.membership_change.inc()
        self.update_membership()
        if self.lb is not None:
            self.lb.hosts_changed(hosts)

    def count_new_hosts(self, n: int) -> None:
        """Envoy resolves each new host's transport socket (the default one: envoi has no
        ``transport_socket_matches``) and counts the match."""
        if n:
            self.stats.scope.counter("default.total_match_count").value += n

    def update_membership(self) -> None:
        self.stats.membership_total.set(len(self.hosts))
        self.stats.membership_healthy.set(sum(1 for h in self.hosts if h.healthy))

    def choose_host(self, context: Any = None) -> Host | None:
        host: Host | None = self.lb.choose_host(context) if self.lb is not None else None
        if host is None:
            self.stats.upstream_cx_none_healthy.value += 1
        return host

    async def connect(
        self,
        host: Host,
        protocol_factory: Callable[[], P],
        *,
        timeout: float | None = None,
    ) -> tuple[asyncio.Transport, P]:
        """Open a TCP connection to ``host``, counting Envoy's connect stats. As in Envoy, a
        connection counts (``upstream_cx_total``, ``_active``, the host's ``cx_total``) from the
        attempt on; one that fails to connect is destroyed (remotely when refused, locally on
        the connect timeout)."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        stats = self.stats
        stats.upstream_cx_total.value += 1
        stats.upstream_cx_active.inc()
        host.cx_total += 1
        host.cx_active += 1
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(protocol_factory, host.address, host.port),
                timeout if timeout is not None else self.connect_timeout,
            )
        except TimeoutError as exc:
            stats.upstream_cx_connect_fail.value += 1
            stats.upstream_cx_connect_timeout.value += 1
            host.cx_connect_fail += 1
            self.connection_closed(host, started, local=True)
            raise UpstreamConnectError(host, "connection timeout", timeout=True) from exc
        except OSError as exc:
            stats.upstream_cx_connect_fail.value += 1
            host.cx_connect_fail += 1
            self.connection_closed(host, started, local=False)
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise UpstreamConnectError(host, reason) from exc
        except BaseException:  # cancelled while connecting
            self.connection_closed(host, started, local=True)
            raise
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.buffer_limit, low=self.buffer_limit // 2)
        stats.upstream_cx_connect_ms.record((time.monotonic() - started) * 1000)
        return transport, protocol

    def connection_closed(self, host: Host, started: float, *, local: bool,
                          active_rq: bool = False) -> None:
        """Account for an upstream connection that ``connect`` opened; ``active_rq`` when a
        request (for tcp_proxy: the proxied connection itself) was still using it."""
        stats = self.stats
        stats.upstream_cx_destroy.value += 1
        if local:
            stats.upstream_cx_destroy_local.value += 1
        else:
            stats.upstream_cx_destroy_remote.value += 1
        if active_rq:
            stats.upstream_cx_destroy_with_active_rq.value += 1
            if local:
                stats.upstream_cx_destroy_local_with_active_rq.value += 1
            else:
                stats.upstream_cx_destroy_remote_with_active_rq.value += 1
        stats.upstream_cx_active.dec()
        host.cx_active -= 1
        stats.upstream_cx_length_ms.record((time.monotonic() - started) * 1000)
