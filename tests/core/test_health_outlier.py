"""Sans-IO state machines with a fake clock: active health checking (HostSession), outlier
detection (Detector), and the circuit breakers (ResourceManager)."""

from __future__ import annotations

import random

import pytest
from envoi.stats import Store
from envoi.upstream.health_check import (
    CHANGE_PENDING,
    CHANGED,
    NETWORK_TIMEOUT,
    RESULT_DEGRADED,
    RESULT_HEALTHY,
    RESULT_NETWORK_FAILURE,
    RESULT_UNHEALTHY,
    RESULT_UNHEALTHY_RETRIABLE,
    UNCHANGED,
    HealthCheckStats,
    HealthCheckTiming,
    HostSession,
)
from envoi.upstream.host import (
    ACTIVE_HC_TIMEOUT,
    DEGRADED_ACTIVE_HC,
    FAILED_ACTIVE_HC,
    FAILED_OUTLIER_CHECK,
    Host,
    health_flags_string,
)
from envoi.upstream.outlier import (
    LOCAL_ORIGIN_CONNECT_FAILED,
    LOCAL_ORIGIN_CONNECT_SUCCESS,
    LOCAL_ORIGIN_TIMEOUT,
    Detector,
    OutlierConfig,
)
from envoi.upstream.resource import ResourceManager, Thresholds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(unhealthy: int = 2, healthy: int = 2, **kw: float) -> tuple[HostSession, Host,
                                                                         HealthCheckStats]:
    host = Host("10.0.0.1", 80)
    host.health_flags.add(FAILED_ACTIVE_HC)  # a health-checked host starts failed
    stats = HealthCheckStats(Store().root.scope("cluster.c.health_check"))
    timing = HealthCheckTiming(timeout=1.0, interval=kw.get("interval", 5.0),
                               unhealthy_threshold=unhealthy, healthy_threshold=healthy,
                               no_traffic_interval=60.0, no_traffic_healthy_interval=60.0,
                               unhealthy_interval=kw.get("unhealthy_interval", 5.0),
                               unhealthy_edge_interval=kw.get("unhealthy_interval", 5.0),
                               healthy_edge_interval=kw.get("interval", 5.0),
                               interval_jitter=kw.get("interval_jitter", 0.0))
    return HostSession(host, timing, stats, random.Random(1)), host, stats


# -- active health checking -------------------------------------------------------------------


def test_first_success_makes_a_host_healthy_at_once() -> None:
    s, host, stats = session(healthy=3)
    assert stats.healthy.value == 0
    assert s.on_result(RESULT_HEALTHY) == (CHANGED, 5.0)
    assert not host.health_flags
    assert stats.healthy.value == 1 and stats.success.value == 1


def test_later_recovery_needs_healthy_threshold() -> None:
    s, host, stats = session(unhealthy=1, healthy=3)
    s.on_result(RESULT_HEALTHY)
    assert s.on_result(RESULT_NETWORK_FAILURE)[0] == CHANGED
    assert FAILED_ACTIVE_HC in host.health_flags
    assert s.on_result(RESULT_HEALTHY)[0] == CHANGE_PENDING
    assert s.on_result(RESULT_HEALTHY)[0] == CHANGE_PENDING
    assert s.on_result(RESULT_HEALTHY)[0] == CHANGED
    assert not host.health_flags
    assert (stats.success.value, stats.failure.value, stats.network_failure.value) == (4, 1, 1)


