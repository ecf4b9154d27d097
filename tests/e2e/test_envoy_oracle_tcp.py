"""Same tcp_proxy config, same traffic through the real Envoy and through envoi: the tcp.*,
listener.* and cluster.* stats envoi implements must have Envoy's names and values."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoi.testing import EnvoiProcess, free_port, wait_for
from oracle import EnvoyProcess
from tcp_configs import tcp_proxy_yaml

# Stats whose values depend on timing or on the implementation's internals, not the traffic.
# How often flow control engages depends on socket-buffer timing, not on the bytes; and whether
# an upstream close counts as local or remote depends on which FIN came last (the client's or
# the server's), a race in Envoy as in envoi. Their sum, upstream_cx_destroy, is compared.
NOT_COMPARED_VALUES = {
    "upstream_cx_destroy_local", "upstream_cx_destroy_remote",
    "upstream_cx_destroy_local_with_active_rq", "upstream_cx_destroy_remote_with_active_rq",
    "downstream_cx_length_ms", "upstream_cx_connect_ms", "upstream_cx_length_ms",
    "upstream_flow_control_paused_reading_total", "upstream_flow_control_resumed_reading_total",
    "downstream_flow_control_paused_reading_total", "downstream_flow_control_resumed_reading_total",
}


ADMIN_PATHS = ("/clusters", "/clusters?format=json", "/listeners", "/listeners?format=json",
               "/ready")


def drive(port: int, tmp: Path) -> None:
    for _ in range(3):
        out = subprocess.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{port}/hello.txt"],
                             capture_output=True, timeout=30)
        assert out.stdout == b"hello from the upstream\n", out.stderr
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", str(tmp / "big"),
                          f"http://127.0.0.1:{port}/big.bin"], capture_output=True, timeout=60)
    assert out.returncode == 0


def interesting(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items()
            if k.startswith(("tcp.", "listener.tcp_in.", "cluster.echo."))}


def test_tcp_proxy_stats_match_envoy(http_upstream: tuple[int, Path], tmp_path: Path,
                                     envoi_process: Callable[..., EnvoiProcess]) -> None:
    up, _ = http_upstream
    # Same port lengths, so the Host header (and so the byte counts) are the same size.
    e_admin, e_port = free_port(), free_port()
    while len(str(e_port)) != 5:
        e_port = free_port()
    envoy_cfg = tmp_path / "envoy.yaml"
    envoy_cfg.write_text(tcp_proxy_yaml(e_admin, e_port, up))
    envoy = EnvoyProcess(envoy_cfg, e_admin, tmp_path / "envoy.log").start()
    try:
        drive(e_port, tmp_path)
        wait_for(lambda: envoy.stats().get("listener.tcp_in.downstream_cx_destroy") == 4,
                 what="envoy connections closed")
        theirs = interesting(envoy.stats())
        their_admin = {path: envoy.get(path).replace(str(e_port), "PORT") for path in ADMIN_PATHS}
    finally:
        envoy.stop()

    a_admin, a_port = free_port(), free_port()
    while len(str(a_port)) != 5:
        a_port = free_port()
    proc = envoi_process(tcp_proxy_yaml(a_admin, a_port, up), a_admin)
    drive(a_port, tmp_path)
    proc.wait_stat("listener.tcp_in.downstream_cx_destroy", 4)
    ours = interesting(proc.stats())
    our_admin = {path: proc.get(path)[1].replace(str(a_port), "PORT") for path in ADMIN_PATHS}

    # The admin's views of listeners and clusters are Envoy's, byte for byte.
    for path in ADMIN_PATHS:
        assert our_admin[path] == their_admin[path], path

    # Every tcp.* stat Envoy has, envoi has, and the other way round.
    assert sorted(k for k in ours if k.startswith("tcp.")) == sorted(
        k for k in theirs if k.startswith("tcp."))
    # envoi's listener.* and cluster.* names are all Envoy names.
    extra = sorted(k for k in ours if k not in theirs)
    assert extra == [], f"names Envoy does not have: {extra}"
    # And the values agree for everything that counts traffic.
    diffs = {k: (ours[k], theirs[k]) for k in ours
             if k.rsplit(".", 1)[-1] not in NOT_COMPARED_VALUES and ours[k] != theirs[k]}
    assert diffs == {}, f"envoi vs Envoy: {diffs}"
    for key in ("tcp.tcp_echo.downstream_cx_total", "listener.tcp_in.downstream_cx_total",
                "cluster.echo.upstream_cx_total"):
        assert ours[key] == 4
    assert ours["tcp.tcp_echo.downstream_cx_tx_bytes_total"] > 10 * 1024 * 1024
