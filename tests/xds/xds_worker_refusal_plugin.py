"""A test plugin (loaded with ``-p xds_worker_refusal_plugin``): the network filter
``test.refuse_in_one_worker``, which builds in the main process and in every worker process but
the first one to build it (a worker whose state differs, say a file it cannot read), so that an
update is refused by one worker only. ``--refusal-ledger PATH``: the file that picks that worker
(the first to create it)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from envoi import hookimpl
from envoi.extensions import NetworkFilterFactory

_main_pid = os.getpid()
_ledger = ""


@hookimpl
def envoi_addoption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refusal-ledger", default="")


@hookimpl
def envoi_configured(server: Any) -> None:
    global _main_pid, _ledger
    _main_pid, _ledger = os.getpid(), server.plugin_options.refusal_ledger


class RefuseInOneWorker(NetworkFilterFactory):
    name = "test.refuse_in_one_worker"

    def create_filter_factory(self, config: Any, context: Any) -> Any:
        if os.getpid() != _main_pid and _ledger:
            try:
                fd = os.open(_ledger, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                with open(_ledger) as f:
                    chosen = f.read()
                if chosen == str(os.getpid()):
                    raise ValueError(f"worker pid {chosen} refuses this listener") from None
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                raise ValueError(f"worker pid {os.getpid()} refuses this listener")

        def add(builder: Any) -> None:  # adds no filter: the chain is the HCM's
            return None

        return add


@hookimpl
def envoi_network_filters() -> Sequence[NetworkFilterFactory]:
    return [RefuseInOneWorker()]
