"""Envoy's ``AccessLogFilter`` (envoy.config.accesslog.v3): a predicate over one finished (or
locally answered) HTTP request, compiled once at config time.

Used by the HCM's ``local_reply_config`` mappers (``hcm/local_reply.py``). The kinds envoi
evaluates as Envoy does: ``status_code_filter``, ``duration_filter``, ``not_health_check_filter``,
``header_filter``, ``response_flag_filter``, ``grpc_status_filter``, ``and_filter`` and
``or_filter``. ``traceable_filter`` (envoi has no tracing decision yet), ``runtime_filter``
(Envoy samples by the x-request-id's hash), ``extension_filter``, ``metadata_filter`` and
``log_type_filter`` are refused with their path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from envoi.config import NOT_IMPLEMENTED, ConfigError, ConfigIssue, implements
from envoi.http.grpc import http_to_grpc_status, parse_grpc_status
from envoi.http.headers import HeaderMap
from envoi.stream_info import StreamInfo

from envoi_http.router.matchers import header_matcher

_A = "envoy.config.accesslog.v3."
implements(_A + "AccessLogFilter",
           "status_code_filter", "duration_filter", "not_health_check_filter", "and_filter",
           "or_filter", "header_filter", "response_flag_filter", "grpc_status_filter")
implements(_A + "StatusCodeFilter", "comparison")
implements(_A + "DurationFilter", "comparison")
implements(_A + "ComparisonFilter", "op", "value")
implements("envoy.config.core.v3.RuntimeUInt32", "default_value", "runtime_key")
implements(_A + "AndFilter", "filters")
implements(_A + "OrFilter", "filters")
implements(_A + "HeaderFilter", "header")
implements(_A + "ResponseFlagFilter", "flags")
implements(_A + "GrpcStatusFilter", "statuses", "exclude")

GRPC_UNKNOWN = 2
GRPC_INVALID = -1  # a grpc-status that is no known code (Envoy's InvalidCode)


class FilterContext(Protocol):
    """What a filter reads: the request's headers, the response's, and the stream info."""

    @property
    def stream_info(self) -> StreamInfo: ...
    @property
    def request_headers(self) -> HeaderMap: ...
    @property
    def response_code(self) -> int: ...
    def response_header(self, name: str) -> str | None: ...
    def response_trailer(self, name: str) -> str | None: ...


LogFilter = Callable[[FilterContext], bool]


def build_filter(msg: Any, path: str, runtime: Any) -> LogFilter:
    """One ``AccessLogFilter`` message to its predicate; ConfigError names what is wrong."""
    kind = msg.WhichOneof("filter_specifier")
    if kind is None:
        raise ConfigError([ConfigIssue(path, "value is required (one of the filter kinds)")])
    sub = getattr(msg, kind)
    spath = f"{path}.{kind}"
    if kind in ("status_code_filter", "duration_filter"):
        cmp = _comparison(sub.comparison, spath + ".comparison", runtime)
        if kind == "status_code_filter":
            return lambda ctx: cmp(ctx.response_code)
        return lambda ctx: cmp(ctx.stream_info.duration_ms)
    if kind == "not_health_check_filter":
        return lambda ctx: not ctx.stream_info.extra.get("health_check")
    if kind in ("and_filter", "or_filter"):
        if len(sub.filters) < 2:
            raise ConfigError([ConfigIssue(spath + ".filters",
                                           "value must contain at least 2 item(s)")])
        issues: list[ConfigIssue] = []
        parts: list[LogFilter] = []
        for i, f in enumerate(sub.filters):
            try:
                parts.append(build_filter(f, f"{spath}.filters[{i}]", runtime))
            except ConfigError as exc:
                issues.extend(exc.errors)
        if issues:
            raise ConfigError(issues)
        frozen = tuple(parts)
        if kind == "and_filter":
            return lambda ctx: all(p(ctx) for p in frozen)
        return lambda ctx: any(p(ctx) for p in frozen)
    if kind == "header_filter":
        if not sub.HasField("header"):
            raise ConfigError([ConfigIssue(spath + ".header", "value is required")])
        match = header_matcher(sub.header, spath + ".header")
        return lambda ctx: match(ctx.request_headers)
    if kind == "response_flag_filter":
        wanted = frozenset(sub.flags)
        if not wanted:
            return lambda ctx: bool(ctx.stream_info.response_flags)
        return lambda ctx: any(f in wanted for f in ctx.stream_info.response_flags)
    if kind == "grpc_status_filter":
        statuses = frozenset(int(s) for s in sub.statuses)
        exclude = sub.exclude

        def grpc(ctx: FilterContext) -> bool:
            found = _grpc_status(ctx) in statuses
            return not found if exclude else found

        return grpc
    raise ConfigError([ConfigIssue(spath, NOT_IMPLEMENTED)])


def _comparison(c: Any, path: str, runtime: Any) -> Callable[[int], bool]:
    """Envoy's ComparisonFilter: the value is the runtime key's whole number when it has one,
    else ``default_value``; ``op`` is EQ, GE, LE or NE."""
    if not c.HasField("value"):
        raise ConfigError([ConfigIssue(path + ".value", "value is required")])
    default = int(c.value.default_value)
    key = c.value.runtime_key
    op = c.DESCRIPTOR.fields_by_name["op"].enum_type.values_by_number[c.op].name

    def value() -> int:
        if key and runtime is not None:
            return int(runtime.get_integer(key, default))
        return default

    if op == "EQ":
        return lambda v: v == value()
    if op == "GE":
        return lambda v: v >= value()
    if op == "LE":
        return lambda v: v <= value()
    return lambda v: v != value()


def _grpc_status(ctx: FilterContext) -> int:
    """Envoy's order: the trailers' grpc-status, the headers', else the HTTP status mapped."""
    for raw in (ctx.response_trailer("grpc-status"), ctx.response_header("grpc-status")):
        if raw is not None:
            code = parse_grpc_status(raw.encode("latin-1"))
            if code is None or code > 16:
                return GRPC_INVALID
            return code
    if ctx.response_code:
        return http_to_grpc_status(ctx.response_code)
    return GRPC_UNKNOWN
