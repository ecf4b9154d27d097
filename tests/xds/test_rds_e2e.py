"""RDS end to end: an HCM's ``rds`` over ADS (state of the world and delta) with envoi and the real
Envoy 1.39.3 run by one control plane, and from files. A listener warms until its routes come (or
``initial_fetch_timeout``); a route-config change applies to the next request, on a connection
already open too; an invalid one is NACKed and the routes in force stay; both proxies count
``http.<prefix>.rds.<name>.*`` alike and show the same ``dynamic_route_configs``."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

import pytest
from control_plane import ControlPlane
from envoi.testing import EnvoiProcess, free_port, wait_for
from google.protobuf import json_format
from http_peers import HCM_LISTENER, EchoServer
from xds_pair import (
    CDS,
    EDS,
    RDS,
    Pair,
    acks,
    ads_source,
    assignment,
    cluster,
    get,
    listener,
    route_config,
)

RDS_STATS = ("config_reload", "update_attempt", "update_success", "update_rejected",
             "update_empty", "update_failure", "init_fetch_timeout", "version")


def _rds_stats(stats: dict[str, object], name: str = "routes") -> dict[str, object]:
    return {k: stats.get(f"http.ads_http.rds.{name}.{k}") for k in RDS_STATS}


def _short(dump: dict[str, Any]) -> dict[str, Any]:
    """Versions without the delta control plane's per-resource suffix (``2:0a0c...``)."""
    def v(x: Any) -> Any:
        return x.split(":")[0] if isinstance(x, str) else x
    return {k: [tuple(v(x) for x in e) if isinstance(e, tuple) else e for e in val]
            if isinstance(val, list) else val for k, val in dump.items()}


def _bad_routes() -> object:
    rc = route_config("routes", {"/": "svc"})
    rc.virtual_hosts[0].routes[0].match.ClearField("prefix")
    rc.virtual_hosts[0].routes[0].match.safe_regex.regex = "(unclosed"
    return rc


class KeepAlive:
    """One client connection kept open across updates."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def get(self, path: str = "/") -> tuple[int, int | None]:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, json.loads(body)["port"] if r.status == 200 else None

    def close(self) -> None:
        self.conn.close()


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_rds_over_ads_envoi_and_envoy(tmp_path: Path, cp: ControlPlane, api_type: str) -> None:
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp, api_type=api_type)
        cp.set(CDS, "1", {"svc": cluster("svc"), "other": cluster("other")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port]),
                          "other": assignment("other", [b.port])})
        pair.set_listeners("1", lambda p: listener(p, "svc", name="inline"))
        with pair:
            pair.wait_get(a.port)
            # A listener whose route configuration has not come yet warms, in both.
            pair.set_listeners("2", lambda p, p2: [
                listener(p, "svc", name="inline"),
                listener(p2, name="ads_listener", rds="routes")], two=True)
            pair.wait_stat("listener_manager.total_listeners_warming", 1)
            for node in pair.nodes:
                dump = _short(pair.dump(node))
                assert dump["listeners"] == [("ads_listener", None, "2"),
                                             ("inline", "1", None)], (node, dump)
            cp.set(RDS, "1", {"routes": route_config("routes", {"/": "svc"})})
            pair.wait_get(a.port, second=True)
            pair.wait_stat("listener_manager.total_listeners_warming", 0)
            keep = {n: KeepAlive(pair.ports2[n]) for n in pair.nodes}
            for node in pair.nodes:
                assert keep[node].get() == (200, a.port), node

            # A change: the next request, on the same connection, uses it.
            cp.set(RDS, "2", {"routes": route_config("routes", {"/b": "other", "/": "svc"})})
            pair.wait_stat("http.ads_http.rds.routes.update_success", 2)
            for node in pair.nodes:
                assert keep[node].get("/b") == (200, b.port), node
                assert keep[node].get("/") == (200, a.port), node

            # Invalid (an RE2-invalid regex): NACKed, the routes in force stay.
            cp.set(RDS, "3", {"routes": _bad_routes()})
            pair.wait_stat("http.ads_http.rds.routes.update_rejected", 1)
            for node in pair.nodes:
                assert keep[node].get("/b") == (200, b.port), node
                keep[node].close()
                dump = _short(pair.dump(node))
                assert dump["routes"] == [("routes", "2")], (node, dump)
                assert acks(pair.requests(node), "RouteConfiguration")[-1][1] is True, node
            nack = [r for r in cp.requests("envoi") if r.HasField("error_detail")][-1]
            assert "route_config 'routes'" in nack.error_detail.message
            assert "safe_regex" in nack.error_detail.message, nack.error_detail.message

            mine, theirs = (_rds_stats(pair.stats("envoi")), _rds_stats(pair.stats("envoy")))
            assert mine == theirs, (mine, theirs)
            assert pair.stats("envoi")["http.ads_http.rds.routes.version_text"] == "2"
            assert pair.dump("envoi") == pair.dump("envoy")


def test_rds_initial_fetch_timeout_and_a_listener_that_drops_its_routes(
        tmp_path: Path, cp: ControlPlane) -> None:
    """Routes that never come: after initial_fetch_timeout the listener serves, with no
    routes (404); a listener that stops naming a route config lets it go."""
    with EchoServer() as a:
        pair = Pair(tmp_path, cp)
        cp.set(CDS, "1", {"svc": cluster("svc")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port])})
        pair.set_listeners("1", lambda p: listener(
            p, rds="never", rds_source=ads_source(initial_fetch_timeout="1s")))
        with pair:
            pair.wait_stat("http.ads_http.rds.never.init_fetch_timeout", 1, timeout=15)
            pair.wait_stat("listener_manager.total_listeners_warming", 0)
            pair.wait_get(None, status=404)
            for node in pair.nodes:
                assert pair.dump(node)["listeners"] == [("ads_listener", "1", None)], node
            # Routes then come: used at once.
            cp.set(RDS, "1", {"never": route_config("never", {"/": "svc"})})
            pair.wait_get(a.port)
            # Inline routes again: the subscription ends.
            pair.set_listeners("2", lambda p: listener(p, "svc"))
            pair.wait_stat("listener_manager.lds.version_text", "2")
            pair.wait_get(a.port)
            for node in pair.nodes:
                wait_for(lambda node=node: not any(
                    r.type_url == RDS and r.resource_names
                    for r in cp.streams_of(node)[-1].requests[-1:]), 10,
                    what=f"{node} unsubscribes from RDS")


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_rds_over_its_own_grpc_stream(tmp_path: Path, cp: ControlPlane, api_type: str) -> None:
    """``api_config_source`` (not ADS): RouteDiscoveryService on a stream of its own, in both."""
    source = {"api_config_source": {
        "api_type": api_type, "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
        "resource_api_version": "V3"}
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp)
        cp.set(CDS, "1", {"svc": cluster("svc"), "other": cluster("other")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port]),
                          "other": assignment("other", [b.port])})
        cp.set(RDS, "1", {"routes": route_config("routes", {"/": "svc"})})
        pair.set_listeners("1", lambda p: listener(p, rds="routes", rds_source=source))
        with pair:
            pair.wait_get(a.port)
            cp.set(RDS, "2", {"routes": route_config("routes", {"/": "other"})})
            pair.wait_get(b.port)
            pair.wait_stat("http.ads_http.rds.routes.update_success", 2)
            for node in pair.nodes:
                assert any(s.requests[0].type_url == RDS and len(
                    {r.type_url for r in s.requests}) == 1 for s in cp.streams_of(node)), node
            mine, theirs = (_rds_stats(pair.stats("envoi")), _rds_stats(pair.stats("envoy")))
            assert mine == theirs, (mine, theirs)
            assert _short(pair.dump("envoi")) == _short(pair.dump("envoy"))


RDS_BOOTSTRAP = HCM_LISTENER + """\
          stat_prefix: ads_http
          rds:
            route_config_name: routes
            config_source:
              resource_api_version: V3
              path_config_source: {{path: {dir}/rds.yaml}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}
