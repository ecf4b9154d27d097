"""The xDS wire protocol, sans-IO: what to ask a control plane, and what to answer it.

:class:`SotwProtocol` (state of the world) and :class:`DeltaProtocol` (incremental) keep, per
resource type, the names envoi is interested in, the last version it accepted and the last nonce
it saw, and make the ``DiscoveryRequest`` / ``DeltaDiscoveryRequest`` messages: the first
requests on a (new) stream, a subscription change, an ACK (the response's ``version_info`` and
``nonce``) or a NACK (the last accepted version, the response's nonce and an ``error_detail``).
They never touch a socket or a clock; :mod:`envoi.xds.grpc_mux` drives them over gRPC.

:class:`Backoff` is Envoy's jittered exponential backoff for reconnecting (base 0.5 s, at most
30 s), with the randomness passed in so tests can fix it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from envoi.config import ensure_protos_loaded

#: google.rpc.Code.INVALID_ARGUMENT, the code of every NACK (as Envoy sends it).
INVALID_ARGUMENT = 3


def _discovery_pb2() -> Any:
    ensure_protos_loaded()
    from envoy.service.discovery.v3 import discovery_pb2

    return discovery_pb2


@dataclass
class TypeState:
    """What one resource type's subscription knows."""

    type_url: str
    #: Names asked for; empty means every resource of the type (LDS and CDS: a wildcard).
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    #: The ``version_info`` last accepted ("" before any).
    version_info: str = ""
    #: The nonce of the last response received on this stream.
    nonce: str = ""
    #: Delta: every resource held, name -> its version.
    versions: dict[str, str] = field(default_factory=dict)
    #: A request for this type was sent on the current stream.
    sent: bool = False


class _Base:
    def __init__(self, node: Any, type_order: Iterable[str] = (), *,
                 node_on_first_only: bool = False) -> None:
        self.node = node
        self.node_on_first_only = node_on_first_only
        self.order = list(type_order)
        self.types: dict[str, TypeState] = {}
        self._first = True

    def _state(self, type_url: str) -> TypeState:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = TypeState(type_url)
        return st

    def _watched(self) -> list[TypeState]:
        known = [self.types[t] for t in self.order if t in self.types]
        return known + [s for t, s in self.types.items() if t not in self.order]

    def _set_node(self, req: Any) -> None:
        if self._first or not self.node_on_first_only:
            req.node.CopyFrom(self.node)
        self._first = False

    def connected(self) -> list[Any]:
        """A stream (re)opened: the first request of every watched type, in order."""
        self._first = True
        out = []
        for st in self._watched():
            st.nonce = ""
            st.sent = False
            if st.names or st.wildcard:
                out.append(self._initial(st))
                st.sent = True
        return out

    def _initial(self, st: TypeState) -> Any:
        raise NotImplementedError


class SotwProtocol(_Base):
    """State of the world: every response holds all the (asked-for) resources of its type."""

    def watch(self, type_url: str, names: Iterable[str], *, wildcard: bool = False,
              connected: bool = True) -> Any | None:
        """Set the names wanted for ``type_url``; the request to send now, if any."""
        st = self._state(type_url)
        new = set(names)
        if new == st.names and wildcard == st.wildcard and (st.sent or not connected):
            return None
        st.names, st.wildcard = new, wildcard
        if not connected or not (new or wildcard or st.sent):
            return None
        st.sent = True
        return self._request(st, st.version_info, st.nonce)

    def _initial(self, st: TypeState) -> Any:
        return self._request(st, st.version_info, "")

    def _request(self, st: TypeState, version: str, nonce: str,
                 error: str | None = None) -> Any:
        pb = _discovery_pb2()
        req = pb.DiscoveryRequest(type_url=st.type_url, version_info=version,
                                  response_nonce=nonce, resource_names=sorted(st.names))
        self._set_node(req)
        if error is not None:
            req.error_detail.code = INVALID_ARGUMENT
            req.error_detail.message = error
        return req

    def received(self, resp: Any) -> TypeState:
        """A response arrived: remember its nonce (the answer says ACK or NACK)."""
        st = self._state(resp.type_url)
        st.nonce = resp.nonce
        return st

    def ack(self, resp: Any) -> Any:
        st = self._state(resp.type_url)
        st.version_info = resp.version_info
        return self._request(st, resp.version_info, resp.nonce)

    def nack(self, resp: Any, error: str) -> Any:
        st = self._state(resp.type_url)
        return self._request(st, st.version_info, resp.nonce, error)


class DeltaProtocol(_Base):
    """Incremental xDS: responses carry the resources that changed and the names removed."""

    def watch(self, type_url: str, names: Iterable[str], *, wildcard: bool = False,
              connected: bool = True) -> Any | None:
        st = self._state(type_url)
        new = set(names)
        if new == st.names and wildcard == st.wildcard and (st.sent or not connected):
            return None
        added, removed = new - st.names, st.names - new
        st.names, st.wildcard = new, wildcard
        for name in removed:
            st.versions.pop(name, None)
        if not connected:
            return None
        if not st.sent:
            if not (new or wildcard):
                return None
            st.sent = True
            return self._initial(st)
        pb = _discovery_pb2()
        req = pb.DeltaDiscoveryRequest(type_url=type_url,
                                       resource_names_subscribe=sorted(added),
                                       resource_names_unsubscribe=sorted(removed))
        self._set_node(req)
        return req

    def _initial(self, st: TypeState) -> Any:
        pb = _discovery_pb2()
        # A wildcard subscription names no resource on its first request (Envoy's legacy
        # wildcard); the versions held tell the server what it need not send again.
        req = pb.DeltaDiscoveryRequest(type_url=st.type_url,
                                       resource_names_subscribe=sorted(st.names))
        for name, version in sorted(st.versions.items()):
            req.initial_resource_versions[name] = version
        self._set_node(req)
        return req

    def received(self, resp: Any) -> TypeState:
        st = self._state(resp.type_url)
        st.nonce = resp.nonce
        return st

    def ack(self, resp: Any) -> Any:
        st = self._state(resp.type_url)
        for r in resp.resources:
            st.versions[r.name] = r.version
        for name in resp.removed_resources:
            st.versions.pop(name, None)
        if resp.system_version_info:
            st.version_info = resp.system_version_info
        pb = _discovery_pb2()
        req = pb.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
        self._set_node(req)
        return req

    def nack(self, resp: Any, error: str) -> Any:
        pb = _discovery_pb2()
        req = pb.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
        req.error_detail.code = INVALID_ARGUMENT
        req.error_detail.message = error
        self._set_node(req)
        return req


class Backoff:
    """Envoy's ``JitteredExponentialBackOffStrategy``: the n-th retry waits a random time in
    [0, min(base * 2**n, max)); a stream that delivered a response resets it."""

    def __init__(self, base: float = 0.5, maximum: float = 30.0,
                 rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.maximum = maximum
        self.rand = rand
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.base * (2 ** self.attempts), self.maximum)
        self.attempts += 1
        return float(ceiling * self.rand())

    def reset(self) -> None:
        self.attempts = 0
