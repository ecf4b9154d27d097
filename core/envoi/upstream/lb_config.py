"""A cluster's load-balancing settings, read once at config time into :class:`LbParams`.

``common_lb_config`` (panic threshold, locality weighting, consistent hashing) and the policy's
own message (``least_request_lb_config``, ``ring_hash_lb_config``, ``maglev_lb_config``) are read
here; a field envoi does not act on is a config error naming its path.
"""

from __future__ import annotations

from typing import Any

from envoi.config import ConfigError, ConfigIssue, implements
from envoi.upstream.lb import LbParams

_COMMON_FIELDS = frozenset({"healthy_panic_threshold", "locality_weighted_lb_config",
                            "consistent_hashing_lb_config", "update_merge_window",
                            "ignore_new_hosts_until_first_hc"})

# envoi.config.implemented: the fields lb_params reads (the same lists it checks).
_C = "envoy.config.cluster.v3.Cluster."
implements("envoy.config.cluster.v3.Cluster",
           "common_lb_config", "least_request_lb_config", "ring_hash_lb_config",
           "maglev_lb_config", "round_robin_lb_config")
implements(_C + "CommonLbConfig", *_COMMON_FIELDS)
implements(_C + "CommonLbConfig.ConsistentHashingLbConfig", "use_hostname_for_hashing")
implements(_C + "LeastRequestLbConfig", "choice_count", "active_request_bias")
implements("envoy.config.core.v3.RuntimeDouble", "default_value")
implements(_C + "RingHashLbConfig", "minimum_ring_size", "maximum_ring_size", "hash_function")
implements(_C + "MaglevLbConfig", "table_size")
implements("envoy.type.v3.Percent", "value")


def _unsupported(msg: Any, implemented: frozenset[str], path: str) -> list[ConfigIssue]:
    return [ConfigIssue(f"{path}.{fd.name}", "is not supported by envoi")
            for fd, _ in msg.ListFields() if fd.name not in implemented]


def lb_params(cfg: Any, path: str) -> LbParams:
    """The LbParams of a ``Cluster`` message; raises ConfigError with every problem."""
    issues: list[ConfigIssue] = []
    kw: dict[str, Any] = {}
    if cfg.HasField("common_lb_config"):
        c = cfg.common_lb_config
        p = path + ".common_lb_config"
        issues += _unsupported(c, _COMMON_FIELDS, p)
        if c.HasField("healthy_panic_threshold"):
            kw["panic_threshold"] = c.healthy_panic_threshold.value
        kw["locality_weighted"] = c.HasField("locality_weighted_lb_config")
        kw["ignore_new_hosts_until_first_hc"] = c.ignore_new_hosts_until_first_hc
        if c.HasField("consistent_hashing_lb_config"):
            ch = c.consistent_hashing_lb_config
            issues += _unsupported(ch, frozenset({"use_hostname_for_hashing"}),
                                   p + ".consistent_hashing_lb_config")
            kw["use_hostname_for_hashing"] = ch.use_hostname_for_hashing
    if cfg.HasField("least_request_lb_config"):
        lr = cfg.least_request_lb_config
        p = path + ".least_request_lb_config"
        issues += _unsupported(lr, frozenset({"choice_count", "active_request_bias"}), p)
        if lr.HasField("choice_count"):
            kw["choice_count"] = lr.choice_count.value
        if lr.HasField("active_request_bias"):
            kw["active_request_bias"] = lr.active_request_bias.default_value
            if kw["active_request_bias"] < 0:
                issues.append(ConfigIssue(p + ".active_request_bias", "must not be negative"))
    if cfg.HasField("ring_hash_lb_config"):
        rh = cfg.ring_hash_lb_config
        p = path + ".ring_hash_lb_config"
        issues += _unsupported(rh, frozenset({"minimum_ring_size", "maximum_ring_size",
                                              "hash_function"}), p)
        if rh.hash_function != 0:
            issues.append(ConfigIssue(p + ".hash_function",
                                      "only XX_HASH is supported by envoi"))
        if rh.HasField("minimum_ring_size"):
            kw["ring_min"] = rh.minimum_ring_size.value
        if rh.HasField("maximum_ring_size"):
            kw["ring_max"] = rh.maximum_ring_size.value
        if kw.get("ring_min", 1024) > kw.get("ring_max", 8 * 1024 * 1024):
            issues.append(ConfigIssue(p + ".minimum_ring_size",
                                      "must not be larger than maximum_ring_size"))
    if cfg.HasField("maglev_lb_config"):
        mg = cfg.maglev_lb_config
        if mg.HasField("table_size"):
            from envoi.upstream.hash_lb import is_prime

            size = mg.table_size.value
            if not is_prime(size):
                issues.append(ConfigIssue(path + ".maglev_lb_config.table_size",
                                          f"{size} is not a prime number"))
            kw["maglev_table_size"] = size
    if cfg.HasField("round_robin_lb_config"):
        issues += _unsupported(cfg.round_robin_lb_config, frozenset(),
                               path + ".round_robin_lb_config")
    if issues:
        raise ConfigError(issues)
    return LbParams(**kw)
