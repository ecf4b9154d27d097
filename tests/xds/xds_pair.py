"""envoi and the real Envoy 1.39.3 run by one scripted control plane (control_plane.py): the
bootstrap both get, the resources the tests send, and reading both back the same way.

Each proxy is a node (``envoi``, ``envoy``); the control plane sends each its own listeners (on
its own port) and the same clusters and endpoints to both."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from control_plane import ControlPlane
from envoi.config import ensure_protos_loaded
from envoi.testing import EnvoiProcess, free_port, wait_for
from envoi.testing.envoy import EnvoyProcess
from google.protobuf import json_format

ensure_protos_loaded()
from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.config.route.v3 import route_pb2  # noqa: E402

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
NODES = ("envoi", "envoy")

BOOTSTRAP = """
node: {{id: {node}, cluster: test}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{cluster_name: xds_cluster}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {cp}}}}}}}
"""


def ads_source(**extra: Any) -> dict[str, Any]:
    return {"ads": {}, "resource_api_version": "V3", **extra}


def cluster(name: str, **extra: Any) -> Any:
    """An EDS cluster whose endpoints come over ADS (``eds_config`` may be overridden)."""
    d = {"name": name, "type": "EDS", "connect_timeout": "1s",
         "eds_cluster_config": {"eds_config": ads_source()}}
    d.update(extra)
    return json_format.ParseDict(d, cluster_pb2.Cluster())


def assignment(name: str, ports: list[int]) -> Any:
    return json_format.ParseDict({"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports]}]}, endpoint_pb2.ClusterLoadAssignment())


def virtual_hosts(routes: dict[str, str]) -> list[dict[str, Any]]:
    """One catch-all virtual host: path prefix -> cluster, in the order given."""
    return [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": prefix}, "route": {"cluster": c}} for prefix, c in routes.items()]}]


def route_config(name: str, routes: dict[str, str]) -> Any:
    return json_format.ParseDict({"name": name, "virtual_hosts": virtual_hosts(routes)},
                                 route_pb2.RouteConfiguration())


def hcm(*, routes: dict[str, str] | None = None, rds: str | None = None,
        rds_source: dict[str, Any] | None = None, stat_prefix: str = "ads_http",
        **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "@type": HCM, "stat_prefix": stat_prefix,
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER}}]}
    if rds is not None:
        out["rds"] = {"route_config_name": rds, "config_source": rds_source or ads_source()}
    else:
        out["route_config"] = {"virtual_hosts": virtual_hosts(routes or {})}
    out.update(extra)
    return out


def listener(port: int, cluster_name: str = "", *, name: str = "ads_listener",
             routes: dict[str, str] | None = None, rds: str | None = None,
             rds_source: dict[str, Any] | None = None, **hcm_extra: Any) -> Any:
    """An HTTP listener: its routes inline (``cluster_name`` for every path, or ``routes``), or
    from RDS (``rds``: the route config's name)."""
    if routes is None and rds is None:
        routes = {"/": cluster_name}
    return json_format.ParseDict({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm(routes=routes, rds=rds, rds_source=rds_source, **hcm_extra)}]}],
    }, listener_pb2.Listener())


