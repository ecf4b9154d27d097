"""The dynamo filter on envoi.testing's HTTP filter driver: request and response in, Envoy's
stats out, for every operation kind and error, and the bytes always passing unchanged."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from envoi.http import FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus
from envoi.stats import Histogram
from envoi.testing import HttpFilterDriver, StandaloneServer, factory_context
from envoi_dynamodb import filter as dynamo_filter
from envoi_dynamodb.plugin import DynamoConfig, DynamoFactory

P = "http.test.dynamodb."
CONTINUE = FilterHeadersStatus.CONTINUE
DATA_CONTINUE = FilterDataStatus.CONTINUE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(dynamo_filter.time, "monotonic", c.monotonic)
    return c


def entity(kind: str, name: str, status: int) -> dict[str, int]:
    group = f"{status // 100}xx" if 1 <= status // 100 <= 5 else "unknown"
    base = f"{P}{kind}.{name}.upstream_rq_total"
    return {base: 1, f"{base}_{group}": 1, f"{base}_{status}": 1}


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


class Exchange:
    """One request/response through a fresh driver; ``stats`` are the counter deltas."""

    def __init__(self, target: str | None, request: bytes | list[bytes], status: int = 200,
                 response: bytes | list[bytes] = b"", *, context: Any = None,
                 request_headers: dict[str, str] | None = None,
                 response_headers: dict[str, str] | None = None,
                 buffer_limit: int | None = None, clock: FakeClock | None = None,
                 elapsed_ms: int = 0) -> None:
        self.context = context if context is not None else factory_context()
        self.driver = d = HttpFilterDriver(DynamoFactory(), {}, context=self.context)
        if buffer_limit is not None:
            d.buffer_limit = buffer_limit
        headers = {"content-type": "application/x-amz-json-1.0", **(request_headers or {})}
        if target is not None:
            headers["x-amz-target"] = target
        chunks = request if isinstance(request, list) else [request] if request else []
        self.statuses: list[Any] = [d.decode_headers(headers, method="POST",
                                                     end_stream=not chunks)]
        for i, chunk in enumerate(chunks):
            self.statuses.append(d.decode_data(chunk, end_stream=i == len(chunks) - 1))
        if clock is not None:
            clock.now += elapsed_ms / 1000
        out = response if isinstance(response, list) else [response] if response else []
        self.statuses.append(d.encode_headers(response_headers or {}, status=status,
                                              end_stream=not out))
        for i, chunk in enumerate(out):
            self.statuses.append(d.encode_data(chunk, end_stream=i == len(out) - 1))
        d.complete()
        d.close()
        self.stats = d.stats.changed()
        self.request_chunks, self.response_chunks = chunks, out

    def histogram(self, name: str) -> Histogram | None:
        h = self.context.stats.get(P + name)
        assert h is None or isinstance(h, Histogram)
        return h

    def assert_untouched(self) -> None:
        assert all(s == 0 for s in self.statuses), self.statuses  # CONTINUE, every time
        assert self.driver.request.body == b"".join(self.request_chunks)
        assert self.driver.response.body == b"".join(self.response_chunks)


# -- the basic stats -------------------------------------------------------------------------

def test_put_item_ok_charges_operation_and_table(clock: FakeClock) -> None:
    ex = Exchange("DynamoDB_20120810.PutItem", body({"TableName": "orders", "Item": {}}), 200,
                  b"{}", clock=clock, elapsed_ms=42)
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "PutItem", 200), **entity("table", "orders", 200)}
    for kind, name in (("operation", "PutItem"), ("table", "orders")):
        for suffix in ("", "_2xx", "_200"):
            h = ex.histogram(f"{kind}.{name}.upstream_rq_time{suffix}")
            assert h is not None and h.sample_count == 1 and h.sample_sum == 42
            assert h.unit == "milliseconds"


@pytest.mark.parametrize("status", [100, 302, 404, 503, 599, 600, 99])
def test_status_groups(status: int) -> None:
    ex = Exchange("v.GetItem", body({"TableName": "orders"}), status)
    assert ex.stats == {**entity("operation", "GetItem", status),
                        **entity("table", "orders", status)}


def test_operation_present_table_missing_on_headers_only() -> None:
    # Envoy's OperatorPresent test: headers-only request, headers-only response.
    ex = Exchange("version.Get", b"", 200)
    assert ex.stats == {**entity("operation", "Get", 200), P + "table_missing": 1}


@pytest.mark.parametrize("target", [None, "version", "a.b.c", "v.Put Item", "v." + "X" * 65])
def test_operation_missing(target: str | None) -> None:
    ex = Exchange(target, body({"TableName": "orders"}), 200)
    ex.assert_untouched()
    assert ex.stats == {P + "operation_missing": 1, P + "table_missing": 1}


def test_every_table_rule_through_the_filter() -> None:
    cases: list[tuple[str, Any, dict[str, int]]] = [
        ("DescribeTable", {"TableName": "orders"}, entity("table", "orders", 200)),
        ("BatchGetItem", {"RequestItems": {"orders": {}}}, entity("table", "orders", 200)),
        ("BatchWriteItem", {"RequestItems": {"orders": [], "users": []}},
         {P + "multiple_tables": 1}),
        ("TransactWriteItems", {"TransactItems": [{"Put": {"TableName": "orders"}},
                                                  {"Delete": {"TableName": "orders"}}]},
         entity("table", "orders", 200)),
        ("TransactGetItems", {"TransactItems": [{"Get": {"TableName": "orders"}},
                                                {"Get": {"TableName": "users"}}]},
         {P + "multiple_tables": 1}),
        ("TransactWriteItems", {"TransactItems": [{"Put": {"Item": {}}}]},
         {P + "table_missing": 1}),
        ("ExecuteStatement", {"Statement": 'SELECT * FROM "orders" WHERE pk = ?'},
         entity("table", "orders", 200)),
        ("BatchExecuteStatement", {"Statements": [{"Statement": "DELETE FROM a WHERE x=1"},
                                                  {"Statement": "DELETE FROM b WHERE x=1"}]},
         {P + "multiple_tables": 1}),
        ("ExecuteTransaction", {"TransactStatements": [
            {"Statement": 'UPDATE "orders" SET a = 1 WHERE pk = ?'}]},
         entity("table", "orders", 200)),
        ("ListTables", {}, {P + "table_missing": 1}),
        ("DescribeTimeToLive", {"TableName": "orders"}, entity("table", "orders", 200)),
    ]
    for op, req, table_stats in cases:
        ex = Exchange(f"DynamoDB_20120810.{op}", body(req), 200, b"{}")
        ex.assert_untouched()
        assert ex.stats == {**entity("operation", op, 200), **table_stats}, op


def test_request_body_in_many_chunks_and_trailers() -> None:
    data = body({"TableName": "orders", "Item": {"pk": {"S": "x" * 1000}}})
    ex = Exchange("v.PutItem", [data[i:i + 7] for i in range(0, len(data), 7)], 200)
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "PutItem", 200), **entity("table", "orders", 200)}
    # A request ended by trailers is read at the trailers.
    d = HttpFilterDriver(DynamoFactory(), {})
    d.decode_headers({"x-amz-target": "v.GetItem"}, method="POST")
    d.decode_data(body({"TableName": "orders"}))
    assert d.decode_trailers({"x-trailer": "1"}) is FilterTrailersStatus.CONTINUE
    d.encode_headers({}, status=200)
    d.encode_data(b"{}")
    assert d.encode_trailers({"x-t": "1"}) is FilterTrailersStatus.CONTINUE
    assert d.stats.changed() == {**entity("operation", "GetItem", 200),
                                 **entity("table", "orders", 200)}


# -- errors in response bodies ---------------------------------------------------------------

def err(kind: str) -> bytes:
    return body({"__type": f"com.amazonaws.dynamodb.v20120810#{kind}", "message": "m"})


def test_conditional_check_failed() -> None:
    ex = Exchange("v.PutItem", body({"TableName": "orders"}), 400,
                  err("ConditionalCheckFailedException"))
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "PutItem", 400), **entity("table", "orders", 400),
                        P + "error.orders.ConditionalCheckFailedException": 1}


def test_resource_not_found() -> None:
    ex = Exchange("v.DescribeTable", body({"TableName": "missing"}), 400,
                  err("ResourceNotFoundException"))
    assert ex.stats[P + "error.missing.ResourceNotFoundException"] == 1


def test_error_without_table_is_no_table() -> None:
    # Envoy's HandleErrorTypeTableMissing.
    ex = Exchange("version", b"", 400, err("ValidationException"))
    assert ex.stats == {P + "operation_missing": 1, P + "table_missing": 1,
                        P + "error.no_table.ValidationException": 1}
    ex = Exchange("v.BatchGetItem", body({"RequestItems": {"a": {}, "b": {}}}), 400,
                  err("ProvisionedThroughputExceededException"))
    assert ex.stats[P + "error.no_table.ProvisionedThroughputExceededException"] == 1


def test_every_known_error_type() -> None:
    from envoi_dynamodb.operations import ERROR_TYPES

    for kind in ERROR_TYPES:
        ex = Exchange("v.GetItem", body({"TableName": "orders"}), 400, err(kind))
        assert ex.stats[f"{P}error.orders.{kind}"] == 1, kind


def test_unknown_or_absent_error_type_is_empty_response_body() -> None:
    for resp in (err("SomethingNewException"), body({"message": "x"}), b"[]", b'"x"'):
        ex = Exchange("v.GetItem", body({"TableName": "orders"}), 400, resp)
        assert ex.stats[P + "empty_response_body"] == 1, resp
        assert not any(k.startswith(P + "error.") for k in ex.stats)


def test_4xx_without_a_body_counts_only_the_basic_stats() -> None:
    # Envoy reads no body when there is none: no empty_response_body.
    ex = Exchange("v.GetItem", body({"TableName": "orders"}), 413)
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "GetItem", 413), **entity("table", "orders", 413)}


def test_5xx_error_body_is_not_an_error_stat() -> None:
    ex = Exchange("v.GetItem", body({"TableName": "orders"}), 500, err("InternalServerError"))
    assert ex.stats == {**entity("operation", "GetItem", 500), **entity("table", "orders", 500)}


def test_invalid_bodies() -> None:
    # Envoy's JsonBodyNotWellFormed: the request body is not JSON -> invalid_req_body; the
    # table is then unknown (table_missing), the operation still counts.
    ex = Exchange("v.GetItem", [b"test", b"test2"], 502, b"<html>bad gateway</html>")
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "GetItem", 502), P + "invalid_req_body": 1,
                        P + "table_missing": 1, P + "invalid_resp_body": 1}
    ex = Exchange("v.PutItem", body({"TableName": ["orders"]}), 200)
    assert ex.stats[P + "invalid_req_body"] == 1
    ex = Exchange("v.BatchGetItem", body({"RequestItems": {"orders": {}}}), 200, b"[{")
    assert ex.stats[P + "invalid_resp_body"] == 1


def test_2xx_bodies_are_read_only_when_they_can_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2xx answer to a non-batch call is parsed only if it carries partition capacity: a
    1 MB Query page costs no parsing (so a non-JSON 2xx body is not invalid_resp_body)."""
    from envoi_dynamodb import sniffer

    parsed: list[bytes] = []
    real = sniffer.load_json

    def spy(data: bytes) -> Any:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(sniffer, "load_json", spy)
    page = body({"Items": [{"pk": {"S": "x" * 100}}] * 2000, "Count": 2000})
    ex = Exchange("v.Query", body({"TableName": "orders"}), 200, page)
    assert parsed == [body({"TableName": "orders"})]  # the request only
    assert ex.stats == {**entity("operation", "Query", 200), **entity("table", "orders", 200)}
    ex = Exchange("v.GetItem", body({"TableName": "orders"}), 200, b"not json")
    assert P + "invalid_resp_body" not in ex.stats


