"""The sync sequence with no switch: its steps in order, answered here, and what it
records and returns for a bridge it finds, one the config does not name, a standby,
meters missing, different or extra, flows already in sync and a refused bundle."""
from __future__ import annotations

import logging

import pytest

from controller import sync
from controller.compiler import SwitchPort, compile_bridge
from controller.flow import OFPP_LOCAL, Flow
from controller.pipeline import KNOWN_SOURCES_METER, PACKET_IN_METER, Purpose
from controller.reconcile import MeterConfig, SwitchFlows, Unreadable
from controller.role import Claim, RolePolicy
from controller.switches import SwitchState

DPID = 0x534E0001


def switch_ports(bridge) -> list:
    """A bridge's ports as its switch reports them: LOCAL and the config's from 1."""
    ports = [SwitchPort(OFPP_LOCAL, bridge.name, "02:fe:00:00:00:fe")]
    ports += [SwitchPort(n, p.name, f"02:fe:00:00:00:{n:02x}")
              for n, p in enumerate(bridge.ports, start=1)]
    return ports


def meters_as_configured(host) -> list:
    limits = host.classification.limits
    return [MeterConfig(meter, limits.packet_in_rate, limits.packet_in_burst)
            for meter in (PACKET_IN_METER, KNOWN_SOURCES_METER)]


class Switch:
    """Answers a sync's steps as a switch holding `flows` and `meters` would;
    `refuse` maps a step's type to the Refused it gets (a list: one per time)."""

    def __init__(self, ports, flows=None, meters=(), refuse=None):
        self.ports, self.meters = ports, list(meters)
        self.flows = flows if flows is not None else SwitchFlows()
        self.refuse = {k: list(v) for k, v in (refuse or {}).items()}
        self.steps = []

    def answer(self, step):
        self.steps.append(step)
        refusals = self.refuse.get(type(step))
        if refusals:
            raise refusals.pop(0)
        if isinstance(step, sync.ReadPorts):
            return self.ports
        if isinstance(step, sync.ReadMeters):
            return self.meters
        if isinstance(step, sync.ReadFlows):
            return self.flows
        return None


def run(steps, switch: Switch):
    """Drive the sequence as the pipeline app does; its outcome."""
    return sync.drive(steps, switch.answer)


def kinds(switch: Switch) -> list:
    return [type(s).__name__ for s in switch.steps]


@pytest.fixture
def roles():
    return RolePolicy("primary", now_ms=lambda: 1_000)


def known(host, bridge) -> SwitchState:
    """A switch whose bridge and ports an earlier sync found."""
    state = SwitchState(DPID, bridge=bridge.name)
    state.ports = {p.name: p for p in switch_ports(bridge)}
    return state


def test_a_new_mesh_switch_is_found_claimed_metered_and_filled_in_one_bundle(seed_host, roles):
    state, switch = SwitchState(DPID), Switch(switch_ports(seed_host.mesh))
    outcome = run(sync.sync(seed_host, state, roles), switch)

    assert kinds(switch) == ["ReadPorts", "Claim", "ReadMeters", "WriteMeters", "ReadFlows",
                             "ApplyBundle", "Barrier"]
    assert switch.steps[1] == Claim(master=True, generation=1_000)
    assert switch.steps[3].changes == tuple(("add", m) for m in meters_as_configured(seed_host))
    desired = compile_bridge(seed_host, "mesh", state.ports)
    bundle = switch.steps[5]
    assert bundle.delete == () and bundle.unreadable == () and set(bundle.add) == set(desired)
    assert isinstance(outcome, sync.Synced) and outcome.bridge == "mesh"
    assert state.bridge == "mesh" and set(state.ports) == {p.name for p in switch.ports}
    assert set(state.desired) == set(desired) and state.last_plan == outcome.plan
    assert state.flow_mods == len(desired) and state.last_sync > 0 and state.last_error == ""
    assert outcome.plan.summary() == f"{len(desired)} to add, 0 to delete, 0 unchanged"


def test_a_known_vmbr0_switch_is_not_asked_its_ports_and_has_no_meters(seed_host, roles):
    vmbr0 = seed_host.bridge("vmbr0")
    state = known(seed_host, vmbr0)
    switch = Switch(switch_ports(vmbr0))
    assert isinstance(run(sync.sync(seed_host, state, roles), switch), sync.Synced)
    assert kinds(switch) == ["Claim", "ReadFlows", "ApplyBundle", "Barrier"]


