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
from collections.abc import Callable
from typing import Any, Protocol

_LEN = struct.Struct("!I")
#: A frame larger than this is a broken peer, not a stats report.
MAX_FRAME = 256 * 1024 * 1024


class OpContext(Protocol):
    """What a worker operation sees (``envoi.workers.worker.WorkerContext``): ``server`` is the
    worker's :class:`envoi.server.Server` (typed ``Any`` here so that a module registering an
    operation need not import the server)."""

    server: Any
    index: int
    #: Updates prepared and not yet committed or aborted, by transaction id.
    prepared: dict[int, tuple[str, Any]]


WorkerOp = Callable[[OpContext, dict[str, Any]], Any]
_OPS: dict[str, WorkerOp] = {}


def register_worker_op(name: str, op: WorkerOp) -> None:
    """Make ``op(ctx, msg)`` answer the main process's requests ``{"op": name, ...}`` in every
    worker; its return value (plain, picklable data) is the reply. Register at import time:
    workers are forked from the main process, so they have every operation the main one has.
    The main process sends the request with ``WorkerPool.broadcast`` / ``request``."""
    if name in _OPS and _OPS[name] is not op:
        raise ValueError(f"worker operation {name!r} is registered twice")
    _OPS[name] = op


def worker_op(name: str) -> WorkerOp | None:
    return _OPS.get(name)


#: Handlers of events workers send on their own (``{"event": name, ...}``) in the main process.
EventHandler = Callable[[int, dict[str, Any]], None]
_EVENT_HANDLERS: dict[str, EventHandler] = {}
_pusher: Callable[[dict[str, Any]], bool] | None = None


def set_event_handler(name: str, handler: EventHandler | None) -> None:
    """In the main process: ``handler(worker_index, frame)`` gets every ``{"event": name}``
    frame a worker pushes (None removes it). The live tap's lines come this way."""
    if handler is None:
        _EVENT_HANDLERS.pop(name, None)
    else:
        _EVENT_HANDLERS[name] = handler


def event_handler(name: str) -> EventHandler | None:
    return _EVENT_HANDLERS.get(name)


def set_event_pusher(pusher: Callable[[dict[str, Any]], bool] | None) -> None:
    """In a worker: how :func:`push_event` reaches the main process (set by the control loop)."""
    global _pusher
    _pusher = pusher


def push_event(frame: dict[str, Any]) -> bool:
    """In a worker: send ``frame`` (with an ``event`` key) to the main process without waiting.
    False when it cannot go now (not connected yet, or the channel is backed up): the caller
    drops it and counts."""
    return _pusher is not None and _pusher(frame)


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