# -- batch responses and capacity ------------------------------------------------------------

def test_unprocessed_keys_and_items() -> None:
    req = body({"RequestItems": {"table_1": {}, "table_2": {}}})
    resp = body({"UnprocessedKeys": {"table_1": {"Keys": []}, "table_2": {"Keys": []}}})
    ex = Exchange("v.BatchGetItem", req, 200, resp)
    assert ex.stats == {**entity("operation", "BatchGetItem", 200), P + "multiple_tables": 1,
                        P + "error.table_1.BatchFailureUnprocessedKeys": 1,
                        P + "error.table_2.BatchFailureUnprocessedKeys": 1}
    resp = body({"UnprocessedItems": {"orders": [{"PutRequest": {}}]}})
    ex = Exchange("v.BatchWriteItem", body({"RequestItems": {"orders": []}}), 200, resp)
    assert ex.stats == {**entity("operation", "BatchWriteItem", 200),
                        **entity("table", "orders", 200),
                        P + "error.orders.BatchFailureUnprocessedItems": 1}
    ex = Exchange("v.BatchWriteItem", body({"RequestItems": {"orders": []}}), 200,
                  body({"UnprocessedItems": {}}))
    assert not any(k.startswith(P + "error.") for k in ex.stats)


def test_partition_capacity() -> None:
    resp = body({"ConsumedCapacity": {"Partitions": {"partition_1": 0.5,
                                                     "partition_2": 3.1, "p": 1}}})
    ex = Exchange("v.GetItem", body({"TableName": "locations"}), 200, resp)
    assert ex.stats[P + "table.locations.capacity.GetItem.__partition_id=ition_1"] == 1
    assert ex.stats[P + "table.locations.capacity.GetItem.__partition_id=ition_2"] == 4
    assert ex.stats[P + "table.locations.capacity.GetItem.__partition_id=p"] == 1
    # The list form batch calls answer: read, not invalid (Envoy: invalid_resp_body).
    resp = body({"ConsumedCapacity": [{"TableName": "locations", "CapacityUnits": 1.0}]})
    ex = Exchange("v.BatchGetItem", body({"RequestItems": {"locations": {}}}), 200, resp)
    assert P + "invalid_resp_body" not in ex.stats


