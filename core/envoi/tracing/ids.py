"""Trace context ids for requests that are not sampled, made 256 at a time.

An unsampled request still sends its upstream a ``traceparent`` with a new trace id and span id
(``00-<32 hex>-<16 hex>-00``, as Envoy's OpenTelemetry tracer does). Drawing and formatting two
ids per request costs more than the rest of its tracing; here one ``os.urandom`` makes the
values of 256 requests, hexlified once and copied into place by strided slice assignments (C
loops only). An all-zero id (invalid in W3C trace context; one chance in 2**64) is never handed
out. A forked worker starts with an empty batch, so no two processes share ids.
"""

from __future__ import annotations

import binascii
import os

__all__ = ["unsampled_traceparent"]

_BATCH = 256
_TEMPLATE = b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-00 "  # 55 bytes and a separator
_WIDTH = len(_TEMPLATE)
# Where the 48 hex digits of a trace id and span id go in a traceparent value.
_COLUMNS = list(range(3, 35)) + list(range(36, 52))
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def _make() -> list[bytes]:
    hexed = binascii.hexlify(os.urandom(24 * _BATCH))
    out = bytearray(_TEMPLATE * _BATCH)
    for src, dst in enumerate(_COLUMNS):
        out[dst::_WIDTH] = hexed[src::48]
    made = bytes(out[:-1])
    values = made.split(b" ")  # (one C loop)
    if _ZERO_SPAN in made:  # (almost never: then check each)
        values = [v for v in values if v[3:35] != _ZERO_TRACE and v[36:52] != _ZERO_SPAN]
    return values


_values: list[bytes] = []


def unsampled_traceparent() -> bytes:
    """A ``traceparent`` value with a new trace id and span id, not sampled."""
    values = _values
    if not values:
        values += _make()
    return values.pop()


os.register_at_fork(after_in_child=_values.clear)  # a child must not reuse the parent's
