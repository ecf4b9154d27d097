"""Envoy's route-based filter chain: which of the HCM's HTTP filters a stream gets, by its route.

An ``http_filters`` entry with ``disabled: true`` is off unless a route turns it on; a route,
its virtual host or the route config turns a filter off with a ``typed_per_filter_config`` entry
``envoy.config.route.v3.FilterConfig {disabled: true}``, and on with any other entry for it (its
per-route config, plain or as ``FilterConfig.config``). The most specific one says.

The stream's route is known before its chain is built (``ConnectionManager.new_stream``), so a
filter a route leaves out is never made for that stream. Each route's chain is worked out the
first time a stream takes the route; an HCM whose config toggles nothing has no ``RouteChains``
at all, and its streams run every factory as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoi.config import ConfigIssue

if TYPE_CHECKING:
    from envoi.http.filter import HttpFilterFactoryCb

    from envoi_http.router.config import Route, RouteTable


def toggled_names(table: RouteTable | None) -> set[str]:
    """The filter names some route, virtual host or the route config turns on or off."""
    if table is None:
        return set()
    names: set[str] = set()
    for vh in table.virtual_hosts():
        names.update(vh.filter_disabled)
        for r in vh.routes:
            names.update(r.filter_disabled)
    return names


def terminal_disabled(table: RouteTable | None, terminal: str, path: str) -> list[ConfigIssue]:
    """A route that turns the terminal filter (the router) off would leave its streams with no
    one to answer them: refused."""
    if table is None:
        return []
    for vh in table.virtual_hosts():
        if vh.filter_disabled.get(terminal) or any(r.filter_disabled.get(terminal)
                                                   for r in vh.routes):
            return [ConfigIssue(path, f"the terminal filter {terminal} cannot be disabled for "
                                      f"a route (virtual host {vh.name!r})")]
    return []


class RouteChains:
    """The filter factories each route's streams run (cached per route)."""

    def __init__(self, factories: tuple[HttpFilterFactoryCb, ...], names: tuple[str, ...],
                 default_off: tuple[bool, ...]) -> None:
        self.factories = factories
        self.names = names
        self.default_off = default_off
        self.default = tuple(f for f, off in zip(factories, default_off, strict=True)
                             if not off)
        self._by_route: dict[int, tuple[Route, tuple[HttpFilterFactoryCb, ...]]] = {}

    def for_route(self, route: Route | None) -> tuple[HttpFilterFactoryCb, ...]:
        if route is None:
            return self.default
        found = self._by_route.get(id(route))
        if found is not None and found[0] is route:
            return found[1]
        chain = []
        for f, name, off in zip(self.factories, self.names, self.default_off, strict=True):
            says = route.filter_disabled_here(name)
            if not (off if says is None else says):
                chain.append(f)
        out = tuple(chain)
        self._by_route[id(route)] = (route, out)  # (the route kept: its id stays its own)
        return out
