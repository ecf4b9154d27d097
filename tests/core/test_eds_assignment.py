"""The EDS cluster side: a ClusterLoadAssignment applied through the one host-set update path."""

from __future__ import annotations

import pytest
from envoi.config import ConfigError, parse_config_data
from envoi.stats import Store
from envoi.upstream.assignment import apply_eds_update
from envoi.upstream.cluster import Cluster, ClusterStats
from envoi.upstream.lb import LbParams, RoundRobin
from envoy.config.endpoint.v3 import endpoint_pb2


def cla(data: dict[str, object]) -> endpoint_pb2.ClusterLoadAssignment:
    return parse_config_data({"cluster_name": "c", **data},
                             endpoint_pb2.ClusterLoadAssignment)


def ep(addr: str, **kw: object) -> dict[str, object]:
    return {"endpoint": {"address": {"socket_address": {"address": addr, "port_value": 80}}},
            **kw}


def cluster() -> Cluster:
    c = Cluster(name="c", stats=ClusterStats(Store().root.scope("cluster.c")))
    c.lb = RoundRobin([], LbParams(locality_weighted=True), c)
    return c


def test_priorities_localities_health_status_and_stats() -> None:
    c = cluster()
    apply_eds_update(c, cla({
        "endpoints": [
            {"locality": {"zone": "a"}, "load_balancing_weight": 3,
             "lb_endpoints": [ep("10.0.0.1"), ep("10.0.0.2", health_status="UNHEALTHY")]},
            {"priority": 1, "lb_endpoints": [ep("10.0.1.1", load_balancing_weight=5)]},
        ],
        "policy": {"overprovisioning_factor": 200}}))
    st = c.stats
    assert (st.update_attempt.value, st.update_success.value, st.membership_total.value,
            st.membership_healthy.value) == (1, 1, 3, 2)
    p0, p1 = c.priority_set
    assert [h.address for h in p0.hosts] == ["10.0.0.1", "10.0.0.2"]
    assert p0.locality_weights == {("", "a", ""): 3} and p0.overprovisioning_factor == 200
    assert "failed_eds_health" in p0.hosts[1].health_flags
    assert p1.hosts[0].weight == 5 and p1.hosts[0].priority == 1
    # 1 of 2 healthy * 200 % = 100 %: P0 still takes everything.
    assert c.lb.healthy_load == [100, 0]
    kept = p0.hosts[0]
    kept.rq_total = 9
    # The same assignment again: nothing rebuilt; a host that stays keeps its object.
    apply_eds_update(c, cla({"endpoints": [
        {"locality": {"zone": "a"}, "load_balancing_weight": 3,
         "lb_endpoints": [ep("10.0.0.1"), ep("10.0.0.2", health_status="UNHEALTHY")]},
        {"priority": 1, "lb_endpoints": [ep("10.0.1.1", load_balancing_weight=5)]}],
        "policy": {"overprovisioning_factor": 200}}))
    assert st.update_no_rebuild.value == 1
    # Recovered in EDS, priority 1 gone.
    apply_eds_update(c, cla({"endpoints": [{"lb_endpoints": [ep("10.0.0.1"),
                                                            ep("10.0.0.2")]}]}))
    assert c.priority_set[0].hosts[0] is kept and kept.rq_total == 9
    assert not c.priority_set[0].hosts[1].health_flags
    assert c.priority_set[1].hosts == []
    assert st.membership_total.value == 2 and st.membership_healthy.value == 2
    apply_eds_update(c, cla({"endpoints": []}))
    assert st.update_empty.value == 1 and st.membership_total.value == 0


def test_bad_assignment_is_rejected_and_hosts_stay() -> None:
    c = cluster()
    apply_eds_update(c, cla({"endpoints": [{"lb_endpoints": [ep("10.0.0.1")]}]}))
    with pytest.raises(ConfigError, match="malformed IP address"):
        apply_eds_update(c, cla({"endpoints": [{"lb_endpoints": [ep("not-an-ip")]}]}))
    assert [h.address for h in c.hosts] == ["10.0.0.1"]
    assert c.stats.scope.counter("update_rejected").value == 1
