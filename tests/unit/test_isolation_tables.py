"""The isolation promise (README, W1-W6 and N1-N9) holds on the compiler's flow tables.

Every packet class of tests/isolation/packets.py enters every port of both
bridges of each host of TOPOLOGIES (the seed, and tests/topologies/other-host.yaml:
a host unlike it in every name, address and number) and runs through fake switches holding `compile_bridge`'s
flows, across the inter-bridge link (tests/isolation/fake_switch.py). The oracle
(tests/isolation/oracle.py, the promise as code) judges where it went:

  - it never reaches an egress point an N-rule forbids: with every port present,
    with a privacy classification decision installed on mesh, and with ports
    missing (a container not yet added, an adapter or a link end absent);
  - with every port present, each legitimate W-flow arrives where it must, with
    the MAC rewrites W1 and W3 need;
  - table by table: nothing is sent to LOCAL or flooded, only unicast IPv4 to a
    known host crosses the inter-bridge link, and every table ends in a drop.

Last, the checker is checked: broken pipelines (the seed's own NORMAL and
nm-privacy -> to-privacy flows among them) must be caught with the right rule.

A failure names the rule, the ingress port, the packet, where it went and every
flow it hit, as ovs-ofctl lines.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import pytest

from controller.compiler import compile_bridge
from controller.flow import (ETH_TYPE_ARP, ETH_TYPE_IP, OFPP_IN_PORT, OFPP_LOCAL, Apply,
                             Controller, Flow, Goto, Meter, Output, SetField)
from controller.pipeline import CLASSIFY, TABLES, Purpose
from topology.config import load_host
from topology.model import Host, Role

from tests.conftest import TOPOLOGIES

from tests.isolation.decisions import decisions, privacy_connections, refused_by_config
from tests.isolation.fake_switch import (OFPP_ALL, OFPP_FLOOD, OFPP_NORMAL, AmbiguousMatch,
                                         FakeSwitch, FlowRejected, HostSwitches, live_ports,
                                         port_numbers, switch_macs)
from tests.isolation.oracle import Oracle, Verdict
from tests.isolation.packets import (ETH_ARP, LOCAL, TCP, UDP, Packet, for_ingress,
                                     ingress_points, inter_bridge_end, ipv4, legitimate, matrix,
                                     trace_flow, uplink)

SHOWN = 8  # violations spelled out per failure; the rest are counted


# --- scenarios: which ports the switches have -------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: str
    absent: Callable  # host -> names of the ports the switches do not have
    classified: bool = False  # the classifier's privacy decisions in the tracker (W1)

    def switches(self, host: Host, macs: dict) -> HostSwitches:
        switches = HostSwitches.compile(host, macs, self.absent(host))
        for zone, headers, mark in decisions(host, macs, privacy=self.classified):
            switches.commit(zone, headers, mark)
        return switches


def _names(*ports) -> tuple:
    return tuple(p.name for p in ports)


EVERY_PORT = Scenario("every port", lambda h: ())
CLASSIFIED = Scenario("privacy classified", lambda h: (), classified=True)
SCENARIOS = [
    EVERY_PORT,
    CLASSIFIED,
    Scenario("a management port not added yet",
             lambda h: _names(h.mesh.with_role(Role.MANAGEMENT)[-1])),
    Scenario("no netmaker adapter", lambda h: _names(uplink(h.mesh))),
    Scenario("no warp adapter", lambda h: _names(uplink(h.privacy_bridge))),
    Scenario("privacy classified, no warp adapter", lambda h: _names(uplink(h.privacy_bridge)),
             classified=True),
    Scenario("no inter-bridge link",
             lambda h: _names(inter_bridge_end(h.mesh), inter_bridge_end(h.privacy_bridge))),
    Scenario("privacy classified, only the mesh end of the link",
             lambda h: _names(inter_bridge_end(h.privacy_bridge)), classified=True),
    Scenario("privacy classified, only the vmbr0 end of the link",
             lambda h: _names(inter_bridge_end(h.mesh)), classified=True),
    Scenario("no xray client", lambda h: _names(h.xray_client), classified=True),
    Scenario("no other privacy container",
             lambda h: _names(*h.privacy_bridge.with_role(Role.PRIVACY_CONTAINER))),
]


class Tables:
    """A host's packet matrix, judged once per oracle, and its switches
    compiled once per scenario."""

    def __init__(self, host: Host):
        self.host = host
        self.macs = switch_macs(host)
        self.packets = matrix(host, self.macs)
        self.oracles = {c: Oracle(host, self.macs, privacy_classified=c,
                                  privacy_connections=privacy_connections(
                                      decisions(host, self.macs, privacy=c)))
                        for c in (False, True)}
        self._judged = {c: {} for c in self.oracles}  # classified -> ingress -> [(p, v)]
        for c, oracle in self.oracles.items():
            for p in self.packets:
                self._judged[c].setdefault(p.ingress, []).append((p, oracle.judge(p)))
        self._switches = {}

    def judged(self, ingress: tuple, classified: bool) -> list:
        """(packet, verdict) of every packet entering `ingress`."""
        return self._judged[classified].get(ingress, [])

    def required_rules(self) -> set:
        return {r.rule for by_ingress in self._judged.values() for judged in by_ingress.values()
                for _, v in judged for r in v.required}

    def switches(self, scenario: Scenario) -> HostSwitches:
        if scenario.id not in self._switches:
            self._switches[scenario.id] = scenario.switches(self.host, self.macs)
        return self._switches[scenario.id]


def pytest_generate_tests(metafunc):
    """Every test of a host runs on each of TOPOLOGIES (the seed and a host unlike
    it in every name, address and number); `ingress` runs it once per ingress
    point of that host, (bridge, port name), each bridge's LOCAL port among them."""
    if "ingress" in metafunc.fixturenames:
        pairs = [(name, point) for name, path in TOPOLOGIES.items()
                 for point in ingress_points(load_host(str(path)))]
        metafunc.parametrize(("topology", "ingress"), pairs, scope="module",
                             ids=[f"{name}:{b}/{p}" for name, (b, p) in pairs])
    elif "topology" in metafunc.fixturenames:
        metafunc.parametrize("topology", list(TOPOLOGIES), scope="module")


