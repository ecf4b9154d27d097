"""Where the CPU of an h1-small run goes, and what ``--concurrency 2`` can reach on this machine.

    .venv/bin/python -m bench.scaling        # envoy, envoi: c1 pinned, c1 shared, c2; 3 x 5 s
    .venv/bin/python -m bench.scaling --peers envoi --seconds 3 --reps 1 --json out.json

The suite (``python -m bench``) gives req/s and the proxy's CPU per request. On a machine with
few cores the load generator (wrk) and the backend (nginx) run on the cores the proxy's workers
use, so req/s at ``--concurrency 2`` says as much about them as about the proxy. This measures,
per row, the CPU per request of each party over the same window: the proxy (and each of its
workers: processes for envoi, ``wrk:worker_N`` threads for Envoy), wrk, nginx, and whatever else
ran on the machine meanwhile (other processes: ``/proc/stat`` busy time minus ours); and how the
kernel's SO_REUSEPORT hashing spread the connections over the workers (each worker's
``downstream_cx_total``).

From those it computes the **ceiling**: the req/s the row could reach if every core of the
machine were busy with nothing but this proxy, wrk and nginx at the measured costs,
``cores x 1e6 / (proxy + wrk + nginx µs/req)`` (at ``--concurrency 1``, pinned, the proxy's core
alone: ``1e6 / proxy µs/req``, or the load side's core if that is slower); and the c2 ÷ c1
ceiling ratio. With 2 cores, a load side costing L µs/req and a proxy costing P (the same at c1
and c2), c2 ÷ c1 cannot exceed ``2P / (P + L)``, whatever the proxy does: 1.6x needs L ≤ P / 4.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import configs
from bench.load import _taskset, parse_wrk, tool
from bench.procs import CLK_TCK, BenchError, cpu_seconds, http_get, tree, tree_cpu
from bench.suite import ROOT, Backends, _free_port, proxy


@dataclass
class Run:
    peer: str
    layout: str
    rps: float
    proxy_us: float
    wrk_us: float
    nginx_us: float
    other_us: float
    #: Per worker: connections accepted, and its share of the proxy's CPU (main process or
    #: main thread excluded).
    worker_cx: list[int] = field(default_factory=list)
    worker_cpu_share: list[float] = field(default_factory=list)
    idle_share: float = 0.0
    #: CPU µs per request of the main process (envoi) or of the threads that are not workers
    #: (Envoy's main thread and the rest).
    main_us: float = 0.0
    #: Context switches of the workers per request: voluntary (waiting for events) and
    #: involuntary (preempted: another process wanted the core).
    voluntary_cs: float = 0.0
    involuntary_cs: float = 0.0


def _machine_jiffies() -> tuple[int, int]:
    """(busy, idle) jiffies of all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, idle


def _worker_cpu(peer: str, pid: int) -> list[float]:
    """CPU seconds of each worker: envoi's worker processes, Envoy's worker threads."""
    if peer == "envoi":
        kids = sorted(p for p in tree(pid) if p != pid)
        return [cpu_seconds([p]) for p in kids or [pid]]
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().startswith("wrk:worker"):
                f = (task / "stat").read_text().rsplit(")", 1)[1].split()
                out.append((int(f[11]) + int(f[12])) / CLK_TCK)
    return out


