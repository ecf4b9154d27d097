"""Checks for single values under one PGV rule set (``validate.StringRules``, ``UInt32Rules``,
``DurationRules``, ...), compiled once into closures.

``value_check(kind, rules, field)`` returns a function ``(value, path, issues)`` that appends a
``ConfigIssue`` per violated rule, or None when the rule set asks for nothing we check. Messages
follow the wording of PGV's generated validators, which Envoy prints ("value length must be at
least 1 characters", "value must be greater than 0s").
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigIssue
from .protos import format_duration

__all__ = ["ValueCheck", "value_check"]

ValueCheck = Callable[[Any, str, list[ConfigIssue]], None]
_Test = Callable[[Any], str | None]  # value -> violation message or None

_NUMERIC_KINDS = frozenset(
    {
        "float",
        "double",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
    }
)

# PGV's well-known header regexes (validate.KnownRegex). strict=false relaxes both to "no NUL,
# CR or LF", which is what Envoy's protos ask for almost everywhere.
_HEADER_NAME = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0A-\x1F\x7F]*$")
_HEADER_LOOSE = re.compile(r"^[^\x00\x0A\x0D]*$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")


def value_check(kind: str | None, rules: Any, field: Any) -> ValueCheck | None:
    """Compile the rules of one kind for values of ``field``'s type."""
    tests: list[_Test]
    ignore_empty = False
    if kind in _NUMERIC_KINDS:
        tests = _range_tests(rules, float if kind in ("float", "double") else int, repr)
        ignore_empty = bool(rules.ignore_empty)
    elif kind == "duration":
        tests = _range_tests(rules, _duration_nanos, format_duration)
    elif kind == "string":
        tests = _string_tests(rules)
        ignore_empty = bool(rules.ignore_empty)
    elif kind == "bytes":
        tests = _bytes_tests(rules)
        ignore_empty = bool(rules.ignore_empty)
    elif kind == "enum":
        tests = _enum_tests(rules, field)
    elif kind == "bool":
        tests = [_const_test(bool(rules.const), repr)] if rules.HasField("const") else []
    elif kind == "any":
        tests = _in_tests(rules, lambda m: str(m.type_url), repr, rule_key=str, what="type URL")
    else:
        # timestamp: only 'required' (checked by the caller) is used by Envoy's protos.
        tests = []
    if not tests:
        return None
    return _runner(tuple(tests), ignore_empty)


def _runner(tests: tuple[_Test, ...], ignore_empty: bool) -> ValueCheck:
    def run(value: Any, path: str, issues: list[ConfigIssue]) -> None:
        if ignore_empty and not value:
            return
        for test in tests:
            message = test(value)
            if message is not None:
                issues.append(ConfigIssue(path, message))

    return run


def _const_test(expected: Any, show: Callable[[Any], str]) -> _Test:
    return lambda v: None if v == expected else f"value must equal {show(expected)}"


def _in_tests(
    rules: Any,
    convert: Callable[[Any], Any],
    show: Callable[[Any], str],
    *,
    rule_key: Callable[[Any], Any] | None = None,
    what: str = "value",
) -> list[_Test]:
    """in / not_in. ``convert`` maps a checked value, ``rule_key`` a listed one (default: the
    same), to comparable keys."""
    key = rule_key or convert
    tests: list[_Test] = []
    allowed = list(getattr(rules, "in"))
    if allowed:
        allowed_keys = {key(a) for a in allowed}
        shown = ", ".join(show(a) for a in allowed)
        tests.append(
            lambda v: None if convert(v) in allowed_keys else f"{what} must be in list [{shown}]"
        )
    denied = list(rules.not_in)
    if denied:
        denied_keys = {key(a) for a in denied}
        shown_not = ", ".join(show(a) for a in denied)
        tests.append(
            lambda v: (
                None
                if convert(v) not in denied_keys
                else f"{what} must not be in list [{shown_not}]"
            )
        )
    return tests


def _duration_nanos(d: Any) -> int:
    return int(d.seconds) * 1_000_000_000 + int(d.nanos)


