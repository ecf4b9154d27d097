"""Load generators: wrk (HTTP/1.1), h2load (HTTP/2), a pymongo and a boto3 loop, each
measuring the proxy's process-tree CPU over exactly the measured window."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procs import BenchError, tree_cpu

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU seconds of the proxy's whole process tree during the measured window (None: direct).
    cpu_s: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s / self.requests * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps, "cpu_us_per_req": self.cpu_us_per_req}


def tool(name: str, env_var: str) -> str:
    """A load tool: ``$ENV_VAR``, else on PATH (the Debian packages scripts/setup.sh --test
    installs)."""
    found = os.environ.get(env_var) or shutil.which(name)
    if not found:
        raise BenchError(f"{name} is not installed (scripts/setup.sh --test installs it; or set "
                         f"{env_var})")
    return found


def _taskset(cmd: list[str], cpus: set[int] | None) -> list[str]:
    if cpus is None:
        return cmd
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *cmd]


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if not m:
        raise BenchError(f"cannot read the latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> tuple[int, float, float, float, int]:
    """(requests, seconds, p50 ms, p99 ms, errors) from ``wrk --latency`` output."""
    m = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s)", out)
    if not m:
        raise BenchError(f"wrk printed no request count:\n{out}")
    requests, seconds = int(m.group(1)), _ms(m.group(2) + m.group(3)) / 1000
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    if "50" not in pct or "99" not in pct:
        raise BenchError(f"wrk printed no latency distribution:\n{out}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return requests, seconds, _ms(pct["50"]), _ms(pct["99"]), errors


def run_wrk(url: str, seconds: float, threads: int, conns: int, cpus: set[int] | None,
            proxy_pid: int | None) -> LoadResult:
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
    cmd = _taskset([tool("wrk", "WRK"), f"-t{threads}", f"-c{conns}", duration, "--latency",
                    "--timeout", "5s", url], cpus)
    cpu0 = tree_cpu(proxy_pid) if proxy_pid else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    cpu1 = tree_cpu(proxy_pid) if proxy_pid else None
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    requests, secs, p50, p99, errors = parse_wrk(out.stdout)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return LoadResult(requests, secs, p50, p99, errors, cpu)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_h2load(url: str, seconds: float, clients: int, streams: int, cpus: set[int] | None,
               proxy_pid: int | None, extra: tuple[str, ...] = ()) -> LoadResult:
    """``extra``: more h2load arguments (``-d body`` for POSTs, ``-H`` headers)."""
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        cmd = _taskset([tool("h2load", "H2LOAD"), "-t1", f"-c{clients}", f"-m{streams}",
                        f"-D{max(1, round(seconds))}", f"--log-file={log.name}", *extra, url],
                       cpus)
        cpu0 = tree_cpu(proxy_pid) if proxy_pid else None
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        cpu1 = tree_cpu(proxy_pid) if proxy_pid else None
        if out.returncode != 0:
            raise BenchError(f"h2load failed ({out.returncode}): {out.stderr or out.stdout}")
        lat = sorted(int(line.split("\t")[2]) / 1000 for line in Path(log.name).read_text()
                     .splitlines() if line.count("\t") >= 2)
    m = re.search(r"finished in ([0-9.]+)(us|ms|s)", out.stdout)
    req = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", out.stdout)
    if not m or not req:
        raise BenchError(f"h2load printed no summary:\n{out.stdout}")
    secs = _ms(m.group(1) + m.group(2)) / 1000
    errors = sum(int(x) for x in req.groups()[1:])
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return LoadResult(int(req.group(1)), secs, _percentile(lat, 0.5), _percentile(lat, 0.99),
                      errors, cpu)


def run_mongo(port: int, seconds: float, warmup: float, clients: int, cpus: set[int] | None,
              proxy_pid: int | None) -> LoadResult:
    """``clients`` pymongo processes doing insert_one + find_one until ``seconds`` are over."""
    return _run_client_loop("bench.mongo_load", "the pymongo loop", port, seconds, warmup,
                            clients, cpus, proxy_pid)


def run_dynamodb(port: int, seconds: float, warmup: float, clients: int,
                 cpus: set[int] | None, proxy_pid: int | None) -> LoadResult:
    """``clients`` boto3 processes doing PutItem + GetItem until ``seconds`` are over."""
    return _run_client_loop("bench.dynamodb_load", "the boto3 loop", port, seconds, warmup,
                            clients, cpus, proxy_pid)


def _run_client_loop(module: str, what: str, port: int, seconds: float, warmup: float,
                     clients: int, cpus: set[int] | None, proxy_pid: int | None) -> LoadResult:
    """A client loop module (``python -m <module>``) that prints ``start``/``end`` around its
    measured window and then a JSON summary; the proxy's CPU is read at the two marks."""
    cmd = _taskset([sys.executable, "-m", module, "--port", str(port),
                    "--seconds", str(seconds), "--warmup", str(warmup),
                    "--clients", str(clients)], cpus)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=root)
    assert proc.stdout is not None
    cpu0 = cpu1 = None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        line = line.strip()
        if line == "start":
            cpu0 = tree_cpu(proxy_pid) if proxy_pid else None
        elif line == "end":
            cpu1 = tree_cpu(proxy_pid) if proxy_pid else None
        elif line.startswith("{"):
            result = json.loads(line)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait(seconds + 120) != 0 or not result:
        raise BenchError(f"{what} failed ({proc.returncode}): {err}")
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return LoadResult(result["ops"], result["seconds"], result["p50_ms"], result["p99_ms"],
                      result["errors"], cpu)
