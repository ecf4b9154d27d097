"""A test plugin (loaded with ``-p failing_worker_plugin``): worker processes fail while they
start, as a plugin with a start-up bug would make them. ``--fail-worker-starts N`` fails the
first N worker starts of the server (counted in the file ``--fail-worker-ledger``)."""

from __future__ import annotations

import argparse
import fcntl
import os
from pathlib import Path
from typing import Any

from envoi import hookimpl


@hookimpl
def envoi_addoption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fail-worker-starts", type=int, default=0)
    parser.add_argument("--fail-worker-ledger", default="")


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("failing_worker_plugin refuses to start this worker")


@hookimpl
def envoi_configured(server: Any) -> None:
    opts = server.plugin_options
    limit = opts.fail_worker_starts
    ledger = Path(opts.fail_worker_ledger)

    def in_child() -> None:  # every forked worker, before it starts serving
        with open(ledger, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            starts = len(f.read())
            f.write("x")
        if starts < limit:  # the worker's first step, making its event loop, fails
            import envoi.event_loop

            envoi.event_loop.new_event_loop = _refuse

    if limit:
        os.register_at_fork(after_in_child=in_child)