def _range_tests(
    rules: Any, convert: Callable[[Any], Any], show: Callable[[Any], str]
) -> list[_Test]:
    """const / gt / gte / lt / lte / in / not_in, shared by numbers and durations."""
    tests: list[_Test] = []
    if rules.HasField("const"):
        const_value, const_shown = convert(rules.const), show(rules.const)
        tests.append(
            lambda v: None if convert(v) == const_value else f"value must equal {const_shown}"
        )
    lower = _bound(rules, "gt", "gte", convert, show)
    upper = _bound(rules, "lt", "lte", convert, show)
    if lower and upper:
        tests.append(_between(lower, upper, convert))
    elif lower:
        lo, lo_incl, lo_shown = lower
        word = "greater than or equal to" if lo_incl else "greater than"
        tests.append(
            lambda v: (
                None
                if (convert(v) >= lo if lo_incl else convert(v) > lo)
                else f"value must be {word} {lo_shown}"
            )
        )
    elif upper:
        hi, hi_incl, hi_shown = upper
        word = "less than or equal to" if hi_incl else "less than"
        tests.append(
            lambda v: (
                None
                if (convert(v) <= hi if hi_incl else convert(v) < hi)
                else f"value must be {word} {hi_shown}"
            )
        )
    tests.extend(_in_tests(rules, convert, show))
    return tests


def _bound(
    rules: Any,
    strict: str,
    inclusive: str,
    convert: Callable[[Any], Any],
    show: Callable[[Any], str],
) -> tuple[Any, bool, str] | None:
    if rules.HasField(inclusive):
        value = getattr(rules, inclusive)
        return convert(value), True, show(value)
    if rules.HasField(strict):
        value = getattr(rules, strict)
        return convert(value), False, show(value)
    return None


def _between(
    lower: tuple[Any, bool, str], upper: tuple[Any, bool, str], convert: Callable[[Any], Any]
) -> _Test:
    lo, lo_incl, lo_shown = lower
    hi, hi_incl, hi_shown = upper

    def above(v: Any) -> bool:
        return bool(v >= lo if lo_incl else v > lo)

    def below(v: Any) -> bool:
        return bool(v <= hi if hi_incl else v < hi)

    if hi >= lo:
        shown = f"{'[' if lo_incl else '('}{lo_shown}, {hi_shown}{']' if hi_incl else ')'}"
        return lambda v: (
            None
            if above(convert(v)) and below(convert(v))
            else (f"value must be inside range {shown}")
        )
    # PGV reads gt > lt as an exclusive range: the value must lie outside [lt, gt].
    shown = f"{'(' if hi_incl else '['}{hi_shown}, {lo_shown}{')' if lo_incl else ']'}"
    return lambda v: (
        None if above(convert(v)) or below(convert(v)) else (f"value must be outside range {shown}")
    )


def _string_tests(rules: Any) -> list[_Test]:
    tests: list[_Test] = []
    if rules.HasField("const"):
        tests.append(_const_test(rules.const, repr))
    if rules.HasField("len"):
        n = rules.len
        tests.append(lambda v: None if len(v) == n else f"value length must be {n} characters")
    if rules.HasField("min_len"):
        lo = rules.min_len
        tests.append(
            lambda v: None if len(v) >= lo else f"value length must be at least {lo} characters"
        )
    if rules.HasField("max_len"):
        hi = rules.max_len
        tests.append(
            lambda v: None if len(v) <= hi else f"value length must be at most {hi} characters"
        )
    for name, compare, text in (
        ("len_bytes", lambda n, m: n == m, "value length must be {} bytes"),
        ("min_bytes", lambda n, m: n >= m, "value length must be at least {} bytes"),
        ("max_bytes", lambda n, m: n <= m, "value length must be at most {} bytes"),
    ):
        if rules.HasField(name):
            tests.append(_length_test(_utf8_length, getattr(rules, name), compare, text))
    tests.extend(_affix_tests(rules))
    if rules.HasField("pattern"):
        pattern_test = _pattern_test(rules.pattern)
        if pattern_test is not None:
            tests.append(pattern_test)
    tests.extend(_in_tests(rules, lambda v: v, repr))
    well_known = rules.WhichOneof("well_known")
    if well_known is not None and getattr(rules, well_known):
        test = _well_known_test(well_known, rules)
        if test is not None:
            tests.append(test)
    return tests


def _utf8_length(value: str) -> int:
    return len(value.encode("utf-8"))


def _length_test(
    measure: Callable[[Any], int], limit: int, compare: Callable[[int, int], bool], text: str
) -> _Test:
    message = text.format(limit)
    return lambda v: None if compare(measure(v), limit) else message


