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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from envoi.tracing.propagation import Getter, Setter

__all__ = ["HeaderBytes", "RequestTracer", "Span", "SpanKind", "SpanSink", "Tracer", "new_id",
           "new_span_id", "set_pair"]

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


def new_span_id() -> bytes:
    """A random non-zero 8-byte span id in lower-case hex, as bytes (for a header)."""
    while True:
        value = _getrandbits(64)
        if value:
            return b"%016x" % value


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


class HeaderBytes(Protocol):
    """What a tracer's fast path reads and writes of a request's headers (``HeaderMap``)."""

    headers: list[tuple[bytes, bytes]]  # the regular fields, lower-case names

    def get(self, name: str, default: str | None = None) -> str | None: ...

    def get_bytes(self, name: bytes) -> bytes | None: ...

    def set_bytes(self, name: bytes, value: bytes) -> None: ...


def set_pair(headers: HeaderBytes, name1: bytes, value1: bytes, name2: bytes,
             value2: bytes) -> None:
    """``set_bytes`` of two regular fields (trace context headers), in one pass over the
    fields when neither is there yet (the usual case: appended)."""
    hs = headers.headers
    present = dict(hs)  # (a C-level pass)
    if name1 in present or name2 in present:
        headers.set_bytes(name1, value1)
        headers.set_bytes(name2, value2)
        return
    hs.append((name1, value1))
    hs.append((name2, value2))


class RequestTracer(Tracer, Protocol):
    """A tracer with a fast path for the HTTP connection manager (the built-in ones): a request
    that is not sampled gets no :class:`Span`, only the context the upstream must see, read and
    written as header bytes. A tracer without these methods is driven through
    :class:`Tracer`'s (a span per request, sampled or not)."""

    #: the request headers (lower-case bytes) :meth:`begin` reads: a request with none of
    #: them (and none the sampling decision reads) starts a new trace, and when it is not
    #: sampled it gets no per-request state at all (``inject_unsampled`` without a context)
    context_headers: frozenset[bytes]

    def begin(self, name: str, kind: SpanKind, headers: HeaderBytes,
              fields: Mapping[bytes, bytes], traced: bool) -> tuple[Span | None, object]:
        """The request's ingress span when it is sampled (``(span, None)``), else
        ``(None, context)``: what :meth:`inject_unsampled` writes upstream. ``fields`` are the
        request's regular fields, each name with its first value; ``traced`` is Envoy's
        decision, which the tracer may overrule from the request's headers."""

    def inject_headers(self, span: Span, headers: HeaderBytes) -> None:
        """:meth:`Tracer.inject` straight into a header map."""

    def inject_unsampled(self, context: object, headers: HeaderBytes, child: bool,
                         retries: int = 0) -> None:
        """Write an unsampled request's context into an upstream request's headers (``child``:
        as the context of a child span of it, the router's egress span, would be; ``retries``:
        the attempts before this one). ``context`` None: a new trace, whose ids the first
        attempt draws and writes, and a retry keeps from the headers it left."""


SpanFactory = Callable[..., Span]