@pytest.fixture(scope="module")
def topology() -> str:
    return "seed"  # every test that asks is parametrized over TOPOLOGIES instead


@pytest.fixture(scope="module")
def host(topology) -> Host:
    return load_host(str(TOPOLOGIES[topology]))


@pytest.fixture(scope="module")
def tables(host) -> Tables:
    return Tables(host)


# --- judging a trace -------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One broken promise. Its text (flows as ovs-ofctl lines) is only built
    when it is shown."""
    rules: tuple  # "N4", "W3", ...
    what: str
    packet: Packet
    verdict: Verdict
    egress: tuple  # of Egress: where it went (all of it, for a missing delivery)
    switches: HostSwitches

    def text(self) -> str:
        p, v = self.packet, self.verdict
        sender = str(v.origin) + (f", {v.classification}" if v.classification else "")
        went = "; ".join(f"{e.bridge}/{e.port}{_rewritten(p, e)}" for e in self.egress)
        if self.egress:
            flows = "\n".join(self.switches.render(e.path) for e in self.egress)
        else:
            run = self.switches.switches[p.bridge].run(p.headers)
            flows = self.switches.render((p.bridge, f) for f in run.flows)
        return (f"{self.what}\n  ingress: {p.bridge}/{p.in_port} ({sender})\n"
                f"  packet:  {p.name}\n  trace:   {trace_flow(p)}\n"
                f"  went to: {went or 'nowhere (dropped)'}\n"
                f"  flows hit:\n{flows or '    (none matched)'}")


def _rewritten(packet: Packet, egress) -> str:
    changed = [f"{k}={v}" for k, v in egress.headers.items() if packet.headers.get(k) != v]
    return f", rewritten to {','.join(changed)}" if changed else ""


def forbidden_egress(switches: HostSwitches, judged) -> list:
    """A Finding for each time a packet reached a point its verdict forbids."""
    found = []
    for packet, verdict in judged:
        for e in switches.trace(packet.bridge, packet.headers).egress:
            rules = verdict.forbids(e.point)
            if rules:
                found.append(Finding(tuple(f.rule for f in rules),
                                     " + ".join(str(f) for f in rules),
                                     packet, verdict, (e,), switches))
    return found


def missing_deliveries(switches: HostSwitches, judged) -> list:
    """A Finding for each W-requirement a packet's trace does not meet."""
    found = []
    for packet, verdict in judged:
        if not verdict.required:
            continue
        trace = switches.trace(packet.bridge, packet.headers)
        for r in verdict.required:
            if not any(d.met_by(e.point, e.headers) for e in trace.egress for d in r.any_of):
                found.append(Finding((r.rule,), f"{r} not met", packet, verdict, trace.egress,
                                     switches))
    return found


