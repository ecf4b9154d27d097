"""The parts of a route, virtual host or route configuration that say what to do to a request
besides choosing its cluster: header mutations (``*_headers_to_add``/``*_headers_to_remove``),
the retry policy and ``max_stream_duration``, built once at config time into frozen objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from envoi.config import ConfigError, ConfigIssue, duration_seconds, implements
from envoi.extensions import FactoryContext
from envoi.http.headers import HeaderMap

_R = "envoy.config.route.v3."

implements(_R + "RouteAction.MaxStreamDuration",
           "max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset")


implements(_R + "RetryPolicy",
           "retry_on", "num_retries", "per_try_timeout", "retry_back_off",
           "retriable_status_codes")
implements(_R + "RetryPolicy.RetryBackOff", "base_interval", "max_interval")


implements("envoy.config.core.v3.HeaderValueOption",
           "header", "append", "append_action", "keep_empty_value")
implements("envoy.config.core.v3.HeaderValue", "key", "value")


APPEND, ADD_IF_ABSENT, OVERWRITE_OR_ADD, OVERWRITE_IF_EXISTS = range(4)


@dataclass(frozen=True)
class HeaderMutations:
    # (name, value or formatter, append action, keep_empty_value)
    add: tuple[tuple[bytes, bytes | Callable[[Any], str], int, bool], ...] = ()
    remove: tuple[bytes, ...] = ()

    def apply(self, h: HeaderMap, ctx: Any) -> None:
        for name in self.remove:
            h.remove_bytes(name)
        for name, value, action, keep_empty in self.add:
            v = value if isinstance(value, bytes) else value(ctx).encode("latin-1")
            if not v and not keep_empty:
                continue  # Envoy drops a header whose value is empty unless keep_empty_value
            if action == APPEND:
                if name[:1] == b":":
                    h.set_bytes(name, v)
                else:
                    h.add_bytes(name, v)
            elif action == OVERWRITE_OR_ADD:
                h.set_bytes(name, v)
            elif action == ADD_IF_ABSENT:
                if h.get_bytes(name) is None:
                    h.set_bytes(name, v)
            elif h.get_bytes(name) is not None:
                h.set_bytes(name, v)

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


#: The gRPC ``retry_on`` conditions (also ``x-envoy-retry-grpc-on``) and the ``grpc-status``
#: each retries on, when the response headers carry it (a trailers-only answer), as Envoy's
#: ``RetryStateImpl::wouldRetryFromHeaders``.
GRPC_RETRY_ON = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8,
                 "internal": 13, "unavailable": 14}


@dataclass(frozen=True)
class RetryPolicy:
    retry_on: frozenset[str]
    num_retries: int
    per_try_timeout: float
    base_interval: float
    max_interval: float
    retriable_status_codes: frozenset[int]
    # the grpc-status codes retry_on's gRPC conditions name (worked out from retry_on)
    grpc_codes: frozenset[int] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "grpc_codes", frozenset(
            code for name, code in GRPC_RETRY_ON.items() if name in self.retry_on))


@dataclass(frozen=True)
class MaxStreamDuration:
    """A route's ``max_stream_duration`` in milliseconds (None: the field is unset), which the
    connection manager acts on (hcm/duration.py), as Envoy's "new timeouts" of the route."""

    max_stream_duration: int | None = None
    grpc_timeout_header_max: int | None = None
    grpc_timeout_header_offset: int | None = None


def duration_ms(d: Any) -> int:
    """A Duration in whole milliseconds (Envoy's ``PROTOBUF_GET_OPTIONAL_MS``)."""
    return int(d.seconds) * 1000 + int(d.nanos) // 1_000_000


def max_stream_duration(m: Any) -> MaxStreamDuration:
    return MaxStreamDuration(*(duration_ms(getattr(m, f)) if m.HasField(f) else None for f in (
        "max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset")))


_ACTIONS = {"APPEND_IF_EXISTS_OR_ADD": APPEND, "ADD_IF_ABSENT": ADD_IF_ABSENT,
            "OVERWRITE_IF_EXISTS_OR_ADD": OVERWRITE_OR_ADD,
            "OVERWRITE_IF_EXISTS": OVERWRITE_IF_EXISTS}


