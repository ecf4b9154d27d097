"""mongo_proxy's access log: one JSON object per decoded message, in Envoy's exact text format.

Envoy's format is hand-written with fmt, not a JSON encoder, and envoi reproduces it byte for
byte so the same log processors keep working: documents are printed with Envoy's BSON
``toString`` (keys unescaped, doubles as ``%f``, arrays as objects keyed ``"0"``, ``"1"``...,
ObjectIds as hex, dates and timestamps as integers), requests in full and replies in summary.
The OP_MSG, OP_COMPRESSED, OP_UPDATE and OP_DELETE lines are envoi's, in the same style.

Envoy buffers its log and flushes every 10 s; envoi flushes within half a second of a line
being written (or at once when no event loop runs), so the log can be tailed live.
"""

from __future__ import annotations

import asyncio
import atexit
import re
import time
from collections.abc import Mapping
from typing import Any, TextIO

from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from envoi_mongo import messages as m
from envoi_mongo.classify import reply_doc_count

FLUSH_INTERVAL_S = 0.5
_MAX_PENDING = 256

_ESCAPES = str.maketrans({"\r": "\\r", "\n": "\\n", "\t": "\\t", '"': '\\"'})
_REGEX_FLAGS = (("i", re.I), ("l", re.L), ("m", re.M), ("s", re.S), ("u", re.U), ("x", re.X))


def _quote(s: str) -> str:
    # Envoy's StringUtil::escape: only CR, LF, TAB and the double quote are escaped.
    return '"' + s.translate(_ESCAPES) + '"'


