"""Bad config and bad start-up conditions: a clear error with a path, exit 1, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from envoi.testing import free_port
from tcp_configs import tcp_proxy_yaml


def run_envoi(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "envoi", "-c", str(cfg), *args],
                          capture_output=True, text=True, timeout=60)


GOOD = tcp_proxy_yaml(19999, 19998, 19997)

CASES = {
    "invalid_yaml": (GOOD.replace("filter_chains:", "filter_chains: [unclosed"),
                     "invalid YAML"),
    "unknown_field": (GOOD.replace("idle_timeout: 30s", "idle_timeout: 30s\n          bogus: 1"),
                      "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
                      ".bogus"),
    "wrong_type": (GOOD.replace("connect_timeout: 1s", "connect_timeout: abc"),
                   "static_resources.clusters[0].connect_timeout"),
    "unknown_filter": (GOOD.replace(
        '"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
        '"@type": type.googleapis.com/acme.filters.network.Nope'),
        "could not find @type 'type.googleapis.com/acme.filters.network.Nope'"),
    "unknown_filter_name": (GOOD.replace(
        """      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp_echo
          cluster: echo
          idle_timeout: 30s
""", "      - name: envoy.filters.network.mongo_proxyy\n"),
        "static_resources.listeners[0].filter_chains[0].filters[0]: no envoy.filters.network "
        "extension is registered for name 'envoy.filters.network.mongo_proxyy'"),
    "missing_cluster": (GOOD.replace("cluster: echo", "cluster: nosuch"),
                        "typed_config.cluster: unknown cluster 'nosuch'"),
    "missing_stat_prefix": (GOOD.replace("stat_prefix: tcp_echo", ""),
                            "typed_config.stat_prefix: value length must be at least 1"),
    "bad_port": (GOOD.replace("port_value: 19998", "port_value: 70000"),
                 "static_resources.listeners[0].address.socket_address.port_value"),
    "empty_file": ("", "config"),
}


@pytest.mark.parametrize("mode", ["validate", "serve"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_a_clear_error(tmp_path: Path, case: str, mode: str) -> None:
    text, expected = CASES[case]
    out = run_envoi(tmp_path, text, "--mode", mode)
    assert out.returncode == 1, out
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_validate_ok(tmp_path: Path) -> None:
    out = run_envoi(tmp_path, GOOD, "--mode", "validate")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")


def test_unknown_filter_lists_installed_filters(tmp_path: Path) -> None:
    out = run_envoi(tmp_path, CASES["unknown_filter_name"][0], "--mode", "validate")
    assert "installed: " in out.stderr
    assert "envoy.filters.network.tcp_proxy (envoi " in out.stderr
    assert "example.filters.network.uppercase_echo (envoi-example-filter " in out.stderr


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_envoi(tmp_path, tcp_proxy_yaml(free_port(), port, 19997))
    assert out.returncode == 1
    assert f"cannot bind to 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_file(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "envoi", "-c", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "nope.yaml" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_plugin_options() -> None:
    out = subprocess.run([sys.executable, "-m", "envoi", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "--config-path" in out.stdout and "--http1-codec" in out.stdout