# -- bounded and harmless --------------------------------------------------------------------

def test_request_over_the_buffer_limit_is_not_sniffed() -> None:
    big = body({"TableName": "orders", "Item": {"pk": {"S": "x" * 5000}}})
    chunks = [big[i:i + 1000] for i in range(0, len(big), 1000)]
    ex = Exchange("v.PutItem", chunks, 200, b"{}", buffer_limit=2048)
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "PutItem", 200), P + "req_body_too_large": 1}
    # Known at once from content-length: nothing is kept.
    ex = Exchange("v.PutItem", chunks, 200, b"{}", buffer_limit=2048,
                  request_headers={"content-length": str(len(big))})
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "PutItem", 200), P + "req_body_too_large": 1}


def test_response_over_the_buffer_limit_is_not_sniffed() -> None:
    resp = err("ConditionalCheckFailedException") + b" " * 5000
    ex = Exchange("v.PutItem", body({"TableName": "orders"}), 400, [resp[:3000], resp[3000:]],
                  buffer_limit=4096)
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "PutItem", 400), **entity("table", "orders", 400),
                        P + "resp_body_too_large": 1}
    ex = Exchange("v.PutItem", body({"TableName": "orders"}), 400, resp, buffer_limit=4096,
                  response_headers={"content-length": str(len(resp))})
    assert ex.stats[P + "resp_body_too_large"] == 1
    # A big 2xx page of a non-batch call is normal: it would not have been read anyway.
    ex = Exchange("v.Query", body({"TableName": "orders"}), 200, [resp[:3000], resp[3000:]],
                  buffer_limit=4096)
    assert ex.stats == {**entity("operation", "Query", 200), **entity("table", "orders", 200)}
    ex = Exchange("v.BatchGetItem", body({"RequestItems": {"orders": {}}}), 200, resp,
                  buffer_limit=4096, response_headers={"content-length": str(len(resp))})
    assert ex.stats[P + "resp_body_too_large"] == 1


