"""An upstream that refuses connections, and one that answers, through the real Envoy 1.39.3 and
envoi with the same config and requests: the cluster's stats, its ``/clusters`` host counters and
the access log's ``%RESPONSE_CODE_DETAILS%`` must agree.

A refused connection used to show on envoi's dashboard only as ``upstream_rq_total``: none of
Envoy's ``upstream_cx_total``, ``upstream_rq_503``/``_5xx``/``_completed``,
``upstream_rq_pending_failure_eject``; ``/clusters`` had ``cx_total`` and ``rq_total`` the other
way round, and ``%RESPONSE_CODE_DETAILS%`` was ``null`` where Envoy writes ``via_upstream``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoi.testing import free_port, wait_for
from http_peers import ALL_ROUTES, HCM_LISTENER
from scripted_upstream import PROXIES, Request, ScriptedUpstream, exchange, response, start_config

CONFIG = HCM_LISTENER + """\
          stat_prefix: ref
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  details: "%RESPONSE_CODE_DETAILS%"
                  flags: "%RESPONSE_FLAGS%"
                  path: "%REQ(:PATH)%"
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""" + ALL_ROUTES + """\
              - match: {{prefix: "/refused"}}
                route: {{cluster: refused}}
              - match: {{prefix: "/"}}
                route: {{cluster: live}}
  clusters:
  - name: refused
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: refused
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {closed}}}}}}}
  - name: live
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: live
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up}}}}}}}
"""
REQUESTS = 3


def answer(req: Request, attempt: int) -> list[tuple[bytes, float]]:
    if req.path == "/fail":
        return [(response(503, b"no"), 0.0)]
    return [(response(200, b"ok"), 0.0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(answer) as up:
        yield up


def clusters_counters(text: str, cluster: str) -> dict[str, str]:
    """``/clusters`` lines ``<cluster>::<host>::<name>::<value>`` of the host counters."""
    out = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] in (
                "cx_total", "cx_active", "cx_connect_fail", "rq_total", "rq_active", "rq_error",
                "rq_success", "rq_timeout"):
            out[parts[2]] = parts[3]
    return out


@pytest.mark.parametrize("kind", PROXIES)
def test_refused_upstream_counted_as_envoy(kind: str, tmp_path: Path,
                                           upstream: ScriptedUpstream,
                                           proxy_process: Callable[..., Any]) -> None:
    log = tmp_path / f"{kind}-access.log"
    p = start_config(kind, CONFIG, proxy_process, up=upstream.port, closed=free_port(), log=log)
    port, proc = p.port, p.process
    statuses = []
    for path in ["/refused"] * REQUESTS + ["/ok", "/fail"]:
        r = exchange(port, f"GET {path} HTTP/1.1\r\nhost: a\r\n\r\n".encode())
        statuses.append((path, r.status, r.body))
    before = (b"upstream connect error or disconnect/reset before headers. reset reason: "
              b"remote connection failure")
    assert statuses == [("/refused", 503, before)] * REQUESTS + [
        ("/ok", 200, b"ok"), ("/fail", 503, b"no")]
    st = proc.stats()
    refused = {k[len("cluster.refused."):]: v for k, v in st.items()
               if k.startswith("cluster.refused.") and v and "_time" not in k
               and not k.startswith("cluster.refused.internal.")}
    assert refused == {
        "upstream_cx_total": REQUESTS, "upstream_cx_connect_fail": REQUESTS,
        "upstream_cx_http1_total": REQUESTS, "upstream_cx_destroy": REQUESTS,
        "upstream_cx_destroy_remote": REQUESTS,
        "upstream_rq_pending_total": REQUESTS, "upstream_rq_pending_failure_eject": REQUESTS,
        "upstream_rq_503": REQUESTS, "upstream_rq_5xx": REQUESTS,
        "upstream_rq_completed": REQUESTS,
        "external.upstream_rq_503": REQUESTS, "external.upstream_rq_5xx": REQUESTS,
        "external.upstream_rq_completed": REQUESTS,
        "membership_healthy": 1, "membership_total": 1, "membership_change": 1,
        "default.total_match_count": 1,
    }, repr(sorted(refused.items()))
    text = proc.get("/clusters")
    text = text if isinstance(text, str) else text[1]  # envoi's get() gives (status, body)
    assert clusters_counters(text, "refused") == {
        "cx_total": str(REQUESTS), "cx_active": "0", "cx_connect_fail": str(REQUESTS),
        "rq_total": "0", "rq_active": "0", "rq_error": str(REQUESTS),
        "rq_success": "0", "rq_timeout": "0"}

    def lines() -> list[dict[str, Any]] | None:
        if not log.exists():
            return None
        got = [json.loads(x) for x in log.read_text().splitlines()]
        return got if len(got) == REQUESTS + 2 else None

    logged = wait_for(lines, 10, what="access log lines")
    assert logged == [
        {"code": 503, "flags": "UF", "path": "/refused",
         "details": "upstream_reset_before_response_started{remote_connection_failure|"
                    "delayed_connect_error:_Connection_refused}"},
    ] * REQUESTS + [
        {"code": 200, "flags": "-", "path": "/ok", "details": "via_upstream"},
        {"code": 503, "flags": "-", "path": "/fail", "details": "via_upstream"},
    ]
