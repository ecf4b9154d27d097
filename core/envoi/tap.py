"""The live tap: what protocol filters decode, streamed to whoever listens (``GET /tap``).

A filter gets a :class:`TapPoint` once, at config time, from its factory context
(``context.tap_point(name)``), and publishes decoded events through it::

    tap = context.tap_point("envoy.filters.network.mongo_proxy")
    ...
    if tap.active:                       # one attribute read when nobody listens
        tap.publish("mongo.command", connection_id, {"command": "find", ...})

Nothing is built or serialized while no session listens to the point: ``active`` is False and
the filter skips the call. A session (:class:`TapSession`) chooses a listener and/or a filter and
matches on event fields (``fnmatch`` patterns on the field's text: ``collection=users``,
``status=5*``); each event is serialized once, as one JSON line, for every session it matches.

Bounded: a session holds at most ``buffer_bytes`` of lines its reader has not taken; past that,
events are dropped and counted (``envoi.tap.dropped``, and a ``{"type": "tap.dropped"}`` line
tells the reader how many it missed). A reader that never reads costs the traffic nothing more
than serializing the events it will not get, and never grows memory past the bound.

With worker processes the sessions live in the main process (the admin's); every worker gets a
copy of each session (``tap_start``/``tap_stop`` worker operations) and forwards the lines it
matched over its control channel, batched once per loop iteration and bounded the same way (a
worker forked while a session is open inherits it). Each connection is served by one worker, so
a connection's events arrive in order.

Stats: ``envoi.tap.published`` (events serialized), ``envoi.tap.dropped`` (events a slow reader
or a full channel lost), ``envoi.tap.sessions`` (open sessions, main process),
``envoi.tap.buffered_bytes`` (lines waiting for their readers).
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoi.stats import Counter, Gauge, Scope, StatsGroup
from envoi.workers.control import (
    OpContext,
    push_event,
    register_worker_op,
    set_event_handler,
)

log = logging.getLogger("envoi.tap")

__all__ = ["DEFAULT_BUFFER_BYTES", "TapHub", "TapPoint", "TapSession", "TapSpec"]

#: What a session holds for its reader before it drops events.
DEFAULT_BUFFER_BYTES = 1 << 20
MAX_BUFFER_BYTES = 64 << 20
#: Query parameters of ``/tap`` that are not field matches.
RESERVED_PARAMS = frozenset({"listener", "filter", "limit", "buffer"})


class TapStats(StatsGroup):
    published: Counter
    dropped: Counter
    sessions: Gauge
    #: Bytes of lines waiting for their readers (at most each session's ``buffer``).
    buffered_bytes: Gauge


@dataclass(frozen=True)
class TapSpec:
    """What a session listens to: ``listener``/``filter`` ("" for any) and field patterns."""

    id: int
    listener: str = ""
    filter: str = ""
    match: tuple[tuple[str, str], ...] = ()

    def covers(self, listener: str, filter_name: str) -> bool:
        return ((not self.listener or self.listener == listener)
                and (not self.filter or self.filter == filter_name))

    def matches(self, event: Mapping[str, Any]) -> bool:
        for key, pattern in self.match:
            value = event.get(key)
            if value is None or not fnmatch.fnmatchcase(_text(value), pattern):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "listener": self.listener, "filter": self.filter,
                "match": list(self.match)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TapSpec:
        return cls(int(d["id"]), str(d.get("listener", "")), str(d.get("filter", "")),
                   tuple((str(k), str(v)) for k, v in d.get("match", ())))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_event(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), default=str).encode() + b"\n"


class _Sink:
    """Where one session's lines go in this process: a bounded queue of JSON lines."""

    def __init__(self, spec: TapSpec, stats: TapStats, limit: int) -> None:
        self.spec = spec
        self.stats = stats
        self.limit = limit
        self.lines: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0  # not yet reported to the reader
        self.on_ready: Callable[[], None] | None = None
        self._scheduled = False

    def offer(self, line: bytes) -> None:
        if self.size + len(line) > self.limit:
            self.dropped += 1
            self.stats.dropped.value += 1
            return
        self.lines.append(line)
        self.size += len(line)
        self.stats.buffered_bytes.inc(len(line))
        self._wake()

    def offer_many(self, lines: Iterable[bytes], dropped: int) -> None:
        for line in lines:
            self.offer(line)
        if dropped:
            self.dropped += dropped
            self._wake()

    def _wake(self) -> None:
        # The reader is told once per loop iteration, however many events arrive in it.
        if self.on_ready is None or self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._scheduled = True
        loop.call_soon(self._ready)

    def _ready(self) -> None:
        self._scheduled = False
        if self.on_ready is not None:
            self.on_ready()

    def take_raw(self) -> list[bytes]:
        out = list(self.lines)
        self.lines.clear()
        self.stats.buffered_bytes.dec(self.size)
        self.size = 0
        return out

    def take(self) -> list[bytes]:
        """The lines waiting, and a ``tap.dropped`` line when events were lost since."""
        out = self.take_raw()
        if self.dropped:
            out.append(encode_event({"type": "tap.dropped", "count": self.dropped}))
            self.dropped = 0
        return out


