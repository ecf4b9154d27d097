"""HeaderMap: an HTTP header block as filters see it (Envoy's ``Http::HeaderMap``).

Ordered, case-insensitive, multi-valued. Regular headers live in one list of ``(name, value)``
byte pairs -- the very list the codec built, so nothing is copied on the way in. Names are kept
lower-case. The pseudo-headers (``:method``, ``:path``, ``:authority``, ``:scheme``, ``:status``)
are plain attributes, because every request reads them and an attribute is the cheapest lookup
Python has. For HTTP/1 the ``host`` header *is* ``:authority``: it lives in ``authority`` and the
upstream codec writes it back as ``host``.

The public methods take ``str`` or ``bytes`` and return ``str`` (latin-1, as HTTP header bytes
are); the ``*_bytes`` variants are for code on the hot path that already holds bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

Headers = list[tuple[bytes, bytes]]
_PSEUDO = {b":method": "method", b":path": "path", b":authority": "authority",
           b":scheme": "scheme", b"host": "authority"}


def _b(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode("latin-1")


def _name(s: str | bytes) -> bytes:
    return (s if isinstance(s, bytes) else s.encode("latin-1")).lower()


class HeaderMap:
    """Request or response headers, or trailers (then all pseudo-headers are empty)."""

    __slots__ = ("authority", "headers", "method", "path", "scheme", "status")

    def __init__(self, headers: Headers | None = None, *, method: bytes = b"",
                 path: bytes = b"", authority: bytes = b"", scheme: bytes = b"",
                 status: int = 0) -> None:
        self.headers: Headers = headers if headers is not None else []
        self.method = method
        self.path = path
        self.authority = authority
        self.scheme = scheme
        self.status = status

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str | bytes, str | bytes]]) -> HeaderMap:
        """Build from any pairs; pseudo-headers and ``host`` go to their attributes."""
        hm = cls()
        for k, v in pairs:
            hm.add(k, v)
        return hm

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, name: bytes) -> bytes | None:
        """The first value of a lower-case ``name``; ``None`` when absent."""
        if name[:1] == b":" or name == b"host":
            return self._pseudo(name)
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def _pseudo(self, name: bytes) -> bytes | None:
        if name == b":status":
            return str(self.status).encode() if self.status else None
        attr = _PSEUDO.get(name)
        if attr is None:
            return None
        v: bytes = getattr(self, attr)
        return v or None

    def get(self, name: str | bytes, default: str | None = None) -> str | None:
        v = self.get_bytes(_name(name))
        return default if v is None else v.decode("latin-1")

    def get_all(self, name: str | bytes) -> list[str]:
        n = _name(name)
        if n[:1] == b":" or n == b"host":
            v = self._pseudo(n)
            return [] if v is None else [v.decode("latin-1")]
        return [v.decode("latin-1") for k, v in self.headers if k == n]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        return self.get_bytes(_name(name)) is not None

    def __getitem__(self, name: str | bytes) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """All headers as ``str`` pairs, pseudo-headers first (as HTTP/2 sends them)."""
        for pname in (b":method", b":scheme", b":authority", b":path", b":status"):
            v = self._pseudo(pname)
            if v is not None:
                yield pname.decode(), v.decode("latin-1")
        for k, val in self.headers:
            yield k.decode("latin-1"), val.decode("latin-1")

    def items(self) -> list[tuple[str, str]]:
        return list(self)

    def __len__(self) -> int:
        return len(self.headers)

    @property
    def byte_size(self) -> int:
        """Envoy's header-map size: names plus values (pseudo-headers included)."""
        n = len(self.method) + len(self.path) + len(self.authority) + len(self.scheme)
        for k, v in self.headers:
            n += len(k) + len(v)
        return n

    def __repr__(self) -> str:
        return f"HeaderMap({self.items()!r})"

    # -- writing ---------------------------------------------------------------------------

    def _set_pseudo(self, name: bytes, value: bytes) -> bool:
        if name == b":status":
            self.status = int(value)
            return True
        attr = _PSEUDO.get(name)
        if attr is None:
            if name[:1] == b":":
                raise KeyError(f"unknown pseudo-header {name!r}")
            return False
        setattr(self, attr, value)
        return True

    def add(self, name: str | bytes, value: str | bytes) -> None:
        """Append a value (a second ``set-cookie`` and so on)."""
        # (_name and _b inline: filters call this on every request)
        n = name.encode("latin-1").lower() if name.__class__ is str else _name(name)
        v = value.encode("latin-1") if value.__class__ is str else _b(value)
        if n[:1] == b":" or n == b"host":
            self._set_pseudo(n, v)
        else:
            self.headers.append((n, v))

    def add_bytes(self, name: bytes, value: bytes) -> None:
        """``add`` for a lower-case, non-pseudo ``name`` (no checks: the hot path)."""
        self.headers.append((name, value))

    def set(self, name: str | bytes, value: str | bytes) -> None:
        """Replace every value of ``name`` by one value, kept at the first one's position."""
        self.set_bytes(_name(name), _b(value))

    def set_bytes(self, name: bytes, value: bytes) -> None:
        if self._set_pseudo(name, value):
            return
        hs = self.headers
        for i, (k, _) in enumerate(hs):
            if k == name:
                hs[i] = (name, value)
                if any(k2 == name for k2, _ in hs[i + 1:]):
                    hs[i + 1:] = [(k2, v2) for k2, v2 in hs[i + 1:] if k2 != name]
                return
        hs.append((name, value))

    def set_default(self, name: str | bytes, value: str | bytes) -> None:
        """Add only when absent (Envoy's ``setReferenceKey`` with ADD_IF_ABSENT)."""
        n = _name(name)
        if self.get_bytes(n) is None:
            self.set_bytes(n, _b(value))

    __setitem__ = set

    def remove(self, name: str | bytes) -> int:
        """Remove every value of ``name``; returns how many were removed."""
        return self.remove_bytes(_name(name))

    def remove_bytes(self, name: bytes) -> int:
        if name[:1] == b":" or name == b"host":
            had = self._pseudo(name) is not None
            if had:
                self._set_pseudo(name, b"0" if name == b":status" else b"")
            return int(had)
        hs = self.headers
        n = len(hs)
        for k, _ in hs:
            if k == name:
                hs[:] = [(k2, v2) for k2, v2 in hs if k2 != name]
                return n - len(hs)
        return 0

    def __delitem__(self, name: str | bytes) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def copy(self) -> HeaderMap:
        return HeaderMap(list(self.headers), method=self.method, path=self.path,
                         authority=self.authority, scheme=self.scheme, status=self.status)