def render_value(v: Any) -> str:
    """One BSON value as Envoy's Bson::FieldImpl::toString prints it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Int64):
        return str(int(v))
    if isinstance(v, float):
        return f"{v:f}"
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, Mapping):
        return render_doc(v)
    if isinstance(v, list):
        return "{" + ", ".join(f'"{i}": {render_value(x)}' for i, x in enumerate(v)) + "}"
    if v is None:
        return "null"
    if isinstance(v, ObjectId):
        return f'"{v.binary.hex()}"'
    if isinstance(v, bytes):  # Binary (every subtype) is a bytes subclass
        # surrogateescape keeps the original bytes through the text file, as Envoy writes them.
        return _quote(bytes(v).decode("utf-8", "surrogateescape"))
    if isinstance(v, DatetimeMS):
        return str(int(v))
    if isinstance(v, Timestamp):
        return str((v.time << 32) | v.inc)
    if isinstance(v, Regex):
        flags = v.flags if isinstance(v.flags, int) else 0
        opts = "".join(c for c, bit in _REGEX_FLAGS if flags & bit)
        return f'["{v.pattern}", "{opts}"]'
    # Types Envoy's decoder rejects (Decimal128, code, min/max key...): printed, not fatal.
    return _quote(str(v))


def render_doc(doc: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f'"{k}": {render_value(x)}' for k, x in doc.items()) + "}"


def _docs(docs: list[Any]) -> str:
    return "[" + ", ".join(render_doc(d) for d in docs) + "]"


def format_message(msg: m.Message) -> str:
    """The ``message`` part of a log line (requests in full, replies in summary)."""
    rid, rto = msg.request_id, msg.response_to
    if isinstance(msg, m.Query):
        fields = render_doc(msg.fields) if msg.fields is not None else "{}"
        return (f'{{"opcode": "OP_QUERY", "id": {rid}, "response_to": {rto}, '
                f'"flags": "{msg.flags:#x}", "collection": "{msg.collection}", '
                f'"skip": {msg.skip}, "return": {msg.n_return}, '
                f'"query": {render_doc(msg.query)}, "fields": {fields}}}')
    if isinstance(msg, m.Reply):
        return (f'{{"opcode": "OP_REPLY", "id": {rid}, "response_to": {rto}, '
                f'"flags": "{msg.flags:#x}", "cursor": "{msg.cursor_id}", '
                f'"from": {msg.starting_from}, "returned": {msg.number_returned}, '
                f'"documents": {len(msg.doc_sizes)}}}')
    if isinstance(msg, m.Msg):
        return _format_msg(msg)
    if isinstance(msg, m.GetMore):
        return (f'{{"opcode": "OP_GET_MORE", "id": {rid}, "response_to": {rto}, '
                f'"collection": "{msg.collection}", "return": {msg.n_return}, '
                f'"cursor": {msg.cursor_id}}}')
    if isinstance(msg, m.Insert):
        return (f'{{"opcode": "OP_INSERT", "id": {rid}, "response_to": {rto}, '
                f'"flags": "{msg.flags:#x}", "collection": "{msg.collection}", '
                f'"documents": {_docs(msg.documents)}}}')
    if isinstance(msg, m.KillCursors):
        # sic: Envoy writes no OP_ prefix and a hex-string response_to here.
        cursors = ", ".join(str(c) for c in msg.cursor_ids)
        return (f'{{"opcode": "KILL_CURSORS", "id": {rid}, "response_to": "{rto:#x}", '
                f'"num_cursors": "{len(msg.cursor_ids)}", "cursors": [{cursors}]}}')
    if isinstance(msg, m.Command):
        return (f'{{"opcode": "OP_COMMAND", "id": {rid}, "response_to": {rto}, '
                f'"database": "{msg.database}", "commandName": "{msg.command_name}", '
                f'"metadata": {render_doc(msg.metadata)}, '
                f'"commandArgs": {render_doc(msg.command_args)}, '
                f'"inputDocs": {_docs(msg.input_docs)}}}')
    if isinstance(msg, m.CommandReply):
        # sic: Envoy's format has no space after "outputDocs": and a trailing space.
        return (f'{{"opcode": "OP_COMMANDREPLY", "id": {rid}, "response_to": {rto}, '
                f'"metadata": {render_doc(msg.metadata)}, '
                f'"commandReply": {render_doc(msg.command_reply)}, '
                f'"outputDocs":{_docs(msg.output_docs)}}} ')
    if isinstance(msg, m.Update | m.Delete):
        op = "OP_UPDATE" if isinstance(msg, m.Update) else "OP_DELETE"
        return (f'{{"opcode": "{op}", "id": {rid}, "response_to": {rto}, '
                f'"flags": "{msg.flags:#x}", "collection": "{msg.collection}"}}')
    if isinstance(msg, m.Compressed):
        inner = format_message(msg.inner) if msg.inner is not None else "null"
        return (f'{{"opcode": "OP_COMPRESSED", "id": {rid}, "response_to": {rto}, '
                f'"original_opcode": {msg.original_opcode}, "compressor": "{msg.compressor}", '
                f'"uncompressed_size": {msg.uncompressed_size}, "message": {inner}}}')
    return f'{{"opcode": "{type(msg).__name__}", "id": {rid}, "response_to": {rto}}}'


def _format_msg(msg: m.Msg) -> str:
    head = (f'{{"opcode": "OP_MSG", "id": {msg.request_id}, '
            f'"response_to": {msg.response_to}, "flags": "{msg.flags:#x}", ')
    body = msg.body
    if msg.response_to:
        # A reply, in summary like OP_REPLY: how much came back and whether it succeeded.
        docs = reply_doc_count(body) if body is not None else 0
        ok = render_value(body.get("ok")) if body is not None else "null"
        return head + f'"documents": {docs}, "size": {msg.documents_size}, "ok": {ok}}}'
    seqs = ", ".join(f'{{"identifier": "{s.identifier}", "size": {s.size}}}'
                     for s in msg.sequences)
    rendered = render_doc(body) if body is not None else "{}"
    return head + f'"body": {rendered}, "sequences": [{seqs}]}}'


class _Clock:
    """Envoy's AccessLogDateTimeFormatter (``%Y-%m-%dT%H:%M:%E3SZ``), formatting the seconds
    part once per second."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        sec = int(t)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{int((t - sec) * 1000):03d}Z"


class AccessLog:
    """One log file, shared by every filter config that names the same path."""

    _open: dict[str, AccessLog] = {}

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO = open(path, "a", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._clock = _Clock()

    @classmethod
    def for_path(cls, path: str) -> AccessLog:
        log = cls._open.get(path)
        if log is None:
            log = cls._open[path] = cls(path)
        return log

    def log(self, msg: m.Message, upstream_host: str | None) -> None:
        line = (f'{{"time": "{self._clock.now()}", "message": {format_message(msg)}, '
                f'"upstream_host": "{upstream_host or "-"}"}}\n')
        self._pending.append(line)
        if len(self._pending) >= _MAX_PENDING:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending and not self._file.closed:
            self._file.write("".join(self._pending))
            self._file.flush()
        self._pending.clear()

    @classmethod
    def flush_all(cls) -> None:
        for log in list(cls._open.values()):
            log.flush()


atexit.register(AccessLog.flush_all)
