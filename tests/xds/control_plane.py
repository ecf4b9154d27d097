"""A scripted xDS control plane for the tests: grpcio against the xds-protos service definitions.

It serves ADS (state of the world and delta) from a snapshot the test sets (type URL ->
(version, resources)); every request it receives is recorded per stream, so a test can assert
the ACK/NACK sequence message by message. Like go-control-plane, it answers a state-of-the-world
request whose version differs from the snapshot's with the snapshot, and sends again whenever
the snapshot changes; delta streams get the resources that changed since what the client holds.
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


def pack(msg: Any) -> any_pb2.Any:
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
        #: Set to make the next response on every stream garbage (an undecodable resource).
        self.garbage = False

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
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0)

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
                    else:
                        yield discovery_pb2.DiscoveryResponse(
                            version_info=version, type_url=t, nonce=self._next_nonce(),
                            resources=[pack(r) for _, r in sorted(chosen.items())])

    def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        return self._serve(request_iterator, context, delta=False)

    def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        return self._serve(request_iterator, context, delta=True)
