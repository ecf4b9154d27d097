"""Listeners from LDS: added, replaced (the old one drains) and removed, in every process.

A replaced listener on the same address hands its listening socket to its successor (a
``dup``), so the kernel's accept queue is never closed: new connections go to the new listener
at once while the old one's connections drain (``ActiveListener.drain``: no accepted
connection is lost; HTTP connections answer their next request with ``connection: close``, as
Envoy's) for up to ``--drain-time-s``, after which the rest are closed. A listener on a new
address binds first; a port in use refuses that listener (the update is NACKed, the rest of it
applies, as Envoy does).

With worker processes the main process binds nothing for LDS listeners: it checks that the port
is free (a plain bind, closed again) and every worker binds its own ``SO_REUSEPORT`` socket when
it prepares the update (a replacement worker binds one when it starts).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from envoi.config import ConfigError, ConfigIssue
from envoi.network.builder import build_listener
from envoi.network.listener import ActiveListener
from envoi.workers.updates import UpdateRejected, WorkerUpdate, register_update
from envoi.xds.resources import LISTENER, Resource, message_class

log = logging.getLogger("envoi.xds")


@dataclass
class PreparedListeners:
    upserts: list[tuple[str, ActiveListener, Resource]] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)


def _address(cfg: Any) -> tuple[str, int]:
    sa = cfg.address.socket_address
    return sa.address, sa.port_value


def _probe(host: str, port: int) -> int:
    """A plain bind to see that ``host:port`` is free; returns the port (for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return int(s.getsockname()[1])


def build_one(server: Any, state: Any, name: str, cfg: Any, port: int | None) -> ActiveListener:
    """Build and bind (or, in the main process of workers, check) one LDS listener. Raises
    ConfigError naming the listener."""
    path = f"listener '{name}'"
    if any(lst.name == name for lst in server.listeners if lst not in state.listeners.values()):
        raise ConfigError([ConfigIssue(path, "a static listener has this name; it cannot be "
                                       "added or updated over LDS")])
    workers = server.pool is not None or server.worker_index is not None
    lst: ActiveListener = server.route_configs.build_listener(lambda: build_listener(
        server.factory_context, server, cfg, path, reuse_port=workers))
    old = state.listeners.get(name)
    same = old is not None and state.addresses.get(name) == _address(cfg)
    host, cfg_port = _address(cfg)
    try:
        if server.pool is not None:  # the main process of workers: check, bind nothing
            lst.bind_in_worker = True
            if same:
                lst.port = old.port
            else:
                lst.port = _probe(host, cfg_port)
        elif server.worker_index is not None:
            lst.bind_in_worker = True
            if same and old.sock is not None:
                lst.bind(sock=old.sock.dup())
            else:
                lst.port = port if port is not None else cfg_port
                lst.bind(1)
        elif same and old.sock is not None:
            lst.bind(sock=old.sock.dup())
        else:  # a single process, or the first config before the workers are forked
            lst.reuse_port = server.options.concurrency > 1
            lst.bind(server.options.concurrency)
    except OSError as exc:
        raise ConfigError([ConfigIssue(
            path, f"cannot bind '{host}:{cfg_port}': {exc.strerror or exc}")]) from None
    if server.worker_index is not None and lst.stats is not None:
        lst.stats.set_worker(server.worker_index)  # worker_<N>.downstream_cx_*, as Envoy's
    return lst


def prepare(server: Any, payload: dict[str, Any]) -> PreparedListeners:
    state = server.xds
    planned = state.planned.pop(payload["plan"], None)
    if isinstance(planned, PreparedListeners):
        return planned  # the main process built it while it checked the update
    cls = message_class(LISTENER)
    out = PreparedListeners(removes=list(payload["removes"]))
    try:
        for name, data in payload["upserts"]:
            cfg = cls.FromString(data)
            lst = build_one(server, state, name, cfg, payload["ports"].get(name))
            out.upserts.append((name, lst, Resource(name, cfg, payload["version"],
                                                    payload["time"])))
    except ConfigError as exc:
        for _, lst, _ in out.upserts:
            _close(lst)
        raise UpdateRejected(str(exc)) from None
    return out


def _close(lst: ActiveListener) -> None:
    lst.accepting_wanted = False
    for s in (lst.sock, *lst.worker_socks):
        if s is not None:
            s.close()


def commit(server: Any, prepared: PreparedListeners) -> None:
    state = server.xds
    main = server.worker_index is None
    lm = server.lm_stats
    for name, lst, res in prepared.upserts:
        if main:
            known = name in state.listeners or name in state.warming_listeners
            (lm.listener_modified if known else lm.listener_added).inc()
        warming = state.warming_listeners.pop(name, None)
        if warming is not None:  # a newer version replaces the one still warming
            _close(warming[0])
        if not server.route_configs.ready(lst):
            # Its route configurations have not arrived: it warms, the old one (if any) serves.
            state.warming_listeners[name] = (lst, res)
            continue
        activate(server, name, lst, res)
    for name in prepared.removes:
        warming = state.warming_listeners.pop(name, None)
        if warming is not None:
            _close(warming[0])
        old = state.listeners.pop(name, None)
        state.addresses.pop(name, None)
        state.resources.pop(name, None)
        if old is not None:
            state.drain(old)
        if main and (old is not None or warming is not None):
            lm.listener_removed.inc()
    state.listener_gauges()


def activate(server: Any, name: str, lst: ActiveListener, res: Resource) -> None:
    """``lst`` takes over from the listener of that name (which drains), and serves."""
    state = server.xds
    old = state.listeners.pop(name, None)
    if old is not None:
        state.drain(old)
    state.listeners[name] = lst
    state.addresses[name] = _address(res.message)
    state.resources[name] = res
    server.listeners.append(lst)
    if lst.sock is not None and state.serving:
        state.start(lst)
        log.info("lds: listener '%s' serving on %s:%d", name, lst.host, lst.port)
    if server.worker_index is None and state.serving and (
            lst.sock is not None or server.pool is not None):
        # Envoy counts it once per worker that added the listener (the workers have: an
        # update reaches every worker or none).
        server.lm_stats.listener_create_success.inc(server.options.concurrency)


UPDATE = WorkerUpdate("xds_listeners", prepare, commit)
register_update(UPDATE)


async def start_listener(lst: ActiveListener) -> None:
    try:
        await lst.start()
    except Exception:  # never leave it half-started silently
        log.exception("lds: listener '%s' could not start", lst.name)


def loop_or_none() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
