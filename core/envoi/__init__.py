"""envoi: an Envoy-style L4/L7 proxy whose filters are pluggy plugins."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

#: Marks a plugin's hook implementation: ``@envoi.hookimpl def envoi_network_filters(): ...``
hookimpl = pluggy.HookimplMarker("envoi")

try:
    __version__ = version("envoi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"

__all__ = ["__version__", "hookimpl"]
