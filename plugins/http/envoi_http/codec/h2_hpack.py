"""HPACK with a memory: the same header block costs one dict lookup the second time.

hpack is pure Python (its Huffman coding too) and was the largest single cost of an HTTP/2
request in the profile. Clients and servers repeat their header blocks (h2load, browsers and
gRPC stubs send the same request headers; a proxy's responses repeat ``:status``, ``server``,
``content-type``...). A block whose coding neither added to nor evicted from the HPACK dynamic
table (indexed fields, literals without or never indexed) is a pure function of that table, so
its bytes (encoding) or its header list (decoding) can be remembered for as long as the table
stays as it is; a block that changes the table clears the memory. Whether the table changed is
read from the table itself (its first entry and its size), not guessed from the bytes.

``NEVER_INDEX`` names the fields whose values change from message to message (``date``,
``x-envoy-upstream-service-time``, ``x-request-id``): ``never_indexed`` marks them so that they
are sent as literals and do not churn the table (which would clear the memory every time), and
without Huffman coding (hpack's coder is a Python loop per byte; these values are new each time).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

_MEMO_SIZE = 256
NEVER_INDEX = frozenset((b"date", b"x-envoy-upstream-service-time", b"x-request-id"))


def never_indexed(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with the fields of ``NEVER_INDEX`` as never-indexed literals (in place)."""
    for i, (name, value) in enumerate(headers):
        if name in NEVER_INDEX:
            headers[i] = NeverIndexedHeaderTuple(name, value)
    return headers


def _table_state(table: Any) -> tuple[int, int, Any]:
    entries = table.dynamic_entries
    return len(entries), table.maxsize, entries[0] if entries else None


def _same(a: tuple[int, int, Any], b: tuple[int, int, Any]) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2] is b[2]


class MemoDecoder(Decoder):  # type: ignore[misc]  # hpack is untyped to mypy here
    def __init__(self, max_header_list_size: int = 2**16) -> None:
        super().__init__(max_header_list_size)
        self._memo: dict[bytes, Any] = {}

    def decode(self, data: bytes, raw: bool = False) -> Any:
        memo = self._memo
        key = bytes(data) if type(data) is not bytes else data
        if raw:
            hit = memo.get(key)
            if hit is not None:
                return hit
        before = _table_state(self.header_table)
        result = super().decode(data, raw)
        if not _same(before, _table_state(self.header_table)):
            memo.clear()  # the dynamic table changed: what was remembered may be stale
        elif raw and len(memo) < _MEMO_SIZE:
            memo[key] = result
        return result


class MemoEncoder(Encoder):  # type: ignore[misc]
    """Remembers whole blocks, and, for blocks seen for the first time, each field's
    representation: a block is the fields' representations one after the other, so a block
    that differs from the last only in a never-indexed ``date`` costs one field's coding."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[tuple[Any, ...], bytes] = {}
        self._fields: dict[tuple[Any, ...], bytes] = {}

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        memo = self._memo
        if isinstance(headers, dict):
            memo.clear()
            self._fields.clear()
            return bytes(super().encode(headers, huffman))
        resized = bool(self.table_size_changes)
        if resized:
            # a size update goes first (with the first field): this block is not the usual one
            memo.clear()
            self._fields.clear()
        # (a tuple equals its never-indexed twin: envoi marks the same names every time)
        key = (huffman, *headers)
        if resized and len(key) == 1:
            return bytes(super().encode((), huffman))  # the size update alone
        hit = memo.get(key)
        if hit is not None:
            return hit
        table = self.header_table
        start = _table_state(table)
        fields = self._fields
        out = []
        for h in key[1:]:
            fkey = (h, type(h), huffman)
            rep = fields.get(fkey)
            if rep is None:
                before = _table_state(table)
                sizing = bool(self.table_size_changes)  # this field carries the size update
                # A never-indexed field is a volatile one: its value is new each time, so its
                # coding is not remembered for long, and hpack's Huffman coder is a Python loop
                # per byte (~4 µs for an x-request-id). A plain literal costs ~12 bytes more.
                use_huffman = huffman and type(h) is not NeverIndexedHeaderTuple
                rep = bytes(super().encode((h,), use_huffman))
                if not _same(before, _table_state(table)):
                    fields.clear()  # the table changed: every remembered index may be stale
                    memo.clear()
                elif len(fields) < _MEMO_SIZE and not sizing:
                    fields[fkey] = rep
            out.append(rep)
        block = b"".join(out)
        if not resized and _same(start, _table_state(table)) and len(memo) < _MEMO_SIZE:
            memo[key] = block
        return block

    @property
    def header_table_size(self) -> int:
        return int(Encoder.header_table_size.fget(self))

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        Encoder.header_table_size.fset(self, value)
        self._memo.clear()
        self._fields.clear()
