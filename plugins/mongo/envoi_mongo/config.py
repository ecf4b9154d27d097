"""The mongo_proxy config, turned once from Envoy's protobuf into a frozen runtime object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoi.config import implements

from envoi_mongo.messages import DEFAULT_MAX_MESSAGE_SIZE

implements("envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy",
           "stat_prefix", "access_log", "delay", "emit_dynamic_metadata", "commands")
# The delay message is shared with the HTTP fault filter; mongo_proxy refuses header_delay.
implements("envoy.extensions.filters.common.fault.v3.FaultDelay", "fixed_delay", "percentage")
implements("envoy.type.v3.FractionalPercent", "numerator", "denominator")

#: Envoy's default ``commands`` list, used when the config gives none.
DEFAULT_COMMANDS = ("delete", "insert", "update")

# envoy.type.v3.FractionalPercent.DenominatorType values.
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """``delay``: a fixed delay applied to this fraction of client messages.

    ``duration_ms`` is the fixed delay in whole milliseconds, as Envoy keeps it (a sub-millisecond
    delay is 0: no delay unless ``mongo.fault.fixed_delay.duration_ms`` says otherwise)."""

    duration_ms: int
    numerator: int
    denominator: int


@dataclass(frozen=True, slots=True)
class MongoProxyConfig:
    stat_prefix: str
    access_log: str = ""
    delay: FaultDelay | None = None
    emit_dynamic_metadata: bool = False
    commands: frozenset[str] = frozenset(DEFAULT_COMMANDS)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


def from_proto(msg: Any) -> MongoProxyConfig:
    """Build from ``envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy``.

    Raises ValueError naming the field, as the core's config errors expect."""
    if not msg.stat_prefix:
        raise ValueError("stat_prefix: required (a non-empty string)")
    delay: FaultDelay | None = None
    if msg.HasField("delay"):
        d = msg.delay
        if d.HasField("header_delay"):
            raise ValueError("delay.header_delay: only HTTP filters take the delay from a header")
        if not d.HasField("fixed_delay"):
            raise ValueError("delay.fixed_delay: required")
        fd = d.fixed_delay
        if fd.seconds < 0 or fd.nanos < 0:
            raise ValueError("delay.fixed_delay: must not be negative")
        duration_ms = fd.seconds * 1000 + fd.nanos // 1_000_000
        denominator = _DENOMINATORS.get(int(d.percentage.denominator))
        if denominator is None:
            raise ValueError("delay.percentage.denominator: unknown value")
        # Like Envoy, a fraction above 100 % is capped rather than rejected.
        numerator = min(int(d.percentage.numerator), denominator)
        delay = FaultDelay(duration_ms, numerator, denominator)
    commands = frozenset(msg.commands) if len(msg.commands) else frozenset(DEFAULT_COMMANDS)
    return MongoProxyConfig(
        stat_prefix=msg.stat_prefix,
        access_log=msg.access_log,
        delay=delay,
        emit_dynamic_metadata=bool(msg.emit_dynamic_metadata),
        commands=commands,
    )
