"""The stats store: counters, gauges, histograms and text readouts named as Envoy names them.

Hot-path code never looks a stat up by name: a filter factory asks its scope for the stat objects
once (usually through a :class:`StatsGroup`) and then does ``stat.value += n`` on an attribute.
The store keeps every stat in one dict by full name so the admin can list, filter and reset them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import ClassVar, get_type_hints

from envoi.stats.histogram import Histogram


class Counter:
    """A monotonically increasing count. ``value`` is the current total; ``used`` is set once the
    counter was ever incremented (what ``/stats?usedonly`` shows)."""

    __slots__ = ("name", "value")
    kind: ClassVar[str] = "counter"

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    @property
    def used(self) -> bool:
        return self.value != 0


class Gauge:
    """A value that goes up and down. ``used`` tracks whether it was ever set (Envoy shows
    never-touched gauges too, but ``usedonly`` hides them)."""

    __slots__ = ("_used", "name", "value")
    kind: ClassVar[str] = "gauge"

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self._used = False

    def inc(self, n: int = 1) -> None:
        self.value += n
        self._used = True

    def dec(self, n: int = 1) -> None:
        self.value -= n
        self._used = True

    def set(self, v: int) -> None:
        self.value = v
        self._used = True

    @property
    def used(self) -> bool:
        return self._used or self.value != 0


class TextReadout:
    __slots__ = ("name", "value")
    kind: ClassVar[str] = "text_readout"

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = ""

    def set(self, v: str) -> None:
        self.value = v

    @property
    def used(self) -> bool:
        return bool(self.value)


Stat = Counter | Gauge | Histogram | TextReadout


class Store:
    """All stats of one process, by full dotted name."""

    def __init__(self) -> None:
        self._stats: dict[str, Stat] = {}
        self._lock = threading.Lock()
        self.root = Scope(self, "")
        self._histogram_observer: Callable[[Histogram, list[float]], None] | None = None

    def set_histogram_observer(
            self, observer: Callable[[Histogram, list[float]], None] | None) -> None:
        """Hand every histogram's recorded values to ``observer`` in batches (the stats sinks,
        :mod:`envoi.stats.sink`); None stops it."""
        with self._lock:
            self._histogram_observer = observer
            for stat in self._stats.values():
                if isinstance(stat, Histogram):
                    stat._observer = observer

    def _get(self, name: str, cls: type[Stat]) -> Stat:
        stat = self._stats.get(name)
        if stat is None:
            with self._lock:
                stat = self._stats.get(name)
                if stat is None:
                    stat = cls(name)
                    if isinstance(stat, Histogram):
                        stat._observer = self._histogram_observer
                    self._stats[name] = stat
        if not isinstance(stat, cls):
            raise TypeError(f"stat {name!r} already exists as a {stat.kind}, not a {cls.kind}")
        return stat

    def counter(self, name: str) -> Counter:
        s = self._get(name, Counter)
        assert isinstance(s, Counter)
        return s

    def gauge(self, name: str) -> Gauge:
        s = self._get(name, Gauge)
        assert isinstance(s, Gauge)
        return s

    def histogram(self, name: str) -> Histogram:
        s = self._get(name, Histogram)
        assert isinstance(s, Histogram)
        return s

    def text_readout(self, name: str) -> TextReadout:
        s = self._get(name, TextReadout)
        assert isinstance(s, TextReadout)
        return s

    def __iter__(self) -> Iterator[Stat]:
        return iter(list(self._stats.values()))

    def get(self, name: str) -> Stat | None:
        return self._stats.get(name)

    def reset_counters(self) -> None:
        """What ``POST /reset_counters`` does: counters to zero; histograms keep their data."""
        for stat in list(self._stats.values()):
            if isinstance(stat, Counter):
                stat.value = 0


class Scope:
    """A name prefix in the store: ``scope('cluster.web.').counter('upstream_cx_total')``."""

    __slots__ = ("prefix", "store")

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def scope(self, name: str) -> Scope:
        name = name if name.endswith(".") or not name else name + "."
        return Scope(self.store, self.prefix + name)

    def counter(self, name: str) -> Counter:
        return self.store.counter(self.prefix + name)

    def gauge(self, name: str) -> Gauge:
        return self.store.gauge(self.prefix + name)

    def histogram(self, name: str) -> Histogram:
        return self.store.histogram(self.prefix + name)

    def text_readout(self, name: str) -> TextReadout:
        return self.store.text_readout(self.prefix + name)


class StatsGroup:
    """A declared set of stats, made eagerly in a scope (Envoy's ``ALL_..._STATS`` macros).

    Subclasses annotate attributes with :class:`Counter`, :class:`Gauge`, :class:`Histogram` or
    :class:`TextReadout`; constructing the group creates every stat under the scope, so they all
    appear in ``/stats`` at zero, as Envoy's do.
    """

    _fields: ClassVar[dict[str, type[Stat]]]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        hints = get_type_hints(cls)
        cls._fields = {
            name: tp
            for name, tp in hints.items()
            if isinstance(tp, type) and tp in (Counter, Gauge, Histogram, TextReadout)
        }

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        for name, tp in self._fields.items():
            if tp is Counter:
                setattr(self, name, scope.counter(name))
            elif tp is Gauge:
                setattr(self, name, scope.gauge(name))
            elif tp is Histogram:
                setattr(self, name, scope.histogram(name))
            else:
                setattr(self, name, scope.text_readout(name))
