"""``http2.*``: the HTTP/2 codec's stats, as Envoy 1.39.3 creates them.

Downstream they sit at the root (``http2.rx_reset``), upstream under the cluster
(``cluster.<name>.http2.rx_reset``), as in Envoy. The names are the full list the running
Envoy 1.39.3 shows (../shared/reference/envoy.md, "Codec stats"); the ones envoi never moves
(``keepalive_timeout``, ``tx_flush_timeout``, ``metadata_empty_frames``, ``deferred_stream_close``,
the cookie histograms) exist at zero, as they do in an Envoy that never meets their cause.
"""

from __future__ import annotations

from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup, Store


class Http2CodecStats(StatsGroup):
    dropped_headers_with_underscores: Counter
    goaway_sent: Counter
    header_overflow: Counter
    headers_cb_no_stream: Counter
    inbound_empty_frames_flood: Counter
    inbound_priority_frames_flood: Counter
    inbound_window_update_frames_flood: Counter
    keepalive_timeout: Counter
    metadata_empty_frames: Counter
    outbound_control_flood: Counter
    outbound_flood: Counter
    requests_rejected_with_underscores_in_headers: Counter
    rx_messaging_error: Counter
    rx_reset: Counter
    stream_refused_errors: Counter
    trailers: Counter
    tx_flush_timeout: Counter
    tx_reset: Counter
    header_list_size_too_large: Counter
    cookies_total_bytes_too_large: Counter
    streams_active: Gauge
    pending_send_bytes: Gauge
    deferred_stream_close: Gauge
    outbound_frames_active: Gauge
    outbound_control_frames_active: Gauge
    header_count: Histogram
    header_list_size: Histogram
    cookie_count: Histogram
    cookie_size: Histogram


def detached_stats() -> Http2CodecStats:
    """Stats in a store of their own (unit tests, or a codec nobody reports on)."""
    return Http2CodecStats(Store().root.scope("http2"))


def codec_stats(scope: Scope) -> Http2CodecStats:
    """``<scope>http2.*``: pass the root scope downstream, the cluster's scope upstream."""
    return Http2CodecStats(scope.scope("http2"))
