"""Active health checking: Envoy's per-host state machine, its timing, and the loop that runs it.

A cluster's ``health_checks`` entry becomes one :class:`ActiveHealthChecker`; it keeps one
:class:`HostSession` per host. A *probe* (HTTP, TCP, or one a plugin registers through
``envoi_health_checkers``, such as the gRPC check) does one check and says how it went; the
session turns results into health flags exactly as Envoy does:

* a host added to a health-checked cluster starts ``/failed_active_hc``; its first successful
  check makes it healthy at once, later ones need ``healthy_threshold`` passes in a row;
* an *active* failure (an HTTP status that is not expected) marks a healthy host unhealthy at
  once; network failures, timeouts and retriable statuses count towards
  ``unhealthy_threshold``;
* the next check comes after ``interval`` (healthy), ``unhealthy_interval`` (unhealthy), the
  ``*_edge_interval`` while a change is pending, or ``no_traffic_interval`` /
  ``no_traffic_healthy_interval`` until the cluster has carried traffic, plus jitter.

:class:`HostSession` is sans-IO (results in, flags and the next delay out); the asyncio part is
:meth:`ActiveHealthChecker.run_session`.

The probe contract (for plugins): ``HealthCheckerFactory.create_health_checker(cluster, config,
context)`` returns a ``ProbeFactory``: ``factory(host)`` returns a :class:`Probe` whose
``async check()`` returns one of the ``RESULT_*`` values below and whose ``close()`` drops any
connection it keeps (called after a timeout, and when the host leaves the cluster). The checker
applies ``timeout`` around ``check()``; a probe should connect to :func:`probe_address`, keep its
connection between checks when ``reuse_connection`` says so, and never raise (an exception
counts as a network failure and is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from envoi.config import duration_seconds
from envoi.stats import Counter, Gauge, StatsGroup
from envoi.upstream.host import (
    ACTIVE_HC_TIMEOUT,
    DEGRADED_ACTIVE_HC,
    EXCLUDED_VIA_IMMEDIATE_HC_FAIL,
    FAILED_ACTIVE_HC,
    PENDING_ACTIVE_HC,
    Host,
)

if TYPE_CHECKING:
    from envoi.upstream.cluster import Cluster

log = logging.getLogger("envoi.health_check")

# What a probe reports.
RESULT_HEALTHY = "healthy"
RESULT_DEGRADED = "degraded"  # passed, but the upstream asked to be used last (x-envoy-degraded)
RESULT_UNHEALTHY = "unhealthy"  # an active failure: unhealthy at once
RESULT_UNHEALTHY_RETRIABLE = "unhealthy_retriable"  # counts towards unhealthy_threshold
RESULT_NETWORK_FAILURE = "network_failure"  # counts towards unhealthy_threshold
# Failure types (Envoy's HealthCheckFailureType).
ACTIVE = "active"
NETWORK = "network"
NETWORK_TIMEOUT = "network_timeout"
PASSIVE = "passive"
# How a check changed the host (Envoy's HealthTransition).
UNCHANGED = "unchanged"
CHANGED = "changed"
CHANGE_PENDING = "change_pending"

#: HealthCheck fields the checker itself acts on (each probe adds its own message's fields).
IMPLEMENTED_FIELDS = frozenset({
    "timeout", "interval", "initial_jitter", "interval_jitter", "interval_jitter_percent",
    "unhealthy_threshold", "healthy_threshold", "reuse_connection", "no_traffic_interval",
    "no_traffic_healthy_interval", "unhealthy_interval", "unhealthy_edge_interval",
    "healthy_edge_interval", "always_log_health_check_failures",
    "always_log_health_check_success", "http_health_check", "tcp_health_check",
    "grpc_health_check", "custom_health_check",
})


class Probe(Protocol):
    async def check(self) -> str: ...
    def close(self) -> None: ...


ProbeFactory = Callable[[Host], Probe]


def probe_address(host: Host) -> tuple[str, int]:
    """Where a probe connects: ``health_check_config``'s address/port, else the host's."""
    return host.health_check_address or (host.address, host.port)


class HealthCheckStats(StatsGroup):
    """``cluster.<name>.health_check.*``."""

    attempt: Counter
    success: Counter
    failure: Counter
    network_failure: Counter
    passive_failure: Counter
    verify_cluster: Counter
    healthy: Gauge
    degraded: Gauge


def _seconds(cfg: Any, name: str, default: float) -> float:
    return duration_seconds(getattr(cfg, name)) if cfg.HasField(name) else default


@dataclass(frozen=True)
class HealthCheckTiming:
    """The timing and thresholds of one ``health_checks`` entry, in seconds."""

    timeout: float
    interval: float
    unhealthy_threshold: int = 1
    healthy_threshold: int = 1
    no_traffic_interval: float = 60.0
    no_traffic_healthy_interval: float = 60.0
    unhealthy_interval: float | None = None
    unhealthy_edge_interval: float | None = None
    healthy_edge_interval: float | None = None
    interval_jitter: float = 0.0
    interval_jitter_percent: int = 0
    initial_jitter: float = 0.0
    reuse_connection: bool = True

    @classmethod
    def from_proto(cls, cfg: Any) -> HealthCheckTiming:
        interval = duration_seconds(cfg.interval)
        no_traffic = _seconds(cfg, "no_traffic_interval", 60.0)
        unhealthy = _seconds(cfg, "unhealthy_interval", interval)
        return cls(
            timeout=duration_seconds(cfg.timeout),
            interval=interval,
            unhealthy_threshold=cfg.unhealthy_threshold.value,
            healthy_threshold=cfg.healthy_threshold.value,
            no_traffic_interval=no_traffic,
            no_traffic_healthy_interval=_seconds(cfg, "no_traffic_healthy_interval", no_traffic),
            unhealthy_interval=unhealthy,
            unhealthy_edge_interval=_seconds(cfg, "unhealthy_edge_interval", unhealthy),
            healthy_edge_interval=_seconds(cfg, "healthy_edge_interval", interval),
            interval_jitter=_seconds(cfg, "interval_jitter", 0.0),
            interval_jitter_percent=cfg.interval_jitter_percent,
            initial_jitter=_seconds(cfg, "initial_jitter", 0.0),
            reuse_connection=cfg.reuse_connection.value if cfg.HasField("reuse_connection")
            else True,
        )


class HostSession:
    """One host's health-check state (sans-IO): feed results, read flags and the next delay."""

    def __init__(self, host: Host, timing: HealthCheckTiming, stats: HealthCheckStats,
                 rng: random.Random | None = None) -> None:
        self.host = host
        self.timing = timing
        self.stats = stats
        self.rng = rng or random.Random()
        self.first_check = True
        self.num_healthy = 0
        self.num_unhealthy = 0
        if FAILED_ACTIVE_HC not in host.health_flags:
            stats.healthy.inc()
        if DEGRADED_ACTIVE_HC in host.health_flags:
            stats.degraded.inc()

    def on_result(self, result: str, had_traffic: bool = True) -> tuple[str, float]:
        """Apply one check's result; returns (transition, seconds until the next check).
        ``had_traffic``: the cluster has carried traffic (else ``no_traffic_*`` intervals)."""
        if result in (RESULT_HEALTHY, RESULT_DEGRADED):
            transition = self.on_success(result == RESULT_DEGRADED)
            return transition, self.next_interval(had_traffic, True, transition)
        if result == RESULT_UNHEALTHY:
            transition = self.on_failure(ACTIVE)
        elif result == RESULT_UNHEALTHY_RETRIABLE:
            transition = self.on_failure(ACTIVE, retriable=True)
        elif result == NETWORK_TIMEOUT:
            transition = self.on_failure(NETWORK_TIMEOUT)
        else:
            transition = self.on_failure(NETWORK)
        return transition, self.next_interval(had_traffic, False, transition)

    def on_success(self, degraded: bool = False) -> str:
        host = self.host
        flags = host.health_flags
        self.num_unhealthy = 0
        transition = UNCHANGED
        if FAILED_ACTIVE_HC in flags:
            self.num_healthy += 1
            if self.first_check or self.num_healthy == self.timing.healthy_threshold:
                flags.discard(ACTIVE_HC_TIMEOUT)
                flags.discard(EXCLUDED_VIA_IMMEDIATE_HC_FAIL)
                flags.discard(FAILED_ACTIVE_HC)
                self.stats.healthy.inc()
                transition = CHANGED
            else:
                transition = CHANGE_PENDING
        transition = self._clear_pending(transition)
        if degraded != (DEGRADED_ACTIVE_HC in flags):
            if degraded:
                flags.add(DEGRADED_ACTIVE_HC)
                self.stats.degraded.inc()
            else:
                flags.discard(DEGRADED_ACTIVE_HC)
                self.stats.degraded.dec()
            if transition == UNCHANGED:
                transition = CHANGED
        self.stats.success.inc()
        self.first_check = False
        return transition

    def on_failure(self, kind: str, retriable: bool = False) -> str:
        host = self.host
        flags = host.health_flags
        self.num_healthy = 0
        transition = UNCHANGED
        network = kind in (NETWORK, NETWORK_TIMEOUT)
        if FAILED_ACTIVE_HC not in flags:
            self.num_unhealthy += 1
            if (not network and not retriable) or \
                    self.num_unhealthy == self.timing.unhealthy_threshold:
                flags.add(FAILED_ACTIVE_HC)
                self.stats.healthy.dec()
                transition = CHANGED
            else:
                transition = CHANGE_PENDING
        if kind == NETWORK_TIMEOUT and FAILED_ACTIVE_HC in flags:
            flags.add(ACTIVE_HC_TIMEOUT)
        else:
            flags.discard(ACTIVE_HC_TIMEOUT)
        transition = self._clear_pending(transition)
        self.stats.failure.inc()
        if network:
            self.stats.network_failure.inc()
        elif kind == PASSIVE:
            self.stats.passive_failure.inc()
        self.first_check = False
        return transition

    def _clear_pending(self, transition: str) -> str:
        if PENDING_ACTIVE_HC in self.host.health_flags:
            self.host.health_flags.discard(PENDING_ACTIVE_HC)
            return CHANGED
        return transition

    def next_interval(self, had_traffic: bool, healthy: bool, transition: str) -> float:
        """Seconds until the next check after a healthy/unhealthy result."""
        t = self.timing
        if had_traffic:
            if not healthy:
                base = (t.unhealthy_edge_interval if transition == CHANGE_PENDING
                        else t.unhealthy_interval) or t.interval
            else:
                base = (t.healthy_edge_interval if transition == CHANGE_PENDING
                        else t.interval) or t.interval
        else:
            base = (t.no_traffic_healthy_interval
                    if healthy and transition != CHANGE_PENDING else t.no_traffic_interval)
        return self.with_jitter(base)

    def with_jitter(self, base: float) -> float:
        t = self.timing
        ms = int(base * 1000)
        percent_mod = t.interval_jitter_percent * ms // 100
        if percent_mod > 0:
            ms += self.rng.randrange(percent_mod)
        jitter_ms = int(t.interval_jitter * 1000)
        if jitter_ms > 0:
            ms += self.rng.randrange(jitter_ms)
        return max(1, ms) / 1000

    def removed(self) -> None:
        """The host left the cluster: take it out of the gauges."""
        if FAILED_ACTIVE_HC not in self.host.health_flags:
            self.stats.healthy.dec()
        if DEGRADED_ACTIVE_HC in self.host.health_flags:
            self.stats.degraded.dec()


