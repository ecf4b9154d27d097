"""The sans-IO readers: X-Amz-Target, request tables by rule, PartiQL, response facts, content
codings and the bounded body copy. Bytes and strings in, facts out; fuzzed with random input."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from typing import Any

import pytest
from envoi_dynamodb.operations import ERROR_TYPES, OPERATIONS, TableRule
from envoi_dynamodb.partiql import statement_table
from envoi_dynamodb.sniffer import (
    MULTIPLE_TABLES,
    NO_TABLE,
    BodyCopy,
    InvalidBody,
    TableDescriptor,
    TooLarge,
    Unreadable,
    decode_content,
    error_type,
    load_json,
    parse_operation,
    read_response,
    request_table,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# -- X-Amz-Target ----------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "op"), [
    ("DynamoDB_20120810.PutItem", "PutItem"),
    ("version.Get", "Get"),
    ("DynamoDB_20120810..PutItem", "PutItem"),  # empty parts dropped (Envoy's splitToken)
    ("DynamoDB_20120810.PutItem.", "PutItem"),
    ("version", ""),
    ("a.b.c", ""),
    ("", ""),
    (None, ""),
    (".", ""),
])
def test_parse_operation(target: str | None, op: str) -> None:
    assert parse_operation(target) == op


# -- request tables, one test per rule kind --------------------------------------------------

@pytest.mark.parametrize("op", [op for op, rule in OPERATIONS.items()
                                if rule is TableRule.TABLE_NAME])
def test_single_table_operations(op: str) -> None:
    assert request_table(op, body({"TableName": "orders", "Key": {}})) == \
        TableDescriptor("orders", True)
    assert request_table(op, body({"Key": {}})) == NO_TABLE


def test_envoys_single_table_list_is_kept() -> None:
    envoy = {"CreateTable", "DeleteItem", "DeleteTable", "DescribeTable", "GetItem", "PutItem",
             "Query", "Scan", "UpdateItem", "UpdateTable"}
    assert envoy <= {op for op, rule in OPERATIONS.items() if rule is TableRule.TABLE_NAME}
    assert OPERATIONS["BatchGetItem"] is OPERATIONS["BatchWriteItem"] is TableRule.REQUEST_ITEMS
    assert OPERATIONS["TransactGetItems"] is OPERATIONS["TransactWriteItems"] \
        is TableRule.TRANSACT_ITEMS


@pytest.mark.parametrize("op", ["BatchGetItem", "BatchWriteItem"])
def test_batch_tables(op: str) -> None:
    one = {"RequestItems": {"orders": {"Keys": []}}}
    two = {"RequestItems": {"orders": {"Keys": []}, "users": {"Keys": []}}}
    assert request_table(op, body(one)) == TableDescriptor("orders", True)
    assert request_table(op, body(two)) == MULTIPLE_TABLES
    assert request_table(op, body({})) == NO_TABLE
    with pytest.raises(InvalidBody):
        request_table(op, body({"RequestItems": ["orders"]}))


@pytest.mark.parametrize("op", ["TransactGetItems", "TransactWriteItems"])
def test_transact_tables(op: str) -> None:
    def items(*entries: dict[str, Any]) -> bytes:
        return body({"TransactItems": list(entries)})

    put = {"Put": {"TableName": "orders", "Item": {}}}
    check = {"ConditionCheck": {"TableName": "orders"}}
    other = {"Update": {"TableName": "users"}}
    get = {"Get": {"TableName": "orders"}}
    delete = {"Delete": {"TableName": "orders"}}
    assert request_table(op, items(put, check, get, delete)) == TableDescriptor("orders", True)
    assert request_table(op, items(put, other)) == MULTIPLE_TABLES
    # An item naming no table makes the whole request table_missing (Envoy's rule)...
    assert request_table(op, items(put, {"Put": {"Item": {}}}, other)) == NO_TABLE
    # ... unless a different table was already seen before it.
    assert request_table(op, items(put, other, {"Put": {}})) == MULTIPLE_TABLES
    assert request_table(op, items()) == NO_TABLE
    for bad in ({"TransactItems": {"Put": {}}}, {"TransactItems": ["x"]},
                {"TransactItems": [{"Put": "orders"}]},
                {"TransactItems": [{"Put": {"TableName": 7}}]}):
        with pytest.raises(InvalidBody):
            request_table(op, body(bad))


def test_partiql_operations() -> None:
    stmt = 'SELECT * FROM "orders" WHERE pk = ?'
    assert request_table("ExecuteStatement", body({"Statement": stmt})) == \
        TableDescriptor("orders", True)
    assert request_table("ExecuteStatement", body({"Statement": "LIST TABLES"})) == NO_TABLE
    batch = {"Statements": [{"Statement": stmt}, {"Statement": "DELETE FROM orders WHERE a=1"}]}
    assert request_table("BatchExecuteStatement", body(batch)) == TableDescriptor("orders", True)
    batch["Statements"].append({"Statement": 'INSERT INTO "users" VALUE {\'a\': 1}'})
    assert request_table("BatchExecuteStatement", body(batch)) == MULTIPLE_TABLES
    tx = {"TransactStatements": [{"Statement": 'UPDATE "orders" SET a = 1 WHERE pk = ?'},
                                 {"Statement": 'EXISTS(SELECT * FROM "orders" WHERE pk = ?)'}]}
    assert request_table("ExecuteTransaction", body(tx)) == TableDescriptor("orders", True)
    with pytest.raises(InvalidBody):
        request_table("ExecuteStatement", body({"Statement": 5}))


def test_operations_without_a_rule_name_no_table_but_need_json() -> None:
    assert request_table("ListTables", body({"Limit": 3})) == NO_TABLE
    assert request_table("TagResource", body({"TableName": "orders"})) == NO_TABLE
    with pytest.raises(InvalidBody):
        request_table("ListTables", b"not json")


def test_request_body_type_errors_are_invalid() -> None:
    assert request_table("PutItem", b"") == NO_TABLE
    for bad in (b"testtest2", b"{", b'{"TableName": 7}', b"[]", b'"orders"',
                b'{"TableName": NaN}', b"\xff\xfe\x00", b"[" * 100_000):
        with pytest.raises(InvalidBody):
            request_table("PutItem", bad)


def test_json_encodings_and_constants() -> None:
    assert load_json('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    with pytest.raises(InvalidBody):
        load_json(b"Infinity")


# -- PartiQL ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("statement", "table"), [
    ('SELECT * FROM "orders" WHERE pk = ?', "orders"),
    ("select a, b from orders where pk='x'", "orders"),
    ('SELECT * FROM "orders"."by_date" WHERE d > 1', "orders"),
    ('SELECT * FROM "my-table.v2"', "my-table.v2"),
    ('SELECT * FROM "we""ird"', 'we"ird'),
    ("SELECT 'FROM x' FROM real_table", "real_table"),
    ('SELECT "FROM" FROM t1', "t1"),
    ("INSERT INTO orders VALUE {'pk': 'a'}", "orders"),
    ("  insert into \"orders\" value {'pk': 'a'}", "orders"),
    ('UPDATE "orders" SET a = 1 WHERE pk = ?', "orders"),
    ('DELETE FROM "orders" WHERE pk = ?', "orders"),
    ('EXISTS(SELECT * FROM "orders" WHERE pk = ?)', "orders"),
    ("SELECT * FROM", None),
    ("SELECT 1", None),
    ("INSERT orders VALUE {}", None),
    ("UPDATE SET a = 1", None),
    ('UPDATE "SET" SET a = 1', "SET"),
    ("UPDATE", None),
    ("DROP TABLE orders", None),
    ('SELECT * FROM "unterminated', None),
    ('SELECT * FROM ""', None),
    ("", None),
    ("SELECT * FROM t" + " " * 9000, None),  # longer than DynamoDB allows: not read
])
def test_statement_table(statement: str, table: str | None) -> None:
    assert statement_table(statement) == table


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_statement_table_never_raises(text: str) -> None:
    result = statement_table(text)
    assert result is None or (isinstance(result, str) and result)


# -- responses -------------------------------------------------------------------------------

def test_error_types_by_suffix_first_match_wins() -> None:
    assert error_type("com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException") == \
        "ConditionalCheckFailedException"
    assert error_type("ItemCollectionSizeLimitExceededException") == \
        "ItemCollectionSizeLimitExceededException"
    assert error_type("x#LimitExceededException") == "LimitExceededException"
    assert error_type("com.amazon.coral.validate#ValidationException") == "ValidationException"
    assert error_type("x#SomethingNew") == ""
    assert error_type("") == error_type(None) == error_type(7) == ""
    assert len(set(ERROR_TYPES)) == len(ERROR_TYPES)


def test_read_response_error_and_non_4xx() -> None:
    err = body({"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"})
    assert read_response("DescribeTable", "orders", 400, err).error_type == \
        "ResourceNotFoundException"
    assert read_response("DescribeTable", "orders", 500, err).error_type is None
    assert read_response("PutItem", "orders", 400, body({"message": "x"})).error_type == ""
    assert read_response("PutItem", "orders", 400, b"[1]").error_type == ""
    with pytest.raises(InvalidBody):
        read_response("PutItem", "orders", 400, b"<html>")


def test_read_response_partitions_object_and_list_forms() -> None:
    single = {"ConsumedCapacity": {"TableName": "orders",
                                   "Partitions": {"partition_1": 0.5, "p2": 2, "bad": "x"}}}
    assert read_response("GetItem", "orders", 200, body(single)).partitions == \
        [("partition_1", 1), ("p2", 2)]
    listed = {"ConsumedCapacity": [{"TableName": "users", "Partitions": {"u": 1}},
                                   {"TableName": "orders", "Partitions": {"o": 1.2}}]}
    assert read_response("BatchGetItem", "orders", 200, body(listed)).partitions == [("o", 2)]
    assert read_response("GetItem", "", 200, body(single)).partitions == []
    assert read_response("GetItem", "orders", 200, body({"ConsumedCapacity": 3})).partitions == []


def test_read_response_unprocessed() -> None:
    resp = {"UnprocessedKeys": {"a": {}, "b": {}}, "UnprocessedItems": {"c": []}}
    facts = read_response("BatchGetItem", "", 200, body(resp))
    assert (facts.unprocessed_keys, facts.unprocessed_items) == (["a", "b"], ["c"])
    facts = read_response("Query", "orders", 200, body(resp))  # not a batch operation
    assert (facts.unprocessed_keys, facts.unprocessed_items) == ([], [])


# -- content codings and the copy ------------------------------------------------------------

def test_decode_content_codings() -> None:
    raw = body({"TableName": "orders"})
    assert decode_content(raw, None, 100) is raw
    assert decode_content(raw, "identity", 100) == raw
    assert decode_content(gzip.compress(raw), "gzip", 100) == raw
    assert decode_content(gzip.compress(raw), "X-Gzip", 100) == raw
    assert decode_content(zlib.compress(raw), "deflate", 100) == raw
    raw_deflate = zlib.compressobj(wbits=-15)
    assert decode_content(raw_deflate.compress(raw) + raw_deflate.flush(), "deflate", 100) == raw
    twice = gzip.compress(zlib.compress(raw))
    assert decode_content(twice, "deflate, gzip", 100) == raw
    with pytest.raises(Unreadable):
        decode_content(raw, "br", 100)
    with pytest.raises(Unreadable):
        decode_content(b"not gzip", "gzip", 100)
    with pytest.raises(Unreadable):
        decode_content(gzip.compress(raw)[:-12], "gzip", 100)  # cut short
    bomb = gzip.compress(b" " * 10_000_000)
    with pytest.raises(TooLarge):
        decode_content(bomb, "gzip", 1_000_000)


def test_body_copy_bounded() -> None:
    copy = BodyCopy(10)
    chunk = b"12345"
    assert copy.add(chunk) and copy.add(b"")
    assert copy.chunks[0] is chunk  # a reference, not a copy
    assert copy.add(b"67890") and not copy.over
    assert copy.take() == b"1234567890"
    copy = BodyCopy(10)
    assert copy.add(b"123456") and not copy.add(b"78901")
    assert copy.over and copy.chunks == [] and not copy.add(b"1")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*sorted(OPERATIONS), "ListTables", ""]), st.binary(max_size=300))
def test_request_table_random_bytes(op: str, data: bytes) -> None:
    try:
        result = request_table(op, data)
    except InvalidBody:
        return
    assert isinstance(result, TableDescriptor)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | \
        st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["TableName", "RequestItems", "TransactItems", "Put", "Get", "Statement",
                         "Statements", "TransactStatements", "ConsumedCapacity", "Partitions",
                         "UnprocessedKeys", "UnprocessedItems", "__type", "x"]),
        inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(OPERATIONS)), _json_values(), st.sampled_from([200, 400, 500]))
def test_readers_on_random_json_shapes(op: str, value: Any, status: int) -> None:
    data = body(value)
    with contextlib.suppress(InvalidBody):
        request_table(op, data)
    facts = read_response(op, "orders", status, data)  # well-formed JSON never raises here
    assert (facts.error_type is not None) == (status == 400)
