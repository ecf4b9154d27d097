"""Sans-IO reading of DynamoDB requests and responses: bytes and header values in, facts out.

Nothing here touches a socket, a stream or a stat. :class:`BodyCopy` keeps a bounded copy of a
body as it passes; :func:`decode_content` undoes a ``Content-Encoding`` on that copy (never on
the bytes that are forwarded); :func:`parse_operation`, :func:`request_table` and
:func:`read_response` are Envoy's ``RequestParser`` with the rules taken from
:mod:`envoi_dynamodb.operations`.

How strict each reader is follows Envoy: a request field the operation's rule reads that has the
wrong JSON type makes the body invalid (:class:`InvalidBody`, ``invalid_req_body``), as Envoy's
typed getters throw; response bodies only need to be JSON, and what cannot be read in them is
skipped (Envoy counts ``invalid_resp_body`` for a ``ConsumedCapacity`` list, which is what
DynamoDB returns for batch and transaction calls).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from envoi_dynamodb.operations import (
    BATCH_OPERATIONS,
    ERROR_TYPES,
    OPERATIONS,
    TRANSACT_ITEM_KINDS,
    TableRule,
)
from envoi_dynamodb.partiql import statement_table


class InvalidBody(ValueError):
    """The body is not JSON, or a field the rules read has the wrong type."""


class Unreadable(ValueError):
    """The body's ``Content-Encoding`` cannot be undone (unknown coding, corrupt data)."""


class TooLarge(ValueError):
    """The body, or its decoded copy, is bigger than the buffer limit."""


@dataclass(frozen=True, slots=True)
class TableDescriptor:
    """Envoy's ``TableDescriptor``: the request's table, ``""`` when there is none; with
    ``is_single_table`` False when a batch or transaction names several tables."""

    table_name: str = ""
    is_single_table: bool = True


NO_TABLE = TableDescriptor()
MULTIPLE_TABLES = TableDescriptor("", False)


# -- the body copy ---------------------------------------------------------------------------

