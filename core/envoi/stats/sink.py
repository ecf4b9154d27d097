"""Stats sinks: the contract a sink implements, and the flusher that feeds it.

Envoy flushes its stats to every configured sink (``stats_sinks``) once every
``stats_flush_interval`` (5 s by default): a snapshot of every counter with its change since the
last flush (its *delta*), every gauge, every histogram. Histogram values reach a sink one by one
as they are recorded (``onHistogramComplete``), not at the flush: statsd sends each as a timer.

envoi does the same, with one twist for worker processes (``--concurrency`` > 1): the snapshot
is taken in the main process, once, from the stats summed over every worker
(``Server.stats_snapshot``), so a sink sees one server, as with Envoy's threads. Histogram
values are handed to the sinks in the process that recorded them, in batches: at each stats
flush of that process, or sooner when 1024 are waiting (``Histogram.record`` only appends; see
:mod:`envoi.stats.histogram`). So each value reaches a sink exactly once, at most one flush
interval after it was recorded (Envoy: at once).

A sink is what a :class:`~envoi.extensions.StatsSinkFactory` returns: an object with
``flush(snapshot)`` and ``on_histogram_values(histogram, values)``. It is built at config time in
the main process and copied into each worker by ``fork``, so a sink that holds a socket opens it
lazily in the process that uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from envoi.stats.histogram import Histogram
from envoi.stats.store import Counter, Gauge, Store, TextReadout

log = logging.getLogger("envoi.stats_sinks")

__all__ = ["CounterSnapshot", "MetricSnapshot", "StatsFlusher", "StatsSink"]


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    """A counter at a flush: its value now and its change since the last flush. ``used`` is
    Envoy's flag: the counter was incremented at some time (sinks skip unused counters)."""

    name: str
    value: int
    delta: int
    used: bool


@dataclass(frozen=True)
class MetricSnapshot:
    """Everything a sink gets at a flush (Envoy's ``Stats::MetricSnapshot``)."""

    counters: Sequence[CounterSnapshot]
    gauges: Sequence[Gauge]
    histograms: Sequence[Histogram]
    text_readouts: Sequence[TextReadout]
    #: ``time.time()`` of the snapshot.
    timestamp: float = 0.0


class StatsSink(Protocol):
    """A stats sink (Envoy's ``Stats::Sink``)."""

    def flush(self, snapshot: MetricSnapshot) -> None:
        """Called in the main process once every ``stats_flush_interval``. Must not block: a
        sink that writes to the network queues and returns."""

    def on_histogram_values(self, histogram: Histogram, values: Sequence[float]) -> None:
        """Values recorded in ``histogram`` since the last call, in the process that recorded
        them (a worker, or the main process for its own histograms)."""


@dataclass
class StatsFlusher:
    """Turns the store into snapshots with counter deltas and hands them to the sinks."""

    sinks: list[StatsSink] = field(default_factory=list)
    #: Each counter's value at the last flush.
    _last: dict[str, int] = field(default_factory=dict)
    #: Counters ever seen non-zero: Envoy's ``used`` flag stays set, so a counter once used is
    #: sent at every flush, with a delta of 0 when it did not move.
    _used: set[str] = field(default_factory=set)

    def snapshot(self, store: Store, timestamp: float = 0.0) -> MetricSnapshot:
        counters: list[CounterSnapshot] = []
        gauges: list[Gauge] = []
        histograms: list[Histogram] = []
        texts: list[TextReadout] = []
        last, used = self._last, self._used
        for stat in store:
            if isinstance(stat, Counter):
                value = stat.value
                before = last.get(stat.name, 0)
                # A value below the last one was reset (/reset_counters): all of it is new.
                delta = value - before if value >= before else value
                last[stat.name] = value
                if value:
                    used.add(stat.name)
                counters.append(CounterSnapshot(stat.name, value, delta, stat.name in used))
            elif isinstance(stat, Gauge):
                gauges.append(stat)
            elif isinstance(stat, Histogram):
                histograms.append(stat)
            else:
                texts.append(stat)
        return MetricSnapshot(counters, gauges, histograms, texts, timestamp)

    def flush(self, store: Store, timestamp: float = 0.0) -> None:
        if not self.sinks:
            return
        snap = self.snapshot(store, timestamp)
        for sink in self.sinks:
            try:
                sink.flush(snap)
            except Exception:  # one broken sink must not stop the others, nor the server
                log.exception("stats sink %r failed to flush", sink)

    def histogram_observer(self) -> Callable[[Histogram, list[float]], None] | None:
        """What the store calls with a histogram's new values (None without sinks)."""
        if not self.sinks:
            return None
        sinks = tuple(self.sinks)

        def observe(histogram: Histogram, values: list[float]) -> None:
            for sink in sinks:
                try:
                    sink.on_histogram_values(histogram, values)
                except Exception:
                    log.exception("stats sink %r failed on histogram values", sink)

        return observe