def test_gzip_response_read_from_a_copy() -> None:
    raw = err("ResourceNotFoundException")
    packed = gzip.compress(raw)
    ex = Exchange("v.DescribeTable", body({"TableName": "gone"}), 400,
                  [packed[:10], packed[10:]], response_headers={"content-encoding": "gzip"})
    ex.assert_untouched()  # the client still gets the gzip bytes
    assert ex.stats[P + "error.gone.ResourceNotFoundException"] == 1
    ex = Exchange("v.DescribeTable", body({"TableName": "gone"}), 400, b"\x00br-bytes",
                  response_headers={"content-encoding": "br"})
    ex.assert_untouched()
    assert ex.stats == {**entity("operation", "DescribeTable", 400),
                        **entity("table", "gone", 400), P + "resp_body_unreadable": 1}
    bomb = gzip.compress(b" " * 3_000_000)
    ex = Exchange("v.DescribeTable", body({"TableName": "gone"}), 200, bomb,
                  response_headers={"content-encoding": "gzip"})
    assert ex.stats[P + "resp_body_too_large"] == 1


def test_gzip_request() -> None:
    ex = Exchange("v.PutItem", gzip.compress(body({"TableName": "orders"})), 200,
                  request_headers={"content-encoding": "gzip"})
    assert ex.stats == {**entity("operation", "PutItem", 200), **entity("table", "orders", 200)}
    ex = Exchange("v.PutItem", b"garbage", 200, request_headers={"content-encoding": "gzip"})
    assert ex.stats == {**entity("operation", "PutItem", 200), P + "req_body_unreadable": 1}


