"""The control channel between the main process and one worker: length-prefixed pickled frames
over a socketpair.

Both ends are envoi processes forked from one another, so pickle is safe here. The main process
sends requests ``{"id": n, "op": ...}``; the worker answers each with ``{"id": n, "reply": ...}``
in order, and may also send events of its own (``{"event": "ready"}`` once its listeners accept,
``{"event": "failed", "error": ...}`` when it cannot start).
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

_LEN = struct.Struct("!I")
#: A frame larger than this is a broken peer, not a stats report.
MAX_FRAME = 256 * 1024 * 1024


def encode(msg: Any) -> bytes:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class FrameReader:
    """Sans-IO: feed the bytes read from the socket, get back the whole frames they complete."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        frames = []
        buf = self._buf
        while len(buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(buf)
            if n > MAX_FRAME:
                raise ValueError(f"control frame of {n} bytes")
            if len(buf) < _LEN.size + n:
                break
            frames.append(pickle.loads(bytes(buf[_LEN.size:_LEN.size + n])))
            del buf[:_LEN.size + n]
        return frames
