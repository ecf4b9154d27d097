"""The downstream address and the headers that carry it, by Envoy 1.39's rules
(``ConnectionManagerUtility::mutateRequestHeaders``), and ``headers_with_underscores_action``.

``use_remote_address: true``
    The peer is the proxy's client. With ``xff_num_trusted_hops: N > 0`` the client is the N-th
    address from the right of the ``x-forwarded-for`` the request came with (before the append);
    with too few entries (or N = 0) it is the peer. The peer address is appended to
    ``x-forwarded-for`` (``","``, no space) — for a loopback peer the host's own address, as Envoy
    appends ``localAddress()`` — ``x-forwarded-proto`` is overwritten, and
    ``x-envoy-external-address`` is set to the client (no address is internal by default in 1.39).
``use_remote_address: false``
    Nothing is appended or overwritten; the client is the ``(N + 1)``-th address from the right of
    ``x-forwarded-for`` if it has that many, else the peer.

A client taken from ``x-forwarded-for`` has port 0 (``%DOWNSTREAM_REMOTE_ADDRESS%`` is
``1.2.3.4:0``); ``%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`` stays the peer.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from functools import cache

from envoi.http.headers import HeaderMap

from envoi_http.codec.events import Headers
from envoi_http.hcm import internal

XFF = b"x-forwarded-for"
EXTERNAL = b"x-envoy-external-address"
_SIOCGIFADDR = 0x8915

# headers_with_underscores_action (core.v3.HttpProtocolOptions.HeadersWithUnderscoresAction)
ALLOW, REJECT_REQUEST, DROP_HEADER = 0, 1, 2


@cache
def local_address() -> bytes:
    """The host's first non-loopback IPv4 interface address (Envoy's ``getLocalAddress``)."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR,
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            ip = socket.inet_ntoa(packed[20:24])
            if not ip.startswith("127."):
                return ip.encode()
    return b"127.0.0.1"


def _is_loopback(ip: bytes) -> bool:
    return ip.startswith(b"127.") or ip == b"::1"


def xff_address(h: HeaderMap, skip: int) -> bytes | None:
    """Envoy's ``getLastAddressFromXFF``: the entry ``skip`` places from the right, if it is a
    valid IP address."""
    xff = h.get_bytes(XFF)
    if not xff:
        return None
    entries = xff.split(b",")
    if skip >= len(entries):
        return None
    value = entries[-1 - skip].strip()
    try:
        ipaddress.ip_address(value.decode("latin-1"))
    except ValueError:
        return None
    return value


def mutate(h: HeaderMap, use_remote_address: bool, hops: int, peer_ip: bytes,
           internal_nets: tuple[internal.Network, ...] = (), proto: bytes = b"http"
           ) -> bytes | None:
    """Apply the address headers; return the client address when it came from XFF. Requests
    that are not internal (``hcm/internal.py``) lose the internal-only ``x-envoy-*`` headers."""
    if use_remote_address:
        client = xff_address(h, hops - 1) if hops > 0 else None
        xff = h.get_bytes(XFF)
        append = local_address() if _is_loopback(peer_ip) else peer_ip
        h.set_bytes(XFF, xff + b"," + append if xff else append)
        h.set_bytes(b"x-forwarded-proto", proto)
        final = client if client is not None else peer_ip
        # Envoy: internal only when the request came with no x-forwarded-for of its own.
        if xff is None and internal.is_internal(final, internal_nets):
            h.set_bytes(b"x-envoy-internal", b"true")
        else:
            internal.clean(h)
            h.set_bytes(EXTERNAL, final)
        return client
    internal.clean(h)
    if h.get_bytes(b"x-forwarded-proto") is None:
        h.add_bytes(b"x-forwarded-proto", proto)
    return xff_address(h, hops)


def underscored(raw: Headers) -> bool:
    return any(b"_" in name for name, _ in raw)


def drop_underscored(raw: Headers) -> tuple[Headers, int]:
    kept = [(k, v) for k, v in raw if b"_" not in k]
    return kept, len(raw) - len(kept)
