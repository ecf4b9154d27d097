"""Filesystem xDS end to end: the cases of envoy-observed.md section 7 (a file moved into place is
applied; an in-place write is not; bad YAML is an update failure; an invalid value is rejected and
the old config stays), an LDS listener moved to another port, and 100 clusters at once."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest
from envoi.testing import EnvoiProcess, free_port, wait_for
from http_peers import EchoServer

BOOTSTRAP = """
node: {{id: envoi-test, cluster: envoi-test}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: {{path: {dir}/lds.yaml}}
  cds_config:
    resource_api_version: V3
    path: {dir}/cds.yaml
"""

CLUSTER = """
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: STATIC
  connect_timeout: {timeout}
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"""

EDS_CLUSTER = """
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: eds_cluster
  type: EDS
  connect_timeout: 1s
  eds_cluster_config:
    eds_config:
      resource_api_version: V3
      path_config_source: {{path: {dir}/eds.yaml}}
"""

EDS = """
version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: eds_cluster
  endpoints:
  - lb_endpoints:
{endpoints}
"""

LDS = """
version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: fs_listener
  address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
          http_connection_manager.v3.HttpConnectionManager"
        stat_prefix: fs_http
        http_filters:
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/eds"}}
              route: {{cluster: eds_cluster}}
            - match: {{prefix: "/"}}
              route: {{cluster: fs_cluster}}
"""


def _cds(version: str, port: int, d: Path, timeout: str = "1s", extra: str = "") -> str:
    return (f'version_info: "{version}"\nresources:'
            + CLUSTER.format(name="fs_cluster", timeout=timeout, port=port)
            + EDS_CLUSTER.format(dir=d) + extra)


def _eds(version: str, ports: list[int]) -> str:
    eps = "".join(f"    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
                  f"port_value: {p}}}}}}}\n" for p in ports)
    return EDS.format(version=version, endpoints=eps)


def move_into_place(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def get(port: int, path: str = "/") -> tuple[int, dict[str, object] | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def echo_pair():
    with EchoServer() as a, EchoServer() as b:
        yield a.port, b.port


def test_filesystem_lds_cds_eds(tmp_path: Path, echo_pair: tuple[int, int]) -> None:
    a, b = echo_pair
    port, port2, admin = free_port(), free_port(), free_port()
    (tmp_path / "cds.yaml").write_text(_cds("1", a, tmp_path))
    (tmp_path / "eds.yaml").write_text(_eds("1", [a, b]))
    (tmp_path / "lds.yaml").write_text(LDS.format(version="1", port=port))
    boot = BOOTSTRAP.format(admin=admin, dir=tmp_path)
    with EnvoiProcess.from_yaml(boot, tmp_path, admin) as proc:
        st = proc.stats()
        assert st["listener_manager.lds.update_success"] == 1
        assert st["cluster_manager.cds.update_success"] == 1
        assert st["cluster.eds_cluster.update_success"] == 1
        assert st["cluster.eds_cluster.membership_total"] == 2
        assert st["listener_manager.lds.version"] == 13237225503670494420
        assert get(port)[1]["port"] == a
        assert {get(port, "/eds")[1]["port"] for _ in range(4)} == {a, b}

        # Written in place: Envoy does not notice, nor does envoi.
        (tmp_path / "cds.yaml").write_text(_cds("2", b, tmp_path))
        with pytest.raises(TimeoutError):
            proc.wait_stat("cluster_manager.cds.update_attempt", 2, timeout=1.0)
        assert get(port)[1]["port"] == a

        # Moved into place: applied.
        move_into_place(tmp_path / "cds.yaml", _cds("2", b, tmp_path))
        proc.wait_stat("cluster_manager.cds.update_success", 2)
        assert get(port)[1]["port"] == b
        st = proc.stats()
        assert st["cluster_manager.cluster_modified"] == 1
        assert st["cluster_manager.cds.version_text"] == "2"

        # Not YAML: update_failure, the config stays.
        move_into_place(tmp_path / "cds.yaml", "not: [valid")
        proc.wait_stat("cluster_manager.cds.update_failure", 1)
        # An invalid value: update_rejected, the config stays.
        move_into_place(tmp_path / "cds.yaml", _cds("3", a, tmp_path, timeout="-1s"))
        proc.wait_stat("cluster_manager.cds.update_rejected", 1)
        # An unknown field: rejected too (Envoy accepts and drops it; see README).
        move_into_place(tmp_path / "cds.yaml",
                        _cds("4", a, tmp_path) + "  bogus_field: 1\n")
        proc.wait_stat("cluster_manager.cds.update_rejected", 2)
        assert "bogus_field" in proc.log()
        st = proc.stats()
        assert st["cluster_manager.cds.version_text"] == "2"
        assert get(port)[1]["port"] == b

        # EDS: one endpoint left.
        move_into_place(tmp_path / "eds.yaml", _eds("2", [a]))
        proc.wait_stat("cluster.eds_cluster.update_success", 2)
        assert {get(port, "/eds")[1]["port"] for _ in range(4)} == {a}

        # LDS: the listener moves to another port.
        move_into_place(tmp_path / "lds.yaml", LDS.format(version="2", port=port2))
        proc.wait_stat("listener_manager.lds.update_success", 2)
        assert get(port2)[1]["port"] == b
        wait_for(lambda: refused(port), 5, what="old port closed")
        assert proc.stats()["listener_manager.listener_modified"] == 1

        dump = json.loads(proc.get("/config_dump")[1])
        by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
        clusters = by_type["ClustersConfigDump"]
        assert clusters["version_info"] == "2"
        assert sorted(c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]) == \
            ["eds_cluster", "fs_cluster"]
        # Each resource keeps the version it last changed in (the EDS cluster did not change).
        assert {c["cluster"]["name"]: c["version_info"]
                for c in clusters["dynamic_active_clusters"]} == {"eds_cluster": "1",
                                                                  "fs_cluster": "2"}
        assert all(c["last_updated"] for c in clusters["dynamic_active_clusters"])
        (lst,) = by_type["ListenersConfigDump"]["dynamic_listeners"]
        assert lst["name"] == "fs_listener"
        assert lst["active_state"]["version_info"] == "2"


def test_a_hundred_clusters_at_once(tmp_path: Path, echo_pair: tuple[int, int]) -> None:
    a, b = echo_pair
    admin = free_port()
    (tmp_path / "lds.yaml").write_text('version_info: "0"\nresources: []\n')

    def hundred(version: str, port: int) -> str:
        return f'version_info: "{version}"\nresources:' + "".join(
            CLUSTER.format(name=f"c{i}", timeout="1s", port=port) for i in range(100))

    (tmp_path / "cds.yaml").write_text(hundred("1", a))
    boot = BOOTSTRAP.format(admin=admin, dir=tmp_path)
    with EnvoiProcess.from_yaml(boot, tmp_path, admin) as proc:
        assert proc.stats()["cluster_manager.active_clusters"] == 100
        move_into_place(tmp_path / "cds.yaml", hundred("2", b))
        proc.wait_stat("cluster_manager.cds.update_success", 2)
        st = proc.stats()
        assert st["cluster_manager.cluster_modified"] == 100
        assert st["cluster_manager.active_clusters"] == 100
        clusters = proc.get("/clusters")[1]
        assert clusters.count(f"::127.0.0.1:{b}::cx_total::") == 100
        move_into_place(tmp_path / "cds.yaml", 'version_info: "3"\nresources: []\n')
        proc.wait_stat("cluster_manager.cds.update_success", 3)
        st = proc.stats()
        assert st["cluster_manager.cluster_removed"] == 100
        assert st["cluster_manager.active_clusters"] == 0
