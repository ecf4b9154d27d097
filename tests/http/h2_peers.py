"""Real HTTP/2 peers for the end-to-end tests: hypercorn and nghttpd upstreams, and the curl,
h2load and nghttp clients, each a real process on loopback; plus the proxy config (one HCM
listener with ``codec_type: AUTO``, an HTTP/1.1 and an HTTP/2 cluster) that Envoy and envoi
both run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from envoi.testing import free_port
from http_peers import ALL_ROUTES, hcm_listener

HERE = Path(__file__).parent


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} is missing: scripts/setup.sh --test installs it"
    return found


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"peer exited: {proc.args}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"port {port} not open after {timeout} s: {proc.args}")


class _Process:
    port: int
    proc: subprocess.Popen[bytes]

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Hypercorn(_Process):
    """hypercorn with ``h2_echo_app`` on one port: HTTP/1.1, h2c prior knowledge and Upgrade
    (and TLS + ALPN when given a certificate)."""

    def __init__(self, cert: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.cert = cert

    def __enter__(self) -> Hypercorn:
        args = [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}",
                "--log-level", "warning"]
        if self.cert:
            args += ["--certfile", str(self.cert[0]), "--keyfile", str(self.cert[1])]
        self.proc = subprocess.Popen([*args, "h2_echo_app:app"], cwd=HERE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self


class Nghttpd(_Process):
    """nghttpd serving ``docroot`` over h2c (HTTP/2 only: no HTTP/1.1, no Upgrade)."""

    def __init__(self, docroot: Path) -> None:
        self.port = free_port()
        self.docroot = docroot

    def __enter__(self) -> Nghttpd:
        self.proc = subprocess.Popen([_tool("nghttpd"), "--no-tls", "-a", "127.0.0.1", "-d",
                                      str(self.docroot), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        return self


@dataclass
class CurlResult:
    status: int
    version: str  # "2", "1.1"
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    stderr: str


def curl(url: str, *args: str, data: bytes | None = None, timeout: float = 20) -> CurlResult:
    """curl with ``-v``: status, version and headers from its trace, body from stdout, trailers
    (HTTP/2 headers after the body) from the trace as well."""
    cmd = [_tool("curl"), "-sS", "-v", "--max-time", str(int(timeout)), *args, url]
    if data is not None:
        cmd[1:1] = ["--data-binary", "@-"]
    out = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout + 5)
    err = out.stderr.decode(errors="replace")
    status, version = 0, ""
    headers: list[tuple[str, str]] = []
    trailers: list[tuple[str, str]] = []
    seen_head = False
    for line in err.splitlines():
        m = re.match(r"< HTTP/([\d.]+) (\d+)", line)
        if m:
            version, status = m.group(1), int(m.group(2))
            headers = []
            seen_head = True
            continue
        if line.startswith("< ") and ":" in line and seen_head:
            k, v = line[2:].split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
        elif line.startswith("< ") and not line[2:].strip():
            seen_head = False  # end of the head: later "< name: value" lines are trailers
        elif line.startswith("< ") and ":" in line:
            k, v = line[2:].split(":", 1)
            trailers.append((k.strip().lower(), v.strip()))
    return CurlResult(status, version, headers, out.stdout, trailers, err)


@dataclass
class H2LoadResult:
    done: int
    succeeded: int
    failed: int
    errored: int
    status_2xx: int
    output: str


def h2load(url: str, *args: str, timeout: float = 60) -> H2LoadResult:
    out = subprocess.run([_tool("h2load"), *args, url], capture_output=True, timeout=timeout)
    text = out.stdout.decode(errors="replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text)
    s = re.search(r"status codes: (\d+) 2xx", text)
    assert m and s, text + out.stderr.decode(errors="replace")
    return H2LoadResult(int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6)),
                        int(s.group(1)), text)


def make_docroot(path: Path, sizes: dict[str, int]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pattern = bytes(range(256)) * 4096
    for name, n in sizes.items():
        with open(path / name, "wb") as f:
            left = n
            while left:
                piece = pattern[:min(left, len(pattern))]
                f.write(piece)
                left -= len(piece)
    return path


def proxy_yaml(port: int, admin: int, h1_port: int, h2_port: int, *,
               h2_options: str = "{}", extra_hcm: str = "", listener_tls: str = "",
               h2_cluster_extra: str = "") -> str:
    """One HCM listener (``codec_type: AUTO``): ``/h1/...`` to the HTTP/1.1 cluster, ``/h2/...``
    to the HTTP/2 one (prefix rewritten to ``/``), ``/direct`` answered by the proxy.
    ``listener_tls``: the filter chain's ``transport_socket`` (indented 6); ``h2_cluster_extra``:
    more of the HTTP/2 cluster (its ``transport_socket``, indented 4)."""
    return hcm_listener("h2_in").format(admin=admin, port=port) + f"""\
          stat_prefix: h2_in
          codec_type: AUTO{extra_hcm}
""" + ALL_ROUTES + f"""\
              - match: {{prefix: "/direct"}}
                direct_response: {{status: 200, body: {{inline_string: "direct"}}}}
              - match: {{prefix: "/h1/"}}
                route: {{cluster: h1, prefix_rewrite: "/"}}
              - match: {{prefix: "/h2/"}}
                route: {{cluster: h2, prefix_rewrite: "/", timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{listener_tls}  clusters:
  - name: h1
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: h1
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {h1_port}}}}}}}
  - name: h2
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {h2_options}}}
    load_assignment:
      cluster_name: h2
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {h2_port}}}}}}}
{h2_cluster_extra}"""


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
