"""The route-based filter chain through the real Envoy 1.39.3 and envoi, same config, same
requests: an HTTP filter in the HCM's chain turned off for a route, a virtual host or a whole
route config (``typed_per_filter_config`` with ``envoy.config.route.v3.FilterConfig {disabled:
true}``), turned back on below that with a per-route config, and a filter that is off by default
(``http_filters[].disabled: true``) turned on for a route by its per-route config, plain or in a
``FilterConfig``. The filter is the fault filter: an abort answers locally, so whether it ran
and with which settings (the filter's own or the route's) shows in the status and body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from http_peers import hcm_listener_item
from scripted_upstream import PROXIES, exchange, start_config

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def fault(status: int) -> str:
    """An HTTPFault that aborts every request with ``status`` (flow YAML, braces doubled)."""
    return (f'{{{{"@type": {FAULT}, abort: {{{{http_status: {status}, '
            'percentage: {{numerator: 100}}}}}}')


OFF = f'{{{{"@type": {FILTER_CONFIG}, disabled: true}}}}'
# An abort or a delay without a percentage: Envoy's FractionalPercent then defaults to 0 %, so
# neither happens (envoi took a missing percentage as 100 %).
NO_PERCENTAGE = f'{{{{"@type": {FAULT}, abort: {{{{http_status: 500}}}}}}}}'
DELAY_NO_PERCENTAGE = f'{{{{"@type": {FAULT}, delay: {{{{fixed_delay: 0.5s}}}}}}}}'


def wrapped(status: int) -> str:
    """The route's HTTPFault inside a FilterConfig (``disabled`` left false)."""
    return f'{{{{"@type": {FILTER_CONFIG}, config: {fault(status)}}}}}'


def per_filter(value: str, indent: int) -> str:
    pad = " " * indent
    return f"{pad}typed_per_filter_config:\n{pad}  envoy.filters.http.fault: {value}\n"


def route(path: str, body: str, extra: str = "") -> str:
    """A route (an item of ``routes:``) answering 200 ``body`` itself: the router's direct
    response comes after the fault filter, so an abort answers first."""
    return (f'              - match: {{{{path: "{path}"}}}}\n'
            f'                direct_response: {{{{status: 200, body: {{{{inline_string: '
            f'"{body}"}}}}}}}}\n' + extra)


def hcm(name: str, port_field: str, fault_disabled: bool, route_config_extra: str,
        vhosts: str) -> str:
    return hcm_listener_item(name, port_field) + f"""\
          stat_prefix: {name}
          http_filters:
          - name: envoy.filters.http.fault
            disabled: {str(fault_disabled).lower()}
            typed_config: {fault(418)}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
""" + route_config_extra + "            virtual_hosts:\n" + vhosts


def vhost(name: str, extra: str, routes: str) -> str:
    return (f"            - name: {name}\n              domains: [\"{name}\"]\n" + extra
            + "              routes:\n" + routes)


# Fault on in the chain (abort 418): off for a route, for a virtual host, back on (with the
# route's own settings) for a route of that virtual host, plain or in a FilterConfig.
ON_BY_DEFAULT = hcm("fon", "port", False, "", (
    vhost("a", "", route("/plain", "plain") + route("/off", "off", per_filter(OFF, 16))
          + route("/route-fault", "rf", per_filter(fault(503), 16))
          + route("/no-percentage", "np", per_filter(NO_PERCENTAGE, 16))
          + route("/delay-no-percentage", "dnp", per_filter(DELAY_NO_PERCENTAGE, 16)))
    + vhost("b", per_filter(OFF, 14),
            route("/vh-off", "vh-off") + route("/back-on", "back-on", per_filter(fault(429), 16))
            + route("/back-on-wrapped", "bw", per_filter(wrapped(431), 16)))))

# The whole route config turns it off; a virtual host turns it back on with its settings.
OFF_FOR_ROUTE_CONFIG = hcm("frc", "rc_port", False, per_filter(OFF, 12), (
    vhost("a", "", route("/rc-off", "rc-off"))
    + vhost("b", per_filter(fault(502), 14),
            route("/vh-on", "vh-on") + route("/off-again", "off-again", per_filter(OFF, 16)))))

