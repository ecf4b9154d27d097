"""A control plane that misbehaves, driving envoi and the real Envoy 1.39.3 together: resources of
an unknown ``@type``, undecodable resources, bytes that are no protobuf message at all, streams cut
mid-conversation, the control plane going away and coming back, a listener moved to a port
already in use, and endpoints that never come (``initial_fetch_timeout``). Each time both
proxies keep the config they had (and keep serving it), answer as Envoy does (ACK, NACK or a new
stream), and take the next good update."""

from __future__ import annotations

import socket
from pathlib import Path

from control_plane import ControlPlane
from envoi.testing import wait_for
from google.protobuf import any_pb2
from http_peers import EchoServer
from xds_pair import (
    CDS,
    EDS,
    LDS,
    Pair,
    acks,
    ads_source,
    assignment,
    cluster,
    listener,
)


def _start_v1(cp: ControlPlane, pair: Pair, port: int) -> None:
    cp.set(CDS, "1", {"svc": cluster("svc")})
    cp.set(EDS, "1", {"svc": assignment("svc", [port])})
    pair.set_listeners("1", lambda p: listener(p, "svc"))


def _nacks(pair: Pair, node: str) -> list[str]:
    return [r.error_detail.message for r in pair.requests(node) if r.HasField("error_detail")]


def test_unknown_type_urls(tmp_path: Path, cp: ControlPlane) -> None:
    """A resource whose ``@type`` is not the response's, and a listener whose filter config has
    an ``@type`` no one knows: both NACKed, the config in force keeps serving."""
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp)
        _start_v1(cp, pair, a.port)
        with pair:
            pair.wait_get(a.port)
            # v2 (CDS): one resource is a RouteConfiguration, not a Cluster.
            stray = any_pb2.Any(type_url="type.googleapis.com/envoy.config.route.v3."
                                "RouteConfiguration", value=b"")
            cp.set(CDS, "2", {"svc": cluster("svc"), "stray": stray})
            pair.wait_stat("cluster_manager.cds.update_rejected", 1)
            for node in pair.nodes:
                assert pair.dump(node)["clusters"] == [("svc", "1")], node
            # v2 (LDS): the router's typed_config has an @type nobody registered.
            def unknown_filter(p: int) -> object:
                lst = listener(p, "svc")
                hcm_any = lst.filter_chains[0].filters[0].typed_config
                from envoy.extensions.filters.network.http_connection_manager.v3 import (
                    http_connection_manager_pb2 as hcm_pb2,
                )
                hcm = hcm_pb2.HttpConnectionManager()
                hcm_any.Unpack(hcm)
                hcm.http_filters[0].typed_config.CopyFrom(any_pb2.Any(
                    type_url="type.googleapis.com/acme.filters.NoSuchFilter", value=b"\x08\x01"))
                hcm_any.Pack(hcm)
                return lst
            pair.set_listeners("2", unknown_filter)
            pair.wait_stat("listener_manager.lds.update_rejected", 1)
            for node, _ in pair.items():
                st = pair.stats(node)
                assert st["cluster_manager.cds.version_text"] == "1", node
                assert st["listener_manager.lds.version_text"] == "1", node
                assert st["cluster_manager.cds.update_success"] == 1, node
            # envoi shows the refused listener as Envoy does (error_state); Envoy's own
            # /config_dump cannot render it (the @type is unknown to it) and fails whole.
            (entry,) = pair.envoi_dump_json()["ListenersConfigDump"]["dynamic_listeners"]
            assert entry["active_state"]["version_info"] == "1"
            assert "acme.filters.NoSuchFilter" in entry["error_state"]["details"]
            assert "could not find @type 'type.googleapis.com/acme.filters.NoSuchFilter'" in \
                pair.procs["envoy"].get("/config_dump")
            nacks = _nacks(pair, "envoi")
            assert any("RouteConfiguration" in m and "Cluster" in m for m in nacks), nacks
            assert any("acme.filters.NoSuchFilter" in m for m in nacks), nacks
            pair.wait_get(a.port)
            # Both NACK the same responses with the version they hold.
            for node in ("envoi", "envoy"):
                assert acks(pair.requests(node), "Cluster") == [("1", False), ("1", True)], node
                assert acks(pair.requests(node), "Listener") == [("1", False), ("1", True)], node
            # v3: good again.
            cp.set(CDS, "3", {"svc": cluster("svc")})
            cp.set(EDS, "3", {"svc": assignment("svc", [b.port])})
            pair.set_listeners("3", lambda p: listener(p, "svc"))
            pair.wait_get(b.port)
            pair.wait_stat("listener_manager.lds.version_text", "3")


