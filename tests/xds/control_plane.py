"""A scripted xDS control plane for the tests: grpcio against the xds-protos service definitions.

It serves ADS (state of the world and delta) from a snapshot the test sets (type URL ->
(version, resources)); every request it receives is recorded per stream, so a test can assert
the ACK/NACK sequence message by message. Like go-control-plane, it answers a state-of-the-world
request whose version differs from the snapshot's with the snapshot, and sends again whenever
the snapshot changes; delta streams get the resources that changed since what the client holds.

Bad behaviour on demand: ``garbage`` (the next responses carry an undecodable resource),
``garbage_wire`` (responses are not protobuf at all), :meth:`disconnect` (every open stream is
cut, at once or right after its next response) and :meth:`stop` / :meth:`start` again on the
same port (the control plane goes away and comes back). A resource given as an ``Any`` is sent
as it is (an unknown ``@type``, say).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoi.config import ensure_protos_loaded

ensure_protos_loaded()
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402

ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"
#: Bytes that are no protobuf message (field 0x1fffffff with wire type 7).
GARBAGE = b"\xff\xff\xff\xff\x0f"


PER_TYPE = (("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners"),
            ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters"),
            ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints"),
            ("envoy.service.route.v3.RouteDiscoveryService", "Routes"))


class _Handlers(grpc.GenericRpcHandler):
    """Methods by full name: ADS's, and each type's own service's."""

    def __init__(self, by_name: dict[str, grpc.RpcMethodHandler]) -> None:
        self.by_name = by_name

    def service(self, details: Any) -> grpc.RpcMethodHandler | None:
        method = details.method.lstrip("/")
        if method.startswith(ADS + "/"):
            method = method[len(ADS) + 1:]
        return self.by_name.get(method)


def pack(msg: Any) -> any_pb2.Any:
    if isinstance(msg, any_pb2.Any):
        return msg
    a = any_pb2.Any()
    a.Pack(msg)
    return a


