"""xDS over gRPC: one stream to a control plane (ADS, or one resource type's own service),
kept open, re-opened with backoff, and driven by :mod:`envoi.xds.protocol`.

The control plane is a static cluster (``envoy_grpc.cluster_name``), as in Envoy; each (re)connect
goes to a host the cluster's load balancer picks. While the stream is down the config in force
stays; on reconnect every watched type is asked again with the versions held (state of the
world: ``version_info``; delta: ``initial_resource_versions``), so an unchanged control plane
sends nothing that changes anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from envoi.config import ConfigError
from envoi.stats import Counter, Gauge, Scope, StatsGroup, TextReadout
from envoi.xds.protocol import Backoff, DeltaProtocol, SotwProtocol
from envoi.xds.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SubscriptionStats,
    decode,
)

log = logging.getLogger("envoi.xds")

#: ``handler(resources, version_info, removed)``: removed is None for a state of the world
#: (absent names are gone), else the names the control plane removed.
Handler = Callable[[list[tuple[str, Any]], str, "list[str] | None"], "str | None"]

_SERVICES = {  # non-aggregated api_type GRPC: each type's own service and method
    LISTENER: ("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners"),
    CLUSTER: ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters"),
    ENDPOINT: ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints"),
    ROUTE: ("envoy.service.route.v3.RouteDiscoveryService", "Routes"),
}


class ControlPlaneStats(StatsGroup):
    connected_state: Gauge
    pending_requests: Gauge
    rate_limit_enforced: Counter
    identifier: TextReadout


@dataclass
class Watch:
    type_url: str
    handler: Handler
    stats: SubscriptionStats | None
    #: Names asked for; wildcard for LDS/CDS.
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    on_attempt: Callable[[], None] | None = None
    on_result: Callable[[str | None, str], None] | None = None
    #: EDS, whose stats are each cluster's: count in them what happens to the whole
    #: subscription (``count(("update_attempt", "update_failure"))``, as Envoy does).
    count: Callable[[tuple[str, ...]], None] | None = None

    def counted(self, *names: str) -> None:
        if self.stats is not None:
            for name in names:
                getattr(self.stats, name).inc()
        if self.count is not None:
            self.count(names)


class GrpcMux:
    def __init__(self, *, node: Any, cluster_name: str, cluster_manager: Any, scope: Scope,
                 delta: bool, aggregated: bool, type_order: tuple[str, ...],
                 plugin_type_urls: frozenset[str] = frozenset(),
                 node_on_first_only: bool = False) -> None:
        self.cluster_name = cluster_name
        self.cm = cluster_manager
        self.delta = delta
        self.aggregated = aggregated
        self.plugin_type_urls = plugin_type_urls
        self.proto: SotwProtocol | DeltaProtocol = (
            DeltaProtocol(node, type_order, node_on_first_only=node_on_first_only) if delta
            else SotwProtocol(node, type_order, node_on_first_only=node_on_first_only))
        self.stats = ControlPlaneStats(scope)
        self.watches: dict[str, Watch] = {}
        self.backoff = Backoff()
        self._queue: asyncio.Queue[Any] | None = None
        self.connected = False
        #: Delta: the versions of the resources of the response being applied.
        self.resource_versions: dict[str, str] = {}

    # -- subscriptions --------------------------------------------------------------------------

    def watch(self, w: Watch) -> None:
        self.watches[w.type_url] = w
        w.counted("update_attempt")  # Envoy counts the subscription's start as an attempt
        self._send(self.proto.watch(w.type_url, w.names, wildcard=w.wildcard,
                                    connected=self._queue is not None))

    def set_names(self, type_url: str, names: frozenset[str]) -> None:
        w = self.watches[type_url]
        w.names = names
        self._send(self.proto.watch(type_url, names, wildcard=w.wildcard,
                                    connected=self._queue is not None))

    def _send(self, req: Any | None) -> None:
        if req is not None and self._queue is not None:
            self._queue.put_nowait(req)

    # -- the stream ------------------------------------------------------------------------------

    def _target(self) -> str:
        cluster = self.cm.get(self.cluster_name)
        host = cluster.choose_host() if cluster is not None else None
        if host is None:
            raise ConnectionError(f"control plane cluster '{self.cluster_name}' has no host")
        address = f"[{host.address}]" if ":" in host.address else host.address
        return f"{address}:{host.port}"

    def _method(self, channel: grpc.aio.Channel) -> Any:
        from envoy.service.discovery.v3 import discovery_pb2

        if self.aggregated:
            service = "envoy.service.discovery.v3.AggregatedDiscoveryService"
            method = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
        else:
            (type_url,) = self.watches  # one type per non-aggregated stream
            service, kind = _SERVICES[type_url]
            method = f"Delta{kind}" if self.delta else f"Stream{kind}"
        req, resp = ((discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse)
                     if self.delta else
                     (discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse))
        return channel.stream_stream(f"/{service}/{method}",
                                     request_serializer=req.SerializeToString,
                                     response_deserializer=resp.FromString)

    async def run(self) -> None:
        while True:
            try:
                await self._stream_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream broke: keep the config, try again later
                log.warning("xDS stream to '%s' closed: %s", self.cluster_name,
                            _describe(exc))
            self._closed()
            for w in self.watches.values():  # a connection failure, to every subscription
                w.counted("update_attempt", "update_failure")
            await asyncio.sleep(self.backoff.next_delay())

    def _closed(self) -> None:
        self._queue = None
        self.connected = False
        self.stats.connected_state.set(0)

    async def _stream_once(self) -> None:
        target = self._target()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        async with grpc.aio.insecure_channel(target) as channel:
            self._queue = queue
            for req in self.proto.connected():
                queue.put_nowait(req)

            async def requests() -> AsyncIterator[Any]:
                while True:
                    yield await queue.get()

            call = self._method(channel)(requests())
            async for resp in call:
                if not self.connected:
                    self.connected = True
                    self.stats.connected_state.set(1)
                    self.backoff.reset()
                if resp.HasField("control_plane"):
                    self.stats.identifier.set(resp.control_plane.identifier)
                queue.put_nowait(self._on_response(resp))
        raise ConnectionError("the control plane closed the stream")

    def _on_response(self, resp: Any) -> Any:
        """Apply one response; the ACK or NACK to send."""
        started = time.monotonic()
        self.proto.received(resp)
        w = self.watches.get(resp.type_url)
        if w is None:
            return self.proto.nack(resp, f"envoi did not ask for {resp.type_url}")
        if w.stats is not None:
            w.stats.update_attempt.inc()
        if w.on_attempt is not None:
            w.on_attempt()
        version = resp.system_version_info if self.delta else resp.version_info
        decoded = False
        try:
            resources = []
            removed: list[str] | None = None
            if self.delta:
                for i, r in enumerate(resp.resources):
                    msg = decode(resp.type_url, r.resource, f"resources[{i}]")
                    resources.append((r.name, msg))
                removed = list(resp.removed_resources)
                # Delta: each resource has its own version (/config_dump shows it).
                self.resource_versions = {r.name: r.version for r in resp.resources}
            else:
                from envoi.xds.resources import resource_name

                for i, a in enumerate(resp.resources):
                    msg = decode(resp.type_url, a, f"resources[{i}]")
                    resources.append((resource_name(resp.type_url, msg), msg))
            decoded = True
            error = w.handler(resources, version, removed)
        except ConfigError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: NACK it rather than break the stream in a loop
            log.exception("applying a %s response failed", resp.type_url)
            error = f"envoi failed to apply the update: {type(exc).__name__}: {exc}"
        finally:
            self.resource_versions = {}
        if not decoded and error is not None and w.count is not None:
            # Nothing could be decoded, so no cluster's handler saw it: each counts it.
            w.count(("update_attempt", "update_rejected"))
        if error is not None:
            if w.stats is not None:
                w.stats.update_rejected.inc()
                if self.delta and decoded:
                    # Envoy's delta subscription counts the attempt when the update arrives
                    # and again when it is refused (state of the world: once, either way).
                    w.stats.update_attempt.inc()
            log.warning("%s update rejected (nonce %s): %s", resp.type_url.rsplit(".", 1)[-1],
                        resp.nonce, error)
            if w.on_result is not None:
                w.on_result(error, "")
            return self.proto.nack(resp, error)
        if w.stats is not None:
            w.stats.success(version, started)
        if w.on_result is not None:
            w.on_result(None, version)
        return self.proto.ack(resp)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
