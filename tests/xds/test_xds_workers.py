"""xDS with worker processes (``--concurrency 2``): the main process holds the subscriptions and
every update reaches every worker, or none (envoi.workers.updates). New connections spread over
both workers (SO_REUSEPORT), so a batch of them that all see the new config -- and per-worker
connection counts that show both served -- means both workers took it; an update that one
worker refuses changes no process. Health checks of a cluster added over CDS run in the main
process and their verdicts reach every worker."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

from control_plane import ControlPlane
from envoi.testing import free_port
from google.protobuf import json_format
from http_peers import EchoServer
from xds_pair import (
    CDS,
    EDS,
    RDS,
    Pair,
    acks,
    assignment,
    cluster,
    get,
    listener,
    route_config,
    wait_nacks,
)

BATCH = 40  # new connections per check: all on one worker by chance is 2**-39


def _batch(port: int, path: str = "/") -> list[tuple[int, int | None]]:
    return [get(port, path) for _ in range(BATCH)]  # urllib: one new connection each


def _per_worker(pair: Pair) -> dict[str, int]:
    return {k: v for k, v in pair.envoi.stats().items()
            if k.startswith(f"listener.127.0.0.1_{pair.ports['envoi']}.worker_")
            and k.endswith(".downstream_cx_total")}


def _env() -> dict[str, str]:
    here = str(Path(__file__).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH", "")) if p)}


def test_updates_reach_every_worker_or_none(tmp_path: Path, cp: ControlPlane) -> None:
    ledger = tmp_path / "refusal-ledger"
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp, with_envoy=False, concurrency=2, envoi_env=_env(),
                    envoi_args=("-p", "xds_worker_refusal_plugin",
                                "--refusal-ledger", str(ledger)))
        cp.set(CDS, "1", {"svc": cluster("svc"), "other": cluster("other")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port]),
                          "other": assignment("other", [b.port])})
        pair.set_listeners("1", lambda p: listener(p, "svc"))
        with pair:
            port = pair.ports["envoi"]
            pair.wait_get(a.port)
            assert _batch(port) == [(200, a.port)] * BATCH
            workers = _per_worker(pair)
            assert len(workers) == 2 and all(v > 0 for v in workers.values()), workers
            # As Envoy counts it: once per worker that added the listener.
            assert pair.envoi.stats()["listener_manager.listener_create_success"] == 2

            # Routes (inline in LDS): every worker sends /x to the other cluster at once.
            pair.set_listeners("2", lambda p: listener(p, routes={"/x": "other", "/": "svc"}))
            pair.wait_get(b.port, "/x")
            before = _per_worker(pair)
            assert _batch(port, "/x") == [(200, b.port)] * BATCH
            after = _per_worker(pair)
            assert all(after[k] > before[k] for k in after), (before, after)

            # Endpoints: svc moves to b in every worker.
            cp.set(EDS, "3", {"svc": assignment("svc", [b.port]),
                              "other": assignment("other", [a.port])})
            pair.wait_get(b.port, "/")
            assert _batch(port) == [(200, b.port)] * BATCH

            # A listener that one worker refuses: the update is NACKed, and no process -- not
            # the main, not the worker that accepted it -- changes.
            def refused(p: int) -> object:
                lst = listener(p, routes={"/": "other"})
                chain = json_format.MessageToDict(lst.filter_chains[0])
                chain["filters"].insert(0, {"name": "test.refuse_in_one_worker"})
                lst.filter_chains[0].Clear()
                json_format.ParseDict(chain, lst.filter_chains[0])
                return lst

            pair.set_listeners("4", refused)
            pair.envoi.wait_stat("listener_manager.lds.update_rejected", 1)
            assert ledger.exists()
            (nack,) = wait_nacks(cp, "envoi", 1)
            assert f"worker pid {ledger.read_text()} refuses this listener" in \
                nack.error_detail.message
            assert acks(cp.requests("envoi"), "Listener")[-1] == ("2", True)
            st = pair.envoi.stats()
            assert st["listener_manager.lds.version_text"] == "2"
            assert st["listener_manager.listener_modified"] == 1
            assert pair.dump("envoi")["listeners"] == [("ads_listener", "2", None)]
            assert _batch(port, "/x") == [(200, a.port)] * BATCH  # v2 routes, v3 endpoints
            assert _batch(port, "/") == [(200, b.port)] * BATCH

            # Clusters: a new one over CDS, used by a new route, in every worker.
            cp.set(CDS, "5", {"svc": cluster("svc"), "other": cluster("other"),
                              "third": cluster("third")})
            cp.set(EDS, "5", {"svc": assignment("svc", [b.port]),
                              "other": assignment("other", [a.port]),
                              "third": assignment("third", [a.port])})
            pair.set_listeners("5", lambda p: listener(p, routes={"/t": "third", "/": "svc"}))
            pair.wait_get(a.port, "/t")
            assert _batch(port, "/t") == [(200, a.port)] * BATCH
            assert pair.envoi.stats()["cluster_manager.active_clusters"] == 4  # + xds_cluster


def test_health_checks_of_a_cds_cluster_reach_every_worker(tmp_path: Path,
                                                            cp: ControlPlane) -> None:
    """A STATIC cluster added over CDS with an HTTP health check, one host of which is down:
    the main process checks, and every worker stops using the failing host."""
    dead = free_port()  # nothing listens there
    with EchoServer() as a:
        pair = Pair(tmp_path, cp, with_envoy=False, concurrency=2)
        checked = json_format.ParseDict({
            "name": "checked", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "checked", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                              "port_value": p}}}}
                for p in (a.port, dead)]}]},
            # (a check timeout the in-process echo answers in on a loaded box: one slow
            # answer would mark it unhealthy)
            "health_checks": [{"timeout": "5s", "interval": "0.2s", "unhealthy_threshold": 1,
                               "healthy_threshold": 1, "http_health_check": {"path": "/"}}],
        }, cluster("x").__class__())
        cp.set(CDS, "1", {"checked": checked})
        pair.set_listeners("1", lambda p: listener(p, "checked"))
        with pair:
            pair.envoi.wait_stat("cluster.checked.membership_healthy", 1)
            pair.envoi.wait_stat("cluster.checked.membership_total", 2)
            results = _batch(pair.ports["envoi"])
            assert results == [(200, a.port)] * BATCH, results
            workers = _per_worker(pair)
            assert len(workers) == 2 and all(v > 0 for v in workers.values()), workers


def test_route_configs_over_rds_reach_every_worker(tmp_path: Path, cp: ControlPlane) -> None:
    """RDS with workers: a listener warms in every process until its route configuration comes,
    then serves from both workers; a change reaches both (new connections and one kept open);
    an invalid one is NACKed and no worker changes."""
    with EchoServer() as a, EchoServer() as b:
        pair = Pair(tmp_path, cp, with_envoy=False, concurrency=2)
        cp.set(CDS, "1", {"svc": cluster("svc"), "other": cluster("other")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port]),
                          "other": assignment("other", [b.port])})
        pair.set_listeners("1", lambda p: listener(p, "svc"))
        with pair:
            port = pair.ports["envoi"]
            pair.wait_get(a.port)
            pair.set_listeners("2", lambda p: listener(p, rds="routes"))
            pair.envoi.wait_stat("listener_manager.total_listeners_warming", 1)
            # The listener of v1 keeps serving while v2 waits for its routes.
            assert _batch(port) == [(200, a.port)] * BATCH

            cp.set(RDS, "1", {"routes": route_config("routes", {"/": "other"})})
            pair.wait_get(b.port)
            pair.envoi.wait_stat("listener_manager.total_listeners_warming", 0)
            before = _per_worker(pair)
            assert _batch(port) == [(200, b.port)] * BATCH
            after = _per_worker(pair)
            assert len(after) == 2 and all(after[k] > before.get(k, 0) for k in after), \
                (before, after)
            kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            kept.request("GET", "/")
            assert json.loads(kept.getresponse().read())["port"] == b.port

            cp.set(RDS, "2", {"routes": route_config("routes", {"/": "svc"})})
            pair.envoi.wait_stat("http.ads_http.rds.routes.update_success", 2)
            assert _batch(port) == [(200, a.port)] * BATCH  # both workers, at once
            kept.request("GET", "/")  # the connection opened under v1 routes with v2
            assert json.loads(kept.getresponse().read())["port"] == a.port

            bad = route_config("routes", {"/": "other"})
            bad.virtual_hosts[0].routes[0].match.ClearField("prefix")
            bad.virtual_hosts[0].routes[0].match.safe_regex.regex = "(unclosed"
            cp.set(RDS, "3", {"routes": bad})
            pair.envoi.wait_stat("http.ads_http.rds.routes.update_rejected", 1)
            assert acks(cp.requests("envoi"), "RouteConfiguration")[-1] == ("2", True)
            assert _batch(port) == [(200, a.port)] * BATCH
            kept.request("GET", "/")
            assert json.loads(kept.getresponse().read())["port"] == a.port
            kept.close()
            assert pair.dump("envoi")["routes"] == [("routes", "2")]