def test_a_switch_already_in_sync_gets_no_bundle_and_no_meter_mod(seed_host, roles):
    state = known(seed_host, seed_host.mesh)
    desired = compile_bridge(seed_host, "mesh", state.ports)
    switch = Switch(switch_ports(seed_host.mesh), SwitchFlows(tuple(desired)),
                    meters_as_configured(seed_host))
    outcome = run(sync.sync(seed_host, state, roles), switch)
    assert kinds(switch) == ["Claim", "ReadMeters", "ReadFlows", "Barrier"]
    assert outcome.plan.empty and outcome.plan.unchanged == len(desired)
    assert state.flow_mods == 0


def test_a_bridge_the_config_does_not_name_is_left_untouched(seed_host, roles, caplog):
    other = [SwitchPort(OFPP_LOCAL, "other", "02:fe:00:00:00:fe"), SwitchPort(1, "p1", "02:01")]
    state, switch = SwitchState(DPID), Switch(other)
    with caplog.at_level(logging.WARNING, "socketnet.pipeline"):
        outcome = run(sync.sync(seed_host, state, roles), switch)
    assert outcome == sync.NotInConfig("other") and kinds(switch) == ["ReadPorts"]
    assert state.bridge is None and state.ports == {} and state.last_sync == 0
    assert "bridge 'other', which the config does not name; left untouched" in caplog.text
    assert roles.generation == 0  # no role claimed either


def test_a_switch_without_a_local_port_is_bridge_question_mark():
    assert sync.bridge_of([SwitchPort(1, "mesh", "02:01")]) == "?"


def test_a_standby_claims_slave_and_writes_nothing(seed_host, caplog):
    standby = RolePolicy("standby", ("127.0.0.1", 6653), now_ms=lambda: 5)
    state, switch = SwitchState(DPID), Switch(switch_ports(seed_host.mesh))
    with caplog.at_level(logging.INFO, "socketnet.pipeline"):
        outcome = run(sync.sync(seed_host, state, standby), switch)
    assert outcome == sync.Standby("mesh")
    assert kinds(switch) == ["ReadPorts", "Claim"]
    assert switch.steps[1] == Claim(master=False, generation=5)
    assert state.desired == () and state.last_plan is None and state.flow_mods == 0
    assert "mesh: standby (OpenFlow slave): writes nothing" in caplog.text
    assert "pipeline in sync" not in caplog.text


