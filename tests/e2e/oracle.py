"""The Envoy oracle lives in :mod:`envoi.testing.envoy`; this name is kept for the tests."""

from envoi.testing.envoy import EnvoyProcess, envoy_binary

__all__ = ["EnvoyProcess", "envoy_binary"]
