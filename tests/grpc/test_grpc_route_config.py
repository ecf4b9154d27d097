"""The gRPC route options of ``reference/envoy-configs/grpc.yaml`` are accepted
(``max_stream_duration``, the gRPC ``retry_on`` conditions); the retry conditions envoi does not
act on stay config errors naming their path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from envoi.testing import free_port
from grpc_e2e_config import grpc_yaml

ROUTE = "route_config.virtual_hosts[0].routes[0].route"


def _validate(tmp_path: Path, route_extra: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "envoi.yaml"
    cfg.write_text(grpc_yaml(free_port(), free_port(), free_port(), h2_options=False,
                             route_extra=route_extra))
    return subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def test_grpc_retry_conditions_are_accepted(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  retry_policy:
                    retry_on: "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
                    num_retries: 1""")
    assert out.returncode == 0, out.stdout + out.stderr


def test_retry_conditions_not_acted_on_are_refused(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  retry_policy:
                    retry_on: "unavailable,refused-stream,retriable-headers"
                    num_retries: 1""")
    assert out.returncode == 1, out.stdout + out.stderr
    assert (f"{ROUTE}.retry_policy.retry_on: refused-stream, retriable-headers: not implemented"
            " by envoi") in out.stderr


def test_retry_headers_take_their_own_conditions() -> None:
    """x-envoy-retry-on counts the HTTP conditions, x-envoy-retry-grpc-on the gRPC ones (as
    Envoy's parseRetryOn / parseRetryGrpcOn); the rest is ignored."""
    from envoi.http.headers import HeaderMap
    from envoi_http.router.retry_headers import _retry_policy

    route: Any = SimpleNamespace(retry_policy=None)
    h = HeaderMap([(b"x-envoy-retry-on", b"5xx, unavailable"),
                   (b"x-envoy-retry-grpc-on", b"internal,5xx ,cancelled,bogus")])
    rp = _retry_policy(route, h)
    assert rp is not None and rp.retry_on == frozenset({"5xx", "internal", "cancelled"})
    assert rp.grpc_codes == frozenset({1, 13}) and h.headers == []
    h = HeaderMap([(b"x-envoy-retry-on", b"unavailable")])
    assert _retry_policy(route, h) is None


def test_max_stream_duration_is_accepted(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  max_stream_duration:
                    max_stream_duration: 10s
                    grpc_timeout_header_max: 30s
                    grpc_timeout_header_offset: 0.05s""")
    assert out.returncode == 0, out.stdout + out.stderr


def test_route_max_stream_duration_in_ms() -> None:
    from envoi_http.router.config import MaxStreamDuration, max_stream_duration
    from envoy.config.route.v3 import route_components_pb2 as rc

    m = rc.RouteAction.MaxStreamDuration()
    m.grpc_timeout_header_max.FromMilliseconds(30_000)
    m.grpc_timeout_header_offset.FromNanoseconds(1_999_999)
    assert max_stream_duration(m) == MaxStreamDuration(None, 30_000, 1)
    m.max_stream_duration.FromSeconds(0)
    assert max_stream_duration(m).max_stream_duration == 0


def test_implemented_retry_conditions_pass(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  retry_policy:
                    retry_on: "5xx,connect-failure,reset,retriable-status-codes"
                    retriable_status_codes: [409]""")
    assert out.returncode == 0, out.stdout + out.stderr
