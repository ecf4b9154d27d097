"""The xDS protocol state machines, the file watch and the backoff, without IO."""

from __future__ import annotations

from envoi.config import ensure_protos_loaded
from envoi.xds.fs import FileWatch
from envoi.xds.protocol import INVALID_ARGUMENT, Backoff, DeltaProtocol, SotwProtocol
from envoi.xds.resources import CLUSTER, ENDPOINT, LISTENER, TYPE_ORDER, version_hash

ensure_protos_loaded()
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402

NODE = base_pb2.Node(id="n1", cluster="c1")


def _resp(type_url: str, version: str, nonce: str) -> discovery_pb2.DiscoveryResponse:
    return discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce)


def test_sotw_first_requests_in_order_with_node() -> None:
    p = SotwProtocol(NODE, TYPE_ORDER)
    assert p.watch(LISTENER, [], wildcard=True, connected=False) is None
    assert p.watch(CLUSTER, [], wildcard=True, connected=False) is None
    reqs = p.connected()
    assert [r.type_url for r in reqs] == [CLUSTER, LISTENER]
    assert all(r.node.id == "n1" and r.version_info == "" and r.response_nonce == ""
               for r in reqs)


def test_sotw_ack_nack_sequence() -> None:
    p = SotwProtocol(NODE, TYPE_ORDER)
    p.watch(CLUSTER, [], wildcard=True, connected=False)
    p.connected()
    r1 = _resp(CLUSTER, "1", "a")
    p.received(r1)
    ack = p.ack(r1)
    assert (ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == ("1", "a",
                                                                                   False)
    r2 = _resp(CLUSTER, "2", "b")
    p.received(r2)
    nack = p.nack(r2, "cluster 'x': bad")
    # A NACK names the last version accepted, the response's nonce and why.
    assert (nack.version_info, nack.response_nonce) == ("1", "b")
    assert nack.error_detail.code == INVALID_ARGUMENT
    assert nack.error_detail.message == "cluster 'x': bad"
    # Reconnect: the last accepted version, no nonce.
    (again,) = p.connected()
    assert (again.version_info, again.response_nonce) == ("1", "")


def test_sotw_names_change_sends_request_with_current_nonce() -> None:
    p = SotwProtocol(NODE, TYPE_ORDER)
    p.watch(ENDPOINT, ["a"], connected=False)
    (first,) = p.connected()
    assert list(first.resource_names) == ["a"]
    r = _resp(ENDPOINT, "1", "n")
    p.received(r)
    p.ack(r)
    req = p.watch(ENDPOINT, ["a", "b"])
    assert req is not None and list(req.resource_names) == ["a", "b"]
    assert (req.version_info, req.response_nonce) == ("1", "n")
    assert p.watch(ENDPOINT, ["b", "a"]) is None  # unchanged


def test_node_on_first_message_only() -> None:
    p = SotwProtocol(NODE, TYPE_ORDER, node_on_first_only=True)
    p.watch(CLUSTER, [], wildcard=True, connected=False)
    p.watch(LISTENER, [], wildcard=True, connected=False)
    a, b = p.connected()
    assert a.node.id == "n1" and not b.HasField("node")


def test_delta_subscribe_ack_and_reconnect_versions() -> None:
    p = DeltaProtocol(NODE, TYPE_ORDER)
    p.watch(ENDPOINT, ["a"], connected=False)
    (first,) = p.connected()
    assert list(first.resource_names_subscribe) == ["a"]
    resp = discovery_pb2.DeltaDiscoveryResponse(type_url=ENDPOINT, nonce="x",
                                                system_version_info="s1")
    resp.resources.add(name="a", version="v1")
    p.received(resp)
    ack = p.ack(resp)
    assert ack.response_nonce == "x" and not ack.HasField("error_detail")
    sub = p.watch(ENDPOINT, ["b"])
    assert list(sub.resource_names_subscribe) == ["b"]
    assert list(sub.resource_names_unsubscribe) == ["a"]
    resp2 = discovery_pb2.DeltaDiscoveryResponse(type_url=ENDPOINT, nonce="y")
    resp2.resources.add(name="b", version="v7")
    p.received(resp2)
    nack = p.nack(resp2, "bad")
    assert nack.response_nonce == "y" and nack.error_detail.message == "bad"
    p.ack(resp2)
    (again,) = p.connected()
    assert dict(again.initial_resource_versions) == {"b": "v7"}
    assert list(again.resource_names_subscribe) == ["b"]


def test_delta_removed_resources_forgotten() -> None:
    p = DeltaProtocol(NODE, TYPE_ORDER)
    p.watch(CLUSTER, [], wildcard=True, connected=False)
    p.connected()
    r = discovery_pb2.DeltaDiscoveryResponse(type_url=CLUSTER, nonce="1")
    r.resources.add(name="c1", version="1")
    r.resources.add(name="c2", version="1")
    p.ack(r)
    r2 = discovery_pb2.DeltaDiscoveryResponse(type_url=CLUSTER, nonce="2",
                                              removed_resources=["c1"])
    p.ack(r2)
    (again,) = p.connected()
    assert dict(again.initial_resource_versions) == {"c2": "1"}


def test_backoff_grows_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, 30.0, rand=lambda: 0.999999)
    delays = [round(b.next_delay(), 2) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    b.reset()
    assert round(b.next_delay(), 2) == 0.5
    assert Backoff(rand=lambda: 0.0).next_delay() == 0.0


def test_file_watch_reloads_on_a_new_inode_only() -> None:
    w = FileWatch((1, 10))
    assert not w.changed((1, 10))  # written in place: same inode
    assert not w.changed(None)  # gone for a moment (mid-rename)
    assert w.changed((1, 11))  # moved into place
    assert not w.changed((1, 11))


def test_version_gauge_is_envoys_hash() -> None:
    # Envoy 1.39.3 reported version 13237225503670494420 for version_info "1".
    assert version_hash("1") == 13237225503670494420