class TapPoint:
    """One filter's publishing point on one listener (made at config time)."""

    __slots__ = ("_hub", "_sinks", "active", "filter", "listener")

    def __init__(self, hub: TapHub, listener: str, filter_name: str) -> None:
        self._hub = hub
        self.listener = listener
        self.filter = filter_name
        #: True while a session listens here: check it before building an event.
        self.active = False
        self._sinks: tuple[_Sink, ...] = ()

    def publish(self, event_type: str, connection: int | None,
                fields: Mapping[str, Any]) -> None:
        """Publish one decoded event (plain JSON-able values; others are written with
        ``str``). Call only when ``active``."""
        event: dict[str, Any] = {"ts": round(time.time(), 6), "listener": self.listener,
                                 "filter": self.filter, "type": event_type}
        if connection is not None:
            event["connection"] = connection
        if self._hub.worker is not None:
            event["worker"] = self._hub.worker
        event.update(fields)
        line: bytes | None = None
        for sink in self._sinks:
            if sink.spec.matches(event):
                if line is None:
                    line = encode_event(event)
                    self._hub.stats.published.value += 1
                sink.offer(line)

    def _refresh(self, sinks: Iterable[_Sink]) -> None:
        self._sinks = tuple(s for s in sinks if s.spec.covers(self.listener, self.filter))
        self.active = bool(self._sinks)


class TapSession:
    """A session's reading end in the main process (``/tap``): lines to take, and ``close``."""

    def __init__(self, hub: TapHub, sink: _Sink) -> None:
        self._hub = hub
        self._sink = sink
        self.spec = sink.spec

    def set_reader(self, on_ready: Callable[[], None] | None) -> None:
        """``on_ready()`` is called (once per loop iteration) when lines are waiting."""
        self._sink.on_ready = on_ready
        if on_ready is not None and (self._sink.lines or self._sink.dropped):
            self._sink._wake()

    def take(self) -> list[bytes]:
        return self._sink.take()

    def close(self) -> None:
        self._hub.close(self)


@dataclass
class _Forwarder:
    """In a worker: a session's lines, sent to the main process once per loop iteration."""

    sink: _Sink
    push: Callable[[dict[str, Any]], bool]
    pending: bool = False

    def ready(self) -> None:
        lines = self.sink.take_raw()
        dropped = self.sink.dropped
        self.sink.dropped = 0
        if not lines and not dropped:
            return
        if not self.push({"event": "tap", "session": self.sink.spec.id, "lines": lines,
                          "dropped": dropped}):
            self.sink.stats.dropped.value += len(lines)
            # The main process's reader learns of them with the next batch that gets through.
            self.sink.dropped += len(lines) + dropped


