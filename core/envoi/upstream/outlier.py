"""Outlier detection (passive health checking), as Envoy's ``outlier_detection`` does it.

The router and tcp_proxy report each upstream result to the host's monitor
(``host.outlier.put_http_response_code(503)``, ``put_result(LOCAL_ORIGIN_CONNECT_FAILED)``).
Consecutive 5xx / gateway failures / local-origin failures eject a host as soon as the count
reaches its threshold; success rate and failure percentage are judged every ``interval`` over the
previous interval's requests. An ejected host comes back after ``base_ejection_time`` times the
number of times in a row it was ejected (capped by ``max_ejection_time``), or at once when an
active health check passes (``successful_active_health_check_uneject_host``). Never more than
``max_ejection_percent`` of the hosts are ejected at once (``ejections_overflow``).

Sans-IO: the detector never reads a clock or starts a timer itself. ``clock()`` is given (a fake
one in tests) and :meth:`Detector.on_interval` is called every ``interval`` by whoever runs it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoi.config import duration_seconds
from envoi.stats import Counter, Gauge, Scope, StatsGroup
from envoi.upstream.host import FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK

if TYPE_CHECKING:
    from envoi.upstream.host import Host

# Results a caller may report (Envoy's Outlier::Result).
EXT_ORIGIN_REQUEST_SUCCESS = 0
EXT_ORIGIN_REQUEST_FAILED = 1
LOCAL_ORIGIN_CONNECT_SUCCESS = 2
LOCAL_ORIGIN_CONNECT_SUCCESS_FINAL = 3
LOCAL_ORIGIN_TIMEOUT = 4
LOCAL_ORIGIN_CONNECT_FAILED = 5

# Ejection types, named as the stats name them.
CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
SUCCESS_RATE = "success_rate"
LOCAL_ORIGIN_SUCCESS_RATE = "local_origin_success_rate"
FAILURE_PERCENTAGE = "failure_percentage"
LOCAL_ORIGIN_FAILURE_PERCENTAGE = "local_origin_failure_percentage"
EJECTION_TYPES = (CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY_FAILURE, CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
                  SUCCESS_RATE, LOCAL_ORIGIN_SUCCESS_RATE, FAILURE_PERCENTAGE,
                  LOCAL_ORIGIN_FAILURE_PERCENTAGE)
_GATEWAY = frozenset((502, 503, 504))
# Without split_external_local_origin_errors, local-origin results count as these HTTP codes.
_AS_HTTP = {EXT_ORIGIN_REQUEST_SUCCESS: 200, LOCAL_ORIGIN_CONNECT_SUCCESS_FINAL: 200,
            LOCAL_ORIGIN_TIMEOUT: 504, LOCAL_ORIGIN_CONNECT_FAILED: 503,
            EXT_ORIGIN_REQUEST_FAILED: 500}

#: The OutlierDetection fields envoi acts on (every other field set is a config error).
IMPLEMENTED_FIELDS = frozenset({
    "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent",
    "enforcing_consecutive_5xx", "enforcing_success_rate", "success_rate_minimum_hosts",
    "success_rate_request_volume", "success_rate_stdev_factor", "consecutive_gateway_failure",
    "enforcing_consecutive_gateway_failure", "split_external_local_origin_errors",
    "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure",
    "enforcing_local_origin_success_rate", "failure_percentage_threshold",
    "enforcing_failure_percentage", "enforcing_failure_percentage_local_origin",
    "failure_percentage_minimum_hosts", "failure_percentage_request_volume",
    "max_ejection_time", "max_ejection_time_jitter",
    "successful_active_health_check_uneject_host", "always_eject_one_host",
})


class OutlierStats(StatsGroup):
    """``cluster.<name>.outlier_detection.*``."""

    ejections_enforced_total: Counter
    ejections_overflow: Counter
    ejections_total: Counter  # deprecated in Envoy, still counted
    ejections_consecutive_5xx: Counter  # deprecated in Envoy, still counted
    ejections_success_rate: Counter  # deprecated in Envoy, still counted
    ejections_detected_consecutive_5xx: Counter
    ejections_enforced_consecutive_5xx: Counter
    ejections_detected_success_rate: Counter
    ejections_enforced_success_rate: Counter
    ejections_detected_consecutive_gateway_failure: Counter
    ejections_enforced_consecutive_gateway_failure: Counter
    ejections_detected_consecutive_local_origin_failure: Counter
    ejections_enforced_consecutive_local_origin_failure: Counter
    ejections_detected_local_origin_success_rate: Counter
    ejections_enforced_local_origin_success_rate: Counter
    ejections_detected_failure_percentage: Counter
    ejections_enforced_failure_percentage: Counter
    ejections_detected_local_origin_failure_percentage: Counter
    ejections_enforced_local_origin_failure_percentage: Counter
    ejections_detected_degradation: Counter  # Envoy has it; nothing in 1.39 counts it
    ejections_active: Gauge


def _wrapped(cfg: Any, name: str, default: int) -> int:
    return int(getattr(cfg, name).value) if cfg.HasField(name) else default


def _seconds(cfg: Any, name: str, default: float) -> float:
    return duration_seconds(getattr(cfg, name)) if cfg.HasField(name) else default


@dataclass(frozen=True)
class OutlierConfig:
    """The OutlierDetection message with Envoy's defaults applied; times in seconds."""

    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: int = 10
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    failure_percentage_threshold: int = 85
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    split_external_local_origin_errors: bool = False
    successful_active_health_check_uneject_host: bool = True
    always_eject_one_host: bool = False

    @classmethod
    def from_proto(cls, cfg: Any) -> OutlierConfig:
        base = _seconds(cfg, "base_ejection_time", 30.0)
        ints = {name: _wrapped(cfg, name, getattr(cls, name)) for name in (
            "max_ejection_percent", "consecutive_5xx", "consecutive_gateway_failure",
            "consecutive_local_origin_failure", "enforcing_consecutive_5xx",
            "enforcing_consecutive_gateway_failure", "enforcing_consecutive_local_origin_failure",
            "enforcing_success_rate", "enforcing_local_origin_success_rate",
            "enforcing_failure_percentage", "enforcing_failure_percentage_local_origin",
            "success_rate_minimum_hosts", "success_rate_request_volume",
            "success_rate_stdev_factor", "failure_percentage_threshold",
            "failure_percentage_minimum_hosts", "failure_percentage_request_volume")}
        return cls(
            interval=_seconds(cfg, "interval", 10.0),
            base_ejection_time=base,
            # Unset: 300 s or base_ejection_time, whichever is larger (as Envoy).
            max_ejection_time=_seconds(cfg, "max_ejection_time", max(300.0, base)),
            max_ejection_time_jitter=_seconds(cfg, "max_ejection_time_jitter", 0.0),
            split_external_local_origin_errors=cfg.split_external_local_origin_errors,
            successful_active_health_check_uneject_host=bool(_wrapped(
                cfg, "successful_active_health_check_uneject_host", 1)),
            always_eject_one_host=bool(_wrapped(cfg, "always_eject_one_host", 0)),
            **ints,
        )


