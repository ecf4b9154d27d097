"""envoi.schema: typed config from a dataclass, every problem reported with its path."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import pytest
from envoi.config import ConfigError
from envoi.schema import config_schema, parse_dataclass


class Mode(enum.Enum):
    ALLOW = 1
    DENY = 2


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = 80


@dataclass(frozen=True)
class Cfg:
    header: str
    allowed: list[str] = field(default_factory=list)
    status: int = 403
    ratio: float = 1.0
    strict: bool = False
    mode: Mode = Mode.ALLOW
    kind: Literal["a", "b"] = "a"
    upstream: Upstream | None = None
    labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError("status: must be a 4xx or 5xx status")


def errors(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_dataclass(Cfg, data)
    return [str(e) for e in exc.value.errors]


def test_parses_every_kind_of_field() -> None:
    cfg = parse_dataclass(Cfg, {
        "header": "x-tenant", "allowed": ["a", "b"], "status": 401, "ratio": 1, "strict": True,
        "mode": "DENY", "kind": "b", "upstream": {"host": "h"}, "labels": {"x": 1}})
    assert cfg == Cfg("x-tenant", ["a", "b"], 401, 1.0, True, Mode.DENY, "b", Upstream("h"),
                      {"x": 1})
    assert parse_dataclass(Cfg, {"header": "h"}) == Cfg("h")


def test_every_problem_with_its_path() -> None:
    assert errors({"allowed": ["a", 7], "hedaer": "x", "strict": "yes",
                   "upstream": {"host": "h", "port": "80"}, "labels": {"k": 1.5}}) == [
        "hedaer: unknown field (known: allowed, header, kind, labels, mode, ratio, status, "
        "strict, upstream)",
        "header: required",
        "allowed[1]: expected a string, got int 7",
        "strict: expected true or false, got a string ('yes')",
        "upstream.port: expected an integer, got a string ('80')",
        "labels[k]: expected an integer, got float 1.5",
    ]
    assert errors({"header": "h", "mode": "MAYBE", "kind": "c", "status": True}) == [
        "status: expected an integer, got a boolean (true)",
        "mode: must be one of ALLOW, DENY, got a string ('MAYBE')",
        "kind: must be one of 'a', 'b', got a string ('c')",
    ]


def test_post_init_errors_are_located() -> None:
    assert errors({"header": "h", "status": 200}) == ["status: must be a 4xx or 5xx status"]


def test_config_schema_wraps_it() -> None:
    schema = config_schema("acme.Cfg", Cfg)
    assert schema.type_url == "acme.Cfg"
    assert schema.parse({"header": "h"}) == Cfg("h")
    with pytest.raises(TypeError):
        config_schema("acme.X", dict)