@dataclass
class TapHub:
    """Every tap point and session of one process (the server's ``tap``)."""

    stats: TapStats
    points: list[TapPoint] = field(default_factory=list)
    #: This process's sessions' sinks, by session id.
    sinks: dict[int, _Sink] = field(default_factory=dict)
    #: Set in a worker process: its index (events carry it).
    worker: int | None = None
    #: In the main process with workers: start and stop a session in every worker.
    remote: Any = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def create(cls, scope: Scope) -> TapHub:
        hub = cls(TapStats(scope.scope("envoi.tap")))
        ref = weakref.ref(hub)

        def forked() -> None:
            h = ref()
            if h is not None:
                h._after_fork()

        os.register_at_fork(after_in_child=forked)
        return hub

    # -- publishers -----------------------------------------------------------------------

    def point(self, listener: str, filter_name: str) -> TapPoint:
        for p in self.points:
            if p.listener == listener and p.filter == filter_name:
                return p
        p = TapPoint(self, listener, filter_name)
        p._refresh(self.sinks.values())
        self.points.append(p)
        return p

    def describe_points(self) -> list[dict[str, str]]:
        return [{"listener": p.listener, "filter": p.filter} for p in self.points]

    # -- sessions (main process) ----------------------------------------------------------

    def open(self, listener: str = "", filter_name: str = "",
             match: Mapping[str, str] | None = None,
             buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> TapSession:
        spec = TapSpec(next(self._ids), listener, filter_name,
                       tuple(sorted((match or {}).items())))
        sink = _Sink(spec, self.stats, buffer_bytes)
        self._add(sink)
        self.stats.sessions.inc()
        if self.remote is not None:
            self.remote.start(spec.as_dict(), buffer_bytes)
        return TapSession(self, sink)

    def close(self, session: TapSession) -> None:
        sink = self.sinks.pop(session.spec.id, None)
        if sink is None:
            return
        sink.on_ready = None
        sink.take_raw()
        self._refresh()
        self.stats.sessions.dec()
        if self.remote is not None:
            self.remote.stop(session.spec.id)

    def deliver(self, session_id: int, lines: list[bytes], dropped: int) -> None:
        """Lines a worker forwarded for a session (main process)."""
        sink = self.sinks.get(session_id)
        if sink is not None:
            sink.offer_many(lines, dropped)

    # -- sessions (worker) ----------------------------------------------------------------

    def start_forwarding(self, spec: TapSpec, buffer_bytes: int) -> None:
        if spec.id in self.sinks:
            return
        sink = _Sink(spec, self.stats, buffer_bytes)
        self._forward(sink)
        self._add(sink)

    def stop_forwarding(self, session_id: int) -> None:
        sink = self.sinks.pop(session_id, None)
        if sink is not None:
            sink.on_ready = None
            sink.take_raw()
            self._refresh()

    def _forward(self, sink: _Sink) -> None:
        sink.on_ready = _Forwarder(sink, push_event).ready

    def _after_fork(self) -> None:
        """In a worker just forked: the main's sessions become forwarding ones (their readers
        are the main's)."""
        for sink in self.sinks.values():
            sink.take_raw()
            sink.dropped = 0
            sink._scheduled = False
            self._forward(sink)

    # -- common ---------------------------------------------------------------------------

    def _add(self, sink: _Sink) -> None:
        self.sinks[sink.spec.id] = sink
        self._refresh()

    def _refresh(self) -> None:
        sinks = list(self.sinks.values())
        for p in self.points:
            p._refresh(sinks)


def parse_query(query: Mapping[str, str]) -> tuple[str, str, dict[str, str], int | None, int]:
    """``/tap``'s query: listener, filter, field matches, limit (events) and buffer (bytes).
    Raises ValueError with a message for the client."""
    limit = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise ValueError("limit: a number of events") from None
        if limit <= 0:
            raise ValueError("limit: a number of events above 0")
    buffer_bytes = DEFAULT_BUFFER_BYTES
    if "buffer" in query:
        try:
            buffer_bytes = int(query["buffer"])
        except ValueError:
            raise ValueError("buffer: a number of bytes") from None
        if not 1024 <= buffer_bytes <= MAX_BUFFER_BYTES:
            raise ValueError(f"buffer: between 1024 and {MAX_BUFFER_BYTES} bytes")
    match = {k: v for k, v in query.items() if k not in RESERVED_PARAMS}
    return query.get("listener", ""), query.get("filter", ""), match, limit, buffer_bytes


# -- worker processes: the main process starts and stops each session in every worker -----------


def _op_tap_start(ctx: OpContext, msg: dict[str, Any]) -> Any:
    hub: TapHub = ctx.server.tap_hub
    hub.worker = ctx.index
    hub.start_forwarding(TapSpec.from_dict(msg["spec"]), int(msg["buffer"]))
    return None


def _op_tap_stop(ctx: OpContext, msg: dict[str, Any]) -> Any:
    ctx.server.tap_hub.stop_forwarding(int(msg["session"]))
    return None


register_worker_op("tap_start", _op_tap_start)
register_worker_op("tap_stop", _op_tap_stop)


class WorkerTaps:
    """The main process's ``TapHub.remote`` with worker processes: every session also runs in
    every worker, whose lines come back as ``tap`` events."""

    def __init__(self, hub: TapHub, broadcast: Callable[[dict[str, Any]], None]) -> None:
        self.broadcast = broadcast
        set_event_handler("tap", lambda _index, frame: hub.deliver(
            int(frame["session"]), list(frame.get("lines", ())), int(frame.get("dropped", 0))))

    def start(self, spec: dict[str, Any], buffer_bytes: int) -> None:
        self.broadcast({"op": "tap_start", "spec": spec, "buffer": buffer_bytes})

    def stop(self, session_id: int) -> None:
        self.broadcast({"op": "tap_stop", "session": session_id})
