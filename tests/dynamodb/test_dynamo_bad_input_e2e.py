"""Bad input through a real envoi with the dynamo filter: counted, and the traffic unharmed.

Two upstreams behind one listener: moto for ``/`` (real DynamoDB answers) and a scripted server
for ``/script`` (answers moto never gives: a 4xx with no body, gzip and brotli bodies). The
listener's ``per_connection_buffer_limit_bytes`` is 32 KiB, so a 100 KB item is over the limit
both ways. Every answer through envoi is compared with the same request sent to the upstream
directly, byte for byte.
"""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from ddb_workload import client, dynamo_counters, moto_server
from envoi.testing import EnvoiProcess, free_port, wait_for

LIMIT = 32768
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
P = "http.ddb.dynamodb."

CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: dynamo_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    per_connection_buffer_limit_bytes: {limit}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}
          stat_prefix: ddb
          http_filters:
          - name: envoy.filters.http.dynamo
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamo.v3.Dynamo
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: ddb
              domains: ["*"]
              routes:
              - match: {{prefix: "/script"}}
                route: {{cluster: script}}
              - match: {{prefix: "/"}}
                route: {{cluster: dynamodb}}
  clusters:
  - name: dynamodb
    type: STATIC
    connect_timeout: 1s
    per_connection_buffer_limit_bytes: {limit}
    load_assignment:
      cluster_name: dynamodb
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {moto}}}}}}}
  - name: script
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: script
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {script}}}}}}}
"""

ERROR = {"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
         "message": "Requested resource not found"}


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers by the operation in X-Amz-Target."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        op = (self.headers.get("x-amz-target") or ".").split(".", 1)[1]
        headers = {"content-type": "application/x-amz-json-1.0"}
        if op == "EmptyError":
            status, body = 400, b""
        elif op == "GzipError":
            # mtime=0: the same bytes on every request, so via-envoi and direct compare equal
            # even when the two requests straddle a second boundary.
            status, body = 400, gzip.compress(json.dumps(ERROR).encode(), mtime=0)
            headers["content-encoding"] = "gzip"
        elif op == "BrotliError":
            status, body = 400, b"\x8b\x03\x80not-really-brotli"
            headers["content-encoding"] = "br"
        else:
            status, body = 200, b"{}"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def scripted_server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes


def is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class Setup:
    def __init__(self, proc: EnvoiProcess, listen: int, moto: str, script: int) -> None:
        self.proc, self.listen, self.moto, self.script = proc, listen, moto, script
        self.base = f"http://127.0.0.1:{listen}"

    def post(self, base: str, path: str, target: str | None, body: bytes) -> Answer:
        headers = {"content-type": "application/x-amz-json-1.0"}
        if target is not None:
            headers["x-amz-target"] = target
        # No decoding on the client side: the bytes are compared as they came.
        with httpx.Client(timeout=10, headers={"accept-encoding": "identity"}) as c, \
                c.stream("POST", base + path, content=body, headers=headers) as r:
            return Answer(r.status_code, dict(r.headers), b"".join(r.iter_raw()))

    def both(self, path: str, target: str | None, body: bytes) -> Answer:
        """Through envoi and direct; the answers must be the same bytes."""
        upstream = f"http://127.0.0.1:{self.script}" if path.startswith("/script") \
            else self.moto
        via = self.post(self.base, path, target, body)
        direct = self.post(upstream, path, target, body)
        assert via.status_code == direct.status_code
        assert via.content == direct.content
        for h in ("content-type", "content-encoding", "x-amz-crc32"):
            assert (h in via.headers) == (h in direct.headers), h
        if "x-amz-crc32" in via.headers:  # same body, same checksum as the upstream computed
            import zlib

            assert int(via.headers["x-amz-crc32"]) == zlib.crc32(via.content)
        return via

    def dynamo(self) -> dict[str, int]:
        return dynamo_counters(self.proc.stats(), "ddb")


@contextmanager
def setup(envoi_process: Callable[..., EnvoiProcess]) -> Iterator[Setup]:
    with moto_server() as moto, scripted_server() as script:
        admin, listen = free_port(), free_port()
        text = CONFIG.format(admin=admin, listen=listen, limit=LIMIT, hcm=HCM,
                             moto=moto.rsplit(":", 1)[1], script=script)
        yield Setup(envoi_process(text, admin), listen, moto, script)


def ops(op: str, status: int) -> dict[str, int]:
    base = f"{P}operation.{op}.upstream_rq_total"
    return {base: 1, f"{base}_{status // 100}xx": 1, f"{base}_{status}": 1}


def test_bodies_that_are_not_dynamodb(envoi_process: Callable[..., EnvoiProcess]) -> None:
    with setup(envoi_process) as s:
        r = s.both("/", "DynamoDB_20120810.PutItem", b"this is not json")
        # moto answers a body it cannot read with a body that is not JSON either; a 2xx body of
        # a non-batch call is not parsed (it holds nothing counted), any other one is.
        read = not 200 <= r.status_code < 300
        bad_answer = {P + "invalid_resp_body": 1} \
            if read and r.content and not is_json(r.content) else {}
        assert s.dynamo() == {**ops("PutItem", r.status_code), P + "invalid_req_body": 1,
                              P + "table_missing": 1, **bad_answer}

        s.both("/", None, json.dumps({"TableName": "orders"}).encode())
        assert s.dynamo()[P + "operation_missing"] == 1
        assert s.dynamo()[P + "table_missing"] == 2

        # A 4xx with no body: the basic stats only (Envoy reads no body when there is none).
        before = s.dynamo()
        r3 = s.both("/script", "X.EmptyError", b"{}")
        assert r3.status_code == 400 and r3.content == b""
        got = s.dynamo()
        assert {k: v - before.get(k, 0) for k, v in got.items() if v != before.get(k, 0)} == {
            **ops("EmptyError", 400), P + "table_missing": 1}


def test_compressed_error_bodies(envoi_process: Callable[..., EnvoiProcess]) -> None:
    with setup(envoi_process) as s:
        body = json.dumps({"TableName": "orders"}).encode()
        r = s.both("/script", "X.GzipError", body)
        assert r.headers["content-encoding"] == "gzip" and r.content[:2] == b"\x1f\x8b"
        assert json.loads(gzip.decompress(r.content)) == ERROR
        # X.GzipError has no table rule: the error is charged to no_table.
        assert s.dynamo()[P + "error.no_table.ResourceNotFoundException"] == 1
        s.both("/script", "X.BrotliError", body)
        assert s.dynamo()[P + "resp_body_unreadable"] == 1


def test_bodies_over_the_buffer_limit(envoi_process: Callable[..., EnvoiProcess]) -> None:
    with setup(envoi_process) as s:
        ddb = client(s.base)
        ddb.create_table(TableName="big", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        payload = "".join(chr(48 + (i * 7) % 75) for i in range(100_000))
        item = {"pk": {"S": "k"}, "data": {"S": payload}}
        put = ddb.put_item(TableName="big", Item=item)
        got = ddb.get_item(TableName="big", Key={"pk": {"S": "k"}})
        batch = ddb.batch_get_item(RequestItems={"big": {"Keys": [{"pk": {"S": "k"}}]}})
        # 100 KB each way, intact; boto3 checked x-amz-crc32 with retries off.
        assert got["Item"] == item and batch["Responses"]["big"] == [item]
        for result in (put, got, batch):
            assert result["ResponseMetadata"]["RetryAttempts"] == 0
        stats = s.dynamo()
        assert stats[P + "req_body_too_large"] == 1  # the PutItem request
        # The BatchGetItem answer (its UnprocessedKeys would count) is over the limit; the
        # GetItem answer too, but a 2xx GetItem body holds nothing counted: not a loss.
        assert stats[P + "resp_body_too_large"] == 1
        # Not sniffed: no table stats for the PutItem, but its operation is counted.
        assert stats[f"{P}operation.PutItem.upstream_rq_total_200"] == 1
        assert stats[f"{P}table.big.upstream_rq_total"] == 3  # CreateTable, GetItem, batch
        assert P + "table_missing" not in stats and P + "invalid_req_body" not in stats


def test_client_gone_mid_body(envoi_process: Callable[..., EnvoiProcess]) -> None:
    with setup(envoi_process) as s:
        head = (f"POST / HTTP/1.1\r\nhost: 127.0.0.1:{s.listen}\r\n"
                "x-amz-target: DynamoDB_20120810.PutItem\r\n"
                "content-type: application/x-amz-json-1.0\r\ncontent-length: 10000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", s.listen), timeout=10) as sock:
            sock.sendall(head.encode() + b'{"TableName": "orders", "Item": {"pk": {"S": "')
        stats: dict[str, Any] = {}

        def reset_seen() -> bool:
            stats.update(s.proc.stats())
            return bool(stats.get("http.ddb.downstream_rq_rx_reset", 0) or
                        stats.get("http.ddb.downstream_cx_destroy_remote_active_rq", 0))

        wait_for(reset_seen, 20, what="the aborted request to be counted")
        assert dynamo_counters(stats, "ddb") == {}  # a stream that never completed: nothing
        # Traffic goes on.
        assert client(s.base).list_tables()["TableNames"] == []
        assert s.dynamo() == {**ops("ListTables", 200), P + "table_missing": 1}
