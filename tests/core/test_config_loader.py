"""Tests for envoi.config: YAML/JSON -> validated Bootstrap, error paths, plugin typed configs."""

from __future__ import annotations

import pickle
import textwrap
import time
from pathlib import Path

import pytest
from envoi.config import (
    ConfigError,
    ConfigIssue,
    PluginTypedConfig,
    duration_seconds,
    format_duration,
    load_bootstrap,
    parse_bootstrap,
    parse_config_data,
    unpack_typed_config,
    validate_message,
)
from google.protobuf import duration_pb2

TCP_PROXY_URL = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HCM_URL = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_URL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
PLUGIN_URL = "type.googleapis.com/acme.filters.network.auth.v1.Auth"
FILTER0 = "static_resources.listeners[0].filter_chains[0].filters[0]"

# Same content as shared/reference/envoy-configs/tcp_proxy.yaml (embedded: tests must not
# depend on files outside the repository).
TCP_PROXY_YAML = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 18001}}
static_resources:
  listeners:
  - name: tcp_in
    stat_prefix: tcp_in
    address: {socket_address: {address: 127.0.0.1, port_value: 18100}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp_echo
          cluster: echo
          idle_timeout: 30s
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18081}}}
"""

# A trimmed shared/reference/envoy-configs/http_router.yaml: HCM, router, regex/header/query
# matches, weighted clusters, retries, redirect, direct response.
HTTP_ROUTER_YAML = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 18002}}
static_resources:
  listeners:
  - name: http_in
    address: {socket_address: {address: 127.0.0.1, port_value: 18200}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": HCM_URL
          codec_type: AUTO
          stat_prefix: ingress_http
          use_remote_address: true
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: local_route
            request_headers_to_add:
            - header: {key: x-envoi-rc, value: route-config}
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            virtual_hosts:
            - name: api
              domains: ["api.local", "api.local:*"]
              virtual_clusters:
              - name: vc_get
                headers:
                - name: ":method"
                  string_match: {exact: GET}
              routes:
              - match: {path: "/exact"}
                route: {cluster: echo_a}
              - match:
                  safe_regex: {regex: "^/items/[0-9]+$"}
                route: {cluster: echo_b}
              - match:
                  prefix: "/"
                  query_parameters:
                  - name: backend
                    string_match: {exact: b}
                route: {cluster: echo_b}
              - match: {prefix: "/split"}
                route:
                  weighted_clusters:
                    clusters:
                    - {name: echo_a, weight: 50}
                    - {name: echo_b, weight: 50}
              - match: {prefix: "/flaky"}
                route:
                  cluster: echo_a
                  timeout: 2s
                  retry_policy: {retry_on: "5xx", num_retries: 2, per_try_timeout: 1s}
              - match: {prefix: "/old"}
                redirect: {path_redirect: "/new", response_code: MOVED_PERMANENTLY}
              - match: {prefix: "/direct"}
                direct_response:
                  status: 200
                  body: {inline_string: "hello\\n"}
  clusters:
  - name: echo_a
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo_a
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18081}}}
  - name: echo_b
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    load_assignment:
      cluster_name: echo_b
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: localhost, port_value: 18082}}}
""".replace("HCM_URL", HCM_URL)


def listener_yaml(typed_config: str, *, address: str = "port_value: 10000") -> str:
    """A one-listener bootstrap whose only filter has ``typed_config`` (a YAML flow mapping)."""
    return textwrap.dedent(
        f"""\
        static_resources:
          listeners:
          - name: l0
            address: {{socket_address: {{address: 127.0.0.1, {address}}}}}
            filter_chains:
            - filters:
              - name: f0
                typed_config: {typed_config}
        """
    )


def tcp_proxy(extra: str = "stat_prefix: tcp, cluster: c") -> str:
    return f"{{'@type': {TCP_PROXY_URL}, {extra}}}"