def test_a_meter_missing_is_added_a_different_one_modified_an_extra_one_left(seed_host, roles):
    packet_in, known_sources = meters_as_configured(seed_host)
    slower = MeterConfig(KNOWN_SOURCES_METER, known_sources.rate // 2, known_sources.burst)
    someone_elses = MeterConfig(99, 5, 5)
    switch = Switch(switch_ports(seed_host.mesh), meters=[slower, someone_elses])
    run(sync.sync(seed_host, known(seed_host, seed_host.mesh), roles), switch)
    write = next(s for s in switch.steps if isinstance(s, sync.WriteMeters))
    assert write.changes == (("add", packet_in), ("modify", known_sources))
    assert write.describe(1) == f"packet-in meter {KNOWN_SOURCES_METER}"


def test_a_refused_meter_mod_fails_the_sync_before_any_flow_is_read(seed_host, roles):
    state = known(seed_host, seed_host.mesh)
    switch = Switch(switch_ports(seed_host.mesh),
                    refuse={sync.WriteMeters: [sync.Refused("switch refused packet-in meter 1")]})
    outcome = run(sync.sync(seed_host, state, roles), switch)
    assert outcome == sync.Failed("switch refused packet-in meter 1")
    assert kinds(switch)[-1] == "WriteMeters" and state.sync_failures == 1


def test_a_refused_bundle_fails_the_sync_and_keeps_the_last_good_one(seed_host, roles, caplog):
    state = known(seed_host, seed_host.mesh)
    state.desired, state.last_sync = ("earlier",), 17.0
    error = "switch refused mesh: table=0, priority=0 actions=drop: OFPBRC_EPERM"
    switch = Switch(switch_ports(seed_host.mesh), meters=meters_as_configured(seed_host),
                    refuse={sync.ApplyBundle: [sync.Refused(error)]})
    with caplog.at_level(logging.ERROR, "socketnet.pipeline"):
        outcome = run(sync.sync(seed_host, state, roles), switch)
    assert outcome == sync.Failed(error)
    assert kinds(switch) == ["Claim", "ReadMeters", "ReadFlows", "ApplyBundle"]  # no barrier
    assert state.sync_failures == 1 and state.last_error == error
    assert state.desired == ("earlier",) and state.last_sync == 17.0
    assert state.flow_mods == len(switch.steps[-1])  # sent, though refused
    assert f"mesh: sync failed: {error}" in caplog.text


def test_a_failure_before_the_bridge_is_known_is_logged_under_the_dpid(seed_host, roles, caplog):
    switch = Switch([], refuse={sync.ReadPorts: [sync.Refused("port-desc: no reply in 10s")]})
    with caplog.at_level(logging.ERROR, "socketnet.pipeline"):
        run(sync.sync(seed_host, SwitchState(DPID), roles), switch)
    assert f"{DPID:016x}: sync failed: port-desc: no reply in 10s" in caplog.text


def test_a_stale_role_claim_is_made_once_more_with_a_newer_generation(seed_host):
    roles = RolePolicy("primary", now_ms=lambda: 1_000)
    stale = sync.Refused("role: OFPET_ROLE_REQUEST_FAILED/OFPRRFC_STALE", stale=True)
    switch = Switch(switch_ports(seed_host.bridge("vmbr0")), refuse={Claim: [stale]})
    outcome = run(sync.sync(seed_host, known(seed_host, seed_host.bridge("vmbr0")), roles),
                  switch)
    assert isinstance(outcome, sync.Synced)
    assert switch.steps[:2] == [Claim(True, 1_000), Claim(True, 1_001)]


def test_a_claim_stale_twice_or_refused_otherwise_fails_the_sync(seed_host):
    vmbr0 = seed_host.bridge("vmbr0")
    stale = sync.Refused("stale", stale=True)
    for refusals, claims in (([stale, stale], 2), ([sync.Refused("role: no reply")], 1)):
        switch = Switch(switch_ports(vmbr0), refuse={Claim: refusals})
        state = known(seed_host, vmbr0)
        outcome = run(sync.sync(seed_host, state, RolePolicy("primary")), switch)
        assert isinstance(outcome, sync.Failed) and kinds(switch) == ["Claim"] * claims
        assert state.sync_failures == 1


def test_unreadable_entries_alone_make_a_bundle_that_deletes_them_first(seed_host, roles):
    state = known(seed_host, seed_host.mesh)
    desired = tuple(compile_bridge(seed_host, "mesh", state.ports))
    stray = Unreadable(3, entry=object())
    switch = Switch(switch_ports(seed_host.mesh), SwitchFlows(desired, (), (stray,)),
                    meters_as_configured(seed_host))
    outcome = run(sync.sync(seed_host, state, roles), switch)
    bundle = switch.steps[-2]
    assert isinstance(bundle, sync.ApplyBundle) and outcome.plan.empty
    assert (bundle.unreadable, bundle.delete, bundle.add) == ((stray,), (), ())
    assert bundle.describe(0) == "mesh: unreadable flow in table 3"


def test_a_bundle_names_its_messages_deletes_before_adds(seed_host):
    old = Flow.make(2, 7, {"in_port": 1}, (), Purpose.MANAGEMENT.cookie)
    new = Flow.make(2, 8, {"in_port": 2}, (), Purpose.MANAGEMENT.cookie)
    bundle = sync.ApplyBundle("mesh", (Unreadable(1, None),), (old,), (new,), {1: "mesh-gw"})
    assert len(bundle) == 3
    assert bundle.describe(1) == f"mesh: {old.ofctl({1: 'mesh-gw'})}"
    assert "in_port=mesh-gw" in bundle.describe(1)
    assert bundle.describe(2) == f"mesh: {new.ofctl()}"


def test_the_classifiers_decisions_are_reported_and_not_deleted(seed_host, roles):
    state = known(seed_host, seed_host.mesh)
    desired = tuple(compile_bridge(seed_host, "mesh", state.ports))
    blocked = Flow.make(1, 500, {"in_port": 1}, (), Purpose.BLOCKED.cookie, idle_timeout=30)
    switch = Switch(switch_ports(seed_host.mesh), SwitchFlows(desired + (blocked,)),
                    meters_as_configured(seed_host))
    outcome = run(sync.sync(seed_host, state, roles), switch)
    assert outcome.reactive == (blocked,) and outcome.plan.empty
    assert not any(isinstance(s, sync.ApplyBundle) for s in switch.steps)


def test_a_changed_port_updates_a_known_bridge_and_asks_for_a_sync(seed_host):
    state = known(seed_host, seed_host.mesh)
    added = SwitchPort(9, "veth209", "02:fe:00:00:00:09")
    assert sync.port_changed(state, added, "added") and state.ports["veth209"] == added
    assert sync.port_changed(state, added, "deleted") and "veth209" not in state.ports
    assert not sync.port_changed(SwitchState(DPID), added, "added")


def test_a_connect_and_a_disconnect_are_counted(caplog):
    state = SwitchState(DPID)
    with caplog.at_level(logging.INFO, "socketnet.pipeline"):
        sync.connected(state, ("127.0.0.1", 40000))
        sync.disconnected(state)
        sync.connected(state, ("127.0.0.1", 40001))
    assert state.connected and state.connects == 2
    assert "(unknown bridge) disconnected; its flows stay" in caplog.text
    assert "connect #2" in caplog.text