def route_mutations(msg: Any, which: str, path: str, ctx: FactoryContext) -> HeaderMutations:
    """``<which>_headers_to_add`` / ``<which>_headers_to_remove`` of a route, virtual host or
    route config."""
    return header_mutations(getattr(msg, f"{which}_headers_to_add"),
                            getattr(msg, f"{which}_headers_to_remove"),
                            f"{path}.{which}_headers_to_add", f"{path}.{which}_headers_to_remove",
                            ctx)


def header_mutations(add: Any, remove: Any, path_add: str, path_remove: str,
                     ctx: FactoryContext) -> HeaderMutations:
    """A list of ``HeaderValueOption`` to add (values may hold command operators) and of names
    to remove. As in Envoy, a pseudo-header or ``host`` may be neither added nor removed."""
    issues = []
    for i, opt in enumerate(add):
        if not _modifiable(opt.header.key):
            issues.append(ConfigIssue(f"{path_add}[{i}].header.key",
                                      f"{opt.header.key!r}: :-prefixed or host headers may not "
                                      "be modified"))
    for i, name in enumerate(remove):
        if not _modifiable(name):
            issues.append(ConfigIssue(f"{path_remove}[{i}]",
                                      f"{name!r}: :-prefixed or host headers may not be "
                                      "removed"))
    out = []
    for i, opt in enumerate(add):
        action_name = opt.DESCRIPTOR.fields_by_name["append_action"].enum_type.values_by_number[
            opt.append_action].name
        action = _ACTIONS[action_name]
        if opt.HasField("append"):
            action = APPEND if opt.append.value else OVERWRITE_OR_ADD
        value_s = opt.header.value
        value: bytes | Callable[[Any], str]
        if "%" in value_s:
            value = collect(issues, b"", ctx.format_string, value_s,
                             f"{path_add}[{i}].header.value")
        else:
            value = value_s.encode()
        out.append((opt.header.key.lower().encode(), value, action, opt.keep_empty_value))
    if issues:
        raise ConfigError(issues)
    return HeaderMutations(tuple(out), tuple(n.lower().encode() for n in remove))


def _modifiable(name: str) -> bool:
    return not name.startswith(":") and name.lower() != "host"


#: The ``retry_on`` conditions the router acts on (router/filter.py ``_maybe_retry``); any other
#: (``refused-stream``, ``retriable-headers``, ``http3-post-connect-failure``...) is a config
#: error rather than a condition silently never met.
RETRY_ON_HTTP = frozenset(("5xx", "gateway-error", "reset", "connect-failure",
                           "reset-before-request", "retriable-4xx", "retriable-status-codes"))
RETRY_ON_IMPLEMENTED = RETRY_ON_HTTP | frozenset(GRPC_RETRY_ON)


def retry_policy(rp: Any, path: str = "retry_policy") -> RetryPolicy:
    conditions = [x.strip() for x in rp.retry_on.split(",") if x.strip()]
    unknown = [c for c in conditions if c not in RETRY_ON_IMPLEMENTED]
    if unknown:
        raise ConfigError([ConfigIssue(f"{path}.retry_on", f"{', '.join(unknown)}: not "
                                       "implemented by envoi (it retries on "
                                       f"{', '.join(sorted(RETRY_ON_IMPLEMENTED))})")])
    base = duration_seconds(rp.retry_back_off.base_interval) if rp.HasField(
        "retry_back_off") and rp.retry_back_off.HasField("base_interval") else 0.025
    mx = duration_seconds(rp.retry_back_off.max_interval) if rp.HasField(
        "retry_back_off") and rp.retry_back_off.HasField("max_interval") else base * 10
    return RetryPolicy(
        retry_on=frozenset(conditions),
        num_retries=rp.num_retries.value if rp.HasField("num_retries") else 1,
        per_try_timeout=duration_seconds(rp.per_try_timeout) if rp.HasField(
            "per_try_timeout") else 0.0,
        base_interval=base, max_interval=mx,
        retriable_status_codes=frozenset(rp.retriable_status_codes),
    )


_T = TypeVar("_T")


def collect(issues: list[ConfigIssue], fallback: Any, fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``, or ``fallback`` with its ConfigError's issues added to ``issues``: one
    bad piece of a route must not hide the problems in the rest of the config."""
    try:
        return fn(*args)
    except ConfigError as exc:
        issues.extend(exc.errors)
        return fallback  # type: ignore[no-any-return]