def errors_of(text: str, **kwargs: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(text, **kwargs)  # type: ignore[arg-type]
    return [(issue.path, issue.message) for issue in info.value.errors]


def error_paths(text: str, **kwargs: object) -> list[str]:
    return [path for path, _ in errors_of(text, **kwargs)]


# --- valid configs -----------------------------------------------------------------------------


def test_tcp_proxy_config_parses_and_unpacks() -> None:
    bootstrap = parse_bootstrap(TCP_PROXY_YAML)
    listener = bootstrap.static_resources.listeners[0]
    assert listener.address.socket_address.port_value == 18100
    filter_config = unpack_typed_config(
        listener.filter_chains[0].filters[0].typed_config, FILTER0 + ".typed_config"
    )
    assert type(filter_config).DESCRIPTOR.full_name == (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    )
    assert filter_config.stat_prefix == "tcp_echo"  # type: ignore[union-attr]
    assert duration_seconds(filter_config.idle_timeout) == 30.0  # type: ignore[union-attr]
    cluster = bootstrap.static_resources.clusters[0]
    assert duration_seconds(cluster.connect_timeout) == 1.0


def test_http_router_config_parses() -> None:
    bootstrap = parse_bootstrap(HTTP_ROUTER_YAML)
    hcm = unpack_typed_config(
        bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config, "hcm"
    )
    routes = hcm.route_config.virtual_hosts[0].routes  # type: ignore[union-attr]
    assert routes[1].match.safe_regex.regex == "^/items/[0-9]+$"
    assert [c.weight.value for c in routes[3].route.weighted_clusters.clusters] == [50, 50]
    assert validate_message(bootstrap) == []


def test_load_bootstrap_from_yaml_and_json_files(tmp_path: Path) -> None:
    yaml_file = tmp_path / "envoy.yaml"
    yaml_file.write_text(TCP_PROXY_YAML)
    assert load_bootstrap(yaml_file).static_resources.clusters[0].name == "echo"
    json_file = tmp_path / "envoy.json"
    json_file.write_text(
        '{"static_resources": {"clusters": [{"name": "j", "connect_timeout": "0.25s"}]}}'
    )
    cluster = load_bootstrap(str(json_file)).static_resources.clusters[0]
    assert duration_seconds(cluster.connect_timeout) == 0.25


def test_camel_case_json_names_are_accepted() -> None:
    bootstrap = parse_bootstrap("staticResources: {clusters: [{name: a, connectTimeout: 2s}]}")
    assert bootstrap.static_resources.clusters[0].connect_timeout.seconds == 2


def test_dates_stay_strings() -> None:
    bootstrap = parse_bootstrap("node: {id: n1, cluster: 2024-01-01}")
    assert bootstrap.node.cluster == "2024-01-01"


# --- YAML / file level errors ------------------------------------------------------------------


def test_yaml_syntax_error_has_file_line_and_column() -> None:
    text = "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: [1s\n"
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(text, source="envoy.yaml")
    (issue,) = info.value.errors
    assert issue.path.startswith("envoy.yaml:")
    file_name, line, column = issue.path.split(":")
    assert (file_name, int(line)) == ("envoy.yaml", 5)
    assert int(column) >= 1
    assert issue.message.startswith("invalid YAML:")
    assert info.value.source == "envoy.yaml"


def test_duplicate_yaml_key_is_an_error() -> None:
    text = "static_resources:\n  clusters:\n  - name: a\n    name: b\n"
    assert errors_of(text, source="x.yaml") == [
        ("x.yaml:4:5", "invalid YAML: duplicate key 'name' (while constructing a mapping)")
    ]


def test_yaml_merge_keys_are_not_duplicates() -> None:
    # A key overriding one brought in by a merge key ("<<") is legal YAML, not a duplicate.
    text = "static_resources:\n  clusters:\n  - <<: {connect_timeout: 1s, name: x}\n    name: a\n"
    assert parse_bootstrap(text).static_resources.clusters[0].name == "a"


def test_invalid_json_file_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "admin": ,\n}')
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path)
    assert info.value.errors[0].path == f"{path}:2:12"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "config is empty"),
        ("# only a comment\n", "config is empty"),
        ("- a\n- b\n", "config must be a mapping of fields at the top level, got a list"),
        (
            "just a string",
            "config must be a mapping of fields at the top level, got string 'just a string'",
        ),
    ],
)
def test_empty_or_non_mapping_config(text: str, message: str) -> None:
    assert errors_of(text, source="c.yaml") == [("c.yaml", message)]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_bootstrap(missing)
    assert info.value.errors[0].path == str(missing)
    assert "cannot read config file" in info.value.errors[0].message


