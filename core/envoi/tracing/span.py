"""The span model the HTTP path uses, whatever the tracer: start a span, tag it, inject its
context into the upstream request, spawn a child per upstream attempt, finish it.

A :class:`Span` is a plain object (slots, no protobuf): the HTTP path fills it on the hot path;
its tracer turns it into its wire format only when a batch is exported, off the hot path. A span
that is not sampled is never exported but still propagates (``sampled=0``), as in Envoy.

Tracers (``envoy.tracers.opentelemetry``, ``envoy.tracers.zipkin``, a plugin's) implement
:class:`Tracer`; the HTTP connection manager builds one per ``tracing.provider`` at config time.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from envoi.tracing.propagation import Getter, Setter

__all__ = ["Span", "SpanKind", "SpanSink", "Tracer", "new_id"]

_getrandbits = random.getrandbits


class SpanKind(enum.Enum):
    SERVER = "SERVER"  # the ingress (downstream) span
    CLIENT = "CLIENT"  # an egress (upstream) span


def new_id(nbytes: int = 8) -> str:
    """A random non-zero id in lower-case hex (8 bytes: a span id; 16: a trace id). From
    ``random`` (as Envoy's ids come from its random generator, not a cryptographic one): two
    system calls per request cost more than the rest of an unsampled span; ``random`` is
    reseeded in a forked worker."""
    bits = nbytes * 8
    while True:
        value = _getrandbits(bits)
        if value:
            return f"{value:0{nbytes * 2}x}"


class SpanSink(Protocol):
    """Where a finished, sampled span goes: its tracer's batching exporter."""

    def add(self, span: Span) -> None: ...


@dataclass(eq=False, slots=True)
class Span:
    name: str
    kind: SpanKind
    trace_id: str
    span_id: str
    parent_id: str = ""
    sampled: bool = True
    tracestate: str = ""
    start_ns: int = 0
    end_ns: int = 0
    #: Tags in the order they were set (a tag set twice keeps its place, takes the new value).
    tags: dict[str, str] | None = None
    #: Where the span goes when finished (None: nowhere); set by its tracer.
    sink: SpanSink | None = None
    #: The tracer's own per-span facts (Zipkin's shared-context flag, say).
    extra: dict[str, object] | None = None
    #: How a child is made and the context injected: the tracer's (see :class:`Tracer`).
    tracer: Tracer | None = None

    def set_tag(self, key: str, value: str) -> None:
        if not key:
            return
        tags = self.tags
        if tags is None:
            self.tags = {key: value}
        else:
            tags[key] = value

    def set_operation(self, name: str) -> None:
        self.name = name

    def finish(self, end_ns: int | None = None) -> None:
        """End the span; a sampled one is handed to its tracer's exporter (which never blocks
        and drops, counted, when its buffer is full)."""
        if self.end_ns:
            return  # finished already
        self.end_ns = end_ns if end_ns is not None else time.time_ns()
        if self.sampled and self.sink is not None:
            self.sink.add(self)

    def inject(self, set_header: Setter) -> None:
        """Write this span's context into an outgoing (upstream) request's headers."""
        if self.tracer is not None:
            self.tracer.inject(self, set_header)

    def spawn_child(self, name: str, start_ns: int | None = None) -> Span:
        """An egress span under this one (the router's ``start_child_span``)."""
        assert self.tracer is not None
        return self.tracer.child(self, name, start_ns if start_ns is not None
                                 else time.time_ns())


class Tracer(Protocol):
    """What the HTTP path asks of a tracer."""

    def start_span(self, name: str, kind: SpanKind, get_header: Getter, traced: bool,
                   start_ns: int) -> Span:
        """The ingress span of a request: its parent from the request's headers when they
        carry a context this tracer reads, else a new trace; ``traced`` is Envoy's decision."""

    def child(self, parent: Span, name: str, start_ns: int) -> Span: ...

    def inject(self, span: Span, set_header: Setter) -> None: ...


SpanFactory = Callable[..., Span]
