"""Helpers for the mongo_proxy Envoy-oracle tests; the Envoy process itself is
:class:`envoi.testing.EnvoyProcess` (it already passes ``--file-flush-interval-msec 100``)."""

from __future__ import annotations

import re
import urllib.request

from envoi.testing import EnvoyProcess

__all__ = ["EnvoyProcess", "http_text", "mongo_histogram_counts"]


def http_text(port: int, path: str, method: str = "GET") -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.read().decode())


_HIST_COUNT = re.compile(r"^(envoy_mongo_\w+)_count\{(.*)\} (\d+)$")


def mongo_histogram_counts(prom_text: str) -> dict[str, int]:
    """``<metric>{labels}`` -> sample count, from Prometheus text, for mongo histograms."""
    out: dict[str, int] = {}
    for line in prom_text.splitlines():
        mt = _HIST_COUNT.match(line)
        if mt:
            out[f"{mt.group(1)}{{{mt.group(2)}}}"] = int(mt.group(3))
    return out
