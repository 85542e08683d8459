"""The whole world (topology.labs.world) built on a host unlike the seed
(tests/topologies/other-host.yaml), socketnet attached: real WireGuard for Netmaker
and WARP, the droplet, the other node, the VPS. What is probed comes from that
config (the demo's probes: its xray client, containers and node), as on the seed
in test_world: a user's session reaches the VPS from the WARP exit and never over
Netmaker; management reaches the VPS over Netmaker and never through WARP; each
W-probe gets through and each N-probe does not.
"""
import uuid

import pytest

from topology.model import Role
from topology.system import wait_until

from tests.conftest import TOPOLOGIES
from tests.integration.conftest import a_world
from tests.integration.test_world import session


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with a_world(str(TOPOLOGIES["other-host"]), tmp_path_factory) as w:
        yield w


def test_a_users_session_reaches_the_vps_from_the_warp_exit_never_over_netmaker(world):
    from topology.labs.world import VPS, VPS_PORT, WARP_EXIT
    xray = world.host.xray_client.container
    seen = len(world.vps_connections())
    marker = f"user session {uuid.uuid4().hex[:8]}"
    reply = session(world, "droplet", str(xray.address), xray.services[0].port, marker)
    assert f"vps {VPS}:{VPS_PORT} saw {WARP_EXIT}" in reply and marker in reply
    assert set(world.vps_connections()[seen:]) == {(WARP_EXIT, VPS)}


def test_management_reaches_the_vps_over_netmaker_never_through_warp(world):
    from topology.labs.world import VPS_PORT
    last = world.host.mesh.with_role(Role.MANAGEMENT)[-1].container
    vps = world.nm_address["vps"]
    seen = len(world.vps_connections())
    reply = session(world, last.id, vps, VPS_PORT, "metrics")
    assert f"vps {vps}:{VPS_PORT} saw {last.address}" in reply
    assert set(world.vps_connections()[seen:]) == {(str(last.address), vps)}


def test_each_w_probe_gets_through_and_no_n_probe_does(world):
    from topology.labs import demo
    probes = demo.probes(world)
    assert {p.rule for p in probes} >= {"W1-W3", "W4", "W5", "N1", "N3", "N4", "N5"}
    for probe in probes:
        if probe.expect_through:
            wait_until(lambda: demo.run_probe(world, probe)[0], 60, f"{probe} through")
        else:
            assert not demo.run_probe(world, probe)[0], probe
