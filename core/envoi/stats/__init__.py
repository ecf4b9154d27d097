"""Stats with Envoy's names: see :mod:`envoi.stats.store`."""

from envoi.stats.histogram import DEFAULT_BUCKETS, SUPPORTED_QUANTILES, Histogram
from envoi.stats.store import Counter, Gauge, Scope, Stat, StatsGroup, Store, TextReadout

__all__ = [
    "DEFAULT_BUCKETS",
    "SUPPORTED_QUANTILES",
    "Counter",
    "Gauge",
    "Histogram",
    "Scope",
    "Stat",
    "StatsGroup",
    "Store",
    "TextReadout",
]