class _RateBuckets:
    """Two buckets: the one being written, and the one the last interval left to read."""

    __slots__ = ("backup_success", "backup_total", "success", "total")

    def __init__(self) -> None:
        self.success = self.total = self.backup_success = self.backup_total = 0

    def swap(self) -> None:
        self.backup_success, self.backup_total = self.success, self.total
        self.success = self.total = 0

    def rate_and_volume(self) -> tuple[float, int] | None:
        if not self.backup_total:
            return None
        return self.backup_success * 100.0 / self.backup_total, self.backup_total


class HostMonitor:
    """One host's counters; results are reported here (on the hot path: keep it cheap)."""

    __slots__ = ("consecutive_5xx", "consecutive_gateway_failure",
                 "consecutive_local_origin_failure", "detector", "eject_time_backoff", "ext",
                 "host", "jitter", "last_ejection_time", "last_unejection_time", "local",
                 "num_ejections")

    def __init__(self, detector: Detector, host: Host) -> None:
        self.detector = detector
        self.host = host
        self.consecutive_5xx = 0
        self.consecutive_gateway_failure = 0
        self.consecutive_local_origin_failure = 0
        self.num_ejections = 0
        self.eject_time_backoff = 0
        self.jitter = 0.0
        self.last_ejection_time: float | None = None
        self.last_unejection_time: float | None = None
        self.ext = _RateBuckets()
        self.local = _RateBuckets()

    def put_http_response_code(self, code: int) -> None:
        d = self.detector
        cfg = d.config
        self.ext.total += 1
        if 500 <= code < 600:
            if code in _GATEWAY:
                self.consecutive_gateway_failure += 1
                if self.consecutive_gateway_failure == cfg.consecutive_gateway_failure:
                    d.on_consecutive_error(self, CONSECUTIVE_GATEWAY_FAILURE)
            else:
                self.consecutive_gateway_failure = 0
            self.consecutive_5xx += 1
            if self.consecutive_5xx == cfg.consecutive_5xx:
                d.on_consecutive_error(self, CONSECUTIVE_5XX)
        else:
            self.ext.success += 1
            self.consecutive_5xx = 0
            self.consecutive_gateway_failure = 0

    def put_result(self, result: int, code: int | None = None) -> None:
        if not self.detector.config.split_external_local_origin_errors:
            if code is not None:
                self.put_http_response_code(code)
            elif result != LOCAL_ORIGIN_CONNECT_SUCCESS:
                self.put_http_response_code(_AS_HTTP[result])
            return
        if result in (LOCAL_ORIGIN_CONNECT_SUCCESS, LOCAL_ORIGIN_CONNECT_SUCCESS_FINAL):
            self._local_success()
        elif result in (LOCAL_ORIGIN_TIMEOUT, LOCAL_ORIGIN_CONNECT_FAILED):
            self.local.total += 1
            self.consecutive_local_origin_failure += 1
            if self.consecutive_local_origin_failure == \
                    self.detector.config.consecutive_local_origin_failure:
                self.detector.on_consecutive_error(self, CONSECUTIVE_LOCAL_ORIGIN_FAILURE)
        elif result == EXT_ORIGIN_REQUEST_FAILED:
            self.put_http_response_code(503)
        else:  # EXT_ORIGIN_REQUEST_SUCCESS
            self.put_http_response_code(200)
            self._local_success()

    def _local_success(self) -> None:
        self.local.total += 1
        self.local.success += 1
        self.consecutive_local_origin_failure = 0


