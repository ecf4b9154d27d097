"""The gRPC route options of ``reference/envoy-configs/grpc.yaml`` that envoi does not act on yet
are config errors naming their paths (never accepted and ignored): ``max_stream_duration``
(``grpc_timeout_header_max``) and the gRPC ``retry_on`` conditions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from envoi.testing import free_port
from grpc_e2e_config import grpc_yaml

ROUTE = "route_config.virtual_hosts[0].routes[0].route"


def _validate(tmp_path: Path, route_extra: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "envoi.yaml"
    cfg.write_text(grpc_yaml(free_port(), free_port(), free_port(), h2_options=False,
                             route_extra=route_extra))
    return subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def test_grpc_retry_conditions_are_refused(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  retry_policy:
                    retry_on: "cancelled,deadline-exceeded,resource-exhausted,unavailable"
                    num_retries: 1""")
    assert out.returncode == 1, out.stdout + out.stderr
    assert (f"{ROUTE}.retry_policy.retry_on: cancelled, deadline-exceeded, resource-exhausted,"
            " unavailable: not implemented by envoi") in out.stderr


def test_max_stream_duration_is_refused(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  max_stream_duration:
                    grpc_timeout_header_max: 30s""")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{ROUTE}.max_stream_duration: not implemented by envoi" in out.stderr


def test_implemented_retry_conditions_pass(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  retry_policy:
                    retry_on: "5xx,connect-failure,reset,retriable-status-codes"
                    retriable_status_codes: [409]""")
    assert out.returncode == 0, out.stdout + out.stderr
