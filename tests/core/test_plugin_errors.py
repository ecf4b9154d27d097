"""Errors a plugin author meets say what to do: each names the plugin (and its distribution),
the config path where there is one, and what would fix it -- and none prints a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from envoi.extensions import NetworkFilterFactory
from envoi.plugins import Plugins
from envoi.testing import EnvoiProcess, free_port
from envoi.testing.process import EnvoiExited

TCP_CONFIG = """\
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: test.filters.network.thing
        typed_config:
          "@type": type.googleapis.com/%s
          header: x-tenant
"""

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
HTTP_CONFIG = """\
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": HCM_TYPE
          stat_prefix: x
          http_filters:
          - name: example.filters.http.add_header
            typed_config:
              "@type": type.googleapis.com/%s
              header: x-example
          - name: envoy.filters.http.router
          route_config: {}
""".replace("HCM_TYPE", HCM_TYPE)


def validate(tmp_path: Path, config: str, *args: str,
             site: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``envoi --mode validate`` in a fresh process; ``site`` is put on its sys.path (plugin
    modules and dist-info written by the test)."""
    cfg = tmp_path / "envoi.yaml"
    cfg.write_text(config)
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site),
                                                          env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(cfg),
                           *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path)


def write_plugin(site: Path, module: str, source: str, *, dist: str | None = None) -> None:
    """A plugin module in ``site``; with ``dist``, also a distribution whose ``envoi`` entry
    point names it (as ``pip install`` would leave it)."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    if dist is not None:
        info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[envoi]\n{module} = {module}\n")


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr


def test_plugin_that_fails_to_import_is_named_with_its_distribution(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_plugin(site, "acme_broken", "import not_a_module_anywhere\n", dist="acme-broken")
    out = validate(tmp_path, "static_resources: {}\n", site=site)
    assert out.returncode == 1
    msg = out.stderr
    assert "plugin 'acme_broken' (distribution acme-broken 1.2.3" in msg
    assert "ModuleNotFoundError: No module named 'not_a_module_anywhere'" in msg
    assert "-p no:acme_broken" in msg  # what to do
    no_traceback(out)
    # ... and the hint works: blocked, the same config validates.
    assert validate(tmp_path, "static_resources: {}\n", "-p", "no:acme_broken",
                    site=site).returncode == 0


def test_misspelled_hook_names_the_plugin_once_and_the_closest_spec(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_plugin(site, "acme_typo", """\
        from envoi import hookimpl

        @hookimpl
        def envoi_http_filter():
            return []
        """, dist="acme-typo")
    out = validate(tmp_path, "static_resources: {}\n", site=site)
    assert out.returncode == 1
    assert "plugin 'acme_typo' (acme-typo 1.2.3) implements 'envoi_http_filter', which is not " \
           "an envoi hook; did you mean 'envoi_http_filters'?" in out.stderr
    assert out.stderr.count("acme_typo") == 1
    no_traceback(out)


def test_unmarked_envoi_function_is_taken_as_a_hook(tmp_path: Path) -> None:
    """As pytest takes ``pytest_*`` functions: no ``@hookimpl`` needed."""
    site = tmp_path / "site"
    write_plugin(site, "acme_unmarked", """\
        from envoi.extensions import NetworkFilterFactory

        class Thing(NetworkFilterFactory):
            name = "acme.filters.network.thing"
            terminal = True

            def create_filter_factory(self, config, context):
                return lambda builder: None

        def envoi_network_filters():
            return [Thing()]
        """)
    sys.path.insert(0, str(site))
    try:
        plugins = Plugins(autoload=False, extra=["acme_unmarked"])
    finally:
        sys.path.remove(str(site))
    f = plugins.lookup(NetworkFilterFactory, "acme.filters.network.thing", None, "p")
    assert f.name == "acme.filters.network.thing"


def test_misspelled_type_lists_the_plugin_types_and_the_closest(tmp_path: Path) -> None:
    out = validate(tmp_path, HTTP_CONFIG % "example.filters.http.add_headr.v1.AddHeader")
    assert out.returncode == 1
    msg = out.stderr
    path = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
            ".http_filters[0].typed_config")
    assert f"{path}: could not find @type " in msg
    assert "did you mean 'type.googleapis.com/example.filters.http.add_header.v1.AddHeader'?" \
        in msg
    assert "example.filters.http.add_header.v1.AddHeader (envoi-example-http-filter 0.1.0)" \
        in msg
    no_traceback(out)


def test_misspelled_envoy_type_suggests_the_envoy_type(tmp_path: Path) -> None:
    out = validate(tmp_path, HTTP_CONFIG.replace(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConectionManager")
        % "example.filters.http.add_header.v1.AddHeader")
    assert out.returncode == 1
    assert "did you mean 'type.googleapis.com/envoy.extensions.filters.network." \
           "http_connection_manager.v3.HttpConnectionManager'?" in out.stderr
    no_traceback(out)


def test_unknown_type_suggests_a_type_of_a_package_the_config_never_named(
        tmp_path: Path) -> None:
    """A config imports only the protos it names; the suggestion still looks at all of them."""
    out = validate(tmp_path, HTTP_CONFIG.replace(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.filters.network.kafka_broker.v3.KafkaBroker")
        % "example.filters.http.add_header.v1.AddHeader")
    assert out.returncode == 1
    assert "did you mean 'type.googleapis.com/envoy.config.filter.network.kafka_broker." \
           "v2alpha1.KafkaBroker'?" in out.stderr
    no_traceback(out)


def test_crash_in_a_config_parser_names_plugin_path_and_exception(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_plugin(site, "acme_parser", """\
        from envoi.extensions import ConfigSchema, NetworkFilterFactory

        class Thing(NetworkFilterFactory):
            name = "test.filters.network.thing"
            type_urls = ("acme.Thing",)
            terminal = True

            def create_filter_factory(self, config, context):
                return lambda builder: None

        def parse(data):
            return data["hedaer"]  # a bug: KeyError

        def envoi_network_filters():
            return [Thing()]

        def envoi_config_schemas():
            return [ConfigSchema("acme.Thing", parse, fields=("header",))]
        """, dist="acme-parser")
    out = validate(tmp_path, TCP_CONFIG % "acme.Thing", site=site)
    assert out.returncode == 1
    msg = out.stderr
    assert ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config: the config "
            "parser of plugin 'acme_parser' (acme-parser 1.2.3) raised KeyError: 'hedaer'") in msg
    assert "\n'hedaer'\n" not in msg
    no_traceback(out)


def test_crash_in_create_filter_factory_names_the_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_plugin(site, "acme_create", """\
        from envoi.extensions import NetworkFilterFactory

        class Thing(NetworkFilterFactory):
            name = "test.filters.network.thing"
            terminal = True

            def create_filter_factory(self, config, context):
                return {}["header"]

        def envoi_network_filters():
            return [Thing()]
        """, dist="acme-create")
    config = TCP_CONFIG.split("        typed_config:")[0]
    out = validate(tmp_path, config, site=site)
    assert out.returncode == 1
    assert ("test.filters.network.thing (plugin 'acme_create' (acme-create 1.2.3)) failed to "
            "build its config: KeyError: 'header'") in out.stderr
    no_traceback(out)


def test_envoi_process_fails_at_once_with_the_proxy_error(
        tmp_path: Path, envoi_process: Callable[..., EnvoiProcess]) -> None:
    admin = free_port()
    config = HTTP_CONFIG % "example.filters.http.add_header.v1.AddHeader"
    config = config.replace("header: x-example", "header: 7")
    started = time.monotonic()
    with pytest.raises(EnvoiExited) as exc:
        envoi_process(f"admin: {{address: {{socket_address: {{address: 127.0.0.1, "
                      f"port_value: {admin}}}}}}}\n" + config, admin)
    assert time.monotonic() - started < 15  # not the 30 s ready timeout
    assert exc.value.returncode == 1
    assert "http_filters[0].typed_config.header: expected a string, got int 7" in str(exc.value)


def test_envoi_process_removes_its_log_file(tmp_path: Path) -> None:
    proc = EnvoiProcess(tmp_path / "missing.yaml", free_port())
    log_path = Path(proc._log.name)
    with pytest.raises(EnvoiExited, match="cannot read config file"):
        proc.start(timeout=30)
    assert not log_path.exists()
    assert "cannot read config file" in proc.log()  # still readable after stop
