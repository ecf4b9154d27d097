"""``envoy.filters.network.tcp_proxy``: connect each downstream connection to an upstream host
and copy bytes both ways, with backpressure, half-close, idle timeout and Envoy's stats."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoi import hookimpl
from envoi.access_log import TcpLogContext
from envoi.config import ConfigError, ConfigIssue, duration_seconds, implements
from envoi.extensions import AccessLogger, ClusterManager, FactoryContext, NetworkFilterFactory
from envoi.log import conn_debug
from envoi.network.filter import (
    Connection,
    ConnectionCloseType,
    ConnectionEvent,
    FilterChainBuilder,
    FilterStatus,
    NetworkFilterFactoryCb,
    ReadFilter,
)
from envoi.stats import Counter, Gauge, StatsGroup
from envoi.upstream.cluster import Cluster, Host, UpstreamConnectError
from envoi.upstream.outlier import LOCAL_ORIGIN_CONNECT_SUCCESS_FINAL

STOP = FilterStatus.STOP_ITERATION
log = logging.getLogger("envoi.filter")
DEFAULT_IDLE_TIMEOUT = 3600.0  # Envoy's default: 1 h


class TcpProxyStats(StatsGroup):
    downstream_cx_total: Counter
    downstream_cx_no_route: Counter
    downstream_cx_tx_bytes_total: Counter
    downstream_cx_rx_bytes_total: Counter
    downstream_flow_control_paused_reading_total: Counter
    downstream_flow_control_resumed_reading_total: Counter
    idle_timeout: Counter
    max_downstream_connection_duration: Counter
    upstream_flush_total: Counter
    downstream_cx_drain_close: Counter
    early_data_received_count_total: Counter
    route_delayed_total: Counter
    downstream_cx_rx_bytes_buffered: Gauge
    downstream_cx_tx_bytes_buffered: Gauge
    upstream_flush_active: Gauge


@dataclass(frozen=True)
class TcpProxyConfig:
    stat_prefix: str
    clusters: tuple[tuple[str, int], ...]  # (name, weight); one entry for ``cluster``
    idle_timeout: float | None
    max_connect_attempts: int
    max_duration: float | None
    access_logs: tuple[AccessLogger, ...]
    stats: TcpProxyStats
    cluster_manager: ClusterManager

    def pick_cluster(self) -> str:
        if len(self.clusters) == 1:
            return self.clusters[0][0]
        names = [c for c, _ in self.clusters]
        weights = [w for _, w in self.clusters]
        return random.choices(names, weights=weights)[0]


class _Upstream(asyncio.Protocol):
    """The upstream side of one proxied connection."""

    def __init__(self, proxy: TcpProxyFilter) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.proxy.on_upstream_data(data)

    def eof_received(self) -> bool:
        return self.proxy.on_upstream_eof()

    def pause_writing(self) -> None:
        self.proxy.on_upstream_high_watermark()

    def resume_writing(self) -> None:
        self.proxy.on_upstream_low_watermark()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.on_upstream_closed()


class TcpProxyFilter(ReadFilter):
    def __init__(self, config: TcpProxyConfig) -> None:
        self.config = config
        self.conn: Connection | None = None
        self.cluster: Cluster | None = None
        self.host: Host | None = None
        self.upstream: _Upstream | None = None
        self.upstream_transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.pending_end = False
        self.upstream_started = 0.0
        self.last_activity = 0.0
        self.idle_handle: asyncio.TimerHandle | None = None
        self.duration_handle: asyncio.TimerHandle | None = None
        self.closing_upstream_locally = False
        self.downstream_done = False
        self.upstream_eof = False
        self.downstream_read_disabled = False
        self._stats = config.stats
        self._cstats: Any = None

    # -- downstream ------------------------------------------------------------------------

    def on_new_connection(self) -> FilterStatus:
        conn = self.read_callbacks.connection
        self.conn = conn
        cfg = self.config
        cfg.stats.downstream_cx_total.value += 1
        conn.add_connection_callbacks(self.on_downstream_event)
        conn.add_watermark_callbacks(self.on_downstream_high_watermark,
                                     self.on_downstream_low_watermark)
        cluster = cfg.cluster_manager.get(cfg.pick_cluster())
        if cluster is None:
            cfg.stats.downstream_cx_no_route.value += 1
            conn.stream_info.response_flags.append("NR")
            conn.close(ConnectionCloseType.NO_FLUSH)
            return STOP
        self.cluster = cluster
        self._cstats = cluster.stats
        conn.stream_info.upstream_cluster = cluster.name
        if not cluster.resources["DEFAULT"].connections.can_create():  # max_connections
            cluster.stats.upstream_cx_overflow.value += 1
            conn.stream_info.response_flags.append("UO")
            conn.close(ConnectionCloseType.NO_FLUSH)
            return STOP
        if cfg.max_duration is not None:
            self.duration_handle = asyncio.get_running_loop().call_later(
                cfg.max_duration, self._max_duration_reached
            )
        # Hold reading until the upstream is connected, as Envoy does.
        conn.read_disable(True)
        self.downstream_read_disabled = True
        asyncio.get_running_loop().create_task(self._connect(cluster))
        return FilterStatus.CONTINUE

    async def _connect(self, cluster: Cluster) -> None:
        conn = self.conn
        assert conn is not None
        attempts = self.config.max_connect_attempts
        for attempt in range(attempts):
            host = cluster.choose_host()
            if host is None:
                conn.stream_info.response_flags.append("UH")
                conn.close(ConnectionCloseType.NO_FLUSH)
                return
            # Envoy's TCP connection pool counts each proxied connection as one request, pending
            # while it connects and counted in upstream_rq_total once it has a connection.
            cstats = cluster.stats
            cstats.upstream_rq_pending_total.value += 1
            cstats.upstream_rq_pending_active.inc()
            debug = log.isEnabledFor(logging.DEBUG)
            if debug:
                conn_debug(log, conn.id, "Creating connection to cluster %s (%s)", cluster.name,
                           host.address_string)
            try:
                transport, upstream = await cluster.connect(host, lambda: _Upstream(self))
            except UpstreamConnectError as exc:
                if debug:
                    conn_debug(log, conn.id, "upstream connect failed: %s", exc)
                cstats.upstream_rq_pending_active.dec()
                cstats.upstream_rq_pending_failure_eject.value += 1
                if conn.closed:
                    return
                if attempt + 1 < attempts:
                    continue
                if attempts > 1:
                    cluster.stats.upstream_cx_connect_attempts_exceeded.value += 1
                conn.stream_info.response_flags.append("UF")
                conn.stream_info.upstream_host = host.address_string
                conn.close(ConnectionCloseType.NO_FLUSH)
                return
            cstats.upstream_rq_pending_active.dec()
            cstats.upstream_rq_total.value += 1
            cstats.upstream_rq_active.inc()
            host.rq_total += 1
            if host.outlier is not None:  # (a failed connect was reported by Cluster.connect)
                host.outlier.put_result(LOCAL_ORIGIN_CONNECT_SUCCESS_FINAL)
            break
        else:  # pragma: no cover - loop always breaks or returns
            return
        if log.isEnabledFor(logging.DEBUG):
            conn_debug(log, conn.id, "upstream connected: %s", host.address_string)
        self.host = host
        self.upstream = upstream
        self.upstream_transport = transport
        self.upstream_started = time.monotonic()
        conn.stream_info.upstream_host = host.address_string
        sock = transport.get_extra_info("sockname")
        if sock:
            conn.stream_info.upstream_local_address = f"{sock[0]}:{sock[1]}"
        if conn.closed:
            self._close_upstream()
            return
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self._send_upstream(data)
        if self.pending_end:
            self._upstream_write_eof()
        if self.downstream_read_disabled:
            self.downstream_read_disabled = False
            conn.read_disable(False)
        self._arm_idle_timer()

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        t = self.upstream_transport
        if data:
            self._stats.downstream_cx_rx_bytes_total.value += len(data)
            if t is not None:
                self._cstats.upstream_cx_tx_bytes_total.value += len(data)
                t.write(data)
            else:
                self.pending.append(data)
            self.last_activity = time.monotonic()
        if end_stream:
            if t is not None:
                self._upstream_write_eof()
            else:
                self.pending_end = True
        return STOP

    def _send_upstream(self, data: bytes) -> None:
        assert self.upstream_transport is not None
        self._cstats.upstream_cx_tx_bytes_total.value += len(data)
        self.upstream_transport.write(data)

    def _upstream_write_eof(self) -> None:
        t = self.upstream_transport
        if t is None or t.is_closing():
            return
        self.downstream_done = True
        if self.upstream_eof:
            self._close_upstream()
        elif t.can_write_eof():
            t.write_eof()
        else:
            self._close_upstream()

    def on_downstream_event(self, event: ConnectionEvent) -> None:
        if event in (ConnectionEvent.REMOTE_CLOSE, ConnectionEvent.LOCAL_CLOSE):
            self._close_upstream()
            for handle in (self.idle_handle, self.duration_handle):
                if handle is not None:
                    handle.cancel()
            conn = self.conn
            assert conn is not None
            for logger in self.config.access_logs:
                logger.log(TcpLogContext(conn.stream_info))

    def on_downstream_high_watermark(self) -> None:
        # The downstream cannot take more: stop reading the upstream.
        t = self.upstream_transport
        if t is not None and not t.is_closing():
            t.pause_reading()
            self._cstats.upstream_flow_control_paused_reading_total.value += 1

    def on_downstream_low_watermark(self) -> None:
        t = self.upstream_transport
        if t is not None and not t.is_closing():
            t.resume_reading()
            self._cstats.upstream_flow_control_resumed_reading_total.value += 1

    # -- upstream --------------------------------------------------------------------------

    def on_upstream_data(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        n = len(data)
        self._stats.downstream_cx_tx_bytes_total.value += n
        self._cstats.upstream_cx_rx_bytes_total.value += n
        self.last_activity = time.monotonic()
        conn.write(data, False)

    def on_upstream_eof(self) -> bool:
        conn = self.conn
        assert conn is not None
        self.upstream_eof = True
        conn.write(b"", True)
        # Envoy's rule: a connection whose last FIN came from the peer closed remotely; one
        # where we sent the last FIN closed locally. If our FIN already went, this is the end.
        return not self.downstream_done

    def on_upstream_high_watermark(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.read_disable(True)
            self._stats.downstream_flow_control_paused_reading_total.value += 1

    def on_upstream_low_watermark(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.read_disable(False)
            self._stats.downstream_flow_control_resumed_reading_total.value += 1

    def on_upstream_closed(self) -> None:
        cluster, host = self.cluster, self.host
        if cluster is not None and host is not None and self.upstream_transport is not None:
            cluster.stats.upstream_rq_active.dec()
            cluster.connection_closed(host, self.upstream_started,
                                      local=self.closing_upstream_locally, active_rq=True)
        self.upstream_transport = None
        conn = self.conn
        if conn is not None and not conn.closed:
            if not self.upstream_eof:
                conn.stream_info.response_flags.append("UC")
            conn.close(ConnectionCloseType.FLUSH_WRITE)

    def _close_upstream(self) -> None:
        t = self.upstream_transport
        if t is not None and not t.is_closing():
            self.closing_upstream_locally = True
            t.close()

    # -- timeouts ----------------------------------------------------------------------------

    def _max_duration_reached(self) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        self._stats.max_downstream_connection_duration.value += 1
        conn.close(ConnectionCloseType.NO_FLUSH)
        self._close_upstream()

    def _arm_idle_timer(self) -> None:
        timeout = self.config.idle_timeout
        if timeout is None:
            return
        self.last_activity = time.monotonic()
        loop = asyncio.get_running_loop()
        self.idle_handle = loop.call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        # Activity only stamps a time; the timer re-arms for the remainder, so the hot path
        # never reschedules a timer per chunk.
        timeout = self.config.idle_timeout
        conn = self.conn
        if timeout is None or conn is None or conn.closed:
            return
        remaining = self.last_activity + timeout - time.monotonic()
        if remaining > 0.001:
            self.idle_handle = asyncio.get_running_loop().call_later(remaining, self._check_idle)
            return
        self._stats.idle_timeout.value += 1
        conn.close(ConnectionCloseType.NO_FLUSH)
        self._close_upstream()


implements("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
           "stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log",
           "max_connect_attempts", "max_downstream_connection_duration")
implements("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", "clusters")
implements("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight",
           "name", "weight")


class TcpProxyFactory(NetworkFilterFactory):
    name = "envoy.filters.network.tcp_proxy"
    aliases = ("envoy.tcp_proxy",)
    type_urls = ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",)
    terminal = True

    def create_filter_factory(self, config: Any, context: FactoryContext) -> NetworkFilterFactoryCb:
        path = context.path
        issues: list[ConfigIssue] = []
        if config.HasField("weighted_clusters"):
            clusters = tuple((c.name, c.weight) for c in config.weighted_clusters.clusters)
        elif config.cluster:
            clusters = ((config.cluster, 1),)
        else:
            clusters = ()
            issues.append(
                ConfigIssue(path + ".cluster", "a cluster or weighted_clusters is required")
            )
        # Envoy accepts a cluster it does not know (it may arrive later over CDS) and counts
        # downstream_cx_no_route per connection. envoi has no CDS yet, so an unknown cluster
        # could never work: say so at config time (a documented difference).
        if not context.cluster_manager.dynamic_clusters:
            for i, (name, _) in enumerate(clusters):
                if not context.cluster_manager.is_configured(name):
                    where = (f".weighted_clusters.clusters[{i}].name"
                             if config.HasField("weighted_clusters") else ".cluster")
                    issues.append(ConfigIssue(path + where, f"unknown cluster '{name}'"))
        if issues:
            raise ConfigError(issues)
        idle: float | None = DEFAULT_IDLE_TIMEOUT
        if config.HasField("idle_timeout"):
            idle = duration_seconds(config.idle_timeout) or None
        max_duration = None
        if config.HasField("max_downstream_connection_duration"):
            max_duration = duration_seconds(config.max_downstream_connection_duration) or None
        attempts = config.max_connect_attempts.value if config.HasField(
            "max_connect_attempts") else 1
        stats = TcpProxyStats(context.stats.root.scope(f"tcp.{config.stat_prefix}"))
        stats.downstream_cx_rx_bytes_buffered.set(0)  # Envoy sets it at start (?usedonly)
        cfg = TcpProxyConfig(
            stat_prefix=config.stat_prefix,
            clusters=clusters,
            idle_timeout=idle,
            max_connect_attempts=max(1, attempts),
            max_duration=max_duration,
            access_logs=tuple(context.access_loggers(config.access_log, path + ".access_log")),
            stats=stats,
            cluster_manager=context.cluster_manager,
        )

        def add_filter(builder: FilterChainBuilder) -> None:
            builder.add_read_filter(TcpProxyFilter(cfg))

        return add_filter


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [TcpProxyFactory()]