def _summary(found: list) -> str:
    counts = Counter(rule for f in found for rule in f.rules)
    head = ", ".join(f"{rule} x{n}" for rule, n in sorted(counts.items()))
    shown = "\n\n".join(f.text() for f in found[:SHOWN])
    more = f"\n\n... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return f"{len(found)} violations ({head}):\n\n{shown}{more}"


# --- the promise, port by port ----------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_no_packet_reaches_an_egress_an_n_rule_forbids(tables, scenario, ingress):
    found = forbidden_egress(tables.switches(scenario),
                             tables.judged(ingress, scenario.classified))
    assert not found, _summary(found)


@pytest.mark.parametrize("scenario", [EVERY_PORT, CLASSIFIED], ids=lambda s: s.id)
def test_every_w_flow_arrives_where_it_must(tables, scenario, ingress):
    """Netmaker ingress is held to W1/W5 only where the config's classification
    lets it in (the seed's default is drop: a ping from a Netmaker peer to a
    management container is refused by config, not by the pipeline)."""
    refused = refused_by_config(tables.host, tables.macs)
    judged = [(p, v) for p, v in tables.judged(ingress, scenario.classified)
              if p.name not in refused]
    found = missing_deliveries(tables.switches(scenario), judged)
    assert not found, _summary(found)



def test_the_matrix_covers_every_port_and_every_w_rule(tables, host):
    for point in ingress_points(host):
        assert len(for_ingress(tables.packets, *point)) > 100, point
    assert tables.required_rules() == {"W1", "W2", "W3", "W4", "W5", "W6"}


def test_the_oracle_never_requires_what_it_forbids(tables):
    for classified, oracle in tables.oracles.items():
        for point in ingress_points(tables.host):
            for packet, verdict in tables.judged(point, classified):
                for r in verdict.required:
                    assert r.any_of, (packet.name, str(r))
                    for d in r.any_of:
                        assert not verdict.forbids(d.point), (packet.name, str(r))


def test_the_oracle_requires_each_legitimate_flow_by_the_rule_it_is_named_after(tables):
    """packets.legitimate() and the oracle agree on what W1-W6 are (W1 once
    privacy is classified)."""
    oracle = tables.oracles[True]
    for packet in legitimate(tables.host, tables.macs):
        rule = packet.name.split(":")[0].split()[0]
        assert rule in {r.rule for r in oracle.judge(packet).required}, packet.name


# --- table-level facts ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["mesh", "privacy"])
def bridge_flows(request, host):
    """(bridge, its compiled flows, port number -> name) with every port present."""
    bridge = host.mesh if request.param == "mesh" else host.privacy_bridge
    live = live_ports(bridge, switch_macs(host))
    names = {n: name for name, n in port_numbers(bridge).items()}
    return bridge, compile_bridge(host, bridge.name, live), names


