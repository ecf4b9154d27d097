"""Histogram.record batches values and folds them by runs of the sorted batch: the counts per
two-significant-digit key must be exactly what rounding every value alone gives."""

from __future__ import annotations

import random

from envoi.stats.histogram import _BATCH, Histogram, _Samples


def _reference(values: list[float]) -> dict[float, int]:
    out: dict[float, int] = {}
    for v in values:
        key = float(f"{v:.2g}") if v > 0 else 0.0
        out[key] = out.get(key, 0) + 1
    return out


def _edges() -> list[float]:
    # Values on and next to rounding midpoints and decade edges, where float error bites.
    out = [0.0, -1.0, 1e-9, 0.095, 0.0995, 0.1, 0.125, 1.25, 1.35, 9.95, 9.949999, 9.950001,
           99.5, 100.0, 105.0, 995.0, 1e6]
    for base in (0.0105, 1.05, 2.45, 7.75, 15.5, 44.5):
        for k in range(-3, 4):
            out.append(base + k * 1e-12)
    return out


def test_add_many_matches_rounding_each_value() -> None:
    rng = random.Random(7)
    for _ in range(200):
        values = _edges() + [rng.lognormvariate(0, 2) for _ in range(rng.randrange(1, 3000))]
        values += [rng.choice([0.5, 1.0, 1.5, 2.5]) for _ in range(50)]
        rng.shuffle(values)
        s = _Samples()
        s.add_many(list(values))
        assert s.values == _reference(values)
        assert s.count == len(values)
        assert abs(s.sum - sum(values)) <= 1e-9 * max(1.0, abs(sum(values)))


def test_record_is_seen_by_every_reader_before_a_batch_fills() -> None:
    h = Histogram("t")
    assert not h.used
    for v in (1.0, 2.0, 2.04):
        h.record(v)
    assert h.used
    assert h.sample_count == 3
    assert h.sample_sum == 5.04
    assert h.export()[0][0] == {1.0: 1, 2.0: 2}
    h.flush()
    assert h.interval_quantiles()[-1] == 2.0
    h.clear()
    assert h.sample_count == 0


def test_a_full_batch_is_folded_by_record() -> None:
    h = Histogram("t")
    for i in range(_BATCH * 3 + 5):
        h.record(float(i % 50))
    assert len(h._pending) == 5
    assert h.sample_count == _BATCH * 3 + 5
    assert h.cumulative_buckets()[-1] == _BATCH * 3 + 5
