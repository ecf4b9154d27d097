"""Request matchers, compiled once from Envoy's matcher protos: route matches (path, headers,
query parameters), header matchers (also used by the health-check filter and virtual clusters),
string matchers. Matching is ``bytes`` comparisons and precompiled regexes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoi.config import NOT_IMPLEMENTED, ConfigError, ConfigIssue
from envoi.http.headers import HeaderMap
from envoi.regex import Regex, compile_regex

Matcher = Callable[[HeaderMap, bytes, bytes], bool]  # (headers, path, query) -> matched


class PlainPrefix:
    """A case-sensitive ``prefix`` match with nothing else to check."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix

    def __call__(self, h: HeaderMap, path: bytes, query: bytes) -> bool:
        return path.startswith(self.prefix)


def string_matcher(sm: Any, path: str) -> Callable[[bytes], bool]:
    ic = sm.ignore_case
    kind = sm.WhichOneof("match_pattern")
    if kind == "safe_regex":
        # ignore_case has no effect on safe_regex, as in Envoy.
        rx = regex(sm.safe_regex.regex, path + ".safe_regex.regex")
        return lambda v: rx.fullmatch(v) is not None
    raw: str = getattr(sm, kind or "exact")
    want = raw.lower().encode() if ic else raw.encode()

    def norm(v: bytes) -> bytes:
        return v.lower() if ic else v

    if kind == "exact" or kind is None:
        return lambda v: norm(v) == want
    if kind == "prefix":
        return lambda v: norm(v).startswith(want)
    if kind == "suffix":
        return lambda v: norm(v).endswith(want)
    if kind == "contains":
        return lambda v: want in norm(v)
    raise ConfigError([ConfigIssue(f"{path}.{kind}", NOT_IMPLEMENTED)])


def regex(pattern: str, path: str) -> Regex:
    return compile_regex(pattern, path)


def header_matcher(hm: Any, path: str) -> Callable[[HeaderMap], bool]:
    name = hm.name.lower().encode()
    invert = hm.invert_match
    kind = hm.WhichOneof("header_match_specifier")
    treat_missing = hm.treat_missing_header_as_empty
    if kind == "present_match":
        want = bool(hm.present_match)

        def present(h: HeaderMap) -> bool:
            return (h.get_bytes(name) is not None) == want
        inner = present
    else:
        if kind == "string_match":
            check = string_matcher(hm.string_match, path + ".string_match")
        elif kind == "exact_match":
            v = hm.exact_match.encode()
            check = v.__eq__
        elif kind == "prefix_match":
            p = hm.prefix_match.encode()
            check = lambda x: x.startswith(p)  # noqa: E731
        elif kind == "safe_regex_match":
            rx = regex(hm.safe_regex_match.regex, path + ".safe_regex_match.regex")
            check = lambda x: rx.fullmatch(x) is not None  # noqa: E731
        elif kind == "suffix_match":
            sfx = hm.suffix_match.encode()
            check = lambda x: x.endswith(sfx)  # noqa: E731
        elif kind == "contains_match":
            sub = hm.contains_match.encode()
            check = lambda x: sub in x  # noqa: E731
        elif kind == "range_match":
            check = range_check(hm.range_match.start, hm.range_match.end)
        elif kind is None:
            check = lambda x: True  # noqa: E731
        else:
            raise ConfigError([ConfigIssue(f"{path}.{kind}", NOT_IMPLEMENTED)])

        def inner(h: HeaderMap) -> bool:
            if name[:1] == b":":
                vals = [h.get_bytes(name)]
            else:
                vals = [v for k, v in h.headers if k == name] or [None]
            v = b",".join(x for x in vals if x is not None) if vals[0] is not None else None
            if v is None:
                if not treat_missing:
                    return False
                v = b""
            return check(v)

    if invert:
        return lambda h: not inner(h)
    return inner


def range_check(start: int, end: int) -> Callable[[bytes], bool]:
    """Envoy's range_match: the value is a signed decimal integer in [start, end)."""

    def check(v: bytes) -> bool:
        text = v.strip()
        body = text[1:] if text[:1] in (b"-", b"+") else text
        if not body.isdigit():
            return False
        return start <= int(text) < end

    return check


def query_matcher(qm: Any, path: str) -> Callable[[bytes], bool]:
    from urllib.parse import parse_qsl

    name = qm.name
    if qm.HasField("string_match"):
        check = string_matcher(qm.string_match, path + ".string_match")
    else:
        check = lambda v: True  # noqa: E731

    def match(query: bytes) -> bool:
        for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if k == name:
                return check(v.encode("latin-1"))
        return False

    return match


def route_matcher(m: Any, path: str) -> tuple[Matcher, bytes | None]:
    cs = m.case_sensitive.value if m.HasField("case_sensitive") else True
    kind = m.WhichOneof("path_specifier")
    prefix: bytes | None = None
    pm: Callable[[bytes], bool]
    if kind == "prefix":
        prefix = m.prefix.encode()
        p = prefix if cs else prefix.lower()
        pm = (lambda x: x.startswith(p)) if cs else (lambda x: x.lower().startswith(p))
    elif kind == "path":
        p = m.path.encode() if cs else m.path.lower().encode()
        pm = (lambda x: x == p) if cs else (lambda x: x.lower() == p)
    elif kind == "safe_regex":
        # case_sensitive does not apply to safe_regex (Envoy ignores it there too).
        rx = regex(m.safe_regex.regex, path + ".safe_regex.regex")
        pm = lambda x: rx.fullmatch(x) is not None  # noqa: E731
    elif kind == "path_separated_prefix":
        prefix = m.path_separated_prefix.encode()
        p = prefix if cs else prefix.lower()

        def pm(x: bytes) -> bool:
            x = x if cs else x.lower()
            return x == p or x.startswith(p + b"/")
    else:
        raise ConfigError([ConfigIssue(f"{path}.{kind}", NOT_IMPLEMENTED)])
    hms = [header_matcher(h, f"{path}.headers[{i}]") for i, h in enumerate(m.headers)]
    if m.HasField("grpc"):
        hms.append(lambda h: (h.get_bytes(b"content-type") or b"").startswith(
            b"application/grpc"))
    qms = [query_matcher(q, f"{path}.query_parameters[{i}]")
           for i, q in enumerate(m.query_parameters)]
    if not hms and not qms:
        if kind == "prefix" and cs:
            # RouteTable.route tests this with one startswith; the matcher is never called.
            return PlainPrefix(prefix), prefix  # type: ignore[arg-type]
        return (lambda h, p_, q: pm(p_)), prefix

    def full(h: HeaderMap, p_: bytes, q: bytes) -> bool:
        return pm(p_) and all(f(h) for f in hms) and all(f(q) for f in qms)

    return full, prefix