def _switches(peer: str, pid: int) -> tuple[int, int]:
    """Context switches of the workers so far: (voluntary, involuntary)."""
    if peer == "envoi":
        tasks = [Path(f"/proc/{p}") for p in tree(pid) if p != pid] or [Path(f"/proc/{pid}")]
    else:
        tasks = [t for t in Path(f"/proc/{pid}/task").glob("*")
                 if (t / "comm").read_text().startswith("wrk:worker")]
    vol = invol = 0
    for t in tasks:
        with contextlib.suppress(OSError):
            for line in (t / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    return vol, invol


def _worker_connections(admin: int) -> list[int]:
    _, body = http_get(admin, "/stats?filter=downstream_cx_total")
    found = re.findall(r"^listener\.[^.]+\S*\.worker_(\d+)\.downstream_cx_total: (\d+)$",
                       body.decode(), re.M)
    per: dict[int, int] = {}
    for idx, n in found:
        per[int(idx)] = per.get(int(idx), 0) + int(n)
    return [per[i] for i in sorted(per)]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def one_run(peer: str, layout: str, proxy_pid: int, admin: int, nginx_pid: int, port: int,
            seconds: float, wrk_cpus: set[int] | None, conns: int, threads: int) -> Run:
    cmd = _taskset([tool("wrk", "WRK"), f"-t{threads}", f"-c{conns}",
                    f"-d{max(1, round(seconds))}s", "--latency", f"http://127.0.0.1:{port}/"],
                   wrk_cpus)
    cx0 = _worker_connections(admin)
    p0, n0, c0 = tree_cpu(proxy_pid), tree_cpu(nginx_pid), _children_cpu()
    w0, s0 = _worker_cpu(peer, proxy_pid), _switches(peer, proxy_pid)
    busy0, idle0 = _machine_jiffies()
    # taskset execs wrk: the one child reaped in this window, so the children's rusage grows
    # by exactly wrk's CPU.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    busy1, idle1 = _machine_jiffies()
    p1, n1, c1 = tree_cpu(proxy_pid), tree_cpu(nginx_pid), _children_cpu()
    w1, s1 = _worker_cpu(peer, proxy_pid), _switches(peer, proxy_pid)
    cx1 = _worker_connections(admin)
    if out.returncode != 0:
        raise BenchError(f"wrk failed: {out.stderr or out.stdout}")
    requests, secs, _, _, errors = parse_wrk(out.stdout)
    if errors or not requests:
        raise BenchError(f"wrk: {errors} errors, {requests} requests")
    proxy_s, nginx_s, wrk_s = p1 - p0, n1 - n0, c1 - c0
    other_s = max(0.0, (busy1 - busy0) / CLK_TCK - proxy_s - nginx_s - wrk_s)
    workers_s = [b - a for a, b in zip(w0, w1, strict=False)]
    total = sum(workers_s) or 1.0
    return Run(peer, layout, requests / secs, proxy_s / requests * 1e6,
               wrk_s / requests * 1e6, nginx_s / requests * 1e6, other_s / requests * 1e6,
               worker_cx=[b - a for a, b in zip(cx0, cx1, strict=False)],
               worker_cpu_share=[round(w / total, 3) for w in workers_s],
               idle_share=(idle1 - idle0) / max(1, (busy1 - busy0) + (idle1 - idle0)),
               main_us=max(0.0, proxy_s - sum(workers_s)) / requests * 1e6,
               voluntary_cs=(s1[0] - s0[0]) / requests, involuntary_cs=(s1[1] - s0[1]) / requests)


#: name -> (concurrency, proxy CPUs, load-side CPUs): the suite's two layouts, and c1 with
#: nothing pinned, which shows what sharing the cores with wrk and nginx costs one process
#: (the proxy's CPU per request against c1-pinned's) without a second worker.
LAYOUTS: dict[str, tuple[int, set[int] | None, set[int] | None]] = {
    "c1-pinned": (1, {0}, {1}),
    "c1-shared": (1, None, None),
    "c2-shared": (2, None, None),
}


def ceiling(runs: dict[str, Run], cores: int) -> dict[str, float]:
    """What each layout could reach with the machine to itself, at the measured costs."""
    out = {}
    for name, r in runs.items():
        load = r.wrk_us + r.nginx_us
        if name == "c1-pinned":
            out[name] = 1e6 / max(r.proxy_us, load)
        else:
            busy = 1 if name.startswith("c1") else cores  # one worker keeps one core busy
            out[name] = min(busy * 1e6 / r.proxy_us, cores * 1e6 / (r.proxy_us + load))
    return out


def median_run(runs: list[Run]) -> Run:
    by_rps = sorted(runs, key=lambda r: r.rps)
    return by_rps[len(by_rps) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling",
                                 description=__doc__.split("\n\n")[1])
    ap.add_argument("--peers", default="envoy,envoi")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    if cores < 2:
        raise SystemExit("needs at least 2 CPUs")
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="envoi-scaling-"))
    backends = Backends(tmp)
    results: list[dict[str, Any]] = []
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} CPUs, load average "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    try:
        backend = backends.need("http")
        nginx_pid = backends.procs["nginx"].pid
        for peer in args.peers.split(","):
            runs: dict[str, Run] = {}
            for name in args.layouts.split(","):
                conc, proxy_cpus, load_cpus = LAYOUTS[name]
                backends.pin(load_cpus)
                admin, listen = _free_port(), _free_port()
                text = configs.http_proxy(admin, listen, backend)
                with proxy(peer, text, admin, conc, tmp, proxy_cpus, f"{peer}-{name}") as p:
                    threads, conns = min(conc, 2), 32 * conc  # the suite's h1-small load
                    one_run(peer, name, p.pid, admin, nginx_pid, listen, 1, load_cpus, conns,
                            threads)  # warm-up
                    reps = [one_run(peer, name, p.pid, admin, nginx_pid, listen, args.seconds,
                                    load_cpus, conns, threads) for _ in range(args.reps)]
                runs[name] = median_run(reps)
                results += [asdict(r) for r in reps]
            ceil = ceiling(runs, cores)
            for name, r in runs.items():
                print(f"{peer:6s} {name:10s} {r.rps:8.0f} req/s (ceiling {ceil[name]:6.0f}, "
                      f"{r.rps / ceil[name]:4.0%}) µs/req: proxy {r.proxy_us:5.1f} wrk "
                      f"{r.wrk_us:5.1f} nginx {r.nginx_us:5.1f} others {r.other_us:5.1f}; "
                      f"idle {r.idle_share:4.0%}; main {r.main_us:4.1f} µs/req; workers: cx "
                      f"{r.worker_cx} CPU {r.worker_cpu_share}, switches/req "
                      f"{r.voluntary_cs:.2f} + {r.involuntary_cs:.2f} preempted")
            if {"c1-pinned", "c2-shared"} <= runs.keys():
                c1, c2 = runs["c1-pinned"], runs["c2-shared"]
                print(f"{peer:6s} c2 / c1: measured {c2.rps / c1.rps:.2f}x; ceilings "
                      f"{ceil['c2-shared'] / ceil['c1-pinned']:.2f}x ({cores} cores x 1e6 / "
                      f"(proxy + wrk + nginx) at c2 over 1e6 / proxy at c1)")
    except BenchError as exc:  # a peer missing, a process that died, load errors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        backends.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
