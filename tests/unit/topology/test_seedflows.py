"""topology.seedflows: the seed's flow lines parse, their ports are checked
against the bridge, and each says what socketnet does instead and why."""
import re
from pathlib import Path

import pytest

from topology.config import load_host
from topology.seedflows import SeedFlow, SeedFlowError, assess, check_ports, parse

SEED = Path(__file__).resolve().parents[3] / "examples" / "seed.yaml"


@pytest.fixture(scope="module")
def host():
    return load_host(SEED)


# --- parsing ---------------------------------------------------------------------


def test_parse_reads_priority_in_port_and_output():
    flow = parse("vmbr0", "priority=100,in_port=veth102,actions=output:warp0")
    assert flow == SeedFlow("vmbr0", "priority=100,in_port=veth102,actions=output:warp0", 100,
                            {"in_port": "veth102"}, ("output:warp0",))
    assert (flow.in_port, flow.outputs, flow.flooding) == ("veth102", ("warp0",), None)


def test_parse_expands_shorthands_and_aliases_and_normalises_values():
    flow = parse("mesh", "priority=5 tcp,ip_dst=10.0.0.7/255.255.255.0,tcp_dst=8080,"
                         "eth_src=02:AA:00:00:00:01 actions=output:a,NORMAL")
    assert flow.match == {"dl_type": 0x0800, "nw_proto": 6, "nw_dst": "10.0.0.0/24",
                          "tp_dst": 8080, "dl_src": "02:aa:00:00:00:01"}
    assert flow.actions == ("output:a", "normal") and flow.flooding == "normal"


def test_parse_with_arp_reads_nw_fields_as_arp_addresses():
    flow = parse("mesh", "arp,nw_src=10.0.0.5,dl_type=0x0806,actions=drop")
    assert flow.match == {"dl_type": 0x0806, "arp_spa": "10.0.0.5"}


def test_parse_defaults_priority_and_reads_drop_as_no_action():
    flow = parse("mesh", "actions=drop")
    assert (flow.priority, flow.actions, flow.match) == (32768, (), {})


@pytest.mark.parametrize("actions, parsed", [
    ("controller", ("controller",)),
    ("CONTROLLER:128", ("controller",)),
    ("controller(reason=no_match,max_len=64)", ("controller",)),
    ("output:LOCAL", ("local",)),
    ("FLOOD,in_port", ("flood", "in_port")),
])
def test_parse_reads_the_special_actions(actions, parsed):
    assert parse("mesh", f"priority=1,actions={actions}").actions == parsed


@pytest.mark.parametrize("text, words", [
    ("priority=70000,actions=drop", "priority=70000: not in 0..65535"),
    ("priority=high,actions=drop", "not a number"),
    ("priority=1,vlan_tci=5,actions=drop", "unknown match field 'vlan_tci=5'"),
    ("priority=1,in_port,actions=drop", "in_port needs a value"),
    ("priority=1,in_port=3,actions=drop", "name the port"),
    ("priority=1,tp_dst=80,actions=drop", "tp_dst needs tcp or udp"),
    ("priority=1,nw_dst=10.0.0.1,actions=drop", "nw_dst needs ip (or arp)"),
    ("priority=1,ip,nw_proto=6,tp_src=1,icmp_type=8,actions=drop", "icmp_type needs icmp"),
    ("priority=1,ip,nw_dst=10.0.0.300,actions=drop", "not an IPv4 address or prefix"),
    ("priority=1,ip,nw_dst=10.0.0.0/255.0.255.0,actions=drop", "not an IPv4 address"),
    ("priority=1,dl_src=zz,actions=drop", "not a MAC address"),
    ("priority=1,tcp,udp,actions=drop", "nw_proto is given twice"),
    ("priority=1,in_port=veth1", "no actions="),
    ("priority=1,actions=", "actions= is empty"),
    ("priority=1,actions=drop,normal", "drop must be the only action"),
    ("priority=1,actions=mod_dl_src:02:00:00:00:00:01", "is not one socketnet reads"),
    ("priority=1,actions=veth2", "is not one socketnet reads"),
    ("priority=1,actions=output:2", "name the port"),
])
def test_parse_rejects(text, words):
    with pytest.raises(SeedFlowError, match=re.escape(words)):
        parse("mesh", text)


# --- ports -----------------------------------------------------------------------


def test_check_ports_accepts_seed_names_and_adapter_names(host):
    for text in ("priority=1,in_port=nm-privacy,actions=output:to-privacy",
                 "priority=1,in_port=mesh-gw,actions=output:veth200",
                 "priority=1,in_port=LOCAL,actions=drop"):
        assert check_ports(parse("mesh", text), host.mesh) == []


