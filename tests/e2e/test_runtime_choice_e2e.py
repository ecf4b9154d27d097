"""Which event loop and HTTP/1.1 codec envoi runs on: uvloop and httptools by default (both are
dependencies of a plain ``pip install``), the pure-Python fallbacks when asked for; logged at
start and shown in ``/server_info`` under ``runtime``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import free_port
from http_peers import ALL_ROUTES

CONFIG = """
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: web
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": "type.googleapis.com/envoy.extensions.filters.network.\\
            http_connection_manager.v3.HttpConnectionManager"
          stat_prefix: web
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                direct_response: {{status: 200}}
"""
UVLOOP = f"uvloop {importlib.metadata.version('uvloop')}"
HTTPTOOLS = f"httptools {importlib.metadata.version('httptools')} (llhttp)"
H11 = f"h11 {importlib.metadata.version('h11')} (pure Python)"
ASYNCIO = f"asyncio (CPython {sys.version.split()[0]})"


@pytest.mark.parametrize(("args", "env", "want"), [
    ([], {}, {"event_loop": UVLOOP, "http1_codec": HTTPTOOLS}),
    (["--event-loop", "asyncio", "--http1-codec", "h11"], {},
     {"event_loop": ASYNCIO, "http1_codec": H11}),
    ([], {"ENVOI_EVENT_LOOP": "asyncio", "ENVOI_HTTP1_CODEC": "h11"},
     {"event_loop": ASYNCIO, "http1_codec": H11}),
    (["--event-loop", "uvloop", "--http1-codec", "httptools", "--concurrency", "2"], {},
     {"event_loop": UVLOOP, "http1_codec": HTTPTOOLS}),
], ids=["default", "fallbacks-by-option", "fallbacks-by-env", "workers"])
def test_runtime_logged_and_in_server_info(
        args: list[str], env: dict[str, str], want: dict[str, str],
        envoi_process: Callable[..., Any]) -> None:
    admin, port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items()
            if k not in ("ENVOI_EVENT_LOOP", "ENVOI_HTTP1_CODEC")}
    proc = envoi_process(CONFIG.format(admin=admin, port=port), admin,
                         args=["--concurrency", "1", *args], env={**base, **env})
    status, body = proc.get("/server_info")
    assert status == 200
    assert json.loads(body)["runtime"] == want
    line = "running on " + ", ".join(f"{k}: {v}" for k, v in want.items())
    assert line in proc.log(), proc.log()


def test_uvloop_asked_for_but_missing_is_an_error(tmp_path: Any) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(admin=free_port(), port=free_port()))
    # A uvloop that cannot be imported: a None entry in sys.modules makes every import fail.
    code = ("import sys; sys.modules['uvloop'] = None; from envoi.cli import main; "
            f"sys.exit(main(['-c', {str(cfg)!r}, '--event-loop', 'uvloop']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "--event-loop uvloop: uvloop is not installed" in out.stderr
