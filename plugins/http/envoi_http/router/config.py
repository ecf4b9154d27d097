"""RouteConfiguration proto -> a compiled route table (virtual hosts, matchers, actions).

Everything here runs once at config time; matching a request is dictionary lookups, ``bytes``
comparisons and precompiled regexes -- no protobuf on the hot path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoi.config import (
    NOT_IMPLEMENTED,
    ConfigError,
    ConfigIssue,
    data_source_bytes,
    duration_seconds,
    implements,
    unpack_typed_config,
)
from envoi.extensions import FactoryContext
from envoi.http.headers import HeaderMap

from envoi_http.hcm.tracing import Decorator, RouteTracing, route_decorator, route_tracing
from envoi_http.router.hash_policy import HashPolicy, build_hash_policy
from envoi_http.router.matchers import (
    Matcher,
    PlainPrefix,
    header_matcher,
    regex,
    route_matcher,
)
from envoi_http.router.mirror import MirrorPolicy, mirror_policies
from envoi_http.router.re2_rewrite import RegexRewrite
from envoi_http.router.route_policies import (
    HeaderMutations,
    MaxStreamDuration,
    collect,
    duration_ms,
    max_stream_duration,
    retry_policy,
    route_mutations,
)
from envoi_http.router.route_policies import RetryPolicy as RetryPolicy  # (router/filter.py)
from envoi_http.router.stats import RequestStats

_log = logging.getLogger(__name__)

# -- what of the route table envoi acts on (envoi.config.implemented refuses the rest) -------
_R = "envoy.config.route.v3."
implements(_R + "RouteConfiguration",
           "name", "virtual_hosts", "request_headers_to_add", "request_headers_to_remove",
           "response_headers_to_add", "response_headers_to_remove", "validate_clusters",
           "max_direct_response_body_size_bytes", "typed_per_filter_config")
implements(_R + "VirtualHost",
           "name", "domains", "routes", "virtual_clusters", "request_headers_to_add",
           "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
           "include_request_attempt_count", "include_attempt_count_in_response", "retry_policy",
           "typed_per_filter_config", "require_tls")
implements(_R + "Route",
           "name", "match", "route", "redirect", "direct_response", "request_headers_to_add",
           "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
           "stat_prefix", "typed_per_filter_config", "decorator", "tracing")
implements(_R + "RouteMatch",
           "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers",
           "query_parameters", "grpc")
implements(_R + "RouteAction",
           "cluster", "cluster_header", "weighted_clusters", "cluster_not_found_response_code",
           "prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "timeout", "idle_timeout",
           "retry_policy", "upgrade_configs", "hash_policy", "priority", "max_stream_duration",
           "max_grpc_timeout", "grpc_timeout_offset")
# hash_policy (router/hash_policy.py refuses regex_rewrite, generated cookies, filter_state).
implements(_R + "RouteAction.HashPolicy",
           "header", "cookie", "connection_properties", "query_parameter", "terminal")
implements(_R + "RouteAction.HashPolicy.Header", "header_name")
implements(_R + "RouteAction.HashPolicy.Cookie", "name")
implements(_R + "RouteAction.HashPolicy.ConnectionProperties", "source_ip")
implements(_R + "RouteAction.HashPolicy.QueryParameter", "name")
implements(_R + "RouteAction.UpgradeConfig", "upgrade_type", "enabled")
implements(_R + "WeightedCluster", "clusters")
implements(_R + "WeightedCluster.ClusterWeight", "name", "weight")
implements(_R + "DirectResponseAction", "status", "body")
implements(_R + "RedirectAction",
           "https_redirect", "scheme_redirect", "host_redirect", "port_redirect",
           "path_redirect", "prefix_rewrite", "response_code", "strip_query")
implements(_R + "VirtualCluster", "name", "headers")
implements(_R + "HeaderMatcher",
           "name", "exact_match", "safe_regex_match", "range_match", "present_match",
           "prefix_match", "suffix_match", "contains_match", "string_match", "invert_match",
           "treat_missing_header_as_empty")
implements(_R + "QueryParameterMatcher", "name", "string_match", "present_match")
implements("envoy.type.matcher.v3.StringMatcher",
           "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case")
implements("envoy.type.matcher.v3.RegexMatcher", "regex")
implements("envoy.type.matcher.v3.RegexMatchAndSubstitute", "pattern", "substitution")
implements("envoy.type.v3.Int64Range", "start", "end")


@dataclass(frozen=True)
class Redirect:
    scheme: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    prefix_rewrite: bytes | None
    response_code: int
    strip_query: bool
    keep_port: bool = False  # require_tls: https://<Host as received><path>, port and all


@dataclass(eq=False)
class VirtualHost:
    name: str
    routes: list[Route] = field(default_factory=list)
    request_mutations: HeaderMutations = HeaderMutations()
    response_mutations: HeaderMutations = HeaderMutations()
    retry_policy: RetryPolicy | None = None
    vclusters: tuple[tuple[str, Matcher, RequestStats], ...] = ()
    vcluster_other: RequestStats | None = None
    include_request_attempt_count: bool = False  # router/retry_headers.py
    include_attempt_count_in_response: bool = False
    #: typed_per_filter_config of the virtual host, over the route config's (merged once).
    per_filter: dict[str, object] = field(default_factory=dict)
    #: Filters this virtual host (or its route config) turns off (True) or on (False) by name.
    filter_disabled: dict[str, bool] = field(default_factory=dict)
    #: require_tls: 0 NONE, 1 EXTERNAL_ONLY, 2 ALL; tls_redirect answers a request it refuses.
    require_tls: int = 0
    tls_redirect: Route | None = None
    # The route configuration's own header mutations (applied after the virtual host's), kept
    # here so that a route leads to every mutation that applies to it.
    config_request_mutations: HeaderMutations = HeaderMutations()
    config_response_mutations: HeaderMutations = HeaderMutations()


@dataclass(eq=False)
class Route:
    name: str
    vhost: VirtualHost
    match: Matcher
    kind: str  # "cluster", "direct", "redirect"
    cluster: str | None = None
    weighted: tuple[tuple[str, int], ...] = ()
    total_weight: int = 0
    cluster_header: bytes | None = None
    not_found_code: int = 503
    prefix: bytes | None = None  # the matched prefix, for prefix_rewrite
    prefix_rewrite: bytes | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite: bytes | None = None
    timeout: float = 15.0
    idle_timeout: float | None = None  # route idle_timeout; None: the HCM's stream_idle_timeout
    retry_policy: RetryPolicy | None = None
    direct_status: int = 200
    direct_body: bytes = b""
    redirect: Redirect | None = None
    request_mutations: HeaderMutations = HeaderMutations()
    response_mutations: HeaderMutations = HeaderMutations()
    stats: RequestStats | None = None
    upgrade_map: dict[bytes, bool] | None = None  # route.upgrade_configs (hcm/upgrade.py)
    plain_prefix: bytes | None = None  # the match is this case-sensitive prefix and nothing else
    hash_policy: HashPolicy | None = None  # RING_HASH/MAGLEV request hash (router/hash_policy.py)
    priority: str = "DEFAULT"  # routing priority: which circuit breakers apply (DEFAULT, HIGH)
    per_filter: dict[str, object] = field(default_factory=dict)  # typed_per_filter_config
    decorator: Decorator | None = None  # the span's operation name (hcm/tracing.py)
    tracing: RouteTracing | None = None  # sampling and custom tags of its own (hcm/tracing.py)
    filter_disabled: dict[str, bool] = field(default_factory=dict)  # (as the virtual host's)
    mirrors: tuple[MirrorPolicy, ...] = ()  # request_mirror_policies (router/mirror.py)
    max_duration: MaxStreamDuration | None = None  # max_stream_duration (hcm/duration.py)
    # the deprecated max_grpc_timeout / grpc_timeout_offset in ms (router/retry_headers.py)
    max_grpc_timeout: int | None = None
    grpc_timeout_offset: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.match, PlainPrefix):
            self.plain_prefix = self.match.prefix

    @property
    def cluster_name(self) -> str | None:
        return self.cluster

    @property
    def virtual_host_name(self) -> str:
        return self.vhost.name

    def per_filter_config(self, name: str) -> object | None:
        found = self.per_filter.get(name)
        return found if found is not None else self.vhost.per_filter.get(name)

    def filter_disabled_here(self, name: str) -> bool | None:
        """Whether the route (else its virtual host, else the route config) turns the filter
        configured as ``name`` off (True) or on (False); None when none of them says."""
        found = self.filter_disabled.get(name)
        return found if found is not None else self.vhost.filter_disabled.get(name)

    def pick_cluster(self, h: HeaderMap) -> str | None:
        if self.cluster is not None:
            return self.cluster
        if self.weighted:
            r = random.randrange(self.total_weight)
            for name, w in self.weighted:
                if r < w:
                    return name
                r -= w
            return self.weighted[-1][0]
        if self.cluster_header is not None:
            v = h.get_bytes(self.cluster_header)
            return v.decode("latin-1") if v else None
        return None


_NO_VHOST: Any = object()
_MEMO_MAX = 4096


@dataclass(eq=False)
class RouteTable:
    exact: dict[bytes, VirtualHost]
    suffixes: list[tuple[bytes, VirtualHost]]  # longest first
    prefixes: list[tuple[bytes, VirtualHost]]
    default: VirtualHost | None
    request_mutations: HeaderMutations
    response_mutations: HeaderMutations

    # authority as received -> virtual host (or None): most requests repeat a few authorities.
    _memo: dict[bytes, VirtualHost | None] = field(default_factory=dict)

    def virtual_hosts(self) -> list[VirtualHost]:
        """Every virtual host of the table (config-time walks: idle timeouts, filter toggles)."""
        out = [*self.exact.values(), *(v for _, v in self.suffixes),
               *(v for _, v in self.prefixes)]
        if self.default is not None:
            out.append(self.default)
        return out

    def vhost(self, authority: bytes) -> VirtualHost | None:
        memo = self._memo
        vh = memo.get(authority, _NO_VHOST)
        if vh is _NO_VHOST:
            if len(memo) >= _MEMO_MAX:  # bounded: clients choose the authority
                memo.clear()
            vh = memo[authority] = self._vhost(authority)
        return vh  # type: ignore[no-any-return]

    def _vhost(self, authority: bytes) -> VirtualHost | None:
        host = authority.lower()
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        for suffix, vh in self.suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                return vh
        for prefix, vh in self.prefixes:
            if host.startswith(prefix) and len(host) > len(prefix):
                return vh
        return self.default

    def route(self, h: HeaderMap) -> Route | None:
        vh: VirtualHost | None = self._memo.get(h.authority, _NO_VHOST)  # vhost(), inline
        if vh is _NO_VHOST:
            vh = self.vhost(h.authority)
        if vh is None:
            return None
        if vh.require_tls and _needs_tls_redirect(vh, h):
            return vh.tls_redirect
        path = h.path
        if 63 in path:  # b"?" (an int: ``bytes in bytes`` raises and clears a TypeError first)
            path, _, query = path.partition(b"?")
        else:
            query = b""
        for r in vh.routes:
            prefix = r.plain_prefix
            if prefix is not None:
                if path.startswith(prefix):
                    return r
            elif r.match(h, path, query):
                return r
        return None


def _needs_tls_redirect(vh: VirtualHost, h: HeaderMap) -> bool:
    """Envoy's require_tls: a request whose x-forwarded-proto (as the HCM set it) is not https
    is redirected; with EXTERNAL_ONLY only when it is not internal (x-envoy-internal)."""
    if h.get_bytes(b"x-forwarded-proto") == b"https":
        return False
    return vh.require_tls == _TLS_ALL or h.get_bytes(b"x-envoy-internal") != b"true"


_TLS_ALL = 2


# -- building ------------------------------------------------------------------------------


_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


@dataclass(frozen=True)
class _BuildContext:
    """What checking a route needs beyond the route: the clusters that exist (None: do not
    check, as with validate_clusters false or clusters that may still arrive) and the size
    limit of a direct response body."""

    factory: FactoryContext
    known_cluster: Callable[[str], bool] | None
    max_body: int


def _route(r: Any, vh: VirtualHost, path: str, bctx: _BuildContext) -> Route:
    ctx = bctx.factory
    issues: list[ConfigIssue] = []
    match, prefix = collect(issues, (_NEVER, None), route_matcher, r.match, path + ".match")
    request_mutations = collect(issues, HeaderMutations(), route_mutations, r, "request", path, ctx)
    response_mutations = collect(issues, HeaderMutations(), route_mutations, r, "response", path,
                                  ctx)
    rt = Route(name=r.name, vhost=vh, match=match, kind="cluster", prefix=prefix,
               request_mutations=request_mutations, response_mutations=response_mutations)
    if r.stat_prefix:
        rt.stats = RequestStats(ctx.stats.root.scope(f"vhost.{vh.name}.route.{r.stat_prefix}"))
    rt.per_filter, rt.filter_disabled = _per_filter(r, path, ctx, issues)
    if r.HasField("decorator"):
        rt.decorator = route_decorator(r.decorator)
    if r.HasField("tracing"):
        rt.tracing = collect(issues, None, route_tracing, r.tracing, path + ".tracing")
    action = r.WhichOneof("action")
    if action == "route":
        a = r.route
        spec = a.WhichOneof("cluster_specifier")
        known = bctx.known_cluster
        if spec == "cluster":
            rt.cluster = a.cluster
            if known is not None and not known(a.cluster):
                issues.append(ConfigIssue(path + ".route.cluster",
                                          f"route: unknown cluster '{a.cluster}'"))
        elif spec == "weighted_clusters":
            rt.weighted = tuple((c.name, c.weight.value) for c in a.weighted_clusters.clusters)
            rt.total_weight = sum(w for _, w in rt.weighted) or 1
            for k, (name, _) in enumerate(rt.weighted):
                if known is not None and not known(name):
                    issues.append(ConfigIssue(
                        f"{path}.route.weighted_clusters.clusters[{k}].name",
                        f"route: unknown weighted cluster '{name}'"))
        elif spec == "cluster_header":
            rt.cluster_header = a.cluster_header.lower().encode()
        else:
            issues.append(ConfigIssue(f"{path}.route.{spec}", NOT_IMPLEMENTED))
        if a.cluster_not_found_response_code == 1:
            rt.not_found_code = 404
        elif a.cluster_not_found_response_code == 2:
            rt.not_found_code = 500
        if a.prefix_rewrite and a.HasField("regex_rewrite"):
            issues.append(ConfigIssue(path + ".route", "Specify only one of prefix_rewrite, "
                                                       "regex_rewrite or path_rewrite_policy"))
        if a.prefix_rewrite:
            rt.prefix_rewrite = a.prefix_rewrite.encode()
        if a.HasField("regex_rewrite"):
            rx = collect(issues, None, regex, a.regex_rewrite.pattern.regex,
                          path + ".route.regex_rewrite.pattern.regex")
            if rx is not None:
                rt.regex_rewrite = RegexRewrite(rx, a.regex_rewrite.substitution.encode())
        if a.host_rewrite_literal:
            rt.host_rewrite = a.host_rewrite_literal.encode()
        if a.HasField("timeout"):
            rt.timeout = duration_seconds(a.timeout)
        if a.HasField("idle_timeout"):
            rt.idle_timeout = duration_seconds(a.idle_timeout)
        if a.HasField("max_stream_duration"):
            rt.max_duration = max_stream_duration(a.max_stream_duration)
        for name in ("max_grpc_timeout", "grpc_timeout_offset"):  # deprecated, still obeyed
            if a.HasField(name):
                setattr(rt, name, duration_ms(getattr(a, name)))
                _log.warning("Deprecated field: %s.route.%s (use max_stream_duration's "
                             "grpc_timeout_header_max / grpc_timeout_header_offset)", path, name)
        if a.HasField("retry_policy"):
            rt.retry_policy = collect(issues, None, retry_policy, a.retry_policy,
                                       path + ".route.retry_policy")
        else:
            rt.retry_policy = vh.retry_policy
        if a.hash_policy:
            rt.hash_policy = collect(issues, None, build_hash_policy, a.hash_policy,
                                      path + ".route.hash_policy")
        if a.priority == 1:
            rt.priority = "HIGH"
        if a.request_mirror_policies:
            rt.mirrors = collect(issues, (), mirror_policies, a.request_mirror_policies,
                                  path + ".route.request_mirror_policies", known,
                                  _runtime(ctx), ctx.stats.root)
        if a.upgrade_configs:
            from envoi_http.hcm.upgrade import upgrade_map

            rt.upgrade_map = upgrade_map(a.upgrade_configs)
    elif action == "direct_response":
        rt.kind = "direct"
        rt.direct_status = r.direct_response.status
        if r.direct_response.HasField("body"):
            bpath = path + ".direct_response.body"
            rt.direct_body = collect(issues, b"", data_source_bytes, r.direct_response.body,
                                      bpath)
            if len(rt.direct_body) > bctx.max_body:
                issues.append(ConfigIssue(bpath, f"response body size is {len(rt.direct_body)} "
                                                 f"bytes; maximum is {bctx.max_body}"))
    elif action == "redirect":
        rd = r.redirect
        rt.kind = "redirect"
        scheme = None
        if rd.https_redirect:
            scheme = b"https"
        elif rd.scheme_redirect:
            scheme = rd.scheme_redirect.encode()
        rt.redirect = Redirect(
            scheme=scheme, host=rd.host_redirect.encode() or None,
            port=rd.port_redirect or None,
            path=rd.path_redirect.encode() or None,
            prefix_rewrite=rd.prefix_rewrite.encode() if rd.WhichOneof(
                "path_rewrite_specifier") == "prefix_rewrite" else None,
            response_code=_REDIRECT_CODES.get(rd.response_code, 301),
            strip_query=rd.strip_query)
    elif action is not None:
        issues.append(ConfigIssue(f"{path}.{action}", NOT_IMPLEMENTED))
    if issues:
        raise ConfigError(issues)
    return rt


def _runtime(ctx: FactoryContext) -> Any:
    try:
        return ctx.runtime
    except Exception:  # a context without a server (unit tests): no runtime keys
        return None


def _never(h: HeaderMap, path: bytes, query: bytes) -> bool:
    return False


_NEVER: Matcher = _never


_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
implements(_FILTER_CONFIG, "config", "disabled")


def _per_filter(msg: Any, path: str, ctx: FactoryContext,
                issues: list[ConfigIssue]) -> tuple[dict[str, object], dict[str, bool]]:
    """A ``typed_per_filter_config`` map: the per-route configs by filter name, and which
    filters it turns off or on. Any entry turns its filter on, except a ``FilterConfig`` that
    says ``disabled: true`` (Envoy's route-based filter chain); a ``FilterConfig`` carries the
    filter's own per-route config in ``config``."""
    if not msg.typed_per_filter_config:
        return {}, {}
    base = path + ".typed_per_filter_config"
    configs: dict[str, Any] = {}
    disabled: dict[str, bool] = {}
    for name, any_msg in msg.typed_per_filter_config.items():
        if any_msg.type_url.rsplit("/", 1)[-1] != _FILTER_CONFIG:
            configs[name] = any_msg
            disabled[name] = False
            continue
        fc: Any = unpack_typed_config(any_msg, f"{base}[{name}]")
        disabled[name] = fc.disabled
        if fc.HasField("config"):
            configs[name] = fc.config
        elif not fc.disabled:
            issues.append(ConfigIssue(f"{base}[{name}]", "Empty route/virtual host per filter "
                                                         f"configuration for {name} filter"))
    if not configs:
        return {}, disabled
    try:
        return ctx.per_filter_configs(configs, base), disabled
    except ConfigError as exc:
        issues.extend(exc.errors)
        return {}, disabled


def build_route_table(rc: Any, path: str, ctx: FactoryContext) -> RouteTable:
    """Compile a RouteConfiguration; every problem in it is reported at once."""
    issues: list[ConfigIssue] = []
    exact: dict[bytes, VirtualHost] = {}
    suffixes: dict[bytes, VirtualHost] = {}
    prefixes: dict[bytes, VirtualHost] = {}
    default = None
    root = ctx.stats.root
    validate = rc.validate_clusters.value if rc.HasField("validate_clusters") else True
    known = None
    cm = ctx.cluster_manager
    # Clusters that may still arrive (CDS) cannot be checked; nor can they without a cluster
    # manager (a route table compiled on its own, in unit tests).
    if validate and cm is not None and not cm.dynamic_clusters:
        known = cm.is_configured
    bctx = _BuildContext(ctx, known, rc.max_direct_response_body_size_bytes.value
                         if rc.HasField("max_direct_response_body_size_bytes") else 4096)
    top_per_filter, top_disabled = _per_filter(rc, path, ctx, issues)
    table_request = collect(issues, HeaderMutations(), route_mutations, rc, "request", path, ctx)
    table_response = collect(issues, HeaderMutations(), route_mutations, rc, "response", path, ctx)
    for i, v in enumerate(rc.virtual_hosts):
        vpath = f"{path}.virtual_hosts[{i}]"
        v_per_filter, v_disabled = _per_filter(v, vpath, ctx, issues)
        vh = VirtualHost(
            name=v.name,
            request_mutations=collect(issues, HeaderMutations(), route_mutations, v, "request",
                                       vpath, ctx),
            response_mutations=collect(issues, HeaderMutations(), route_mutations, v, "response",
                                        vpath, ctx),
            retry_policy=collect(issues, None, retry_policy, v.retry_policy,
                                  vpath + ".retry_policy") if v.HasField("retry_policy") else None,
            include_request_attempt_count=v.include_request_attempt_count,
            include_attempt_count_in_response=v.include_attempt_count_in_response,
            per_filter={**top_per_filter, **v_per_filter},
            filter_disabled={**top_disabled, **v_disabled},
            require_tls=v.require_tls,
            config_request_mutations=table_request,
            config_response_mutations=table_response,
        )
        if v.require_tls:
            vh.tls_redirect = Route(
                name="", vhost=vh, match=_NEVER, kind="redirect",
                redirect=Redirect(scheme=b"https", host=None, port=None, path=None,
                                  prefix_rewrite=None, response_code=301, strip_query=False,
                                  keep_port=True))
        if v.virtual_clusters:
            vcs = []
            for j, vc in enumerate(v.virtual_clusters):
                hms = [collect(issues, _no_header, header_matcher, h,
                                f"{vpath}.virtual_clusters[{j}].headers[{k}]")
                       for k, h in enumerate(vc.headers)]
                vcs.append((vc.name, (lambda h, p, q, hms=hms: all(f(h) for f in hms)),
                            RequestStats(root.scope(f"vhost.{v.name}.vcluster.{vc.name}"))))
            vh.vclusters = tuple(vcs)
            vh.vcluster_other = RequestStats(root.scope(f"vhost.{v.name}.vcluster.other"))
        for j, r in enumerate(v.routes):
            route = collect(issues, None, _route, r, vh, f"{vpath}.routes[{j}]", bctx)
            if route is not None:
                vh.routes.append(route)
        for k, d in enumerate(v.domains):
            d = d.lower()
            key = d.encode()
            dpath = f"{vpath}.domains[{k}]"
            if d == "*":
                if default is not None:
                    issues.append(ConfigIssue(dpath, "Only a single wildcard domain is "
                                                     "permitted in route " + rc.name))
                default = vh
                continue
            if d.startswith("*"):
                table, key = suffixes, key[1:]
            elif d.endswith("*"):
                table, key = prefixes, key[:-1]
            else:
                table = exact
            if key in table:
                issues.append(ConfigIssue(dpath, "Only unique values for domains are permitted. "
                                                 f"Duplicate entry of domain {d} in route "
                                                 + rc.name))
            table[key] = vh
    if issues:
        raise ConfigError(issues)
    return RouteTable(
        exact,
        sorted(suffixes.items(), key=lambda x: -len(x[0])),
        sorted(prefixes.items(), key=lambda x: -len(x[0])),
        default, table_request, table_response,
    )


def _no_header(h: HeaderMap) -> bool:
    return False
