"""HCM path normalisation before routing, as Envoy does it: ``normalize_path`` (RFC 3986 dot
segments and Chromium's canonical escaping, Envoy's ``PathUtil::canonicalPath``),
``merge_slashes`` and ``path_with_escaped_slashes_action``.

Routes, filters and the upstream then all see the same path: a security property, since a
route guarding ``/admin`` must not be passed by ``/public/../admin`` or ``/admin%2F..``.

Only the path is changed; the query string is kept as it came. Checked against Envoy 1.39.3
(tests/http/test_path_normalization_oracle.py): what reaches the upstream, and the 400/307 local
replies.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTINUE", "REDIRECT", "REJECT", "PathNormalization", "canonical_path"]

CONTINUE, REDIRECT, REJECT = 0, 1, 2

# HttpConnectionManager.PathWithEscapedSlashesAction values.
_DEFAULT, _KEEP, _REJECT, _REDIRECT, _FORWARD = range(5)

_HEX = b"0123456789abcdefABCDEF"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters Chromium's path canonicaliser escapes (besides controls and bytes >= 0x7f).
_ESCAPE = frozenset(b' "<>`{}|^')


def _escape_byte(b: int) -> bytes:
    return b"%%%02X" % b


def _canonical_segment(seg: bytes) -> bytes | None:
    """One path segment with Chromium's escaping: unreserved characters written as %XX are
    decoded, characters a path may not hold are escaped, every other escape is kept as written.
    None when the path cannot be canonicalised (an escaped NUL)."""
    if b"%" not in seg and not any(b in _ESCAPE or b < 0x21 or b >= 0x7F for b in seg):
        return seg
    out = bytearray()
    i, n = 0, len(seg)
    while i < n:
        b = seg[i]
        if b == 0x25 and i + 2 < n and seg[i + 1] in _HEX and seg[i + 2] in _HEX:
            value = int(seg[i + 1:i + 3], 16)
            if value == 0:
                return None
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += seg[i:i + 3]
            i += 3
            continue
        if b in _ESCAPE or b < 0x21 or b >= 0x7F:
            out += _escape_byte(b)
        else:
            out.append(b)
        i += 1
    return bytes(out)


def canonical_path(path: bytes) -> bytes | None:
    """Envoy's ``canonicalPath`` of the path part (no query): backslashes are slashes, escapes
    canonicalised, ``.`` and ``..`` segments removed. None when it cannot be (Envoy: 400)."""
    out: list[bytes] = []
    segments = path.replace(b"\\", b"/").split(b"/")
    last = len(segments) - 1
    for index, raw in enumerate(segments[1:], 1):
        seg = _canonical_segment(raw)
        if seg is None:
            return None
        if seg == b".":
            if index == last:
                out.append(b"")
            continue
        if seg == b"..":
            if out:
                out.pop()
            if index == last:
                out.append(b"")
            continue
        out.append(seg)
    return b"/" + b"/".join(out)


def merge_slashes(path: bytes) -> bytes:
    while b"//" in path:
        path = path.replace(b"//", b"/")
    return path


def _unescape_slashes(path: bytes) -> bytes | None:
    """The path with ``%2F``/``%5C`` (either case) unescaped, or None if it has none."""
    lowered = path.lower()
    if b"%2f" not in lowered and b"%5c" not in lowered:
        return None
    out = bytearray()
    i, n = 0, len(path)
    while i < n:
        chunk = lowered[i:i + 3]
        if chunk == b"%2f":
            out.append(0x2F)
            i += 3
        elif chunk == b"%5c":
            out.append(0x5C)
            i += 3
        else:
            out.append(path[i])
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class PathNormalization:
    """The HCM's three path options, compiled. ``apply`` returns (action, new path)."""

    normalize: bool
    merge: bool
    escaped_slashes: int

    @classmethod
    def from_proto(cls, hcm: object) -> PathNormalization | None:
        normalize = bool(hcm.normalize_path.value)  # type: ignore[attr-defined]
        merge = bool(hcm.merge_slashes)  # type: ignore[attr-defined]
        action = int(hcm.path_with_escaped_slashes_action)  # type: ignore[attr-defined]
        if action == _DEFAULT:
            action = _KEEP  # Envoy's default (runtime key unset)
        if not normalize and not merge and action == _KEEP:
            return None
        return cls(normalize, merge, action)

    def apply(self, target: bytes) -> tuple[int, bytes]:
        path, sep, query = target.partition(b"?")
        result = CONTINUE
        if self.escaped_slashes != _KEEP:
            unescaped = _unescape_slashes(path)
            if unescaped is not None:
                if self.escaped_slashes == _REJECT:
                    # As Envoy: unescaped first, then refused (what %REQ(:PATH)% shows).
                    return REJECT, unescaped + sep + query
                if self.escaped_slashes == _REDIRECT:
                    result = REDIRECT
                path = unescaped
        if self.normalize:
            canonical = canonical_path(path)
            if canonical is None:
                return REJECT, target
            path = canonical
        if self.merge:
            path = merge_slashes(path)
        return result, path + sep + query
