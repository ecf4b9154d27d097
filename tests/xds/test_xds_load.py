"""xDS under traffic: a bounded request loop runs while endpoints, routes, listeners and
clusters change 20 times over ADS. No request may fail (every change routes to live upstreams,
so none is a request the new config itself refuses), every change must be seen by the traffic,
and envoi's resident memory after the changes must be back near where it was before them.

Two clients run throughout: one keeps a connection open (and opens a new one only when envoi
asks it to, with ``connection: close``, as a drained listener does), one opens a connection per
request. Every request counts: a replaced listener's connections stay open through the drain
and answer their next request with ``connection: close``, so neither a reused keep-alive
connection nor one accepted just before the replacement may meet a close or a reset (envoi
used to close idle connections at once: a few of each were reset per run)."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from control_plane import ControlPlane
from envoi.testing import wait_for
from http_peers import EchoServer
from xds_pair import CDS, EDS, RDS, Pair, assignment, cluster, get, listener, route_config

CHANGES = 20
MAX_REQUESTS = 60_000  # the loop's bound, whatever happens
RSS_SLACK = 8 * 1024 * 1024  # bytes of growth allowed over the 20 changes


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Traffic:
    """The request loop: ``keepalive`` or new connections, GET / and /x in turn."""

    def __init__(self, port: int, allowed: set[int]) -> None:
        self.port, self.allowed = port, allowed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.seen: Counter[tuple[str, int, str]] = Counter()  # (path, upstream port, server)
        self.threads = [threading.Thread(target=self._run, args=(keep,), daemon=True)
                        for keep in (True, False)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    @property
    def total(self) -> int:
        with self.lock:
            return self.ok + len(self.failures)

    def _record(self, path: str, status: int, body: bytes, server: str) -> None:
        with self.lock:
            if status != 200:
                self.failures.append(f"{path}: {status} {body[:200]!r}")
                return
            port = json.loads(body)["port"]
            if port not in self.allowed:
                self.failures.append(f"{path}: reached port {port}")
                return
            self.ok += 1
            self.seen[(path, port, server)] += 1

    def _run(self, keepalive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self.stop.is_set() and self.total < MAX_REQUESTS:
            path = "/x" if n % 2 else "/"
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                with self.lock:
                    kind = "keep-alive" if keepalive else "new"
                    self.failures.append(f"{path} ({kind}): {type(exc).__name__}: {exc}")
                continue
            self._record(path, resp.status, body, resp.getheader("server", ""))
            if not keepalive or resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def test_twenty_changes_under_traffic(tmp_path: Path, cp: ControlPlane) -> None:
    with EchoServer() as a, EchoServer() as b, EchoServer() as c:
        pair = Pair(tmp_path, cp, with_envoy=False, envoi_args=("--drain-time-s", "2"))
        ports = [a.port, b.port, c.port]

        def clusters(version: int) -> dict[str, Any]:
            # A change of cluster: svc's connect_timeout moves, and a spare comes and goes.
            out = {"svc": cluster("svc", connect_timeout=f"{1 + version % 2}s"),
                   "other": cluster("other")}
            if version % 2:
                out["spare"] = cluster("spare")
            return out

        def endpoints(version: int) -> dict[str, Any]:
            return {"svc": assignment("svc", [ports[version % 3]]),
                    "other": assignment("other", [ports[(version + 1) % 3]]),
                    "spare": assignment("spare", [a.port])}

        def routes(version: int) -> dict[str, Any]:
            table = {"/x": "other" if version % 2 else "svc", "/": "svc"}
            return {"routes": route_config("routes", table)}

        def listeners(version: int) -> None:
            pair.set_listeners(str(version), lambda p: listener(
                p, rds="routes", server_name=f"envoi-{version}"))

        versions = {"cds": 1, "eds": 1, "rds": 1, "lds": 1}
        cp.set(CDS, "1", clusters(1))
        cp.set(EDS, "1", endpoints(1))
        cp.set(RDS, "1", routes(1))
        listeners(1)
        with pair:
            port = pair.ports["envoi"]
            pair.wait_get(ports[1])
            pid = pair.envoi.proc.pid  # type: ignore[union-attr]

            def change(kind: str) -> str:
                v = versions[kind] = versions[kind] + 1
                if kind == "cds":
                    cp.set(CDS, str(v), clusters(v))
                    stat, want = "cluster_manager.cds.version_text", str(v)
                elif kind == "eds":
                    cp.set(EDS, str(v), endpoints(v))
                    wait_for(lambda: get(port)[1] == ports[v % 3], 30, what=f"eds v{v}")
                    return f"{kind} v{v}"
                elif kind == "rds":
                    cp.set(RDS, str(v), routes(v))
                    stat, want = "http.ads_http.rds.routes.version_text", str(v)
                else:
                    listeners(v)
                    stat, want = "listener_manager.lds.version_text", str(v)
                pair.envoi.wait_stat(stat, lambda got: got == want, timeout=30)
                return f"{kind} v{v}"

            kinds = ["eds", "rds", "lds", "cds"]
            with Traffic(port, set(ports)) as traffic:
                wait_for(lambda: traffic.total >= 200, 30, what="traffic warmed up")
                for kind in kinds:  # one of each first: what is built once is built
                    change(kind)
                wait_for(lambda: pair.envoi.stats().get(
                    "listener_manager.total_listeners_draining") == 0, 30, what="drained")
                rss_start = _rss(pid)
                done = []
                for i in range(CHANGES):
                    before = traffic.total
                    done.append(change(kinds[i % len(kinds)]))
                    # Traffic flows with each config, not only between changes.
                    wait_for(lambda before=before: traffic.total >= before + 40, 30,
                             what=f"requests after {done[-1]}")
                # The last config of each kind is what the traffic gets now.
                v = versions
                want_x = ports[(v["eds"] + 1) % 3] if v["rds"] % 2 else ports[v["eds"] % 3]
                mark = traffic.total
                wait_for(lambda: traffic.total >= mark + 100, 30, what="final traffic")
            wait_for(lambda: pair.envoi.stats().get(
                "listener_manager.total_listeners_draining") == 0, 30, what="drained")
            rss_end = _rss(pid)
            st = pair.envoi.stats()

        print(f"\nxds load: {traffic.total} requests, {traffic.ok} ok, "
              f"{len(traffic.failures)} failed; changes: {', '.join(done)}; "
              f"RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB")
        assert traffic.failures == [], traffic.failures[:20]
        assert traffic.total < MAX_REQUESTS, "the loop hit its bound before the changes ended"
        # Every change was in force for the traffic: the final endpoints, routes and listener.
        servers = {s for (_, _, s) in traffic.seen}
        assert f"envoi-{versions['lds']}" in servers, servers
        assert ("/x", want_x, f"envoi-{versions['lds']}") in traffic.seen, traffic.seen
        assert ("/", ports[versions["eds"] % 3], f"envoi-{versions['lds']}") in traffic.seen
        assert st["cluster_manager.cds.update_rejected"] == 0
        assert st["listener_manager.lds.update_rejected"] == 0
        assert st["http.ads_http.rds.routes.update_rejected"] == 0
        assert st["listener_manager.listener_modified"] >= CHANGES // 4
        assert rss_end <= rss_start + RSS_SLACK, (rss_start, rss_end)