def test_runtime_switch_off_charges_nothing() -> None:
    ctx = factory_context()
    ctx.runtime.modify({"dynamodb.filter_enabled": "0"})
    ex = Exchange("v.PutItem", body({"TableName": "orders"}), 400,
                  err("ConditionalCheckFailedException"), context=ctx)
    ex.assert_untouched()
    assert ex.stats == {}
    ctx.runtime.modify({"dynamodb.filter_enabled": "100"})
    ex = Exchange("v.PutItem", body({"TableName": "orders"}), 200, context=ctx)
    assert ex.stats[P + "table.orders.upstream_rq_total"] == 1


def test_reset_stream_charges_nothing_and_drops_the_copy() -> None:
    d = HttpFilterDriver(DynamoFactory(), {})
    d.decode_headers({"x-amz-target": "v.PutItem"}, method="POST")
    d.decode_data(b'{"TableName": "ord')  # the client goes away mid-body
    filters = [f for f in d.decoders]
    d.complete()
    assert d.stats.changed() == {}
    assert all(f.request is None for f in filters)


def test_response_before_request_end() -> None:
    d = HttpFilterDriver(DynamoFactory(), {})
    d.decode_headers({"x-amz-target": "v.PutItem"}, method="POST")
    d.decode_data(b'{"TableName": ')
    d.encode_headers({}, status=400, end_stream=True)  # an early answer (a 4xx from upstream)
    d.decode_data(b'"orders"}', end_stream=True)  # the rest still passes, unread
    assert d.request.body == b'{"TableName": "orders"}'
    assert d.stats.changed() == {**entity("operation", "PutItem", 400), P + "table_missing": 1}


# -- stat names from client text are bounded -------------------------------------------------

