"""Trace context in HTTP headers: W3C Trace Context (``traceparent``/``tracestate``) and B3
(``x-b3-*`` headers, or the single ``b3`` header), read and written as Envoy's tracers do.

Sans-IO: functions over a header getter (``get(name) -> str | None``, lower-case names) and a
setter (``set(name, value)``), so the HTTP path hands in whatever header map it has. A header
that is malformed is ignored (the request starts a new trace), as in Envoy; nothing raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "B3Context",
    "Getter",
    "Setter",
    "TraceParent",
    "extract_b3",
    "extract_w3c",
    "format_traceparent",
    "inject_b3",
    "inject_w3c",
    "parse_traceparent",
]

Getter = Callable[[str], "str | None"]
Setter = Callable[[str, str], None]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX = re.compile(r"^[0-9a-f]+$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A W3C ``traceparent``: 32 hex trace id, 16 hex parent span id, the sampled flag, and the
    ``tracestate`` that came with it."""

    trace_id: str
    parent_id: str
    sampled: bool
    tracestate: str = ""


def extract_w3c(get: Getter) -> TraceParent | None:
    """The request's W3C trace context, or None when absent or invalid (version ``ff``, all-zero
    ids, wrong lengths or case, extra fields on version 00)."""
    value = get(TRACEPARENT)
    if value is None:
        return None
    parent = parse_traceparent(value)
    if parent is None:
        return None
    tracestate = get(TRACESTATE)
    return TraceParent(parent.trace_id, parent.parent_id, parent.sampled, tracestate) \
        if tracestate else parent


def parse_traceparent(value: str) -> TraceParent | None:
    """A ``traceparent`` header's value (without ``tracestate``), or None when invalid."""
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE \
            or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, bool(int(flags, 16) & 1))


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def inject_w3c(set_header: Setter, trace_id: str, span_id: str, sampled: bool,
               tracestate: str) -> None:
    """As Envoy's OpenTelemetry tracer: ``traceparent``, and ``tracestate`` (empty too)."""
    set_header(TRACEPARENT, format_traceparent(trace_id, span_id, sampled))
    set_header(TRACESTATE, tracestate)


# -- B3 -------------------------------------------------------------------------------------------

B3_TRACE_ID = "x-b3-traceid"
B3_SPAN_ID = "x-b3-spanid"
B3_PARENT_ID = "x-b3-parentspanid"
B3_SAMPLED = "x-b3-sampled"
B3_FLAGS = "x-b3-flags"
B3_SINGLE = "b3"


@dataclass(frozen=True, slots=True)
class B3Context:
    """B3 propagation: ids in hex (trace id 16 or 32 digits), ``sampled`` None when the client
    left the decision to us, ``debug`` for ``x-b3-flags: 1`` / ``d``."""

    trace_id: str
    span_id: str
    parent_id: str = ""
    sampled: bool | None = None
    debug: bool = False


def _valid_id(value: str, lengths: tuple[int, ...]) -> bool:
    return len(value) in lengths and bool(_HEX.match(value)) and set(value) != {"0"}


def _sampled(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("1", "true", "d"):
        return True
    if v in ("0", "false"):
        return False
    return None


def extract_b3(get: Getter) -> B3Context | None:
    """The B3 context of a request: the single ``b3`` header first, then the ``x-b3-*``
    headers. A sampling-only header (``b3: 0``, ``x-b3-sampled`` alone) gives a context with
    empty ids, which says only whether to sample."""
    single = get(B3_SINGLE)
    if single is not None:
        ctx = _extract_b3_single(single.strip().lower())
        if ctx is not None:
            return ctx
    trace_id = (get(B3_TRACE_ID) or "").strip().lower()
    span_id = (get(B3_SPAN_ID) or "").strip().lower()
    flags = (get(B3_FLAGS) or "").strip()
    sampled = _sampled(get(B3_SAMPLED))
    debug = flags == "1"
    if not trace_id and not span_id:
        if sampled is None and not debug:
            return None
        return B3Context("", "", "", True if debug else sampled, debug)
    if not _valid_id(trace_id, (16, 32)) or not _valid_id(span_id, (16,)):
        return None
    parent = (get(B3_PARENT_ID) or "").strip().lower()
    if parent and not _valid_id(parent, (16,)):
        return None
    return B3Context(trace_id, span_id, parent, True if debug else sampled, debug)


def _extract_b3_single(value: str) -> B3Context | None:
    parts = value.split("-")
    if len(parts) == 1:  # only the sampling state
        s = _sampled(parts[0])
        return None if s is None else B3Context("", "", "", s, parts[0] == "d")
    if len(parts) > 4:
        return None
    trace_id, span_id = parts[0], parts[1]
    if not _valid_id(trace_id, (16, 32)) or not _valid_id(span_id, (16,)):
        return None
    sampled: bool | None = None
    debug = False
    if len(parts) >= 3:
        sampled = _sampled(parts[2])
        debug = parts[2] == "d"
        if sampled is None:
            return None
    parent = parts[3] if len(parts) == 4 else ""
    if parent and not _valid_id(parent, (16,)):
        return None
    return B3Context(trace_id, span_id, parent, sampled, debug)


def inject_b3(set_header: Setter, trace_id: str, span_id: str, parent_id: str,
              sampled: bool) -> None:
    """As Envoy's Zipkin tracer: the multi-header form (no parent header for a root span)."""
    set_header(B3_TRACE_ID, trace_id)
    set_header(B3_SPAN_ID, span_id)
    if parent_id:
        set_header(B3_PARENT_ID, parent_id)
    set_header(B3_SAMPLED, "1" if sampled else "0")
