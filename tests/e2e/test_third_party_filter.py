"""A third-party network filter, installed as its own package (examples/third_party_filter) and
found through its entry point, enabled from YAML in both of Envoy's typed_config forms."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from envoi.testing import EnvoiProcess, free_port

DIRECT = """
          "@type": type.googleapis.com/example.filters.network.uppercase_echo.v1.UppercaseEcho
          stat_prefix: demo"""
TYPED_STRUCT = """
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/example.filters.network.uppercase_echo.v1.UppercaseEcho
          value: {stat_prefix: demo}"""


def config(admin: int, port: int, typed_config: str) -> str:
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: echo
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: example.filters.network.uppercase_echo
        typed_config:{typed_config}
"""


@pytest.mark.parametrize("form", [DIRECT, TYPED_STRUCT], ids=["direct", "typed_struct"])
def test_third_party_filter_from_yaml(envoi_process: Callable[..., EnvoiProcess],
                                      form: str) -> None:
    admin, port = free_port(), free_port()
    proc = envoi_process(config(admin, port, form), admin)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"one\ntwo\n")
        got = b""
        while len(got) < 8:
            got += s.recv(100)
    assert got == b"ONE\nTWO\n"
    proc.wait_stat("example.demo.lines", 2)
    assert proc.stats()["example.demo.cx_total"] == 1
    _status, info = proc.get("/server_info")
    assert "example.filters.network.uppercase_echo" in info
    assert "envoi-example-filter" in info


def test_third_party_config_errors_are_reported_with_a_path(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = config(free_port(), free_port(), DIRECT.replace("stat_prefix: demo", "stat_prefix: ''"))
    (tmp_path / "bad.yaml").write_text(bad)
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c",
                          str(tmp_path / "bad.yaml")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config: "
            "stat_prefix: a non-empty string is required") in out.stderr
