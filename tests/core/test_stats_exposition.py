"""Envoy's /stats text, JSON and Prometheus formats, and its default tag extraction."""

from __future__ import annotations

import json

import pytest
from envoi.stats import Store
from envoi.stats.exposition import (
    format_double,
    histogram_summary,
    render_json,
    render_prometheus,
    render_text,
)
from envoi.stats.tags import TagProducer, extract_tags


def _store() -> Store:
    store = Store()
    store.counter("cluster.echo.upstream_cx_total").inc(3)
    store.counter("cluster.echo.upstream_rq_503").inc(1)
    store.counter("tcp.tcp_echo.downstream_cx_total").inc(2)
    store.counter("cluster.echo.upstream_cx_connect_fail")  # never used
    store.gauge("server.live").set(1)
    store.gauge("cluster.echo.upstream_cx_active")  # never used
    store.text_readout("server.version_text").set("1.0")
    h = store.histogram("cluster.echo.upstream_cx_length_ms")
    h.record(5)
    h.record(12)
    h.flush()
    h.record(100)
    store.histogram("cluster.echo.upstream_rq_time")  # no values
    return store


HIST_LINE = (
    "cluster.echo.upstream_cx_length_ms: P0(5,5) P25(5,5) P50(5,12) P75(12,100) P90(12,100) "
    "P95(12,100) P99(12,100) P99.5(12,100) P99.9(12,100) P100(12,100)"
)


def test_text_orders_readouts_then_numbers_then_histograms() -> None:
    assert render_text(_store()) == (
        'server.version_text: "1.0"\n'
        "cluster.echo.upstream_cx_active: 0\n"
        "cluster.echo.upstream_cx_connect_fail: 0\n"
        "cluster.echo.upstream_cx_total: 3\n"
        "cluster.echo.upstream_rq_503: 1\n"
        "server.live: 1\n"
        "tcp.tcp_echo.downstream_cx_total: 2\n"
        f"{HIST_LINE}\n"
        "cluster.echo.upstream_rq_time: No recorded values\n"
    )


def test_text_filter_usedonly_and_type() -> None:
    store = _store()
    assert render_text(store, filter_re="upstream_cx_", used_only=True) == (
        f"cluster.echo.upstream_cx_total: 3\n{HIST_LINE}\n"
    )
    assert render_text(store, type_="Gauges") == (
        "cluster.echo.upstream_cx_active: 0\nserver.live: 1\n"
    )
    assert render_text(store, type_="Counters", used_only=True).count("\n") == 3
    assert render_text(store, type_="TextReadouts") == 'server.version_text: "1.0"\n'
    assert render_text(store, type_="Histograms", filter_re="rq_time") == (
        "cluster.echo.upstream_rq_time: No recorded values\n"
    )


def test_interval_without_samples_prints_nan() -> None:
    store = Store()
    h = store.histogram("x.h")
    h.record(1.5)
    h.flush()
    h.flush()  # the latest interval is empty
    assert histogram_summary(h).startswith("P0(nan,1.5) P25(nan,1.5)")


