"""Envoy's default tag extraction: turning ``cluster.web.upstream_rq_503`` into the name
``cluster.upstream_rq`` with the tags ``envoy.response_code=503, envoy.cluster_name=web``.

Prometheus dashboards written for Envoy query the tag-extracted names and the tag labels, so we
reproduce Envoy's default extractors (its ``well_known_names.cc``) rule for rule, and the way its
tag producer applies them:

* Every extractor looks at the *original* name; the parts each one matched are only cut out at
  the end, so extractors never see each other's edits.
* Extractors whose pattern starts with a fixed first token (``^cluster\\.``, ``tcp.$.**``) only run
  for names starting with that token. The others run first, for every name. Within each group the
  order is: all regex extractors in table order, then all token extractors in table order. That
  order is the order of the labels in ``/stats/prometheus``, which is why it matters.
* When a tag name has more than one extractor (``envoy.http_conn_manager_prefix``), the first
  that matches wins.

Results are cached per stat name: names are stable and the admin scrapes them over and over.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

Tag = tuple[str, str]

# Pieces shared by several regexes, spelled once (Envoy writes them as <PLACEHOLDER>s).
_EXPANSIONS = {
    # An IPv4 address or a bracketed IPv6 one, then "_<port>": how listener stats name addresses.
    "<ADDRESS>": r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)",
    "<CIPHER>": r"[\w-]+",
    "<TLS_VERSION>": r"TLSv\d\.\d",
    # Any single name segment.
    "<TAG_VALUE>": r"[^\.]+",
    # Route config names may hold dots and slashes.
    "<ROUTE_CONFIG_NAME>": r"[\w\-./]+",
    "<SCOPED_ROUTE_CONFIG_NAME>": r"[\w\-.]+",
    "<LISTENER_OR_CLUSTER_WITH_NAME>": r"(?:listener|cluster)\..*?",
    "<PROXY_PROTOCOL_VERSION>": r"\d",
}


def _expand(pattern: str) -> str:
    for key, value in _EXPANSIONS.items():
        pattern = pattern.replace(key, value)
    return pattern


class _Extractor:
    """One rule: finds a tag value in a name and the character span to cut out."""

    name: str
    prefix: str  # first name token this rule is limited to, "" when it applies to every name

    def extract(self, stat_name: str, tokens: list[str]) -> tuple[str, int, int] | None:
        raise NotImplementedError


class _RegexExtractor(_Extractor):
    """Group 1 of the regex is removed from the name; group 2 (or group 1) is the tag value."""

    def __init__(self, name: str, pattern: str, substr: str = "", negative: str = "") -> None:
        self.name = name
        expanded = _expand(pattern)
        self.regex = re.compile(expanded, re.ASCII)
        self.substr = substr
        self.negative = negative
        self.prefix = _regex_prefix(expanded)

    def extract(self, stat_name: str, tokens: list[str]) -> tuple[str, int, int] | None:
        if self.substr and self.substr not in stat_name:
            return None
        m = self.regex.search(stat_name)
        if m is None or not m.group(1):
            return None
        value = m.group(2) if m.re.groups >= 2 and m.group(2) else m.group(1)
        if self.negative and value == self.negative:
            return None
        return value, m.start(1), m.end(1)


def _regex_prefix(pattern: str) -> str:
    """``^word\\.`` (or ``^word(?=\\.)``) → ``word``: the first token the regex insists on."""
    m = re.match(r"\^(\w+)(?:\\\.|\(\?=\\\.\))", pattern)
    return m.group(1) if m else ""


class _TokenExtractor(_Extractor):
    """A dotted pattern: ``*`` is any one token, ``**`` any number of tokens, ``$`` the value."""

    def __init__(self, name: str, pattern: str) -> None:
        self.name = name
        self.tokens = pattern.split(".")
        self.match_index = self.tokens.index("$")
        first = self.tokens[0]
        self.prefix = "" if first in ("$", "*", "**") else first

    def extract(self, stat_name: str, tokens: list[str]) -> tuple[str, int, int] | None:
        found = self._search(tokens, 0, 0, 0)
        if found is None or found[1] < 0:
            return None
        start, index = found
        value = tokens[index]
        end = start + len(value)
        # Take one of the neighbouring dots with the value, so the rest still reads a.b.c.
        if index < len(tokens) - 1:
            end += 1
        elif start > 0:
            start -= 1
        return value, start, end

    def _search(
        self, tokens: list[str], ti: int, pi: int, char_index: int
    ) -> tuple[int, int] | None:
        """Match ``tokens[ti:]`` against ``self.tokens[pi:]``. None when they do not match, else
        ``(char offset, token index)`` of the ``$`` token, or ``(-1, -1)`` when ``$`` lies before
        ``pi`` (the caller already knows where it is)."""
        captured = (-1, -1)
        pattern = self.tokens
        while ti < len(tokens) and pi < len(pattern):
            if pi == self.match_index:
                captured = (char_index, ti)
            elif pattern[pi] == "**":
                if pi == len(pattern) - 1:
                    return captured
                # "**" in the middle: the rest of the pattern must match some suffix of the name.
                for start_ti in range(ti, len(tokens)):
                    sub = self._search(tokens, start_ti, pi + 1, char_index)
                    if sub is not None:
                        return sub if sub[1] >= 0 else captured
                    char_index += len(tokens[start_ti]) + 1
                return None
            elif pattern[pi] != "*" and pattern[pi] != tokens[ti]:
                return None
            char_index += len(tokens[ti]) + 1
            ti += 1
            pi += 1
        if ti == len(tokens) and pi == len(pattern):
            return captured
        return None


def _default_extractors() -> list[_Extractor]:
    """Envoy's default tag table, in its order (regex rules first, then token rules)."""
    regexes: list[_Extractor] = [
        _RegexExtractor("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_"),
        _RegexExtractor("envoy.response_code_class", r"_rq_((\d))xx$", "_rq_"),
        _RegexExtractor(
            "envoy.dynamo_partition_id",
            r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>"
            r"(\.__partition_id=(\w{7}))$",
            ".dynamodb.table.",
        ),
        _RegexExtractor(
            "envoy.dynamo_operation",
            r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)"
            r"(\.(<TAG_VALUE>))(?:\.|$)",
            ".dynamodb.",
        ),
        _RegexExtractor(
            "envoy.dynamo_table",
            r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)",
            ".dynamodb.",
        ),
        _RegexExtractor(
            "envoy.ssl_cipher", r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$", ".ssl.ciphers."
        ),
        _RegexExtractor(
            "envoy.ssl_curve",
            r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$",
            ".ssl.curves.",
        ),
        _RegexExtractor(
            "envoy.ssl_sigalg",
            r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$",
            ".ssl.sigalgs.",
        ),
        _RegexExtractor(
            "envoy.ssl_version",
            r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$",
            ".ssl.versions.",
        ),
        _RegexExtractor(
            "cipher_suite", r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$", ".ssl.ciphers."
        ),
        _RegexExtractor(
            "envoy.http_conn_manager_prefix", r"^listener\..*?\.http\.((<TAG_VALUE>)\.)", ".http."
        ),
        _RegexExtractor(
            "envoy.worker_id",
            r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager"
            r"|thread_local_cluster_manager)\.worker_((\d+)\.)",
        ),
        # "admin" is the admin listener's own prefix, not an address: Envoy leaves it in the name.
        _RegexExtractor(
            "envoy.listener_address", r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)", negative="admin"
        ),
        _RegexExtractor(
            "envoy.rds_route_config",
            r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$",
            ".rds.",
        ),
        _RegexExtractor(
            "envoy.scoped_rds_config",
            r"^http\.<TAG_VALUE>\.scoped_rds\.((<SCOPED_ROUTE_CONFIG_NAME>)\.)\w+?$",
            ".scoped_rds.",
        ),
        _RegexExtractor(
            "envoy.rbac_policy_name",
            r"^http\.<TAG_VALUE>\.rbac\.(?:<TAG_VALUE>\.)?policy\.((<TAG_VALUE>)\.)"
            r"(allowed|shadow_allowed|denied|shadow_denied)$",
        ),
        _RegexExtractor(
            "envoy.rbac_http_prefix", r"^http\.<TAG_VALUE>\.rbac\.((<TAG_VALUE>)\.).*?",
            negative="policy",
        ),
        _RegexExtractor(
            "envoy.proxy_protocol_prefix", r"^proxy_proto\.((<TAG_VALUE>)\.).+$",
            negative="versions",
        ),
        _RegexExtractor(
            "envoy.proxy_protocol_version",
            r"^proxy_proto\.((?:<TAG_VALUE>\.)?versions\.v(<PROXY_PROTOCOL_VERSION>)\.)\w+$",
        ),
        _RegexExtractor(
            "envoy.tls_certificate",
            r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.certificate\.((<TAG_VALUE>)\.).*$",
            ".ssl.certificate",
        ),
        _RegexExtractor("envoy.xds_resource_name", r"^sds\.((<TAG_VALUE>)\.).+"),
    ]
    tokenized: list[_Extractor] = [
        _TokenExtractor(name, pattern)
        for name, pattern in (
            ("envoy.mongo_callsite", "mongo.*.collection.*.callsite.$.query.**"),
            ("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
            ("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
            ("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
            ("envoy.http_user_agent", "http.*.user_agent.$.**"),
            ("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
            ("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
            ("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
            ("envoy.tcp_prefix", "tcp.$.**"),
            ("envoy.udp_prefix", "udp.$.**"),
            ("envoy.clientssl_prefix", "auth.clientssl.$.**"),
            ("envoy.ratelimit_prefix", "ratelimit.$.**"),
            ("envoy.cluster_name", "cluster.$.**"),
            ("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
            ("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
            ("envoy.http_conn_manager_prefix", "http.$.**"),
            ("envoy.virtual_host", "vhost.$.**"),
            ("envoy.mongo_prefix", "mongo.$.**"),
            ("envoy.route", "vhost.*.route.$.**"),
            ("envoy.thrift_prefix", "thrift.$.**"),
            ("envoy.redis_prefix", "redis.$.**"),
            ("envoy.local_http_ratelimit_prefix", "$.http_local_rate_limit.**"),
            ("envoy.local_network_ratelimit_prefix", "local_rate_limit.$.**"),
            ("envoy.local_listener_ratelimit_prefix", "listener_local_ratelimit.$.**"),
            ("envoy.dns_filter_prefix", "dns_filter.$.**"),
            ("envoy.connection_limit_prefix", "connection_limit.$.**"),
            ("envoy.rbac_prefix", "$.rbac.**"),
            ("envoy.google_grpc_client_prefix", "grpc.$.**"),
        )
    ]
    return regexes + tokenized


@dataclass
class TagProducer:
    """Applies a tag table to stat names, caching the result for each name."""

    extractors: Sequence[_Extractor] = field(default_factory=_default_extractors)

    def __post_init__(self) -> None:
        self._unprefixed = [e for e in self.extractors if not e.prefix]
        self._by_prefix: dict[str, list[_Extractor]] = {}
        for e in self.extractors:
            if e.prefix:
                self._by_prefix.setdefault(e.prefix, []).append(e)
        counts: dict[str, int] = {}
        for e in self.extractors:
            counts[e.name] = counts.get(e.name, 0) + 1
        self._shared_names = {n for n, c in counts.items() if c > 1}
        self._cache: dict[str, tuple[str, tuple[Tag, ...]]] = {}

    def produce(self, stat_name: str) -> tuple[str, tuple[Tag, ...]]:
        """``(tag_extracted_name, ((tag_name, value), ...))`` for a full stat name."""
        hit = self._cache.get(stat_name)
        if hit is None:
            hit = self._produce(stat_name)
            self._cache[stat_name] = hit
        return hit

    def _produce(self, stat_name: str) -> tuple[str, tuple[Tag, ...]]:
        tokens = stat_name.split(".")
        candidates = list(self._unprefixed)
        if len(tokens) > 1:
            candidates += self._by_prefix.get(tokens[0], [])
        tags: list[Tag] = []
        spans: list[tuple[int, int]] = []
        taken: set[str] = set()
        for extractor in candidates:
            if extractor.name in taken:
                continue
            found = extractor.extract(stat_name, tokens)
            if found is None:
                continue
            value, start, end = found
            tags.append((extractor.name, value))
            spans.append((start, end))
            if extractor.name in self._shared_names:
                taken.add(extractor.name)
        return _remove_spans(stat_name, spans), tuple(tags)


def _remove_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        if start > pos:
            out.append(text[pos:start])
        pos = max(pos, end)
    out.append(text[pos:])
    return "".join(out)


_default_producer: TagProducer | None = None


def default_tag_producer() -> TagProducer:
    """The process-wide producer with Envoy's default table (and its cache)."""
    global _default_producer
    if _default_producer is None:
        _default_producer = TagProducer()
    return _default_producer


def extract_tags(stat_name: str) -> tuple[str, tuple[Tag, ...]]:
    """Envoy's default tag extraction for one name, e.g. ``tcp.p.downstream_cx_total`` →
    ``("tcp.downstream_cx_total", (("envoy.tcp_prefix", "p"),))``."""
    return default_tag_producer().produce(stat_name)
