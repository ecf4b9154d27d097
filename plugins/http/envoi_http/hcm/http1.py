"""The HCM's HTTP/1.1 half (``ServerProtocol``, see ``connection_manager``): the codec, one
exchange at a time, pipelining, keep-alive.

HTTP/1.1 carries one exchange at a time: the codec holds back pipelined requests until
``start_next_cycle``, so responses leave in request order and at most one stream is active. When
a response is complete, the next request already read starts *after* the call that finished the
previous one has returned (a scheduled callback): never inside the previous stream's router or
upstream callback. Events read while it waits queue behind it.

Writes made while one read is handled are joined into one transport write (``cork``): a response
head and its body leave in one syscall.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from envoi.http.headers import HeaderMap
from envoi.log import header_lines, stream_debug
from envoi.network.filter import ConnectionCloseType

from envoi_http.codec import events as ev
from envoi_http.codec import make_codec
from envoi_http.codec.events import RequestHeaders
from envoi_http.hcm.stream import REMOTE_DONE, ActiveStream

if TYPE_CHECKING:
    from envoi_http.hcm.connection_manager import ConnectionManager

_CLOSE = (b"connection", b"close")
log = logging.getLogger("envoi.http")


class Http1Connection:
    multiplexed = False

    def __init__(self, manager: ConnectionManager) -> None:
        self.m = manager
        cfg = manager.config
        self.codec = make_codec(cfg.codec_backend, "server",
                                max_request_headers_kb=cfg.max_request_headers_kb,
                                max_headers_count=cfg.max_headers_count,
                                enable_trailers=cfg.enable_trailers)
        self.conn = manager.conn
        st = self.stats = manager.stats
        self.counted = False  # Envoy's AUTO codec counts the protocol once the first bytes show it
        self.rq_total = st.downstream_rq_http1_total
        self.corked: list[bytes] | None = None
        # Events of the next pipelined request, read before the previous response ended: they
        # are dispatched from a scheduled callback, with whatever is read meanwhile after them.
        self.queued: list[ev.Event] | None = None
        # The response being sent said ``connection: close`` (a drain that began after its
        # head was sent lets the connection serve the next request, which is told to close).
        self.said_close = False

    # -- bytes in ----------------------------------------------------------------------------

    def on_data(self, data: bytes, end_stream: bool) -> None:
        corked = self.corked is None
        if corked:
            self.corked = []
        try:
            m = self.m
            codec = self.codec
            if data:
                if not self.counted:
                    self.counted = True
                    st = self.stats
                    st.downstream_cx_http1_total.value += 1
                    st.downstream_cx_http1_active.inc()
                if not m.streams and not m.head_pending and data.strip(b"\r\n") and \
                        self.queued is None:
                    m.head_pending = True  # cleared when the head is complete (new_stream)
                events = codec.receive(data)
                if self.queued is not None:
                    self.queued += events
                elif len(events) == 1 and type(events[0]) is RequestHeaders:
                    m.new_stream(events[0])  # a whole request without body: dispatch's work
                else:
                    m.dispatch(events)
            if end_stream and not m.closing:
                events = codec.receive(b"")
                if self.queued is not None:
                    self.queued += events
                else:
                    m.dispatch(events)
        finally:
            if corked:  # uncork(), inline
                out = self.corked
                self.corked = None
                if out:
                    self.conn.write(out[0] if len(out) == 1 else b"".join(out))

    def on_event(self, e: Any) -> None:
        if type(e) is ev.ProtocolError:  # the manager gave up on the request being read
            self.codec.protocol_error(e)

    # -- bytes out ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.stats.downstream_cx_tx_bytes_total.value += len(data)
        corked = self.corked
        if corked is not None:
            corked.append(data)
        else:
            self.conn.write(data)

    def cork(self) -> bool:
        if self.corked is not None:
            return False
        self.corked = []
        return True

    def uncork(self) -> None:
        corked = self.corked
        self.corked = None
        if corked:
            self.conn.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def flush(self) -> None:
        corked = self.corked
        if corked:
            self.corked = []
            self.conn.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def write_head(self, s: ActiveStream, headers: HeaderMap, data: bytes | None,
                   end: bool) -> None:
        status = headers.status
        raw = headers.headers
        codec = self.codec
        m = self.m
        if (m.closing or m.drain_close or self.conn.closed or not s.state & REMOTE_DONE) and \
                status != 101:
            raw = [*raw, _CLOSE]
            self.said_close = True
        if m.debug:
            stream_debug(log, self.conn.id, s.stream_id, "encoding headers via codec "
                         "(end_stream=%s):%s", str(end and data is None).lower(),
                         header_lines([(":status", str(status))] + [
                             (k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]))
        if data is None:
            out = codec.send_response_head(s.stream_id, status, raw, end)
        else:
            out = codec.send_response(s.stream_id, status, raw, data, end)
        self.stats.downstream_cx_tx_bytes_total.value += len(out)
        corked = self.corked
        if corked is not None:
            corked.append(out)
        else:
            self.conn.write(out)

    def write_data(self, s: ActiveStream, data: bytes, end: bool) -> None:
        out = self.codec.send_data(s.stream_id, data, end)
        if out:
            self._write(out)

    def write_trailers(self, s: ActiveStream, trailers: HeaderMap) -> None:
        self._write(self.codec.send(ev.Trailers(s.stream_id, trailers.headers)))

    def write_informational(self, s: ActiveStream, headers: HeaderMap) -> None:
        self.flush()
        self.conn.write(self.codec.send(ev.Informational(s.stream_id, headers.status,
                                                         headers.headers)))

    # -- the exchange's end --------------------------------------------------------------------

    def stream_done(self, s: ActiveStream) -> None:
        """A response is complete: close, or serve the next request."""
        m = self.m
        m.last_activity = s.last_activity
        complete = bool(s.state & REMOTE_DONE)
        said_close, self.said_close = self.said_close, False
        if m.closing or not self.codec.keep_alive or not complete or (
                m.drain_close and (said_close or m.drain_closes_idle)):
            if m.drain_close and not m.closing:
                self.stats.downstream_cx_drain_close.value += 1
            m.closing = True
            if not m.delay_close_after(complete):
                m.close(ConnectionCloseType.FLUSH_WRITE)
            return
        events = self.codec.start_next_cycle()
        if events:
            # Already read: started once the call that ended this response has returned.
            self.queued = events
            m.loop.call_soon(self._run_queued)

    def _run_queued(self) -> None:
        events = self.queued
        self.queued = None
        if events and not self.conn.closed:
            corked = self.cork()
            try:
                self.m.dispatch(events)
            finally:
                if corked:
                    self.uncork()

    def stream_reset(self, s: ActiveStream, local: bool) -> None:
        if local:  # HTTP/1.1 cannot reset one exchange: the connection goes
            m = self.m
            m.closing = True
            m.close(ConnectionCloseType.NO_FLUSH)

    def read_disable(self, s: ActiveStream, disable: bool) -> None:
        self.conn.read_disable(disable)

    def acknowledge(self, s: ActiveStream, nbytes: int) -> None:
        pass  # TCP's own flow control: reading stops while read_disable says so

    def drain(self) -> None:
        pass  # the manager's ``closing`` puts connection: close on the next response

    def on_connection_closed(self) -> None:
        if self.counted:
            self.stats.downstream_cx_http1_active.dec()
