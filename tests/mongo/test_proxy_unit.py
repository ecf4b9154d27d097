"""mongo_proxy driven directly with real wire bytes: stats by name, access-log lines."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from bson.int64 import Int64
from envoi.network.filter import ConnectionCloseType, ConnectionEvent, FilterStatus
from envoi.stats import Histogram
from envoi_mongo.config import FaultDelay
from mongo_frames import (
    op_compressed,
    op_delete,
    op_get_more,
    op_insert,
    op_kill_cursors,
    op_msg,
    op_query,
    op_reply,
    op_update,
)
from mongo_harness import Proxy
from mongo_peers import RecordingRelay, secantusdb
from pymongo import MongoClient, errors, monitoring

ENVOY_GLOBAL_NAMES = {
    "decoding_error", "delays_injected", "op_command", "op_command_reply", "op_get_more",
    "op_insert", "op_kill_cursors", "op_query", "op_query_tailable_cursor",
    "op_query_no_cursor_timeout", "op_query_await_data", "op_query_exhaust",
    "op_query_no_max_time", "op_query_scatter_get", "op_query_multi_get", "op_reply",
    "op_reply_cursor_not_found", "op_reply_query_failure", "op_reply_valid_cursor",
    "cx_destroy_local_with_active_rq", "cx_destroy_remote_with_active_rq", "cx_drain_close",
    "op_query_active",
}

CALLSITE = '{"callingFunction": "getOpenOrders"}'


def legacy_session(p: Proxy) -> None:
    c = p.connect()
    steps = [
        (op_query("admin.$cmd", {"ismaster": 1}, n_return=-1, request_id=1), [{"ok": 1}], 0, 0),
        (op_query("admin.$cmd", {"buildInfo": 1}, n_return=-1, request_id=2), [{"ok": 1}], 0, 0),
        (op_query("shop.orders", {"_id": 7}, request_id=3), [{"_id": 7}], 0, 0),
        (op_query("shop.orders", {"status": "open"}, flags=0x22, request_id=4),
         [{"_id": 1}, {"_id": 2}], 123, 0),
        (op_query("shop.orders", {"$query": {"_id": {"$in": [1, 2]}}, "$maxTimeMS": 100},
                  request_id=5), [{"_id": 1}, {"_id": 2}], 0, 0),
        (op_query("shop.orders", {"$query": {"a": 1.5}, "$comment": CALLSITE,
                                  "$maxTimeMS": Int64(50)}, flags=0x10, request_id=6), [], 0, 0),
        (op_query("shop.$cmd", {"find": "orders", "filter": {"x": 1},
                                "comment": '{"callingFunction": "findOne"}'}, request_id=7),
         [{"cursor": {}}], 0, 0),
        (op_query("shop.failing", {}, flags=0x40, request_id=8), [{"$err": "boom"}], 0, 2),
        (op_get_more("shop.orders", 123, 10, request_id=9), [], 0, 1),
    ]
    for req, docs, cursor, flags in steps:
        assert c.client(req) is FilterStatus.CONTINUE
        rid = int.from_bytes(req[4:8], "little")
        assert c.server(op_reply(docs, response_to=rid, cursor_id=cursor, flags=flags,
                                 request_id=100 + rid)) is FilterStatus.CONTINUE
    c.client(op_insert("shop.orders", [{"_id": 10, "tags": ["a", "b"]}, {"_id": 11}],
                       request_id=10))
    c.client(op_kill_cursors([123], request_id=11))
    c.close()


def test_legacy_stats_match_envoys_rules() -> None:
    p = Proxy("legacy")
    legacy_session(p)
    assert p.nonzero() == {
        "op_query": 8, "op_reply": 9, "op_get_more": 1, "op_insert": 1, "op_kill_cursors": 1,
        "op_query_tailable_cursor": 1, "op_query_await_data": 1,
        "op_query_no_cursor_timeout": 1, "op_query_exhaust": 1,
        "op_query_scatter_get": 4, "op_query_multi_get": 1, "op_query_no_max_time": 4,
        "op_reply_valid_cursor": 1, "op_reply_cursor_not_found": 1,
        "op_reply_query_failure": 1,
        "cmd.unknown_command.total": 2,
        "collection.orders.query.total": 5, "collection.orders.query.scatter_get": 3,
        "collection.orders.query.multi_get": 1,
        "collection.orders.callsite.getOpenOrders.query.total": 1,
        "collection.orders.callsite.getOpenOrders.query.scatter_get": 1,
        "collection.orders.callsite.findOne.query.total": 1,
        "collection.orders.callsite.findOne.query.scatter_get": 1,
        "collection.failing.query.total": 1, "collection.failing.query.scatter_get": 1,
    }
    assert p.stat("op_query_active") == 0
    # Only Envoy's names exist: envoi's extra counters are made on first use.
    extra = {n for n in p.names() if not n.startswith(("cmd.", "collection."))}
    assert extra == ENVOY_GLOBAL_NAMES
    h = p.hist("collection.orders.query.reply_num_docs")
    assert (h.sample_count, h.sample_sum) == (5, 1 + 2 + 2 + 0 + 1)
    assert p.hist("cmd.unknown_command.reply_size").sample_count == 2
    assert p.hist("collection.orders.callsite.findOne.query.reply_time_ms").sample_count == 1


def _lines(path: Path) -> list[str]:
    return [re.sub(r'"time": "[^"]+"', '"time": "T"', ln) for ln in path.read_text().splitlines()]


def test_legacy_access_log_is_envoys_format(tmp_path: Path) -> None:
    log = tmp_path / "mongo.log"
    p = Proxy("legacy", access_log=log)
    legacy_session(p)
    assert p.log is not None
    p.log.flush()
    lines = _lines(log)
    assert len(lines) == 20
    host = '"upstream_host": "127.0.0.1:27017"}'
    assert lines[0] == (
        '{"time": "T", "message": {"opcode": "OP_QUERY", "id": 1, "response_to": 0, '
        '"flags": "0x0", "collection": "admin.$cmd", "skip": 0, "return": -1, '
        '"query": {"ismaster": 1}, "fields": {}}, ' + host)
    assert lines[1] == (
        '{"time": "T", "message": {"opcode": "OP_REPLY", "id": 101, "response_to": 1, '
        '"flags": "0x0", "cursor": "0", "from": 0, "returned": 1, "documents": 1}, ' + host)
    assert '"query": {"$query": {"_id": {"$in": {"0": 1, "1": 2}}}, "$maxTimeMS": 100}' in lines[8]
    assert ('"query": {"$query": {"a": 1.500000}, "$comment": "{\\"callingFunction\\": '
            '\\"getOpenOrders\\"}", "$maxTimeMS": 50}') in lines[10]
    assert '"opcode": "OP_GET_MORE", "id": 9, "response_to": 0, "collection": "shop.orders", ' \
           '"return": 10, "cursor": 123}' in lines[16]
    assert lines[18] == (
        '{"time": "T", "message": {"opcode": "OP_INSERT", "id": 10, "response_to": 0, '
        '"flags": "0x0", "collection": "shop.orders", "documents": [{"_id": 10, "tags": '
        '{"0": "a", "1": "b"}}, {"_id": 11}]}, ' + host)
    assert lines[19] == (
        '{"time": "T", "message": {"opcode": "KILL_CURSORS", "id": 11, "response_to": "0x0", '
        '"num_cursors": "1", "cursors": [123]}, ' + host)
    assert re.match(r'\{"time": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"',
                    log.read_text().splitlines()[0])


def test_op_msg_commands_and_find_per_collection() -> None:
    p = Proxy("m", commands=("find", "insert", "getMore"))
    c = p.connect()
    c.client(op_msg({"find": "orders", "filter": {"_id": 1}, "$db": "shop"}, request_id=1))
    c.server(op_msg({"cursor": {"firstBatch": [{"_id": 1}, {"_id": 2}, {"_id": 3}], "id": 0,
                                "ns": "shop.orders"}, "ok": 1.0}, request_id=50, response_to=1))
    c.client(op_msg({"find": "orders", "filter": {"_id": {"$in": [1]}},
                     "comment": CALLSITE, "$db": "shop"}, request_id=2))
    c.server(op_msg({"cursor": {"firstBatch": [], "id": 9}, "ok": 1.0}, request_id=51,
                    response_to=2))
    c.client(op_msg({"getMore": Int64(9), "collection": "orders", "$db": "shop"}, request_id=3))
    c.server(op_msg({"cursor": {"nextBatch": [{"_id": 4}], "id": 0}, "ok": 1.0}, request_id=52,
                    response_to=3))
    c.client(op_msg({"insert": "orders", "$db": "shop"},
                    sequences=[("documents", [{"_id": 5}])], request_id=4))
    c.server(op_msg({"n": 1, "ok": 1.0}, request_id=53, response_to=4))
    c.client(op_msg({"update": "orders", "$db": "shop"}, request_id=5))
    assert p.stat("op_query_active") == 1
    c.server(op_msg({"n": 1, "ok": 1.0}, request_id=54, response_to=5))
    assert p.nonzero() == {
        "op_msg": 5, "op_msg_reply": 5,
        "cmd.find.total": 2, "cmd.getMore.total": 1, "cmd.insert.total": 1,
        "cmd.unknown_command.total": 1,
        "collection.orders.query.total": 2, "collection.orders.query.multi_get": 1,
        "collection.orders.callsite.getOpenOrders.query.total": 1,
        "collection.orders.callsite.getOpenOrders.query.multi_get": 1,
    }
    assert p.stat("op_query_active") == 0
    assert p.hist("cmd.find.reply_num_docs").sample_sum == 3
    assert p.hist("cmd.getMore.reply_num_docs").sample_sum == 1
    assert p.hist("cmd.insert.reply_num_docs").sample_sum == 1
    assert p.hist("collection.orders.query.reply_num_docs").sample_count == 2


HELLO = {"hello": 1, "topologyVersion": {"processId": 1, "counter": Int64(0)},
         "maxAwaitTimeMS": 10000, "$db": "admin"}


def test_exhaust_hello_pairs_every_reply_and_is_not_active() -> None:
    p = Proxy("m", commands=("hello",))
    c = p.connect()
    c.client(op_msg(HELLO, flags=0x10000, request_id=10))
    assert p.stat("op_query_active") == 0
    c.server(op_msg({"isWritablePrimary": True, "ok": 1.0}, flags=2, request_id=50,
                    response_to=10))
    c.server(op_msg({"isWritablePrimary": True, "ok": 1.0}, flags=2, request_id=51,
                    response_to=50))
    c.server(op_msg({"isWritablePrimary": True, "ok": 1.0}, flags=2, request_id=52,
                    response_to=51))
    c.close()
    assert p.stat("cmd.hello.total") == 1
    assert p.stat("op_msg_reply") == 3 and p.stat("op_msg_more_to_come") == 3
    assert p.stat("op_msg_exhaust_allowed") == 1
    assert p.hist("cmd.hello.reply_num_docs").sample_count == 3
    assert p.hist("cmd.hello.reply_time_ms").sample_count == 0  # a long poll is not latency
    assert p.stat("cx_destroy_remote_with_active_rq") == 0
    assert p.stat("op_query_active") == 0


def test_close_with_active_request_both_ways() -> None:
    p = Proxy("m")
    for event, name in ((ConnectionEvent.REMOTE_CLOSE, "cx_destroy_remote_with_active_rq"),
                        (ConnectionEvent.LOCAL_CLOSE, "cx_destroy_local_with_active_rq")):
        c = p.connect()
        c.client(op_query("db.c", {"a": 1}, request_id=1))
        c.client(op_msg({"ping": 1, "$db": "admin"}, request_id=2))
        assert p.stat("op_query_active") == 2
        c.close(event)
        assert p.stat(name) == 1
        assert p.stat("op_query_active") == 0


def test_close_after_server_ended_is_local_as_in_envoy() -> None:
    """Client FIN, then ours: Envoy counts by who sent the last FIN, so a local close (seen in
    the oracle); the other way round it is remote."""
    p = Proxy("m")
    c = p.connect()
    c.client(op_query("db.silent", {"a": 1}, request_id=1))
    c.filter.on_data(b"", True)
    c.filter.on_write(b"", True)
    c.close(ConnectionEvent.REMOTE_CLOSE)
    assert p.stat("cx_destroy_local_with_active_rq") == 1
    assert p.stat("cx_destroy_remote_with_active_rq") == 0
    # The other order: the server's end reached the client first, the client's FIN was last.
    c = p.connect()
    c.client(op_query("db.silent", {"a": 1}, request_id=1))
    c.filter.on_write(b"", True)
    c.filter.on_data(b"", True)
    c.close(ConnectionEvent.REMOTE_CLOSE)
    assert p.stat("cx_destroy_local_with_active_rq") == 1
    assert p.stat("cx_destroy_remote_with_active_rq") == 1


def test_fire_and_forget_request_is_not_tracked() -> None:
    p = Proxy("m")
    c = p.connect()
    c.client(op_msg({"insert": "c", "writeConcern": {"w": 0}, "$db": "d"}, flags=2,
                    sequences=[("documents", [{"_id": 1}])]))
    assert p.stat("op_query_active") == 0 and p.stat("cmd.insert.total") == 1


def test_decoding_error_stops_sniffing_and_passes_bytes() -> None:
    p = Proxy("m")
    bad = p.connect()
    good = p.connect()
    good.client(op_msg({"ping": 1, "$db": "admin"}, request_id=1))
    assert bad.client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is FilterStatus.CONTINUE
    assert p.stat("decoding_error") == 1
    assert bad.client(op_msg({"ping": 1, "$db": "admin"}, request_id=2)) is FilterStatus.CONTINUE
    assert bad.server(op_msg({"ok": 1}, response_to=2)) is FilterStatus.CONTINUE
    assert p.stat("decoding_error") == 1  # counted once, then silent
    good.server(op_msg({"ok": 1.0}, request_id=9, response_to=1))
    assert p.stat("op_msg") == 1 and p.stat("op_msg_reply") == 1


def test_error_mid_stream_keeps_what_came_before() -> None:
    p = Proxy("m")
    c = p.connect()
    c.client(op_query("db.c", {}, request_id=1) + b"\x00" * 20)
    assert p.stat("op_query") == 1 and p.stat("decoding_error") == 1


def test_server_error_counts_and_stops() -> None:
    p = Proxy("m")
    c = p.connect()
    c.client(op_query("db.c", {}, request_id=1))
    assert c.server(b"\xff" * 32) is FilterStatus.CONTINUE
    assert p.stat("decoding_error") == 1
    assert c.client(op_query("db.c", {}, request_id=2)) is FilterStatus.CONTINUE
    assert p.stat("op_query") == 1


def test_compressed_and_removed_opcodes() -> None:
    p = Proxy("m", commands=("find",))
    c = p.connect()
    c.client(op_compressed(op_msg({"find": "c", "$db": "d"}, request_id=1)))
    c.server(op_compressed(op_msg({"cursor": {"firstBatch": [{}], "id": 0}, "ok": 1.0},
                                  request_id=7, response_to=1)))
    raw = bytearray(op_compressed(op_msg({"ping": 1}, request_id=2), compressor_id=0))
    raw[24] = 42
    c.client(bytes(raw))
    c.client(op_update("d.c", request_id=3) + op_delete("d.c", request_id=4))
    assert p.nonzero() == {
        "op_compressed": 3, "op_compressed_not_decompressed": 1, "op_msg": 1,
        "op_msg_reply": 1, "cmd.find.total": 1, "collection.c.query.total": 1,
        "collection.c.query.scatter_get": 1, "op_update": 1, "op_delete": 1,
    }


def test_op_msg_access_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    p = Proxy("m", access_log=log)
    c = p.connect()
    c.client(op_msg({"insert": "c", "$db": "d"}, sequences=[("documents", [{"_id": 1}])],
                    request_id=4))
    c.server(op_msg({"n": 1, "ok": 1.0}, request_id=53, response_to=4))
    c.client(op_compressed(op_msg({"ping": 1}, request_id=5)))
    assert p.log is not None
    p.log.flush()
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert lines[0]["message"] == {"opcode": "OP_MSG", "id": 4, "response_to": 0, "flags": "0x0",
                                   "body": {"insert": "c", "$db": "d"},
                                   "sequences": [{"identifier": "documents", "size": 14}]}
    assert lines[1]["message"] == {"opcode": "OP_MSG", "id": 53, "response_to": 4,
                                   "flags": "0x0", "documents": 1, "size": 24, "ok": 1.0}
    assert lines[2]["message"]["opcode"] == "OP_COMPRESSED"
    assert lines[2]["message"]["message"]["body"] == {"ping": 1}


def test_dynamic_metadata() -> None:
    p = Proxy("m", metadata=True)
    c = p.connect()
    c.client(op_insert("shop.orders", [{"_id": 1}]) + op_query("shop.orders", {"_id": 1}))
    md = c.cb.connection.stream_info.extra["filter_metadata"]["envoy.filters.network.mongo_proxy"]
    assert md == {"shop.orders": ["insert", "query"]}


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_fault_delay_holds_then_continues() -> None:
    async def run() -> None:
        p = Proxy("m", delay=FaultDelay(50, 100, 100))
        c = p.connect()
        assert c.client(op_msg({"ping": 1}, request_id=1)) is FilterStatus.STOP_ITERATION
        # A second message while the delay runs is decoded but starts no second delay.
        assert c.client(op_msg({"ping": 1}, request_id=2)) is FilterStatus.STOP_ITERATION
        assert p.stat("delays_injected") == 1 and p.stat("op_msg") == 2
        await wait_for(lambda: c.cb.continued == 1)
        assert c.client(op_query("a.b", {}, request_id=3)) is FilterStatus.STOP_ITERATION
        assert p.stat("delays_injected") == 2
        c.close()  # the timer is cancelled with the connection
        p0 = Proxy("zero", delay=FaultDelay(50, 0, 100))
        assert p0.connect().client(op_msg({"ping": 1})) is FilterStatus.CONTINUE
        assert p0.stat("delays_injected") == 0

    asyncio.run(run())


def test_drain_close_after_last_reply() -> None:
    async def run() -> None:
        p = Proxy("m")
        c = p.connect()
        c.client(op_msg({"ping": 1}, request_id=1) + op_msg({"ping": 1}, request_id=2))
        p.server.draining = True
        c.server(op_msg({"ok": 1.0}, request_id=9, response_to=1))
        assert p.stat("cx_drain_close") == 0  # request 2 still in flight
        c.server(op_msg({"ok": 1.0}, request_id=10, response_to=2))
        assert p.stat("cx_drain_close") == 1
        await wait_for(lambda: c.cb.connection.closed_with is ConnectionCloseType.FLUSH_WRITE)

    asyncio.run(run())


def test_access_log_is_written_within_a_second(tmp_path: Path) -> None:
    async def run() -> None:
        log = tmp_path / "live.log"
        p = Proxy("m", access_log=log)
        p.connect().client(op_msg({"ping": 1}))
        # (0.5 s here; the bound tells it from Envoy's 10 s with room for a loaded box)
        await wait_for(lambda: log.exists() and log.read_text().count("\n") == 1, timeout=5)

    asyncio.run(run())


# -- a recorded pymongo session against a wire-compatible server (SecantusDB) -----------------

COMMANDS = ("find", "getMore", "insert", "update", "delete", "aggregate", "count",
            "createIndexes", "hello")


def walk(chunks: list[tuple[bool, bytes]], from_client: bool) -> list[tuple[int, int, str]]:
    """An independent frame walker: (opcode, flags, first body key) per frame, one direction."""
    import bson

    data = b"".join(b for d, b in chunks if d is from_client)
    out, pos = [], 0
    while pos + 16 <= len(data):
        length, _, _, opcode = struct.unpack_from("<iiii", data, pos)
        flags, key = 0, ""
        if opcode == 2013:
            (flags,) = struct.unpack_from("<I", data, pos + 16)
            assert data[pos + 20] == 0  # pymongo puts the body first
            (size,) = struct.unpack_from("<i", data, pos + 21)
            key = next(iter(bson.decode(data[pos + 21 : pos + 21 + size])))
        out.append((opcode, flags, key))
        pos += length
    assert pos == len(data)
    return out


class CommandLog(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.batch_docs: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor")
        if isinstance(cursor, dict):
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.batch_docs[event.command_name] += len(batch)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def run_pymongo_session(relay: RecordingRelay, log: CommandLog) -> None:
    uri = (f"mongodb://127.0.0.1:{relay.port}/?directConnection=true"
           "&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=10000")
    client: MongoClient[dict[str, object]] = MongoClient(uri, event_listeners=[log])
    try:
        coll = client.shop.orders
        coll.insert_many([{"_id": i, "sku": f"s{i}", "status": "open" if i % 2 else "closed",
                           "qty": i} for i in range(25)])
        assert len(list(coll.find({"status": "open"}).batch_size(4))) == 12
        assert coll.find_one({"_id": 3}) == {"_id": 3, "sku": "s3", "status": "open", "qty": 3}
        assert len(list(coll.find({"_id": {"$in": [1, 2]}}))) == 2
        assert len(list(coll.find({"qty": {"$gt": 20}}, comment=CALLSITE))) == 4
        assert coll.update_one({"_id": 1}, {"$set": {"qty": 100}}).modified_count == 1
        assert coll.update_many({"status": "closed"}, {"$inc": {"qty": 1}}).modified_count == 13
        assert coll.delete_one({"_id": 2}).deleted_count == 1
        groups = {g["_id"]: g["n"] for g in coll.aggregate(
            [{"$match": {"qty": {"$gte": 0}}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
        assert groups == {"open": 12, "closed": 12}
        assert coll.count_documents({"status": "open"}) == 12
        assert coll.estimated_document_count() == 24
        coll.create_index("sku", unique=True)
        with pytest.raises(errors.DuplicateKeyError):
            coll.insert_one({"_id": 1000, "sku": "s5"})
        with pytest.raises(errors.OperationFailure):
            client.shop.command("notARealCommand")

        # Wait (bounded) until the monitor's streaming hello has produced an exhaust reply.
        def streamed() -> bool:
            return any(op == 2013 and fl & 2 for conn in relay.snapshot()
                       for op, fl, _ in walk(conn, False))

        deadline = time.monotonic() + 15
        while not streamed():
            assert time.monotonic() < deadline, "no moreToCome hello reply seen"
            time.sleep(0.05)
    finally:
        client.close()


def test_recorded_pymongo_session_wire_compatible_server() -> None:
    """pymongo through a recording relay to SecantusDB (a wire-compatible server, not MongoDB);
    the recorded bytes are replayed through the filter and the stats checked name by name."""
    log = CommandLog()
    with secantusdb() as port, RecordingRelay(port) as relay:
        run_pymongo_session(relay, log)
    conns = relay.snapshot()
    p = Proxy("session", commands=COMMANDS)
    for chunks in conns:
        c = p.connect()
        for from_client, data in chunks:
            assert (c.client(data) if from_client else c.server(data)) is FilterStatus.CONTINUE
        c.close()
    assert p.stat("decoding_error") == 0
    c2s = [f for conn in conns for f in walk(conn, True)]
    s2c = [f for conn in conns for f in walk(conn, False)]
    assert {op for op, _, _ in c2s + s2c} == {2013}  # pymongo speaks only OP_MSG
    assert p.stat("op_msg") == len(c2s)
    assert p.stat("op_msg_reply") == len(s2c)
    assert p.stat("op_msg_more_to_come") == sum(1 for _, fl, _ in c2s + s2c if fl & 2) > 0
    assert p.stat("op_query") == 0 and p.stat("op_reply") == 0

    sent = Counter(key for _, _, key in c2s)
    expected: Counter[str] = Counter()
    for key, n in sent.items():
        expected[key if key in COMMANDS else "unknown_command"] += n
    for name, n in expected.items():
        assert p.stat(f"cmd.{name}.total") == n, name
    # What the driver says it sent agrees with what the filter counted, command by command.
    for name in ("find", "getMore", "insert", "update", "delete", "aggregate", "count",
                 "createIndexes"):
        assert p.stat(f"cmd.{name}.total") == log.sent[name], name
    assert log.sent["notARealCommand"] == 1 and expected["unknown_command"] >= 1

    finds = log.sent["find"]
    assert p.stat("collection.orders.query.total") == finds == 4
    assert p.stat("collection.orders.query.scatter_get") == 2  # status filter, qty filter
    assert p.stat("collection.orders.query.multi_get") == 1  # _id: {$in: ...}
    assert p.stat("collection.orders.callsite.getOpenOrders.query.total") == 1
    assert p.stat("collection.orders.callsite.getOpenOrders.query.scatter_get") == 1

    assert p.hist("cmd.find.reply_num_docs").sample_sum == log.batch_docs["find"]
    assert p.hist("cmd.getMore.reply_num_docs").sample_sum == log.batch_docs["getMore"]
    assert log.batch_docs["find"] + log.batch_docs["getMore"] == 12 + 1 + 2 + 4
    # Every reply, exhaust hello replies included, was paired with its request.
    paired = sum(h.sample_count for h in p.store if isinstance(h, Histogram)
                 and h.name.startswith(p.prefix + "cmd.") and h.name.endswith(".reply_num_docs"))
    assert paired == len(s2c)
    assert p.stat("op_query_active") == 0


def test_truncated_frame_at_end_of_stream_is_a_decoding_error() -> None:
    p = Proxy("m")
    frame_ = op_query("db.c", {"a": 1}, request_id=1)
    c = p.connect()
    c.client(frame_[:20])
    assert p.stat("decoding_error") == 0  # more may come
    c.filter.on_data(b"", True)
    assert p.stat("decoding_error") == 1
    c.close()
    assert p.stat("decoding_error") == 1  # counted once per connection
    # Server side: a reply cut short, then the connection closes.
    c = p.connect()
    c.client(frame_)
    c.server(op_reply([{"x": 1}], response_to=1)[:30])
    c.close()
    assert p.stat("decoding_error") == 2
    # A clean end between frames is no error.
    c = p.connect()
    c.client(frame_)
    c.filter.on_data(b"", True)
    c.close()
    assert p.stat("decoding_error") == 2