# Fault off by default (http_filters[].disabled): on only where a route or virtual host gives
# its per-route config.
OFF_BY_DEFAULT = hcm("fdis", "dis_port", True, "", (
    vhost("a", "", route("/default", "default") + route("/on", "on", per_filter(fault(429), 16))
          + route("/on-wrapped", "ow", per_filter(wrapped(451), 16))
          + route("/off", "off", per_filter(OFF, 16)))
    + vhost("b", per_filter(fault(503), 14),
            route("/vh-on", "vh-on") + route("/vh-on-route-off", "x", per_filter(OFF, 16)))))

CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
""" + ON_BY_DEFAULT + OFF_FOR_ROUTE_CONFIG + OFF_BY_DEFAULT

# (listener's port field, host, path)
REQUESTS = [
    ("port", "a", "/plain"), ("port", "a", "/off"), ("port", "a", "/route-fault"),
    ("port", "a", "/no-percentage"), ("port", "a", "/delay-no-percentage"),
    ("port", "b", "/vh-off"), ("port", "b", "/back-on"), ("port", "b", "/back-on-wrapped"),
    ("rc_port", "a", "/rc-off"), ("rc_port", "b", "/vh-on"), ("rc_port", "b", "/off-again"),
    ("dis_port", "a", "/default"), ("dis_port", "a", "/on"), ("dis_port", "a", "/on-wrapped"),
    ("dis_port", "a", "/off"), ("dis_port", "b", "/vh-on"), ("dis_port", "b", "/vh-on-route-off"),
]

# What Envoy 1.39.3 answers (the envoy run checks this table too): the filter's 418 where it
# runs with its own settings, the route's or virtual host's status where they give theirs.
ABORT = "fault filter abort"
EXPECTED = {
    ("port", "a", "/plain"): (418, ABORT),
    ("port", "a", "/off"): (200, "off"),
    ("port", "a", "/route-fault"): (503, ABORT),
    ("port", "a", "/no-percentage"): (200, "np"),
    ("port", "a", "/delay-no-percentage"): (200, "dnp"),
    ("port", "b", "/vh-off"): (200, "vh-off"),
    ("port", "b", "/back-on"): (429, ABORT),
    ("port", "b", "/back-on-wrapped"): (431, ABORT),
    ("rc_port", "a", "/rc-off"): (200, "rc-off"),
    ("rc_port", "b", "/vh-on"): (502, ABORT),
    ("rc_port", "b", "/off-again"): (200, "off-again"),
    ("dis_port", "a", "/default"): (200, "default"),
    ("dis_port", "a", "/on"): (429, ABORT),
    ("dis_port", "a", "/on-wrapped"): (451, ABORT),
    ("dis_port", "a", "/off"): (200, "off"),
    ("dis_port", "b", "/vh-on"): (503, ABORT),
    ("dis_port", "b", "/vh-on-route-off"): (200, "x"),
}


@pytest.mark.parametrize("kind", PROXIES)
def test_route_based_filter_chain_as_envoy(kind: str, proxy_process: Callable[..., Any]) -> None:
    proxy = start_config(kind, CONFIG, proxy_process, more_ports=("rc_port", "dis_port"))
    ports = {"port": proxy.port, **proxy.ports}
    got = {}
    for field, host, path in REQUESTS:
        r = exchange(ports[field], f"GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        got[(field, host, path)] = (r.status, r.body.decode())
    assert got == EXPECTED, kind
    # Every abort counts in the filter's stats, with the route's settings too (as Envoy's).
    stats = proxy.stats()
    aborts = {p: stats.get(f"http.{p}.fault.aborts_injected") for p in ("fon", "frc", "fdis")}
    assert aborts == {"fon": 4, "frc": 1, "fdis": 3}, (kind, aborts)
    assert stats.get("http.fon.fault.delays_injected") == 0, kind
