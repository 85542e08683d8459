"""bench/conntrack_cost.py's untracked path: for one W1 connection, flows that do
what socketnet's tracked flows do, without the tracker, above them."""
from bench.conntrack_cost import PRIORITY_ABOVE, untracked_copies
from controller.flow import CT, Apply

from tests.isolation.fake_switch import HostSwitches, live_ports, switch_macs

PEER, SPORT, XRAY, DPORT = "10.101.0.5", 46000, "10.0.0.102", 8080


def test_the_copies_carry_the_connection_both_ways_without_the_tracker(seed_host):
    macs = switch_macs(seed_host)
    switches = HostSwitches.compile(seed_host, macs)
    extra = {}
    for bridge in seed_host.bridges:
        live = live_ports(bridge, macs)
        copies = untracked_copies(seed_host, bridge.name, live, (PEER, SPORT, XRAY, DPORT))
        assert copies
        for f in copies:
            assert not any(k.startswith("ct_") for k in f.match_dict)
            assert not any(isinstance(a, CT) for i in f.instructions if isinstance(i, Apply)
                           for a in i.actions)
            assert f.priority > PRIORITY_ABOVE and f.cookie == 0
            assert {f.match_dict["ipv4_src"], f.match_dict["ipv4_dst"]} == {PEER, XRAY}
        extra[bridge.name] = copies
        assert len({f.key for f in copies}) == len(copies)  # no two replace each other
    bypass = HostSwitches.compile(seed_host, macs, extra_flows=extra)
    xray = seed_host.xray_client.container
    uplink = seed_host.mesh.ports[0].name
    forward = {"in_port": uplink, "dl_src": macs[uplink], "dl_dst": xray.mac,
               "dl_type": 0x0800, "nw_proto": 6, "nw_src": PEER, "nw_dst": XRAY,
               "tp_src": SPORT, "tp_dst": DPORT}
    # Without a decision socketnet's pipeline sends it to the controller; the copies
    # take it to the xray client without passing the tracker.
    assert switches.trace("mesh", forward).packet_ins
    through = bypass.trace("mesh", forward)
    assert (seed_host.privacy_bridge.name, seed_host.xray_client.name) in through.points
    assert not any(isinstance(a, CT) for e in through.egress for _, f in e.path
                   for i in f.instructions if isinstance(i, Apply) for a in i.actions)
