#!/usr/bin/env python3
"""mongo_proxy benchmark: a pymongo insert_one/find_one loop against SecantusDB (a
wire-compatible server, not MongoDB) direct, through envoi (mongo_proxy + tcp_proxy) and
through Envoy's mongo_proxy + tcp_proxy (``--concurrency 1``), in one run, 127.0.0.1 only; and,
for reference, through envoi's tcp_proxy alone (same process, another listener).

For each target: ops/s, the proxy's CPU µs per op (utime+stime from /proc/<pid>/stat before and
after the loop) and its RSS after the loop (envoi's covers both its listeners), then the ratio
envoi/Envoy. Envoy decodes nothing
here (pymongo speaks OP_MSG only: one ``decoding_error`` per connection, then sniffing stops);
envoi decodes every message. The checked stats after each run show that.

    .venv/bin/python bench/mongo_bench.py [--ops 20000] [--max-seconds 60] [--rounds 1]

Bounded: at most ``--ops`` operations and ``--max-seconds`` per target and round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymongo import MongoClient

VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: mongo_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: bench
          commands: [insert, find, getMore, update, delete]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench_tcp
          cluster: db
{extra_listener}  clusters:
  - name: db
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: db
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {db}}}}}}}
"""

# envoi only: the same tcp_proxy without mongo_proxy, to show what the sniffing itself costs.
TCP_ONLY_LISTENER = """  - name: tcp_only
    address: {{socket_address: {{address: 127.0.0.1, port_value: {tcp_only}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench_tcp_only
          cluster: db
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(cond: Callable[[], bool], timeout: float, what: str,
         proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: process exited with {proc.returncode}")
        try:
            if cond():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def exe(name: str) -> str:
    found = VENV_BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if not which:
        raise SystemExit(f"{name} not found (venv {VENV_BIN})")
    return which


@contextmanager
def process(cmd: list[str], ready: Callable[[], bool], what: str,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix="mongo-bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        wait(ready, 60, what, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stats_of(admin: int) -> dict[str, Any]:
    _, body = http(admin, "/stats?format=json")
    return {e["name"]: e["value"] for e in json.loads(body)["stats"]
            if "name" in e and e["name"].startswith("mongo.bench.")}


def run_loop(port: int, coll_name: str, ops: int, max_seconds: float,
             proxy_pid: int | None) -> dict[str, float]:
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=10000")
    try:
        coll = client.bench[coll_name]
        coll.drop()
        for i in range(200):  # warm-up: connection, pool, server caches
            coll.insert_one({"_id": -1 - i, "w": i})
            coll.find_one({"_id": -1 - i})
        cpu0 = cpu_seconds(proxy_pid) if proxy_pid else 0.0
        t0 = time.perf_counter()
        deadline = t0 + max_seconds
        done = 0
        i = 0
        while done < ops and time.perf_counter() < deadline:
            coll.insert_one({"_id": i, "sku": f"sku-{i}", "qty": i % 17, "tags": ["a", "b"]})
            doc = coll.find_one({"_id": i})
            assert doc is not None and doc["qty"] == i % 17
            done += 2
            i += 1
        elapsed = time.perf_counter() - t0
        cpu = (cpu_seconds(proxy_pid) - cpu0) if proxy_pid else 0.0
        return {"ops": done, "seconds": elapsed, "ops_s": done / elapsed,
                "cpu_us_op": cpu / done * 1e6 if proxy_pid else 0.0,
                "rss_mb": rss_mb(proxy_pid) if proxy_pid else 0.0}
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=20000, help="operations per target (20000)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time bound per target")
    ap.add_argument("--rounds", type=int, default=1, help="rounds (targets interleaved)")
    args = ap.parse_args()
    ops = min(args.ops, 200_000)

    tmp = Path(tempfile.mkdtemp(prefix="mongo-bench-"))
    db = free_port()
    names = ("direct", "envoi", "envoy", "envoi-tcp-only")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with process([exe("secantusd-py"), "--host", "127.0.0.1", "--port", str(db),
                  "--storage-path", ":memory:", "--standalone"],
                 lambda: port_open(db), "secantusd-py"):
        ea, el, et = free_port(), free_port(), free_port()
        (tmp / "envoi.yaml").write_text(CONFIG.format(
            admin=ea, listen=el, db=db,
            extra_listener=TCP_ONLY_LISTENER.format(tcp_only=et)))
        va, vl = free_port(), free_port()
        (tmp / "envoy.yaml").write_text(CONFIG.format(admin=va, listen=vl, db=db,
                                                      extra_listener=""))
        with process([sys.executable, "-m", "envoi", "-c", str(tmp / "envoi.yaml"),
                      "-l", "warning"],
                     lambda: http(ea, "/ready")[0] == 200, "envoi", tmp) as envoi, \
             process([exe("envoy"), "-c", str(tmp / "envoy.yaml"), "--concurrency", "1",
                      "--disable-hot-restart", "-l", "warning"],
                     lambda: http(va, "/ready")[0] == 200, "envoy", tmp) as envoy:
            for r in range(args.rounds):
                for name, port, pid in (("direct", db, None), ("envoi", el, envoi.pid),
                                        ("envoy", vl, envoy.pid),
                                        ("envoi-tcp-only", et, envoi.pid)):
                    coll = f"{name.replace('-', '_')}{r}"
                    res = run_loop(port, coll, ops, args.max_seconds, pid)
                    results[name].append(res)
                    print(f"round {r + 1} {name:14s} {res['ops']:.0f} ops in "
                          f"{res['seconds']:.2f} s", file=sys.stderr)
            envoi_stats, envoy_stats = stats_of(ea), stats_of(va)

    def best(name: str, key: str) -> float:
        vals = [x[key] for x in results[name]]
        return max(vals) if key == "ops_s" else min(vals) if key == "cpu_us_op" else vals[-1]

    print(f"\n{ops} ops per target (insert_one + find_one pairs), best of {args.rounds} "
          f"round(s), pymongo {__import__('pymongo').version}, Python "
          f"{sys.version.split()[0]}\n")
    print("| target | ops/s | proxy CPU µs/op | proxy RSS MB |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        cpu = f"{best(name, 'cpu_us_op'):.1f}" if name != "direct" else "-"
        rss = f"{best(name, 'rss_mb'):.1f}" if name != "direct" else "-"
        print(f"| {name} | {best(name, 'ops_s'):.0f} | {cpu} | {rss} |")
    ratio = best("envoi", "ops_s") / best("envoy", "ops_s")
    print(f"\nenvoi/Envoy throughput: {ratio:.2f}x (target >= 0.80x); envoi/direct: "
          f"{best('envoi', 'ops_s') / best('direct', 'ops_s'):.2f}x; "
          f"Envoy/direct: {best('envoy', 'ops_s') / best('direct', 'ops_s'):.2f}x")
    print(f"envoi CPU per op / Envoy CPU per op: "
          f"{best('envoi', 'cpu_us_op') / best('envoy', 'cpu_us_op'):.2f}x; mongo_proxy's "
          f"own share of envoi's: "
          f"{best('envoi', 'cpu_us_op') - best('envoi-tcp-only', 'cpu_us_op'):.1f} µs/op")
    # What each proxy decoded: envoi every OP_MSG, Envoy nothing past the first frame.
    keys = ("mongo.bench.op_msg", "mongo.bench.cmd.insert.total", "mongo.bench.cmd.find.total",
            "mongo.bench.decoding_error")
    print("envoi stats:", {k.removeprefix("mongo.bench."): envoi_stats.get(k, 0) for k in keys})
    print("Envoy stats:", {k.removeprefix("mongo.bench."): envoy_stats.get(k, 0) for k in keys})


if __name__ == "__main__":
    main()
