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


def _grpc_route(cap: int | None, offset: int | None = None, new: bool = False) -> Any:
    return SimpleNamespace(max_grpc_timeout=cap, grpc_timeout_offset=offset,
                           max_duration=object() if new else None, retry_policy=None,
                           timeout=15.0)


def test_max_grpc_timeout_sets_a_grpc_requests_timeout() -> None:
    """Envoy's finalTimeout under the deprecated max_grpc_timeout (the oracle runs the same
    cases in test_upstream_limits_e2e.py): the offset only when below the header, the cap
    unless 0, no header -> the cap; not for non-gRPC requests nor with max_stream_duration."""
    from envoi.http.headers import HeaderMap
    from envoi_http.router.retry_headers import grpc_timeout, grpc_timeouts

    def req(timeout: bytes | None, ct: bytes = b"application/grpc") -> HeaderMap:
        raw = [(b"content-type", ct)] + ([(b"grpc-timeout", timeout)] if timeout else [])
        return HeaderMap(raw, method=b"POST", path=b"/s/M")

    assert grpc_timeout(_grpc_route(500, 100), req(b"1S")) == 0.5
    assert grpc_timeout(_grpc_route(500, 100), req(b"300m")) == 0.2
    assert grpc_timeout(_grpc_route(500, 100), req(b"100m")) == 0.1  # offset not below it
    assert grpc_timeout(_grpc_route(500, 100), req(None)) == 0.5
    assert grpc_timeout(_grpc_route(500), req(b"bogus")) == 0.5  # unparseable: as absent
    assert grpc_timeout(_grpc_route(0), req(b"2S")) == 2.0
    assert grpc_timeout(_grpc_route(0), req(None)) == 0.0  # no cap, no header: none
    assert grpc_timeout(_grpc_route(500), req(b"1S", b"application/json")) is None
    assert grpc_timeout(_grpc_route(500), req(b"1S", b"application/grpc+proto")) == 0.5
    assert grpc_timeout(_grpc_route(500, new=True), req(b"1S")) is None
    assert grpc_timeout(_grpc_route(None), req(b"1S")) is None
    h = req(b"1S")
    assert grpc_timeouts(_grpc_route(500), h, False) == (0.5, 0.0)
    assert h.get_bytes(b"grpc-timeout") == b"500m"
    assert h.get_bytes(b"x-envoy-expected-rq-timeout-ms") == b"500"
    h = req(b"1S")
    grpc_timeouts(_grpc_route(500), h, True)  # suppress_envoy_headers: grpc-timeout only
    assert h.get_bytes(b"grpc-timeout") == b"500m"
    assert h.get_bytes(b"x-envoy-expected-rq-timeout-ms") is None
    h = req(None)
    assert grpc_timeouts(_grpc_route(0), h, False) == (0.0, 0.0)
    assert h.get_bytes(b"grpc-timeout") is None


def test_max_grpc_timeout_is_accepted(tmp_path: Path) -> None:
    out = _validate(tmp_path, """\
                  max_grpc_timeout: 2s
                  grpc_timeout_offset: 0.05s""")
    assert out.returncode == 0, out.stdout + out.stderr
    hcm = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
    assert f"Deprecated field: {hcm}.{ROUTE}.max_grpc_timeout" in out.stderr, out.stderr


def test_cluster_max_stream_duration_is_read() -> None:
    from envoi_http.router.upstream_protocol import from_cluster
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    c = cluster_pb2.Cluster(name="c")
    opts = hpo.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.SetInParent()
    opts.common_http_protocol_options.max_stream_duration.FromNanoseconds(1_500_999_999)
    c.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Pack(opts)
    proto, issues = from_cluster(c, "clusters[0]")
    assert issues == [] and proto.max_stream_duration == 1.5 and proto.kind == "http2"
    legacy = cluster_pb2.Cluster(name="c")
    legacy.common_http_protocol_options.max_stream_duration.FromSeconds(-1)
    _, issues = from_cluster(legacy, "clusters[0]")
    assert issues == [("clusters[0].common_http_protocol_options.max_stream_duration",
                       "must not be negative")]
