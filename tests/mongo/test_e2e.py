"""End to end: pymongo -> envoi (mongo_proxy + tcp_proxy) -> SecantusDB, a wire-compatible
server (not MongoDB); stats read back from envoi's admin /stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mongo_peers import free_port, secantusdb, wait_port
from pymongo import MongoClient, errors

CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: mongo_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: mongo_in
          access_log: {log}
          commands: [find, getMore, insert, update, delete, aggregate, count, createIndexes]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db_tcp
          cluster: db
  clusters:
  - name: db
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: db
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {db}}}}}}}
"""


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Envoi:
    def __init__(self, admin: int, listen: int, log: Path) -> None:
        self.admin, self.listen, self.log = admin, listen, log

    def stats(self) -> dict[str, int]:
        _, body = http_get(self.admin, "/stats")
        out = {}
        for line in body.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith("mongo.mongo_in.") and value.lstrip("-").isdigit():
                out[name.removeprefix("mongo.mongo_in.")] = int(value)
        return out


@pytest.fixture
def envoi_to_secantus(tmp_path: Path) -> Iterator[Envoi]:
    with secantusdb() as db:
        admin, listen = free_port(), free_port()
        log = tmp_path / "mongo_access.log"
        cfg = tmp_path / "envoi.yaml"
        cfg.write_text(CONFIG.format(admin=admin, listen=listen, db=db, log=log))
        proc = subprocess.Popen([sys.executable, "-m", "envoi", "-c", str(cfg),
                                 "--concurrency", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ})
        try:
            wait_port(admin, proc)
            wait_until(lambda: http_get(admin, "/ready")[0] == 200, what="/ready")
            yield Envoi(admin, listen, log)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_pymongo_through_envoi_wire_compatible_server(envoi_to_secantus: Envoi) -> None:
    e = envoi_to_secantus
    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{e.listen}/?directConnection=true&serverSelectionTimeoutMS=10000")
    try:
        coll = client.shop.orders
        coll.insert_many([{"_id": i, "sku": f"s{i}", "qty": i} for i in range(20)])
        assert len(list(coll.find({"qty": {"$gte": 0}}).batch_size(5))) == 20
        assert coll.find_one({"_id": 4}) == {"_id": 4, "sku": "s4", "qty": 4}
        assert coll.update_one({"_id": 1}, {"$set": {"qty": 50}}).modified_count == 1
        assert coll.delete_one({"_id": 2}).deleted_count == 1
        assert [d["n"] for d in coll.aggregate([{"$count": "n"}])] == [19]
        assert coll.count_documents({}) == 19
        assert coll.estimated_document_count() == 19
        coll.create_index("sku", unique=True)
        with pytest.raises(errors.DuplicateKeyError):
            coll.insert_one({"_id": 99, "sku": "s3"})
        with pytest.raises(errors.OperationFailure):
            client.shop.command("notARealCommand")
    finally:
        client.close()

    expected = {
        "cmd.insert.total": 2, "cmd.find.total": 2, "cmd.getMore.total": 4,
        "cmd.update.total": 1, "cmd.delete.total": 1, "cmd.aggregate.total": 2,
        "cmd.count.total": 1, "cmd.createIndexes.total": 1,
        "collection.orders.query.total": 2, "collection.orders.query.scatter_get": 1,
        "decoding_error": 0, "op_query": 0, "op_reply": 0,
    }
    wait_until(lambda: all(e.stats().get(k) == v for k, v in expected.items()),
               what=f"stats {expected}")
    st = e.stats()
    assert st["cmd.unknown_command.total"] >= 2  # the handshake, notARealCommand, endSessions
    assert st["op_msg"] >= sum(v for k, v in st.items() if k.startswith("cmd.") and
                               k.endswith(".total") and k != "cmd.unknown_command.total")
    # The access log is written within a second or two (here: 6 s, for a loaded box), not
    # after Envoy's 10 s flush.
    # Binary values (session ids) are written as raw bytes, as Envoy does: read bytes.
    wait_until(lambda: e.log.exists() and b'"notARealCommand": 1' in e.log.read_bytes(),
               timeout=6, what="access log line")
    first = json.loads(e.log.read_bytes().splitlines()[0].decode("utf-8", "replace"))
    assert first["message"]["opcode"] == "OP_MSG"
