"""ADS over gRPC end to end: one scripted control plane drives envoi and the real Envoy 1.39.3;
envoi's ACK/NACK sequence is asserted message by message, and both end in the same
/config_dump resources and serve the same responses."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_plane import ControlPlane
from envoi.testing import EnvoiProcess, free_port, wait_for
from envoi.testing.envoy import EnvoyProcess
from http_peers import EchoServer
from xds_pair import (
    BOOTSTRAP,
    CDS,
    EDS,
    LDS,
    assignment,
    cluster,
    dump_resources,
    get_port,
    listener,
    summary,
    wait_nacks,
)


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_ads_envoi_and_envoy(tmp_path: Path, cp: ControlPlane, api_type: str) -> None:
    with EchoServer() as a, EchoServer() as b:
        p_envoi, p_envoy = free_port(), free_port()
        cp.set(CDS, "1", {"svc": cluster("svc")})
        cp.set(EDS, "1", {"svc": assignment("svc", [a.port])})
        cp.set(LDS, "1", {"ads_listener": listener(p_envoi, "svc")}, node="envoi")
        cp.set(LDS, "1", {"ads_listener": listener(p_envoy, "svc")}, node="envoy")
        a1, a2 = free_port(), free_port()
        (tmp_path / "envoi").mkdir()
        (tmp_path / "envoy").mkdir()
        ei = EnvoiProcess.from_yaml(BOOTSTRAP.format(node="envoi", admin=a1, cp=cp.port,
                                                     api_type=api_type),
                                    tmp_path / "envoi", a1).start()
        cfg = tmp_path / "envoy" / "envoy.yaml"
        cfg.write_text(BOOTSTRAP.format(node="envoy", admin=a2, cp=cp.port,
                                        api_type=api_type))
        ev = EnvoyProcess(cfg, a2, tmp_path / "envoy" / "envoy.log").start()
        try:
            for port in (p_envoi, p_envoy):
                wait_for(lambda port=port: get_port(port) == a.port, 20, what="v1 traffic")
            assert ei.stats()["control_plane.connected_state"] == 1

            # v2: the endpoints move to b.
            cp.set(EDS, "2", {"svc": assignment("svc", [b.port])})
            for port in (p_envoi, p_envoy):
                wait_for(lambda port=port: get_port(port) == b.port, 20, what="v2 traffic")

            # v3: an invalid cluster (Envoy's validation rules): NACKed, the old one stays.
            cp.set(CDS, "3", {"svc": cluster("svc", connect_timeout="-1s")})
            ei.wait_stat("cluster_manager.cds.update_rejected", 1)
            wait_for(lambda: ev.stats().get("cluster_manager.cds.update_rejected") == 1, 20,
                     what="envoy NACK")
            assert get_port(p_envoi) == b.port and get_port(p_envoy) == b.port

            # v4: a field envoi does not implement: envoi NACKs naming it (Envoy takes it).
            cp.set(CDS, "4", {"svc": cluster("svc", transport_socket_matches=[
                {"name": "m", "transport_socket": {"name": "envoy.transport_sockets.raw_buffer"}}
            ])})
            ei.wait_stat("cluster_manager.cds.update_rejected", 2)
            nacks = wait_nacks(cp, "envoi", 2)
            assert "transport_socket_matches" in nacks[-1].error_detail.message
            assert "connect_timeout" in nacks[0].error_detail.message

            # v5: both back in step.
            cp.set(CDS, "5", {"svc": cluster("svc"), "other": cluster("other")})
            cp.set(EDS, "5", {"svc": assignment("svc", [a.port]),
                              "other": assignment("other", [b.port])})
            for port in (p_envoi, p_envoy):
                wait_for(lambda port=port: get_port(port) == a.port, 20, what="v5 traffic")
            wait_for(lambda: dump_resources(ei.get("/config_dump")[1])["clusters_version"]
                     == "5", 20, what="envoi at v5")
            wait_for(lambda: dump_resources(ev.get("/config_dump"))["clusters_version"] == "5",
                     20, what="envoy at v5")
            mine, theirs = (dump_resources(ei.get("/config_dump")[1]),
                            dump_resources(ev.get("/config_dump")))
            assert mine == theirs, (mine, theirs)
            assert ei.stats()["cluster_manager.cds.version_text"] == "5"
        finally:
            ev.stop()
            ei.stop()
        if api_type == "GRPC":
            seq = summary(cp.requests("envoi"))
            # First requests: clusters (wildcard) and listeners; then each response's ACK or
            # NACK, with the response's nonce; a NACK keeps the last accepted version.
            assert seq[0][:3] == ("Cluster", "", "")
            cds_seq = [s for s in seq if s[0] == "Cluster"]
            versions = [(v, nack) for _, v, n, nack in cds_seq if n]
            assert versions == [("1", False), ("1", True), ("1", True), ("5", False)], seq
