"""controller/explain.py and controller.ovs_text.parse_steps: a trace, as ovs-vswitchd 3.1
prints it, read back table by table and explained: the installed flow behind each
lookup, ports by name, each bridge's verdict and why."""
import pytest

from controller.compiler import compile_bridge
from controller.explain import installed_flow, path_doc, path_lines, step_doc, verdict
from controller.pipeline import Purpose
from controller.switches import SwitchState
from controller.ovs_text import TracePath, TraceStep, parse_steps, parse_trace
from tests.unit.controller.api.test_api import ports_of

# `ovs-appctl ofproto/trace mesh in_port=mesh-gw,tcp,...` on a lab of the seed
# (Open vSwitch 3.1): table 0, table 1 into the tracker, then the recirculated pass.
NETMAKER_INGRESS = """\
Flow: tcp,in_port=1,vlan_tci=0x0000,dl_src=ce:3f:92:37:1b:74,dl_dst=ce:3f:92:37:1b:74,nw_src=10.101.0.5,nw_dst=10.0.0.102,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,tp_src=40000,tp_dst=8080,tcp_flags=0

bridge("mesh")
--------------
 0. ip,in_port=1,dl_src=ce:3f:92:37:1b:74, priority 200, cookie 0x534e000000000001
    write_metadata:0x2
    goto_table:1
 1. ip,metadata=0x2, priority 1, cookie 0x534e000000000013
    ct(table=1,zone=21326)
    drop
     -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 1.
     -> Sets the packet to an untracked state, and clears all the conntrack fields.

Final flow: tcp,metadata=0x2,in_port=1,vlan_tci=0x0000,dl_src=ce:3f:92:37:1b:74,dl_dst=ce:3f:92:37:1b:74,nw_src=10.101.0.5,nw_dst=10.0.0.102,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,tp_src=40000,tp_dst=8080,tcp_flags=0
Megaflow: recirc_id=0,ct_state=-rpl-inv-trk,ct_zone=0,ct_mark=0,eth,ip,in_port=1,dl_src=ce:3f:92:37:1b:74,nw_src=10.64.0.0/10,nw_frag=no
Datapath actions: ct(zone=21326),recirc(0xa)

===============================================================================
recirc(0xa) - resume conntrack with default ct_state=trk|new (use --ct-next to customize)
===============================================================================

Flow: recirc_id=0xa,ct_state=new|trk,ct_zone=21326,eth,tcp,metadata=0x2,in_port=1,vlan_tci=0x0000,dl_src=ce:3f:92:37:1b:74,dl_dst=ce:3f:92:37:1b:74,nw_src=10.101.0.5,nw_dst=10.0.0.102,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,tp_src=40000,tp_dst=8080,tcp_flags=0

bridge("mesh")
--------------
    thaw
        Resuming from table 1
 1. ct_state=-inv+trk,ct_zone=21326,ct_mark=0,ip,metadata=0x2,nw_src=10.101.0.5, priority 4, cookie 0x534e000000000010
    meter:2
    CONTROLLER:65535

Final flow: unchanged
Megaflow: recirc_id=0xa,ct_state=-rpl-inv+trk,ct_zone=21326,ct_mark=0,eth,ip,in_port=1,nw_src=10.101.0.5,nw_frag=no
Datapath actions: meter(1),userspace(pid=0,controller(reason=1,dont_send=1,continuation=0,recirc_id=11,rule_cookie=0x534e000000000010,controller_id=0,max_len=65535))
"""

DROPPED = """\
Flow: udp,in_port=3,vlan_tci=0x0000,dl_src=02:00:00:00:00:01,dl_dst=00:00:00:00:00:00,nw_src=10.1.0.200,nw_dst=10.0.0.102,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,tp_src=1,tp_dst=53

bridge("mesh")
--------------
 0. ip,in_port=3,dl_src=02:00:00:00:00:01,nw_src=10.1.0.200, priority 200, cookie 0x534e000000000001
    write_metadata:0x1
    goto_table:2
 2. priority 0, cookie 0x534e000000000002
    drop

Final flow: udp,metadata=0x1,in_port=3,vlan_tci=0x0000,dl_src=02:00:00:00:00:01,dl_dst=00:00:00:00:00:00,nw_src=10.1.0.200,nw_dst=10.0.0.102,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,tp_src=1,tp_dst=53
Megaflow: recirc_id=0,eth,ip,in_port=3,nw_frag=no
Datapath actions: drop
"""

MISSED = """\
Flow: arp,in_port=3

bridge("mesh")
--------------
 0. No match.
    drop

Final flow: unchanged
Datapath actions: drop
"""


def test_each_lookup_is_read_with_its_table_priority_cookie_and_actions():
    first, second, third = parse_steps(NETMAKER_INGRESS)
    assert (first.pass_, first.table, first.priority, first.cookie) == (
        0, 0, 200, 0x534E000000000001)
    assert first.match == "ip,in_port=1,dl_src=ce:3f:92:37:1b:74"
    assert first.actions == ("write_metadata:0x2", "goto_table:1")
    # ovs-vswitchd's comments ("-> A clone ...") and the thaw lines are not actions.
    assert second.actions == ("ct(table=1,zone=21326)", "drop")
    assert (third.pass_, third.table, third.priority) == (1, 1, 4)
    assert third.actions == ("meter:2", "CONTROLLER:65535")
    assert third.match.startswith("ct_state=-inv+trk,ct_zone=21326,ct_mark=0")


