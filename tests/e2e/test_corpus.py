"""Real configs (Envoy's examples and docs, tests/corpus, provenance in its PROVENANCE.md) through
``envoy --mode validate`` and envoi's validation, side by side.

For every config: envoi never fails with anything but a config error; where it accepts, every
field in the file is one envoi implements and Envoy accepts it too; where it rejects, every error
names a field path. The counts are in README.md (section "Config fields envoi implements") and
this test keeps them true: when a change turns a verdict, update the README line it prints.
"""

from __future__ import annotations

import concurrent.futures
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from envoi.config import ConfigError, unimplemented_fields
from envoi.server import Options, Server
from envoi.testing import envoy_validate

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
README_LINE = re.compile(
    r"Corpus: (\d+) real configs; (\d+) accepted by envoi and Envoy with every field honoured; "
    r"(\d+) rejected by envoi with the field named \((\d+) also rejected by Envoy, (\d+) using "
    r"a field or extension envoi does not implement\); (\d+) mismatched \(envoi accepts what "
    r"Envoy rejects\)\."
)


@dataclass
class Verdict:
    envoy_ok: bool
    envoy_says: str
    envoi_errors: list[str]
    envoi_paths: list[str]
    fully_implemented: bool = True
    crash: str = ""


def envoi_verdict(path: Path) -> tuple[list[str], list[str], bool, str]:
    server = Server(Options(config_path=str(path), mode="validate"))
    try:
        server.load()
    except ConfigError as exc:
        return [str(i) for i in exc.errors], [i.path for i in exc.errors], True, ""
    except Exception as exc:  # the point: there must be none
        return [], [], True, f"{type(exc).__name__}: {exc}"
    leftover = unimplemented_fields(server.bootstrap,
                                    known_type_urls=server.plugins.config_type_urls)
    return [], [], not leftover, ""


@pytest.fixture(scope="module")
def verdicts() -> dict[str, Verdict]:
    assert len(FILES) >= 70, "the corpus is missing files"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        envoy = dict(zip(FILES, pool.map(envoy_validate, FILES), strict=True))
    out = {}
    for path in FILES:
        ok, says = envoy[path]
        errors, paths, full, crash = envoi_verdict(path)
        out[str(path.relative_to(CORPUS))] = Verdict(ok, says, errors, paths, full, crash)
    return out


def test_envoi_never_crashes(verdicts: dict[str, Verdict]) -> None:
    crashes = {name: v.crash for name, v in verdicts.items() if v.crash}
    assert not crashes


def test_every_rejection_names_a_field(verdicts: dict[str, Verdict]) -> None:
    unnamed = {name: v.envoi_errors for name, v in verdicts.items()
               if v.envoi_errors and not all(v.envoi_paths)}
    assert not unnamed


def test_what_envoi_accepts_is_fully_implemented_and_valid_for_envoy(
        verdicts: dict[str, Verdict]) -> None:
    accepted = {name: v for name, v in verdicts.items() if not v.envoi_errors and not v.crash}
    assert accepted, "the corpus should have configs envoi runs as they are"
    assert [n for n, v in accepted.items() if not v.fully_implemented] == []
    assert {n: v.envoy_says for n, v in accepted.items() if not v.envoy_ok} == {}


def test_readme_counts(verdicts: dict[str, Verdict]) -> None:
    total = len(verdicts)
    accepted = sum(1 for v in verdicts.values() if not v.envoi_errors and v.envoy_ok)
    rejected = [v for v in verdicts.values() if v.envoi_errors]
    both = sum(1 for v in rejected if not v.envoy_ok)
    mismatched = sum(1 for v in verdicts.values() if not v.envoi_errors and not v.envoy_ok)
    line = (f"Corpus: {total} real configs; {accepted} accepted by envoi and Envoy with every "
            f"field honoured; {len(rejected)} rejected by envoi with the field named ({both} also "
            f"rejected by Envoy, {len(rejected) - both} using a field or extension envoi does "
            f"not implement); {mismatched} mismatched (envoi accepts what Envoy rejects).")
    readme = " ".join((ROOT / "README.md").read_text().split())
    found = README_LINE.search(readme)
    assert found is not None and found.group(0) == line, f"README.md should say:\n{line}"