def test_unexpected_status_is_unhealthy_at_once_network_failures_count() -> None:
    s, host, stats = session(unhealthy=3)
    s.on_result(RESULT_HEALTHY)
    # Network failures and timeouts count towards unhealthy_threshold...
    assert s.on_result(RESULT_NETWORK_FAILURE)[0] == CHANGE_PENDING
    assert s.on_result(NETWORK_TIMEOUT)[0] == CHANGE_PENDING
    assert s.on_result(RESULT_HEALTHY)[0] == UNCHANGED  # ...and a pass resets the count
    assert s.on_result(RESULT_UNHEALTHY_RETRIABLE)[0] == CHANGE_PENDING
    assert not host.health_flags
    # ...but a non-expected HTTP status (an active failure) marks the host at once.
    assert s.on_result(RESULT_UNHEALTHY)[0] == CHANGED
    assert health_flags_string(host.health_flags) == "/failed_active_hc"
    assert stats.healthy.value == 0
    assert (stats.failure.value, stats.network_failure.value) == (4, 2)


def test_timeouts_set_active_hc_timeout_while_failed() -> None:
    s, host, _ = session(unhealthy=1)
    s.on_result(RESULT_HEALTHY)
    s.on_result(NETWORK_TIMEOUT)
    assert host.health_flags == {FAILED_ACTIVE_HC, ACTIVE_HC_TIMEOUT}
    assert health_flags_string(host.health_flags) == "/failed_active_hc/active_hc_timeout"
    s.on_result(RESULT_NETWORK_FAILURE)
    assert host.health_flags == {FAILED_ACTIVE_HC}


def test_degraded() -> None:
    s, host, stats = session()
    assert s.on_result(RESULT_DEGRADED)[0] == CHANGED
    assert host.health_flags == {DEGRADED_ACTIVE_HC} and host.degraded and not host.healthy
    assert stats.degraded.value == 1
    assert s.on_result(RESULT_HEALTHY)[0] == CHANGED
    assert stats.degraded.value == 0 and host.healthy


def test_intervals() -> None:
    s, _, _ = session(unhealthy=2, interval=5.0, unhealthy_interval=9.0)
    # Until the cluster has traffic: no_traffic_interval.
    assert s.on_result(RESULT_HEALTHY, had_traffic=False)[1] == 60.0
    assert s.on_result(RESULT_HEALTHY)[1] == 5.0
    # After a failure Envoy waits unhealthy_edge_interval (pending) or unhealthy_interval.
    assert s.on_result(RESULT_NETWORK_FAILURE)[1] == 9.0
    assert s.on_result(RESULT_NETWORK_FAILURE)[1] == 9.0
    # A pass while unhealthy, one short of healthy_threshold: healthy_edge_interval.
    assert s.on_result(RESULT_HEALTHY) == (CHANGE_PENDING, 5.0)
    j, _, _ = session(interval=5.0, interval_jitter=1.0)
    delays = {j.on_result(RESULT_HEALTHY)[1] for _ in range(50)}
    assert min(delays) >= 5.0 and max(delays) < 6.0 and len(delays) > 10


# -- outlier detection ------------------------------------------------------------------------


def detector(n: int = 2, **kw: object) -> tuple[Detector, list[Host], Clock, list[Host]]:
    clock = Clock()
    changes: list[Host] = []
    det = Detector(OutlierConfig(**kw), Store().root.scope("cluster.c"),  # type: ignore[arg-type]
                   clock=clock, on_change=changes.append, rng=random.Random(3))
    hosts = [Host(f"10.0.0.{i}", 80) for i in range(1, n + 1)]
    for h in hosts:
        det.add_host(h)
    return det, hosts, clock, changes


def test_consecutive_5xx_ejects_and_max_ejection_percent_overflows() -> None:
    det, (a, b), clock, changes = detector(consecutive_5xx=3, max_ejection_percent=50,
                                           base_ejection_time=5.0, interval=1.0)
    for _ in range(3):
        a.outlier.put_http_response_code(500)
    assert FAILED_OUTLIER_CHECK in a.health_flags and changes == [a]
    for _ in range(3):
        b.outlier.put_http_response_code(503)
    assert FAILED_OUTLIER_CHECK not in b.health_flags  # 2 of 2 would be 100 % > 50 %
    st = det.stats
    # What Envoy 1.39.3 counted for the same (envoy-observed.md section 6).
    assert (st.ejections_detected_consecutive_5xx.value, st.ejections_enforced_consecutive_5xx
            .value, st.ejections_enforced_total.value, st.ejections_total.value,
            st.ejections_overflow.value, st.ejections_consecutive_5xx.value,
            st.ejections_active.value) == (2, 1, 1, 1, 1, 2, 1)
    # Back after base_ejection_time, at an interval tick.
    clock.now += 4.9
    det.on_interval(clock.now)
    assert FAILED_OUTLIER_CHECK in a.health_flags
    clock.now += 0.2
    det.on_interval(clock.now)
    assert FAILED_OUTLIER_CHECK not in a.health_flags and st.ejections_active.value == 0


