"""``/config_dump?include_eds``: the endpoints of every active cluster as Envoy 1.39.3 shows
them, for the same clusters and endpoints from one control plane (EDS clusters under
``dynamic_endpoint_configs``, the static control-plane cluster under
``static_endpoint_configs``), and as they change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from control_plane import ControlPlane
from google.protobuf import json_format
from http_peers import EchoServer
from xds_pair import CDS, EDS, Pair, assignment, cluster, listener


def _eds(pair: Pair, node: str) -> dict[str, Any]:
    """The EndpointsConfigDump, each list sorted by cluster name (Envoy's order is a hash
    map's)."""
    text = pair.procs[node].get("/config_dump?include_eds")
    configs = json.loads(text[1] if isinstance(text, tuple) else text)["configs"]
    kinds = [c["@type"].rsplit(".", 1)[-1] for c in configs]
    (dump,) = [c for c in configs if c["@type"].endswith("EndpointsConfigDump")]
    assert kinds.index("EndpointsConfigDump") == kinds.index("ClustersConfigDump") + 1, kinds
    return {k: sorted(v, key=lambda e: e["endpoint_config"]["cluster_name"])
            for k, v in dump.items() if k != "@type"}


def _spread(name: str, ports: list[int]) -> Any:
    """Two localities over two priorities, weights on hosts and localities, a factor."""
    ep = [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": p}}},
           "load_balancing_weight": w} for p, w in zip(ports, (1, 3, 2), strict=False)]
    return json_format.ParseDict({
        "cluster_name": name,
        "endpoints": [
            {"locality": {"region": "r1", "zone": "z1"}, "lb_endpoints": ep[:2]},
            {"locality": {"zone": "z2"}, "priority": 1, "lb_endpoints": ep[2:]}],
        "policy": {"overprovisioning_factor": 200},
    }, assignment(name, []).__class__())


def test_include_eds_like_envoy(tmp_path: Path, cp: ControlPlane) -> None:
    with EchoServer() as a, EchoServer() as b, EchoServer() as c:
        pair = Pair(tmp_path, cp)
        cp.set(CDS, "1", {"svc": cluster("svc"), "spread": cluster("spread"),
                          "named": cluster("named", eds_cluster_config={
                              "service_name": "named-service",
                              "eds_config": {"ads": {}, "resource_api_version": "V3"}})})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port]),
                          "spread": _spread("spread", [a.port, b.port, c.port]),
                          "named-service": assignment("named-service", [b.port, c.port])})
        pair.set_listeners("1", lambda p: listener(p, "svc"))
        with pair:
            pair.wait_get(a.port)
            mine, theirs = _eds(pair, "envoi"), _eds(pair, "envoy")
            assert mine == theirs, (mine, theirs)
            names = [e["endpoint_config"]["cluster_name"]
                     for e in mine["dynamic_endpoint_configs"]]
            assert names == ["named-service", "spread", "svc"], names
            assert [e["endpoint_config"]["cluster_name"]
                    for e in mine["static_endpoint_configs"]] == ["xds_cluster"]

            cp.set(EDS, "2", {"svc": assignment("svc", [b.port, c.port]),
                              "spread": _spread("spread", [a.port, b.port, c.port]),
                              "named-service": assignment("named-service", [])})
            pair.wait_get(b.port)
            pair.wait_stat("cluster.named.membership_total", 0)
            mine, theirs = _eds(pair, "envoi"), _eds(pair, "envoy")
            assert mine == theirs, (mine, theirs)


def test_an_eds_response_that_omits_a_cluster_leaves_its_hosts(tmp_path: Path,
                                                                cp: ControlPlane) -> None:
    """State of the world EDS naming only some clusters: the others keep their endpoints, in
    Envoy as in envoi (Envoy hands a watch only the resources it asked for and were sent)."""
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp)
        cp.set(CDS, "1", {"svc": cluster("svc"), "other": cluster("other")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port]),
                          "other": assignment("other", [b.port])})
        pair.set_listeners("1", lambda p: listener(p, routes={"/b": "other", "/": "svc"}))
        with pair:
            pair.wait_get(b.port, "/b")
            cp.set(EDS, "2", {"svc": assignment("svc", [b.port])})
            pair.wait_get(b.port, "/")
            pair.wait_stat("cluster.svc.update_success", 2)
            for node in pair.nodes:
                st = pair.stats(node)
                assert st["cluster.other.membership_total"] == 1, node
            pair.wait_get(b.port, "/b")
            mine, theirs = _eds(pair, "envoi"), _eds(pair, "envoy")
            assert mine == theirs, (mine, theirs)