# --- json_format errors, located -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "static_resources: {clusters: [{name: a, connect_timeout: 5x}]}",
            "static_resources.clusters[0].connect_timeout",
            "invalid duration '5x'",
        ),
        (
            "static_resources: {listeners: [{name: a, bogus_field: 1}]}",
            "static_resources.listeners[0].bogus_field",
            "unknown field",
        ),
        (
            "bogus_top: 1",
            "bogus_top",
            "unknown field",
        ),
        (
            "static_resources: {clusters: [{name: ok}, {name: a, type: FOO}]}",
            "static_resources.clusters[1].type",
            "unknown enum value 'FOO'; expected one of: STATIC, STRICT_DNS, LOGICAL_DNS, EDS, "
            "ORIGINAL_DST",
        ),
        (
            "static_resources: {clusters: [{name: 5}]}",
            "static_resources.clusters[0].name",
            "expected a string, got number 5",
        ),
        (
            "admin: {address: {socket_address: {address: x, port_value: abc}}}",
            "admin.address.socket_address.port_value",
            "expected an integer (uint32), got string 'abc'",
        ),
        (
            "admin: {address: {socket_address: {address: x, port_value: 99999999999}}}",
            "admin.address.socket_address.port_value",
            "value 99999999999 is out of range for uint32",
        ),
        (
            "static_resources: {clusters: [{name: a, connect_timeout: 5}]}",
            "static_resources.clusters[0].connect_timeout",
            "invalid duration 5: write it as a string like '5s'",
        ),
        (
            "static_resources: {clusters: x}",
            "static_resources.clusters",
            "expected a list, got string 'x'",
        ),
        (
            "static_resources: {clusters: [{name: a, load_assignment: [1]}]}",
            "static_resources.clusters[0].load_assignment",
            "expected an object, got a list",
        ),
        (
            "admin: {address: {socket_address: {address: x, port_value: 1, named_port: y}}}",
            "admin.address.socket_address",
            "only one of port_value, named_port may be set (they are alternatives in "
            "'port_specifier')",
        ),
    ],
)
def test_parse_errors_name_the_field(text: str, path: str, message: str) -> None:
    assert errors_of(text) == [(path, message)]


def test_errors_inside_typed_config_have_full_paths() -> None:
    assert errors_of(listener_yaml(tcp_proxy("stat_prefix: s, bogus: 1"))) == [
        (f"{FILTER0}.typed_config.bogus", "unknown field")
    ]
    assert errors_of(listener_yaml(tcp_proxy("stat_prefix: s, idle_timeout: zz"))) == [
        (f"{FILTER0}.typed_config.idle_timeout", "invalid duration 'zz'")
    ]


def test_errors_in_map_values_and_nested_any() -> None:
    text = textwrap.dedent(
        """\
        static_resources:
          clusters:
          - name: a
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                explicit_http_config: {http2_protocol_options: {bad: 1}}
        """
    )
    assert error_paths(text) == [
        "static_resources.clusters[0].typed_extension_protocol_options"
        "[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]"
        ".explicit_http_config.http2_protocol_options.bad"
    ]


def test_missing_type_in_any() -> None:
    assert errors_of(listener_yaml("{stat_prefix: x}")) == [
        (f"{FILTER0}.typed_config", "missing '@type'")
    ]


# --- @type resolution and plugin types -----------------------------------------------------------


def test_unknown_type_is_reported_with_envoys_wording() -> None:
    assert errors_of(listener_yaml("{'@type': type.googleapis.com/x.y.Z}")) == [
        (f"{FILTER0}.typed_config", "could not find @type 'type.googleapis.com/x.y.Z'")
    ]