def test_json_shape() -> None:
    store = Store()
    store.counter("a.c").inc(2)
    store.gauge("a.g").set(7)
    store.text_readout("a.t").set('say "hi"')
    h = store.histogram("a.h")
    h.record(2)
    h.flush()
    store.histogram("a.empty")
    text = render_json(store)
    doc = json.loads(text)
    stats = doc["stats"]
    assert stats[:3] == [
        {"name": "a.t", "value": 'say "hi"'},
        {"name": "a.c", "value": 2},
        {"name": "a.g", "value": 7},
    ]
    hist = stats[3]["histograms"]
    assert hist["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    assert text.count('"supported_quantiles":[0,25,50,75,90,95,99,99.5,99.9,100]') == 1
    empty, full = hist["computed_quantiles"]
    assert empty == {"name": "a.empty", "values": [{"cumulative": None, "interval": None}] * 10}
    assert full == {"name": "a.h", "values": [{"cumulative": 2, "interval": 2}] * 10}


def test_json_without_histograms_has_no_histogram_entry() -> None:
    store = Store()
    store.counter("a").inc()
    assert render_json(store) == '{"stats":[{"name":"a","value":1}]}'


def test_prometheus_exact() -> None:
    store = Store()
    store.counter("cluster.echo_a.upstream_rq_503").inc(1)
    store.counter("cluster.echo_a.upstream_rq_200").inc(4)
    store.counter("cluster.echo_b.upstream_rq_200").inc(2)
    store.gauge("server.live").set(1)
    store.text_readout("server.text").set("v1")
    h = store.histogram("cluster.echo_a.upstream_cx_connect_ms")
    h.record(3)
    h.record(700)
    assert render_prometheus(store, text_readouts=True) == (
        "# TYPE envoy_cluster_upstream_rq counter\n"
        'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="echo_a"} 4\n'
        'envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="echo_a"} 1\n'
        'envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="echo_b"} 2\n'
        "# TYPE envoy_server_live gauge\n"
        "envoy_server_live{} 1\n"
        "# TYPE envoy_server_text gauge\n"
        'envoy_server_text{text_value="v1"} 0\n'
        "# TYPE envoy_cluster_upstream_cx_connect_ms histogram\n"
        + "".join(
            f'envoy_cluster_upstream_cx_connect_ms_bucket{{envoy_cluster_name="echo_a",'
            f'le="{le}"}} {n}\n'
            for le, n in [
                ("0.5", 0), ("1", 0), ("5", 1), ("10", 1), ("25", 1), ("50", 1), ("100", 1),
                ("250", 1), ("500", 1), ("1000", 2), ("2500", 2), ("5000", 2), ("10000", 2),
                ("30000", 2), ("60000", 2), ("300000", 2), ("600000", 2), ("1800000", 2),
                ("3600000", 2), ("+Inf", 2),
            ]
        )
        + 'envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name="echo_a"} 703\n'
        'envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name="echo_a"} 2\n'
    )


def test_prometheus_usedonly_and_default_hides_text_readouts() -> None:
    store = Store()
    store.counter("server.a").inc()
    store.counter("server.b")
    store.text_readout("server.t").set("x")
    assert render_prometheus(store, used_only=True) == (
        "# TYPE envoy_server_a counter\nenvoy_server_a{} 1\n"
    )


def test_prometheus_escapes_label_values() -> None:
    store = Store()
    store.counter('tcp.a"b\\c.downstream_cx_total').inc()
    out = render_prometheus(store)
    assert 'envoy_tcp_downstream_cx_total{envoy_tcp_prefix="a\\"b\\\\c"} 1\n' in out


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (0.5, "0.5"), (1.05, "1.05"), (3600000.0, "3600000"), (1e16, "1e+16"),
     (1.5e-07, "1.5e-07"), (float("nan"), "nan"), (None, "nan"), (-2.0, "-2")],
)
def test_format_double_like_fmt(value: float | None, text: str) -> None:
    assert format_double(value) == text