class Detector:
    """The outlier detector of one cluster."""

    def __init__(self, config: OutlierConfig, scope: Scope, *,
                 clock: Callable[[], float],
                 on_change: Callable[[Host], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.stats = OutlierStats(scope.scope("outlier_detection"))
        self.clock = clock
        self.on_change = on_change
        self.rng = rng or random.Random()
        self.monitors: dict[Host, HostMonitor] = {}
        #: (average, ejection threshold) of the last success-rate round; -1 when not computed.
        self.success_rate_nums = (-1.0, -1.0)
        self.local_success_rate_nums = (-1.0, -1.0)

    # -- membership ------------------------------------------------------------------------

    def add_host(self, host: Host) -> None:
        if host not in self.monitors:
            self.monitors[host] = host.outlier = HostMonitor(self, host)

    def hosts_changed(self, added: list[Host], removed: list[Host]) -> None:
        for h in added:
            self.add_host(h)
        for h in removed:
            if self.monitors.pop(h, None) is not None and FAILED_OUTLIER_CHECK in h.health_flags:
                self.stats.ejections_active.dec()

    # -- ejection ----------------------------------------------------------------------------

    def on_consecutive_error(self, mon: HostMonitor, kind: str) -> None:
        host = mon.host
        if host not in self.monitors or FAILED_OUTLIER_CHECK in host.health_flags:
            return
        self._detected(kind)
        self._eject(mon, kind)
        if kind == CONSECUTIVE_5XX:
            self.stats.ejections_consecutive_5xx.inc()
            mon.consecutive_5xx = 0
        elif kind == CONSECUTIVE_GATEWAY_FAILURE:
            mon.consecutive_gateway_failure = 0
        else:
            mon.consecutive_local_origin_failure = 0

    def _detected(self, kind: str) -> None:
        getattr(self.stats, "ejections_detected_" + kind).inc()

    def _enforcing(self, kind: str) -> int:
        cfg = self.config
        return {
            CONSECUTIVE_5XX: cfg.enforcing_consecutive_5xx,
            CONSECUTIVE_GATEWAY_FAILURE: cfg.enforcing_consecutive_gateway_failure,
            CONSECUTIVE_LOCAL_ORIGIN_FAILURE: cfg.enforcing_consecutive_local_origin_failure,
            SUCCESS_RATE: cfg.enforcing_success_rate,
            LOCAL_ORIGIN_SUCCESS_RATE: cfg.enforcing_local_origin_success_rate,
            FAILURE_PERCENTAGE: cfg.enforcing_failure_percentage,
            LOCAL_ORIGIN_FAILURE_PERCENTAGE: cfg.enforcing_failure_percentage_local_origin,
        }[kind]

    def _eject(self, mon: HostMonitor, kind: str) -> None:
        cfg = self.config
        st = self.stats
        active = st.ejections_active.value
        ejected_percent = 100.0 * (active + 1) / len(self.monitors)
        should = ejected_percent <= min(100, cfg.max_ejection_percent)
        if cfg.always_eject_one_host:
            should = should or active == 0
        if not should:
            st.ejections_overflow.inc()
            return
        if kind in (CONSECUTIVE_5XX, SUCCESS_RATE):
            st.ejections_total.inc()
        enforcing = self._enforcing(kind)
        if enforcing < 100 and self.rng.randrange(100) >= enforcing:
            return
        st.ejections_active.inc()
        st.ejections_enforced_total.inc()
        getattr(st, "ejections_enforced_" + kind).inc()
        host = mon.host
        host.health_flags.add(FAILED_OUTLIER_CHECK)
        mon.num_ejections += 1
        mon.last_ejection_time = self.clock()
        jitter_ms = int(cfg.max_ejection_time_jitter * 1000)
        mon.jitter = self.rng.randrange(jitter_ms + 1) / 1000 if jitter_ms else 0.0
        if mon.eject_time_backoff * cfg.base_ejection_time < \
                cfg.max_ejection_time + cfg.base_ejection_time:
            mon.eject_time_backoff += 1
        if self.on_change is not None:
            self.on_change(host)

    def uneject(self, host: Host) -> None:
        mon = self.monitors.get(host)
        if mon is None or FAILED_OUTLIER_CHECK not in host.health_flags:
            return
        self.stats.ejections_active.dec()
        host.health_flags.discard(FAILED_OUTLIER_CHECK)
        mon.consecutive_5xx = mon.consecutive_gateway_failure = 0
        mon.consecutive_local_origin_failure = 0
        mon.last_unejection_time = self.clock()
        if self.on_change is not None:
            self.on_change(host)

    def on_health_check(self, host: Host, healthy: bool) -> None:
        """An active health check completed: a pass un-ejects an ejected host (unless
        ``successful_active_health_check_uneject_host: false``)."""
        if (healthy and self.config.successful_active_health_check_uneject_host
                and FAILED_ACTIVE_HC not in host.health_flags
                and FAILED_OUTLIER_CHECK in host.health_flags):
            self.uneject(host)

    # -- the interval ------------------------------------------------------------------------

    def on_interval(self, now: float) -> None:
        """Every ``interval``: un-eject hosts whose time is up, judge success rates, and let
        the ejection backoff of hosts that stayed healthy decay."""
        cfg = self.config
        for host, mon in list(self.monitors.items()):
            if FAILED_OUTLIER_CHECK in host.health_flags and mon.last_ejection_time is not None:
                wait = min(cfg.base_ejection_time * mon.eject_time_backoff,
                           cfg.max_ejection_time) + mon.jitter
                if wait <= now - mon.last_ejection_time + 1e-9:
                    self.uneject(host)
            mon.ext.swap()
            mon.local.swap()
            host.success_rate = -1.0
            host.local_origin_success_rate = -1.0
        self.success_rate_nums = self._success_rate_round(False)
        self.local_success_rate_nums = self._success_rate_round(True)
        for host, mon in self.monitors.items():
            if (FAILED_OUTLIER_CHECK not in host.health_flags
                    and mon.last_unejection_time is not None
                    and now - mon.last_unejection_time >= cfg.interval - 1e-9
                    and mon.eject_time_backoff):
                mon.eject_time_backoff -= 1

    def _success_rate_round(self, local: bool) -> tuple[float, float]:
        cfg = self.config
        n = len(self.monitors)
        if n < cfg.success_rate_minimum_hosts and n < cfg.failure_percentage_minimum_hosts:
            return (-1.0, -1.0)
        sr_hosts: list[tuple[HostMonitor, float]] = []
        fp_hosts: list[tuple[HostMonitor, float]] = []
        for host, mon in self.monitors.items():
            if FAILED_OUTLIER_CHECK in host.health_flags:
                continue
            rv = (mon.local if local else mon.ext).rate_and_volume()
            if rv is None:
                continue
            rate, volume = rv
            if volume >= min(cfg.success_rate_request_volume,
                             cfg.failure_percentage_request_volume):
                if local:
                    host.local_origin_success_rate = rate
                else:
                    host.success_rate = rate
            if volume >= cfg.success_rate_request_volume:
                sr_hosts.append((mon, rate))
            if volume >= cfg.failure_percentage_request_volume:
                fp_hosts.append((mon, rate))
        nums = (-1.0, -1.0)
        if sr_hosts and len(sr_hosts) >= cfg.success_rate_minimum_hosts:
            mean = sum(r for _, r in sr_hosts) / len(sr_hosts)
            stdev = math.sqrt(sum((r - mean) ** 2 for _, r in sr_hosts) / len(sr_hosts))
            threshold = mean - cfg.success_rate_stdev_factor / 1000.0 * stdev
            nums = (mean, threshold)
            kind = LOCAL_ORIGIN_SUCCESS_RATE if local else SUCCESS_RATE
            for mon, rate in sr_hosts:
                if rate < threshold:
                    self.stats.ejections_success_rate.inc()
                    self._detected(kind)
                    self._eject(mon, kind)
        if fp_hosts and len(fp_hosts) >= cfg.failure_percentage_minimum_hosts:
            kind = LOCAL_ORIGIN_FAILURE_PERCENTAGE if local else FAILURE_PERCENTAGE
            for mon, rate in fp_hosts:
                if 100.0 - rate >= cfg.failure_percentage_threshold:
                    self._detected(kind)
                    self._eject(mon, kind)
        return nums