def test_all_unknown_types_are_reported_at_once() -> None:
    text = listener_yaml(
        tcp_proxy(
            "stat_prefix: s, cluster: c, access_log: [{name: a, typed_config: "
            "{'@type': type.googleapis.com/q.Q}}]"
        )
    ).replace(
        "name: l0",
        "name: l0\n    listener_filters: [{name: lf, typed_config: "
        "{'@type': type.googleapis.com/r.R}}]",
    )
    assert error_paths(text) == [
        "static_resources.listeners[0].listener_filters[0].typed_config",
        f"{FILTER0}.typed_config.access_log[0].typed_config",
    ]


def test_plugin_type_used_directly_becomes_plugin_typed_config() -> None:
    text = listener_yaml(f"{{'@type': {PLUGIN_URL}, realm: r, port: 80, ratio: 0.5, tags: [a]}}")
    bootstrap = parse_bootstrap(text, plugin_type_urls=[PLUGIN_URL])
    any_msg = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
    # Stored the way Envoy stores third-party config: inside xds.type.v3.TypedStruct.
    assert any_msg.type_url == "type.googleapis.com/xds.type.v3.TypedStruct"
    config = unpack_typed_config(any_msg, "x")
    assert config == PluginTypedConfig(
        type_url=PLUGIN_URL, value={"realm": "r", "port": 80, "ratio": 0.5, "tags": ["a"]}
    )
    assert isinstance(config, PluginTypedConfig)
    assert isinstance(config.value["port"], int)  # Struct's doubles come back as ints
    assert config.type_name == "acme.filters.network.auth.v1.Auth"


def test_plugin_types_match_by_type_name() -> None:
    text = listener_yaml(f"{{'@type': {PLUGIN_URL}, realm: r}}")
    bootstrap = parse_bootstrap(text, plugin_type_urls=["acme.filters.network.auth.v1.Auth"])
    any_msg = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
    assert unpack_typed_config(any_msg, "x") == PluginTypedConfig(PLUGIN_URL, {"realm": "r"})


def test_plugin_type_without_registration_is_unknown() -> None:
    assert errors_of(listener_yaml(f"{{'@type': {PLUGIN_URL}}}")) == [
        (f"{FILTER0}.typed_config", f"could not find @type '{PLUGIN_URL}'")
    ]


@pytest.mark.parametrize("wrapper", ["xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"])
def test_explicit_typed_struct_for_plugin_type(wrapper: str) -> None:
    text = listener_yaml(
        f"{{'@type': type.googleapis.com/{wrapper}, type_url: {PLUGIN_URL}, "
        f"value: {{realm: r, nested: {{a: 1}}}}}}"
    )
    bootstrap = parse_bootstrap(text, plugin_type_urls=[PLUGIN_URL])
    any_msg = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
    assert unpack_typed_config(any_msg, "x") == PluginTypedConfig(
        PLUGIN_URL, {"realm": "r", "nested": {"a": 1}}
    )


def test_explicit_typed_struct_with_unregistered_inner_type() -> None:
    text = listener_yaml(
        f"{{'@type': type.googleapis.com/xds.type.v3.TypedStruct, type_url: {PLUGIN_URL}}}"
    )
    assert errors_of(text) == [
        (f"{FILTER0}.typed_config.type_url", f"could not find @type '{PLUGIN_URL}'")
    ]


def test_typed_struct_of_a_known_proto_unpacks_to_that_proto() -> None:
    text = listener_yaml(
        f"{{'@type': type.googleapis.com/xds.type.v3.TypedStruct, type_url: {TCP_PROXY_URL}, "
        f"value: {{stat_prefix: s, cluster: c, idle_timeout: 2s}}}}"
    )
    bootstrap = parse_bootstrap(text)
    any_msg = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
    config = unpack_typed_config(any_msg, "x")
    assert not isinstance(config, PluginTypedConfig)
    assert config.DESCRIPTOR.full_name.endswith("tcp_proxy.v3.TcpProxy")
    assert (config.stat_prefix, config.idle_timeout.seconds) == ("s", 2)


def test_typed_struct_of_a_known_proto_is_parsed_and_validated_with_paths() -> None:
    def wrapped(value: str) -> str:
        return listener_yaml(
            f"{{'@type': type.googleapis.com/xds.type.v3.TypedStruct, "
            f"type_url: {TCP_PROXY_URL}, value: {value}}}"
        )

    assert errors_of(wrapped("{stat_prefix: s, bogus: 1}")) == [
        (f"{FILTER0}.typed_config.value.bogus", "unknown field")
    ]
    assert errors_of(wrapped("{cluster: c}")) == [
        (f"{FILTER0}.typed_config.value.stat_prefix", "value length must be at least 1 characters")
    ]


