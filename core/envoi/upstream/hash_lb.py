"""Consistent-hash load balancers: RING_HASH (Ketama-style ring) and MAGLEV (lookup table).

Both hash the request's ``hash_policy`` key (see :class:`envoi.upstream.lb.LoadBalancerContext`)
and map it to a host so that adding or removing one of N hosts moves only about 1/N of the keys.
As in Envoy, ring entries and Maglev permutations come from xxHash64 of the host's address
(``ip:port``, or its hostname with ``use_hostname_for_hashing``), a request without a hash gets
a random one, and the priority level is chosen by ``hash % 100``.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from typing import Any

import xxhash

from envoi.upstream.host import Host
from envoi.upstream.lb import LoadBalancer, Picker

_CACHE = 4  # tables kept per balancer, so a host flapping in and out costs no rebuild


def xx64(data: bytes, seed: int = 0) -> int:
    return int(xxhash.xxh64_intdigest(data, seed))


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


class _HashLb(LoadBalancer):
    _tables: OrderedDict[Any, Picker]

    def _host_key(self, h: Host) -> bytes:
        if self.params.use_hostname_for_hashing and h.hostname:
            return h.hostname.encode()
        return h.address_string.encode()

    def _make_picker(self, hosts: list[Host]) -> Picker | None:
        tables: OrderedDict[Any, Picker] = self.__dict__.setdefault("_tables", OrderedDict())
        key = tuple((id(h), h.weight) for h in hosts)
        p = tables.get(key)
        if p is None:
            p = tables[key] = self._build(hosts)
            while len(tables) > _CACHE:
                tables.popitem(last=False)
        else:
            tables.move_to_end(key)
        return p

    def _build(self, hosts: list[Host]) -> Picker:
        raise NotImplementedError

    def choose_host(self, context: Any = None) -> Host | None:
        key = getattr(context, "hash_key", None) if context is not None else None
        if key is None:
            key = self.rng.getrandbits(64)
        fast = self._fast
        if fast is not None:
            return fast(key)
        return self._select(key, key % 100)


class RingHash(_HashLb):
    """A ring of ``minimum_ring_size``..``maximum_ring_size`` points, each host owning points in
    proportion to its weight; a key goes to the first point at or after its hash."""

    def _build(self, hosts: list[Host]) -> Picker:
        params = self.params
        total = sum(max(1, h.weight) for h in hosts)
        weights = [(h, max(1, h.weight) / total) for h in hosts]
        min_w = min(w for _, w in weights)
        scale = min(math.ceil(min_w * params.ring_min) / min_w, float(params.ring_max))
        ring: list[tuple[int, int]] = []
        current = 0.0
        target = 0.0
        for idx, (h, w) in enumerate(weights):
            base = self._host_key(h) + b"_"
            target += scale * w
            i = 0
            while current < target:
                ring.append((xx64(base + str(i).encode()), idx))
                i += 1
                current += 1
        ring.sort()
        points = [p for p, _ in ring]
        owners = [hosts[i] for _, i in ring]
        size = len(points)

        def pick(key: int | None) -> Host:
            i = bisect.bisect_left(points, key or 0)
            return owners[i if i < size else 0]

        return pick


class _MaglevEntry:
    __slots__ = ("host", "next", "offset", "skip", "target", "weight")

    def __init__(self, key: bytes, host: Host, weight: float, m: int) -> None:
        self.host = host
        self.offset = xx64(key, 0) % m
        self.skip = xx64(key, 1) % (m - 1) + 1
        self.weight = weight
        self.target = 0.0
        self.next = 0


class Maglev(_HashLb):
    """Maglev's lookup table (prime size, 65537 by default): each host fills slots along its own
    permutation, in turns proportional to its weight; a key goes to ``table[hash % size]``."""

    def _build(self, hosts: list[Host]) -> Picker:
        m = self.params.maglev_table_size
        total = sum(max(1, h.weight) for h in hosts)
        entries = [_MaglevEntry(self._host_key(h), h, max(1, h.weight) / total, m)
                   for h in hosts]
        max_w = max(e.weight for e in entries)
        table: list[Host | None] = [None] * m
        filled = 0
        iteration = 0
        while filled < m:
            for e in entries:
                if filled >= m:
                    break
                # A host of the largest weight takes a slot every round; one of a third of it
                # every third round.
                if iteration * e.weight < e.target:
                    continue
                e.target += max_w
                offset, skip, nxt = e.offset, e.skip, e.next
                c = (offset + skip * nxt) % m
                while table[c] is not None:
                    nxt += 1
                    c = (offset + skip * nxt) % m
                table[c] = e.host
                e.next = nxt + 1
                filled += 1
            iteration += 1
        full: list[Host] = table  # type: ignore[assignment]

        def pick(key: int | None) -> Host:
            return full[(key or 0) % m]

        return pick
