"""The router's answers that need no upstream (``direct_response``, ``redirect``) and its request
rewrites (``prefix_rewrite``, ``regex_rewrite``, ``host_rewrite_literal``)."""

from __future__ import annotations

from envoi.http.headers import HeaderMap

from envoi_http.router.config import Route


def redirect_location(route: Route, h: HeaderMap) -> bytes:
    """The ``location`` of a route's redirect for request ``h``, as Envoy builds it."""
    rd = route.redirect
    assert rd is not None
    # Envoy's :scheme of an HTTP/1.1 request is its (trusted) x-forwarded-proto.
    scheme = rd.scheme or h.get_bytes(b"x-forwarded-proto") or h.scheme or b"http"
    port = b":%d" % rd.port if rd.port else b""
    # require_tls keeps the Host as received, port and all (Envoy's SslRedirector).
    host = rd.host or (h.authority if rd.keep_port else _redirect_host(h, scheme, port))
    path, sep, query = h.path.partition(b"?")
    if rd.path is not None:
        path = rd.path
    elif rd.prefix_rewrite is not None and route.prefix is not None:
        path = rd.prefix_rewrite + path[len(route.prefix):]
    if sep and not rd.strip_query and b"?" not in path:
        path = path + b"?" + query
    return scheme + b"://" + host + port + path


def _redirect_host(h: HeaderMap, scheme: bytes, port: bytes) -> bytes:
    """The request's host for a redirect's ``location``, as Envoy's ``processRequestHost``: its
    port goes when a ``port_redirect`` replaces it, or when the scheme changes and the port is
    the default of the request's ``x-forwarded-proto``; otherwise it stays."""
    host = h.authority
    end = host.rfind(b"]:") + 1 if host[:1] == b"[" else host.rfind(b":")
    if end <= 0:
        return host
    remove = bool(port)
    proto = h.get_bytes(b"x-forwarded-proto") or b""
    if not remove and scheme != proto:
        tail = host[end:]
        remove = (proto == b"https" and tail == b":443") or (proto == b"http" and tail == b":80")
    return host[:end] if remove else host


def rewrite(route: Route, h: HeaderMap, suppress_envoy_headers: bool) -> None:
    """The route's path and host rewrites, with Envoy's ``x-envoy-original-*`` headers."""
    if route.prefix_rewrite is not None and route.prefix is not None:
        if not suppress_envoy_headers:
            h.set_bytes(b"x-envoy-original-path", h.path)
        h.path = route.prefix_rewrite + h.path[len(route.prefix):]
    elif route.regex_rewrite is not None:
        path, sep, query = h.path.partition(b"?")
        h.set_bytes(b"x-envoy-original-path", h.path)
        h.path = route.regex_rewrite(path) + sep + query
    if route.host_rewrite is not None:
        h.set_bytes(b"x-envoy-original-host", h.authority)
        h.authority = route.host_rewrite
