"""No config field is silently ignored: every set field nobody implements is a config error
naming its path (envoi.config.implemented), reported all at once, without follow-on lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoi.config import (
    NOT_IMPLEMENTED,
    ConfigError,
    check_schema_keys,
    ensure_protos_loaded,
    implemented_fields,
    parse_bootstrap,
    unimplemented_fields,
)
from envoi.config.implemented import check_declarations
from envoi.extensions import ConfigSchema
from envoi.plugins import PluginError, Plugins
from envoi.server import Options, Server

ROOT = Path(__file__).resolve().parents[2]
HCM_URL = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
           "HttpConnectionManager")
ROUTER_URL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP_URL = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
L0 = "static_resources.listeners[0]"
F0 = f"{L0}.filter_chains[0].filters[0]"
C0 = "static_resources.clusters[0]"


def cluster(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": 8080}}}}]}]},
        **extra,
    }


def hcm(route_extra: Mapping[str, Any] | None = None, vhost_extra: Mapping[str, Any] | None = None,
        **extra: Any) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": "web"}, **(route_extra or {})}
    return {
        "@type": HCM_URL, "stat_prefix": "in",
        "route_config": {"virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [route], **(vhost_extra or {})}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": ROUTER_URL}}],
        **extra,
    }


def bootstrap(typed_config: Mapping[str, Any] | None = None,
              clusters: list[dict[str, Any]] | None = None, **listener_extra: Any) -> str:
    listener = {
        "name": "in", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "f", "typed_config": typed_config or hcm()}]}],
        **listener_extra,
    }
    return yaml.safe_dump({"static_resources": {"listeners": [listener],
                                                "clusters": clusters or [cluster()]}})


def load_issues(tmp_path: Path, text: str) -> list[str]:
    """The config errors a server reports for ``text`` (serve and validate both load this way)."""
    path = tmp_path / "envoi.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Server(Options(config_path=str(path))).load()
    return [str(issue) for issue in info.value.errors]


def test_every_declaration_names_a_real_message_and_field() -> None:
    Plugins()
    ensure_protos_loaded()
    assert check_declarations() == []
    declared = implemented_fields()
    assert "envoy.config.bootstrap.v3.Bootstrap" in declared
    assert "via" not in declared[HCM_URL.rsplit("/", 1)[1]]


def test_readme_list_is_generated_from_the_declarations() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "implemented_fields.py"),
                          "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_nested_fields_everywhere_are_walked() -> None:
    Plugins()
    text = bootstrap(
        hcm(route_extra={"per_request_buffer_limit_bytes": 5},
            vhost_extra={"cors": {"allow_credentials": True}},
            via="proxy"),
        clusters=[cluster(track_timeout_budgets=True, cleanup_interval="5s")],
        freebind=True,
    )
    issues = unimplemented_fields(parse_bootstrap(text))
    rc = f"{F0}.typed_config.route_config.virtual_hosts[0]"
    assert sorted(str(i) for i in issues) == sorted(f"{p}: {NOT_IMPLEMENTED}" for p in [
        f"{L0}.freebind",
        f"{F0}.typed_config.via",
        f"{rc}.cors",
        f"{rc}.routes[0].per_request_buffer_limit_bytes",
        f"{C0}.track_timeout_budgets",
        f"{C0}.cleanup_interval",
    ])


def test_typed_struct_wrapping_an_envoy_type_is_walked_inside() -> None:
    Plugins()
    wrapped = {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
               "type_url": HCM_URL, "value": {**hcm(), "via": "proxy"}}
    del wrapped["value"]["@type"]
    issues = unimplemented_fields(parse_bootstrap(bootstrap(wrapped)))
    assert [str(i) for i in issues] == [f"{F0}.typed_config.value.via: {NOT_IMPLEMENTED}"]


def test_map_values_are_walked(tmp_path: Path) -> None:
    # A declared map's values are messages whose own fields are checked too (here the runtime
    # layers' list holds a oneof member that is not implemented).
    text = bootstrap() + textwrap.dedent("""\
        layered_runtime:
          layers:
          - name: disk
            disk_layer: {symlink_root: /tmp}
        """)
    assert load_issues(tmp_path, text) == [
        f"layered_runtime.layers[0].disk_layer: {NOT_IMPLEMENTED}"]


def test_fifty_unimplemented_fields_are_all_listed(tmp_path: Path) -> None:
    unimplemented = {
        "track_timeout_budgets": True, "cleanup_interval": "5s",
        "ignore_health_on_host_removal": True, "close_connections_on_host_health_failure": True,
        "connection_pool_per_downstream_connection": True,
    }
    clusters = [cluster(f"c{i}", **unimplemented) for i in range(10)]
    lines = load_issues(tmp_path, bootstrap(hcm(), clusters=[cluster(), *clusters]))
    assert len(lines) == 50, "\n".join(lines)
    assert all(line.endswith(": " + NOT_IMPLEMENTED) for line in lines)
    assert f"static_resources.clusters[10].track_timeout_budgets: {NOT_IMPLEMENTED}" in lines


def test_validate_mode_exits_1_with_every_error(tmp_path: Path) -> None:
    path = tmp_path / "envoi.yaml"
    path.write_text(bootstrap(hcm(via="p", skip_xff_append=True),
                              clusters=[cluster(track_timeout_budgets=True)]))
    out = subprocess.run([str(Path(sys.executable).parent / "envoi"), "--mode", "validate",
                          "-c", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"{F0}.typed_config.via: {NOT_IMPLEMENTED}" in out.stderr
    assert f"{F0}.typed_config.skip_xff_append: {NOT_IMPLEMENTED}" in out.stderr
    assert f"{C0}.track_timeout_budgets: {NOT_IMPLEMENTED}" in out.stderr


def test_no_follow_on_lines(tmp_path: Path) -> None:
    # An unusable address is one line, not also "a socket_address is required"; a filter chain
    # that fails is not followed by "no filter chains specified".
    text = bootstrap(hcm(via="proxy"), clusters=[cluster()])
    data = yaml.safe_load(text)
    data["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"] = {"pipe": {"path": "/tmp/x.sock"}}
    lines = load_issues(tmp_path, yaml.safe_dump(data))
    ep = f"{C0}.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"
    assert sorted(lines) == sorted([
        f"{F0}.typed_config.via: {NOT_IMPLEMENTED}",
        f"{ep}.pipe: {NOT_IMPLEMENTED}",
    ])


def test_a_builder_error_and_an_unimplemented_field_are_both_reported(tmp_path: Path) -> None:
    lines = load_issues(tmp_path, bootstrap(hcm(route_extra={"route": {"cluster": "nope"}},
                                                via="proxy")))
    rc = f"{F0}.typed_config.route_config.virtual_hosts[0]"
    assert lines == [f"{F0}.typed_config.via: {NOT_IMPLEMENTED}",
                     f"{rc}.routes[0].route.cluster: route: unknown cluster 'nope'"]


def test_an_unknown_extension_is_one_line_not_one_per_field(tmp_path: Path) -> None:
    cors = {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}
    typed = hcm()
    typed["http_filters"].insert(0, {"name": "envoy.filters.http.cors",
                                     "typed_config": cors})
    lines = load_issues(tmp_path, bootstrap(typed))
    assert len(lines) == 1
    assert "no envoy.filters.http extension is registered" in lines[0]


# -- plugins with their own schema ---------------------------------------------------------


def test_schema_keys_outside_the_declaration_are_refused() -> None:
    data = {"stat_prefix": "x", "limits": {"max": 1, "min": 0}, "rules": [{"name": "a", "x": 1}],
            "free": {"anything": 1}, "bogus": 2}
    with pytest.raises(ConfigError) as info:
        check_schema_keys(data, ["stat_prefix", "limits.max", "rules.name", "free"], "tc",
                          "acme.v1.A")
    assert [str(i) for i in info.value.errors] == [
        "tc.limits.min: not implemented by the plugin serving acme.v1.A",
        "tc.rules[0].x: not implemented by the plugin serving acme.v1.A",
        "tc.bogus: not implemented by the plugin serving acme.v1.A",
    ]


def test_example_filter_refuses_an_unknown_key(tmp_path: Path) -> None:
    typed = {"@type": "type.googleapis.com/example.filters.network.uppercase_echo.v1."
                      "UppercaseEcho", "stat_prefix": "demo", "colour": "blue"}
    lines = load_issues(tmp_path, bootstrap(typed))
    assert lines == [f"{F0}.typed_config.colour: not implemented by the plugin serving "
                     "example.filters.network.uppercase_echo.v1.UppercaseEcho"]


class _SchemaWithoutFields:
    from envoi import hookimpl

    @staticmethod
    @hookimpl
    def envoi_config_schemas() -> list[ConfigSchema]:
        return [ConfigSchema("acme.v1.NoFields", lambda data: data)]


def test_a_schema_must_declare_its_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "acme_no_fields", _SchemaWithoutFields)
    with pytest.raises(PluginError, match="must declare the keys it implements"):
        Plugins(autoload=False, extra=["acme_no_fields"])


# -- every error in one run ------------------------------------------------------------------


def test_every_parse_error_is_reported_at_once(tmp_path: Path) -> None:
    data = yaml.safe_load(bootstrap(hcm(bogus_one=1)))
    data["static_resources"]["clusters"][0]["lb_policy"] = "ROUND_ROBBIN"
    data["static_resources"]["clusters"][0]["bogus_two"] = 2
    lines = load_issues(tmp_path, yaml.safe_dump(data))
    assert len(lines) == 3, lines
    assert f"{F0}.typed_config.bogus_one: unknown field" in lines
    assert f"{C0}.bogus_two: unknown field" in lines
    assert any(line.startswith(f"{C0}.lb_policy: unknown enum value") for line in lines)


def test_rule_violations_and_unimplemented_fields_come_together(tmp_path: Path) -> None:
    lines = load_issues(tmp_path, bootstrap(hcm(stat_prefix="", via="p"),
                                            clusters=[cluster(track_timeout_budgets=True)]))
    assert sorted(lines) == sorted([
        f"{C0}.track_timeout_budgets: {NOT_IMPLEMENTED}",
        f"{F0}.typed_config.via: {NOT_IMPLEMENTED}",
        f"{F0}.typed_config.stat_prefix: value length must be at least 1 characters",
    ])
