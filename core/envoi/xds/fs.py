"""Filesystem xDS: a ``DiscoveryResponse`` in a YAML or JSON file, reloaded when a new file is
moved into place -- as Envoy notices it.

Envoy watches the file's directory for a file *moved to* its path (``mv new lds.yaml``), or,
with ``watched_directory``, for any entry moved into that directory (Kubernetes ConfigMaps swap
a ``..data`` symlink). A write into the existing file changes nothing until the next move.
envoi polls (every :data:`POLL_INTERVAL`) the identity of the file (device and inode) or of the
directory's entries: a rename gives the path a new inode, an in-place write does not.

A file that cannot be read or is not valid YAML counts ``update_failure``; one whose content is
not a valid update (an unknown field, a bad value, a resource envoi cannot act on) counts
``update_rejected``; either way the config in force stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from envoi.config import ConfigError, load_config_text, parse_config_data
from envoi.xds.resources import SubscriptionStats, decode, resource_name

log = logging.getLogger("envoi.xds")

POLL_INTERVAL = 0.2

#: ``handler(resources, version_info)`` applies a whole state of the world: (name, message)
#: pairs; returns None, or why (part of) it was refused.
Handler = Callable[[list[tuple[str, Any]], str], "str | None"]
Identity = tuple[int, int] | frozenset[tuple[str, int, int]] | None


def file_identity(path: str) -> Identity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def directory_identity(path: str) -> Identity:
    """Every entry of the directory with the inode it names (a moved-in entry is new)."""
    try:
        with os.scandir(path) as it:
            return frozenset((e.name, e.inode(), e.stat(follow_symlinks=True).st_ino)
                             for e in it)
    except OSError:
        return None


class FileWatch:
    """Sans-IO: ``changed(identity)`` says whether a new identity means a reload."""

    def __init__(self, first: Identity) -> None:
        self.last = first

    def changed(self, identity: Identity) -> bool:
        if identity is None or identity == self.last:
            return False  # gone (mid-rename) or untouched: keep what we have
        self.last = identity
        return True


class FileSubscription:
    def __init__(self, path: str, type_url: str, handler: Handler,
                 stats: SubscriptionStats | None, *, watched_directory: str = "",
                 plugin_type_urls: frozenset[str] = frozenset(),
                 on_attempt: Callable[[], None] | None = None,
                 on_result: Callable[[str | None, str], None] | None = None) -> None:
        self.path = path
        self.type_url = type_url
        self.handler = handler
        self.stats = stats
        self.watched_directory = watched_directory
        self.plugin_type_urls = plugin_type_urls
        self.on_attempt = on_attempt
        self.on_result = on_result
        self.watch = FileWatch(self._identity())

    def _identity(self) -> Identity:
        if self.watched_directory:
            return directory_identity(self.watched_directory)
        return file_identity(self.path)

    def _count(self, kind: str) -> None:
        if self.stats is not None:
            getattr(self.stats, kind).inc()

    def refresh(self) -> None:
        """Read the file and apply it (now, and after each move)."""
        started = time.monotonic()
        self._count("update_attempt")
        if self.on_attempt is not None:
            self.on_attempt()
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            data = load_config_text(text, source=self.path)
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            self._count("update_failure")
            log.warning("Filesystem config update failure: %s: %s", self.path, exc)
            self._result(str(exc), "")
            return
        from envoy.service.discovery.v3 import discovery_pb2

        try:
            resp = parse_config_data(data, discovery_pb2.DiscoveryResponse, source=self.path,
                                     plugin_type_urls=self.plugin_type_urls)
            resources = []
            for i, r in enumerate(resp.resources):
                msg = decode(self.type_url, r, f"resources[{i}]")
                resources.append((resource_name(self.type_url, msg), msg))
        except ConfigError as exc:
            self._reject(str(exc))
            return
        error = self.handler(resources, resp.version_info)
        if error is not None:
            self._reject(f"{self.path}: {error}")
            return
        if self.stats is not None:
            self.stats.success(resp.version_info, started)
        self._result(None, resp.version_info)

    def _reject(self, error: str) -> None:
        self._count("update_rejected")
        log.warning("Filesystem config update rejected: %s", error)
        self._result(error, "")

    def _result(self, error: str | None, version: str) -> None:
        if self.on_result is not None:
            self.on_result(error, version)

    def poll(self) -> None:
        if self.watch.changed(self._identity()):
            self.refresh()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                self.poll()
            except Exception:  # a bug here must not stop the watch
                log.exception("filesystem xDS: %s", self.path)
