"""A scripted legacy-opcode MongoDB peer on a raw socket: it answers OP_QUERY and OP_GET_MORE
with fixed OP_REPLYs and takes OP_INSERT / OP_KILL_CURSORS silently, as a pre-3.6 server does.

The script, by what a request names:

* ``*.$cmd`` ``find`` -> a cursor reply with one document in ``firstBatch``;
* any other ``*.$cmd`` query -> ``{ok: 1}`` (``isMaster`` gets ``ismaster: true``);
* collection ``failing`` -> a QueryFailure reply ``{$err, code}``;
* any other query -> two documents and cursor 12345 (cursor 0 when ``numberToReturn`` is 1);
* collection ``silent`` -> no reply at all;
* OP_GET_MORE on cursor 12345 -> one document, cursor 0; any other cursor -> CursorNotFound;
* OP_COMMAND -> OP_COMMANDREPLY ``{ok: 1}``; OP_MSG -> OP_MSG ``{ok: 1}``.

Reply ids are ``1000 + responseTo`` so the traffic is byte-for-byte the same on every run. Every
byte the peer receives is recorded per connection (``received``).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any

import bson
from mongo_frames import (
    OP_COMMAND,
    OP_GET_MORE,
    OP_MSG,
    OP_QUERY,
    op_commandreply,
    op_msg,
    op_reply,
)

VALID_CURSOR = 12345
QUERY_FAILURE = 0x2
CURSOR_NOT_FOUND = 0x1


def _cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(b"\x00", pos)
    return body[pos:end].decode(), end + 1


def answer(opcode: int, request_id: int, body: bytes) -> bytes | None:
    """The scripted reply to one request frame (header stripped), or None."""
    if opcode == OP_QUERY:
        coll, pos = _cstring(body, 4)
        _skip, n_return = struct.unpack_from("<ii", body, pos)
        (size,) = struct.unpack_from("<i", body, pos + 8)
        query: dict[str, Any] = bson.decode(body[pos + 8 : pos + 8 + size])  # the query only
        if coll.endswith(".$cmd"):
            cmd = query.get("$query", query)
            name = next(iter(cmd))
            if name == "find":
                reply: dict[str, Any] = {"cursor": {"id": 0, "ns": f"{coll[:-5]}.{cmd['find']}",
                                                    "firstBatch": [{"_id": 1}]}, "ok": 1.0}
            elif name.lower() == "ismaster":
                reply = {"ismaster": True, "maxWireVersion": 5, "ok": 1.0}
            else:
                reply = {"ok": 1.0}
            return op_reply([reply], response_to=request_id, request_id=1000 + request_id)
        if coll.endswith(".silent"):
            return None  # never answered: the client gives up with the query in flight
        if coll.endswith(".failing"):
            return op_reply([{"$err": "scripted failure", "code": 2}], flags=QUERY_FAILURE,
                            response_to=request_id, request_id=1000 + request_id)
        cursor = 0 if n_return == 1 else VALID_CURSOR
        return op_reply([{"_id": 1, "a": "x"}, {"_id": 2, "a": "y"}], cursor_id=cursor,
                        response_to=request_id, request_id=1000 + request_id)
    if opcode == OP_GET_MORE:
        _coll, pos = _cstring(body, 4)
        _n, cursor = struct.unpack_from("<iq", body, pos)
        if cursor == VALID_CURSOR:
            return op_reply([{"_id": 3}], starting_from=2, response_to=request_id,
                            request_id=1000 + request_id)
        return op_reply([], flags=CURSOR_NOT_FOUND, response_to=request_id,
                        request_id=1000 + request_id)
    if opcode == OP_COMMAND:
        return op_commandreply({"ok": 1.0}, response_to=request_id, request_id=1000 + request_id)
    if opcode == OP_MSG:
        return op_msg({"ok": 1.0}, response_to=request_id, request_id=1000 + request_id)
    return None  # OP_INSERT, OP_KILL_CURSORS and anything else: no reply


class LegacyPeer:
    """A threaded TCP server on 127.0.0.1 running the script above; ``with LegacyPeer() as p``.
    ``LegacyPeer(echo=True)`` is a raw echo server instead (it closes when the client does)."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo  # echo every byte back instead of running the script
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self.received: list[bytearray] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._closed = False
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> LegacyPeer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._sock.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            rec = bytearray()
            with self._lock:
                self.received.append(rec)
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, rec), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, rec: bytearray) -> None:
        buf = bytearray()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    rec += data
                if self.echo:
                    conn.sendall(data)
                    continue
                buf += data
                while len(buf) >= 16:
                    length, request_id, _rto, opcode = struct.unpack_from("<iiii", buf)
                    if length < 16 or len(buf) < length:
                        break
                    body = bytes(buf[16:length])
                    del buf[:length]
                    reply = answer(opcode, request_id, body)
                    if reply is not None:
                        conn.sendall(reply)
