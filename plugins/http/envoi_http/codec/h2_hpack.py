"""HPACK with a memory: the same header block costs one dict lookup the second time.

hpack is pure Python (its Huffman coding too) and was the largest single cost of an HTTP/2
request in the profile. Clients and servers repeat their header blocks (h2load, browsers and
gRPC stubs send the same request headers; a proxy's responses repeat ``:status``, ``server``,
``content-type``...), and after the first time HPACK encodes them as references to its dynamic
table. A block made only of one-byte indexed fields is a pure function of that table and does
not change it, so its decoded list (or, encoding, its bytes) can be remembered for as long as
the table is unchanged: any other block may add or evict entries and clears the memory. The
results are the ones hpack itself gives; these subclasses only skip recomputing them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder

_MEMO_SIZE = 256


def _all_indexed(block: bytes) -> bool:
    """Every byte has the high bit set: each field is a one-byte indexed representation (an
    index >= 127 needs a continuation byte whose last byte is < 0x80)."""
    return bool(block) and min(block) >= 0x80


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
        result = super().decode(data, raw)
        if not _all_indexed(key):
            memo.clear()  # the dynamic table may have changed
        elif raw and len(memo) < _MEMO_SIZE:
            memo[key] = result
        return result


class MemoEncoder(Encoder):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[tuple[Any, ...], bytes] = {}

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        key = (huffman, *headers) if not isinstance(headers, dict) else None
        memo = self._memo
        if key is not None:
            hit = memo.get(key)
            if hit is not None:
                return hit
        block: bytes = super().encode(key[1:] if key is not None else headers, huffman)
        if not _all_indexed(block) or key is None:
            memo.clear()  # new entries in the dynamic table (or a size change) make it stale
        elif len(memo) < _MEMO_SIZE:
            memo[key] = block
        return block

    @property
    def header_table_size(self) -> int:
        return int(Encoder.header_table_size.fget(self))

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        Encoder.header_table_size.fset(self, value)
        self._memo.clear()
