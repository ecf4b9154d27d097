"""The HCM's stats, named as Envoy 1.39 names them (``http.<prefix>.*``, the listener mirror and
the ``http1.*`` codec stats)."""

from __future__ import annotations

from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup


class HcmStats(StatsGroup):
    downstream_cx_total: Counter
    downstream_cx_ssl_total: Counter
    downstream_cx_http1_total: Counter
    downstream_cx_http2_total: Counter
    downstream_cx_http3_total: Counter
    downstream_cx_upgrades_total: Counter
    downstream_cx_destroy: Counter
    downstream_cx_destroy_remote: Counter
    downstream_cx_destroy_local: Counter
    downstream_cx_destroy_active_rq: Counter
    downstream_cx_destroy_local_active_rq: Counter
    downstream_cx_destroy_remote_active_rq: Counter
    downstream_cx_rx_bytes_total: Counter
    downstream_cx_tx_bytes_total: Counter
    downstream_cx_protocol_error: Counter
    downstream_cx_idle_timeout: Counter
    downstream_cx_max_duration_reached: Counter
    downstream_cx_max_requests_reached: Counter
    downstream_cx_drain_close: Counter
    downstream_cx_delayed_close_timeout: Counter
    downstream_cx_overload_disable_keepalive: Counter
    downstream_flow_control_paused_reading_total: Counter
    downstream_flow_control_resumed_reading_total: Counter
    downstream_rq_total: Counter
    downstream_rq_http1_total: Counter
    downstream_rq_http2_total: Counter
    downstream_rq_http3_total: Counter
    downstream_rq_1xx: Counter
    downstream_rq_2xx: Counter
    downstream_rq_3xx: Counter
    downstream_rq_4xx: Counter
    downstream_rq_5xx: Counter
    downstream_rq_completed: Counter
    downstream_rq_rx_reset: Counter
    downstream_rq_tx_reset: Counter
    downstream_rq_non_relative_path: Counter
    downstream_rq_too_large: Counter
    downstream_rq_timeout: Counter
    downstream_rq_idle_timeout: Counter
    downstream_rq_header_timeout: Counter
    downstream_rq_max_duration_reached: Counter
    downstream_rq_response_before_rq_complete: Counter
    downstream_rq_overload_close: Counter
    downstream_rq_ws_on_non_ws_route: Counter
    downstream_rq_failed_path_normalization: Counter
    downstream_rq_redirected_with_normalized_path: Counter
    downstream_rq_rejected_via_ip_detection: Counter
    downstream_rq_too_many_premature_resets: Counter
    rs_too_large: Counter
    rq_overload_local_reply: Counter
    downstream_cx_active: Gauge
    downstream_cx_ssl_active: Gauge
    downstream_cx_http1_active: Gauge
    downstream_cx_http2_active: Gauge
    downstream_cx_http3_active: Gauge
    downstream_cx_upgrades_active: Gauge
    downstream_cx_http1_soft_drain: Gauge
    downstream_cx_rx_bytes_buffered: Gauge
    downstream_cx_tx_bytes_buffered: Gauge
    downstream_rq_active: Gauge
    downstream_cx_length_ms: Histogram
    downstream_rq_time: Histogram

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        for name in ("random_sampling", "service_forced", "client_enabled", "not_traceable",
                     "health_check"):
            scope.counter(f"tracing.{name}")
        # Index by status class (1..5): one list lookup per response on the hot path.
        self.by_class = [self.downstream_rq_1xx, self.downstream_rq_1xx, self.downstream_rq_2xx,
                         self.downstream_rq_3xx, self.downstream_rq_4xx, self.downstream_rq_5xx]


class ListenerHttpStats(StatsGroup):
    """``listener.<addr>.http.<prefix>.*``: the per-listener mirror of response classes."""

    downstream_rq_1xx: Counter
    downstream_rq_2xx: Counter
    downstream_rq_3xx: Counter
    downstream_rq_4xx: Counter
    downstream_rq_5xx: Counter
    downstream_rq_completed: Counter

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.by_class = [self.downstream_rq_1xx, self.downstream_rq_1xx, self.downstream_rq_2xx,
                         self.downstream_rq_3xx, self.downstream_rq_4xx, self.downstream_rq_5xx]


class Http1CodecStats(StatsGroup):
    """``http1.*`` at the root, as Envoy puts the downstream codec stats."""

    dropped_headers_with_underscores: Counter
    requests_rejected_with_underscores_in_headers: Counter
    metadata_not_supported_error: Counter
    response_flood: Counter
