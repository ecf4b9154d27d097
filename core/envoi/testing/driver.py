"""Drive network filters with bytes, without sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from envoi.network.connection import Connection
from envoi.network.filter import FilterChainBuilder
from envoi.stats import Counter, Gauge, Store


class FakeTransport:
    """Enough of an asyncio transport for a :class:`Connection`: records what is written."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000),
                 sock: tuple[str, int] = ("127.0.0.1", 10000)) -> None:
        self.written = bytearray()
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.reading = True
        self._extra = {"peername": peer, "sockname": sock}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class _NullListener:
    """Stands in for the listener: no stats, no chain selection."""

    def __init__(self, setup: Callable[[Connection], None]) -> None:
        self._setup = setup

    def on_connection_made(self, conn: Connection, transport: Any) -> None:
        self._setup(conn)
        conn.start_filters()

    def on_connection_closed(self, conn: Connection) -> None:
        pass


class NetworkFilterDriver:
    """Run a chain of network filters on one fake connection.

    ``factories`` are the per-connection callbacks a :class:`NetworkFilterFactory` returns (or
    any callable that adds filters to a builder)::

        d = NetworkFilterDriver([factory_cb])
        d.receive(b"hello")
        assert d.transport.written == b"HELLO"
    """

    def __init__(self, factories: Iterable[Callable[[FilterChainBuilder], None]],
                 transport: FakeTransport | None = None) -> None:
        self.transport = transport or FakeTransport()
        factories = list(factories)

        def setup(conn: Connection) -> None:
            for f in factories:
                f(conn)

        self.connection = Connection(_NullListener(setup))
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]

    def receive(self, data: bytes, end_stream: bool = False) -> None:
        """Bytes from the downstream peer, through the read filters."""
        if data:
            self.connection.data_received(data)
        if end_stream:
            self.connection.eof_received()

    def send(self, data: bytes, end_stream: bool = False) -> None:
        """Bytes towards the downstream peer, through the write filters."""
        self.connection.write(data, end_stream)

    def close(self) -> None:
        """The peer went away."""
        self.connection.connection_lost(None)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.written)


class StatsDelta:
    """``with StatsDelta(store) as d: ...`` then ``d["tcp.x.downstream_cx_total"] == 1``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}

    def _snapshot(self) -> dict[str, int]:
        return {s.name: s.value for s in self.store if isinstance(s, Counter | Gauge)}

    def __enter__(self) -> StatsDelta:
        self.before = self._snapshot()
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.after = self._snapshot()

    def __getitem__(self, name: str) -> int:
        after = self.after or self._snapshot()
        return after.get(name, 0) - self.before.get(name, 0)

    def changed(self) -> dict[str, int]:
        after = self.after or self._snapshot()
        return {k: v - self.before.get(k, 0) for k, v in after.items()
                if v != self.before.get(k, 0)}