@dataclass
class Stream:
    node_id: str
    delta: bool
    requests: list[Any] = field(default_factory=list)


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.snapshot: dict[str, tuple[str, dict[str, Any]]] = {}
        self.streams: list[Stream] = []
        self.nonce = 0
        self.server: grpc.Server | None = None
        self.port = 0
        #: Set to make the responses carry an undecodable resource.
        self.garbage = False
        #: Set to make the responses bytes that are no DiscoveryResponse at all.
        self.garbage_wire = False
        #: Bumped by disconnect(): streams opened before it end.
        self.generation = 0
        self.cut_after_response = False
        self.disconnects = 0

    # -- the test's side ---------------------------------------------------------------------

    def set(self, type_url: str, version: str, resources: dict[str, Any],
            node: str = "") -> None:
        """The resources of a type, for every node or (``node``) for one node only."""
        with self.lock:
            self.snapshot[node + "|" + type_url] = (version, dict(resources))
            self.lock.notify_all()

    def _snap(self, node: str, type_url: str) -> tuple[str, dict[str, Any]] | None:
        return self.snapshot.get(node + "|" + type_url) or self.snapshot.get("|" + type_url)

    def start(self) -> ControlPlane:
        """Serve (again: on the port it had before)."""
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((self._handlers(),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0)
            self.server = None

    def disconnect(self, *, after_next_response: bool = False) -> None:
        """Cut every open stream: now, or each right after the next response it sends (before
        the client can answer it)."""
        with self.lock:
            self.cut_after_response = after_next_response
            self.generation += 1
            self.lock.notify_all()

    def streams_of(self, node_id: str) -> list[Stream]:
        with self.lock:
            return [s for s in self.streams if s.node_id == node_id]

    def _serialize(self, msg: Any) -> bytes:
        return GARBAGE if self.garbage_wire else bytes(msg.SerializeToString())

    def _handlers(self) -> grpc.GenericRpcHandler:
        def handler(fn: Any, req: Any) -> grpc.RpcMethodHandler:
            return grpc.stream_stream_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=self._serialize)

        handlers = {
            "StreamAggregatedResources": handler(self.StreamAggregatedResources,
                                                 discovery_pb2.DiscoveryRequest),
            "DeltaAggregatedResources": handler(self.DeltaAggregatedResources,
                                                discovery_pb2.DeltaDiscoveryRequest),
        }
        # Each type's own service (api_type GRPC / DELTA_GRPC without ADS): the same streams.
        for service, kind in PER_TYPE:
            handlers[f"{service}/Stream{kind}"] = handlers["StreamAggregatedResources"]
            handlers[f"{service}/Delta{kind}"] = handlers["DeltaAggregatedResources"]
        return _Handlers(handlers)

    def requests(self, node_id: str) -> list[Any]:
        with self.lock:
            return [r for s in self.streams if s.node_id == node_id for r in s.requests]

    # -- the service -------------------------------------------------------------------------

    def _next_nonce(self) -> str:
        self.nonce += 1
        return str(self.nonce)

    def _reader(self, it: Iterator[Any], q: queue.Queue[Any]) -> None:
        try:
            for req in it:
                q.put(req)
        except Exception:
            pass
        q.put(None)

    def _serve(self, request_iterator: Iterator[Any], context: Any,
               delta: bool) -> Iterator[Any]:
        q: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._reader, args=(request_iterator, q), daemon=True).start()
        stream: Stream | None = None
        generation = self.generation
        # What this stream was sent / holds, per type.
        sent: dict[str, str] = {}
        names: dict[str, set[str]] = {}
        held: dict[str, dict[str, str]] = {}
        while context.is_active():
            try:
                req = q.get(timeout=0.05)
            except queue.Empty:
                req = False
            if req is None:
                return
            with self.lock:
                if self.generation != generation and not self.cut_after_response:
                    self._cut(context)
                if req is not False:
                    if stream is None:
                        stream = Stream(req.node.id, delta)
                        self.streams.append(stream)
                    stream.requests.append(req)
                    t = req.type_url
                    if delta:
                        ns = names.setdefault(t, set())
                        ns.update(req.resource_names_subscribe)
                        ns.difference_update(req.resource_names_unsubscribe)
                        if req.initial_resource_versions:
                            held[t] = dict(req.initial_resource_versions)
                        if not req.response_nonce:
                            sent.pop(t, None)
                    else:
                        # The first request of a type, or other names: send the snapshot. An
                        # ACK or a NACK: nothing until the snapshot changes.
                        if not req.response_nonce or set(req.resource_names) != names.get(t):
                            sent.pop(t, None)
                        names[t] = set(req.resource_names)
                for t in list(names):
                    snap = self._snap(stream.node_id if stream else "", t)
                    if snap is None or sent.get(t) == snap[0]:
                        continue
                    version, resources = snap
                    sent[t] = version
                    want = names[t]
                    chosen = {n: r for n, r in resources.items() if not want or n in want}
                    if self.garbage:
                        bad = any_pb2.Any(type_url=t, value=b"\xff\xff\xff")
                        yield discovery_pb2.DiscoveryResponse(
                            version_info=version, type_url=t, nonce=self._next_nonce(),
                            resources=[bad])
                        self._maybe_cut(context, generation)
                        continue
                    if delta:
                        have = held.setdefault(t, {})
                        resp = discovery_pb2.DeltaDiscoveryResponse(
                            system_version_info=version, type_url=t, nonce=self._next_nonce())
                        for n, r in sorted(chosen.items()):
                            if have.get(n) != version + ":" + r.SerializeToString().hex()[:16]:
                                v = version + ":" + r.SerializeToString().hex()[:16]
                                resp.resources.add(name=n, version=v, resource=pack(r))
                                have[n] = v
                        for n in sorted(set(have) - set(chosen)):
                            resp.removed_resources.append(n)
                            del have[n]
                        yield resp
                        self._maybe_cut(context, generation)
                    else:
                        yield discovery_pb2.DiscoveryResponse(
                            version_info=version, type_url=t, nonce=self._next_nonce(),
                            resources=[pack(r) for _, r in sorted(chosen.items())])
                        self._maybe_cut(context, generation)

    def _maybe_cut(self, context: Any, generation: int) -> None:
        if self.generation != generation and self.cut_after_response:
            self._cut(context)

    def _cut(self, context: Any) -> None:
        self.disconnects += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "control plane going away")

    def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        return self._serve(request_iterator, context, delta=False)

    def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        return self._serve(request_iterator, context, delta=True)
