"""mongo_proxy stats under ``mongo.<stat_prefix>.``, with Envoy's names.

The fixed set (:class:`MongoStats`) is created eagerly so it shows at zero, as Envoy's does. The
per-command, per-collection and per-callsite stats are created on first use, again as in Envoy
(a collection that only saw primary-key gets has no ``scatter_get`` counter). Their objects are
cached per name in the config's :class:`DynamicStats`, shared by all connections, so the hot path
does one dict lookup per request and never builds a stat name.

envoi's own additions (``op_msg``, ``op_compressed``...) are also created on first use: a run
with only legacy opcodes therefore has exactly Envoy's stat names.
"""

from __future__ import annotations

from envoi.stats import Counter, Gauge, Histogram, Scope, StatsGroup


class MongoStats(StatsGroup):
    """Envoy's ALL_MONGO_PROXY_STATS."""

    decoding_error: Counter
    delays_injected: Counter
    op_command: Counter
    op_command_reply: Counter
    op_get_more: Counter
    op_insert: Counter
    op_kill_cursors: Counter
    op_query: Counter
    op_query_tailable_cursor: Counter
    op_query_no_cursor_timeout: Counter
    op_query_await_data: Counter
    op_query_exhaust: Counter
    op_query_no_max_time: Counter
    op_query_scatter_get: Counter
    op_query_multi_get: Counter
    op_reply: Counter
    op_reply_cursor_not_found: Counter
    op_reply_query_failure: Counter
    op_reply_valid_cursor: Counter
    cx_destroy_local_with_active_rq: Counter
    cx_destroy_remote_with_active_rq: Counter
    cx_drain_close: Counter
    op_query_active: Gauge


#: envoi additions (documented in the plugin README), created when first incremented.
EXTENSION_COUNTERS = (
    "op_msg",  # OP_MSG requests (client -> server)
    "op_msg_reply",  # OP_MSG replies (server -> client)
    "op_msg_more_to_come",  # OP_MSG with the moreToCome flag, either direction
    "op_msg_exhaust_allowed",  # OP_MSG requests with the exhaustAllowed flag
    "op_compressed",  # OP_COMPRESSED frames, either direction
    "op_compressed_not_decompressed",  # ... whose compressor is not available here
    "op_update",  # legacy OP_UPDATE
    "op_delete",  # legacy OP_DELETE
)


class ExtensionStats:
    """envoi's extra counters, each made in the scope when first used."""

    __slots__ = ("_counters", "_scope")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._counters: dict[str, Counter] = {}

    def inc(self, name: str) -> None:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = self._scope.counter(name)
        c.value += 1


class ReplyHistograms:
    """``reply_num_docs``, ``reply_size`` and ``reply_time_ms`` under one prefix, made on the
    first reply (Envoy creates histograms when first recorded)."""

    __slots__ = ("_hist", "_scope")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._hist: tuple[Histogram, Histogram, Histogram] | None = None

    def record(self, num_docs: int, size: int, time_ms: int | None) -> None:
        h = self._hist
        if h is None:
            s = self._scope
            h = self._hist = (
                s.histogram("reply_num_docs"), s.histogram("reply_size"),
                s.histogram("reply_time_ms"),
            )
            h[1].unit = "bytes"
            h[2].unit = "milliseconds"
        h[0].record(num_docs)
        h[1].record(size)
        if time_ms is not None:
            h[2].record(time_ms)


class CommandStats(ReplyHistograms):
    """``cmd.<name>.``: ``total`` and the reply histograms."""

    __slots__ = ("total",)

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.total = scope.counter("total")


class QueryStats(ReplyHistograms):
    """``collection.<c>.query.`` or ``collection.<c>.callsite.<s>.query.``."""

    __slots__ = ("_multi", "_scatter", "total")

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.total = scope.counter("total")
        self._scatter: Counter | None = None
        self._multi: Counter | None = None

    def scatter_get(self) -> None:
        if self._scatter is None:
            self._scatter = self._scope.counter("scatter_get")
        self._scatter.value += 1

    def multi_get(self) -> None:
        if self._multi is None:
            self._multi = self._scope.counter("multi_get")
        self._multi.value += 1


class DynamicStats:
    """The per-name stats of one filter config, shared by all its connections."""

    UNKNOWN_COMMAND = "unknown_command"

    def __init__(self, scope: Scope, commands: frozenset[str]) -> None:
        self._scope = scope
        self._commands = commands
        self._cmd: dict[str, CommandStats] = {}
        self._coll: dict[str, QueryStats] = {}
        self._callsite: dict[tuple[str, str], QueryStats] = {}

    def command(self, name: str) -> CommandStats:
        """``cmd.<name>`` when ``name`` is configured, else ``cmd.unknown_command``, which keeps
        the number of stats bounded whatever commands clients send."""
        st = self._cmd.get(name)
        if st is None:
            key = name if name in self._commands else self.UNKNOWN_COMMAND
            st = self._cmd.get(key)
            if st is None:
                st = CommandStats(self._scope.scope(f"cmd.{key}"))
                self._cmd[key] = st
            if len(self._cmd) < 4096:  # remember the alias, within bounds
                self._cmd[name] = st
        return st

    def collection(self, coll: str) -> QueryStats:
        st = self._coll.get(coll)
        if st is None:
            st = self._coll[coll] = QueryStats(self._scope.scope(f"collection.{coll}.query"))
        return st

    def callsite(self, coll: str, site: str) -> QueryStats:
        key = (coll, site)
        st = self._callsite.get(key)
        if st is None:
            st = QueryStats(self._scope.scope(f"collection.{coll}.callsite.{site}.query"))
            self._callsite[key] = st
        return st
