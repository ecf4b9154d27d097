"""xDS resource types: type URLs, decoding ``Any`` resources, and the stats of a subscription.

Every resource that arrives (from a file or a control plane) is decoded here into its Envoy v3
message and then checked, resource by resource, with the same rules as the bootstrap (Envoy's
validation rules, then the builders' own checks); a resource envoi cannot act on is refused with
its field path.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import xxhash
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from envoi.config import (
    ConfigError,
    ConfigIssue,
    ensure_protos_loaded,
    unimplemented_fields,
    validate_message,
)
from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup, TextReadout

PREFIX = "type.googleapis.com/"
LISTENER = PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = PREFIX + "envoy.config.route.v3.RouteConfiguration"
RESOURCE_WRAPPER = PREFIX + "envoy.service.discovery.v3.Resource"
#: The order Envoy's ADS asks in: clusters before their endpoints, listeners before routes.
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {LISTENER: "LDS", CLUSTER: "CDS", ENDPOINT: "EDS", ROUTE: "RDS"}


def resource_name(type_url: str, msg: Any) -> str:
    """The name a resource is known by: ``cluster_name`` for endpoints, ``name`` otherwise."""
    return str(msg.cluster_name if type_url == ENDPOINT else msg.name)


def message_class(type_url: str) -> Any:
    ensure_protos_loaded()
    if type_url == LISTENER:
        from envoy.config.listener.v3 import listener_pb2

        return listener_pb2.Listener
    if type_url == CLUSTER:
        from envoy.config.cluster.v3 import cluster_pb2

        return cluster_pb2.Cluster
    if type_url == ENDPOINT:
        from envoy.config.endpoint.v3 import endpoint_pb2

        return endpoint_pb2.ClusterLoadAssignment
    if type_url == ROUTE:
        from envoy.config.route.v3 import route_pb2

        return route_pb2.RouteConfiguration
    raise ValueError(f"not an xDS resource type envoi serves: {type_url}")


def decode(type_url: str, resource: any_pb2.Any, path: str) -> Any:
    """One resource of a response -> its message; raises ConfigError at ``path`` (the whole
    response is then refused, as in Envoy). A ``Resource`` wrapper (delta xDS, or SotW with
    names) is unwrapped. The message is not checked yet: :func:`check` does that, resource
    by resource (one bad resource does not refuse the others)."""
    if resource.type_url == RESOURCE_WRAPPER:
        from envoy.service.discovery.v3 import discovery_pb2

        wrapper = discovery_pb2.Resource()
        _unpack(resource, wrapper, path)
        resource = wrapper.resource
    if resource.type_url != type_url:
        raise ConfigError([ConfigIssue(path, f"type URL {resource.type_url or '(empty)'} "
                                       f"does not match the response's {type_url}")])
    msg = message_class(type_url)()
    _unpack(resource, msg, path)
    return msg


def _unpack(resource: any_pb2.Any, msg: Any, path: str) -> None:
    """Bytes that are no such message are a refused resource (a NACK), never a broken stream."""
    name = msg.DESCRIPTOR.full_name
    try:
        ok = resource.Unpack(msg)
    except DecodeError as exc:
        raise ConfigError([ConfigIssue(path, f"cannot decode a {name}: {exc}")]) from None
    if not ok:
        raise ConfigError([ConfigIssue(path, f"cannot decode a {name}")])


def check(msg: Any, path: str, known_type_urls: Collection[str] = ()) -> None:
    """The bootstrap's checks, for one resource: Envoy's validation rules, and every set field
    that envoi does not implement refused with its path (``envoi.config.implemented``).
    ``known_type_urls``: the config types the registered factories serve."""
    problems = unimplemented_fields(msg, path, known_type_urls=known_type_urls)
    problems += [p for p in validate_message(msg, path) if p not in problems]
    if problems:
        raise ConfigError(problems)


def version_hash(version_info: str) -> int:
    """Envoy's ``version`` gauge: the xxHash64 of ``version_info``."""
    return int(xxhash.xxh64_intdigest(version_info.encode()))


class SubscriptionStats(StatsGroup):
    """Envoy's ``SubscriptionStats`` (``listener_manager.lds.*``, ``cluster_manager.cds.*``,
    ``cluster.<name>.update_*`` for EDS, ``http.<prefix>.rds.<name>.*``)."""

    update_attempt: Counter
    update_success: Counter
    update_failure: Counter
    update_rejected: Counter
    init_fetch_timeout: Counter
    update_time: Gauge
    version: Gauge
    update_duration: Histogram
    version_text: TextReadout

    def attempt(self) -> None:
        self.update_attempt.inc()

    def success(self, version_info: str, started: float) -> None:
        self.update_success.inc()
        self.update_time.set(int(time.time() * 1000))
        self.version.set(version_hash(version_info))
        self.version_text.set(version_info)
        self.update_duration.record((time.monotonic() - started) * 1000)


class ReloadStats(StatsGroup):
    """CDS (and RDS) also count the updates that changed something (``config_reload``,
    ``config_reload_time_ms``); LDS does not, as in Envoy."""

    config_reload: Counter
    config_reload_time_ms: Gauge

    def reloaded(self) -> None:
        self.config_reload.inc()
        self.config_reload_time_ms.set(int(time.time() * 1000))


@dataclass
class Resource:
    """An accepted resource as ``/config_dump`` shows it."""

    name: str
    message: Any
    version_info: str
    last_updated: float


@dataclass
class UpdateFailure:
    """A refused resource as ``/config_dump`` shows it (Envoy's ``UpdateFailureState``)."""

    message: Any
    details: str
    last_update_attempt: float


def scope_stats(scope: Scope, reload: bool = False) -> tuple[SubscriptionStats,
                                                             ReloadStats | None]:
    return SubscriptionStats(scope), ReloadStats(scope) if reload else None
