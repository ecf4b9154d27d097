"""HTTP access-log operators that only an HTTP stream can answer, registered with the core's
format compiler through the ``envoi_access_log_operators`` hook (see ``plugin.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoi.stream_info import LogContext, Operator, OperatorFactory, Verbatim


def _si(attr: str) -> OperatorFactory:
    def make(arg: str | None) -> Operator:
        def op(ctx: LogContext) -> Any:
            return getattr(ctx.stream_info, attr, None)  # an HttpStreamInfo field; TCP has none

        return op

    return make


def _route_name(arg: str | None) -> Operator:
    return lambda ctx: getattr(ctx.stream_info, "route_name", None) or None


def _none(arg: str | None) -> Operator:
    return lambda ctx: None


def _local_reply_body(arg: str | None) -> Operator:
    def op(ctx: LogContext) -> Verbatim:
        # A reply being made (hcm/local_reply.py) carries its body; an access log reads the one
        # the stream sent, if it answered locally; else it is empty, as in Envoy.
        body = getattr(ctx, "local_reply_body", None)
        if body is None:
            body = ctx.stream_info.extra.get("local_reply_body", "")
        return Verbatim(body)

    return op


OPERATORS: Mapping[str, OperatorFactory] = {
    "RESPONSE_CODE_DETAILS": _si("response_code_details"),
    "ROUTE_NAME": _route_name,
    "LOCAL_REPLY_BODY": _local_reply_body,
    "VIRTUAL_CLUSTER_NAME": _none,
    "REQUEST_DURATION": _si("duration_ms"),
    "RESPONSE_DURATION": _si("duration_ms"),
}
