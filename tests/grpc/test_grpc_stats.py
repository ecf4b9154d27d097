"""grpc_stats through HttpFilterDriver: Envoy's names, lazily made, status from headers or
trailers, messages counted from their prefixes, the allowlist and the per-method bound."""

from __future__ import annotations

import json
from typing import Any

from envoi.testing import HttpFilterDriver, StandaloneServer, factory_context
from envoi_grpc import stats as grpc_stats_mod
from envoi_grpc.framing import encode
from envoi_grpc.grpc_stats import GRPC_STATS_STATE, GrpcStatsFactory

GRPC = {":method": "POST", ":path": "/envoi.smoke.Greeter/SayHello",
        "content-type": "application/grpc", "te": "trailers"}
PREFIX = "cluster.cluster.grpc."
M = PREFIX + "envoi.smoke.Greeter.SayHello."


def call(config: dict[str, Any], *, request: dict[str, str] = GRPC, req_msgs: int = 1,
         resp_msgs: int = 1, status: str = "0", trailers_only: bool = False,
         upstream: str | None = "127.0.0.1:1", context: Any = None) -> HttpFilterDriver:
    d = HttpFilterDriver(GrpcStatsFactory(), config, context=context)
    d.stream_info.upstream_host = upstream
    d.decode_headers(request)
    d.decode_data(b"".join(encode(b"m%d" % i) for i in range(req_msgs)), end_stream=True)
    if trailers_only:
        d.encode_headers({"content-type": "application/grpc", "grpc-status": status},
                         status=200, end_stream=True)
    else:
        d.encode_headers({"content-type": "application/grpc"}, status=200)
        for i in range(resp_msgs):
            d.encode_data(encode(b"r%d" % i))
        d.encode_trailers({"grpc-status": status, "grpc-message": "x"})
    return d


def test_default_counts_unprefixed() -> None:
    with call({}) as d:
        assert d.stats.changed() == {
            PREFIX + "0": 1, PREFIX + "success": 1, PREFIX + "total": 1,
            PREFIX + "request_message_count": 1, PREFIX + "response_message_count": 1}


def test_stats_for_all_methods_per_method_names() -> None:
    with call({"stats_for_all_methods": True}, req_msgs=3, resp_msgs=5) as d:
        assert d.stats.changed() == {
            M + "0": 1, M + "success": 1, M + "total": 1,
            M + "request_message_count": 3, M + "response_message_count": 5}


def test_trailers_only_error_counts_status_from_headers_and_no_response_messages() -> None:
    with call({"stats_for_all_methods": True}, status="5", trailers_only=True) as d:
        # Lazily made: no response message, no response_message_count name at all.
        assert d.stats.changed() == {M + "5": 1, M + "failure": 1, M + "total": 1,
                                     M + "request_message_count": 1}
        assert d.context.stats.get(M + "response_message_count") is None


def test_unknown_status_value_is_counted_as_sent() -> None:
    with call({}, status="99") as d:
        assert d.stats[PREFIX + "99"] == 1 and d.stats[PREFIX + "failure"] == 1


def test_no_grpc_status_counts_only_messages() -> None:
    d = HttpFilterDriver(GrpcStatsFactory(), {})
    d.decode_headers(GRPC, end_stream=False)
    d.decode_data(encode(b"a"), end_stream=True)
    d.encode_headers({"content-type": "application/grpc"}, status=200)
    d.encode_data(encode(b"b"), end_stream=True)
    assert d.stats.changed() == {PREFIX + "request_message_count": 1,
                                 PREFIX + "response_message_count": 1}
    d.close()


def test_not_grpc_not_counted() -> None:
    for ct in ("application/grpc-web", "application/json", "application/grpcx"):
        with call({}, request={**GRPC, "content-type": ct}) as d:
            assert d.stats.changed() == {}


def test_path_of_another_shape_not_counted() -> None:
    for path in ("/only", "/a/b/c", "/"):
        with call({"stats_for_all_methods": True}, request={**GRPC, ":path": path}) as d:
            assert d.stats.changed() == {}


def test_query_and_extra_slashes_ignored_as_envoy() -> None:
    with call({"stats_for_all_methods": True},
              request={**GRPC, ":path": "//envoi.smoke.Greeter/SayHello?x=1"}) as d:
        assert d.stats[M + "total"] == 1


def test_grpc_plus_subtype_is_grpc() -> None:
    with call({}, request={**GRPC, "content-type": "application/grpc+proto"}) as d:
        assert d.stats[PREFIX + "total"] == 1


def test_allowlist() -> None:
    cfg = {"individual_method_stats_allowlist": {
        "services": [{"name": "envoi.smoke.Greeter", "method_names": ["SayHello"]}]}}
    with call(cfg) as d:
        assert d.stats[M + "total"] == 1
    other = {**GRPC, ":path": "/envoi.smoke.Greeter/Other"}
    with call(cfg, request=other) as d:
        assert d.stats[PREFIX + "total"] == 1
        assert d.stats["cluster.cluster.grpc.envoi.smoke.Greeter.Other.total"] == 0