"""

STATIC_CLUSTER = """
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"""


def _rds_file(version: str, routes: dict[str, str]) -> str:
    rc = json_format.MessageToDict(route_config("routes", routes),
                                   preserving_proto_field_name=True)
    rc["@type"] = RDS
    return json.dumps({"version_info": version, "resources": [rc]})


def _move_into_place(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_rds_from_a_file(tmp_path: Path) -> None:
    """A static listener's routes from a file (Envoy's filesystem rules: a file moved into place
    is applied, an in-place write is not, a bad one is refused and the routes stay)."""
    with EchoServer() as a, EchoServer() as b:
        admin, port = free_port(), free_port()
        rds = tmp_path / "rds.yaml"
        rds.write_text(_rds_file("1", {"/": "svc"}))
        clusters = "".join(STATIC_CLUSTER.format(name=n, port=p)
                           for n, p in (("svc", a.port), ("other", b.port)))
        boot = RDS_BOOTSTRAP.format(admin=admin, port=port, dir=tmp_path, clusters=clusters)
        with EnvoiProcess.from_yaml(boot, tmp_path, admin) as proc:
            assert get(port) == (200, a.port)
            st = proc.stats()
            assert st["http.ads_http.rds.routes.update_success"] == 1
            assert st["http.ads_http.rds.routes.version_text"] == "1"

            rds.write_text(_rds_file("2", {"/": "other"}))  # in place: not noticed
            with pytest.raises(TimeoutError):
                proc.wait_stat("http.ads_http.rds.routes.update_attempt", 2, timeout=1.0)
            _move_into_place(rds, _rds_file("2", {"/": "other"}))
            proc.wait_stat("http.ads_http.rds.routes.update_success", 2)
            assert get(port) == (200, b.port)

            bad = json.loads(_rds_file("3", {"/": "svc"}))
            bad["resources"][0]["virtual_hosts"][0]["routes"][0]["match"] = {
                "safe_regex": {"regex": "(unclosed"}}
            _move_into_place(rds, json.dumps(bad))
            proc.wait_stat("http.ads_http.rds.routes.update_rejected", 1)
            _move_into_place(rds, "not: [json")
            proc.wait_stat("http.ads_http.rds.routes.update_failure", 1)
            assert get(port) == (200, b.port)
            st = proc.stats()
            assert st["http.ads_http.rds.routes.version_text"] == "2"
            assert st["http.ads_http.rds.routes.config_reload"] == 2
            dump = json.loads(proc.get("/config_dump")[1])
            (routes,) = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")]
            (entry,) = routes["dynamic_route_configs"]
            assert entry["version_info"] == "2"
            assert entry["route_config"]["name"] == "routes"