def test_ejection_time_grows_with_repeated_ejections_and_decays() -> None:
    det, (a, *_), clock, _ = detector(5, consecutive_5xx=1, base_ejection_time=10.0,
                                      interval=1.0, max_ejection_percent=100)

    def eject_and_wait() -> float:
        a.outlier.put_http_response_code(500)
        start = clock.now
        while FAILED_OUTLIER_CHECK in a.health_flags:
            clock.now += 1.0
            det.on_interval(clock.now)
        return clock.now - start

    assert eject_and_wait() == 10.0
    assert eject_and_wait() == 20.0
    assert eject_and_wait() == 30.0
    # Healthy for a while: each interval takes one step off the backoff.
    for _ in range(2):
        clock.now += 1.0
        det.on_interval(clock.now)
    assert eject_and_wait() == 20.0


def test_max_ejection_time_caps() -> None:
    det, (a, *_), clock, _ = detector(5, consecutive_5xx=1, base_ejection_time=10.0,
                                      max_ejection_time=15.0, interval=1.0,
                                      max_ejection_percent=100)
    for expected in (10.0, 15.0, 15.0):
        a.outlier.put_http_response_code(500)
        start = clock.now
        while FAILED_OUTLIER_CHECK in a.health_flags:
            clock.now += 1.0
            det.on_interval(clock.now)
        assert clock.now - start == expected


def test_gateway_failures_and_local_origin() -> None:
    det, (a, b, _c), _, _ = detector(3, consecutive_gateway_failure=2,
                                    enforcing_consecutive_gateway_failure=100,
                                    consecutive_5xx=10, max_ejection_percent=100)
    a.outlier.put_http_response_code(502)
    a.outlier.put_http_response_code(500)  # not a gateway error: the run restarts
    a.outlier.put_http_response_code(504)
    assert FAILED_OUTLIER_CHECK not in a.health_flags
    a.outlier.put_http_response_code(503)
    assert FAILED_OUTLIER_CHECK in a.health_flags
    assert det.stats.ejections_enforced_consecutive_gateway_failure.value == 1
    # Without split_external_local_origin_errors a connect failure is a 503.
    b.outlier.put_result(LOCAL_ORIGIN_CONNECT_FAILED)
    b.outlier.put_result(LOCAL_ORIGIN_TIMEOUT)
    assert FAILED_OUTLIER_CHECK in b.health_flags
    split, (s1, *_), _, _ = detector(3, split_external_local_origin_errors=True,
                                     consecutive_local_origin_failure=2,
                                     max_ejection_percent=100)
    s1.outlier.put_result(LOCAL_ORIGIN_CONNECT_FAILED)
    s1.outlier.put_result(LOCAL_ORIGIN_CONNECT_SUCCESS)  # resets the local-origin run
    s1.outlier.put_result(LOCAL_ORIGIN_TIMEOUT)
    assert FAILED_OUTLIER_CHECK not in s1.health_flags
    s1.outlier.put_result(LOCAL_ORIGIN_CONNECT_FAILED)
    assert FAILED_OUTLIER_CHECK in s1.health_flags
    assert split.stats.ejections_detected_consecutive_local_origin_failure.value == 1
    assert split.stats.ejections_consecutive_5xx.value == 0