def test_replace_dots() -> None:
    with call({"stats_for_all_methods": True, "replace_dots_in_grpc_service_name": True}) as d:
        assert d.stats["cluster.cluster.grpc.envoi_smoke_Greeter.SayHello.total"] == 1


def test_upstream_rq_time_only_with_the_option_and_an_upstream() -> None:
    name = M + "upstream_rq_time"
    with call({"stats_for_all_methods": True}):
        pass
    from envoi.stats import Histogram

    with call({"stats_for_all_methods": True, "enable_upstream_stats": True}) as d:
        h = d.context.stats.get(name)
        assert isinstance(h, Histogram) and h.sample_count == 1
    with call({"stats_for_all_methods": True, "enable_upstream_stats": True},
              upstream=None) as d:
        h = d.context.stats.get(name)
        assert h is None or h.sample_count == 1  # not recorded again: no upstream


def test_emit_filter_state() -> None:
    with call({"emit_filter_state": True}, req_msgs=2, resp_msgs=3) as d:
        state = d.filter_state[GRPC_STATS_STATE]
        assert (state.request_message_count, state.response_message_count) == (2, 3)
        assert state.serialize_as_string() == "2,3"
    with call({}) as d:
        assert GRPC_STATS_STATE not in d.filter_state


def test_messages_split_across_data_chunks_counted_once() -> None:
    d = HttpFilterDriver(GrpcStatsFactory(), {"stats_for_all_methods": True})
    d.decode_headers(GRPC)
    wire = encode(b"x" * 100) + encode(b"y")
    for i in range(0, len(wire), 7):
        d.decode_data(wire[i:i + 7], end_stream=i + 7 >= len(wire))
    assert d.stats[M + "request_message_count"] == 2
    d.close()


def test_non_grpc_response_to_grpc_request_counts_no_messages() -> None:
    d = HttpFilterDriver(GrpcStatsFactory(), {})
    d.decode_headers(GRPC, end_stream=True)
    d.encode_headers({"content-type": "text/plain"}, status=503)
    d.encode_data(encode(b"looks like a frame"), end_stream=True)
    assert d.stats.changed() == {}
    d.close()


def test_no_cluster_no_stats() -> None:
    d = HttpFilterDriver(GrpcStatsFactory(), {"stats_for_all_methods": True}, cluster=None)
    d.decode_headers(GRPC, end_stream=True)
    d.encode_headers({"grpc-status": "0"}, status=200, end_stream=True)
    assert d.stats.changed() == {}
    d.close()


def test_route_cluster_counts_before_the_router_chose() -> None:
    """In a real chain grpc_stats runs before the router: the stream has no chosen cluster yet,
    and the route's cluster is the one counted (Envoy's ``clusterInfo()``)."""
    d = HttpFilterDriver(GrpcStatsFactory(), {"stats_for_all_methods": True}, cluster="routed")
    d.cluster_name = None
    d.decode_headers(GRPC, end_stream=True)
    d.encode_headers({"grpc-status": "0"}, status=200, end_stream=True)
    assert d.stats.changed() == {
        "cluster.routed.grpc.envoi.smoke.Greeter.SayHello." + k: 1
        for k in ("0", "success", "total")}
    d.close()


def test_client_chosen_methods_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(grpc_stats_mod, "MAX_DYNAMIC_METHODS", 3)
    from envoi.testing import factory_context

    ctx = factory_context()
    for i in range(6):
        d = HttpFilterDriver(GrpcStatsFactory(), {"stats_for_all_methods": True}, context=ctx)
        d.decode_headers({**GRPC, ":path": f"/svc/M{i}"}, end_stream=True)
        d.encode_headers({"grpc-status": "0"}, status=200, end_stream=True)
        d.close()
    names = {s.name for s in ctx.stats if s.name.startswith("cluster.cluster.grpc.")}
    per_method = {n for n in names if n.startswith("cluster.cluster.grpc.svc.")}
    assert len({n.split(".")[4] for n in per_method}) == 3
    assert ctx.stats.counter("cluster.cluster.grpc.total").value == 3


def test_calls_reach_the_tap() -> None:
    server = StandaloneServer()
    ctx = factory_context(server=server)
    session = server.tap_hub.open(filter_name="envoy.filters.http.grpc_stats",
                                  match={"grpc_status": "5"})
    with call({}, req_msgs=2, resp_msgs=3, context=ctx):
        pass
    with call({}, status="5", trailers_only=True, context=ctx):
        pass
    (line,) = session.take()  # only the failed call matches
    event = json.loads(line)
    assert {k: event[k] for k in ("type", "service", "method", "grpc_status", "http_status",
                                  "request_messages", "response_messages")} == {
        "type": "grpc.call", "service": "envoi.smoke.Greeter", "method": "SayHello",
        "grpc_status": 5, "http_status": 200, "request_messages": 1, "response_messages": 0}
    assert event["duration_ms"] >= 0
