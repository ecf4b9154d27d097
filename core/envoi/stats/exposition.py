"""The three shapes of ``/stats``: Envoy's text, its JSON and Prometheus text 0.0.4.

Pure functions over a :class:`~envoi.stats.store.Store`; the admin chooses one per request.
Dashboards and scripts written against Envoy parse these byte for byte, so the number formatting
follows Envoy's (C++ ``fmt``) rules rather than Python's ``repr``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Literal

from envoi.stats.histogram import DEFAULT_BUCKETS, SUPPORTED_QUANTILES, Histogram
from envoi.stats.store import Counter, Gauge, Stat, Store, TextReadout
from envoi.stats.tags import TagProducer, default_tag_producer

StatsType = Literal["All", "Counters", "Gauges", "Histograms", "TextReadouts"]
STATS_TYPES: tuple[StatsType, ...] = ("All", "Counters", "Gauges", "Histograms", "TextReadouts")


def format_double(v: float | None) -> str:
    """A double as C++ ``fmt::format("{}", v)`` writes it: the shortest text that reads back
    the same, without Python's trailing ``.0``, and ``nan`` for a missing value."""
    if v is None or math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    text = repr(float(v))
    # repr and fmt agree on the digits and on when to switch to exponent form; only the ".0"
    # Python adds to whole numbers differs.
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _percent_label(q: float) -> str:
    # Envoy prints the quantile with {:g}: P0 P25 ... P99.5 P99.9 P100.
    return format(100 * q, "g")


def _json_number(v: float | None) -> str:
    # JSON has no NaN: Envoy writes an empty interval's quantiles as null.
    if v is None or math.isnan(v):
        return "null"
    return format_double(v)


def _selected(
    store: Store, filter_re: re.Pattern[str] | str | None, used_only: bool
) -> list[Stat]:
    pattern = re.compile(filter_re) if isinstance(filter_re, str) else filter_re
    out: list[Stat] = []
    for stat in store:
        if used_only and not stat.used:
            continue
        if pattern is not None and not pattern.search(stat.name):
            continue
        out.append(stat)
    return out


def _split(
    stats: Iterable[Stat], type_: StatsType
) -> tuple[list[TextReadout], list[Counter | Gauge], list[Histogram]]:
    texts: list[TextReadout] = []
    numbers: list[Counter | Gauge] = []
    histograms: list[Histogram] = []
    for stat in stats:
        if isinstance(stat, TextReadout):
            if type_ in ("All", "TextReadouts"):
                texts.append(stat)
        elif isinstance(stat, Counter):
            if type_ in ("All", "Counters"):
                numbers.append(stat)
        elif isinstance(stat, Gauge):
            if type_ in ("All", "Gauges"):
                numbers.append(stat)
        elif type_ in ("All", "Histograms"):
            histograms.append(stat)
    texts.sort(key=lambda s: s.name)
    numbers.sort(key=lambda s: s.name)
    histograms.sort(key=lambda s: s.name)
    return texts, numbers, histograms


def histogram_summary(h: Histogram) -> str:
    """``P0(interval,cumulative) P25(...) ... P100(...)`` or ``No recorded values``."""
    if not h.used:
        return "No recorded values"
    interval = h.interval_quantiles()
    cumulative = h.cumulative_quantiles()
    return " ".join(
        f"P{_percent_label(q)}({format_double(i)},{format_double(c)})"
        for q, i, c in zip(SUPPORTED_QUANTILES, interval, cumulative, strict=True)
    )


def render_text(
    store: Store,
    *,
    filter_re: re.Pattern[str] | str | None = None,
    used_only: bool = False,
    type_: StatsType = "All",
) -> str:
    """Envoy's ``/stats``: text readouts, then counters and gauges together, then histograms,
    each group sorted by name."""
    texts, numbers, histograms = _split(_selected(store, filter_re, used_only), type_)
    lines: list[str] = []
    lines.extend(f'{s.name}: "{s.value}"' for s in texts)
    lines.extend(f"{s.name}: {s.value}" for s in numbers)
    lines.extend(f"{h.name}: {histogram_summary(h)}" for h in histograms)
    return "".join(line + "\n" for line in lines)


