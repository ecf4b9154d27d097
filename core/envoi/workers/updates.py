"""Updates that every worker applies, or none does: the seam for dynamic configuration.

An update is registered once, by name, with two functions that run in every process that holds
the state it changes (the main process first, then each worker):

* ``prepare(server, payload) -> prepared``: check and build everything the update needs,
  changing nothing; raise :class:`UpdateRejected` (or a ``ConfigError``) to refuse it.
* ``commit(server, prepared)``: swap the prepared state in. It must not fail.

:meth:`envoi.workers.pool.WorkerPool.apply_update` runs the phases: prepare in the main process,
prepare in every worker, and only when all of them accepted, commit in the main process and then
in every worker; otherwise every worker is told to abort and the error is returned. A worker
that does not answer in time is replaced: a replacement is forked from the main process, which
has committed by then, so it starts with the update too. With one process
(``--concurrency 1``), :func:`apply_here` runs both phases in place.

The payload crosses a process boundary (pickled), the prepared state never does. xDS updates
(a listener or cluster arriving over LDS/CDS) are meant to come through here; state that the
main process pushes without a vote (host health from the main's health checker) uses
:func:`envoi.workers.control.register_worker_op` and ``WorkerPool.broadcast`` instead, after
changing the main's own copy first so that replacement workers inherit it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoi.config import ConfigError
from envoi.workers.control import OpContext, register_worker_op

#: The worker's or main process's ``envoi.server.Server`` (not imported: a module that
#: registers an update must not need the server, which imports it in turn).
Server = Any


class UpdateRejected(Exception):
    """Raised by ``prepare`` when an update cannot be applied; the message is the reason."""


@dataclass(frozen=True)
class WorkerUpdate:
    name: str
    prepare: Callable[[Server, Any], Any]
    commit: Callable[[Server, Any], None]


_UPDATES: dict[str, WorkerUpdate] = {}


def register_update(update: WorkerUpdate) -> None:
    """Register at import time (workers are forked from the main process and so know it)."""
    if update.name in _UPDATES and _UPDATES[update.name] is not update:
        raise ValueError(f"update {update.name!r} is registered twice")
    _UPDATES[update.name] = update


def get_update(name: str) -> WorkerUpdate:
    try:
        return _UPDATES[name]
    except KeyError:
        raise ValueError(f"no update named {name!r} is registered") from None


def prepare_here(server: Server, name: str, payload: Any) -> tuple[Any, str | None]:
    """Run ``prepare`` in this process: (prepared state, None) or (None, the reason)."""
    try:
        return get_update(name).prepare(server, payload), None
    except (UpdateRejected, ConfigError) as exc:
        return None, str(exc)


def apply_here(server: Server, name: str, payload: Any) -> str | None:
    """Both phases in this process (a single-process server); returns the error, or None."""
    prepared, error = prepare_here(server, name, payload)
    if error is None:
        get_update(name).commit(server, prepared)
    return error


# -- in a worker ------------------------------------------------------------------------------


def _op_prepare(ctx: OpContext, msg: dict[str, Any]) -> str | None:
    prepared, error = prepare_here(ctx.server, msg["update"], msg["payload"])
    if error is None:
        ctx.prepared[msg["txn"]] = (msg["update"], prepared)
    return error


def _op_commit(ctx: OpContext, msg: dict[str, Any]) -> None:
    name, prepared = ctx.prepared.pop(msg["txn"])
    get_update(name).commit(ctx.server, prepared)


def _op_abort(ctx: OpContext, msg: dict[str, Any]) -> None:
    ctx.prepared.pop(msg["txn"], None)


register_worker_op("update_prepare", _op_prepare)
register_worker_op("update_commit", _op_commit)
register_worker_op("update_abort", _op_abort)


# -- the updates envoi has today ----------------------------------------------------------------


def _runtime_prepare(server: Server, updates: dict[str, str]) -> dict[str, str]:
    if not any(layer.kind == "admin" for layer in server.runtime.layers):
        raise UpdateRejected("No admin layer specified")
    return dict(updates)


def _runtime_commit(server: Server, updates: dict[str, str]) -> None:
    server.runtime.modify(updates)


#: ``POST /runtime_modify``: the admin layer changes in every process at once.
RUNTIME_MODIFY = WorkerUpdate("runtime_modify", _runtime_prepare, _runtime_commit)
register_update(RUNTIME_MODIFY)