def test_check_ports_names_each_port_not_on_the_bridge(host):
    flow = parse("mesh", "priority=1,in_port=warp0,actions=output:veth100,output:veth200")
    assert check_ports(flow, host.mesh) == [
        "in_port 'warp0' is not a port of mesh (its ports: nm-privacy (mesh-gw), to-privacy, "
        "veth200, veth201)",
        "output 'veth100' is not a port of mesh (its ports: nm-privacy (mesh-gw), to-privacy, "
        "veth200, veth201)",
    ]


# --- assessment ------------------------------------------------------------------


def _assess(host, bridge, text):
    flow = parse(bridge, text)
    assert check_ports(flow, host.bridge(bridge)) == []
    return assess(flow, host)


def test_every_seed_flow_is_assessed_with_an_isolation_rule(host):
    for bridge in host.bridges:
        for flow in bridge.seed_flows:
            assert re.search(r"\([WN]\d", assess(flow, host)), flow.text


def test_normal_floods_the_inter_bridge_link(host):
    sentence = _assess(host, "mesh", "priority=90,in_port=nm-privacy,actions=normal")
    assert sentence.startswith("NORMAL floods broadcast and unknown unicast across the "
                               "inter-bridge link (N6)")
    assert "unclassified Netmaker ingress into vmbr0 (N4)" in sentence


def test_catch_all_normal_is_a_fallback_socketnet_does_not_have(host):
    sentence = _assess(host, "vmbr0", "priority=10,actions=normal")
    assert "(N6)" in sentence and "(N7)" in sentence and "table-miss drops" in sentence


def test_xray_client_to_warp_would_misroute_replies_to_users(host):
    assert "would send the xray client's replies to users into WARP instead of back over " \
           "Netmaker (W3)" in _assess(host, "vmbr0",
                                      "priority=100,in_port=veth102,actions=output:warp0")


def test_unclassified_netmaker_ingress_to_vmbr0_breaks_n4(host):
    sentence = _assess(host, "mesh", "priority=100,in_port=nm-privacy,actions=output:to-privacy")
    assert "sends unclassified Netmaker ingress into vmbr0 (N4); socketnet classifies first" \
        in sentence


def test_classified_netmaker_ingress_to_vmbr0_is_what_socketnet_does(host):
    sentence = _assess(host, "mesh", "priority=100,in_port=nm-privacy,tcp,nw_dst=10.0.0.102,"
                                     "tp_dst=8080,actions=output:to-privacy")
    assert sentence.startswith("socketnet classifies Netmaker ingress itself")


def test_all_warp_replies_to_the_xray_client_starve_the_gateway_container(host):
    sentence = _assess(host, "vmbr0", "priority=100,in_port=warp0,actions=output:veth102")
    assert "nothing returns warp traffic to veth100 (gateway) (W4)" in sentence


def test_management_to_the_inter_bridge_link_breaks_n1(host):
    sentence = _assess(host, "mesh", "priority=1,in_port=veth200,actions=output:to-privacy")
    assert "lets veth200 (mcp-server) reach vmbr0 (N1)" in sentence


def test_vmbr0_to_netmaker_passes_more_than_replies(host):
    sentence = _assess(host, "mesh", "priority=80,in_port=to-privacy,actions=output:nm-privacy")
    assert "not only the xray client's replies to users (N3)" in sentence


def test_inter_bridge_to_another_privacy_container_breaks_w1(host):
    sentence = _assess(host, "vmbr0", "priority=1,in_port=from-mesh,actions=output:veth100")
    assert "lets Netmaker ingress reach veth100 (gateway)" in sentence and "(W1, N4)" in sentence


def test_warp_to_the_inter_bridge_link_breaks_n2(host):
    assert "(N2)" in _assess(host, "vmbr0", "priority=1,in_port=warp0,actions=output:from-mesh")


def test_output_from_any_port_lists_what_it_breaks(host):
    sentence = _assess(host, "vmbr0", "priority=1,actions=output:from-mesh")
    assert sentence.startswith("sends whatever arrives on any port of vmbr0 to from-mesh, which "
                               "breaks N2, N5")


def test_local_port_breaks_n9(host):
    assert "(N9)" in _assess(host, "mesh", "priority=1,in_port=veth200,actions=LOCAL")


def test_drop_is_implied_by_socketnet(host):
    assert "implied" in _assess(host, "mesh", "priority=1,in_port=veth200,actions=drop")
