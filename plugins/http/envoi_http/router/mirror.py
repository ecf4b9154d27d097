"""Route ``request_mirror_policies``: shadow requests, as Envoy 1.39 sends them.

For each policy whose cluster exists (``cluster``, or the value of ``cluster_header``; an
unknown one is skipped) and whose ``runtime_fraction`` samples the request, the router sends a
copy of the request as it goes upstream (after the route's header mutations and rewrites) to
the shadow cluster: fire and forget, its response read and dropped, the main request never
waiting for it. As Envoy's async client sends it: ``x-envoy-internal: true``, the host's own
address appended to ``x-forwarded-for``, and the Host with ``-shadow`` appended to its name
(``svc:8080`` -> ``svc-shadow:8080``) unless ``disable_shadow_host_suffix_append``. The body
streams as the request's does; the route's timeout bounds the shadow. Stats: the shadow
cluster's ``upstream_rq_*`` (with the ``internal.`` set, not ``external.``), its connection
stats, and ``http.async-client.rq_total``.

``trace_sampled`` (envoi has no tracing yet), ``request_headers_mutations`` and
``host_rewrite_literal`` are refused with their path (the config walk).

This module reads the config; ``router/shadow.py`` sends the shadows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.http.headers import HeaderMap
from envoi.stats import Counter

_R = "envoy.config.route.v3."
implements(_R + "RouteAction", "request_mirror_policies")
implements(_R + "RouteAction.RequestMirrorPolicy",
           "cluster", "cluster_header", "runtime_fraction", "disable_shadow_host_suffix_append")
implements("envoy.config.core.v3.RuntimeFractionalPercent", "default_value", "runtime_key")
implements("envoy.type.v3.FractionalPercent", "numerator", "denominator")

_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


@dataclass(frozen=True, eq=False)
class MirrorPolicy:
    cluster: str | None
    cluster_header: bytes | None
    numerator: int
    denominator: int
    runtime_key: str
    runtime: Any  # the server's envoi.runtime.Runtime (read when runtime_key is set)
    suffix: bool
    async_rq_total: Counter  # http.async-client.rq_total

    def cluster_for(self, headers: HeaderMap) -> str | None:
        if self.cluster:
            return self.cluster
        assert self.cluster_header is not None
        v = headers.get_bytes(self.cluster_header)
        return v.decode("latin-1") if v else None

    def sampled(self) -> bool:
        """Envoy's ``featureEnabled(runtime_key, default_value, random)``: the runtime key's
        FractionalPercent (or whole number, over the default's denominator), else the
        default; ``random % denominator < numerator``."""
        num, den = self.numerator, self.denominator
        if self.runtime_key and self.runtime is not None:
            v = self.runtime.get(self.runtime_key)
            if isinstance(v, dict) and "numerator" in v:
                num = int(v.get("numerator", 0))
                den = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}.get(
                    str(v.get("denominator", "HUNDRED")), 100)
            elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                if v > 100:
                    return True
                num = v
        if num >= den:
            return True
        return random.getrandbits(64) % den < num


def mirror_policies(policies: Any, path: str, known: Any, runtime: Any,
                    root: Any) -> tuple[MirrorPolicy, ...]:
    """A route's ``request_mirror_policies``; ``known(name)`` says whether a cluster exists
    (None: not checked, as with ``validate_clusters: false``)."""
    issues: list[ConfigIssue] = []
    out = []
    for i, p in enumerate(policies):
        ppath = f"{path}[{i}]"
        if p.cluster and p.cluster_header:
            issues.append(ConfigIssue(ppath, "Only one of cluster '" + p.cluster + "' or "
                                      "cluster_header '" + p.cluster_header + "' in request "
                                      "mirror policy can be specified"))
            continue
        if not p.cluster and not p.cluster_header:
            issues.append(ConfigIssue(ppath, "Exactly one of cluster or cluster_header in "
                                             "request mirror policy need to be specified"))
            continue
        if p.cluster and known is not None and not known(p.cluster):
            issues.append(ConfigIssue(ppath + ".cluster",
                                      f"route: unknown shadow cluster '{p.cluster}'"))
        num, den, key = 100, 100, ""
        if p.HasField("runtime_fraction"):
            rf = p.runtime_fraction
            num = rf.default_value.numerator
            den = _DENOMINATORS.get(rf.default_value.denominator, 100)
            key = rf.runtime_key
        out.append(MirrorPolicy(
            cluster=p.cluster or None,
            cluster_header=p.cluster_header.lower().encode() if p.cluster_header else None,
            numerator=num, denominator=den, runtime_key=key, runtime=runtime,
            suffix=not p.disable_shadow_host_suffix_append,
            async_rq_total=root.counter("http.async-client.rq_total")))
    if issues:
        raise ConfigError(issues)
    return tuple(out)
