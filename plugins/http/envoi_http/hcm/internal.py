"""Internal and external requests (Envoy's ``internal_address_config`` and
``ConnectionManagerUtility::cleanInternalHeaders``), as Envoy 1.39.3 does them.

A request is *internal* only with ``use_remote_address: true`` and a client address (the peer,
or the trusted ``x-forwarded-for`` entry) inside ``internal_address_config.cidr_ranges``; no
address is internal by default (loopback included). An internal request gets
``x-envoy-internal: true`` and keeps the ``x-envoy-*`` control headers it carries
(``x-envoy-retry-on``, ``x-envoy-upstream-rq-timeout-ms``, ... for the router). Every other
request has them removed before any filter sees them, so the router cannot honour them — checked
against Envoy in ``tests/http/test_retry_headers_e2e.py``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from envoi.http.headers import HeaderMap

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Envoy's cleanInternalHeaders list (request headers only an internal client may send).
INTERNAL_ONLY = frozenset((
    b"x-envoy-decorator-operation", b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node", b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace", b"x-envoy-internal", b"x-envoy-ip-tags", b"x-envoy-max-retries",
    b"x-envoy-retry-grpc-on", b"x-envoy-retry-on", b"x-envoy-upstream-alt-stat-name",
    b"x-envoy-upstream-rq-per-try-timeout-ms", b"x-envoy-upstream-rq-timeout-alt-response",
    b"x-envoy-upstream-rq-timeout-ms", b"x-envoy-hedge-on-per-try-timeout",
    b"x-envoy-retriable-status-codes", b"x-envoy-retriable-header-names",
))
# The request headers the connection manager's request mutation reads (xff.mutate, the
# internal-header clean-up, the request id): a request with none of them takes its short path.
MUTATE_READS = INTERNAL_ONLY | {b"x-forwarded-proto", b"x-forwarded-for", b"x-request-id"}


def internal_networks(config: Any) -> tuple[Network, ...]:
    """``internal_address_config.cidr_ranges`` of an HCM proto."""
    if not config.HasField("internal_address_config"):
        return ()
    out: list[Network] = []
    for c in config.internal_address_config.cidr_ranges:
        plen = c.prefix_len.value if c.HasField("prefix_len") else (
            128 if ":" in c.address_prefix else 32)
        out.append(ipaddress.ip_network(f"{c.address_prefix}/{plen}", strict=False))
    return tuple(out)


def is_internal(ip: bytes, nets: tuple[Network, ...]) -> bool:
    if not nets:
        return False
    try:
        addr = ipaddress.ip_address(ip.decode("latin-1").strip("[]"))
    except ValueError:
        return False
    return any(addr in n for n in nets)


def clean(h: HeaderMap) -> None:
    """Remove the internal-only ``x-envoy-*`` request headers (one pass; nothing to do for the
    usual request that carries none)."""
    raw = h.headers
    for k, _ in raw:
        if k in INTERNAL_ONLY:
            h.headers = [(n, v) for n, v in raw if n not in INTERNAL_ONLY]
            return