def get(port: int, path: str = "/", timeout: float = 5) -> tuple[int, int | None]:
    """(status, the echo server's port) of one request; (0, None) when it did not connect."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, int(json.loads(r.read())["port"])
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def get_port(port: int, path: str = "/") -> int | None:
    return get(port, path)[1]


def summary(requests: list[Any]) -> list[tuple[str, str, str, bool]]:
    """(type, version_info, response_nonce, NACK?) per request (a delta request has no
    version_info: "")."""
    return [(r.type_url.rsplit(".", 1)[-1], getattr(r, "version_info", ""), r.response_nonce,
             r.HasField("error_detail")) for r in requests]


def acks(requests: list[Any], kind: str) -> list[tuple[str, bool]]:
    """(version_info, NACK?) of every answer to a response of one type (``Cluster``, ...)."""
    return [(v, nack) for t, v, n, nack in summary(requests) if t == kind and n]


def wait_nacks(cp: ControlPlane, node: str, count: int, timeout: float = 20) -> list[Any]:
    """The requests carrying an ``error_detail`` once the control plane holds ``count`` of them:
    a proxy counts ``update_rejected`` before its NACK reaches the control plane, so a test that
    waited for the stat must still wait for the message."""
    def nacks() -> list[Any]:
        return [r for r in cp.requests(node) if r.HasField("error_detail")]
    wait_for(lambda: len(nacks()) >= count, timeout, what=f"{node}: {count} NACK(s)")
    return nacks()


def dump_resources(text: str) -> dict[str, Any]:
    """Names and versions of the dynamic resources in a /config_dump."""
    out: dict[str, Any] = {}
    for c in json.loads(text)["configs"]:
        kind = c["@type"].rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            out["clusters_version"] = c.get("version_info")
            out["clusters"] = sorted((e["cluster"]["name"], e["version_info"])
                                     for e in c.get("dynamic_active_clusters", []))
            out["warming_clusters"] = sorted(e["cluster"]["name"] for e in
                                             c.get("dynamic_warming_clusters", []))
        elif kind == "ListenersConfigDump":
            out["listeners_version"] = c.get("version_info")
            # (Envoy adds a nameless entry per refused listener, beside the named one.)
            out["listeners"] = sorted(
                (e["name"], e.get("active_state", {}).get("version_info"),
                 e.get("warming_state", {}).get("version_info"))
                for e in c.get("dynamic_listeners", []) if "name" in e)
            out["listener_errors"] = sorted(
                (e["name"], e["error_state"]["details"])
                for e in c.get("dynamic_listeners", []) if "name" in e and "error_state" in e)
        elif kind == "RoutesConfigDump" and "dynamic_route_configs" in c:
            out["routes"] = sorted((e["route_config"]["name"], e["version_info"])
                                   for e in c.get("dynamic_route_configs", []))
    return out


class Pair:
    """envoi and Envoy, each a node of ``cp``; ``procs`` by node id once started."""

    def __init__(self, tmp_path: Path, cp: ControlPlane, *, api_type: str = "GRPC",
                 envoi_args: tuple[str, ...] = (), concurrency: int | None = 1,
                 with_envoy: bool = True, envoi_env: dict[str, str] | None = None) -> None:
        self.tmp, self.cp, self.api_type = tmp_path, cp, api_type
        self.envoi_args, self.concurrency, self.envoi_env = envoi_args, concurrency, envoi_env
        self.nodes = NODES if with_envoy else NODES[:1]
        self.ports = {n: free_port() for n in self.nodes}
        self.ports2 = {n: free_port() for n in self.nodes}  # for a second listener
        self.admins = {n: free_port() for n in self.nodes}
        self.procs: dict[str, Any] = {}

    def set_listeners(self, version: str, make: Callable[..., Any | list[Any]],
                      two: bool = False) -> None:
        """Each node's listeners: ``make(its port)`` (one or a list), or with ``two``
        ``make(its port, its second port)``."""
        for n in self.nodes:
            made = make(self.ports[n], self.ports2[n]) if two else make(self.ports[n])
            made = made if isinstance(made, list) else [made]
            self.cp.set(LDS, version, {lst.name: lst for lst in made}, node=n)

    def bootstrap(self, node: str) -> str:
        return BOOTSTRAP.format(node=node, admin=self.admins[node], cp=self.cp.port,
                                api_type=self.api_type)

    def start(self) -> Pair:
        for n in self.nodes:
            (self.tmp / n).mkdir(exist_ok=True)
        self.procs["envoi"] = EnvoiProcess.from_yaml(
            self.bootstrap("envoi"), self.tmp / "envoi", self.admins["envoi"],
            args=self.envoi_args, concurrency=self.concurrency, env=self.envoi_env).start()
        if "envoy" in self.nodes:
            cfg = self.tmp / "envoy" / "envoy.yaml"
            cfg.write_text(self.bootstrap("envoy"))
            self.procs["envoy"] = EnvoyProcess(cfg, self.admins["envoy"],
                                               self.tmp / "envoy" / "envoy.log").start(live=False)
        return self

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()

    def __enter__(self) -> Pair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def envoi(self) -> EnvoiProcess:
        return self.procs["envoi"]  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[str, Any]]:
        yield from self.procs.items()

    def stats(self, node: str) -> dict[str, Any]:
        return self.procs[node].stats()  # type: ignore[no-any-return]

    def dump(self, node: str) -> dict[str, Any]:
        p = self.procs[node]
        text = p.get("/config_dump")
        return dump_resources(text[1] if isinstance(text, tuple) else text)

    def envoi_dump_json(self) -> dict[str, Any]:
        """envoi's /config_dump: each config by its short type name."""
        return {c["@type"].rsplit(".", 1)[-1]: c
                for c in json.loads(self.envoi.get("/config_dump")[1])["configs"]}

    def wait_stat(self, name: str, want: Callable[[Any], bool] | Any,
                  timeout: float = 20) -> None:
        """Wait for stat ``name`` to equal ``want`` (or satisfy it) in both proxies."""
        def ok(v: Any) -> bool:
            return bool(want(v)) if callable(want) else bool(v == want)

        for n in self.procs:
            try:
                wait_for(lambda n=n: ok(self.stats(n).get(name)), timeout,
                         what=f"{n}: {name}")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc} (now {self.stats(n).get(name)!r}); envoi's log:\n"
                                   + self.envoi.log()[-3000:]) from None

    def wait_get(self, want_port: int | None, path: str = "/", timeout: float = 20,
                 status: int | None = None, second: bool = False) -> None:
        """Wait until a request to each node's listener (``second``: its second one) reaches
        ``want_port``'s echo server (or answers ``status``)."""
        for n in self.nodes:
            def check(n: str = n) -> bool:
                st, port = get((self.ports2 if second else self.ports)[n], path)
                return st == status if status is not None else port == want_port
            wait_for(check, timeout, what=f"{n}: {path} -> {want_port or status}")

    def requests(self, node: str) -> list[Any]:
        return self.cp.requests(node)