def _outputs(flow: Flow) -> list:
    return [a.port for i in flow.instructions if isinstance(i, Apply)
            for a in i.actions if isinstance(a, Output)]


def test_no_flow_outputs_to_local_or_floods(bridge_flows):
    bridge, flows, names = bridge_flows
    bad = [f.ofctl(names) for f in flows
           if set(_outputs(f)) & {OFPP_LOCAL, OFPP_FLOOD, OFPP_ALL, OFPP_NORMAL}]
    assert not bad, "N9/N6/N7: flows to LOCAL, FLOOD, ALL or NORMAL:\n" + "\n".join(bad)


def test_only_unicast_ipv4_to_a_known_host_crosses_the_inter_bridge_link(bridge_flows, tables):
    """N6: a flow sending to the link matches IPv4, a unicast destination
    (no broadcast or multicast address inside it), and an exact unicast eth_dst
    or a specific source."""
    bridge, flows, names = bridge_flows
    link = port_numbers(bridge)[inter_bridge_end(bridge).name]
    oracle = tables.oracles[False]
    bad = []
    for f in flows:
        if link not in _outputs(f):
            continue
        m = f.match_dict
        eth_dst = m.get("eth_dst")
        problems = []
        if m.get("eth_type") != ETH_TYPE_IP:
            problems.append("not IPv4-only")
        if "ipv4_dst" not in m or _holds_flooding_address(m["ipv4_dst"], oracle):
            problems.append("no unicast IPv4 destination")
        exact_unicast = isinstance(eth_dst, str) and not int(eth_dst[:2], 16) & 1
        if not exact_unicast and "ipv4_src" not in m:
            problems.append("neither an exact unicast eth_dst nor a source")
        if exact_unicast and eth_dst not in oracle.known_macs:
            problems.append(f"eth_dst {eth_dst} is no host's")
        if problems:
            bad.append(f"{f.ofctl(names)}: {', '.join(problems)}")
    assert not bad, "N6: flows to the inter-bridge link:\n" + "\n".join(bad)


def _holds_flooding_address(prefix: str, oracle: Oracle) -> bool:
    net = ipaddress.ip_network(prefix)
    if net.overlaps(ipaddress.ip_network("224.0.0.0/4")):
        return True
    return any(ipaddress.ip_address(b) in net for b in oracle.broadcasts)


def test_every_table_ends_in_a_drop_and_only_undecided_connections_reach_the_controller(
        bridge_flows, host):
    """N7: with fail_mode=secure and no NORMAL, a table miss must be a drop, so
    every table holds a priority-0 catch-all without actions. Only mesh's
    classify table sends anything to the controller: connections of its own zone
    with no decision (ct_mark 0), not invalid, and always through a packet-in meter."""
    bridge, flows, names = bridge_flows
    for table in TABLES:
        misses = [f for f in flows if f.table == table.id and f.priority == 0 and not f.match]
        assert [f.instructions for f in misses] == [()], \
            f"{bridge.name} table {table.id} ({table.name}) misses wrongly"
    zone = host.classification.conntrack_zone
    to_controller = [f for f in flows if any(
        isinstance(a, Controller) for i in f.instructions if isinstance(i, Apply)
        for a in i.actions)]
    if bridge.name != host.mesh.name:
        assert not to_controller
        return
    assert to_controller
    for f in to_controller:
        match = f.match_dict
        assert f.table == CLASSIFY.id, f
        assert (match["ct_zone"], match["ct_mark"]) == (zone, 0), f
        assert match["ct_state"] == (0x20, 0x30), f  # +trk-inv
        assert isinstance(f.instructions[0], Meter), f


def test_open_vswitch_would_accept_every_flow(tables, host):
    """Prerequisites, goto direction and port numbers, for every scenario."""
    for scenario in SCENARIOS:
        scenario.switches(host, tables.macs)  # FakeSwitch raises FlowRejected


