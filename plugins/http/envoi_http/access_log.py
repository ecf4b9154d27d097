"""HTTP access-log operators that only an HTTP stream can answer, registered with the core's
format compiler (``envoi.access_log.EXTRA_OPERATORS``)."""

from __future__ import annotations

from typing import Any

from envoi.access_log import EXTRA_OPERATORS, Operator


def _si(attr: str) -> Any:
    def make(arg: str | None) -> Operator:
        def op(ctx: Any) -> Any:
            return getattr(ctx.stream_info, attr, None)

        return op

    return make


def _route_name(arg: str | None) -> Operator:
    return lambda ctx: getattr(ctx.stream_info, "route_name", None) or None


EXTRA_OPERATORS.update({
    "RESPONSE_CODE_DETAILS": _si("response_code_details"),
    "ROUTE_NAME": _route_name,
    "VIRTUAL_CLUSTER_NAME": lambda arg: (lambda ctx: None),
    "REQUEST_DURATION": _si("duration_ms"),
    "RESPONSE_DURATION": _si("duration_ms"),
})
