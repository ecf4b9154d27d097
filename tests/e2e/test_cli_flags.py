"""Envoy's command-line flags operators script with, each run on the real Envoy 1.39.3 and on
envoi with the same config and the same arguments, and compared."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import EnvoiProcess, EnvoyProcess, envoy_binary, free_port, wait_for

BASE = """\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
node: {{id: base-node, cluster: base-cluster}}
static_resources:
  listeners:
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: a
  clusters:
  - name: a
    type: STATIC
    load_assignment:
      cluster_name: a
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
        {{address: 127.0.0.1, port_value: {admin}}}}}}}}}]}}]
"""

# Merged over BASE: a scalar of node replaced, a second cluster appended (protobuf MergeFrom).
OVERLAY = """\
node: {cluster: overlay-cluster}
static_resources:
  clusters:
  - name: b
    type: STATIC
    load_assignment:
      cluster_name: b
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
        {address: 127.0.0.1, port_value: 9}}}}]}]
"""


def start(kind: str, tmp_path: Path, args: list[str], envoi_process: Callable[..., EnvoiProcess],
          ) -> tuple[Any, int]:
    admin, port = free_port(), free_port()
    cfg = tmp_path / f"{kind}.yaml"
    cfg.write_text(BASE.format(admin=admin, port=port))
    if kind == "envoy":
        envoy = EnvoyProcess(cfg, admin, tmp_path / "envoy.out", args=args)
        return envoy.start(), port
    return envoi_process(cfg.read_text(), admin, args=args), port


@pytest.fixture
def both(tmp_path: Path, envoi_process: Callable[..., EnvoiProcess]) -> Any:
    started: list[EnvoyProcess] = []

    def run(args: list[str]) -> dict[str, tuple[Any, int]]:
        out = {}
        for kind in ("envoy", "envoi"):
            d = tmp_path / kind
            d.mkdir(exist_ok=True)
            proc, port = start(kind, d, args, envoi_process)
            if kind == "envoy":
                started.append(proc)
            out[kind] = (proc, port)
        return out

    yield run
    for envoy in started:
        envoy.stop()


def server_info(proc: Any) -> dict[str, Any]:
    text = proc.get("/server_info")
    return dict(json.loads(text if isinstance(text, str) else text[1]))


def get(proc: Any, path: str) -> str:
    r = proc.get(path)
    return r if isinstance(r, str) else str(r[1])


def test_config_yaml_merges_over_the_file_and_service_flags_set_the_node(both: Any) -> None:
    args = ["--config-yaml", OVERLAY, "--service-zone", "zone-1", "--service-node", "node-1"]
    procs = both(args)
    seen = {}
    for kind, (proc, _) in procs.items():
        info = server_info(proc)
        node = info["node"]
        clusters = sorted({line.split("::")[0] for line in get(proc, "/clusters").splitlines()
                           if "::" in line})
        opts = info["command_line_options"]
        seen[kind] = (node["id"], node["cluster"], node.get("locality", {}).get("zone"),
                      clusters, opts["config_yaml"], opts["service_zone"],
                      opts["service_node"], opts["service_cluster"])
    assert seen["envoi"] == seen["envoy"]
    assert seen["envoi"][:4] == ("node-1", "overlay-cluster", "zone-1", ["a", "b"])


def test_service_cluster_overrides_the_bootstrap_node(both: Any) -> None:
    procs = both(["--service-cluster", "from-cli"])
    got = {kind: server_info(p)["node"]["cluster"] for kind, (p, _) in procs.items()}
    assert got == {"envoy": "from-cli", "envoi": "from-cli"}


def test_log_path_takes_the_log_off_stderr(tmp_path: Path) -> None:
    procs: dict[str, Any] = {}
    logs = {k: tmp_path / f"{k}-app.log" for k in ("envoy", "envoi")}
    try:
        for kind in ("envoy", "envoi"):
            admin, port = free_port(), free_port()
            cfg = tmp_path / f"{kind}.yaml"
            cfg.write_text(BASE.format(admin=admin, port=port))
            # EnvoyProcess runs Envoy at -l warning: main:info brings its start lines back.
            args = ["--log-path", str(logs[kind]), "--component-log-level", "main:info"]
            procs[kind] = (EnvoyProcess(cfg, admin, tmp_path / "envoy.out", args=args)
                           if kind == "envoy" else EnvoiProcess(cfg, admin, args=args)).start()
        for kind, log in logs.items():
            text = wait_for(lambda log=log: log.exists() and "starting main dispatch loop"
                            in log.read_text() and log.read_text(), what=f"{kind} log")
            assert "[info][main]" in text, (kind, text[-2000:])
        assert "starting main dispatch loop" not in (tmp_path / "envoy.out").read_text()
        assert "starting main dispatch loop" not in procs["envoi"].log()  # not on stderr
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.mark.parametrize("spec,message", [
    ("foo:debug", "error: invalid component specified 'foo'"),
    ("upstream:loud", "error: invalid log level specified 'loud'"),
    ("upstream", "error: component log level not correctly specified 'upstream'"),
])
def test_component_log_level_errors_as_envoy(tmp_path: Path, spec: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE.format(admin=free_port(), port=free_port()))
    results = {}
    for kind, cmd in (("envoy", [envoy_binary(), "--disable-hot-restart"]),
                      ("envoi", [sys.executable, "-m", "envoi"])):
        out = subprocess.run([*cmd, "--mode", "validate", "-c", str(cfg),
                              "--component-log-level", spec], capture_output=True, text=True,
                             timeout=60)
        results[kind] = (out.returncode, message in out.stdout + out.stderr)
    assert results == {"envoy": (1, True), "envoi": (1, True)}


def test_component_log_level_turns_on_one_component(tmp_path: Path) -> None:
    """``-l warning --component-log-level connection:debug,conn_handler:debug``: connection
    life at debug with Envoy 1.39's id tags, and nothing from other components."""
    log = tmp_path / "envoi.log"
    admin, port = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE.format(admin=admin, port=port))
    proc = EnvoiProcess(cfg, admin, args=["-l", "warning", "--log-path", str(log),
                                          "--component-log-level",
                                          "connection:debug,conn_handler:debug"]).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
            while s.recv(1000):
                pass
        text = wait_for(lambda: "closing socket" in log.read_text() and log.read_text(),
                        what="connection lines")
    finally:
        proc.stop()
    lines = text.splitlines()
    assert any('[debug][conn_handler] [Tags: "ConnectionId":"' in ln
               and "] new connection from 127.0.0.1:" in ln for ln in lines), text
    assert any("[debug][connection] [Tags:" in ln and "closing socket: 0" in ln for ln in lines)
    assert not [ln for ln in lines if "[debug][" in ln and "[debug][connection]" not in ln
                and "[debug][conn_handler]" not in ln]
