"""Envoy oracle for mongo_proxy: the same YAML (tests/mongo/configs/mongo_proxy.yaml, a copy of
the reference config, ports substituted, access-log paths set), the same raw legacy-opcode
traffic to a scripted peer (legacy_peer.py), through the real Envoy 1.39.3 and through envoi.

Asserted equal: every ``mongo.*`` counter and gauge (names and values), the histogram names and
their sample counts, and the access-log lines with the ``time`` field removed.

Where envoi differs on purpose (OP_MSG is decoded; see plugins/mongo/README.md, "Differences
from Envoy"), the difference is asserted explicitly, on the ``mongo_in`` listener only.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from envoi.testing import EnvoiProcess, free_port, wait_for
from envoy_oracle import EnvoyProcess, http_text, mongo_histogram_counts
from legacy_peer import LegacyPeer
from mongo_frames import (
    OP_COMMAND,
    cstr,
    doc,
    frame,
    op_get_more,
    op_insert,
    op_kill_cursors,
    op_msg,
    op_query,
)

CONFIG = Path(__file__).parent / "configs" / "mongo_proxy.yaml"

# OP_QUERY flags (wire protocol): every one of them is sent.
TAILABLE, SLAVE_OK, OPLOG_REPLAY, NO_CURSOR_TIMEOUT = 0x2, 0x4, 0x8, 0x10
AWAIT_DATA, EXHAUST, PARTIAL = 0x20, 0x40, 0x80
CALLSITE = '{"callingFunction": "getOpenOrders", "file": "orders.py"}'

# Values of every BSON type Envoy's decoder knows, for the access-log comparison.
ALL_TYPES: dict[str, Any] = {
    "double": 1.5, "neg": -0.25, "str": 'quote " tab \t nl \n é', "doc": {"a": {"b": 1}},
    "arr": [1, "two", [3]], "bin": Binary(b"abc"), "oid": ObjectId("0123456789abcdef01234567"),
    "t": True, "f": False, "date": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    "null": None, "re": Regex("^a.b$", "im"), "i32": -7, "ts": Timestamp(1700000000, 5),
    "i64": Int64(2**40),
}


def op_command(db: str, name: str, args: dict[str, Any], request_id: int) -> bytes:
    return frame(OP_COMMAND, cstr(db) + cstr(name) + doc(args) + doc({}), request_id)


def legacy_traffic() -> list[tuple[bytes, bool]]:
    """(frame, expects a reply) in order; request ids 1, 2, 3..."""
    out: list[tuple[bytes, bool]] = []

    def q(coll: str, query: dict[str, Any], flags: int = 0, n_return: int = 0,
          fields: dict[str, Any] | None = None, skip: int = 0) -> None:
        out.append((op_query(coll, query, flags=flags, n_return=n_return, fields=fields,
                             skip=skip, request_id=len(out) + 1), True))

    # Commands: the default `commands` list is insert/update/delete, the rest unknown_command.
    q("admin.$cmd", {"isMaster": 1}, n_return=-1)
    q("admin.$cmd", {"ismaster": 1, "helloOk": True}, n_return=-1)
    q("admin.$cmd", {"$query": {"buildInfo": 1}, "$readPreference": {"mode": "primary"}},
      n_return=-1)
    q("shop.$cmd", {"insert": "orders", "documents": [{"_id": 1, "qty": 2}]}, n_return=-1)
    q("shop.$cmd", {"update": "orders", "updates": [{"q": {"_id": 1}, "u": {"$set": {"x": 1}}}]},
      n_return=-1)
    q("shop.$cmd", {"delete": "orders", "deletes": [{"q": {"_id": 1}, "limit": 1}]}, n_return=-1)
    # 3.2-style find commands: queries on their collection, callsite from `comment`.
    q("shop.$cmd", {"find": "orders", "filter": {"_id": 5},
                    "comment": '{"callingFunction": "findOne"}'}, n_return=-1)
    q("shop.$cmd", {"find": "orders", "filter": {"status": "open"}, "limit": 3}, n_return=-1)
    # _id scalar / document / array, inside $query too.
    q("shop.orders", {"_id": 7}, n_return=1)
    q("shop.orders", {"_id": {"$in": [1, 2, 3]}})
    q("shop.orders", {"_id": [1, 2]})
    q("shop.orders", {"$query": {"_id": {"$gt": 5}}, "$orderby": {"qty": -1}})
    q("shop.orders", {"$query": {"_id": 9}}, n_return=1)
    # $comment callsites and $maxTimeMS of each type.
    q("shop.orders", {"$query": {"status": "open"}, "$comment": CALLSITE, "$maxTimeMS": 100})
    q("shop.orders", {"$query": {"status": "closed"}, "$comment": CALLSITE,
                      "$maxTimeMS": Int64(250)})
    q("shop.orders", {"status": "x", "$maxTimeMS": 0})
    q("shop.orders", {"status": "x", "$maxTimeMS": 100.0})
    q("shop.orders", {"status": "x", "$comment": "not json"})
    q("shop.orders", {"status": "x", "$comment": '{"file": "no calling function"}'})
    q("shop.users", {"name": "ann", "$comment": '{"callingFunction": "login"}',
                     "$maxTimeMS": 5}, fields={"name": 1, "_id": 0}, skip=3, n_return=5)
    # Every flag alone, then all together.
    for f in (TAILABLE, SLAVE_OK, OPLOG_REPLAY, NO_CURSOR_TIMEOUT, TAILABLE | AWAIT_DATA,
              EXHAUST, PARTIAL, 0xFE):
        q("shop.events", {"kind": "flag", "flags": f}, flags=f)
    # Every BSON type, for the access log.
    q("shop.orders", dict(ALL_TYPES))
    # QueryFailure.
    q("shop.failing", {"boom": True})
    # OP_GET_MORE: a live cursor, then a dead one (CursorNotFound).
    n = len(out)
    out.append((op_get_more("shop.orders", 12345, n_return=10, request_id=n + 1), True))
    out.append((op_get_more("shop.orders", 999, request_id=n + 2), True))
    # OP_INSERT (plain, and ContinueOnError), OP_KILL_CURSORS: no reply.
    n = len(out)
    out.append((op_insert("shop.orders", [{"_id": 10, "v": 1.25}, dict(ALL_TYPES)],
                          request_id=n + 1), False))
    out.append((op_insert("shop.audit", [{"e": "x"}], flags=1, request_id=n + 2), False))
    out.append((op_kill_cursors([12345, 999], request_id=n + 3), False))
    # OP_COMMAND / OP_COMMANDREPLY.
    out.append((op_command("admin", "ping", {"ping": 1}, request_id=len(out) + 1), True))
    # A last query: its reply proves everything before it went through both ways.
    q("shop.orders", {"last": True})
    return out


def read_frame(s: socket.socket) -> bytes:
    buf = b""
    while len(buf) < 4 or len(buf) < struct.unpack_from("<i", buf)[0]:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {len(buf)} bytes of a reply"
        buf += chunk
    return buf


def run(port: int, traffic: list[tuple[bytes, bool]]) -> list[bytes]:
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for data, expects_reply in traffic:
            s.sendall(data)
            if expects_reply:
                replies.append(read_frame(s))
    return replies


def silent_query(port: int) -> None:
    """A query the peer never answers, then the client hangs up: an active request at close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(op_query("shop.silent", {"wait": True}, request_id=1))
        s.sendall(op_query("shop.orders", {"_id": 1}, request_id=2, n_return=1))
        assert struct.unpack_from("<iii", read_frame(s))[2] == 2


