"""The network filter manager: Envoy's ordering and Continue/StopIteration contract, no sockets."""

from __future__ import annotations

from envoi.network.filter import Filter, FilterStatus, ReadFilter, WriteFilter
from envoi.testing import NetworkFilterDriver

C, S = FilterStatus.CONTINUE, FilterStatus.STOP_ITERATION


class Recorder(Filter):
    def __init__(self, name: str, log: list[str], read: FilterStatus = C,
                 write: FilterStatus = C, new: FilterStatus = C) -> None:
        self.name, self.log = name, log
        self.read_status, self.write_status, self.new_status = read, write, new

    def on_new_connection(self) -> FilterStatus:
        self.log.append(f"{self.name}.new")
        return self.new_status

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        self.log.append(f"{self.name}.data:{data.decode()}:{int(end_stream)}")
        return self.read_status

    def on_write(self, data: bytes, end_stream: bool) -> FilterStatus:
        self.log.append(f"{self.name}.write:{data.decode()}")
        return self.write_status


class Terminal(ReadFilter):
    """Echoes what reaches it, through the write filters."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        self.log.append(f"term.data:{data.decode()}:{int(end_stream)}")
        self.read_callbacks.connection.write(data, end_stream)
        return S


def chain(*filters: object) -> NetworkFilterDriver:
    def add(builder):  # type: ignore[no-untyped-def]
        for f in filters:
            if isinstance(f, Filter):
                builder.add_filter(f)
            elif isinstance(f, ReadFilter):
                builder.add_read_filter(f)
            elif isinstance(f, WriteFilter):
                builder.add_write_filter(f)

    return NetworkFilterDriver([add])


def test_read_filters_fifo_write_filters_lifo() -> None:
    log: list[str] = []
    d = chain(Recorder("a", log), Recorder("b", log), Terminal(log))
    assert log == ["a.new", "b.new"]
    d.receive(b"x")
    assert log[2:] == ["a.data:x:0", "b.data:x:0", "term.data:x:0", "b.write:x", "a.write:x"]
    assert d.written == b"x"


def test_stop_iteration_holds_data_until_continue_reading() -> None:
    log: list[str] = []
    a = Recorder("a", log, read=S)
    d = chain(a, Terminal(log))
    d.receive(b"one")
    d.receive(b"two")
    assert "term.data" not in " ".join(log)
    assert d.written == b""
    a.read_status = C
    a.read_callbacks.continue_reading()
    assert log[-3:] == ["term.data:onetwo:0", "a.write:onetwo", ] or log[-2:] == [
        "term.data:onetwo:0", "a.write:onetwo"]
    assert d.written == b"onetwo"
    d.receive(b"three")
    assert d.written == b"onetwothree"


def test_continue_after_stop_flushes_held_and_new_data() -> None:
    log: list[str] = []
    a = Recorder("a", log, read=S)
    d = chain(a, Terminal(log))
    d.receive(b"1")
    a.read_status = C
    d.receive(b"2")
    assert d.written == b"12"


def test_stop_on_new_connection_defers_later_filters() -> None:
    log: list[str] = []
    a = Recorder("a", log, new=S)
    b = Recorder("b", log)
    d = chain(a, b, Terminal(log))
    assert log == ["a.new"]
    a.read_callbacks.continue_reading()
    assert log == ["a.new", "b.new"]
    d.receive(b"z")
    assert d.written == b"z"


def test_inject_and_discard_replace_data() -> None:
    log: list[str] = []

    class Upper(ReadFilter):
        def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
            self.read_callbacks.inject_read_data_to_filter_chain(data.upper(), end_stream)
            return S

    d = chain(Upper(), Terminal(log))
    d.receive(b"abc")
    assert d.written == b"ABC"
    assert d.connection._stopped_at == 0
    # The held copy is the original; a filter that replaced the data discards it.
    up = d.connection.read_filters[0]
    assert up.read_callbacks.discard_held_data() == b"abc"


def test_write_filter_stop_and_inject() -> None:
    log: list[str] = []

    class Wrap(WriteFilter):
        def on_write(self, data: bytes, end_stream: bool) -> FilterStatus:
            self.write_callbacks.inject_write_data_to_filter_chain(b"<" + data + b">", end_stream)
            return S

    d = chain(Wrap(), Terminal(log))
    d.receive(b"hi")
    assert d.written == b"<hi>"


def test_half_close_passes_end_stream_and_keeps_write_side() -> None:
    log: list[str] = []
    d = chain(Recorder("a", log), Terminal(log))
    d.receive(b"bye", end_stream=True)
    assert "a.data:bye:0" in log
    assert "term.data::1" in log
    # The terminal echoed end_stream; with both directions done the transport closes.
    assert d.transport.closed
    assert d.connection.read_closed and d.connection.write_closed


def test_read_disable_is_nested() -> None:
    d = chain(Terminal([]))
    conn = d.connection
    conn.read_disable(True)
    conn.read_disable(True)
    assert not d.transport.reading
    conn.read_disable(False)
    assert not d.transport.reading
    conn.read_disable(False)
    assert d.transport.reading


def test_watermark_callbacks() -> None:
    d = chain(Terminal([]))
    events: list[str] = []
    d.connection.add_watermark_callbacks(lambda: events.append("high"),
                                         lambda: events.append("low"))
    d.connection.pause_writing()
    d.connection.resume_writing()
    assert events == ["high", "low"]


def test_terminal_stop_holds_nothing_behind_a_sniffer() -> None:
    # A sniffer in front of a terminal filter: nothing may accumulate in the connection.
    log: list[str] = []
    d = chain(Recorder("sniff", log), Terminal(log))
    for _ in range(100):
        d.receive(b"x" * 1000)
    assert d.connection._held == []
    assert d.connection._stopped_at == -1
    assert len(d.written) == 100_000


def test_bytes_arriving_while_read_disabled_are_queued_in_order() -> None:
    log: list[str] = []
    d = chain(Recorder("a", log), Terminal(log))
    conn = d.connection
    conn.read_disable(True)
    d.receive(b"1")  # the loop delivered bytes anyway
    d.receive(b"2", end_stream=True)
    assert "a.data:1:0" not in log and not d.transport.reading
    conn.read_disable(False)
    assert [e for e in log if e.startswith("term")] == ["term.data:1:0", "term.data:2:0",
                                                         "term.data::1"]
    assert d.transport.reading
    assert conn.stream_info.bytes_received == 2


def test_a_raising_filter_resets_only_its_connection() -> None:
    class Bad(ReadFilter):
        def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
            raise ValueError("bad")

    class BadWriter(WriteFilter):
        def on_write(self, data: bytes, end_stream: bool) -> FilterStatus:
            raise ValueError("bad write")

    d = chain(Bad(), Terminal([]))
    d.receive(b"x")
    assert d.transport.aborted
    d2 = chain(BadWriter(), Terminal([]))
    d2.receive(b"x")
    assert d2.transport.aborted
