"""Histograms with Envoy's quantiles and buckets, bounded in memory.

Envoy keeps a log-linear histogram (circllhist) and shows quantiles of the current interval and of
all time. We keep the same two views with values rounded to two significant digits, which bounds
the number of distinct keys (about 90 a decade) whatever the traffic, and is the precision
circllhist has.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from math import floor, log10
from typing import ClassVar

SUPPORTED_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
DEFAULT_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)


def _round2(v: float) -> float:
    # Two significant digits, as a clean float (1.4, not 1.4000000000000001).
    if v <= 0:
        return 0.0
    return float(f"{v:.2g}")


class _Samples:
    __slots__ = ("count", "sum", "values")

    def __init__(self) -> None:
        self.values: dict[float, int] = {}
        self.count = 0
        self.sum = 0.0

    def add(self, key: float, raw: float) -> None:
        self.values[key] = self.values.get(key, 0) + 1
        self.count += 1
        self.sum += raw

    def add_many(self, raw: list[float]) -> None:
        """Add a batch of values (sorts ``raw``). Values that round to the same key form one run
        of the sorted batch, so each run costs one bisect and three roundings, not one rounding
        per value."""
        self.count += len(raw)
        self.sum += sum(raw)
        raw.sort()
        values = self.values
        n = len(raw)
        i = 0
        while i < n:
            v = raw[i]
            if v <= 0:
                key = 0.0
                j = bisect_right(raw, 0.0, i)
            else:
                key = float(f"{v:.2g}")
                # Every value below the midpoint to the next two-digit key rounds to ``key``.
                # The computed midpoint is a few ulps from the decimal one: only a run end
                # that close to it is checked by rounding it (a format and a parse each, the
                # cost this loop saves), else this value is taken alone.
                mid = key + 0.5 * 10.0 ** (floor(log10(key)) - 1)
                j = bisect_left(raw, mid, i)
                near = mid * 1e-9
                if j <= i or (mid - raw[j - 1] <= near and float(f"{raw[j - 1]:.2g}") != key) \
                        or (j < n and raw[j] - mid <= near and float(f"{raw[j]:.2g}") == key):
                    j = i + 1
            values[key] = values.get(key, 0) + (j - i)
            i = j

    def merge(self, other: _Samples) -> None:
        for k, n in other.values.items():
            self.values[k] = self.values.get(k, 0) + n
        self.count += other.count
        self.sum += other.sum

    def quantiles(self) -> list[float | None]:
        if not self.count:
            return [None] * len(SUPPORTED_QUANTILES)
        keys = sorted(self.values)
        out: list[float | None] = []
        for q in SUPPORTED_QUANTILES:
            target = q * self.count
            seen = 0
            chosen = keys[-1]
            for k in keys:
                seen += self.values[k]
                if seen >= target and (q > 0 or seen > 0):
                    chosen = k
                    break
            out.append(chosen)
        return out

    def cumulative_buckets(self) -> list[int]:
        counts = []
        for b in DEFAULT_BUCKETS:
            counts.append(sum(n for k, n in self.values.items() if k <= b))
        return counts


_BATCH = 1024  # recorded values held before they are folded into the interval's counts


class Histogram:
    __slots__ = ("_cumulative", "_interval", "_last_interval", "_observer", "_pending", "name",
                 "unit")
    kind: ClassVar[str] = "histogram"

    def __init__(self, name: str) -> None:
        self.name = name
        self.unit = ""
        self._interval = _Samples()
        self._cumulative = _Samples()
        self._last_interval = _Samples()
        # Values recorded and not yet counted: a request records two, so ``record`` only
        # appends; every reader folds the batch in first (``_fold``), so nothing reads stale.
        self._pending: list[float] = []
        #: Stats sinks' view of the raw values (``envoi.stats.sink``): handed each batch as it
        #: is folded in, so ``record`` stays an append whether or not a sink listens.
        self._observer: Callable[[Histogram, list[float]], None] | None = None

    def record(self, value: float) -> None:
        pending = self._pending
        pending.append(value)
        if len(pending) >= _BATCH:
            self._fold()

    def _fold(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if self._observer is not None:
                self._observer(self, pending)
            self._interval.add_many(pending)

    def flush(self) -> None:
        """Close the current interval (Envoy does this every ``stats_flush_interval``)."""
        self._fold()
        self._cumulative.merge(self._interval)
        self._last_interval = self._interval
        self._interval = _Samples()

    @property
    def used(self) -> bool:
        return bool(self._pending or self._interval.count or self._cumulative.count)

    def _all(self) -> _Samples:
        self._fold()
        merged = _Samples()
        merged.merge(self._cumulative)
        merged.merge(self._interval)
        return merged

    def interval_quantiles(self) -> list[float | None]:
        return self._last_interval.quantiles()

    def cumulative_quantiles(self) -> list[float | None]:
        return self._all().quantiles()

    def cumulative_buckets(self) -> list[int]:
        return self._all().cumulative_buckets()

    @property
    def sample_count(self) -> int:
        self._fold()
        return self._cumulative.count + self._interval.count

    @property
    def sample_sum(self) -> float:
        self._fold()
        return self._cumulative.sum + self._interval.sum

    # -- across processes (worker processes report to the main one) --------------------------

    def export(self) -> tuple[tuple[dict[float, int], int, float], tuple[dict[float, int], int,
                                                                       float]]:
        """Everything recorded so far and the last closed interval, as plain data."""
        every = self._all()
        last = self._last_interval
        return (dict(every.values), every.count, every.sum), (dict(last.values), last.count,
                                                              last.sum)

    def merge_export(self, exported: tuple[tuple[dict[float, int], int, float],
                                           tuple[dict[float, int], int, float]]) -> None:
        """Add another process's :meth:`export` to this histogram."""
        for (values, count, total), target in zip(
            exported, (self._cumulative, self._last_interval), strict=True
        ):
            other = _Samples()
            other.values = dict(values)
            other.count = count
            other.sum = total
            target.merge(other)

    def clear(self) -> None:
        self._pending = []
        self._interval = _Samples()
        self._cumulative = _Samples()
        self._last_interval = _Samples()
