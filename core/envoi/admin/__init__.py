"""Envoy's admin endpoints on their own listener.

``await start_admin(server, host, port)`` serves ``/stats``, ``/clusters``, ``/ready`` and the rest
for an object implementing :class:`AdminServerApi`; the returned :class:`AdminHandle` knows the
bound port (useful with port 0) and closes the listener and its open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

from envoi.admin.api import (
    SERVER_STATES,
    AdminServerApi,
    CircuitBreakerThresholds,
    ClusterInfo,
    HostInfo,
    ListenerInfo,
)
from envoi.admin.handlers import dispatch
from envoi.admin.http import AdminHttpProtocol, AdminHttpStats

__all__ = [
    "SERVER_STATES",
    "AdminHandle",
    "AdminServerApi",
    "CircuitBreakerThresholds",
    "ClusterInfo",
    "HostInfo",
    "ListenerInfo",
    "start_admin",
]


class AdminHandle:
    """A running admin listener."""

    def __init__(self, server: asyncio.Server, protocols: set[AdminHttpProtocol]) -> None:
        self._server = server
        self._protocols = protocols
        sock = server.sockets[0]
        self.host: str = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop open admin connections (they hold no work worth finishing)."""
        self._server.close()
        for proto in list(self._protocols):
            proto.abort()
        await self._server.wait_closed()
        for proto in list(self._protocols):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proto.closed.wait(), timeout=5)


async def start_admin(server: AdminServerApi, host: str, port: int) -> AdminHandle:
    """Bind the admin listener and start serving; raises ``OSError`` when the port is taken."""
    loop = asyncio.get_running_loop()
    stats = AdminHttpStats(server.stats.root.scope("http.admin"),
                           server.stats.root.scope("listener.admin"))
    handler = partial(dispatch, server)
    protocols: set[AdminHttpProtocol] = set()

    def factory() -> AdminHttpProtocol:
        proto = AdminHttpProtocol(handler, stats, loop)
        protocols.add(proto)
        proto.on_closed = protocols.discard
        return proto

    aserver = await loop.create_server(factory, host, port, reuse_address=True)
    return AdminHandle(aserver, protocols)
