"""Envoy's ``safe_regex``: RE2, with Envoy's limits, compiled once at config time.

Envoy's regexes are RE2 (linear time; no backreferences, lookarounds or possessive quantifiers),
so envoi uses RE2 itself (``google-re2``) rather than Python's ``re``: the same pattern means the
same thing, a pattern RE2 does not accept is a config error, and a hostile path cannot make a
route match backtrack for seconds. Like Envoy (runtime key ``re2.max_program_size.error_level``,
default 100), a pattern whose compiled program is larger than 100 is refused.

Matching follows Envoy: route, header and string matchers are full matches (``fullmatch``);
``regex_rewrite`` uses ``search`` (envoi_http.router.re2_rewrite).
"""

from __future__ import annotations

from typing import Any, Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no stubs

from envoi.config import ConfigError, ConfigIssue

__all__ = [
    "MAX_PROGRAM_SIZE",
    "Regex",
    "compile_regex",
]

#: Envoy's default ``re2.max_program_size.error_level``.
MAX_PROGRAM_SIZE = 100

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every rejected pattern to stderr


class Regex(Protocol):
    """What the compiled pattern offers (google-re2's ``_Regexp``)."""

    pattern: Any

    def fullmatch(self, text: bytes) -> Any: ...
    def search(self, text: bytes, pos: int = ...) -> Any: ...
    @property
    def groups(self) -> int: ...


def compile_regex(pattern: str, path: str, *, max_program_size: int = MAX_PROGRAM_SIZE) -> Regex:
    """Compile ``pattern`` (a RegexMatcher's ``regex``) for matching bytes; ConfigError at
    ``path`` (the ``regex`` field) with RE2's reason when RE2 refuses it or it is too big."""
    try:
        compiled = re2.compile(pattern.encode("utf-8"), _OPTIONS)
    except re2.error as exc:
        reason = _reason(exc)
        raise ConfigError([ConfigIssue(path, f"invalid regex {pattern!r}: {reason}")]) from None
    size = compiled.programsize
    if size > max_program_size:
        raise ConfigError([ConfigIssue(
            path,
            f"regex {pattern!r} RE2 program size of {size} > max program size of "
            f"{max_program_size} set for the error level threshold",
        )])
    return compiled  # type: ignore[no-any-return]


def _reason(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
