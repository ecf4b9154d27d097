"""The ``envoy.filters.network.mongo_proxy`` filter: a sniffer on both directions of a connection.

Bytes always pass unchanged; the only time the filter holds them is the configured fault delay.
Client -> server bytes arrive in ``on_data``, server -> client bytes in ``on_write``; each
direction has its own :class:`~envoi_mongo.codec.Decoder`. Requests that expect a reply are kept
by request id until the reply whose ``responseTo`` names them arrives; the reply then charges
the ``reply_*`` histograms. An exhaust reply (OP_MSG with moreToCome) keeps its request open,
now keyed by the reply's own id, which is what the server's next reply answers.

Any decoding error counts ``decoding_error`` and turns sniffing off for the connection, in both
directions, as in Envoy; the traffic keeps flowing.

Envoy's runtime keys are read from ``server.runtime`` where Envoy reads them, so
``/runtime_modify`` acts on live connections (one dict lookup per decision):

* ``mongo.proxy_enabled`` (100): on every read and write that reaches a sniffing filter; when it
  is off, the bytes buffered for that direction are dropped undecoded (a frame cut in half by a
  flip is lost, as in Envoy) and nothing is counted or logged.
* ``mongo.connection_logging_enabled`` (100): once, when the connection's filter is created; off
  means that connection never writes to the access log.
* ``mongo.logging_enabled`` (100): for each message about to be logged.
* ``mongo.drain_close_enabled`` (100): when the server drains and a reply leaves no request in
  flight.
* ``mongo.fault.fixed_delay.percent`` (default: the config's ``delay.percentage``) and
  ``mongo.fault.fixed_delay.duration_ms`` (default: ``delay.fixed_delay``): for each client
  message, when ``delay`` is configured and no delay is running; a duration <= 0 injects none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from envoi.context import Runtime as RuntimeApi
from envoi.network.filter import ConnectionCloseType, ConnectionEvent, Filter, FilterStatus
from envoi.runtime import Runtime
from envoi.stats import Store
from envoi.tap import TapPoint

from envoi_mongo import messages as m
from envoi_mongo.access_log import AccessLog
from envoi_mongo.classify import (
    MULTI_GET,
    SCATTER_GET,
    classify_msg,
    classify_query,
    reply_doc_count,
)
from envoi_mongo.codec import Decoder
from envoi_mongo.config import MongoProxyConfig
from envoi_mongo.stats import CommandStats, DynamicStats, ExtensionStats, MongoStats, QueryStats

log = logging.getLogger("envoi.mongo")

_OPCODE_NAMES: dict[type, str] = {
    m.Msg: "OP_MSG", m.Query: "OP_QUERY", m.GetMore: "OP_GET_MORE", m.Insert: "OP_INSERT",
    m.KillCursors: "OP_KILL_CURSORS", m.Command: "OP_COMMAND", m.Update: "OP_UPDATE",
    m.Delete: "OP_DELETE", m.Reply: "OP_REPLY", m.CommandReply: "OP_COMMANDREPLY",
}

CONTINUE = FilterStatus.CONTINUE
STOP = FilterStatus.STOP_ITERATION
METADATA_NAMESPACE = "envoy.filters.network.mongo_proxy"

# Envoy's runtime keys (MongoRuntimeConfig).
PROXY_ENABLED = "mongo.proxy_enabled"
LOGGING_ENABLED = "mongo.logging_enabled"
CONNECTION_LOGGING_ENABLED = "mongo.connection_logging_enabled"
DRAIN_CLOSE_ENABLED = "mongo.drain_close_enabled"
FIXED_DELAY_PERCENT = "mongo.fault.fixed_delay.percent"
FIXED_DELAY_DURATION_MS = "mongo.fault.fixed_delay.duration_ms"


class _Server(Protocol):
    """What the filter reads of the server (a part of ``envoi.context.ServerContext``)."""

    @property
    def draining(self) -> bool: ...
    @property
    def runtime(self) -> RuntimeApi: ...


class _Standalone:
    """The server of a filter made without one: never draining, a runtime with no layers."""

    draining = False

    def __init__(self) -> None:
        self.runtime = Runtime(None, Store().root)


class MongoProxyShared:
    """Everything one filter config shares across its connections: config, stats, access log."""

    def __init__(self, config: MongoProxyConfig, scope: Any, server: _Server | None = None,
                 access_log: AccessLog | None = None, tap: TapPoint | None = None) -> None:
        self.config = config
        #: The live tap (``/tap``): commands with their collection and duration, when someone
        #: listens (``tap.active``); a never-active point when the filter was built without one.
        self.tap = tap if tap is not None else _NO_TAP
        mongo_scope = scope.scope(f"mongo.{config.stat_prefix}")
        self.stats = MongoStats(mongo_scope)
        self.ext = ExtensionStats(mongo_scope)
        self.dynamic = DynamicStats(mongo_scope, config.commands)
        self.access_log = access_log
        #: The factory context (``draining``, ``runtime``), read at message time.
        self.server: _Server = server if server is not None else _Standalone()

    @property
    def draining(self) -> bool:
        return self.server.draining


class _NoTap:
    active = False


_NO_TAP: Any = _NoTap()


class _Active:
    """A request waiting for its reply."""

    __slots__ = ("awaitable", "callsite", "cmd", "coll", "start", "tapped")

    def __init__(self, cmd: CommandStats | None, coll: QueryStats | None,
                 callsite: QueryStats | None, awaitable: bool) -> None:
        self.cmd = cmd
        self.coll = coll
        self.callsite = callsite
        self.awaitable = awaitable
        self.start = time.monotonic()
        #: What the tap says about the request, kept for its reply (only while tapped).
        self.tapped: dict[str, Any] | None = None


class MongoProxyFilter(Filter):
    def __init__(self, shared: MongoProxyShared) -> None:
        self._shared = shared
        self._stats = shared.stats
        max_size = shared.config.max_message_size
        self._down = Decoder(max_size)  # client -> server
        self._up = Decoder(max_size)  # server -> client
        self._sniffing = True
        self._active: dict[int, _Active] = {}
        self._delay: asyncio.TimerHandle | None = None
        self._drain_close: asyncio.Handle | None = None
        self._client_ended = False  # the client's FIN arrived
        self._upstream_ended = False  # our FIN to the client was written
        self._last_fin_ours = False  # ... and it came after the client's
        self._tapped: dict[str, Any] | None = None  # the request being classified, tapped
        # Envoy reads mongo.connection_logging_enabled once, when the connection's filter is made.
        al = shared.access_log
        if al is not None and not shared.server.runtime.feature_enabled(
                CONNECTION_LOGGING_ENABLED, 100):
            al = None
        self._access_log = al

    # -- Filter ----------------------------------------------------------------------------

    def on_new_connection(self) -> FilterStatus:
        add_cb = getattr(self.read_callbacks.connection, "add_connection_callbacks", None)
        if add_cb is not None:
            add_cb(self._on_event)
        return CONTINUE

    def on_data(self, data: bytes, end_stream: bool) -> FilterStatus:
        if self._sniffing and not self._shared.server.runtime.feature_enabled(PROXY_ENABLED, 100):
            self._down = self._drop(self._down)
        elif self._sniffing:
            if data:
                if self._shared.config.emit_dynamic_metadata:
                    self._metadata().clear()
                self._decode(self._down, data, True)
            if end_stream:
                self._check_truncated(self._down, "client")
        if end_stream:
            self._client_ended = True
            self._last_fin_ours = False
        return STOP if self._delay is not None else CONTINUE

    def on_write(self, data: bytes, end_stream: bool) -> FilterStatus:
        if end_stream:
            self._upstream_ended = True
            self._last_fin_ours = self._client_ended
        if self._sniffing and not self._shared.server.runtime.feature_enabled(PROXY_ENABLED, 100):
            self._up = self._drop(self._up)
        elif self._sniffing:
            if data:
                self._decode(self._up, data, False)
            if end_stream:
                self._check_truncated(self._up, "server")
        return CONTINUE

    # -- decoding --------------------------------------------------------------------------

    def _decode(self, decoder: Decoder, data: bytes, from_client: bool) -> None:
        msgs = decoder.feed(data)
        try:
            handle = self._on_request if from_client else self._on_reply
            for msg in msgs:
                handle(msg)
        except Exception as e:  # a sniffer must never break the traffic
            self._decoding_error(str(e) or type(e).__name__)
            return
        if decoder.error is not None:
            self._decoding_error(str(decoder.error))

    def _drop(self, decoder: Decoder) -> Decoder:
        """``mongo.proxy_enabled`` is off: Envoy drains its buffer for this direction undecoded,
        a partial frame included; decoding restarts with the next bytes that arrive."""
        if decoder.mid_frame:
            return Decoder(self._shared.config.max_message_size)
        return decoder

    def _check_truncated(self, decoder: Decoder, side: str) -> None:
        """A stream that ends inside a frame: the frame is truncated (Envoy waits forever)."""
        if self._sniffing and decoder.mid_frame:
            self._decoding_error(f"{side} stream ended inside a frame")

    def _decoding_error(self, why: str) -> None:
        log.info("mongo decoding error: %s", why)
        self._stats.decoding_error.value += 1
        self._sniffing = False
        # Free the buffers now: this connection is never decoded again.
        self._down = self._up = Decoder(0)

    def _log(self, msg: m.Message) -> None:
        al = self._access_log
        if al is not None and self._shared.server.runtime.feature_enabled(LOGGING_ENABLED, 100):
            al.log(msg, self.read_callbacks.upstream_host)

    def _on_request(self, msg: m.Message) -> None:
        if isinstance(msg, m.Compressed):
            self._shared.ext.inc("op_compressed")
            if msg.inner is None:
                self._shared.ext.inc("op_compressed_not_decompressed")
                self._try_inject_delay()
                self._log(msg)
                return
            self._log(msg)
            self._request(msg.inner, logged=True)
            return
        self._request(msg, logged=False)

    def _request(self, msg: m.Message, logged: bool) -> None:
        stats = self._stats
        self._try_inject_delay()
        if not logged:
            self._log(msg)
        if self._shared.tap.active:
            self._tap_request(msg)
        if isinstance(msg, m.Msg):
            self._request_msg(msg)
        elif isinstance(msg, m.Query):
            self._request_query(msg)
        elif isinstance(msg, m.GetMore):
            stats.op_get_more.value += 1
        elif isinstance(msg, m.Insert):
            stats.op_insert.value += 1
            self._add_metadata("insert", msg.collection)
        elif isinstance(msg, m.KillCursors):
            stats.op_kill_cursors.value += 1
        elif isinstance(msg, m.Command):
            stats.op_command.value += 1
        elif isinstance(msg, m.Update):
            self._shared.ext.inc("op_update")
        elif isinstance(msg, m.Delete):
            self._shared.ext.inc("op_delete")
        else:
            # A reply opcode from the client: not a request we can pair.
            self._on_reply(msg)
        tapped, self._tapped = self._tapped, None
        if tapped is not None and self._shared.tap.active:
            # No reply will answer it (fire-and-forget, a legacy write, killCursors...).
            self._publish("mongo.command", tapped)

    # -- the live tap ----------------------------------------------------------------------

    def _tap_request(self, msg: m.Message) -> None:
        """The tap's view of a request: its opcode, command, database and collection."""
        if isinstance(msg, m.Reply | m.CommandReply):
            return  # a reply opcode from the client pairs with nothing
        info: dict[str, Any] = {"request_id": msg.request_id,
                                "op": _OPCODE_NAMES.get(type(msg), type(msg).__name__)}
        if isinstance(msg, m.Msg) and msg.body is not None:
            mi = classify_msg(msg.body)
            info["command"] = mi.command
            info["database"] = mi.database
            target = msg.body.get(next(iter(msg.body), ""))
            if mi.query is not None:
                info["collection"] = mi.query.collection
            elif isinstance(target, str):
                info["collection"] = target
            if msg.more_to_come:
                info["more_to_come"] = True
        elif isinstance(msg, m.Query):
            qi = classify_query(msg)
            db, _, coll = msg.collection.partition(".")
            info["database"] = db
            if qi.command:
                info["command"] = qi.command
            else:
                info["command"] = "query"
                info["collection"] = coll
        elif isinstance(msg, m.Command):
            info["command"] = msg.command_name
            info["database"] = msg.database
        elif isinstance(msg, m.Insert | m.Update | m.Delete | m.GetMore):
            db, _, coll = msg.collection.partition(".")
            info["command"] = type(msg).__name__.lower().replace("getmore", "getMore")
            info["database"] = db
            info["collection"] = coll
        elif isinstance(msg, m.KillCursors):
            info["command"] = "killCursors"
        self._tapped = info

    def _publish(self, event_type: str, fields: dict[str, Any]) -> None:
        self._shared.tap.publish(event_type, self.read_callbacks.connection.id, fields)

    def _request_query(self, q: m.Query) -> None:
        stats = self._stats
        stats.op_query.value += 1
        self._add_metadata("query", q.collection)
        flags = q.flags
        if flags & m.QUERY_TAILABLE_CURSOR:
            stats.op_query_tailable_cursor.value += 1
        if flags & m.QUERY_NO_CURSOR_TIMEOUT:
            stats.op_query_no_cursor_timeout.value += 1
        if flags & m.QUERY_AWAIT_DATA:
            stats.op_query_await_data.value += 1
        if flags & m.QUERY_EXHAUST:
            stats.op_query_exhaust.value += 1
        info = classify_query(q)
        dyn = self._shared.dynamic
        if info.command:
            cmd = dyn.command(info.command)
            cmd.total.value += 1
            self._track(q.request_id, _Active(cmd, None, None, False))
            return
        coll, site = self._charge_query(info.collection, info.callsite, info.type)
        if info.max_time < 1:
            stats.op_query_no_max_time.value += 1
        if info.type == SCATTER_GET:
            stats.op_query_scatter_get.value += 1
        elif info.type == MULTI_GET:
            stats.op_query_multi_get.value += 1
        self._track(q.request_id, _Active(None, coll, site, False))

    def _charge_query(self, collection: str, callsite: str,
                      qtype: int) -> tuple[QueryStats, QueryStats | None]:
        dyn = self._shared.dynamic
        coll = dyn.collection(collection)
        site = dyn.callsite(collection, callsite) if callsite else None
        for st in (coll, site):
            if st is None:
                continue
            st.total.value += 1
            if qtype == SCATTER_GET:
                st.scatter_get()
            elif qtype == MULTI_GET:
                st.multi_get()
        return coll, site

    def _request_msg(self, msg: m.Msg) -> None:
        ext = self._shared.ext
        ext.inc("op_msg")
        if msg.more_to_come:
            ext.inc("op_msg_more_to_come")
        if msg.exhaust_allowed:
            ext.inc("op_msg_exhaust_allowed")
        assert msg.body is not None
        info = classify_msg(msg.body)
        cmd = self._shared.dynamic.command(info.command)
        cmd.total.value += 1
        coll = site = None
        if info.query is not None:
            q = info.query
            coll, site = self._charge_query(q.collection, q.callsite, q.type)
        if not msg.more_to_come:  # moreToCome from a client: fire-and-forget, no reply comes
            self._track(msg.request_id, _Active(cmd, coll, site, info.awaitable))

    def _track(self, request_id: int, active: _Active) -> None:
        if self._tapped is not None and self._tapped.get("request_id") == request_id:
            active.tapped, self._tapped = self._tapped, None
        old = self._active.pop(request_id, None)
        if old is not None and not old.awaitable:
            self._stats.op_query_active.dec()  # a reused id: the old request is abandoned
        if not active.awaitable:
            self._stats.op_query_active.inc()
        self._active[request_id] = active

    # -- replies ---------------------------------------------------------------------------

    def _on_reply(self, msg: m.Message) -> None:
        if isinstance(msg, m.Compressed):
            self._shared.ext.inc("op_compressed")
            self._log(msg)
            if msg.inner is None:
                self._shared.ext.inc("op_compressed_not_decompressed")
                return
            self._reply(msg.inner)
            return
        self._log(msg)
        self._reply(msg)

    def _reply(self, msg: m.Message) -> None:
        stats = self._stats
        if isinstance(msg, m.Reply):
            stats.op_reply.value += 1
            if msg.cursor_id != 0:
                stats.op_reply_valid_cursor.value += 1
            if msg.flags & m.REPLY_CURSOR_NOT_FOUND:
                stats.op_reply_cursor_not_found.value += 1
            if msg.flags & m.REPLY_QUERY_FAILURE:
                stats.op_reply_query_failure.value += 1
            self._complete(msg.response_to, len(msg.doc_sizes), sum(msg.doc_sizes), None)
        elif isinstance(msg, m.Msg):
            ext = self._shared.ext
            ext.inc("op_msg_reply")
            more = msg.more_to_come
            if more:
                ext.inc("op_msg_more_to_come")
            assert msg.body is not None
            self._complete(msg.response_to, reply_doc_count(msg.body), msg.documents_size,
                           msg.request_id if more else None)
        elif isinstance(msg, m.CommandReply):
            stats.op_command_reply.value += 1
        else:
            # A request opcode coming from the server: count it like a request would be, but
            # it pairs with nothing.
            self._request(msg, logged=True)
            return
        if (not self._active and self._shared.draining
                and self._shared.server.runtime.feature_enabled(DRAIN_CLOSE_ENABLED, 100)):
            self._start_drain_close()

    def _complete(self, response_to: int, num_docs: int, size: int,
                  next_id: int | None) -> None:
        active = self._active.pop(response_to, None)
        if active is None:
            return
        # A streaming hello's wait is a long poll, not latency: its time is not recorded.
        elapsed = None if active.awaitable else int((time.monotonic() - active.start) * 1000)
        for st in (active.cmd, active.coll, active.callsite):
            if st is not None:
                st.record(num_docs, size, elapsed)
        if active.tapped is not None and self._shared.tap.active:
            self._publish("mongo.command", {
                **active.tapped, "duration_ms": round((time.monotonic() - active.start) * 1000, 3),
                "reply_docs": num_docs, "reply_bytes": size})
        if next_id is not None:
            # Exhaust: the server's next reply answers this reply's id; the request stays open.
            active.start = time.monotonic()
            self._active[next_id] = active
        elif not active.awaitable:
            self._stats.op_query_active.dec()

    # -- fault delay, drain, close ---------------------------------------------------------

    def _try_inject_delay(self) -> None:
        delay = self._shared.config.delay
        if delay is None or self._delay is not None:
            return
        runtime = self._shared.server.runtime
        # Envoy: featureEnabled(percent key, the config's FractionalPercent). A number in the
        # runtime is a percentage (0-100, above 100 always); a FractionalPercent map is taken
        # as is; anything else (absent, a bool, a string) leaves the config's fraction.
        override = runtime.get(FIXED_DELAY_PERCENT)
        if override is None or isinstance(override, bool | str):
            if random.randrange(delay.denominator) >= delay.numerator:
                return
        elif not runtime.feature_enabled(FIXED_DELAY_PERCENT, 0):
            return
        duration_ms = runtime.get_integer(FIXED_DELAY_DURATION_MS, delay.duration_ms)
        if duration_ms <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test driving the filter directly): nothing to wait on
        self._delay = loop.call_later(duration_ms / 1000, self._delay_done)
        self._stats.delays_injected.value += 1

    def _delay_done(self) -> None:
        self._delay = None
        self.read_callbacks.continue_reading()

    def _start_drain_close(self) -> None:
        if self._drain_close is not None:
            return
        self._stats.cx_drain_close.value += 1
        # We are on the write path: close on the next loop turn, after this reply is written.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._drain_close = loop.call_soon(
            self.read_callbacks.connection.close, ConnectionCloseType.FLUSH_WRITE)

    def _on_event(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.CONNECTED:
            return
        # Closed (or reset) in the middle of a frame, either way.
        self._check_truncated(self._down, "client")
        self._check_truncated(self._up, "server")
        for h in (self._delay, self._drain_close):
            if h is not None:
                h.cancel()
        self._delay = self._drain_close = None
        if self._shared.tap.active:
            for active in self._active.values():
                if active.tapped is not None:
                    self._publish("mongo.command", {**active.tapped, "unanswered": True})
        # Only requests a client is really waiting on count; a parked streaming hello is normal.
        waiting = sum(1 for a in self._active.values() if not a.awaitable)
        if waiting:
            # Envoy names a half-closed connection's end by who sent the last FIN: when the
            # client's FIN came first and ours last, Envoy counts a local close (seen in the
            # oracle), while envoi's connection reports the transport going away as remote.
            ours_last = self._client_ended and self._upstream_ended and self._last_fin_ours
            if event is ConnectionEvent.REMOTE_CLOSE and not ours_last:
                self._stats.cx_destroy_remote_with_active_rq.value += 1
            else:
                self._stats.cx_destroy_local_with_active_rq.value += 1
            self._stats.op_query_active.dec(waiting)
        self._active.clear()

    # -- dynamic metadata ------------------------------------------------------------------

    def _metadata(self) -> dict[str, list[str]]:
        info = self.read_callbacks.connection.stream_info
        fm: dict[str, dict[str, list[str]]] = info.extra.setdefault("filter_metadata", {})
        return fm.setdefault(METADATA_NAMESPACE, {})

    def _add_metadata(self, operation: str, resource: str) -> None:
        if self._shared.config.emit_dynamic_metadata:
            self._metadata().setdefault(resource, []).append(operation)