def _affix_tests(rules: Any) -> list[_Test]:
    tests: list[_Test] = []
    if rules.HasField("prefix"):
        prefix = rules.prefix
        tests.append(
            lambda v: None if v.startswith(prefix) else f"value does not have prefix {prefix!r}"
        )
    if rules.HasField("suffix"):
        suffix = rules.suffix
        tests.append(
            lambda v: None if v.endswith(suffix) else f"value does not have suffix {suffix!r}"
        )
    if rules.HasField("contains"):
        part = rules.contains
        tests.append(lambda v: None if part in v else f"value does not contain substring {part!r}")
    if rules.DESCRIPTOR.fields_by_name.get("not_contains") and rules.HasField("not_contains"):
        banned = rules.not_contains
        tests.append(lambda v: None if banned not in v else f"value contains substring {banned!r}")
    return tests


def _pattern_test(pattern: str | bytes) -> _Test | None:
    try:
        compiled = re.compile(pattern)
    except re.error:
        # PGV patterns are RE2; the rare one Python's re cannot read is skipped, not fatal.
        return None
    # RE2 MatchString is a search, not a full match: patterns anchor themselves with ^...$.
    return lambda v: (
        None if compiled.search(v) else (f"value does not match regex pattern {compiled.pattern!r}")
    )


def _well_known_test(kind: str, rules: Any) -> _Test | None:
    if kind == "well_known_regex":
        strict = bool(rules.strict)
        if rules.well_known_regex == 1:  # HTTP_HEADER_NAME
            regex, what = (_HEADER_NAME if strict else _HEADER_LOOSE), "HTTP header name"
        elif rules.well_known_regex == 2:  # HTTP_HEADER_VALUE
            regex, what = (_HEADER_VALUE if strict else _HEADER_LOOSE), "HTTP header value"
        else:
            return None
        return lambda v: None if regex.search(v) else f"value must be a valid {what}"
    predicates: dict[str, tuple[Callable[[str], bool], str]] = {
        "hostname": (_is_hostname, "value must be a valid hostname"),
        "ip": (lambda v: _is_ip(v, None), "value must be a valid IP address"),
        "ipv4": (lambda v: _is_ip(v, 4), "value must be a valid IPv4 address"),
        "ipv6": (lambda v: _is_ip(v, 6), "value must be a valid IPv6 address"),
        "address": (
            lambda v: _is_ip(v, None) or _is_hostname(v),
            "value must be a valid hostname, or ip address",
        ),
        "email": (_is_email, "value must be a valid email address"),
        "uri": (_is_uri, "value must be a valid URI"),
        "uuid": (_is_uuid, "value must be a valid UUID"),
    }
    entry = predicates.get(kind)  # uri_ref accepts practically anything: not checked
    if entry is None:
        return None
    predicate, message = entry
    return lambda v: None if predicate(v) else message


def _is_hostname(value: str) -> bool:
    host = value[:-1] if value.endswith(".") else value
    if not host or len(host) > 253:
        return False
    return all(len(label) <= 63 and _HOST_LABEL.match(label) for label in host.split("."))


def _is_ip(value: str, version: int | None) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or address.version == version


def _is_email(value: str) -> bool:
    local, sep, host = value.rpartition("@")
    return bool(sep and local and len(local) <= 64 and _is_hostname(host))


def _is_uri(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _bytes_tests(rules: Any) -> list[_Test]:
    tests: list[_Test] = []
    if rules.HasField("const"):
        tests.append(_const_test(rules.const, repr))
    for name, compare, text in (
        ("len", lambda n, m: n == m, "value length must be {} bytes"),
        ("min_len", lambda n, m: n >= m, "value length must be at least {} bytes"),
        ("max_len", lambda n, m: n <= m, "value length must be at most {} bytes"),
    ):
        if rules.HasField(name):
            tests.append(_length_test(len, getattr(rules, name), compare, text))
    tests.extend(_affix_tests(rules))
    if rules.HasField("pattern"):
        pattern_test = _pattern_test(rules.pattern.encode("utf-8"))
        if pattern_test is not None:
            tests.append(pattern_test)
    tests.extend(_in_tests(rules, lambda v: v, repr))
    return tests


def _enum_tests(rules: Any, field: Any) -> list[_Test]:
    tests: list[_Test] = []
    enum_type = field.enum_type
    if rules.HasField("const"):
        tests.append(_const_test(rules.const, repr))
    if rules.defined_only and enum_type is not None:
        defined = frozenset(v.number for v in enum_type.values)
        tests.append(
            lambda v: None if v in defined else "value must be one of the defined enum values"
        )
    tests.extend(_in_tests(rules, lambda v: v, repr))
    return tests