# --- the checker catches broken pipelines -------------------------------------------------------
#
# Each edit takes (host, bridge, the bridge's compiled flows) and returns the
# flows the broken switch holds.


def _flow(priority, match, *actions, table=0):
    return Flow.make(table, priority, match, (Apply(tuple(actions)),), Purpose.DROP.cookie)


def _number(bridge, role, which=0) -> int:
    return port_numbers(bridge)[bridge.with_role(role)[which].name]


def normal_switching(host, bridge, flows):
    return [_flow(0, {}, Output(OFPP_NORMAL))]


def patched(bridge_of, from_role, to_role, which=0):
    """An edit that patches the first port of `from_role` on the bridge `bridge_of`
    names (host -> bridge) straight to port `which` of `to_role`."""
    def edit(host, bridge, flows):
        if bridge is not bridge_of(host):
            return flows
        return flows + [_flow(1000, {"in_port": _number(bridge, from_role)},
                              Output(_number(bridge, to_role, which)))]
    return edit


def _mesh(host):
    return host.mesh


def _vmbr0(host):
    return host.privacy_bridge


def arp_flooded(host, bridge, flows):
    return flows + [_flow(1000, {"eth_type": ETH_TYPE_ARP}, Output(OFPP_FLOOD))]


def arp_to_local(host, bridge, flows):
    return flows + [_flow(1000, {"eth_type": ETH_TYPE_ARP}, Output(OFPP_LOCAL), table=3)]


def no_forged_source_drops(host, bridge, flows):
    return [f for f in flows if f.cookie != Purpose.FORGED.cookie]


def no_mac_rewrites_on_mesh(host, bridge, flows):
    if bridge is not host.mesh:
        return flows
    return [Flow.make(f.table, f.priority, f.match_dict,
                      [Apply(tuple(a for a in i.actions if not isinstance(a, SetField)))
                       if isinstance(i, Apply) else i for i in f.instructions], f.cookie)
            for f in flows]


BROKEN = [
    # (what is broken, edit, rules the checker must report)
    ("NORMAL switching (fail_mode=standalone, or the seed's priority=10 flows)",
     normal_switching, {"N1", "N2", "N4", "N5", "N6", "N9"}),
    ("the seed's in_port=nm-privacy,actions=output:to-privacy", patched(_mesh, Role.NETMAKER_UPLINK, Role.INTER_BRIDGE),
     {"N4"}),
    ("warp patched to the link", patched(_vmbr0, Role.WARP_UPLINK, Role.INTER_BRIDGE), {"N2"}),
    ("a management container patched to the link",
     patched(_mesh, Role.MANAGEMENT, Role.INTER_BRIDGE), {"N1"}),
    ("the xray client patched to the link",
     patched(_vmbr0, Role.XRAY_CLIENT, Role.INTER_BRIDGE), {"N5", "N6"}),
    ("the link patched to a management container",
     patched(_mesh, Role.INTER_BRIDGE, Role.MANAGEMENT, -1), {"N5"}),
    ("the link patched to the gateway container",
     patched(_vmbr0, Role.INTER_BRIDGE, Role.PRIVACY_CONTAINER), {"W1"}),
    ("ARP flooded", arp_flooded, {"N6", "N9"}),
    ("ARP sent to LOCAL", arp_to_local, {"N9"}),
    ("forged-source drops removed", no_forged_source_drops, {"N8"}),
]


@pytest.mark.parametrize("edit,rules", [(e, r) for _, e, r in BROKEN],
                         ids=[what for what, _, _ in BROKEN])
def test_a_broken_pipeline_is_caught_with_the_rule_it_breaks(tables, host, edit, rules):
    switches = _broken_switches(host, tables.macs, edit)
    found = set()
    for point in ingress_points(host):
        found |= {rule for f in forbidden_egress(switches, tables.judged(point, False))
                  for rule in f.rules}
        if rules <= found:
            break
    assert rules <= found, f"expected {sorted(rules)}, the checker found {sorted(found)}"