def test_success_rate_ejection() -> None:
    det, hosts, clock, _ = detector(5, success_rate_minimum_hosts=5,
                                    success_rate_request_volume=100, interval=10.0,
                                    max_ejection_percent=100)
    for i, h in enumerate(hosts):
        for n in range(200):
            h.outlier.put_http_response_code(500 if (i == 0 and n % 2) else 200)
    clock.now += 10
    det.on_interval(clock.now)  # the first tick moves the bucket; the second judges it
    assert FAILED_OUTLIER_CHECK in hosts[0].health_flags
    assert [FAILED_OUTLIER_CHECK in h.health_flags for h in hosts[1:]] == [False] * 4
    assert hosts[0].success_rate == 50.0 and hosts[1].success_rate == 100.0
    mean, threshold = det.success_rate_nums
    assert mean == 90.0 and threshold == pytest.approx(90.0 - 1.9 * 20.0)
    assert det.stats.ejections_detected_success_rate.value == 1
    assert det.stats.ejections_enforced_success_rate.value == 1


def test_failure_percentage_ejection() -> None:
    det, hosts, clock, _ = detector(5, failure_percentage_threshold=50,
                                    enforcing_failure_percentage=100,
                                    failure_percentage_request_volume=10,
                                    success_rate_request_volume=10_000,
                                    consecutive_5xx=1000, max_ejection_percent=100)
    for i, h in enumerate(hosts):
        for n in range(20):
            h.outlier.put_http_response_code(503 if i == 2 and n < 12 else 200)
    clock.now += 10
    det.on_interval(clock.now)
    assert [FAILED_OUTLIER_CHECK in h.health_flags for h in hosts] == [False, False, True,
                                                                        False, False]
    assert det.stats.ejections_enforced_failure_percentage.value == 1


def test_passing_active_check_unejects() -> None:
    det, (a, _), _, changes = detector(consecutive_5xx=1, max_ejection_percent=100)
    a.outlier.put_http_response_code(500)
    det.on_health_check(a, healthy=False)
    assert FAILED_OUTLIER_CHECK in a.health_flags
    det.on_health_check(a, healthy=True)
    assert FAILED_OUTLIER_CHECK not in a.health_flags
    assert changes == [a, a]


def test_removed_host_leaves_the_active_gauge() -> None:
    det, (a, _b), _, _ = detector(consecutive_5xx=1, max_ejection_percent=100)
    a.outlier.put_http_response_code(500)
    assert det.stats.ejections_active.value == 1
    det.hosts_changed([], [a])
    assert det.stats.ejections_active.value == 0


# -- circuit breakers -------------------------------------------------------------------------


def test_resource_manager_gauges() -> None:
    store = Store()
    rm = ResourceManager(Thresholds(max_connections=2, max_retries=1, track_remaining=True),
                         store.root.scope("cluster.c"), "default")
    g = {s.name: s for s in store}
    assert g["cluster.c.circuit_breakers.default.remaining_cx"].value == 2
    rm.connections.inc()
    assert rm.connections.can_create()
    rm.connections.inc()
    assert not rm.connections.can_create()
    assert g["cluster.c.circuit_breakers.default.cx_open"].value == 1
    assert g["cluster.c.circuit_breakers.default.remaining_cx"].value == 0
    rm.connections.dec()
    assert g["cluster.c.circuit_breakers.default.cx_open"].value == 0
    # Untouched *_open gauges stay out of ?usedonly, as in Envoy.
    assert not g["cluster.c.circuit_breakers.default.rq_retry_open"].used


def test_retry_budget() -> None:
    rm = ResourceManager(Thresholds(retry_budget=(25.0, 2)), Store().root.scope("c"), "high")
    assert rm.retries.max() == 2  # min_retry_concurrency
    for _ in range(16):
        rm.requests.inc()
    assert rm.retries.max() == 4
    for _ in range(4):
        rm.retries.inc()
    assert not rm.retries.can_create()
