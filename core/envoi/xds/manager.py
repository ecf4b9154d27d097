"""The main process's side of dynamic configuration: reads ``dynamic_resources`` and the EDS
clusters' ``eds_config``, runs the subscriptions (files and gRPC streams), and turns each update
into a change every process applies (:mod:`envoi.workers.updates`).

As Envoy does, an update is applied resource by resource: the resources that build are applied,
the others are reported together (the update counts ``update_rejected`` and a control plane gets
a NACK naming them), and an update whose resources cannot even be decoded changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from typing import Any

from envoi.config import ConfigError, ConfigIssue
from envoi.workers.updates import apply_here
from envoi.xds import clusters as cds
from envoi.xds import listeners as lds
from envoi.xds.fs import FileSubscription
from envoi.xds.grpc_mux import GrpcMux, Watch
from envoi.xds.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    TYPE_ORDER,
    ReloadStats,
    Resource,
    SubscriptionStats,
    UpdateFailure,
    check,
)
from envoi.xds.routes import Key, RouteConfigProvider, routes_payload
from envoi.xds.sources import GrpcSource, Source, api_source, config_source

log = logging.getLogger("envoi.xds")


class XdsManager:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.state = server.xds
        self.files: list[FileSubscription] = []
        self.eds_files: dict[str, FileSubscription] = {}
        #: By source: (source, None) for ADS, (source, type URL) for a type's own stream.
        self.muxes: dict[tuple[GrpcSource, str | None], GrpcMux] = {}
        self.ads: GrpcSource | None = None
        self.versions: dict[str, str] = {}
        self.rds_files: dict[Key, FileSubscription] = {}
        self._route_timers: dict[Key, asyncio.TimerHandle] = {}
        self.cds_reload: ReloadStats | None = None
        self.eds_sources: dict[str, Source] = {}
        self._plans = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- configuration -----------------------------------------------------------------------

    def configure(self, bootstrap: Any) -> None:
        """Read ``dynamic_resources``; load file sources now (before anything serves)."""
        issues: list[ConfigIssue] = []
        dr = bootstrap.dynamic_resources
        for fd, _ in dr.ListFields():
            if fd.name not in ("lds_config", "cds_config", "ads_config"):
                issues.append(ConfigIssue(f"dynamic_resources.{fd.name}",
                                          "is not implemented by envoi"))
        if dr.HasField("ads_config"):
            try:
                self.ads = api_source(dr.ads_config, "dynamic_resources.ads_config",
                                      aggregated=True)
            except ConfigError as exc:
                issues += exc.errors
        sources: list[tuple[str, Source]] = []
        for field, type_url in (("cds_config", CLUSTER), ("lds_config", LISTENER)):
            if not dr.HasField(field):
                continue
            try:
                src = config_source(getattr(dr, field), f"dynamic_resources.{field}")
            except ConfigError as exc:
                issues += exc.errors
                continue
            if src.kind == "ads" and self.ads is None:
                issues.append(ConfigIssue(f"dynamic_resources.{field}.ads",
                                          "ads needs dynamic_resources.ads_config"))
                continue
            sources.append((type_url, src))
        issues += self._check_grpc_clusters(sources)
        if issues:
            raise ConfigError(issues)
        root = self.server.stats.root
        for type_url, src in sources:
            scope = root.scope("cluster_manager.cds" if type_url == CLUSTER
                               else "listener_manager.lds")
            if type_url == CLUSTER:  # CDS (not LDS) counts the updates that changed something
                self.cds_reload = ReloadStats(scope)
            handler = self.on_clusters if type_url == CLUSTER else self.on_listeners
            self._subscribe(type_url, src, handler, SubscriptionStats(scope))
        self.refresh_endpoint_interest()
        self.refresh_route_interest()

    def _check_grpc_clusters(self, sources: list[tuple[str, Source]]) -> list[ConfigIssue]:
        out = []
        grpcs = [("dynamic_resources.ads_config", self.ads)] if self.ads else []
        grpcs += [(f"dynamic_resources.{'cds' if t == CLUSTER else 'lds'}_config",
                   s.grpc) for t, s in sources if s.grpc is not None]
        for path, g in grpcs:
            assert g is not None
            if self.server.cluster_manager.get(g.cluster_name) is None:
                out.append(ConfigIssue(path, f"unknown gRPC cluster '{g.cluster_name}' (the "
                                       "control plane must be a static cluster)"))
        return out

    def _subscribe(self, type_url: str, src: Source, handler: Any,
                   stats: SubscriptionStats | None) -> None:
        def on_result(error: str | None, version: str) -> None:
            if error is None:
                self.versions[type_url] = version

        urls = frozenset(self.server.plugins.plugin_type_urls)
        if src.kind == "path":
            sub = FileSubscription(src.path, type_url,
                                   lambda res, version: handler(res, version, None), stats,
                                   watched_directory=src.watched_directory,
                                   plugin_type_urls=urls,
                                   on_result=on_result)
            self.files.append(sub)
            sub.refresh()
            return
        g = self.ads if src.kind == "ads" else src.grpc
        assert g is not None
        mux = self._mux(g, src.kind == "ads", type_url)
        mux.watch(Watch(type_url, handler, stats, wildcard=type_url in (CLUSTER, LISTENER),
                        on_result=on_result))

    def _mux(self, g: GrpcSource, aggregated: bool, type_url: str) -> GrpcMux:
        key = (g, None if aggregated else type_url)
        mux = self.muxes.get(key)
        if mux is None:
            bs = self.server.bootstrap
            mux = GrpcMux(node=bs.node, cluster_name=g.cluster_name,
                          cluster_manager=self.server.cluster_manager,
                          scope=self.server.stats.root.scope("control_plane"), delta=g.delta,
                          aggregated=aggregated, type_order=TYPE_ORDER,
                          plugin_type_urls=frozenset(self.server.plugins.plugin_type_urls),
                          node_on_first_only=g.node_on_first_only)
            self.muxes[key] = mux
            if self.loop is not None:
                self._tasks.append(self.loop.create_task(mux.run()))
        return mux

    # -- serving -----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.state.serving = True
        for sub in [*self.files, *self.eds_files.values(), *self.rds_files.values()]:
            self._tasks.append(loop.create_task(sub.run()))
        for mux in self.muxes.values():
            self._tasks.append(loop.create_task(mux.run()))
        for name in list(self.state.warming):
            self._arm_fetch_timeout(name)
        for provider in self.server.route_configs.providers.values():
            self._arm_route_timeout(provider)

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
        for timer in [*self._timers.values(), *self._route_timers.values()]:
            timer.cancel()

    def _known(self) -> frozenset[str]:
        return frozenset(self.server.plugins.config_type_urls)

    def _version(self, name: str, version: str) -> str:
        """A resource's version: its own (delta xDS), else the update's."""
        for mux in self.muxes.values():
            if mux.delta and name in mux.resource_versions:
                return mux.resource_versions[name]
        return version

    def _apply(self, name: str, payload: Any) -> str | None:
        pool = self.server.pool
        if pool is not None:
            return pool.apply_update(name, payload)  # type: ignore[no-any-return]
        return apply_here(self.server, name, payload)

    # -- LDS -----------------------------------------------------------------------------------

    def on_listeners(self, resources: list[tuple[str, Any]], version: str,
                     removed: list[str] | None) -> str | None:
        state, server = self.state, self.server
        errors: list[str] = []
        prepared = lds.PreparedListeners()
        upserts: list[tuple[str, bytes]] = []
        ports: dict[str, int] = {}
        now = time.time()
        seen: set[str] = set()
        for name, msg in resources:
            if name in seen:
                errors.append(f"duplicate listener {name} found")
                continue
            seen.add(name)
            old = state.resources.get(name)
            if old is not None and old.message == msg:
                continue
            try:
                check(msg, f"listener '{name}'", self._known())
                lst = lds.build_one(server, state, name, msg, None)
            except ConfigError as exc:
                server.lm_stats.listener_create_failure.inc()
                own = f"listener '{name}'"
                detail = "; ".join(i.message if i.path == own else f"{i.path}: {i.message}"
                                   for i in exc.errors)
                errors.append(f"listener '{name}': {detail}")
                state.listener_errors[name] = UpdateFailure(msg, detail, now)
                continue
            prepared.upserts.append((name, lst, Resource(name, msg,
                                                             self._version(name, version), now)))
            upserts.append((name, msg.SerializeToString()))
            ports[name] = lst.port
        if removed is None:
            prepared.removes = [n for n in state.listeners if n not in seen]
        else:
            prepared.removes = [n for n in removed if n in state.listeners]
        if prepared.upserts or prepared.removes:
            plan = next(self._plans)
            state.planned[plan] = prepared
            error = self._apply("xds_listeners", {
                "plan": plan, "upserts": upserts, "removes": prepared.removes, "ports": ports,
                "version": version, "time": now})
            state.planned.pop(plan, None)
            if error is not None:
                for name, lst, res in prepared.upserts:
                    lds._close(lst)
                    state.listener_errors[name] = UpdateFailure(res.message, error, now)
                errors.append(error)
            else:
                for name in [*(n for n, _, _ in prepared.upserts), *prepared.removes]:
                    state.listener_errors.pop(name, None)
            self.refresh_route_interest()
        return "\n".join(errors) or None

    # -- CDS -----------------------------------------------------------------------------------

    def on_clusters(self, resources: list[tuple[str, Any]], version: str,
                    removed: list[str] | None) -> str | None:
        state, server = self.state, self.server
        errors: list[str] = []
        prepared = cds.PreparedClusters()
        upserts: list[tuple[str, bytes]] = []
        now = time.time()
        seen: set[str] = set()
        for name, msg in resources:
            if name in seen:
                errors.append(f"duplicate cluster {name} found")
                continue
            seen.add(name)
            old = state.cluster_resources.get(name)
            if old is not None and old.message == msg:
                continue
            try:
                check(msg, f"cluster '{name}'", self._known())
                if cds.is_eds(msg):
                    self._eds_source(msg, f"cluster '{name}'")
                cluster = cds.build_one(server, name, msg)
            except ConfigError as exc:
                errors.append(f"cluster '{name}': " + "; ".join(
                    f"{i.path}: {i.message}" for i in exc.errors))
                continue
            prepared.upserts.append((name, cluster, Resource(
                name, msg, self._version(name, version), now)))
            upserts.append((name, msg.SerializeToString()))
        if removed is None:
            prepared.removes = [n for n in state.cluster_resources if n not in seen]
        else:
            prepared.removes = [n for n in removed if n in state.cluster_resources]
        if prepared.upserts or prepared.removes:
            plan = next(self._plans)
            state.planned[plan] = prepared
            error = self._apply("xds_clusters", {
                "plan": plan, "upserts": upserts, "removes": prepared.removes,
                "version": version, "time": now})
            state.planned.pop(plan, None)
            if error is not None:
                errors.append(error)
            elif self.cds_reload is not None:
                self.cds_reload.reloaded()
            self.refresh_endpoint_interest()
        return "\n".join(errors) or None

    # -- EDS -----------------------------------------------------------------------------------

    def _eds_source(self, cfg: Any, path: str) -> Source:
        ecc = cfg.eds_cluster_config
        if not ecc.HasField("eds_config"):
            raise ConfigError([ConfigIssue(path + ".eds_cluster_config.eds_config",
                                           "required for an EDS cluster")])
        src = config_source(ecc.eds_config, path + ".eds_cluster_config.eds_config")
        if src.kind == "ads" and self.ads is None:
            raise ConfigError([ConfigIssue(path + ".eds_cluster_config.eds_config.ads",
                                           "ads needs dynamic_resources.ads_config")])
        return src

    def eds_clusters(self) -> dict[str, Any]:
        """Every EDS cluster's config (active, warming, static), by name."""
        out = {name: c.config for name, c in self.server.cluster_manager.clusters.items()
               if cds.is_eds(c.config)}
        out.update({name: res.message for name, (_, res) in self.state.warming.items()})
        return out

    def refresh_endpoint_interest(self) -> None:
        """Subscribe to the endpoints of every EDS cluster, and to no others."""
        wanted: dict[str, tuple[Source, Any]] = {}
        for name, cfg in self.eds_clusters().items():
            try:
                wanted[name] = (self._eds_source(cfg, f"cluster '{name}'"), cfg)
            except ConfigError as exc:
                log.error("%s", exc)
        for name in [n for n in self.eds_files if n not in wanted]:
            self.eds_files.pop(name)
        by_mux: dict[tuple[GrpcSource, bool], set[str]] = {}
        for name, (src, cfg) in wanted.items():
            service = cds.eds_service_name(cfg)
            if src.kind == "path":
                if name not in self.eds_files:
                    sub = FileSubscription(
                        src.path, ENDPOINT,
                        lambda res, version: self.on_endpoints(res, version, None),
                        None, watched_directory=src.watched_directory,
                        plugin_type_urls=frozenset(self.server.plugins.plugin_type_urls))
                    self.eds_files[name] = sub
                    sub.refresh()
                    if self.loop is not None:
                        self._tasks.append(self.loop.create_task(sub.run()))
            else:
                g = self.ads if src.kind == "ads" else src.grpc
                assert g is not None
                by_mux.setdefault((g, src.kind == "ads"), set()).add(service)
            if name in self.state.warming:
                self._arm_fetch_timeout(name, src.initial_fetch_timeout)
        used = set()
        for (g, aggregated), names in by_mux.items():
            mux = self._mux(g, aggregated, ENDPOINT)
            used.add(id(mux))
            if ENDPOINT in mux.watches:
                for service in names - mux.watches[ENDPOINT].names:  # a subscription starts
                    for _, c in self.state.clusters_for_service(service):
                        c.stats.update_attempt.inc()
                mux.set_names(ENDPOINT, frozenset(names))
            else:
                mux.watch(Watch(ENDPOINT, self.on_endpoints, None, names=frozenset(names),
                                count=functools.partial(self._count_endpoints, mux)))
        for mux in self.muxes.values():
            if ENDPOINT in mux.watches and id(mux) not in used:
                mux.set_names(ENDPOINT, frozenset())

    def _arm_fetch_timeout(self, name: str, timeout: float | None = None) -> None:
        if self.loop is None or name in self._timers:
            return
        if timeout is None:
            cfg = self.state.warming[name][1].message
            try:
                timeout = self._eds_source(cfg, name).initial_fetch_timeout
            except ConfigError:
                timeout = 0.0
        if timeout <= 0:
            return
        self._timers[name] = self.loop.call_later(timeout, self._fetch_timed_out, name)

    def _fetch_timed_out(self, name: str) -> None:
        self._timers.pop(name, None)
        warming = self.state.warming.get(name)
        if warming is None:
            return
        warming[0].stats.scope.counter("init_fetch_timeout").inc()
        log.warning("cluster '%s': no endpoints within initial_fetch_timeout; serving without",
                    name)
        self._apply("xds_activate", [name])

    def _count_endpoints(self, mux: GrpcMux, counters: tuple[str, ...]) -> None:
        """What happened to a whole EDS stream (it broke; a response could not be decoded):
        as in Envoy, every cluster asking for endpoints on it counts it."""
        w = mux.watches.get(ENDPOINT)
        for service in w.names if w is not None else ():
            for _, c in self.state.clusters_for_service(service):
                for name in counters:
                    c.stats.scope.counter(name).inc()

    def on_endpoints(self, resources: list[tuple[str, Any]], version: str,
                     removed: list[str] | None) -> str | None:
        errors: list[str] = []
        upserts: list[tuple[str, bytes]] = []
        for service, msg in resources:
            targets = [c for _, c in self.state.clusters_for_service(service)]
            for c in targets:
                c.stats.update_attempt.inc()
            try:
                check(msg, f"endpoints '{service}'", self._known())
                cds.parse_assignment(msg, f"endpoints '{service}'")
            except ConfigError as exc:
                for c in targets:
                    c.stats.scope.counter("update_rejected").inc()
                    if removed is not None:  # delta: Envoy counts a refused update's attempt twice
                        c.stats.update_attempt.inc()
                errors.append(f"endpoints '{service}': " + "; ".join(
                    f"{i.path}: {i.message}" for i in exc.errors))
                continue
            upserts.append((service, msg.SerializeToString()))
            self.state.endpoint_versions[service] = (version, time.time())
        removes = list(removed or ())
        if upserts or removes:
            error = self._apply("xds_endpoints", {"upserts": upserts, "removes": removes})
            if error is not None:
                errors.append(error)
        for name in list(self._timers):
            if name not in self.state.warming:
                self._timers.pop(name).cancel()
        return "\n".join(errors) or None

    # -- RDS -----------------------------------------------------------------------------------

    def refresh_route_interest(self) -> None:
        """Subscribe to the route configurations listeners use (serving or warming), and
        forget, in every process, the providers no listener uses any more."""
        state, rc = self.state, self.server.route_configs
        users = [*self.server.listeners, *(lst for lst, _ in state.warming_listeners.values())]
        wanted = rc.in_use(iter(users))
        unused = [k for k in rc.providers if k not in wanted]
        for key in unused:
            self.rds_files.pop(key, None)
            timer = self._route_timers.pop(key, None)
            if timer is not None:
                timer.cancel()
        if unused:
            self._apply("xds_routes_forget", unused)
        by_mux: dict[tuple[GrpcSource, bool], set[str]] = {}
        for key, provider in wanted.items():
            src = provider.source
            if src.kind == "path":
                if key not in self.rds_files:
                    sub = FileSubscription(
                        src.path, ROUTE, functools.partial(self._on_route_file, provider),
                        provider.stats, watched_directory=src.watched_directory,
                        plugin_type_urls=frozenset(self.server.plugins.plugin_type_urls))
                    self.rds_files[key] = sub
                    sub.refresh()
                    if self.loop is not None:
                        self._tasks.append(self.loop.create_task(sub.run()))
            else:
                g = self.ads if src.kind == "ads" else src.grpc
                assert g is not None
                by_mux.setdefault((g, src.kind == "ads"), set()).add(provider.name)
            self._arm_route_timeout(provider)
        used = set()
        for (g, aggregated), names in by_mux.items():
            mux = self._mux(g, aggregated, ROUTE)
            used.add(id(mux))
            if ROUTE in mux.watches:
                fresh = names - mux.watches[ROUTE].names
                for provider in self._route_providers(mux):
                    if provider.name in fresh:  # a subscription starts
                        provider.stats.update_attempt.inc()
                mux.set_names(ROUTE, frozenset(names))
            else:
                mux.watch(Watch(ROUTE, functools.partial(self.on_routes, mux), None,
                                names=frozenset(names),
                                count=functools.partial(self._count_routes, mux)))
        for mux in self.muxes.values():
            if ROUTE in mux.watches and id(mux) not in used:
                mux.set_names(ROUTE, frozenset())

    def _route_providers(self, mux: GrpcMux) -> list[RouteConfigProvider]:
        """The providers whose configurations come over ``mux``."""
        out = []
        for provider in self.server.route_configs.providers.values():
            src = provider.source
            g = self.ads if src.kind == "ads" else src.grpc
            if g is not None and self.muxes.get((g, None if src.kind == "ads" else ROUTE)) is mux:
                out.append(provider)
        return out

    def _count_routes(self, mux: GrpcMux, counters: tuple[str, ...]) -> None:
        for provider in self._route_providers(mux):
            for name in counters:
                provider.stats.scope.counter(name).inc()

    def _arm_route_timeout(self, provider: RouteConfigProvider) -> None:
        timeout = provider.source.initial_fetch_timeout
        if (self.loop is None or provider.ready or provider.key in self._route_timers
                or timeout <= 0):
            return
        self._route_timers[provider.key] = self.loop.call_later(
            timeout, self._routes_timed_out, provider)

    def _routes_timed_out(self, provider: RouteConfigProvider) -> None:
        self._route_timers.pop(provider.key, None)
        if provider.ready or provider.key not in self.server.route_configs.providers:
            return
        provider.stats.init_fetch_timeout.inc()
        log.warning("%s: none within initial_fetch_timeout; its listeners serve without routes",
                    provider.path)
        self._apply("xds_routes_ready", [provider.key])

    def _apply_routes(self, provider: RouteConfigProvider, msg: Any, version: str) -> str | None:
        """One RouteConfiguration for one provider, in every process; why not, or None."""
        try:
            check(msg, provider.path, self._known())
        except ConfigError as exc:
            return str(exc)
        if provider.ready and provider.message == msg:
            return None  # unchanged: nothing is rebuilt (Envoy compares hashes)
        error = self._apply("xds_routes", routes_payload(provider, msg, version, time.time()))
        if error is None:
            provider.stats.config_reload.inc()
            provider.stats.config_reload_time_ms.set(int(time.time() * 1000))
            timer = self._route_timers.pop(provider.key, None)
            if timer is not None:
                timer.cancel()
        return error

    def _on_route_file(self, provider: RouteConfigProvider, resources: list[tuple[str, Any]],
                       version: str) -> str | None:
        for name, msg in resources:
            if name == provider.name:
                return self._apply_routes(provider, msg, version)
        provider.stats.update_empty.inc()  # the file does not hold it: nothing changes
        return None

    def on_routes(self, mux: GrpcMux, resources: list[tuple[str, Any]], version: str,
                  removed: list[str] | None) -> str | None:
        started = time.monotonic()
        errors: list[str] = []
        providers = self._route_providers(mux)
        got: set[Key] = set()
        for name, msg in resources:
            for provider in providers:
                if provider.name != name:
                    continue
                got.add(provider.key)
                provider.stats.update_attempt.inc()
                error = self._apply_routes(provider, msg, mux.resource_versions.get(name, version))
                if error is None:
                    provider.stats.success(version, started)
                else:
                    provider.stats.update_rejected.inc()
                    if removed is not None:  # delta: Envoy counts a refused update's attempt twice
                        provider.stats.update_attempt.inc()
                    errors.append(error)
        if removed is None:
            # State of the world: a configuration held before and now absent keeps its routes
            # (Envoy counts update_empty and changes nothing).
            for provider in providers:
                if provider.key not in got and provider.message is not None:
                    provider.stats.update_attempt.inc()
                    provider.stats.success(version, started)
                    provider.stats.update_empty.inc()
        return "\n".join(errors) or None