class BodyCopy:
    """The body of one direction, kept as the bytes pass, up to ``limit`` bytes.

    ``add`` keeps a reference to each chunk (bytes are immutable: no copy is made until
    ``take``). Past the limit everything kept is dropped at once and ``over`` is set: the
    caller stops sniffing that message, the bytes themselves go on untouched.
    """

    __slots__ = ("chunks", "limit", "over", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def add(self, data: bytes) -> bool:
        """Keep ``data``; False (and ``over``) once the total is past the limit."""
        if self.over:
            return False
        self.size += len(data)
        if self.size > self.limit:
            self.over = True
            self.chunks = []
            return False
        if data:
            self.chunks.append(data if type(data) is bytes else bytes(data))
        return True

    def take(self) -> bytes:
        """The body kept so far (joined once), emptying the copy."""
        chunks, self.chunks = self.chunks, []
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` with its content codings undone, decoded size at most ``limit``.

    ``identity`` and ``gzip`` / ``x-gzip`` / ``deflate`` (zlib or raw, as browsers accept it)
    are undone, last applied first; any other coding raises :class:`Unreadable`, as does data
    that is corrupt or cut short; a decoded size past ``limit`` raises :class:`TooLarge` (the
    decompressor stops there: a small bomb cannot make a big copy).
    """
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif coding == "deflate":
            try:
                body = _inflate(body, zlib.MAX_WBITS, limit)
            except Unreadable:
                body = _inflate(body, -zlib.MAX_WBITS, limit)
        else:
            raise Unreadable(f"content coding {coding!r} is not supported")
    return body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Unreadable(f"corrupt compressed body: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"decoded body is over {limit} bytes")
    if not d.eof:
        raise Unreadable("compressed body is cut short")
    return out


# -- JSON ------------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def load_json(body: bytes) -> Any:
    """``body`` as JSON (UTF-8/16/32), or :class:`InvalidBody`. NaN and Infinity are refused
    (they are not JSON); nesting too deep for the parser is invalid, not a crash."""
    try:
        if body[:1] in (b"{", b"["):  # UTF-8 (every SDK sends it): one shared decoder
            return _DECODER.decode(body.decode("utf-8"))
        return json.loads(body, parse_constant=_no_constant)  # finds UTF-16/32 and BOMs
    except (ValueError, RecursionError) as exc:
        raise InvalidBody(str(exc)[:200]) from None


def _get(obj: Any, key: str, kind: type, default: Any) -> Any:
    """Envoy's typed getter with ``allow_empty``: the default when absent, InvalidBody when
    present with the wrong type (or when ``obj`` is not an object at all)."""
    if not isinstance(obj, dict):
        raise InvalidBody("expected a JSON object")
    value = obj.get(key, default)
    if not isinstance(value, kind):
        raise InvalidBody(f"{key}: expected {kind.__name__}")
    return value


# -- requests --------------------------------------------------------------------------------

def parse_operation(target: str | None) -> str:
    """The operation in an ``X-Amz-Target`` value (``DynamoDB_20120810.PutItem`` -> ``PutItem``):
    the second of exactly two non-empty ``.``-separated parts, else ``""`` (Envoy's
    ``splitToken``, which drops empty parts)."""
    if not target:
        return ""
    parts = [p for p in target.split(".") if p]
    return parts[1] if len(parts) == 2 else ""


def request_table(operation: str, body: bytes) -> TableDescriptor:
    """The table(s) a request body names, by the operation's rule in ``OPERATIONS``.

    An empty body names none. A body that is not JSON raises :class:`InvalidBody` whatever the
    operation (Envoy parses every body), as does a field of the wrong type that the rule reads.
    """
    if not body:
        return NO_TABLE
    data = load_json(body)
    rule = OPERATIONS.get(operation)
    if rule is None:
        return NO_TABLE
    if rule is TableRule.TABLE_NAME:
        return TableDescriptor(_get(data, "TableName", str, ""), True)
    if rule is TableRule.REQUEST_ITEMS:
        return _combine(iter(_get(data, "RequestItems", dict, {})))
    if rule is TableRule.TRANSACT_ITEMS:
        return _combine(_transact_item_table(item)
                        for item in _objects(data, "TransactItems"))
    if rule is TableRule.STATEMENT:
        return TableDescriptor(statement_table(_get(data, "Statement", str, "")) or "", True)
    key = "Statements" if rule is TableRule.STATEMENTS else "TransactStatements"
    return _combine(statement_table(_get(item, "Statement", str, "")) or ""
                    for item in _objects(data, key))


def _objects(data: Any, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _get(data, key, list, [])
    for item in items:
        if not isinstance(item, dict):
            raise InvalidBody(f"{key}: expected objects")
    return items


def _transact_item_table(item: dict[str, Any]) -> str:
    for kind in TRANSACT_ITEM_KINDS:
        name: str = _get(_get(item, kind, dict, {}), "TableName", str, "")
        if name:
            return name
    return ""


def _combine(names: Iterator[str] | Any) -> TableDescriptor:
    """One table for all entries; ``MULTIPLE_TABLES`` at the first different one; ``NO_TABLE``
    at the first entry naming none (Envoy's transaction rule; batch keys are never empty)."""
    table = ""
    for name in names:
        if not name:
            return NO_TABLE
        if not table:
            table = name
        elif name != table:
            return MULTIPLE_TABLES
    return TableDescriptor(table, True)


# -- responses -------------------------------------------------------------------------------

@dataclass(slots=True)
class ResponseFacts:
    """What a response body says, for the stats: the known error type of a 4xx (``""`` when
    ``__type`` is absent or not known: ``empty_response_body``), consumed capacity per partition
    (rounded up), and the tables of ``UnprocessedKeys`` / ``UnprocessedItems``."""

    error_type: str | None = None  # None: not a 4xx
    partitions: list[tuple[str, int]] = field(default_factory=list)
    unprocessed_keys: list[str] = field(default_factory=list)
    unprocessed_items: list[str] = field(default_factory=list)


def error_type(type_field: Any) -> str:
    """The known error type ``__type`` ends with (``...#ValidationException``), else ``""``."""
    if not isinstance(type_field, str) or not type_field:
        return ""
    for known in ERROR_TYPES:
        if type_field.endswith(known):
            return known
    return ""


def response_worth_reading(operation: str, table: str, status: int, body: bytes) -> bool:
    """Whether the body can hold anything counted. A 2xx answer matters only for a batch
    operation (unprocessed tables) or when it carries partition capacity for a known table; the
    rest (a 1 MB Query page, say) is not parsed at all, so it costs no CPU on the loop."""
    if not 200 <= status < 300 or operation in BATCH_OPERATIONS:
        return True
    return bool(table) and b'"Partitions"' in body


def read_response(operation: str, table: str, status: int, body: bytes) -> ResponseFacts:
    """The facts in a response body (raises :class:`InvalidBody` when it is not JSON)."""
    data = load_json(body)
    facts = ResponseFacts()
    obj = data if isinstance(data, dict) else {}
    if table and operation:
        facts.partitions = _partitions(obj.get("ConsumedCapacity"), table)
    if 400 <= status < 500:
        facts.error_type = error_type(obj.get("__type"))
    if operation in BATCH_OPERATIONS:
        keys = obj.get("UnprocessedKeys")
        if isinstance(keys, dict):
            facts.unprocessed_keys = list(keys)
        items = obj.get("UnprocessedItems")
        if isinstance(items, dict):
            facts.unprocessed_items = list(items)
    return facts


def _partitions(capacity: Any, table: str) -> list[tuple[str, int]]:
    """``ConsumedCapacity.Partitions`` (id -> capacity units). DynamoDB answers one
    ConsumedCapacity object for single-table calls and a list of them (one per table) for
    batches and transactions; from a list, the entry of the request's table is read."""
    if isinstance(capacity, list):
        capacity = next((c for c in capacity
                         if isinstance(c, dict) and c.get("TableName") == table), None)
    if not isinstance(capacity, dict):
        return []
    partitions = capacity.get("Partitions")
    if not isinstance(partitions, dict):
        return []
    out = []
    for pid, units in partitions.items():
        if isinstance(units, int | float) and not isinstance(units, bool) \
                and math.isfinite(units) and units >= 0:
            out.append((pid, math.ceil(units)))
    return out