def test_garbage_resources_and_garbage_bytes(tmp_path: Path, cp: ControlPlane) -> None:
    """An undecodable resource is NACKed; a response that is no protobuf message breaks the
    stream (a new one is opened, with backoff); either way the config in force stays."""
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp)
        _start_v1(cp, pair, a.port)
        with pair:
            pair.wait_get(a.port)
            cp.garbage = True
            cp.set(EDS, "2", {"svc": assignment("svc", [b.port])})
            pair.wait_stat("cluster.svc.update_rejected", 1)
            for node in ("envoi", "envoy"):
                assert acks(pair.requests(node), "ClusterLoadAssignment")[-1] == ("1", True)
            pair.wait_get(a.port)
            cp.garbage = False

            streams = {n: len(cp.streams_of(n)) for n in pair.nodes}
            cp.garbage_wire = True
            cp.set(EDS, "3", {"svc": assignment("svc", [b.port])})
            # The stream breaks: both open new ones, and keep serving meanwhile.
            for node in pair.nodes:
                wait_for(lambda node=node: len(cp.streams_of(node)) > streams[node] + 1, 30,
                         what=f"{node} reconnects after garbage")
            assert pair.envoi.stats()["cluster.svc.update_success"] == 1
            pair.wait_get(a.port)
            cp.garbage_wire = False
            pair.wait_get(b.port)
            pair.wait_stat("control_plane.connected_state", 1)
            pair.wait_stat("cluster.svc.update_success", 2)


def test_control_plane_disconnects_and_goes_away(tmp_path: Path, cp: ControlPlane) -> None:
    """Streams cut at once and right after a response (before its ACK), then the control plane
    gone for a while: the config stays and serves; on each new stream both ask again with the
    version they hold, and take what changed meanwhile."""
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp)
        _start_v1(cp, pair, a.port)
        with pair:
            pair.wait_get(a.port)
            first = {n: len(cp.streams_of(n)) for n in pair.nodes}
            cp.disconnect()
            for node in pair.nodes:
                wait_for(lambda node=node: len(cp.streams_of(node)) > first[node], 30,
                         what=f"{node} reconnects")
            pair.wait_stat("control_plane.connected_state", 1)
            # The new stream's first requests carry the versions held: nothing is re-applied.
            for node in pair.nodes:
                opening = cp.streams_of(node)[-1].requests
                by_type = {r.type_url: r for r in opening if not r.response_nonce}
                assert by_type[CDS].version_info == "1", node
                assert by_type[LDS].version_info == "1", node

            # Cut right after the next response: it was applied, but never ACKed.
            cp.disconnect(after_next_response=True)
            cp.set(EDS, "2", {"svc": assignment("svc", [b.port])})
            pair.wait_get(b.port)
            pair.wait_stat("control_plane.connected_state", 1)
            for node in pair.nodes:
                wait_for(lambda node=node: any(
                    r.type_url == EDS and r.version_info == "2" and not r.response_nonce
                    for r in cp.streams_of(node)[-1].requests), 30,
                    what=f"{node} asks EDS with version 2 on its new stream")
            assert cp.disconnects >= 2

            # (Before the control plane goes away, while each reconnect succeeds at once.)
            # Counted as Envoy counts them: an attempt at the start, one per response and one
            # per broken stream (also an update_failure); config_reload only for a change.
            mine, theirs = pair.stats("envoi"), pair.stats("envoy")
            for name in ("cds.update_attempt", "cds.update_failure", "cds.update_success",
                         "cds.config_reload", "lds.update_attempt", "lds.update_failure",
                         "cluster.svc.update_attempt", "cluster.svc.update_failure",
                         "cluster.svc.update_success"):
                name = name.replace("cds.", "cluster_manager.cds.", 1).replace(
                    "lds.", "listener_manager.lds.", 1)
                assert mine[name] == theirs[name], (name, mine[name], theirs[name])
            assert "listener_manager.lds.config_reload" not in mine

            # Gone: the listeners keep serving the last config.
            cp.stop()
            pair.wait_stat("control_plane.connected_state", 0)
            pair.wait_get(b.port)
            cp.set(EDS, "3", {"svc": assignment("svc", [a.port])})
            cp.start()  # back on the same port, with news
            pair.wait_get(a.port, timeout=60)
            pair.wait_stat("control_plane.connected_state", 1)
            pair.wait_stat("cluster.svc.update_success", lambda v: v >= 3)


