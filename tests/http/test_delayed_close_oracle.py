"""``delayed_close_timeout`` after a protocol error, through the real Envoy 1.39.3 and envoi: the
400 is flushed, then the proxy waits that long for the client to close before it closes
(``downstream_cx_delayed_close_timeout``); ``0s`` closes at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import ALL_ROUTES, HCM_LISTENER

CONFIG = HCM_LISTENER + """\
          stat_prefix: dc
          delayed_close_timeout: {timeout}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                direct_response: {{status: 200}}
"""


def closed_after(port: int) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        t0 = time.monotonic()
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.split(b"\r\n")[0], time.monotonic() - t0
            out += chunk


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
@pytest.mark.parametrize(("timeout", "low", "high", "counted"),
                         # (2 s and at once: far enough apart that a loaded box, which only
                         # adds time, does not blur them)
                         [("2s", 1.9, 6.0, 1), ("0s", 0.0, 1.5, 0)], ids=["2s", "0s"])
def test_delayed_close_timeout_as_envoy(kind: str, timeout: str, low: float, high: float,
                                        counted: int,
                                        proxy_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    proc = proxy_process(kind, CONFIG.format(admin=admin, port=port, timeout=timeout), admin)
    status, took = closed_after(port)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert low <= took < high, (kind, took)
    wait_for(lambda: proc.stats().get("http.dc.downstream_cx_destroy") == 1, 20,
             what="the connection counted closed")
    assert proc.stats().get("http.dc.downstream_cx_delayed_close_timeout", 0) == counted
