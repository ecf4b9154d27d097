"""OP_COMPRESSED decompressors, for sniffing only (the proxy forwards the compressed bytes).

zlib is in the standard library; snappy (``python-snappy``) and zstd (``zstandard``) are used when
their packages can be imported, and otherwise the message is counted but not looked into.
Every decompressor is bounded by the message's declared uncompressed size, so a compression bomb
cannot make the sniffer allocate more than ``maxMessageSizeBytes``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from envoi_mongo.messages import DecodeError

NOOP = 0
SNAPPY = 1
ZLIB = 2
ZSTD = 3

NAMES = {NOOP: "noop", SNAPPY: "snappy", ZLIB: "zlib", ZSTD: "zstd"}

Decompressor = Callable[[bytes, int], bytes]


def _noop(data: bytes, limit: int) -> bytes:
    return data


def _zlib(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    # max_length keeps a bomb from inflating past the declared size (+1 to detect a lie).
    out = d.decompress(data, limit + 1)
    return out


def _varint(data: bytes) -> int:
    value = 0
    for i, byte in enumerate(data[:5]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise DecodeError("invalid snappy length")


def _load_snappy() -> Decompressor | None:
    try:
        import snappy  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None

    def _snappy(data: bytes, limit: int) -> bytes:
        # A raw snappy block starts with its uncompressed length as a varint: check it before
        # inflating anything.
        if _varint(data) > limit:
            raise DecodeError("snappy payload larger than declared")
        return bytes(snappy.uncompress(data))

    return _snappy


def _load_zstd() -> Decompressor | None:
    try:
        import zstandard  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    dctx = zstandard.ZstdDecompressor()

    def _zstd(data: bytes, limit: int) -> bytes:
        return bytes(dctx.decompress(data, max_output_size=limit + 1))

    return _zstd


def available() -> dict[int, Decompressor]:
    """The decompressors this process can use, by MongoDB compressor id."""
    out: dict[int, Decompressor] = {NOOP: _noop, ZLIB: _zlib}
    snappy = _load_snappy()
    if snappy is not None:
        out[SNAPPY] = snappy
    zstd = _load_zstd()
    if zstd is not None:
        out[ZSTD] = zstd
    return out


#: Resolved once at import: the decoder asks per message, and imports are not free.
DECOMPRESSORS = available()


def decompress(compressor_id: int, data: bytes, uncompressed_size: int) -> bytes | None:
    """The decompressed payload, or None when this compressor is unavailable here.

    Raises DecodeError when the payload is corrupt or its size is not the declared one."""
    fn = DECOMPRESSORS.get(compressor_id)
    if fn is None:
        return None
    try:
        out = fn(data, uncompressed_size)
    except DecodeError:
        raise
    except Exception as e:  # each library has its own error type; all mean "corrupt"
        name = NAMES.get(compressor_id, compressor_id)
        raise DecodeError(f"cannot decompress ({name}): {e}") from e
    if len(out) != uncompressed_size:
        raise DecodeError("uncompressed size differs from the declared size")
    return out
