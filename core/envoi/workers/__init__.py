"""Worker processes: Envoy's ``--concurrency N`` for a Python proxy.

The main process loads and validates the config, binds every listener once per worker with
SO_REUSEPORT (so the kernel spreads connections), forks N workers and keeps the admin. Each
worker serves its own copy of the listeners on its own event loop. The main process supervises
them (:mod:`envoi.workers.pool`), answers the admin with their summed stats, and applies updates
to all of them or none (:mod:`envoi.workers.updates`). What a worker does is in
:mod:`envoi.workers.worker`; the frames they exchange in :mod:`envoi.workers.control`.
"""

from envoi.workers.control import OpContext, register_worker_op
from envoi.workers.pool import WorkerPool, backoff, describe_status
from envoi.workers.updates import UpdateRejected, WorkerUpdate, apply_here, register_update
from envoi.workers.worker import MAIN_ONLY_PREFIXES, WorkerContext, WorkerStats, serve_control

__all__ = [
    "MAIN_ONLY_PREFIXES",
    "OpContext",
    "UpdateRejected",
    "WorkerContext",
    "WorkerPool",
    "WorkerStats",
    "WorkerUpdate",
    "apply_here",
    "backoff",
    "describe_status",
    "register_update",
    "register_worker_op",
    "serve_control",
]
