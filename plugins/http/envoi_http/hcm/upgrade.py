"""HTTP/1.1 Upgrade (WebSocket and other tokens) through ``upgrade_configs``, as Envoy 1.39 does.

* The HCM's ``upgrade_configs`` name the upgrade types it accepts (``enabled`` defaults to true);
  a route's ``upgrade_configs`` override per type: ``enabled: false`` refuses the upgrade on that
  route, ``enabled: true`` allows it even when the HCM does not list the type.
* A refused upgrade (any token other than ``h2c``) is answered ``403`` with ``connection: close``
  and counted in ``downstream_rq_ws_on_non_ws_route``; an accepted one counts
  ``downstream_cx_upgrades_total`` and holds ``downstream_cx_upgrades_active`` until the stream
  ends. The ``upgrade`` and ``connection`` headers go to the upstream as sent.
* ``Upgrade: h2c`` is served as plain HTTP/1.1 with the upgrade headers dropped (the codec does not
  switch for it), and an ``Upgrade`` without ``Connection: upgrade`` is no upgrade at all.
* After the upstream's 101 the codecs pass bytes through both ways until either side closes; the
  upstream connection is closed with the tunnel, never returned to the pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoi_http.codec.events import Headers

# Hop-by-hop request headers dropped for an upgrade request: as for any request, except that
# ``upgrade`` and ``connection`` are the upgrade itself and go to the upstream.
REQ_DROP = frozenset((b"host", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                      b"http2-settings", b"te", b"expect"))
# Response headers dropped from a 101 (date and server are the proxy's own).
RESP_DROP_101 = frozenset((b"keep-alive", b"proxy-connection", b"transfer-encoding", b"date",
                           b"server", b"content-length"))


def upgrade_map(configs: Iterable[Any]) -> dict[bytes, bool]:
    """``upgrade_configs`` (HCM or route) as {lower-cased upgrade type: enabled}."""
    out: dict[bytes, bool] = {}
    for c in configs:
        enabled = c.enabled.value if c.HasField("enabled") else True
        out[c.upgrade_type.lower().encode()] = enabled
    return out


def allowed(hcm: dict[bytes, bool], route_map: dict[bytes, bool] | None, token: bytes) -> bool:
    """Envoy's ``createUpgradeFilterChain``: the route's word wins, else the HCM's."""
    if route_map:
        per_route = route_map.get(token)
        if per_route is not None:
            return per_route
    return hcm.get(token, False)


def request_headers(raw: Headers) -> Headers:
    """The request headers of an upgrade request, minus the hop-by-hop ones it must not carry."""
    for name, _ in raw:
        if name in REQ_DROP:
            return [(k, v) for k, v in raw if k not in REQ_DROP]
    return raw
