"""Virtual host ``require_tls`` through the real Envoy 1.39.3 and envoi, same config and
requests: ALL redirects every request that did not come over TLS (by ``x-forwarded-proto`` as
the HCM leaves it), EXTERNAL_ONLY only external ones, with a 301 to ``https://`` + the Host as
received (its port kept) + the path and query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from envoi.testing import free_port
from scripted_upstream import exchange

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
REQUESTS = [  # (host, extra header lines)
    ("all.test", ""), ("all.test:8080", ""), ("all.test:443", ""), ("all.test:80", ""),
    ("all.test", "x-forwarded-proto: https\r\n"), ("all.test", "x-forwarded-proto: http\r\n"),
    ("ext.test", ""), ("ext.test", "x-forwarded-for: 1.2.3.4\r\n"),
    ("ext.test", "x-envoy-internal: true\r\n"), ("ext.test:8080", "x-forwarded-proto: https\r\n"),
    ("none.test", ""),
]
VARIANTS: dict[str, dict[str, Any]] = {
    "edge": {"use_remote_address": True},
    "edge_internal": {"use_remote_address": True,
                      "internal_address_config": {"cidr_ranges": [
                          {"address_prefix": "127.0.0.0", "prefix_len": 8}]}},
    "sidecar": {},
}


def config(admin: int, ports: dict[str, int]) -> str:
    def vhost(name: str, tls: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "domains": [f"{name}.test", f"{name}.test:*"],
                               "routes": [{"match": {"prefix": "/"},
                                           "direct_response": {"status": 200}}]}
        if tls:
            out["require_tls"] = tls
        return out

    listeners = [{
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[name]}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM, "stat_prefix": name, **options,
                "route_config": {"virtual_hosts": [
                    vhost("all", "ALL"), vhost("ext", "EXTERNAL_ONLY"), vhost("none", None)]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}],
            }}]}],
    } for name, options in VARIANTS.items()]
    return yaml.safe_dump({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": listeners}})


@pytest.mark.parametrize("kind", ["envoy", "envoi"])
def test_require_tls_redirects_as_envoy(kind: str,
                                        proxy_process: Callable[[str, str, int], Any]) -> None:
    ports = {name: free_port() for name in VARIANTS}
    admin = free_port()
    proxy_process(kind, config(admin, ports), admin)
    got = {}
    for name, port in ports.items():
        for host, extra in REQUESTS:
            r = exchange(port, f"GET /a/b?x=1 HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n".encode())
            got[(name, host, extra)] = (r.status, r.header("location"))
    https = "x-forwarded-proto: https\r\n"
    expected = {}
    for name in VARIANTS:
        for host, extra in REQUESTS:
            trusted_https = extra == https and name == "sidecar"
            # Internal: from 127.0.0.1 with no other address in x-forwarded-for.
            internal = name == "edge_internal" and "x-forwarded-for" not in extra
            if host.startswith("none") or trusted_https or (host.startswith("ext") and internal):
                expected[(name, host, extra)] = (200, None)
            else:
                expected[(name, host, extra)] = (301, f"https://{host}/a/b?x=1")
    assert got == expected
