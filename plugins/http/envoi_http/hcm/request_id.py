"""``x-request-id`` values: uuid4 strings as ``str(uuid.uuid4())`` makes them, 256 at a time."""

from __future__ import annotations

import binascii
import os

# uuid4 bits, set on the random bytes of many ids at once: version (byte 6) 4, variant (byte 8) 10.
_UUID_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_UUID_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
_BATCH = 256
# The hex digit columns of a 36-byte uuid string (the others are the four dashes).
_UUID_COLUMNS = [c for c in range(36) if c not in (8, 13, 18, 23)]


def _make_request_ids() -> list[bytes]:
    """256 uuid4 strings from one ``os.urandom``: the version and variant bits set by two
    ``translate`` calls on strided slices, one hexlify, then each hex column copied into place
    by one strided slice assignment (C loops only)."""
    raw = bytearray(os.urandom(16 * _BATCH))
    raw[6::16] = raw[6::16].translate(_UUID_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID_VARIANT)
    hexed = binascii.hexlify(raw)
    out = bytearray(b"-" * (36 * _BATCH))
    for src, dst in enumerate(_UUID_COLUMNS):
        out[dst::36] = hexed[src::32]
    made = bytes(out)
    return [made[i:i + 36] for i in range(0, 36 * _BATCH, 36)]


# Ids made ahead (request_id pops one; a caller may pop one itself when the list is not empty).
made_ids: list[bytes] = []


def request_id() -> bytes:
    ids = made_ids
    if not ids:
        ids += _make_request_ids()
    return ids.pop()


os.register_at_fork(after_in_child=made_ids.clear)  # a child must not reuse the parent's
