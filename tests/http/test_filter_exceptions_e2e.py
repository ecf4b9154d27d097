"""An HTTP filter that raises, and a filter factory that refuses its config.

A filter method that raises answers that request with a 500 local reply (Envoy's shape: no body,
``content-length: 0``), logs the exception with the filter's configured name, counts
``http.<prefix>.envoi.filter_exception``, and leaves the connection serving: the next request on
it is answered normally. Once the response has started, the stream is reset instead. A factory
whose ``create_filter_factory`` raises ValueError is a config error at the filter's path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import ALL_ROUTES, HCM_LISTENER, UP_CLUSTER
from scripted_upstream import Request, ScriptedUpstream, read_reply, response

HERE = Path(__file__).parent
CONFIG = HCM_LISTENER + """\
          stat_prefix: fx
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                text_format_source:
                  inline_string: "%REQ(X-RAISE)% %RESPONSE_CODE% %RESPONSE_FLAGS% \\
                    %RESPONSE_CODE_DETAILS%\\n"
          http_filters:
          - name: test.filters.http.raising
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/"}}
                route: {{cluster: up}}
  clusters:
""" + UP_CLUSTER


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    return [(response(200, b"upstream body"), 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def request(where: str, body: bytes = b"") -> bytes:
    method = "POST" if body else "GET"
    return (f"{method} /x HTTP/1.1\r\nhost: a\r\nx-raise: {where}\r\n"
            + (f"content-length: {len(body)}\r\n" if body else "") + "\r\n").encode() + body


def test_a_raising_filter_answers_500_and_the_connection_goes_on(
        tmp_path: Path, upstream: ScriptedUpstream,
        envoi_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    proc = envoi_process(CONFIG.format(admin=admin, port=port, up=upstream.port, log=log),
                         admin, args=["-p", "raising_http_filter"], env=env())
    bystander = socket.create_connection(("127.0.0.1", port), timeout=5)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        got = []
        for where, body in [("decode_headers", b""), ("none", b""), ("decode_data", b"payload"),
                            ("none", b""), ("encode_headers", b""), ("none", b"")]:
            s.sendall(request(where, body))
            r = read_reply(s)
            got.append((where, r.status, r.body, r.header("content-length"), r.closed))
    assert got == [
        ("decode_headers", 500, b"", "0", False),
        ("none", 200, b"upstream body", "13", False),
        ("decode_data", 500, b"", "0", False),
        ("none", 200, b"upstream body", "13", False),
        ("encode_headers", 500, b"", "0", False),
        ("none", 200, b"upstream body", "13", False),
    ]
    # Too late for a 500 once the response head has left: the stream is reset.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request("encode_data"))
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"upstream body" not in out
    bystander.sendall(request("none"))
    assert read_reply(bystander).status == 200  # another connection never noticed
    bystander.close()
    proc.wait_stat("http.fx.envoi.filter_exception", 4)
    text = proc.log()
    for method in ("decode_headers", "decode_data", "encode_headers", "encode_data"):
        assert (f"HTTP filter test.filters.http.raising raised in {method}: RuntimeError: "
                f"raising filter: asked to fail in {method}") in text, text
    assert "Traceback" in text  # the traceback is logged too
    lines = wait_for(lambda: (lambda ls: ls if len(ls) == 8 else None)(
        log.read_text().splitlines() if log.exists() else []), 10, what="8 access log lines")
    assert lines == [
        "decode_headers 500 - filter_raised_exception", "none 200 - via_upstream",
        "decode_data 500 - filter_raised_exception", "none 200 - via_upstream",
        "encode_headers 500 - filter_raised_exception", "none 200 - via_upstream",
        "encode_data 200 LR filter_raised_exception", "none 200 - via_upstream",
    ]
    st = proc.stats()
    assert st["http.fx.downstream_rq_5xx"] == 3
    assert st["http.fx.downstream_cx_destroy_remote_active_rq"] == 0


BAD = HCM_LISTENER + """\
          stat_prefix: bad
          http_filters:
          - name: {name}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config: {{}}
"""

# An extension with a config type named without typed_config is refused before its factory
# runs, as Envoy 1.39.3 refuses it (tests/e2e/test_config_verdicts.py).
_NO_TYPED_CONFIG = ("Didn't find a registered implementation for '{}' with type URL: '' "
                    "(extensions are found by their typed_config; add typed_config with "
                    '"@type": type.googleapis.com/{})')


@pytest.mark.parametrize(("name", "message"), [
    ("test.filters.http.bad_config",
     ".typed_config: test.filters.http.bad_config: threshold: must be positive"),
    ("example.filters.http.add_header",
     ": " + _NO_TYPED_CONFIG.format("example.filters.http.add_header",
                                    "example.filters.http.add_header.v1.AddHeader")),
    ("test.filters.http.buggy",
     ".typed_config: test.filters.http.buggy (plugin 'raising_http_filter') failed to "
     "build its config: RuntimeError: oops"),
])
def test_a_factory_that_refuses_its_config_is_a_config_error(
        tmp_path: Path, name: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BAD.format(admin=free_port(), port=free_port(), name=name))
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg),
                          "-p", "raising_http_filter"], capture_output=True, text=True,
                         env=env(), timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    path = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
            "http_filters[0]")
    assert (out.stdout + out.stderr).strip().splitlines()[1:] == [f"{path}{message}"], (
        out.stdout + out.stderr)


def test_the_example_network_filter_without_typed_config_is_a_config_error(
        tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("""
static_resources:
  listeners:
  - name: a
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: example.filters.network.uppercase_echo
""")
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert (out.stdout + out.stderr).strip().splitlines()[1:] == [
        "static_resources.listeners[0].filter_chains[0].filters[0]: " + _NO_TYPED_CONFIG.format(
            "example.filters.network.uppercase_echo",
            "example.filters.network.uppercase_echo.v1.UppercaseEcho")]