def render_json(
    store: Store,
    *,
    filter_re: re.Pattern[str] | str | None = None,
    used_only: bool = False,
    type_: StatsType = "All",
) -> str:
    """Envoy's ``/stats?format=json``: one ``{"name", "value"}`` per stat, then one entry holding
    every histogram's quantiles."""
    texts, numbers, histograms = _split(_selected(store, filter_re, used_only), type_)
    entries: list[str] = []
    for t in texts:
        entries.append(f'{{"name":{json.dumps(t.name)},"value":{json.dumps(t.value)}}}')
    for n in numbers:
        entries.append(f'{{"name":{json.dumps(n.name)},"value":{int(n.value)}}}')
    if histograms:
        supported = ",".join(format_double(100 * q) for q in SUPPORTED_QUANTILES)
        computed: list[str] = []
        for h in histograms:
            values = ",".join(
                f'{{"cumulative":{_json_number(c)},"interval":{_json_number(i)}}}'
                for i, c in zip(h.interval_quantiles(), h.cumulative_quantiles(), strict=True)
            )
            computed.append(f'{{"name":{json.dumps(h.name)},"values":[{values}]}}')
        entries.append(
            f'{{"histograms":{{"supported_quantiles":[{supported}],'
            f'"computed_quantiles":[{",".join(computed)}]}}}}'
        )
    return '{"stats":[' + ",".join(entries) + "]}"


# ---------------------------------------------------------------------------- Prometheus

_PROM_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(tag_extracted_name: str) -> str:
    """``cluster.upstream_rq`` → ``envoy_cluster_upstream_rq`` (Envoy's namespace and charset)."""
    return "envoy_" + _PROM_INVALID.sub("_", tag_extracted_name)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(tags: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{_PROM_INVALID.sub("_", k)}="{_label_value(v)}"' for k, v in tags)


def _group(
    stats: Iterable[Stat], producer: TagProducer
) -> list[tuple[str, list[tuple[Stat, str]]]]:
    """Stats grouped by their Prometheus metric name (sorted), each group sorted by stat name;
    every stat comes with its rendered label set."""
    groups: dict[str, list[tuple[Stat, str]]] = {}
    for stat in stats:
        extracted, tags = producer.produce(stat.name)
        groups.setdefault(prometheus_name(extracted), []).append((stat, _labels(tags)))
    out = []
    for name in sorted(groups):
        members = groups[name]
        members.sort(key=lambda m: m[0].name.split("."))
        out.append((name, members))
    return out


def render_prometheus(
    store: Store,
    *,
    used_only: bool = False,
    filter_re: re.Pattern[str] | str | None = None,
    text_readouts: bool = False,
    producer: TagProducer | None = None,
) -> str:
    """``/stats/prometheus``: counters, then gauges, then (on request) text readouts as gauges
    with a ``text_value`` label, then histograms as cumulative buckets, ``_sum`` and ``_count``."""
    producer = producer or default_tag_producer()
    selected = _selected(store, filter_re, used_only)
    counters = [s for s in selected if isinstance(s, Counter)]
    gauges = [s for s in selected if isinstance(s, Gauge)]
    texts = [s for s in selected if isinstance(s, TextReadout)] if text_readouts else []
    histograms = [s for s in selected if isinstance(s, Histogram)]
    out: list[str] = []
    for kind, stats in (("counter", counters), ("gauge", gauges)):
        for name, members in _group(stats, producer):
            out.append(f"# TYPE {name} {kind}\n")
            for stat, labels in members:
                assert isinstance(stat, Counter | Gauge)
                out.append(f"{name}{{{labels}}} {stat.value}\n")
    for name, members in _group(texts, producer):
        out.append(f"# TYPE {name} gauge\n")
        for stat, labels in members:
            assert isinstance(stat, TextReadout)
            text_label = _labels([("text_value", stat.value)])
            joined = f"{labels},{text_label}" if labels else text_label
            out.append(f"{name}{{{joined}}} 0\n")
    for name, members in _group(histograms, producer):
        out.append(f"# TYPE {name} histogram\n")
        for stat, labels in members:
            assert isinstance(stat, Histogram)
            out.append(_prometheus_histogram(name, labels, stat))
    return "".join(out)


def _prometheus_histogram(name: str, labels: str, h: Histogram) -> str:
    lead = f"{labels}," if labels else ""
    lines = [
        f'{name}_bucket{{{lead}le="{bound:.32g}"}} {count}\n'
        for bound, count in zip(DEFAULT_BUCKETS, h.cumulative_buckets(), strict=True)
    ]
    lines.append(f'{name}_bucket{{{lead}le="+Inf"}} {h.sample_count}\n')
    lines.append(f"{name}_sum{{{labels}}} {h.sample_sum:.32g}\n")
    lines.append(f"{name}_count{{{labels}}} {h.sample_count}\n")
    return "".join(lines)
