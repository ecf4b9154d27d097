"""The dynamo filter's config as envoi's validation sees it: Envoy's empty message (by @type,
wrapped in TypedStruct, under the legacy name too), every field in it refused with its path,
and, as Envoy 1.39 answers, the filter named without typed_config refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ddb_workload import CONFIGS

DYNAMO = ("          - name: envoy.filters.http.dynamo\n"
          "            typed_config:\n"
          "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamo.v3."
          "Dynamo\n")


def validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "envoi.yaml"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def reference() -> str:
    text = (CONFIGS / "dynamo.yaml").read_text()
    assert DYNAMO in text
    return text


@pytest.mark.parametrize("entry", [
    DYNAMO,
    DYNAMO.replace("envoy.filters.http.dynamo", "envoy.http_dynamo_filter"),
    ("          - name: envoy.filters.http.dynamo\n"
     "            typed_config:\n"
     "              \"@type\": type.googleapis.com/xds.type.v3.TypedStruct\n"
     "              type_url: type.googleapis.com/envoy.extensions.filters.http.dynamo.v3.Dynamo\n"
     "              value: {}\n"),
])
def test_accepted_forms(tmp_path: Path, entry: str) -> None:
    out = validate(tmp_path, reference().replace(DYNAMO, entry))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_field_in_the_empty_message_is_an_error_with_its_path(tmp_path: Path) -> None:
    out = validate(tmp_path, reference().replace(
        DYNAMO, DYNAMO + "              stat_prefix: ddb\n"))
    assert out.returncode == 1
    assert ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
            ".http_filters[0].typed_config.stat_prefix") in out.stdout + out.stderr


def test_named_without_typed_config_is_envoys_error(tmp_path: Path) -> None:
    out = validate(tmp_path, reference().replace(
        DYNAMO, "          - name: envoy.filters.http.dynamo\n"))
    assert out.returncode == 1
    assert ("Didn't find a registered implementation for 'envoy.filters.http.dynamo' with type "
            "URL: ''") in out.stdout + out.stderr
