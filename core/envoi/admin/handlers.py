"""The admin's endpoint table: path → handler, whether it changes server state, and the one-line
help text ``/help`` prints.

As in Envoy, an endpoint that changes state answers only to POST (a GET gets 405) so that a
crawler or a stray browser tab cannot fail health checks or stop the server.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from envoi.admin import views
from envoi.admin.api import AdminServerApi
from envoi.admin.http import Request, Response, StreamOut
from envoi.stats.exposition import (
    STATS_TYPES,
    render_json,
    render_prometheus,
    render_text,
)
from envoi.tap import TapSession
from envoi.tap import parse_query as parse_tap_query

JSON = "application/json"
TEXT = "text/plain; charset=UTF-8"


@dataclass(frozen=True)
class Endpoint:
    path: str
    help: str
    handler: Callable[[AdminServerApi, Request], Response]
    mutates: bool = False
    #: The query parameters envoi acts on, with Envoy's help text for them.
    params: tuple[tuple[str, str], ...] = ()


_FORMAT_TEXT_JSON = ("format", "File format to use; One of (text, json)")
_USEDONLY = ("usedonly", "Only include stats that have been written by system since restart")
_FILTER = ("filter", "Regular expression (Python re, where Envoy uses Google re2) for "
                     "filtering stats")


def _text(body: str, status: int = 200) -> Response:
    return Response(status, body.encode(), TEXT)


def _json(body: str, status: int = 200) -> Response:
    return Response(status, body.encode(), JSON)


def _flag(request: Request, name: str) -> bool:
    # Envoy treats a bare "?usedonly" as set; "?usedonly=false" is not worth a special case.
    return name in request.query


# ----------------------------------------------------------------------------------- /stats


def _stats_filter(request: Request) -> re.Pattern[str] | Response | None:
    raw = request.query.get("filter")
    if not raw:
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        return _text(f"Invalid re2 regex: {exc}\n", 400)


def handle_stats(server: AdminServerApi, request: Request) -> Response:
    fmt = request.query.get("format", "text")
    if fmt == "prometheus":
        return handle_prometheus(server, request)
    pattern = _stats_filter(request)
    if isinstance(pattern, Response):
        return pattern
    type_ = request.query.get("type", "All")
    if type_ not in STATS_TYPES:
        return _text(f"invalid &type= param: '{type_}'\n", 400)
    used_only = _flag(request, "usedonly")
    if fmt == "json":
        return _json(render_json(server.stats_snapshot(), filter_re=pattern,
                                 used_only=used_only, type_=type_))
    if fmt != "text":
        return _text(f"usage: /stats?format=(text|json|prometheus); got {fmt}\n", 400)
    return _text(render_text(server.stats_snapshot(), filter_re=pattern, used_only=used_only,
                             type_=type_))


def handle_prometheus(server: AdminServerApi, request: Request) -> Response:
    pattern = _stats_filter(request)
    if isinstance(pattern, Response):
        return pattern
    body = render_prometheus(
        server.stats_snapshot(),
        used_only=_flag(request, "usedonly"),
        filter_re=pattern,
        text_readouts=_flag(request, "text_readouts"),
    )
    return _text(body)


def handle_runtime(server: AdminServerApi, request: Request) -> Response:
    return _json(server.runtime_json())


RUNTIME_MODIFY_USAGE = (
    "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n"
    "       or send the parameters as form values\n"
    "use an empty value to remove a previously added override"
)


def handle_runtime_modify(server: AdminServerApi, request: Request) -> Response:
    if not request.query:
        return _text(RUNTIME_MODIFY_USAGE, 400)
    error = server.runtime_modify(dict(request.query))
    if error:
        return _text(error, 503)
    return _text("OK\n")


def handle_reset_counters(server: AdminServerApi, request: Request) -> Response:
    server.reset_counters()
    return _text("OK\n")


# --------------------------------------------------------------------------- server state


def handle_ready(server: AdminServerApi, request: Request) -> Response:
    state = server.state
    return _text(f"{state}\n", 200 if state == "LIVE" else 503)


def handle_healthcheck_fail(server: AdminServerApi, request: Request) -> Response:
    server.healthcheck_fail()
    return _text("OK\n")


def handle_healthcheck_ok(server: AdminServerApi, request: Request) -> Response:
    server.healthcheck_ok()
    return _text("OK\n")


def handle_drain_listeners(server: AdminServerApi, request: Request) -> Response:
    server.drain_listeners(
        graceful=_flag(request, "graceful"), inbound_only=_flag(request, "inboundonly")
    )
    return _text("OK\n")


def handle_quit(server: AdminServerApi, request: Request) -> Response:
    # Answer first, then stop: the caller should see its OK before the socket goes away.
    response = _text("OK\n")
    response.after = server.shutdown
    return response


# ------------------------------------------------------------------------------ inventories


def handle_clusters(server: AdminServerApi, request: Request) -> Response:
    if request.query.get("format") == "json":
        return _json(views.clusters_json(server))
    return _text(views.clusters_text(server))


def handle_listeners(server: AdminServerApi, request: Request) -> Response:
    if request.query.get("format") == "json":
        return _json(views.listeners_json(server))
    return _text(views.listeners_text(server))


def handle_server_info(server: AdminServerApi, request: Request) -> Response:
    return _json(views.server_info_json(server))


def handle_config_dump(server: AdminServerApi, request: Request) -> Response:
    return _json(views.config_dump_json(server, include_eds=_flag(request, "include_eds")))


def handle_certs(server: AdminServerApi, request: Request) -> Response:
    return _json(views.certs_json(server))


# ------------------------------------------------------------------------------------- /tap


class TapStream:
    """``/tap``'s body: the session's JSON lines as they come, ``limit`` events at most."""

    def __init__(self, session: TapSession, limit: int | None) -> None:
        self.session = session
        self.left = limit
        self.out: StreamOut | None = None

    def start(self, out: StreamOut) -> None:
        self.out = out
        self.session.set_reader(self._pump)

    def writable(self) -> None:
        self._pump()

    def stop(self) -> None:
        self.session.close()
        self.out = None

    def _pump(self) -> None:
        out = self.out
        if out is None or out.paused:
            return  # the reader is slow: lines wait in the session, up to its bound
        lines = self.session.take()
        if self.left is not None:
            kept = []
            for line in lines:
                if self.left <= 0:
                    break
                kept.append(line)
                if not line.startswith(b'{"type":"tap.dropped"'):
                    self.left -= 1
            lines = kept
        if lines:
            out.write(b"".join(lines))
        if self.left is not None and self.left <= 0:
            self.session.close()
            self.out = None
            out.end()


def handle_tap(server: AdminServerApi, request: Request) -> Response:
    if request.method != "GET":
        return _text("envoi's /tap streams decoded events with GET ?listener=&filter=&"
                     "<field>=<pattern>; Envoy's tap filter configuration (a POST with a tap "
                     "config) is not implemented\n", 400)
    try:
        listener, filter_name, match, limit, buffer_bytes = parse_tap_query(request.query)
    except ValueError as exc:
        return _text(f"{exc}\n", 400)
    hub = server.tap_hub
    points = [p for p in hub.points if (not listener or p.listener == listener)
              and (not filter_name or p.filter == filter_name)]
    if not points:
        known = "\n".join(f"  listener={p['listener']} filter={p['filter']}"
                          for p in hub.describe_points()) or "  (none)"
        return _text(f"no tap point for listener '{listener or '*'}' and filter "
                     f"'{filter_name or '*'}'; the tap points are:\n{known}\n", 404)
    session = hub.open(listener, filter_name, match, buffer_bytes)
    return Response(200, b"", "application/x-ndjson", stream=TapStream(session, limit))


def handle_tap_points(server: AdminServerApi, request: Request) -> Response:
    return _json(json.dumps({"tap_points": server.tap_hub.describe_points()}, indent=2))


# ---------------------------------------------------------------------------------------- /


@functools.cache
def home_page() -> bytes:
    """``/``: one HTML file, shipped in the package (no build step, nothing from elsewhere)."""
    return resources.files("envoi.admin").joinpath("home.html").read_bytes()


def handle_home(server: AdminServerApi, request: Request) -> Response:
    return Response(200, home_page(), "text/html; charset=UTF-8")


def handle_help(server: AdminServerApi, request: Request) -> Response:
    return _text(help_text())


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/", "Admin home page", handle_home),
    Endpoint("/certs", "print certs on machine", handle_certs),
    Endpoint("/clusters", "upstream cluster status", handle_clusters,
             params=(_FORMAT_TEXT_JSON,)),
    Endpoint("/config_dump", "dump current Envoy configs", handle_config_dump,
             params=(("include_eds", "Dump currently loaded configuration including EDS. See "
                                     "the response definition for more information"),)),
    Endpoint("/drain_listeners", "drain listeners", handle_drain_listeners, mutates=True,
             params=(("graceful", "When draining listeners, enter a graceful drain period "
                      "prior to closing listeners. This behaviour and duration is configurable "
                      "via server options or CLI"),
                     ("inboundonly", "Drains all inbound listeners. traffic_direction field in "
                      "envoy_v3_api_msg_config.listener.v3.Listener is used to determine "
                      "whether a listener is inbound or outbound."))),
    Endpoint("/healthcheck/fail", "cause the server to fail health checks",
             handle_healthcheck_fail, mutates=True),
    Endpoint("/healthcheck/ok", "cause the server to pass health checks",
             handle_healthcheck_ok, mutates=True),
    Endpoint("/help", "print out list of admin commands", handle_help),
    Endpoint("/listeners", "print listener info", handle_listeners,
             params=(_FORMAT_TEXT_JSON,)),
    Endpoint("/quitquitquit", "exit the server", handle_quit, mutates=True),
    Endpoint("/ready", "print server state, return 200 if LIVE, otherwise return 503",
             handle_ready),
    Endpoint("/reset_counters", "reset all counters to zero", handle_reset_counters,
             mutates=True),
    Endpoint("/runtime", "print runtime values", handle_runtime),
    Endpoint("/runtime_modify", "Adds or modifies runtime values as passed in query parameters. "
             "To delete a previously added key, use an empty string as the value. "
             "E.g. ?key1=value1&key2=value2...",
             handle_runtime_modify, mutates=True),
    Endpoint("/server_info", "print server version/status information", handle_server_info),
    Endpoint("/stats", "print server stats", handle_stats, params=(
        _USEDONLY, _FILTER,
        ("format", "Format to use; One of (text, json, prometheus)"),
        ("type", "Stat types to include.; One of (All, Counters, Histograms, Gauges, "
                 "TextReadouts)"))),
    Endpoint("/stats/prometheus", "print server stats in prometheus format", handle_prometheus,
             params=(_USEDONLY, ("text_readouts", "Render text_readouts as new gaugues with "
                                 "value 0 (increases Prometheus data size)"), _FILTER)),
    Endpoint("/tap", "stream the decoded events of a listener's filters as JSON lines "
             "(envoi's; Envoy's /tap configures its tap filter)", handle_tap, params=(
                 ("listener", "Only this listener's events"),
                 ("filter", "Only this filter's events (e.g. envoy.filters.network.mongo_proxy)"),
                 ("limit", "End the stream after this many events"),
                 ("buffer", "Bytes held for a slow reader before events are dropped "
                            "(default 1 MiB)"),
                 ("<field>", "Only events whose field matches this pattern (fnmatch: "
                             "collection=users, status=5*)"))),
    Endpoint("/tap/points", "the listeners and filters that publish to /tap",
             handle_tap_points),
)

_BY_PATH = {e.path: e for e in ENDPOINTS}


def help_text() -> str:
    """Envoy's ``/help``: each endpoint, ``(POST)`` after the ones that change state, and the
    query parameters each takes."""
    lines = ["admin commands are:"]
    for e in ENDPOINTS:
        lines.append(f"  {e.path}{' (POST)' if e.mutates else ''}: {e.help}")
        lines.extend(f"      {name}: {text}" for name, text in e.params)
    return "\n".join(lines) + "\n"


def dispatch(server: AdminServerApi, request: Request) -> Response:
    endpoint = _BY_PATH.get(request.path.rstrip("/") or "/")
    if endpoint is None:
        return _text("invalid path. " + help_text(), 404)
    if endpoint.mutates and request.method != "POST":
        return _text(f"Method {request.method} not allowed, POST required.", 405)
    return endpoint.handler(server, request)
