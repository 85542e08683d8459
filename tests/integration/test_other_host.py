"""Real packets on a host unlike the seed (tests/topologies/other-host.yaml: every
bridge, port, adapter and interface name, address, subnet, service port and the
zone differ, three containers on each bridge). Everything here is read from that
config, as socketnet reads it: a Netmaker peer (an address of its first Netmaker
range) reaches the xray client's service as privacy and each management
container's TCP services as management, each decision committed in the config's
zone with no flow; what no rule claims is dropped and kept dropped in the zone;
management containers reach each other on the mesh. The lab's OVS namespace plays
the Netmaker side, as in test_classification.
"""
import pytest

from controller.pipeline import Mark
from topology.config import load_host
from topology.model import Role

from tests.conftest import TOPOLOGIES
from tests.integration.test_classification import (connect, connections, mesh_flows,
                                                   netmaker_side, serve)

CONFIG = str(TOPOLOGIES["other-host"])


@pytest.fixture
def other(make_lab, controller):
    """(lab, the Netmaker peer's address), socketnet attached with the config."""
    lab = make_lab(load_host(CONFIG))
    ctl = controller(CONFIG)
    lab.attach(ctl.target)
    ctl.wait_synced([b.name for b in lab.host.bridges])
    peer = str(lab.host.netmaker_ranges[0][5])
    netmaker_side(lab, peer)
    return lab, peer


def _tcp_services(container) -> list:
    return [s for s in container.services if s.protocol == "tcp"]


def test_the_config_is_not_the_seeds():
    """What this module proves would prove nothing if the config were the seed's."""
    other, seed = load_host(CONFIG), load_host(str(TOPOLOGIES["seed"]))
    names = {p.name for b in other.bridges for p in b.ports} | {b.name for b in other.bridges}
    assert not names & ({p.name for b in seed.bridges for p in b.ports}
                        | {b.name for b in seed.bridges})
    assert other.classification.conntrack_zone != seed.classification.conntrack_zone
    assert len(other.mesh.with_role(Role.MANAGEMENT)) > len(seed.mesh.with_role(Role.MANAGEMENT))


def test_a_peer_reaches_the_xray_client_as_privacy_with_no_flow(other):
    lab, peer = other
    xray = lab.host.xray_client.container
    (service, *_) = _tcp_services(xray)
    serve(lab, xray.id, str(xray.address), service.port)
    flows = mesh_flows(lab)
    result = connect(lab, peer, str(xray.address), service.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1)[1].strip() == f"hello from {xray.address}"
    held = [c for c in connections(lab) if (c.src, c.dst) == (peer, str(xray.address))]
    assert [c.mark for c in held] == [Mark.PRIVACY], connections(lab)
    assert mesh_flows(lab) == flows


def test_a_peer_reaches_every_management_service_as_management(other):
    lab, peer = other
    reached = []
    for port in lab.host.mesh.with_role(Role.MANAGEMENT):
        for service in _tcp_services(port.container):
            address = str(port.container.address)
            serve(lab, port.container.id, address, service.port)
            result = connect(lab, peer, address, service.port)
            assert result.returncode == 0, (port.name, service, result.stderr)
            assert [c.mark for c in connections(lab)
                    if (c.dst, c.dport) == (address, service.port)] == [Mark.MANAGEMENT]
            reached.append((port.name, service.port))
    assert len(reached) >= 2, reached


def test_what_no_rule_claims_is_dropped_and_kept_dropped_in_the_zone(other):
    lab, peer = other
    xray = lab.host.xray_client.container
    claimed = {s.port for s in xray.services}
    unclaimed = next(p for p in range(2000, 3000) if p not in claimed)
    serve(lab, xray.id, str(xray.address), unclaimed)  # a listener: only the switch refuses
    result = connect(lab, peer, str(xray.address), unclaimed, timeout=1.5)
    assert result.returncode != 0, result.stdout
    assert [c.mark for c in connections(lab) if c.dport == unclaimed] == [Mark.DROP]


def test_management_containers_reach_each_other_on_the_mesh(other):
    lab, _ = other
    first, *rest = [p.container for p in lab.host.mesh.with_role(Role.MANAGEMENT)]
    assert rest
    for container in rest:
        result = lab.exec(first.id, "ping", "-c", "1", "-W", "2", str(container.address))
        assert result.returncode == 0, (container.name, result.stdout)
