"""The HCM's HTTP/2 half (``ServerProtocol``, see ``connection_manager``): the HTTP/2 codec, many
streams at once, per-stream flow control, RST_STREAM, GOAWAY.

What HTTP/2 adds to the protocol-agnostic half, as Envoy 1.39.3 does it:

- **Streams run concurrently**: each ``RequestHeaders`` opens one; a stream's response is
  written whenever its filters produce it; writes made while one read (or one upstream read) is
  handled leave in one transport write (``cork``).
- **Flow control, receiving**: request body bytes are acknowledged (WINDOW_UPDATE) once the
  stream's filters took them, unless the stream is read-disabled (its upstream is slow): then
  they are held and acknowledged when it resumes, so only that stream's window closes.
- **Flow control, sending**: what the client's windows do not take waits in the codec; over the
  stream's buffer limit (the initial stream window, as Envoy) the stream's filters are told
  ``above high watermark`` (the router stops reading its upstream) until it drains.
- **Ends**: a response complete before its request gets RST_STREAM NO_ERROR (Envoy counts it as
  ``downstream_rq_rx_reset`` and ``http2.tx_reset``); a local reset is RST_STREAM NO_ERROR;
  a client's GOAWAY is ignored, as Envoy ignores it; too many streams reset prematurely (the
  rapid-reset attack) close the connection (``hcm/premature_reset.py``).
- **Errors**: a framing error (``h2`` queued a GOAWAY) or an HTTP messaging error closes the
  connection after flushing (``downstream_cx_protocol_error``); a flood closes it without
  counting a protocol error (the ``http2.*`` flood counter moved); a stream refused for its
  headers (count or size) is counted as a request reset, as Envoy counts it.
- **Drain**: ``drain()`` sends GOAWAY(2^31-1) at once and the final GOAWAY after
  ``drain_timeout``; the connection closes when its last stream ends.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from envoi.http.headers import HeaderMap
from envoi.network.filter import ConnectionCloseType

from envoi_http.codec import events as ev
from envoi_http.codec import h2_events as hev
from envoi_http.codec.h2_codec import (
    CONNECTION_TERMINATION,
    HEADERS_TOO_LARGE,
    TOO_MANY_HEADERS,
    H2Codec,
)
from envoi_http.h2_keepalive import Keepalive
from envoi_http.hcm.premature_reset import LIFETIME_KEY, TOTAL_KEY, PrematureResets
from envoi_http.hcm.stream import REMOTE_DONE, ActiveStream

if TYPE_CHECKING:
    from envoi_http.hcm.connection_manager import ConnectionManager

_NOT_WRITTEN = 1 << 62  # "the transport holds everything": no frame counts as written


class Http2Connection:
    multiplexed = True

    def __init__(self, manager: ConnectionManager) -> None:
        self.m = manager
        cfg = manager.config
        self.codec = H2Codec("server", cfg.http2_options,
                             max_headers_kb=cfg.max_request_headers_kb,
                             max_headers_count=cfg.max_headers_count, stats=cfg.http2_stats)
        self.conn = manager.conn
        st = self.stats = manager.stats
        st.downstream_cx_http2_total.value += 1
        st.downstream_cx_http2_active.inc()
        self.rq_total = st.downstream_rq_http2_total
        self.corked = False
        self.flush_pending = False
        self.paused: dict[int, int] = {}  # read-disabled stream -> bytes taken, not acknowledged
        self.blocked: set[int] = set()  # streams told "above high watermark" by their buffer
        runtime = cfg.context.runtime
        self.premature = PrematureResets(runtime.get_integer(TOTAL_KEY, 500),
                                         runtime.get_integer(LIFETIME_KEY, 1))
        self.final_goaway_timer: Any = None
        self.context = cfg.context  # ``draining``: the server's drain decision
        self.draining = False
        ka = cfg.http2_options.keepalive
        self.keepalive = None if ka is None else Keepalive(
            manager.loop, ka, self._ping, self._keepalive_expired)
        if manager.headers_timer is not None:  # (armed before the first bytes said HTTP/2)
            manager.headers_timer.cancel()
            manager.headers_timer = None
        self.flush()  # our SETTINGS go out at once

    # -- bytes in ----------------------------------------------------------------------------

    def on_data(self, data: bytes, end_stream: bool) -> None:
        if self.keepalive is not None:
            self.keepalive.received()
        corked = self.cork()
        try:
            codec = self.codec
            if data:
                self._dispatch(codec.receive(data))
            if end_stream and not self.m.closing:
                self._dispatch(codec.receive(b""))
        finally:
            if corked:
                self.uncork()

    def _dispatch(self, events: list[Any]) -> None:
        plain: list[ev.Event] = []
        for e in events:
            t = type(e)
            if t is ev.Body or t is ev.RequestHeaders or t is ev.Trailers:
                plain.append(e)
            elif t is ev.StreamReset:
                reason = e.reason
                if reason == CONNECTION_TERMINATION:
                    continue  # the connection's close resets its streams (and counts them)
                if reason in (TOO_MANY_HEADERS, HEADERS_TOO_LARGE):
                    self._refused_request()
                    continue
                plain.append(e)
            elif t is ev.ProtocolError or t is hev.Flood:
                self._deliver(plain)
                plain = []
                self._connection_error(t is ev.ProtocolError)
                return
            elif t is ev.ConnectionClosed:
                plain.append(e)
            elif t is hev.StreamWritable:
                self._writable(e.stream_id)
            elif t is hev.PingAck and self.keepalive is not None:
                self.keepalive.acked()
            # GoAwayReceived: Envoy ignores a client's GOAWAY; its streams go on.
        self._deliver(plain)

    def _deliver(self, events: list[ev.Event]) -> None:
        if not events:
            return
        self.m.dispatch(events)
        codec = self.codec
        paused = self.paused
        for e in events:
            if type(e) is ev.Body:
                n = len(e.data)
                if n:
                    sid = e.stream_id
                    if sid in paused:
                        paused[sid] += n
                    else:
                        codec.acknowledge(sid, n)  # handed on: the client may send more

    def _refused_request(self) -> None:
        """A stream reset by the codec for its header count or size: Envoy had opened it, so
        it counts a request and its reset."""
        st = self.stats
        st.downstream_rq_total.value += 1
        self.rq_total.value += 1
        st.downstream_rq_rx_reset.value += 1

    def _connection_error(self, protocol_error: bool) -> None:
        m = self.m
        if protocol_error:
            self.stats.downstream_cx_protocol_error.value += 1
        m.closing = True
        m.close(ConnectionCloseType.FLUSH_WRITE)

    # -- bytes out ---------------------------------------------------------------------------

    # Frames queued while streams answer are written once per loop iteration: responses that
    # arrive from several upstream connections in one iteration leave in one transport write
    # (the callback runs after the iteration's I/O callbacks, so no answer waits longer).

    def cork(self) -> bool:
        if self.corked:
            return False
        self.corked = True
        return True

    def uncork(self) -> None:
        self.corked = False
        self._written()

    def flush(self) -> None:
        codec = self.codec
        data = codec.data_to_send()
        conn = self.conn
        if data and not conn.closed:
            self.stats.downstream_cx_tx_bytes_total.value += len(data)
            conn.write(data)
            codec.transport_buffered(_NOT_WRITTEN if conn.above_high_watermark else 0)
        if codec.failed is not None and not self.m.closing:
            self._connection_error(False)  # an outbound flood: the client does not read

    def _written(self) -> None:
        if not self.flush_pending:
            self.flush_pending = True
            self.m.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.flush_pending = False
        self.flush()

    def write_head(self, s: ActiveStream, headers: HeaderMap, data: bytes | None,
                   end: bool) -> None:
        if self.codec.queue_response(s.stream_id, headers.status, headers.headers, data, end):
            self._blocked(s)
        if not self.flush_pending:
            self._written()

    def write_data(self, s: ActiveStream, data: bytes, end: bool) -> None:
        if self.codec.send_data(s.stream_id, data, end):
            self._blocked(s)
        if not self.flush_pending:
            self._written()

    def write_trailers(self, s: ActiveStream, trailers: HeaderMap) -> None:
        self.codec.send_trailers(s.stream_id, trailers.headers)
        self._written()

    def write_informational(self, s: ActiveStream, headers: HeaderMap) -> None:
        self.codec.send_informational(s.stream_id, headers.status, headers.headers)
        self._written()

    # -- per-stream flow control -------------------------------------------------------------

    def _blocked(self, s: ActiveStream) -> None:
        """The codec holds more of this stream than its buffer limit."""
        sid = s.stream_id
        if sid not in self.blocked:
            self.blocked.add(sid)
            s.above_write_buffer_high_watermark()

    def _writable(self, sid: int) -> None:
        if sid in self.blocked:
            self.blocked.discard(sid)
            s = self.m.streams.get(sid)
            if s is not None:
                s.below_write_buffer_low_watermark()

    def read_disable(self, s: ActiveStream, disable: bool) -> None:
        sid = s.stream_id
        if disable:
            self.paused.setdefault(sid, 0)
            return
        n = self.paused.pop(sid, 0)
        if n:
            self.codec.acknowledge(sid, n)
            self._written()

    def acknowledge(self, s: ActiveStream, nbytes: int) -> None:
        self.codec.acknowledge(s.stream_id, nbytes)
        self._written()

    # -- the end of a stream -------------------------------------------------------------------

    def stream_done(self, s: ActiveStream) -> None:
        sid = s.stream_id
        self.paused.pop(sid, None)
        self.blocked.discard(sid)
        if not s.state & REMOTE_DONE:
            # The response ended first: Envoy resets the stream (RST_STREAM NO_ERROR).
            self.codec.reset_stream(sid)
            self.stats.downstream_rq_rx_reset.value += 1
            self._written()
        self._ended(s, responded=True)

    def stream_reset(self, s: ActiveStream, local: bool) -> None:
        sid = s.stream_id
        self.paused.pop(sid, None)
        self.blocked.discard(sid)
        if local:
            self.codec.reset_stream(sid)
            self._written()
            self._maybe_close()
            return
        self._ended(s, responded=bool(s.stream_info.response_code))

    def _ended(self, s: ActiveStream, responded: bool) -> None:
        m = self.m
        if self.premature.stream_ended(time.monotonic() - s.start, responded):
            self.stats.downstream_rq_too_many_premature_resets.value += 1
            m.closing = True
            m.close(ConnectionCloseType.NO_FLUSH)
            return
        self._maybe_close()

    def _maybe_close(self) -> None:
        m = self.m
        if self.codec.goaway_sent_last is not None and not m.streams and not m.conn.closed:
            m.closing = True
            m.close(ConnectionCloseType.FLUSH_WRITE)

    # -- drain ---------------------------------------------------------------------------------

    def drain(self) -> None:
        """GOAWAY(2^31-1) now, the final GOAWAY after ``drain_timeout``, then close once the
        last stream has ended (Envoy's drain sequence)."""
        if self.draining:
            return
        self.draining = True
        m = self.m
        if self.context.draining:
            if not m.streams:  # the manager closes this idle connection now: the last word
                self.codec.go_away()
                return
            # A busy connection (an idle one is counted by the manager): Envoy counts the
            # drain close as the next response starts.
            self.stats.downstream_cx_drain_close.value += 1
        self.codec.shutdown_notice()
        self._written()
        self.final_goaway_timer = m.loop.call_later(m.config.drain_timeout or 0.001,
                                                    self._final_goaway)

    def _final_goaway(self) -> None:
        self.final_goaway_timer = None
        if self.conn.closed:
            return
        self.codec.go_away()
        self._written()
        self._maybe_close()

    def on_event(self, e: Any) -> None:
        pass  # the manager has nothing HTTP/2-specific to hand back

    def _ping(self, opaque: bytes) -> None:
        self.codec.send_ping(opaque)
        self._written()

    def _keepalive_expired(self) -> None:
        """No answer to a PING in time (Envoy: close at once, ``http2.keepalive_timeout``)."""
        self.codec.stats.keepalive_timeout.value += 1
        m = self.m
        m.closing = True
        m.close(ConnectionCloseType.NO_FLUSH)

    def on_connection_closed(self) -> None:
        if self.keepalive is not None:
            self.keepalive.close()
        self.stats.downstream_cx_http2_active.dec()
        if self.final_goaway_timer is not None:
            self.final_goaway_timer.cancel()
            self.final_goaway_timer = None


class AutoDetect:
    """``codec_type: AUTO`` before the first bytes: they say HTTP/2 (the client preface, Envoy's
    12-byte ``PRI * HTTP/2`` check) or HTTP/1.1, and the matching half takes over. As in Envoy,
    neither ``downstream_cx_http1_total`` nor ``_http2_total`` counts a connection that closes
    before saying anything."""

    multiplexed = False
    rq_total: Any = None

    def __init__(self, manager: ConnectionManager) -> None:
        self.m = manager
        self.held = b""

    def on_data(self, data: bytes, end_stream: bool) -> None:
        from envoi_http.codec.h2_codec import detect_preface
        from envoi_http.hcm.http1 import Http1Connection

        data = self.held + data
        verdict = detect_preface(data)
        if verdict is None and not end_stream:
            self.held = data  # fewer than 12 bytes, all of them the preface's
            return
        m = self.m
        m.proto = Http2Connection(m) if verdict else Http1Connection(m)
        m.proto.on_data(data, end_stream)
        if m.drain_close and not m.conn.closed:
            m.proto.drain()  # the listener began draining before the protocol was known

    # Nothing below can happen before a protocol is chosen (no stream exists yet).

    def write_head(self, s: ActiveStream, headers: HeaderMap, data: bytes | None,
                   end: bool) -> None:
        pass

    def write_data(self, s: ActiveStream, data: bytes, end: bool) -> None:
        pass

    def write_trailers(self, s: ActiveStream, trailers: HeaderMap) -> None:
        pass

    def write_informational(self, s: ActiveStream, headers: HeaderMap) -> None:
        pass

    def stream_done(self, s: ActiveStream) -> None:
        pass

    def stream_reset(self, s: ActiveStream, local: bool) -> None:
        pass

    def read_disable(self, s: ActiveStream, disable: bool) -> None:
        pass

    def acknowledge(self, s: ActiveStream, nbytes: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def cork(self) -> bool:
        return False

    def uncork(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def on_event(self, e: Any) -> None:
        pass

    def on_connection_closed(self) -> None:
        pass


def auto_protocol(manager: ConnectionManager) -> Http2Connection | AutoDetect:
    """``codec_type: AUTO``: HTTP/2 when TLS negotiated ``h2`` by ALPN, else the first bytes
    decide (``AutoDetect``)."""
    if manager.conn.next_protocol == "h2":
        return Http2Connection(manager)
    return AutoDetect(manager)