def test_listener_moved_to_a_port_in_use(tmp_path: Path, cp: ControlPlane) -> None:
    """LDS moves the listener to a port another socket holds: NACKed with the reason, the old
    listener keeps serving on its port; a free port then works."""
    with EchoServer() as a, socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = squatter.getsockname()[1]
        pair = Pair(tmp_path, cp)
        _start_v1(cp, pair, a.port)
        with pair:
            pair.wait_get(a.port)
            pair.set_listeners("2", lambda _: listener(taken, "svc"))
            pair.wait_stat("listener_manager.lds.update_rejected", 1)
            for node in pair.nodes:
                assert acks(pair.requests(node), "Listener") == [("1", False), ("1", True)], node
                st = pair.stats(node)
                assert st["listener_manager.lds.version_text"] == "1", node
                assert st["listener_manager.total_listeners_active"] == 1, node
                dump = pair.dump(node)
                assert dump["listeners"] == [("ads_listener", "1", None)], (node, dump)
                assert dump["listener_errors"] == [("ads_listener", f"cannot bind '127.0.0.1:"
                                                    f"{taken}': Address already in use")], node
            message = _nacks(pair, "envoi")[-1]
            assert f"127.0.0.1:{taken}" in message and "in use" in message, message
            pair.wait_get(a.port)
            # And the next good update applies.
            pair.set_listeners("3", lambda p: listener(p, "svc", stat_prefix="v3"))
            pair.wait_stat("listener_manager.lds.version_text", "3")
            pair.wait_get(a.port)


def test_initial_fetch_timeout(tmp_path: Path, cp: ControlPlane) -> None:
    """A cluster whose endpoints never come warms for its ``initial_fetch_timeout``, then
    serves with no hosts (503), counted in ``init_fetch_timeout``; a later assignment fills it."""
    with EchoServer() as a:
        pair = Pair(tmp_path, cp)
        _start_v1(cp, pair, a.port)
        with pair:
            pair.wait_get(a.port)
            slow = cluster("slow", eds_cluster_config={"eds_config": ads_source(
                initial_fetch_timeout="1s")})
            cp.set(CDS, "2", {"svc": cluster("svc"), "slow": slow})
            pair.wait_stat("cluster_manager.cds.update_success", 2)
            pair.wait_stat("cluster.slow.init_fetch_timeout", 1, timeout=10)
            pair.wait_stat("cluster_manager.warming_clusters", 0)
            for node in pair.nodes:
                dump = pair.dump(node)
                assert dump["clusters"] == [("slow", "2"), ("svc", "1")], (node, dump)
                assert dump["warming_clusters"] == [], (node, dump)
            pair.set_listeners("2", lambda p: listener(p, routes={"/slow": "slow", "/": "svc"}))
            pair.wait_get(None, "/slow", status=503)
            pair.wait_get(a.port, "/")
            cp.set(EDS, "3", {"svc": assignment("svc", [a.port]),
                              "slow": assignment("slow", [a.port])})
            pair.wait_get(a.port, "/slow")
            for node in pair.nodes:
                assert pair.stats(node)["cluster.slow.init_fetch_timeout"] == 1, node

