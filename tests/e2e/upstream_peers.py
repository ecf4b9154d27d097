"""Helpers for the upstream end-to-end tests: hc_backend.py processes and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from envoi.testing import free_port, wait_for
from http_peers import ROUTER_ONLY, hcm_listener

HERE = Path(__file__).parent

# The admin and one HCM listener ``web_in`` (router only, every path to one route) of the
# upstream tests, format fields ``admin`` and ``listen``: a test follows it with the route's
# action (at 16 spaces) and its clusters.
WEB_LISTENER = hcm_listener("web_in", "listen") + """\
          stat_prefix: web
""" + ROUTER_ONLY + """\
          route_config:
            virtual_hosts:
            - name: web
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
"""


class Backend:
    """One ``hc_backend.py`` process on a fixed port (so it can be killed and restarted)."""

    def __init__(self, port: int | None = None, mode: str = "normal",
                 address: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.mode = mode
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Backend:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "hc_backend.py"),
                                      str(self.port), self.mode, self.address],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(b"READY"), line
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def control(self, what: str) -> dict[str, Any]:
        c = http.client.HTTPConnection(self.address, self.port, timeout=5)
        c.request("POST", f"/control/{what}")
        data = json.loads(c.getresponse().read())
        c.close()
        return data  # type: ignore[no-any-return]

    def set_health(self, status: int) -> None:
        self.control(f"health?status={status}")


def request(port: int, path: str = "/", headers: dict[str, str] | None = None,
            timeout: float = 10) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def backend_address(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["address"])
    except (ValueError, KeyError):
        return None


def backend_port(body: bytes) -> int | None:
    try:
        return int(json.loads(body)["port"])
    except (ValueError, KeyError):
        return None


def host_flags(clusters_text: str, cluster: str) -> dict[int, str]:
    """port -> health_flags of every host of ``cluster`` in ``/clusters`` text."""
    out = {}
    for line in clusters_text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            out[int(parts[1].rsplit(":", 1)[1])] = parts[3]
    return out


def wait_flags(get: Any, cluster: str, want: dict[int, str], timeout: float = 30) -> None:
    wait_for(lambda: host_flags(get("/clusters"), cluster) == want, timeout,
             what=f"{cluster} health flags {want}")
