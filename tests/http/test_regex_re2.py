"""safe_regex is RE2: linear time on hostile input, Envoy's semantics (full match; no effect of
case_sensitive / ignore_case on a regex), and RE2's refusals as config errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from envoi.config import ConfigError
from envoi.http import HeaderMap
from envoi.regex import compile_regex
from envoi.stats import Store
from envoi.testing.context import factory_context
from envoi_http.router.config import build_route_table
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

# Exponential for a backtracking engine: Python's re needs ~2**n steps to fail on n 'a's.
CATASTROPHIC = "/(a+)+b"


def table(routes: list[dict[str, Any]]) -> Any:
    rc = json_format.ParseDict({"virtual_hosts": [{"name": "v", "domains": ["*"],
                                                   "routes": routes}]},
                               route_pb2.RouteConfiguration())
    return build_route_table(rc, "route_config", factory_context(stats=Store()))


def route_for(t: Any, path: str, **hdrs: str) -> Any:
    h = HeaderMap([(k.replace("_", "-").encode(), v.encode()) for k, v in hdrs.items()],
                  method=b"GET", path=path.encode(), authority=b"x")
    r = t.route(h)
    return None if r is None else r.cluster


def test_python_re_would_backtrack_on_this_pattern() -> None:
    # The premise: a small input already costs Python's re visibly more than a short one.
    assert re.fullmatch(CATASTROPHIC, "/" + "a" * 18) is None


@pytest.mark.timeout(30)
def test_catastrophic_pattern_runs_in_linear_time() -> None:
    t = table([{"match": {"safe_regex": {"regex": CATASTROPHIC}}, "route": {"cluster": "evil"}},
               {"match": {"prefix": "/", "headers": [
                   {"name": "x-h", "safe_regex_match": {"regex": "(a|aa)+b"}}]},
                "route": {"cluster": "hdr"}},
               {"match": {"prefix": "/"}, "route": {"cluster": "rest"}}])
    hostile = "/" + "a" * 5000  # 2**5000 steps for a backtracking engine
    for _ in range(100):
        assert route_for(t, hostile, x_h="a" * 5000) == "rest"
    assert route_for(t, "/aaab") == "evil"


def test_regex_is_a_full_match_and_ignores_case_options() -> None:
    t = table([{"match": {"safe_regex": {"regex": "/Items/[0-9]+"}, "case_sensitive": False},
                "route": {"cluster": "regex"}},
               {"match": {"prefix": "/", "headers": [{"name": "x-h", "string_match": {
                   "safe_regex": {"regex": "ab"}, "ignore_case": True}}]},
                "route": {"cluster": "hdr"}},
               {"match": {"prefix": "/"}, "route": {"cluster": "rest"}}])
    assert route_for(t, "/Items/42") == "regex"
    assert route_for(t, "/items/42") == "rest"  # case_sensitive does not apply to safe_regex
    assert route_for(t, "/Items/42/x") == "rest"  # full match
    assert route_for(t, "/x", x_h="ab") == "hdr"
    assert route_for(t, "/x", x_h="AB") == "rest"  # nor ignore_case
    assert route_for(t, "/x", x_h="abc") == "rest"


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(a)\1", "invalid escape sequence"),
    ("a++", "bad repetition operator"),
    ("(?=a)", "invalid perl operator"),
    ("a{1000}", "program size of 1004 > max program size of 100"),
])
def test_what_re2_refuses_is_a_config_error(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_regex(pattern, "x.regex")
    [issue] = info.value.errors
    assert issue.path == "x.regex" and reason in issue.message


def test_header_matchers_suffix_contains_range() -> None:
    t = table([
        {"match": {"prefix": "/", "headers": [{"name": "x-s", "suffix_match": "-end"}]},
         "route": {"cluster": "suffix"}},
        {"match": {"prefix": "/", "headers": [{"name": "x-c", "contains_match": "mid"}]},
         "route": {"cluster": "contains"}},
        {"match": {"prefix": "/", "headers": [
            {"name": "x-r", "range_match": {"start": -10, "end": 10}}]},
         "route": {"cluster": "range"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "rest"}}])
    assert route_for(t, "/", x_s="the-end") == "suffix"
    assert route_for(t, "/", x_c="a-mid-b") == "contains"
    assert route_for(t, "/", x_r="-10") == "range"
    assert route_for(t, "/", x_r="9") == "range"
    assert route_for(t, "/", x_r="10") == "rest"
    assert route_for(t, "/", x_r="1.5") == "rest"