def mongo_in_traffic(port: int) -> None:
    """On the `mongo_in` listener: a legacy isMaster (same on both), then an OP_MSG hello, then
    a legacy query (Envoy stops sniffing at the OP_MSG; envoi decodes all three)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(op_query("admin.$cmd", {"isMaster": 1}, n_return=-1, request_id=1))
        read_frame(s)
        s.sendall(op_msg({"hello": 1, "$db": "admin"}, request_id=2))
        read_frame(s)
        s.sendall(op_query("shop.orders", {"_id": 1}, n_return=1, request_id=3))
        read_frame(s)


@dataclass
class Observed:
    stats: dict[str, int]  # every mongo.* counter and gauge
    histograms: set[str]  # mongo.* histogram names
    counts: dict[str, int]  # prometheus <metric>{labels} -> sample count
    log: list[dict[str, Any]]  # legacy access log, "time" removed
    log_in: list[dict[str, Any]]  # mongo_in access log, "time" removed
    replies: list[bytes]


def read_stats(admin: int) -> tuple[dict[str, int], set[str]]:
    body = json.loads(http_text(admin, "/stats?format=json"))
    stats = {e["name"]: e["value"] for e in body["stats"]
             if "name" in e and e["name"].startswith("mongo.")}
    hists = set()
    for line in http_text(admin, "/stats").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("mongo.") and (value.startswith("P0(") or
                                          value.startswith("No recorded values")):
            hists.add(name)
    return stats, hists


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        entry = json.loads(line.decode("utf-8", "surrogateescape"))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("time"))
        out.append(entry)
    return out


def config_for(admin: int, legacy: int, mongo_in: int, peer: int, logdir: Path) -> str:
    text = CONFIG.read_text()
    for old, new in (("18004", admin), ("18400", mongo_in), ("18410", legacy),
                     ("18401", peer), ("18402", peer)):
        text = text.replace(f"port_value: {old}", f"port_value: {new}")
    text = text.replace("access_log: mongo_access.log",
                        f"access_log: {logdir / 'mongo_access.log'}")
    text = text.replace("access_log: mongo_legacy_access.log",
                        f"access_log: {logdir / 'mongo_legacy_access.log'}")
    return text


def drive(admin: int, legacy: int, mongo_in: int, logdir: Path,
          traffic: list[tuple[bytes, bool]], expected_lines: int, in_lines: int) -> Observed:
    replies = run(legacy, traffic)
    silent_query(legacy)
    mongo_in_traffic(mongo_in)

    def settled() -> Observed | None:
        stats, hists = read_stats(admin)
        if (stats.get("mongo.legacy.cx_destroy_remote_with_active_rq", 0)
                + stats.get("mongo.legacy.cx_destroy_local_with_active_rq", 0)) != 1:
            return None
        log = read_log(logdir / "mongo_legacy_access.log")
        log_in = read_log(logdir / "mongo_access.log")
        if len(log) < expected_lines or len(log_in) < in_lines:
            return None
        counts = mongo_histogram_counts(http_text(admin, "/stats/prometheus"))
        # Envoy merges histograms into the admin view on its stats flush (every 5 s).
        if sum(v for k, v in counts.items() if "reply_time_ms" in k) < 30:
            return None
        return Observed(stats, hists, counts, log, log_in, replies)

    return wait_for(settled, 30, interval=0.1, what="stats, histograms and access log")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Observed, Observed]]:
    """One run through Envoy, then one through envoi, shared by the tests below."""
    traffic = legacy_traffic()
    replies = sum(1 for _, r in traffic if r)
    # Every request and every reply gets a line; then the silent connection's 2 queries, 1 reply.
    lines = len(traffic) + replies + 3
    with LegacyPeer() as peer:
        d = tmp_path_factory.mktemp("envoy")
        admin, legacy, mongo_in = free_port(), free_port(), free_port()
        cfg = d / "envoy.yaml"
        cfg.write_text(config_for(admin, legacy, mongo_in, peer.port, d))
        envoy = EnvoyProcess(cfg, admin, d / "envoy.out").start()
        try:
            theirs = drive(admin, legacy, mongo_in, d, traffic, lines, 2)
        finally:
            envoy.stop()

        d = tmp_path_factory.mktemp("envoi")
        admin, legacy, mongo_in = free_port(), free_port(), free_port()
        envoi = EnvoiProcess.from_yaml(config_for(admin, legacy, mongo_in, peer.port, d), d,
                                       admin)
        with envoi:
            ours = drive(admin, legacy, mongo_in, d, traffic, lines, 6)
        yield ours, theirs


def split(stats: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k.startswith(prefix)}


def test_legacy_stats_match_envoy(observed: tuple[Observed, Observed]) -> None:
    ours, theirs = observed
    assert ours.replies == theirs.replies  # both proxies passed every byte both ways
    mine, envoys = split(ours.stats, "mongo.legacy."), split(theirs.stats, "mongo.legacy.")
    assert sorted(mine) == sorted(envoys)
    assert {k: v for k, v in mine.items() if envoys[k] != v} == {}, \
        {k: (v, envoys[k]) for k, v in mine.items() if envoys[k] != v}
    # The run really exercised what it claims (guards against both sides counting nothing).
    for name, value in {
        "op_query": 33, "op_reply": 34, "op_get_more": 2, "op_insert": 2, "op_kill_cursors": 1,
        "op_command": 1, "op_command_reply": 1, "op_reply_query_failure": 1,
        "op_reply_cursor_not_found": 1, "op_query_exhaust": 2, "op_query_tailable_cursor": 3,
        "op_query_await_data": 2, "op_query_no_cursor_timeout": 2,
        "cmd.insert.total": 1, "cmd.update.total": 1, "cmd.delete.total": 1,
        "cmd.unknown_command.total": 3, "collection.orders.callsite.getOpenOrders.query.total": 2,
        "collection.orders.callsite.findOne.query.total": 1,
        "cx_destroy_local_with_active_rq": 1, "op_query_active": 0, "decoding_error": 0,
    }.items():
        assert mine[f"mongo.legacy.{name}"] == value, name


def test_histograms_match_envoy(observed: tuple[Observed, Observed]) -> None:
    ours, theirs = observed
    legacy = {h for h in theirs.histograms if h.startswith("mongo.legacy.")}
    assert legacy and sorted(h for h in ours.histograms if h.startswith("mongo.legacy.")) \
        == sorted(legacy)
    mine = {k: v for k, v in ours.counts.items() if 'envoy_mongo_prefix="legacy"' in k}
    envoys = {k: v for k, v in theirs.counts.items() if 'envoy_mongo_prefix="legacy"' in k}
    assert mine == envoys


def test_access_log_matches_envoy(observed: tuple[Observed, Observed]) -> None:
    ours, theirs = observed
    assert len(ours.log) == len(theirs.log)
    for i, (a, b) in enumerate(zip(ours.log, theirs.log, strict=True)):
        assert a == b, f"line {i}"
    opcodes = {e["message"]["opcode"] for e in ours.log}
    assert opcodes == {"OP_QUERY", "OP_REPLY", "OP_GET_MORE", "OP_INSERT", "KILL_CURSORS",
                       "OP_COMMAND", "OP_COMMANDREPLY"}


def test_op_msg_is_the_documented_difference(observed: tuple[Observed, Observed]) -> None:
    """mongo_in saw isMaster (OP_QUERY), hello (OP_MSG), a query (OP_QUERY). Envoy counts the
    first, fails on the OP_MSG and stops sniffing; envoi counts all three."""
    ours, theirs = observed
    envoys = {k: v for k, v in split(theirs.stats, "mongo.mongo_in.").items() if v}
    mine = {k: v for k, v in split(ours.stats, "mongo.mongo_in.").items() if v}
    assert envoys == {"mongo.mongo_in.op_query": 1, "mongo.mongo_in.op_reply": 1,
                      "mongo.mongo_in.cmd.isMaster.total": 1,
                      "mongo.mongo_in.decoding_error": 1}
    assert mine == {"mongo.mongo_in.op_query": 2, "mongo.mongo_in.op_reply": 2,
                    "mongo.mongo_in.cmd.isMaster.total": 1,
                    "mongo.mongo_in.cmd.hello.total": 1,
                    "mongo.mongo_in.op_msg": 1, "mongo.mongo_in.op_msg_reply": 1,
                    "mongo.mongo_in.collection.orders.query.total": 1,
                    "mongo.mongo_in.op_query_no_max_time": 1}
    # Names envoi has beyond Envoy's are only the documented OP_MSG ones and what the decoded
    # traffic after the OP_MSG created (a primary-key get: `total` only, created on use as in
    # Envoy); every Envoy name exists in envoi.
    extra = set(split(ours.stats, "mongo.mongo_in.")) - set(split(theirs.stats, "mongo.mongo_in."))
    assert extra == {"mongo.mongo_in.op_msg", "mongo.mongo_in.op_msg_reply",
                     "mongo.mongo_in.cmd.hello.total",
                     "mongo.mongo_in.collection.orders.query.total"}
    # Access log: Envoy has the first exchange only; envoi has all three, the same first lines.
    assert [e["message"]["opcode"] for e in theirs.log_in] == ["OP_QUERY", "OP_REPLY"]
    assert ours.log_in[:2] == theirs.log_in
    assert [e["message"]["opcode"] for e in ours.log_in[2:]] == \
        ["OP_MSG", "OP_MSG", "OP_QUERY", "OP_REPLY"]