TAG_CASES = [
    ("tcp.tcp_echo.downstream_cx_total",
     'envoy_tcp_downstream_cx_total{envoy_tcp_prefix="tcp_echo"}'),
    ("cluster.echo_a.upstream_rq_503",
     'envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="echo_a"}'),
    ("http.ingress_http.downstream_rq_2xx",
     'envoy_http_downstream_rq_xx{envoy_response_code_class="2",'
     'envoy_http_conn_manager_prefix="ingress_http"}'),
    ("listener.127.0.0.1_18100.downstream_cx_total",
     'envoy_listener_downstream_cx_total{envoy_listener_address="127.0.0.1_18100"}'),
    ("listener.tcp_in.downstream_cx_total",
     'envoy_listener_downstream_cx_total{envoy_listener_address="tcp_in"}'),
    ("listener.[__1]_80.downstream_cx_total",
     'envoy_listener_downstream_cx_total{envoy_listener_address="[__1]_80"}'),
    ("listener.admin.downstream_cx_total", "envoy_listener_admin_downstream_cx_total{}"),
    ("mongo.legacy.collection.orders.query.total",
     'envoy_mongo_collection_query_total{envoy_mongo_collection="orders",'
     'envoy_mongo_prefix="legacy"}'),
    ("mongo.p.cmd.insert.total",
     'envoy_mongo_cmd_total{envoy_mongo_cmd="insert",envoy_mongo_prefix="p"}'),
    ("mongo.p.collection.c.callsite.s.query.total",
     'envoy_mongo_collection_callsite_query_total{envoy_mongo_callsite="s",'
     'envoy_mongo_collection="c",envoy_mongo_prefix="p"}'),
    ("mongo.p.op_query", 'envoy_mongo_op_query{envoy_mongo_prefix="p"}'),
    ("cluster.c.grpc.Greeter.SayHello.success",
     'envoy_cluster_grpc_success{envoy_grpc_bridge_method="SayHello",'
     'envoy_grpc_bridge_service="Greeter",envoy_cluster_name="c"}'),
    ("cluster.c.grpc.Greeter.total",
     'envoy_cluster_grpc_total{envoy_grpc_bridge_service="Greeter",envoy_cluster_name="c"}'),
    ("http.p.dynamodb.operation.GetItem.upstream_rq_total",
     'envoy_http_dynamodb_operation_upstream_rq_total{envoy_dynamo_operation="GetItem",'
     'envoy_http_conn_manager_prefix="p"}'),
    ("http.p.dynamodb.table.orders.upstream_rq_time_2xx",
     'envoy_http_dynamodb_table_upstream_rq_time_2xx{envoy_dynamo_table="orders",'
     'envoy_http_conn_manager_prefix="p"}'),
    ("http.p.dynamodb.table.orders.capacity.GetItem.__partition_id=abcdefg",
     'envoy_http_dynamodb_table_capacity{envoy_dynamo_partition_id="abcdefg",'
     'envoy_dynamo_operation="GetItem",envoy_dynamo_table="orders",'
     'envoy_http_conn_manager_prefix="p"}'),
    ("vhost.vh.vcluster.vc.upstream_rq_200",
     'envoy_vhost_vcluster_upstream_rq{envoy_response_code="200",envoy_virtual_cluster="vc",'
     'envoy_virtual_host="vh"}'),
    ("vhost.vh.route.r1.upstream_rq_total",
     'envoy_vhost_route_upstream_rq_total{envoy_virtual_host="vh",envoy_route="r1"}'),
    ("listener.x.http.ingress_http.downstream_rq_2xx",
     'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="2",'
     'envoy_http_conn_manager_prefix="ingress_http",envoy_listener_address="x"}'),
    ("cluster.x.http1.dropped_headers_with_underscores",
     'envoy_cluster_http1_dropped_headers_with_underscores{envoy_cluster_name="x"}'),
    ("listener.0.0.0.0_80.worker_0.downstream_cx_total",
     'envoy_listener_worker_downstream_cx_total{envoy_worker_id="0",'
     'envoy_listener_address="0.0.0.0_80"}'),
    ("http.admin.downstream_rq_total",
     'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="admin"}'),
    ("http.ingress_http.rds.my.route.config_reload",
     'envoy_http_rds_config_reload{envoy_rds_route_config="my.route",'
     'envoy_http_conn_manager_prefix="ingress_http"}'),
    ("sds.cert1.update_success", 'envoy_sds_update_success{envoy_xds_resource_name="cert1"}'),
    ("server.live", "envoy_server_live{}"),
]


@pytest.mark.parametrize(("stat", "series"), TAG_CASES)
def test_default_tag_extraction(stat: str, series: str) -> None:
    store = Store()
    store.counter(stat).inc(7)
    lines = render_prometheus(store).splitlines()
    assert lines[1] == f"{series} 7"
    assert lines[0] == f"# TYPE {series.split('{')[0]} counter"


def test_extraction_is_cached_per_name() -> None:
    producer = TagProducer()
    first = producer.produce("cluster.a.upstream_rq_200")
    assert producer.produce("cluster.a.upstream_rq_200") is first
    assert extract_tags("tcp.p.downstream_cx_total") == (
        "tcp.downstream_cx_total", (("envoy.tcp_prefix", "p"),)
    )


def test_large_scrape_groups_every_cluster() -> None:
    store = Store()
    for i in range(1000):
        for stat in ("upstream_cx_total", "upstream_rq_200", "upstream_rq_2xx",
                     "upstream_cx_active", "upstream_rq_total"):
            store.counter(f"cluster.c{i}.{stat}").inc()
    out = render_prometheus(store)
    assert out.count("# TYPE ") == 5
    assert out.count("\n") == 5005
    assert 'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",' \
           'envoy_cluster_name="c999"} 1\n' in out
