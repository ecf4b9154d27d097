"""Envoy's tracing decision: which requests are traced, and why.

Envoy keeps the decision in the request's ``x-request-id`` (a UUID): the character at index 14
(the UUID's version digit) says why the request is traced, so every proxy on the path that
shares the request id makes the same decision::

    '9' sampled     'a' service forced (x-envoy-force-trace)     'b' client (x-client-trace-id)
    '4' not traced (the plain UUID v4 digit)

Per request, with tracing configured (``ConnectionManagerUtility::mutateTracingRequestHeader``):

1. ``r`` is the request id's first 8 hex digits as an integer, modulo 10,000 (a request id that
   is not such a UUID leaves the decision alone);
2. a request not already traced becomes *client* traced when it carries ``x-client-trace-id``
   and ``tracing.client_enabled`` (default: the HCM's ``client_sampling``, 100 %) passes, else
   *forced* with ``x-envoy-force-trace``, else *sampled* when ``tracing.random_sampling``
   (default ``random_sampling``, 100 %) passes for ``r``;
3. ``tracing.global_enabled`` (default ``overall_sampling``, 100 %) failing for ``r`` makes it
   *not traced*.

A runtime key that is set replaces the config's percentage. The three percentages come from the
HCM's ``tracing``, or a route's ``tracing`` when the route has one. The decision is then read back
from the request id (:func:`decision`); health-check requests are never traced.

Sans-IO: functions of strings and a runtime, no header map; the HTTP path applies them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Decision",
    "Percent",
    "Reason",
    "SamplingConfig",
    "decision",
    "mutate_request_id",
    "request_id_integer",
    "set_trace_reason",
    "trace_reason",
]

UUID_LENGTH = 36
TRACE_BYTE_POSITION = 14


class Reason(enum.Enum):
    NOT_TRACEABLE = "not_traceable"
    HEALTH_CHECK = "health_check"
    SAMPLING = "random_sampling"
    SERVICE_FORCED = "service_forced"
    CLIENT_FORCED = "client_enabled"

    @property
    def stat(self) -> str:
        """The ``http.<stat_prefix>.tracing.<name>`` counter this reason counts."""
        return self.value


_CHAR_TO_REASON = {"9": Reason.SAMPLING, "a": Reason.SERVICE_FORCED, "b": Reason.CLIENT_FORCED}
_REASON_TO_CHAR = {Reason.SAMPLING: "9", Reason.SERVICE_FORCED: "a",
                   Reason.CLIENT_FORCED: "b", Reason.NOT_TRACEABLE: "4"}


@dataclass(frozen=True, slots=True)
class Percent:
    """An ``envoy.type.v3.FractionalPercent``: ``numerator`` out of ``denominator``."""

    numerator: int = 100
    denominator: int = 100

    def passes(self, value: int) -> bool:
        return value % self.denominator < self.numerator

    @classmethod
    def from_percent(cls, value: float) -> Percent:
        """A ``type.v3.Percent`` (0-100, a float), as Envoy converts the HCM's sampling
        fields: to a FractionalPercent over 10,000."""
        return cls(round(value * 100), 10_000)


FULL = Percent(100, 100)


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    client: Percent = FULL
    random: Percent = FULL
    overall: Percent = FULL


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason
    traced: bool


class RuntimeLike(Protocol):
    def get(self, key: str) -> Any: ...


def _feature_enabled(runtime: RuntimeLike | None, key: str, default: Percent,
                     value: int) -> bool:
    """Envoy's ``featureEnabled(key, FractionalPercent default, random value)``: the runtime's
    value when the key is set (a number is a percentage, a map a FractionalPercent)."""
    percent = default
    override = runtime.get(key) if runtime is not None else None
    if isinstance(override, dict):
        denominators = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
        percent = Percent(int(override.get("numerator", 0)),
                          denominators.get(str(override.get("denominator", "HUNDRED")), 100))
    elif isinstance(override, int | float) and not isinstance(override, bool):
        percent = Percent(int(override), 100)
    return percent.passes(value)


def request_id_integer(request_id: str) -> int | None:
    """The UUID request id's first 8 hex digits as an integer (None when it is not one)."""
    if len(request_id) < 8:
        return None
    try:
        return int(request_id[:8], 16)
    except ValueError:
        return None


def trace_reason(request_id: str | None) -> Reason:
    if request_id is None or len(request_id) != UUID_LENGTH:
        return Reason.NOT_TRACEABLE
    return _CHAR_TO_REASON.get(request_id[TRACE_BYTE_POSITION], Reason.NOT_TRACEABLE)


def set_trace_reason(request_id: str, reason: Reason) -> str:
    if len(request_id) != UUID_LENGTH or reason not in _REASON_TO_CHAR:
        return request_id
    p = TRACE_BYTE_POSITION
    return request_id[:p] + _REASON_TO_CHAR[reason] + request_id[p + 1:]


def mutate_request_id(request_id: str | None, config: SamplingConfig,
                      runtime: RuntimeLike | None, *, client_trace_id: bool,
                      force_trace: bool) -> str | None:
    """The request id with the tracing decision packed in (steps 1-3 above); unchanged when it
    is not a UUID."""
    if request_id is None:
        return None
    value = request_id_integer(request_id)
    if value is None:
        return request_id
    result = value % 10_000
    rid = request_id
    if trace_reason(rid) is Reason.NOT_TRACEABLE:
        if client_trace_id and _feature_enabled(runtime, "tracing.client_enabled",
                                                config.client, result):
            rid = set_trace_reason(rid, Reason.CLIENT_FORCED)
        elif force_trace:
            rid = set_trace_reason(rid, Reason.SERVICE_FORCED)
        elif _feature_enabled(runtime, "tracing.random_sampling", config.random, result):
            rid = set_trace_reason(rid, Reason.SAMPLING)
    if not _feature_enabled(runtime, "tracing.global_enabled", config.overall, result):
        rid = set_trace_reason(rid, Reason.NOT_TRACEABLE)
    return rid


def decision(request_id: str | None, *, health_check: bool = False) -> Decision:
    """Envoy's ``shouldTraceRequest``: the reason packed in the request id."""
    if health_check:
        return Decision(Reason.HEALTH_CHECK, False)
    reason = trace_reason(request_id)
    return Decision(reason, reason is not Reason.NOT_TRACEABLE)
