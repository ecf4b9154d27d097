"""Plugin discovery, blocking, validation and name resolution."""

from __future__ import annotations

import sys
import types

import pytest
from envoi import hookimpl
from envoi.config import ConfigError
from envoi.extensions import HttpFilterFactory, NetworkFilterFactory
from envoi.plugins import PluginError, Plugins


def test_builtins_register_through_the_hooks() -> None:
    plugins = Plugins(autoload=False)
    names = {(i.category, i.name) for i in plugins.extensions}
    assert ("envoy.filters.network", "envoy.filters.network.tcp_proxy") in names
    assert ("envoy.clusters", "envoy.cluster.static") in names
    assert ("envoy.load_balancing_policies", "envoy.load_balancing_policies.round_robin") in names
    assert ("envoy.access_loggers", "envoy.access_loggers.file") in names
    assert all(i.distribution.startswith("envoi ") for i in plugins.extensions
               if i.plugin.startswith("builtin."))


def test_lookup_by_type_url_first_then_name() -> None:
    plugins = Plugins(autoload=False)
    f = plugins.lookup(NetworkFilterFactory, "whatever",
                       "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                       "p")
    assert f.name == "envoy.filters.network.tcp_proxy"
    assert plugins.lookup(NetworkFilterFactory, "envoy.tcp_proxy", None, "p") is f


def test_unknown_name_lists_installed_and_provider() -> None:
    plugins = Plugins(autoload=False)
    with pytest.raises(ConfigError) as exc:
        plugins.lookup(NetworkFilterFactory, "envoy.filters.network.mongo_proxy", None,
                       "static_resources.listeners[0].filter_chains[0].filters[0]")
    msg = str(exc.value)
    assert msg.startswith("static_resources.listeners[0].filter_chains[0].filters[0]: ")
    # envoi-mongo is installed in the test venv, but autoload is off here
    assert ("provided by the 'envoi-mongo' distribution, which is installed (0.1.0) but not "
            "loaded") in msg
    assert "envoy.filters.network.tcp_proxy (envoi " in msg


def test_unknown_name_of_a_distribution_not_installed_says_pip_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from envoi import plugins as plugins_module

    monkeypatch.setitem(plugins_module.KNOWN_PROVIDERS, "acme.filters.network.x",
                        "acme-not-installed")
    with pytest.raises(ConfigError) as exc:
        Plugins(autoload=False).lookup(NetworkFilterFactory, "acme.filters.network.x", None, "p")
    assert ("'acme.filters.network.x' is provided by the 'acme-not-installed' distribution: "
            "pip install acme-not-installed") in str(exc.value)


def test_a_loaded_distribution_that_lacks_the_name_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A name envoi knows as envoi-http's (installed and loaded) that it does not implement.
    from envoi import plugins as plugins_module

    monkeypatch.setitem(plugins_module.KNOWN_PROVIDERS, "envoy.filters.http.not_yet",
                        "envoi-http")
    plugins = Plugins(autoload=True)
    assert plugins.lookup(HttpFilterFactory, "envoy.filters.http.router", None, "p")
    with pytest.raises(ConfigError) as exc:
        plugins.lookup(HttpFilterFactory, "envoy.filters.http.not_yet", None, "p")
    msg = str(exc.value)
    assert ("'envoy.filters.http.not_yet' belongs to the 'envoi-http' distribution; "
            "the installed version 0.1.0 does not provide it") in msg
    assert "pip install" not in msg


def test_unknown_type_url_is_an_error() -> None:
    plugins = Plugins(autoload=False)
    with pytest.raises(ConfigError, match=r"@type 'type\.googleapis\.com/a\.b\.C'"):
        plugins.lookup(NetworkFilterFactory, "x", "type.googleapis.com/a.b.C", "p")


def _module(name: str, **attrs: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
    return mod


def test_misspelled_hook_is_an_error_naming_the_plugin() -> None:
    @hookimpl
    def envoi_network_filter() -> list[object]:  # missing the final "s"
        return []

    _module("typo_plugin", envoi_network_filter=envoi_network_filter)
    with pytest.raises(PluginError, match="typo_plugin"):
        Plugins(autoload=False, extra=["typo_plugin"])


def test_block_a_builtin_plugin() -> None:
    plugins = Plugins(autoload=False, blocked=["builtin.tcp_proxy"])
    assert not any(i.name == "envoy.filters.network.tcp_proxy" for i in plugins.extensions)


def test_duplicate_registration_is_an_error() -> None:
    from envoi.filters.tcp_proxy import TcpProxyFactory

    class Dup(TcpProxyFactory):
        pass

    @hookimpl
    def envoi_network_filters() -> list[object]:
        return [Dup()]

    _module("dup_plugin", envoi_network_filters=envoi_network_filters)
    with pytest.raises(PluginError, match="already registered"):
        Plugins(autoload=False, extra=["dup_plugin"])


def test_autoload_finds_installed_plugins_and_env_disables_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugins = Plugins()
    names = {i.name: i.distribution for i in plugins.extensions}
    # The example third-party filter is installed by the test set-up (scripts/setup.sh).
    assert names["example.filters.network.uppercase_echo"].startswith("envoi-example-filter ")
    monkeypatch.setenv("ENVOI_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = Plugins()
    assert "example.filters.network.uppercase_echo" not in {i.name for i in plugins.extensions}


def test_bad_factory_type_is_an_error() -> None:
    @hookimpl
    def envoi_network_filters() -> list[object]:
        return ["not a factory"]

    _module("bad_plugin", envoi_network_filters=envoi_network_filters)
    with pytest.raises(PluginError, match="bad_plugin"):
        Plugins(autoload=False, extra=["bad_plugin"])