def test_a_flow_with_no_match_fields_and_a_miss_are_told_apart():
    _, drop = parse_steps(DROPPED)
    assert (drop.table, drop.match, drop.priority, drop.missed) == (2, "", 0, False)
    (miss,) = parse_steps(MISSED)
    assert miss.missed and miss.table == 0 and miss.actions == ("drop",)
    assert parse_steps("") == ()


@pytest.fixture(scope="module")
def mesh(seed_host):
    state = SwitchState(dpid=1, bridge="mesh", connected=True,
                        ports=ports_of(seed_host.mesh, 1))
    state.desired = compile_bridge(seed_host, "mesh", state.ports)
    return state


def _step_for(flow) -> TraceStep:
    """The lookup ovs-vswitchd would print for `flow`: its match as the flow's own
    ovs-ofctl text, without the head and the actions."""
    match = flow.ofctl().split(" actions=", 1)[0].split(f"priority={flow.priority}", 1)[1]
    return TraceStep(0, flow.table, match.lstrip(","), flow.priority, flow.cookie)


def test_the_installed_flow_behind_a_lookup_is_found_among_its_priority_and_cookie(mesh):
    by_key = {}
    for flow in mesh.desired:
        by_key.setdefault((flow.table, flow.priority, flow.cookie), []).append(flow)
    crowded = [flows for flows in by_key.values() if len(flows) > 1]
    assert crowded, "the seed has flows sharing table, priority and cookie"
    for flows in crowded:
        for flow in flows:
            assert installed_flow(_step_for(flow), mesh.desired) is flow, flow
    foreign = TraceStep(0, 0, "ip", 65000, 0xABC)
    assert installed_flow(foreign, mesh.desired) is None
    assert installed_flow(TraceStep(0, 0, None), mesh.desired) is None


def test_a_lookup_names_its_table_purpose_ports_and_the_flows_ofctl_line(mesh):
    gw = mesh.ports["mesh-gw"].number
    admit = next(f for f in mesh.desired if f.table == 0 and f.match_dict.get("in_port") == gw
                 and f.cookie == Purpose.ADMIT.cookie)
    doc = step_doc(_step_for(admit), mesh.desired, mesh.port_names())
    assert (doc["name"], doc["purpose"], doc["socketnet"]) == ("admit", "admit", True)
    assert "in_port=mesh-gw" in doc["match"] and f"in_port={gw}" not in doc["match"]
    assert doc["flow"] == admit.ofctl(mesh.port_names()) and "in_port=mesh-gw" in doc["flow"]
    foreign = step_doc(TraceStep(0, 0, "in_port=7", 65000, 0xABC, ("output:7",)), (),
                       {7: "eth9"})
    assert (foreign["purpose"], foreign["socketnet"], foreign["match"], foreign["actions"]) == (
        None, False, "in_port=eth9", ["output:eth9"])


def _hop(text, bridge="mesh", names=lambda n: {1: "mesh-gw", 3: "veth200"}.get(n, str(n))):
    return parse_trace(bridge, "in_port=veth200", text, names)


def test_the_verdict_says_which_table_and_flow_dropped_the_packet_and_why():
    drop = verdict(_hop(DROPPED))
    assert drop["verdict"] == "drop"
    assert "table 2 (forward)" in drop["why"] and "priority 0" in drop["why"]
    assert "purpose drop" in drop["why"] and "zone: management" in drop["why"]
    assert "no flow of table 0 (admit) matched" in verdict(_hop(MISSED))["why"]
    assert verdict(_hop(NETMAKER_INGRESS))["verdict"] == "controller"


def test_the_path_document_and_its_lines_carry_every_lookup_and_the_final_verdict(mesh):
    hop = _hop(DROPPED)
    doc = path_doc(TracePath(hops=(hop,), exits=(), controller=()), {"mesh": mesh})
    assert doc["verdict"] == "drop" and doc["why"].startswith("mesh: dropped by table 2")
    assert doc["dropped_by"] == {"bridge": "mesh", "table": 2, "name": "forward", "priority": 0,
                                 "purpose": "drop", "flow": "cookie=0x534e000000000002, "
                                                            "table=2, priority=0 actions=drop"}
    assert [t["table"] for t in doc["hops"][0]["tables"]] == [0, 2]
    assert doc["hops"][0]["tables"][1]["flow"] == "cookie=0x534e000000000002, table=2, priority=0 actions=drop"
    lines = path_lines(doc)
    assert lines[0] == "mesh:" and "table 2 (forward) priority 0, purpose drop" in lines[3]
    assert lines[4].strip() == "cookie=0x534e000000000002, table=2, priority=0 actions=drop"
    ingress = path_doc(TracePath(hops=(_hop(NETMAKER_INGRESS),), exits=(),
                                 controller=("mesh",)), {})
    assert ingress["verdict"] == "controller" and ingress["why"].endswith("from mesh")
    assert any("recirculated" in line for line in path_lines(ingress))
