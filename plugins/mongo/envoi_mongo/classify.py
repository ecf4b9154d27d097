"""What a request is, for stats: Envoy's QueryMessageInfo rules, plus the same rules for OP_MSG.

Envoy's rules (OP_QUERY):

* a query on a ``*.$cmd`` namespace is a command, named by the first key of the query document
  (or of its ``$query`` sub-document); a few legacy lower-case names are reported in camelCase
  (``ismaster`` -> ``isMaster``);
* the 3.2 ``find`` command is not a command but a query on the collection it names, with the
  callsite taken from ``comment`` and the type from ``filter``;
* any other query is counted on its collection (the namespace without the database): a query
  without ``_id`` is a *scatter get*, ``_id`` holding a document or array is a *multi get*;
* the callsite is ``callingFunction`` of the JSON string in a top-level ``$comment``;
* ``$maxTimeMS`` (or ``maxTimeMS``) of type int32/int64, else 0.

envoi's OP_MSG rules use the same vocabulary: the command is the first key of the body; a
``find`` is both a command and a query on its collection (callsite from ``comment``, type from
``filter``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64

from envoi_mongo.messages import DecodeError, Query

PRIMARY_KEY = 0
MULTI_GET = 1
SCATTER_GET = 2

#: Envoy's command aliases: old lower-case spellings reported under the modern name.
COMMAND_ALIASES = {
    "collstats": "collStats",
    "dbstats": "dbStats",
    "findandmodify": "findAndModify",
    "getlasterror": "getLastError",
    "ismaster": "isMaster",
}


class QueryInfo:
    """The parts of a request that decide its stats. ``command`` is "" for a plain query."""

    __slots__ = ("callsite", "collection", "command", "max_time", "type")

    def __init__(self) -> None:
        self.command = ""
        self.collection = ""
        self.callsite = ""
        self.max_time = 0
        self.type = SCATTER_GET


def _first_key(doc: Mapping[str, Any]) -> str:
    for key in doc:
        return str(key)
    raise DecodeError("invalid query command")


def type_of(doc: Mapping[str, Any]) -> int:
    if "_id" not in doc:
        return SCATTER_GET
    if isinstance(doc["_id"], Mapping | list):
        return MULTI_GET
    return PRIMARY_KEY


def callsite_from_json(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return ""
    if isinstance(value, dict):
        site = value.get("callingFunction")
        if isinstance(site, str):
            return site
    return ""


def _query_doc(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    inner = doc.get("$query")
    return inner if isinstance(inner, Mapping) else None


def _is_int(v: object) -> bool:
    return isinstance(v, int | Int64) and not isinstance(v, bool)


def _find_info(info: QueryInfo, cmd: Mapping[str, Any], comment_key: str) -> None:
    coll = cmd.get("find")
    if not isinstance(coll, str):
        raise DecodeError("find command without a collection name")
    info.collection = coll
    comment = cmd.get(comment_key)
    if isinstance(comment, str):
        info.callsite = callsite_from_json(comment)
    flt = cmd.get("filter")
    if isinstance(flt, Mapping):
        info.type = type_of(flt)


def classify_query(q: Query) -> QueryInfo:
    """Envoy's QueryMessageInfo for an OP_QUERY."""
    info = QueryInfo()
    doc: Mapping[str, Any] = q.query
    if "$cmd" in q.collection:
        cmd = _query_doc(doc) or doc
        name = _first_key(cmd)
        if name == "find":
            _find_info(info, cmd, "comment")
        else:
            info.command = COMMAND_ALIASES.get(name, name)
        return info
    dot = q.collection.find(".")
    if dot < 0:
        raise DecodeError("invalid full collection name")
    info.collection = q.collection[dot + 1 :]
    comment = doc.get("$comment")
    if isinstance(comment, str):
        info.callsite = callsite_from_json(comment)
    max_time = doc.get("$maxTimeMS", doc.get("maxTimeMS"))
    if _is_int(max_time):
        # Envoy narrows int64 to int32.
        info.max_time = ((int(max_time) + 2**31) % 2**32) - 2**31
    info.type = type_of(doc)
    if info.type == SCATTER_GET:
        inner = _query_doc(doc)
        if inner is not None:
            info.type = type_of(inner)
    return info


class MsgInfo:
    """An OP_MSG request: its command name (aliases applied) and, for ``find``, the query."""

    __slots__ = ("awaitable", "command", "database", "query")

    def __init__(self, command: str, database: str, query: QueryInfo | None,
                 awaitable: bool) -> None:
        self.command = command
        self.database = database
        self.query = query
        self.awaitable = awaitable


_HELLO_NAMES = frozenset({"hello", "isMaster"})


def classify_msg(body: Mapping[str, Any]) -> MsgInfo:
    name = _first_key(body)
    name = COMMAND_ALIASES.get(name, name)
    db = body.get("$db")
    database = db if isinstance(db, str) else ""
    query: QueryInfo | None = None
    if name == "find":
        query = QueryInfo()
        _find_info(query, body, "comment")
    # An awaitable (streaming) hello waits up to maxAwaitTimeMS for a topology change: it is a
    # long poll by design, not a slow or stuck request.
    awaitable = name in _HELLO_NAMES and "maxAwaitTimeMS" in body and "topologyVersion" in body
    return MsgInfo(name, database, query, awaitable)


def reply_doc_count(body: Mapping[str, Any]) -> int:
    """Documents an OP_MSG reply carries: the cursor batch size for cursor replies (find,
    aggregate, getMore, listIndexes...), else 1 for the reply document itself."""
    cursor = body.get("cursor")
    if isinstance(cursor, Mapping):
        batch = cursor.get("firstBatch")
        if batch is None:
            batch = cursor.get("nextBatch")
        if isinstance(batch, list):
            return len(batch)
    return 1