def test_known_type_wins_over_plugin_registration() -> None:
    bootstrap = parse_bootstrap(listener_yaml(tcp_proxy()), plugin_type_urls=[TCP_PROXY_URL])
    any_msg = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
    assert any_msg.type_url == TCP_PROXY_URL


# --- PGV validation ------------------------------------------------------------------------------


def test_tcp_proxy_without_stat_prefix() -> None:
    assert errors_of(listener_yaml(tcp_proxy("cluster: c"))) == [
        (f"{FILTER0}.typed_config.stat_prefix", "value length must be at least 1 characters")
    ]


def test_negative_connect_timeout() -> None:
    assert errors_of("static_resources: {clusters: [{name: a, connect_timeout: -1s}]}") == [
        ("static_resources.clusters[0].connect_timeout", "value must be greater than 0s")
    ]


def test_listener_port_out_of_range_and_missing_address() -> None:
    text = listener_yaml(tcp_proxy(), address="port_value: 70000") + "  - name: l1\n"
    assert errors_of(text) == [
        (
            "static_resources.listeners[0].address.socket_address.port_value",
            "value must be less than or equal to 65535",
        ),
        ("static_resources.listeners[1].address", "value is required"),
    ]


def test_all_validation_issues_are_reported_together() -> None:
    text = textwrap.dedent(
        """\
        static_resources:
          clusters:
          - name: ""
            connect_timeout: 0s
            type: 42
          - name: b
            load_assignment:
              cluster_name: b
              endpoints: [{lb_endpoints: [{endpoint: {address: {}}}]}]
        """
    )
    assert errors_of(text) == [
        ("static_resources.clusters[0].name", "value length must be at least 1 characters"),
        ("static_resources.clusters[0].type", "value must be one of the defined enum values"),
        ("static_resources.clusters[0].connect_timeout", "value must be greater than 0s"),
        (
            "static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint"
            ".address.address",
            "one of socket_address, pipe, envoy_internal_address is required",
        ),
    ]


def test_message_required_and_repeated_min_items() -> None:
    hcm = f"{{'@type': {HCM_URL}, stat_prefix: h}}"
    # HCM needs one of rds / route_config / scoped_routes; route_config needs virtual host names.
    assert error_paths(listener_yaml(hcm)) == [f"{FILTER0}.typed_config.route_specifier"]
    hcm = (
        f"{{'@type': {HCM_URL}, stat_prefix: h, route_config: {{virtual_hosts: "
        f"[{{name: v, domains: []}}]}}}}"
    )
    assert errors_of(listener_yaml(hcm)) == [
        (
            f"{FILTER0}.typed_config.route_config.virtual_hosts[0].domains",
            "value must contain at least 1 item(s)",
        )
    ]


def test_repeated_item_rules_and_header_name_regex() -> None:
    hcm = (
        f"{{'@type': {HCM_URL}, stat_prefix: h, route_config: {{virtual_hosts: [{{name: v, "
        f'domains: ["*"], request_headers_to_remove: [ok, "", "bad\\nname"]}}]}}}}'
    )
    prefix = f"{FILTER0}.typed_config.route_config.virtual_hosts[0].request_headers_to_remove"
    assert errors_of(listener_yaml(hcm)) == [
        (f"{prefix}[1]", "value length must be at least 1 characters"),
        (f"{prefix}[2]", "value must be a valid HTTP header name"),
    ]


def test_oneof_members_are_only_checked_when_set() -> None:
    # RouteMatch.safe_regex is 'required' inside a oneof: it must not fire for a prefix match.
    assert parse_bootstrap(HTTP_ROUTER_YAML) is not None


def test_validate_message_directly_with_prefix() -> None:
    from envoy.config.core.v3 import address_pb2

    address = address_pb2.Address()
    address.socket_address.port_value = 70000
    assert validate_message(address, "x") == [
        ConfigIssue("x.socket_address.address", "value length must be at least 1 characters"),
        ConfigIssue("x.socket_address.port_value", "value must be less than or equal to 65535"),
    ]


