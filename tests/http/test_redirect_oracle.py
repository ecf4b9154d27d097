"""Redirect routes' ``location`` through the real Envoy 1.39.3 and envoi with the same config and
requests. Envoy keeps a request's port unless a ``port_redirect`` replaces it or the scheme
changes away from the port's default for the request's ``x-forwarded-proto`` (``:80`` for http,
``:443`` for https); ``https_redirect`` used to drop every port in envoi."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoi.testing import free_port
from http_peers import HCM_LISTENER
from scripted_upstream import PROXIES, exchange

REDIRECTS = {
    "/https": "{https_redirect: true}",
    "/scheme-http": "{scheme_redirect: http}",
    "/scheme-https": "{scheme_redirect: https}",
    "/port": "{port_redirect: 8443}",
    "/https-port": "{https_redirect: true, port_redirect: 8443}",
    "/host": "{host_redirect: other.example}",
    "/https-host": "{https_redirect: true, host_redirect: other.example}",
    "/host-port": "{host_redirect: other.example, port_redirect: 9000}",
}
HOSTS = ["example.com", "example.com:8080", "example.com:80", "example.com:443", "[::1]",
         "[::1]:8080", "[::1]:80", "10.0.0.1:80"]
FORWARDED = [None, "https"]  # the client's x-forwarded-proto (kept: use_remote_address false)


def config(admin: int, port: int) -> str:
    routes = "".join(f"""
              - match: {{{{path: "{path}"}}}}
                redirect: {rd.replace("{", "{{").replace("}", "}}")}"""
                     for path, rd in REDIRECTS.items())
    return (HCM_LISTENER + """\
          stat_prefix: rd
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:""" + routes + "\n").format(admin=admin, port=port)


@pytest.mark.parametrize("kind", PROXIES)
def test_redirect_location_as_envoy(kind: str, proxy_process: Callable[..., Any]) -> None:
    port, admin = free_port(), free_port()
    proxy_process(kind, config(admin, port), admin)
    got = {}
    for path in REDIRECTS:
        for host in HOSTS:
            for xfp in FORWARDED:
                req = (f"GET {path}?q=1 HTTP/1.1\r\nhost: {host}\r\n"
                       + (f"x-forwarded-proto: {xfp}\r\n" if xfp else "") + "\r\n")
                r = exchange(port, req.encode())
                got[(path, host, xfp)] = (r.status, r.header("location"))
    assert got == EXPECTED


def _expected() -> dict[tuple[str, str, str | None], tuple[int, str]]:
    """Envoy 1.39.3's answers, written out by its rules (the envoy run checks them)."""
    out = {}
    for path in REDIRECTS:
        for host in HOSTS:
            for xfp in FORWARDED:
                proto = xfp or "http"
                scheme = {"/https": "https", "/scheme-http": "http", "/scheme-https": "https",
                          "/https-port": "https", "/https-host": "https"}.get(path, proto)
                new_port = {"/port": ":8443", "/https-port": ":8443",
                            "/host-port": ":9000"}.get(path, "")
                if "host" in path:
                    h = "other.example"
                else:
                    if host.startswith("["):
                        name, _, p = host.partition("]")
                        name, p = name + "]", p[1:]
                    else:
                        name, _, p = host.partition(":")
                    remove = bool(new_port) or (scheme != proto and (
                        (proto == "https" and p == "443") or (proto == "http" and p == "80")))
                    h = f"{name}:{p}" if p and not remove else name
                out[(path, host, xfp)] = (301, f"{scheme}://{h}{new_port}{path}?q=1")
    return out


EXPECTED = _expected()