def test_table_names_are_bounded_by_runtime_key() -> None:
    ctx = factory_context()
    ctx.runtime.modify({"dynamodb.max_tables": "2"})
    seen: dict[str, int] = {}
    for name in ("t_a", "t_b", "t_c", "t_a", "t_d"):
        ex = Exchange("v.GetItem", body({"TableName": name}), 400,
                      err("ResourceNotFoundException"), context=ctx)
        for k, v in ex.stats.items():
            seen[k] = seen.get(k, 0) + v
    assert seen[P + "table.t_a.upstream_rq_total"] == 2
    assert seen[P + "table.t_b.upstream_rq_total"] == 1
    assert not any(".t_c." in k or ".t_d." in k for k in seen)
    assert seen[P + "table_stats_dropped"] == 2
    assert seen[P + "error.no_table.ResourceNotFoundException"] == 2  # still counted
    assert seen[P + "operation.GetItem.upstream_rq_total"] == 5


def test_invalid_table_names_never_become_stat_names() -> None:
    for name in ("a b", "x", "t" * 256, "orders\nx", "ta\u00e9ble", "arn:aws:s3:::bucket"):
        ex = Exchange("v.GetItem", body({"TableName": name}), 200)
        assert ex.stats == {**entity("operation", "GetItem", 200), P + "table_stats_dropped": 1}
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    ex = Exchange("v.GetItem", body({"TableName": arn}), 200)
    assert ex.stats[f"{P}table.{arn}.upstream_rq_total"] == 1


def test_operation_names_are_bounded() -> None:
    ctx = factory_context()
    ctx.runtime.modify({"dynamodb.max_operations": "1"})
    a = Exchange("v.OpOne", b"", 200, context=ctx)
    b = Exchange("v.OpTwo", b"", 200, context=ctx)
    assert a.stats == {**entity("operation", "OpOne", 200), P + "table_missing": 1}
    assert b.stats == {P + "operation_stats_dropped": 1, P + "table_missing": 1}


def test_partition_names_are_bounded() -> None:
    ctx = factory_context()
    ctx.runtime.modify({"dynamodb.max_partitions": "1"})
    resp = body({"ConsumedCapacity": {"Partitions": {"aaaaaaa": 1, "bbbbbbb": 1, "bad.id": 1}}})
    ex = Exchange("v.GetItem", body({"TableName": "orders"}), 200, resp, context=ctx)
    assert ex.stats[P + "table.orders.capacity.GetItem.__partition_id=aaaaaaa"] == 1
    assert ex.stats[P + "partition_stats_dropped"] == 2


# -- config ----------------------------------------------------------------------------------

def test_config_is_the_empty_message() -> None:
    from envoi.config import ConfigError

    with HttpFilterDriver(DynamoFactory(), {}) as d:
        assert d.decode_headers({}) is CONTINUE
    with pytest.raises(ConfigError) as exc:
        HttpFilterDriver(DynamoFactory(), {"stat_prefix": "x"})
    assert "stat_prefix: unknown field" in str(exc.value)
    with HttpFilterDriver(DynamoFactory(), DynamoConfig()) as d:
        assert d.decode_headers({}, end_stream=True) is CONTINUE




# -- the live tap ----------------------------------------------------------------------------

def test_operations_reach_the_tap(clock: FakeClock) -> None:
    server = StandaloneServer()
    ctx = factory_context(server=server)
    session = server.tap_hub.open(filter_name="envoy.filters.http.dynamo",
                                  match={"table": "orders"})
    Exchange("DynamoDB_20120810.PutItem", body({"TableName": "orders", "Item": {}}), 400,
             err("ConditionalCheckFailedException"), context=ctx, clock=clock, elapsed_ms=7)
    Exchange("DynamoDB_20120810.GetItem", body({"TableName": "users"}), 200, b"{}",
             context=ctx)  # another table: not matched
    (line,) = session.take()
    event = json.loads(line)
    assert {k: event[k] for k in ("type", "filter", "operation", "table", "status",
                                  "duration_ms", "error_type")} == {
        "type": "dynamodb.operation", "filter": "envoy.filters.http.dynamo",
        "operation": "PutItem", "table": "orders", "status": 400, "duration_ms": 7.0,
        "error_type": "ConditionalCheckFailedException"}
    session.close()
    assert not server.tap_hub.points[0].active  # nobody listens: nothing is built