def test_parse_config_data_for_an_xds_resource() -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    cluster = parse_config_data(
        {"name": "c", "connect_timeout": "3s"}, cluster_pb2.Cluster, path="resources[0]"
    )
    assert cluster.connect_timeout.seconds == 3
    with pytest.raises(ConfigError) as info:
        parse_config_data(
            {"name": "c", "connect_timeout": "-3s"}, cluster_pb2.Cluster, path="resources[2]"
        )
    assert info.value.errors[0].path == "resources[2].connect_timeout"


# --- API details ---------------------------------------------------------------------------------


def test_config_error_rendering_and_pickling() -> None:
    error = ConfigError(
        [ConfigIssue("a.b", "bad"), ConfigIssue("", "root problem")], source="f.yaml"
    )
    assert str(error) == "a.b: bad\nroot problem"
    clone = pickle.loads(pickle.dumps(error))
    assert clone.errors == error.errors and clone.source == "f.yaml"


def test_duration_helpers() -> None:
    assert duration_seconds(duration_pb2.Duration(seconds=1, nanos=500_000_000)) == 1.5
    assert format_duration(duration_pb2.Duration(seconds=0)) == "0s"
    assert format_duration(duration_pb2.Duration(seconds=1, nanos=250_000_000)) == "1.25s"
    assert format_duration(duration_pb2.Duration(seconds=-1, nanos=-500_000_000)) == "-1.5s"


def test_validation_of_ten_listeners_is_fast() -> None:
    listeners = "".join(
        textwrap.dedent(
            f"""\
              - name: l{i}
                address: {{socket_address: {{address: 127.0.0.1, port_value: {10000 + i}}}}}
                filter_chains:
                - filters:
                  - name: envoy.filters.network.http_connection_manager
                    typed_config:
                      "@type": {HCM_URL}
                      stat_prefix: h{i}
                      http_filters:
                      - name: envoy.filters.http.router
                        typed_config:
                          "@type": {ROUTER_URL}
                      route_config:
                        virtual_hosts:
                        - name: v
                          domains: ["*"]
                          routes:
                          - match: {{prefix: "/a"}}
                            route: {{cluster: c, timeout: 2s}}
                          - match: {{safe_regex: {{regex: "^/b/[0-9]+$"}}}}
                            route: {{cluster: c}}
            """
        ).replace("\n", "\n  ")
        for i in range(10)
    )
    bootstrap = parse_bootstrap("static_resources:\n  listeners:\n  " + listeners)
    assert len(bootstrap.static_resources.listeners) == 10
    validate_message(bootstrap)  # warm the per-type rule cache
    start = time.perf_counter()
    assert validate_message(bootstrap) == []
    assert time.perf_counter() - start < 0.1


LAZY_PROTOS_SCRIPT = """
import sys
from envoi.config import parse_bootstrap, unpack_typed_config
from envoi.config.protos import find_message_type

def loaded(prefix):
    return sorted(m for m in sys.modules if m.startswith(prefix) and m.endswith("_pb2"))

text = sys.stdin.read()
boot = parse_bootstrap(text)
assert not loaded("envoy.extensions.filters.http.buffer."), "buffer imported before use"
total = len(loaded("envoy."))
# A type of a package nothing imported yet is found (and its package imported) on first use.
buffer = find_message_type("type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer")
assert buffer is not None and loaded("envoy.extensions.filters.http.buffer.")
assert find_message_type("type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope") is None
hcm = boot.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
unpacked = unpack_typed_config(hcm, "hcm")
print(total, type(unpacked).__name__)
"""


def test_protos_are_imported_when_a_config_names_them() -> None:
    """Parsing a config imports the generated modules of the packages it names, not all ~1,400
    (about 10 MiB per process); a type of another package is still found on first use."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LAZY_PROTOS_SCRIPT], input=HTTP_ROUTER_YAML,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    total, name = out.stdout.split()
    assert int(total) < 400  # all of them: ~1,370
    assert name == "HttpConnectionManager"
