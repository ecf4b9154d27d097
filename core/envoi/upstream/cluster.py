"""Clusters and hosts: the upstream side that every terminal filter connects through."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup
from envoi.upstream.host import Host, HostSet, health_flags_string
from envoi.upstream.outlier import LOCAL_ORIGIN_CONNECT_FAILED, LOCAL_ORIGIN_TIMEOUT
from envoi.upstream.resource import ResourceManager, Thresholds

__all__ = ["Cluster", "ClusterStats", "Host", "HostSet", "MemberUpdateCb", "Thresholds",
           "UpstreamConnectError", "health_flags_string"]

P = TypeVar("P", bound=asyncio.BaseProtocol)
#: ``cb(hosts_added, hosts_removed)``: a cluster's membership changed.
MemberUpdateCb = Callable[[list[Host], list[Host]], None]


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
    # Envoy's names for what envoi never does (no subsets, zone routing, HTTP/3, 0-RTT,
    # internal redirects, ORIGINAL_DST, EDS caching): always 0, kept so dashboards find them.
    assignment_use_cached: Counter
    lb_local_cluster_not_ok: Counter
    lb_recalculate_zone_structures: Counter
    lb_subsets_created: Counter
    lb_subsets_fallback: Counter
    lb_subsets_fallback_panic: Counter
    lb_subsets_removed: Counter
    lb_subsets_selected: Counter
    lb_zone_cluster_too_small: Counter
    lb_zone_no_capacity_left: Counter
    lb_zone_routing_all_directly: Counter
    lb_zone_routing_cross_zone: Counter
    lb_zone_routing_sampled: Counter
    original_dst_host_invalid: Counter
    upstream_cx_connect_with_0_rtt: Counter
    upstream_cx_http3_total: Counter
    upstream_http3_broken: Counter
    upstream_internal_redirect_failed_total: Counter
    upstream_internal_redirect_succeeded_total: Counter
    upstream_rq_0rtt: Counter
    upstream_rq_active_overflow: Counter
    upstream_rq_rx_reset_no_error: Counter
    lb_subsets_active: Gauge
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


class UpstreamConnectError(Exception):
    """A connect attempt failed; ``timeout`` tells a timeout from a refusal."""

    def __init__(self, host: Host, reason: str, *, timeout: bool = False) -> None:
        super().__init__(f"{host.address_string}: {reason}")
        self.host = host
        self.reason = reason
        self.timeout = timeout


@dataclass
class Cluster:
    """A named set of hosts, by priority, with a load balancer, circuit breakers and Envoy's
    stats. Every source of hosts goes through :meth:`update_hosts` (or :meth:`set_hosts`)."""

    name: str
    stats: ClusterStats
    connect_timeout: float = 5.0
    buffer_limit: int = 1024 * 1024
    #: Every host, priority 0 first (what ``/clusters`` lists); see ``priority_set``.
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
    #: The hosts of each priority (index = priority).
    priority_set: list[HostSet] = field(default_factory=list)
    #: Active health checkers (``envoi.upstream.health_check``), started by the server.
    health_checkers: list[Any] = field(default_factory=list)
    #: The outlier detector (``envoi.upstream.outlier.Detector``), with ``outlier_detection``.
    outlier_detector: Any = None
    #: The load-balancing settings (``envoi.upstream.lb.LbParams``), read from the config.
    lb_params: Any = None
    #: The cluster's ``UpstreamTlsContext`` (an ``envoi.tls.context.ClientTlsContext``); every
    #: connection ``connect`` opens goes through it. None: plaintext.
    tls: Any = None
    #: ``cluster.<name>.ssl.*`` when ``tls`` is set.
    ssl_stats: Any = None

    def __post_init__(self) -> None:
        if not self.observability_name:
            self.observability_name = self.name
        self._member_cbs: list[MemberUpdateCb] = []
        self._health_cbs: list[Callable[[Cluster], None]] = []
        self.resources: dict[str, ResourceManager] = {}
        self.set_thresholds(self.thresholds)

    # -- circuit breakers ------------------------------------------------------------------

    def set_thresholds(self, thresholds: dict[str, Thresholds]) -> None:
        """Set the circuit-breaker limits per priority (``DEFAULT``, ``HIGH``)."""
        self.thresholds = {"DEFAULT": Thresholds(), "HIGH": Thresholds(), **thresholds}
        self.resources = {prio: ResourceManager(th, self.stats.scope, prio.lower())
                          for prio, th in self.thresholds.items()}

    def resource_manager(self, priority: str = "DEFAULT") -> ResourceManager:
        return self.resources[priority]

    # -- membership: the one update path ---------------------------------------------------

    def add_member_update_cb(self, cb: MemberUpdateCb) -> None:
        """``cb(added, removed)`` after every membership change (health checkers, outlier
        detection and connection pools follow the host set this way)."""
        self._member_cbs.append(cb)

    def add_health_change_cb(self, cb: Callable[[Cluster], None]) -> None:
        """``cb(cluster)`` after the health flags of some host changed (see ``health_changed``)."""
        self._health_cbs.append(cb)

    def update_hosts(
        self,
        priority: int,
        hosts: list[Host],
        *,
        locality_weights: dict[tuple[str, str, str], int] | None = None,
        overprovisioning_factor: int | None = None,
    ) -> tuple[list[Host], list[Host]]:
        """Replace the hosts of ``priority`` (from STATIC config, DNS, EDS...).

        A host whose address was there before keeps its object, so its counters, health flags
        and in-flight requests carry on; its weight, locality and hostname come from the update.
        Returns ``(added, removed)``.
        """
        while len(self.priority_set) <= priority:
            self.priority_set.append(HostSet(len(self.priority_set)))
        hs = self.priority_set[priority]
        old: dict[tuple[str, int], Host] = {}
        for h in hs.hosts:
            old.setdefault(h.key, h)
        kept: list[Host] = []
        added: list[Host] = []
        for h in hosts:
            o = old.pop(h.key, None)
            if o is None:
                h.priority = priority
                added.append(h)
                kept.append(h)
                continue
            o.weight, o.locality, o.hostname = h.weight, h.locality, h.hostname
            o.health_check_address = h.health_check_address
            # The flags a discovery source owns (EDS health status) follow the update.
            for flag in ("failed_eds_health", "degraded_eds_health", "eds_status_draining"):
                if flag in h.health_flags:
                    o.health_flags.add(flag)
                else:
                    o.health_flags.discard(flag)
            kept.append(o)
        removed = list(old.values())
        hs.hosts = kept
        hs.locality_weights = dict(locality_weights or {})
        if overprovisioning_factor is not None:
            hs.overprovisioning_factor = overprovisioning_factor
        self.hosts = [h for s in self.priority_set for h in s.hosts]
        self.count_new_hosts(len(added))
        if added or removed:
            self.stats.membership_change.inc()
            for cb in self._member_cbs:
                cb(added, removed)
        self._refresh()
        return added, removed

    def set_hosts(self, hosts: list[Host]) -> None:
        """Replace every host; each goes to the priority it names (``Host.priority``)."""
        by_priority: dict[int, list[Host]] = {}
        for h in hosts:
            by_priority.setdefault(h.priority, []).append(h)
        top = max([len(self.priority_set) - 1, *by_priority]) if by_priority else \
            len(self.priority_set) - 1
        for p in range(top + 1):
            self.update_hosts(p, by_priority.get(p, []))
        if top < 0:
            self._refresh()

    def count_new_hosts(self, n: int) -> None:
        """Envoy resolves each new host's transport socket (the default one: envoi has no
        ``transport_socket_matches``) and counts the match."""
        if n:
            self.stats.scope.counter("default.total_match_count").value += n

    def health_changed(self) -> None:
        """Some host's health flags changed (active health check, outlier detection): update
        the membership gauges and rebuild the load balancer's view."""
        self._refresh()
        for cb in self._health_cbs:
            cb(self)

    def _refresh(self) -> None:
        self.update_membership()
        if self.lb is not None:
            self.lb.hosts_changed(self.hosts)

    def update_membership(self) -> None:
        st = self.stats
        hosts = self.hosts
        st.membership_total.set(len(hosts))
        st.membership_healthy.set(sum(1 for h in hosts if h.healthy))
        st.membership_degraded.set(sum(1 for h in hosts if h.degraded))
        st.membership_excluded.set(sum(1 for h in hosts if h.excluded))

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
        priority: str = "DEFAULT",
        reserved: bool = False,
        alpn_fallback: tuple[str, ...] = (),
    ) -> tuple[asyncio.Transport, P]:
        """Open a connection to ``host`` through the cluster's transport socket, counting
        Envoy's connect stats. As in Envoy, a connection counts (``upstream_cx_total``,
        ``_active``, the host's ``cx_total``, the priority's ``max_connections`` resource) from
        the attempt on; one that fails to connect is destroyed (remotely when refused, locally
        on the connect timeout) and reported to outlier detection as a local-origin failure.
        Callers check ``resource_manager(priority).connections.can_create()`` first;
        ``reserved``: the caller already took the connection (``connections.inc()``).

        With an ``UpstreamTlsContext`` the TLS handshake, the certificate checks and the
        ``ssl.*`` stats happen here, so every caller gets them; ``timeout`` (default
        ``connect_timeout``) covers the handshake too, as Envoy's connect timer does, and a
        failed handshake or check is a connect failure. ``alpn_fallback`` is what the caller
        speaks (the HTTP/1 pool: ``("http/1.1",)``), offered by ALPN when the cluster configures
        none, as Envoy's pools do; the negotiated protocol is
        ``envoi.tls.info.negotiated_protocol(transport)``."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        stats = self.stats
        if not reserved:
            self.resources[priority].connections.inc()
        stats.upstream_cx_total.value += 1
        stats.upstream_cx_active.inc()
        host.cx_total += 1
        host.cx_active += 1
        limit = timeout if timeout is not None else self.connect_timeout
        tls = self.tls
        checked: _PeerCheck[P] | None = None
        try:
            if tls is None:
                transport, protocol = await asyncio.wait_for(
                    loop.create_connection(protocol_factory, host.address, host.port), limit)
            else:
                factory: Callable[[], Any] = protocol_factory
                if tls.peer_checks:
                    checked = _PeerCheck(protocol_factory, tls)
                    factory = lambda: checked  # noqa: E731
                transport, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        factory, host.address, host.port, ssl=tls.context_for(alpn_fallback),
                        server_hostname=tls.server_hostname(host.hostname) or host.address,
                        ssl_handshake_timeout=limit or None),
                    limit)
                if checked is not None:
                    if checked.failure is not None:
                        raise _PeerCheckFailed(checked.failure)
                    protocol = checked.inner
        except TimeoutError as exc:
            stats.upstream_cx_connect_fail.value += 1
            stats.upstream_cx_connect_timeout.value += 1
            host.cx_connect_fail += 1
            self.connection_closed(host, started, local=True, priority=priority)
            if host.outlier is not None:
                host.outlier.put_result(LOCAL_ORIGIN_TIMEOUT)
            raise UpstreamConnectError(host, "connection timeout", timeout=True) from exc
        except (OSError, _PeerCheckFailed) as exc:
            stats.upstream_cx_connect_fail.value += 1
            host.cx_connect_fail += 1
            self.connection_closed(host, started, local=False, priority=priority)
            if host.outlier is not None:
                host.outlier.put_result(LOCAL_ORIGIN_CONNECT_FAILED)
            if isinstance(exc, _PeerCheckFailed):
                getattr(self.ssl_stats, exc.stat).value += 1
                raise UpstreamConnectError(host, f"TLS error: the peer certificate failed "
                                                 f"{exc.stat}") from exc
            if tls is not None and isinstance(exc, ssl.SSLError):
                self.ssl_stats.record_failure(exc)
                raise UpstreamConnectError(host, f"TLS error: {exc}") from exc
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise UpstreamConnectError(host, reason) from exc
        except BaseException:  # cancelled while connecting
            self.connection_closed(host, started, local=True, priority=priority)
            raise
        if tls is not None:
            self.ssl_stats.record_handshake(transport.get_extra_info("ssl_object"), tls.curve)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.buffer_limit, low=self.buffer_limit // 2)
        stats.upstream_cx_connect_ms.record((time.monotonic() - started) * 1000)
        return transport, protocol

    def connection_closed(self, host: Host, started: float, *, local: bool,
                          active_rq: bool = False, priority: str = "DEFAULT") -> None:
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
        self.resources[priority].connections.dec()
        host.cx_active -= 1
        stats.upstream_cx_length_ms.record((time.monotonic() - started) * 1000)


class _PeerCheckFailed(Exception):
    def __init__(self, stat: str) -> None:
        super().__init__(stat)
        self.stat = stat


class _PeerCheck(asyncio.Protocol, Generic[P]):
    """Stands in for the caller's protocol until the checks ``ssl`` cannot make during the
    handshake (subject alt names, certificate hashes) passed; then hands the transport over,
    so the caller's protocol never sees a connection that failed them."""

    def __init__(self, factory: Callable[[], P], tls: Any) -> None:
        self.inner = factory()
        self.tls = tls
        self.failure: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        failure = self.tls.check_peer(transport.get_extra_info("ssl_object"))
        if failure is not None:
            self.failure = failure
            transport.abort()  # type: ignore[attr-defined]  # a Transport (uvloop's is not one)
            return
        transport.set_protocol(self.inner)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only after a failed check: the caller's protocol was never connected