def test_a_lost_mac_rewrite_is_caught_as_a_missing_w3(tables, host):
    switches = _broken_switches(host, tables.macs, no_mac_rewrites_on_mesh)
    for zone, headers, mark in decisions(host, tables.macs, privacy=True):
        switches.commit(zone, headers, mark)  # W3 is the reply of a privacy connection
    found = {rule for point in ingress_points(host)
             for f in missing_deliveries(switches, tables.judged(point, True)) for rule in f.rules}
    assert "W3" in found


def _broken_switches(host: Host, macs: dict, edit) -> HostSwitches:
    switches = {}
    for b in host.bridges:
        live = live_ports(b, macs)
        flows = edit(host, b, list(compile_bridge(host, b.name, live)))
        switches[b.name] = FakeSwitch(b.name, flows, {n: sp.number for n, sp in live.items()})
    return HostSwitches(host, switches)


# --- the interpreter itself -----------------------------------------------------------------


def _tcp(dport, proto=TCP):
    return ipv4("a", "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", proto,
                dport=dport)


def test_the_fake_switch_honours_prerequisites_priority_and_in_port():
    switch = FakeSwitch("br", [
        _flow(10, {"eth_type": ETH_TYPE_IP, "ip_proto": TCP, "tcp_dst": 8080}, Output(2)),
        _flow(5, {"in_port": 1, "eth_type": ETH_TYPE_IP, "ip_proto": UDP}, Output(OFPP_IN_PORT)),
        _flow(1, {"in_port": 1}, Output(1)),
    ], {"a": 1, "b": 2})
    assert [s.port for s in switch.run(_tcp(8080)).outputs] == ["b"]
    assert [s.port for s in switch.run(_tcp(8080, UDP)).outputs] == ["a"]  # IN_PORT
    assert switch.run(_tcp(22)).outputs == ()  # output:in_port is dropped


@pytest.mark.parametrize("flow", [
    _flow(1, {"tcp_dst": 80}, Output(2)),
    _flow(1, {"eth_type": ETH_TYPE_IP}, SetField("arp_op", 2)),
    _flow(1, {}, Output(9)),
    Flow.make(2, 1, {}, (Goto(1),), Purpose.DROP.cookie),
], ids=["match prerequisite", "set_field prerequisite", "absent port", "goto backwards"])
def test_the_fake_switch_refuses_what_open_vswitch_refuses(flow):
    with pytest.raises(FlowRejected):
        FakeSwitch("br", [flow], {"a": 1, "b": 2})


def test_the_fake_switch_refuses_to_guess_between_flows_of_one_priority():
    switch = FakeSwitch("br", [_flow(5, {"in_port": 1}, Output(2)),
                               _flow(5, {"eth_type": ETH_TYPE_IP}, Output(OFPP_LOCAL))],
                        {"a": 1, "b": 2})
    with pytest.raises(AmbiguousMatch):
        switch.run(_tcp(80))


# --- the ofproto/trace rendering the integration test reuses ----------------------------------


def test_packets_render_as_ofproto_trace_flows(seed_host):
    packets = matrix(seed_host, switch_macs(seed_host))
    w1 = next(p for p in packets if p.name.startswith("W1") and p.in_port == "mesh-gw")
    assert trace_flow(w1) == (
        "in_port=mesh-gw,tcp,dl_src=02:5e:00:00:01:01,dl_dst=02:00:0a:00:00:66,"
        "nw_src=10.101.0.5,nw_dst=10.0.0.102,tcp_src=40000,tcp_dst=8080")
    arp = next(p for p in packets if p.headers["dl_type"] == ETH_ARP
               and p.in_port == LOCAL)
    assert trace_flow(arp).startswith("in_port=LOCAL,arp,dl_src=")
