"""The dynamo filter's stats, named exactly as Envoy's contrib filter names them, under
``http.<hcm stat_prefix>.dynamodb.``, and the bound on how many of them client text can make.

Every Envoy stat of this filter is made on first use (none is declared up front), so the names in
``/stats`` are those the traffic made, as in Envoy. Operation, table and partition names come from
the request or response; each kind is admitted into stat names through a :class:`NameBudget`
(distinct names per worker process, at most a runtime key's value), so a client sending random
table names cannot grow the stats store without bound. What was not admitted is counted
(``*_stats_dropped``) and charged to no per-name stat.
"""

from __future__ import annotations

import re
import weakref
from typing import Protocol

from envoi.stats import Counter, Histogram, Scope, Store

#: A table name DynamoDB accepts (3-255 of ``[A-Za-z0-9_.-]``), or a table ARN (accepted as
#: ``TableName`` since 2024). Anything else never becomes part of a stat name.
TABLE_NAME = re.compile(
    r"[A-Za-z0-9_.\-]{3,255}"
    r"|arn:aws[A-Za-z\-]*:dynamodb:[a-z0-9\-]+:[0-9]{12}:table/[A-Za-z0-9_.\-]{3,255}")
#: An operation name as AWS writes them (``PutItem``); another ``X-Amz-Target`` operation is
#: ``operation_missing``.
OPERATION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
#: The part of a partition id that goes into its stat name (its last 7 characters).
PARTITION_ID = re.compile(r"[A-Za-z0-9_\-]{1,7}")

#: The name a dropped operation or table gets inside the filter: it charges no stat.
DROPPED = "\0"

DEFAULT_MAX_TABLES = 1000
DEFAULT_MAX_OPERATIONS = 200
DEFAULT_MAX_PARTITIONS = 1000


class _Runtime(Protocol):
    def get_integer(self, key: str, default: int) -> int: ...


class NameBudget:
    """Which names of one kind have stats: a name seen before always; a new one while fewer than
    ``runtime[key]`` (else ``default``) names were admitted. The limit is read only when a new
    name arrives, so lowering it at run time stops new names and keeps the stats that exist."""

    __slots__ = ("default", "key", "known", "runtime")

    def __init__(self, runtime: _Runtime, key: str, default: int) -> None:
        self.runtime = runtime
        self.key = key
        self.default = default
        self.known: set[str] = set()

    def admit(self, name: str) -> bool:
        if name in self.known:
            return True
        if len(self.known) >= self.runtime.get_integer(self.key, self.default):
            return False
        self.known.add(name)
        return True


def status_group(status: int) -> str:
    """``2xx`` for 200; ``unknown`` below 100 and from 600 (Envoy's ``groupIndex``)."""
    index = status // 100
    return f"{index}xx" if 1 <= index <= 5 else "unknown"


_Entity = tuple[Counter, Counter, Counter, Histogram, Histogram, Histogram]


class DynamoStats:
    """The stats under one ``http.<prefix>.dynamodb.`` scope, shared by every dynamo filter
    config that names that scope (two connection managers with one ``stat_prefix``, a config
    replaced at run time): the name budgets bound the store, not one config. Get it with
    :meth:`for_scope`."""

    @classmethod
    def for_scope(cls, scope: Scope, runtime: _Runtime) -> DynamoStats:
        per_store = _shared.setdefault(scope.store, {})
        found = per_store.get(scope.prefix)
        if found is None or found.runtime is not runtime:
            found = per_store[scope.prefix] = cls(scope, runtime, found)
        return found

    def __init__(self, scope: Scope, runtime: _Runtime,
                 before: DynamoStats | None = None) -> None:
        self.scope = scope
        self.runtime = runtime
        self.tables = NameBudget(runtime, "dynamodb.max_tables", DEFAULT_MAX_TABLES)
        self.operations = NameBudget(runtime, "dynamodb.max_operations",
                                     DEFAULT_MAX_OPERATIONS)
        self.partitions = NameBudget(runtime, "dynamodb.max_partitions",
                                     DEFAULT_MAX_PARTITIONS)
        if before is not None:  # same store and scope: the names that have stats stay counted
            self.tables.known = before.tables.known
            self.operations.known = before.operations.known
            self.partitions.known = before.partitions.known
        self._entities: dict[tuple[str, str, int], _Entity] = {}
        self._counters: dict[str, Counter] = {}

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``http.<prefix>.dynamodb.<name>`` (made on first use)."""
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = self.scope.counter(name)
        c.value += n

    # -- admission of names from the traffic ---------------------------------------------

    def admit_operation(self, operation: str) -> str:
        """``operation`` when it may name stats; ``""`` when it is malformed (the caller counts
        ``operation_missing``); :data:`DROPPED` past the budget (counted in
        ``operation_stats_dropped``)."""
        if operation in self.operations.known:
            return operation
        if not OPERATION_NAME.fullmatch(operation):
            return ""
        if self.operations.admit(operation):
            return operation
        self.inc("operation_stats_dropped")
        return DROPPED

    def admit_table(self, table: str) -> str:
        """``table`` when it may name stats, else :data:`DROPPED` (counted in
        ``table_stats_dropped``: not a DynamoDB table name or ARN, or past the budget)."""
        if table in self.tables.known:
            return table
        if TABLE_NAME.fullmatch(table) and self.tables.admit(table):
            return table
        self.inc("table_stats_dropped")
        return DROPPED

    # -- what the filter charges ---------------------------------------------------------

    def charge(self, kind: str, name: str, status: int, ms: int) -> None:
        """``<kind>.<name>.upstream_rq_total{,_<group>,_<status>}`` +1 and the three
        ``upstream_rq_time*`` histograms get ``ms`` (Envoy's ``chargeStatsPerEntity``)."""
        key = (kind, name, status)
        e = self._entities.get(key)
        if e is None:
            s = self.scope.scope(f"{kind}.{name}")
            group = status_group(status)
            e = self._entities[key] = (
                s.counter("upstream_rq_total"), s.counter(f"upstream_rq_total_{group}"),
                s.counter(f"upstream_rq_total_{status}"), s.histogram("upstream_rq_time"),
                s.histogram(f"upstream_rq_time_{group}"), s.histogram(f"upstream_rq_time_{status}"))
            for h in e[3:]:
                h.unit = "milliseconds"
        e[0].value += 1
        e[1].value += 1
        e[2].value += 1
        e[3].record(ms)
        e[4].record(ms)
        e[5].record(ms)

    def partition_capacity(self, table: str, operation: str, partition_id: str,
                           units: int) -> None:
        """``table.<table>.capacity.<op>.__partition_id=<last 7 of id>`` += ``units``."""
        tail = partition_id[-7:]
        if not PARTITION_ID.fullmatch(tail) or \
                not self.partitions.admit(f"{table}.{operation}.{tail}"):
            self.inc("partition_stats_dropped")
            return
        self.inc(f"table.{table}.capacity.{operation}.__partition_id={tail}", units)


_shared: weakref.WeakKeyDictionary[Store, dict[str, DynamoStats]] = weakref.WeakKeyDictionary()