class ActiveHealthChecker:
    """Runs one ``health_checks`` entry over every host of a cluster, on the event loop."""

    def __init__(self, cluster: Cluster, timing: HealthCheckTiming, probes: ProbeFactory,
                 stats: HealthCheckStats, *, kind: str = "",
                 exclude_new_hosts: bool = False) -> None:
        self.cluster = cluster
        self.timing = timing
        self.probes = probes
        self.stats = stats
        self.kind = kind
        self.sessions: dict[Host, HostSession] = {}
        self._tasks: dict[Host, asyncio.Task[None]] = {}
        self._probes: dict[Host, Probe] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: ``cb(host, transition, healthy)`` after every completed check (outlier detection
        #: un-ejects on a pass; the cluster rebuilds its load balancer on a change).
        self.callbacks: list[Callable[[Host, str, bool], None]] = []
        self._first_round: asyncio.Event | None = None
        self._traffic = False
        #: Set in the main process of workers: did any worker send traffic to the cluster?
        self.traffic_probe: Callable[[], bool] | None = None
        self._unchecked: set[Host] = set()
        self.exclude_new_hosts = exclude_new_hosts
        self.mark_unchecked(cluster.hosts, initial=True)

    def mark_unchecked(self, hosts: list[Host], initial: bool = False) -> None:
        """Hosts of a health-checked cluster start failed until their first check (Envoy);
        with ``ignore_new_hosts_until_first_hc`` a host added later is also excluded."""
        for h in hosts:
            h.health_flags.add(FAILED_ACTIVE_HC)
            if self.exclude_new_hosts and not initial:
                h.health_flags.add(PENDING_ACTIVE_HC)

    def had_traffic(self) -> bool:
        """Has the cluster carried traffic (else checks run at ``no_traffic_interval``)? In
        the main process of workers, ``traffic_probe`` asks the workers' last reports."""
        if self._traffic:
            return True
        st = self.cluster.stats
        probe = self.traffic_probe
        self._traffic = bool(st.upstream_cx_total.value or st.upstream_cx_tx_bytes_total.value
                             or st.upstream_cx_rx_bytes_total.value
                             or (probe is not None and probe()))
        return self._traffic

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._first_round = asyncio.Event()
        for h in self.cluster.hosts:
            self._add(h)
        if not self._unchecked:
            self._first_round.set()

    async def first_round(self, limit: float) -> None:
        """Wait (at most ``limit`` s) until every host has had its first check, as Envoy warms
        a health-checked cluster before it serves."""
        if self._first_round is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_round.wait(), limit)

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for probe in self._probes.values():
            probe.close()
        self._tasks.clear()
        self._probes.clear()

    def hosts_changed(self, added: list[Host], removed: list[Host]) -> None:
        self.mark_unchecked(added)
        if self._loop is None:
            return
        for h in added:
            self._add(h)
        for h in removed:
            task = self._tasks.pop(h, None)
            if task is not None:
                task.cancel()
            probe = self._probes.pop(h, None)
            if probe is not None:
                probe.close()
            session = self.sessions.pop(h, None)
            if session is not None:
                session.removed()
            self._checked(h)

    def _add(self, host: Host) -> None:
        if host in self.sessions or self._loop is None:
            return
        self.sessions[host] = HostSession(host, self.timing, self.stats)
        self._probes[host] = self.probes(host)
        self._unchecked.add(host)
        self._tasks[host] = self._loop.create_task(self.run_session(host))

    def _checked(self, host: Host) -> None:
        self._unchecked.discard(host)
        if not self._unchecked and self._first_round is not None:
            self._first_round.set()

    # -- the loop of one host --------------------------------------------------------------

    async def run_session(self, host: Host) -> None:
        session = self.sessions[host]
        probe = self._probes[host]
        timing = self.timing
        delay = session.with_jitter(timing.initial_jitter) if timing.initial_jitter else 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            self.stats.attempt.inc()
            try:
                result = await asyncio.wait_for(probe.check(), timing.timeout)
            except TimeoutError:
                probe.close()
                result = NETWORK_TIMEOUT
            except asyncio.CancelledError:
                raise
            except Exception:  # a probe must not kill its host's checks
                log.exception("cluster %s: health check of %s failed", self.cluster.name,
                              host.address_string)
                probe.close()
                result = RESULT_NETWORK_FAILURE
            healthy = result in (RESULT_HEALTHY, RESULT_DEGRADED)
            transition, delay = session.on_result(result, self.had_traffic())
            self._checked(host)
            for cb in self.callbacks:
                cb(host, transition, healthy)
