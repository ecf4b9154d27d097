"""RE2's ``GlobalReplace`` with a rewrite string (the pattern is RE2's, envoi.regex): what
Envoy does with a route's ``regex_rewrite`` (``RegexMatchAndSubstitute``).

RE2's rewrite syntax is not Python's: ``\\0``..``\\9`` name the whole match and capture groups,
``\\\\`` is one backslash, and any other backslash makes the rewrite invalid -- RE2 then stops
writing at that point (what came before the bad escape is kept). A rewrite naming a group the
pattern lacks replaces nothing. Empty matches follow RE2: none right where the last match ended.
"""

from __future__ import annotations

from envoi.regex import Regex


class RegexRewrite:
    __slots__ = ("parts", "pattern", "usable")

    def __init__(self, pattern: Regex, substitution: bytes) -> None:
        self.pattern = pattern
        parts: list[bytes | int] = []  # literal bytes, or a group number
        lit = bytearray()
        i, n = 0, len(substitution)
        while i < n:
            c = substitution[i]
            if c != 0x5C:  # not a backslash
                lit.append(c)
                i += 1
                continue
            nxt = substitution[i + 1] if i + 1 < n else -1
            if 0x30 <= nxt <= 0x39:
                if lit:
                    parts.append(bytes(lit))
                    lit.clear()
                parts.append(nxt - 0x30)
                i += 2
            elif nxt == 0x5C:
                lit.append(0x5C)
                i += 2
            else:
                break  # invalid rewrite: RE2 stops here
        if lit:
            parts.append(bytes(lit))
        self.parts = parts
        groups = [p for p in parts if isinstance(p, int)]
        self.usable = max(groups, default=0) <= pattern.groups

    def __call__(self, subject: bytes) -> bytes:
        if not self.usable:
            return subject
        out: list[bytes] = []
        p, end, last_end, count = 0, len(subject), -1, 0
        search = self.pattern.search
        parts = self.parts
        while p <= end:
            m = search(subject, p)
            if m is None:
                break
            start, stop = m.span()
            if p < start:
                out.append(subject[p:start])
            if start == last_end and start == stop:
                # No empty match where the last match ended: skip one byte ahead.
                if p < end:
                    out.append(subject[p:p + 1])
                p += 1
                continue
            for part in parts:
                out.append(part if isinstance(part, bytes) else (m.group(part) or b""))
            p = last_end = stop
            count += 1
        if not count:
            return subject
        if p < end:
            out.append(subject[p:])
        return b"".join(out)
