"""topology.host.plan: the host plan, pure. A fresh host gets everything in a safe order;
a host that matches gets nothing; each difference gets exactly its fix."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from netaddr import IPNetwork

from topology.config import load_host
from topology.host.actions import (
    AddAddress, AddRoute, AddRule, AddVeth, DelRoute, DelRule, LinkUp, LoadNft, ReplaceRoute,
    Sysctl,
)
from topology.host.nft import nft_script
from topology.host.plan import IP_FORWARD, default_controller, plan, sysctl_keys
from topology.host.routing import RoutingIds
from topology.host.state import (
    HostState, Link, NftState, OvsBridge, OvsController, OvsInterface, Route, Rule,
)
from controller.conntrack import IDLE_TIMEOUTS, timeout_policy
from topology.model import Kind

SEED = Path(__file__).resolve().parents[4] / "examples" / "seed.yaml"
CTL = "tcp:127.0.0.1:6653"
ANY = IPNetwork("0.0.0.0/0")
T_NM, T_MESH, T_PRIV, T_WARP = RoutingIds().tables


def commands(p) -> list:
    return [str(a) for a in p.actions]


def index_of(p, text) -> int:
    for i, c in enumerate(commands(p)):
        if text in c:
            return i
    raise AssertionError(f"no command with {text!r} in\n" + "\n".join(commands(p)))


def of_type(p, cls) -> list:
    return [a for a in p.actions if isinstance(a, cls)]


def uplinks_up(**overrides) -> dict:
    links = {"nm-privacy": Link("nm-privacy", Kind.L3, True, link_type="wireguard"),
             "warp0": Link("warp0", Kind.L3, True, link_type="wireguard")}
    links.update(overrides)
    return links


@pytest.fixture
def fresh(seed_host):
    """A host with both WireGuard uplinks up and nothing else."""
    return HostState(links=uplinks_up())


def converged(host, datapath_type="netdev") -> HostState:
    """What a host looks like once the plan has been carried out."""
    bridges = {
        "mesh": OvsBridge("mesh", datapath_type, "secure", ("OpenFlow13",),
                          {"disable-in-band": "true"},
                          (OvsController("c-mesh", CTL, "out-of-band"),),
                          ("mesh", "mesh-gw", "to-privacy", "veth200", "veth201")),
        "vmbr0": OvsBridge("vmbr0", datapath_type, "secure", ("OpenFlow13",),
                           {"disable-in-band": "true"},
                           (OvsController("c-vmbr0", CTL, "out-of-band"),),
                           ("vmbr0", "vmbr0-gw", "from-mesh", "veth100", "veth102")),
    }
    interfaces = {"mesh-gw": OvsInterface("mesh-gw", "internal", 1),
                  "to-privacy": OvsInterface("to-privacy", "", 2),
                  "vmbr0-gw": OvsInterface("vmbr0-gw", "internal", 1),
                  "from-mesh": OvsInterface("from-mesh", "", 2)}
    links = uplinks_up(**{
        "mesh-gw": Link("mesh-gw", Kind.L2, True, (IPNetwork("10.1.0.1/24"),), "openvswitch"),
        "vmbr0-gw": Link("vmbr0-gw", Kind.L2, True, (IPNetwork("10.0.0.1/24"),), "openvswitch"),
        "to-privacy": Link("to-privacy", Kind.L2, True, (), "veth", "from-mesh"),
        "from-mesh": Link("from-mesh", Kind.L2, True, (), "veth", "to-privacy"),
    })
    script, digest = nft_script(host)
    first = plan(host, HostState(links=links))
    routes = tuple(a.route for a in of_type(first, AddRoute))
    rules = tuple(a.rule for a in of_type(first, AddRule))
    zone = host.classification.conntrack_zone
    policy = timeout_policy(host.classification)
    return HostState(bridges=bridges, interfaces=interfaces, links=links, routes=routes,
                     rules=rules, sysctls={k: "1" for k in sysctl_keys(host)},
                     nft=NftState(digest, sum('comment "' in line
                                              for line in script.splitlines())),
                     zone_policies={datapath_type or "system": {zone: policy,
                                                                zone + 1: policy}})


# --------------------------------------------------------------------------- a fresh host


def test_each_bridges_zone_gets_the_idle_timeout_as_its_policy_on_a_datapath_record(
        seed_host, fresh):
    p = plan(seed_host, fresh, datapath_type="netdev")
    cmds = commands(p)
    record = index_of(p, "create Datapath")
    assert "datapaths:netdev=@dp" in cmds[record]
    zone = seed_host.classification.conntrack_zone
    timeouts = " ".join(f"{k}=60" for k in IDLE_TIMEOUTS)
    for z in (zone, zone + 1):
        at = cmds.index(f"ovs-vsctl add-zone-tp netdev zone={z} {timeouts}")
        assert record < at < index_of(p, "add-port")  # before any port carries traffic


def test_a_changed_idle_timeout_replaces_the_zones_policy_and_nothing_else(seed_host):
    state = converged(seed_host, "system")
    host = replace(seed_host, classification=replace(seed_host.classification,
                                                      idle_timeout=30))
    zone = host.classification.conntrack_zone
    timeouts = " ".join(f"{k}=30" for k in IDLE_TIMEOUTS)
    assert commands(plan(host, state)) == [
        f"ovs-vsctl -- del-zone-tp system zone={z} -- add-zone-tp system zone={z} {timeouts}"
        for z in (zone, zone + 1)]


def test_a_fresh_host_gets_bridges_secure_openflow13_without_in_band(seed_host, fresh):
    p = plan(seed_host, fresh, datapath_type="netdev")
    assert ("ovs-vsctl -- add-br mesh -- set Bridge mesh datapath_type=netdev fail_mode=secure "
            "protocols=OpenFlow13 other-config:disable-in-band=true") in commands(p)
    assert ("ovs-vsctl -- add-br vmbr0 -- set Bridge vmbr0 datapath_type=netdev "
            "fail_mode=secure protocols=OpenFlow13 other-config:disable-in-band=true"
            ) in commands(p)


def test_datapath_type_defaults_to_system_and_is_checked(seed_host, fresh):
    assert "datapath_type=system" in commands(plan(seed_host, fresh))[index_of(
        plan(seed_host, fresh), "add-br mesh")]
    with pytest.raises(ValueError, match="datapath_type"):
        plan(seed_host, fresh, datapath_type="dpdk")


def test_the_controller_is_created_out_of_band_in_the_same_transaction(seed_host, fresh):
    p = plan(seed_host, fresh)
    assert ("ovs-vsctl -- --id=@ctl_mesh create Controller "
            "'target=\"tcp:127.0.0.1:6653\"' connection-mode=out-of-band "
            "-- set Bridge mesh controller=@ctl_mesh") in commands(p)
    assert index_of(p, "add-br mesh") < index_of(p, "create Controller")


def test_the_inter_bridge_veth_is_made_without_ipv6_and_brought_up(seed_host, fresh):
    p = plan(seed_host, fresh)
    assert of_type(p, AddVeth) == [AddVeth("to-privacy", "from-mesh")]
    assert "ip link add to-privacy type veth peer name from-mesh" in commands(p)
    assert Sysctl("net.ipv6.conf.to-privacy.disable_ipv6", "1") in p.actions
    assert Sysctl("net.ipv6.conf.from-mesh.disable_ipv6", "1") in p.actions
    assert index_of(p, "from-mesh.disable_ipv6") < index_of(p, "ip link set dev from-mesh up")
    assert ("ovs-vsctl -- --may-exist add-port vmbr0 from-mesh -- set Interface from-mesh "
            "ofport_request=2") in commands(p)


def test_adapters_are_internal_ports_with_stable_numbers_and_the_gateway_address(seed_host,
                                                                                  fresh):
    p = plan(seed_host, fresh)
    assert ("ovs-vsctl -- --may-exist add-port mesh mesh-gw -- set Interface mesh-gw "
            "type=internal ofport_request=1") in commands(p)
    assert ("ovs-vsctl -- --may-exist add-port vmbr0 vmbr0-gw -- set Interface vmbr0-gw "
            "type=internal ofport_request=1") in commands(p)
    assert "ip address add 10.1.0.1/24 dev mesh-gw" in commands(p)
    assert "ip address add 10.0.0.1/24 dev vmbr0-gw" in commands(p)
    assert index_of(p, "add-port mesh mesh-gw") < index_of(p, "dev mesh-gw") \
        < index_of(p, "ip link set dev mesh-gw up")


def test_containers_ports_are_left_to_lxc(seed_host, fresh):
    p = plan(seed_host, fresh)
    text = "\n".join(str(a) for a in p.actions if not isinstance(a, LoadNft))
    for veth in ("veth100", "veth102", "veth200", "veth201"):
        assert veth not in text


def test_policy_routing_one_table_per_incoming_interface_each_failing_closed(seed_host, fresh):
    p = plan(seed_host, fresh)
    routes = {a.route for a in of_type(p, AddRoute)}
    assert routes == {
        # from nm-privacy: only the xray client and the management subnet, to mesh
        Route(T_NM, ANY, "prohibit"),
        Route(T_NM, IPNetwork("10.0.0.102/32"), dev="mesh-gw"),
        Route(T_NM, IPNetwork("10.1.0.0/24"), dev="mesh-gw"),
        # from the mesh adapter: only Netmaker ranges and node2's subnet
        Route(T_MESH, ANY, "prohibit"),
        Route(T_MESH, IPNetwork("10.101.0.0/16"), dev="nm-privacy"),
        Route(T_MESH, IPNetwork("100.64.0.0/10"), dev="nm-privacy"),
        Route(T_MESH, IPNetwork("10.2.0.0/24"), dev="nm-privacy"),
        # from the vmbr0 adapter: blocked ranges prohibited, the rest to warp0
        *(Route(T_PRIV, IPNetwork(n), "prohibit") for n in (
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3")),
        Route(T_PRIV, ANY, dev="warp0"),
        # from warp0: only the privacy subnet, to the vmbr0 adapter
        Route(T_WARP, ANY, "prohibit"),
        Route(T_WARP, IPNetwork("10.0.0.0/24"), dev="vmbr0-gw"),
    }
    assert [a.rule for a in of_type(p, AddRule)] == [
        Rule(T_NM, "nm-privacy", T_NM), Rule(T_NM + 10, "nm-privacy"),
        Rule(T_MESH, "mesh-gw", T_MESH), Rule(T_MESH + 10, "mesh-gw"),
        Rule(T_PRIV, "vmbr0-gw", T_PRIV), Rule(T_PRIV + 10, "vmbr0-gw"),
        Rule(T_WARP, "warp0", T_WARP), Rule(T_WARP + 10, "warp0")]
    assert "ip rule add priority 5301 iif nm-privacy lookup 5301" in commands(p)
    assert "ip rule add priority 5311 iif nm-privacy prohibit" in commands(p)
    assert "ip route add prohibit 0.0.0.0/0 table 5301" in commands(p)
    assert "ip route add 10.0.0.102/32 dev mesh-gw table 5301" in commands(p)


def test_behind_each_lookup_rule_a_prohibit_rule_so_nothing_falls_to_main(seed_host, fresh):
    """warp0 going away takes its default route with it: what enters from vmbr0-gw
    must then be prohibited, not routed by the main table."""
    rules = [a.rule for a in of_type(plan(seed_host, fresh), AddRule)]
    for lookup in (r for r in rules if r.table is not None):
        assert Rule(lookup.priority + 10, lookup.iif) in rules
        assert rules.index(Rule(lookup.priority + 10, lookup.iif)) > rules.index(lookup)


def test_every_table_starts_with_a_prohibit_and_gets_its_rule_after_its_routes(seed_host,
                                                                               fresh):
    p = plan(seed_host, fresh)
    for table in RoutingIds().tables:
        adds = [i for i, a in enumerate(p.actions)
                if isinstance(a, AddRoute) and a.route.table == table]
        assert p.actions[adds[0]].route.type == "prohibit", table
        rule = next(i for i, a in enumerate(p.actions)
                    if isinstance(a, AddRule) and a.rule.table == table)
        assert rule > max(adds)
        blocks = [a.route for a in p.actions if isinstance(a, AddRoute)
                  and a.route.table == table and a.route.type == "prohibit"]
        passes = [i for i in adds if p.actions[i].route.type != "prohibit"]
        assert all(i > adds[len(blocks) - 1] for i in passes), table


def test_the_filter_comes_first_and_forwarding_last(seed_host, fresh):
    p = plan(seed_host, fresh)
    assert isinstance(p.actions[0], LoadNft)
    assert p.actions[-1] == Sysctl(IP_FORWARD, "1")
    assert str(p.actions[-1]) == "sysctl -w net.ipv4.ip_forward=1"


def test_turning_forwarding_on_is_said_to_concern_the_whole_host(seed_host, fresh):
    (finding,) = plan(seed_host, fresh).findings
    assert finding.subject == IP_FORWARD and finding.level == "warning"
    assert "every interface" in finding.message


def test_routing_table_numbers_are_a_parameter(seed_host, fresh):
    p = plan(seed_host, fresh, ids=RoutingIds(base=100))
    assert {a.rule.priority: a.rule.table for a in of_type(p, AddRule)} == {
        101: 101, 102: 102, 103: 103, 104: 104, 111: None, 112: None, 113: None, 114: None}


# --------------------------------------------------------------------------- nftables


def test_the_table_is_reloaded_only_when_it_differs(seed_host):
    state = converged(seed_host)
    assert not of_type(plan(seed_host, state, datapath_type="netdev"), LoadNft)
    for nft in (None, NftState("0" * 16, state.nft.rules), NftState(state.nft.digest, 3)):
        p = plan(seed_host, replace(state, nft=nft), datapath_type="netdev")
        assert [type(a) for a in p.actions] == [LoadNft]


# --------------------------------------------------------------------------- idempotence


def test_a_host_that_matches_gets_an_empty_plan(seed_host):
    p = plan(seed_host, converged(seed_host), datapath_type="netdev")
    assert p.actions == ()
    assert p.findings == ()
    assert p.script() == ""


def test_only_what_differs_is_set_on_an_existing_bridge(seed_host):
    state = converged(seed_host)
    mesh = replace(state.bridges["mesh"], fail_mode="standalone", other_config={})
    p = plan(seed_host, replace(state, bridges={**state.bridges, "mesh": mesh}),
             datapath_type="netdev")
    assert commands(p) == [
        "ovs-vsctl set Bridge mesh fail_mode=secure other-config:disable-in-band=true"]


def test_a_datapath_type_change_is_made_and_reported(seed_host):
    p = plan(seed_host, converged(seed_host, "netdev"), datapath_type="system")
    assert commands(p)[:2] == ["ovs-vsctl set Bridge mesh datapath_type=system",
                               "ovs-vsctl set Bridge vmbr0 datapath_type=system"]
    # The zones' timeout policies follow to the new datapath's record.
    assert "datapaths:system=@dp" in commands(p)[2]
    assert [c.split(" zone=")[0] for c in commands(p)[3:]] == [
        "ovs-vsctl add-zone-tp system"] * 2
    assert {f.subject for f in p.findings} == {"mesh", "vmbr0"}


def test_an_empty_datapath_type_is_system(seed_host):
    state = converged(seed_host, "")
    assert plan(seed_host, state, datapath_type="system").actions == ()


def test_missing_addresses_and_down_links_are_fixed_alone(seed_host):
    state = converged(seed_host)
    links = {**state.links,
             "mesh-gw": replace(state.links["mesh-gw"], addresses=()),
             "from-mesh": replace(state.links["from-mesh"], up=False)}
    p = plan(seed_host, replace(state, links=links), datapath_type="netdev")
    assert p.actions == (LinkUp("from-mesh"), AddAddress("mesh-gw", IPNetwork("10.1.0.1/24")))


def test_a_wrong_port_number_or_type_is_corrected(seed_host):
    state = converged(seed_host)
    interfaces = {**state.interfaces, "vmbr0-gw": OvsInterface("vmbr0-gw", "", 7)}
    p = plan(seed_host, replace(state, interfaces=interfaces), datapath_type="netdev")
    assert commands(p) == ["ovs-vsctl set Interface vmbr0-gw type=internal ofport_request=1"]


def test_a_port_number_taken_by_another_port_is_reported(seed_host):
    state = converged(seed_host)
    interfaces = {**state.interfaces, "mesh-gw": OvsInterface("mesh-gw", "internal", 1,
                                                              ofport=5)}
    p = plan(seed_host, replace(state, interfaces=interfaces), datapath_type="netdev")
    assert p.actions == ()
    (finding,) = p.findings
    assert finding.level == "warning" and "has 5" in finding.message


def test_a_port_on_the_wrong_bridge_is_moved(seed_host):
    state = converged(seed_host)
    bridges = {**state.bridges,
               "mesh": replace(state.bridges["mesh"], ports=("mesh", "to-privacy")),
               "vmbr0": replace(state.bridges["vmbr0"],
                                ports=("vmbr0", "vmbr0-gw", "from-mesh", "mesh-gw"))}
    p = plan(seed_host, replace(state, bridges=bridges), datapath_type="netdev")
    assert commands(p) == [
        "ovs-vsctl -- del-port vmbr0 mesh-gw -- --may-exist add-port mesh mesh-gw "
        "-- set Interface mesh-gw type=internal ofport_request=1"]
    assert [f.subject for f in p.findings] == ["mesh-gw"]


# --------------------------------------------------------------------------- controllers


def test_a_controller_in_band_is_switched_out_of_band_without_touching_the_set(seed_host):
    state = converged(seed_host)
    mesh = replace(state.bridges["mesh"], controllers=(OvsController("c-mesh", CTL, None),))
    p = plan(seed_host, replace(state, bridges={**state.bridges, "mesh": mesh}),
             datapath_type="netdev")
    assert commands(p) == ["ovs-vsctl set Controller c-mesh connection-mode=out-of-band"]


def test_a_foreign_controller_gets_ours_beside_it_never_in_its_place(seed_host):
    state = converged(seed_host)
    foreign = OvsController("c-other", "tcp:192.0.2.1:6653", "in-band")
    mesh = replace(state.bridges["mesh"], controllers=(foreign,))
    p = plan(seed_host, replace(state, bridges={**state.bridges, "mesh": mesh}),
             datapath_type="netdev")
    assert commands(p) == [
        "ovs-vsctl -- --id=@ctl_mesh create Controller 'target=\"tcp:127.0.0.1:6653\"' "
        "connection-mode=out-of-band -- add Bridge mesh controller @ctl_mesh"]
    assert "tcp:192.0.2.1:6653" in p.findings[0].message


@pytest.mark.parametrize("controllers", [
    (), (OvsController("a", CTL, "out-of-band"),), (OvsController("a", CTL, "in-band"),),
    (OvsController("b", "tcp:192.0.2.1:6653", None),),
])
def test_no_plan_ever_removes_or_replaces_a_controller(seed_host, controllers):
    state = converged(seed_host)
    bridges = {n: replace(b, controllers=controllers) for n, b in state.bridges.items()}
    text = "\n".join(commands(plan(seed_host, replace(state, bridges=bridges))))
    assert "del-controller" not in text and "set-controller" not in text
    assert "remove Bridge" not in text and "clear Bridge" not in text


def test_the_controller_target_follows_the_listen_address(seed_host):
    assert default_controller(seed_host) == CTL
    for listen, target in (("0.0.0.0", CTL), ("::", "tcp:[::1]:6653"),
                           ("fd00::1", "tcp:[fd00::1]:6653")):
        settings = replace(seed_host.settings, ofp_listen_host=listen)
        assert default_controller(replace(seed_host, settings=settings)) == target
    p = plan(seed_host, HostState(), controller="ssl:127.0.0.1:6654")
    assert "'target=\"ssl:127.0.0.1:6654\"'" in commands(p)[index_of(p, "create Controller")]


# --------------------------------------------------------------------------- layer 3 on a bridge


def test_warp0_enslaved_on_vmbr0_is_released_first_and_reported_loudly(seed_host):
    state = converged(seed_host)
    vmbr0 = replace(state.bridges["vmbr0"], ports=(*state.bridges["vmbr0"].ports, "warp0"))
    p = plan(seed_host, replace(state, bridges={**state.bridges, "vmbr0": vmbr0},
                                interfaces={**state.interfaces, "warp0": OvsInterface("warp0")}),
             datapath_type="netdev")
    assert commands(p) == ["ovs-vsctl -- --if-exists del-port vmbr0 warp0"]
    (error,) = p.errors
    assert error.subject == "warp0"
    assert "layer-3" in error.message and "cannot switch it" in error.message
    assert "PostUp" in error.fix and "ovs-vsctl add-port vmbr0 warp0" in error.fix
    assert "Table = off" in error.fix
    assert "vmbr0-gw" in error.fix
    assert str(error).startswith("error: warp0: ") and "\n  fix: " in str(error)


def test_an_unconfigured_l3_interface_on_a_managed_bridge_is_released(seed_host):
    state = converged(seed_host)
    links = {**state.links, "wg0": Link("wg0", Kind.L3, True, link_type="wireguard")}
    mesh = replace(state.bridges["mesh"], ports=(*state.bridges["mesh"].ports, "wg0"))
    p = plan(seed_host, replace(state, links=links, bridges={**state.bridges, "mesh": mesh}),
             datapath_type="netdev")
    assert commands(p) == ["ovs-vsctl -- --if-exists del-port mesh wg0"]
    assert [f.subject for f in p.errors] == ["wg0"]


def test_an_l3_interface_on_someone_elses_bridge_is_only_reported(seed_host):
    state = converged(seed_host)
    other = OvsBridge("br-ex", ports=("br-ex", "nm-privacy"))
    p = plan(seed_host, replace(state, bridges={**state.bridges, "br-ex": other}),
             datapath_type="netdev")
    assert p.actions == ()
    assert "br-ex is not socketnet's bridge" in p.errors[0].message


def test_internal_ports_and_ethernet_ports_are_never_taken_for_l3(seed_host):
    state = converged(seed_host)
    links = {**state.links, "veth200": Link("veth200", Kind.L2, True, link_type="veth")}
    assert plan(seed_host, replace(state, links=links), datapath_type="netdev").actions == ()


def test_an_uplink_forced_l2_that_the_kernel_says_is_l3_is_not_enslaved(tmp_path):
    data = yaml.safe_load(SEED.read_text())
    data["socketnet"]["ports"]["nm-privacy"] = {"kind": "l2"}
    path = tmp_path / "l2.yaml"
    path.write_text(yaml.safe_dump(data))
    host = load_host(str(path))
    p = plan(host, HostState(links=uplinks_up()))
    assert not any("add-port mesh nm-privacy" in c for c in commands(p))
    (error,) = p.errors
    assert error.subject == "nm-privacy" and "layer 3" in error.message
    assert "kind: l2" in error.fix
    # a real Ethernet uplink is switched directly, with its stable number, and no glue
    p = plan(host, HostState(links=uplinks_up(**{"nm-privacy": Link("nm-privacy", Kind.L2,
                                                                      True)})))
    assert ("ovs-vsctl -- --may-exist add-port mesh nm-privacy -- set Interface nm-privacy "
            "ofport_request=1") in commands(p)
    assert not p.errors
    assert {a.rule.iif for a in of_type(p, AddRule)} == {"vmbr0-gw", "warp0"}


def test_an_l3_uplink_with_ethernet_is_reported_but_still_routed(seed_host):
    state = converged(seed_host)
    links = {**state.links, "warp0": Link("warp0", Kind.L2, True, link_type="veth")}
    p = plan(seed_host, replace(state, links=links), datapath_type="netdev")
    assert p.actions == ()
    assert [(f.level, f.subject) for f in p.findings] == [("warning", "warp0")]


# --------------------------------------------------------------------------- uplinks come and go


def test_without_warp_privacy_traffic_has_no_exit_and_it_is_said(seed_host):
    state = HostState(links={"nm-privacy": Link("nm-privacy", Kind.L3, True)})
    p = plan(seed_host, state)
    routes = {a.route for a in of_type(p, AddRoute) if a.route.table == T_PRIV}
    assert Route(T_PRIV, ANY, "prohibit") in routes
    assert not any(r.dev == "warp0" for a in of_type(p, AddRoute) for r in [a.route])
    (warp,) = [f for f in p.findings if f.subject != IP_FORWARD]
    assert warp.subject == "warp0" and "wg-quick up warp0" in warp.fix
    # the rule from warp0 is there already: it is only a name
    assert Rule(T_WARP, "warp0", T_WARP) in [a.rule for a in of_type(p, AddRule)]


def test_when_warp_comes_up_its_default_replaces_the_prohibit(seed_host):
    state = converged(seed_host)
    no_warp = {k: v for k, v in state.links.items() if k != "warp0"}
    before = plan(seed_host, replace(state, links=no_warp, routes=()), datapath_type="netdev")
    routes = tuple(a.route for a in of_type(before, AddRoute))
    p = plan(seed_host, replace(state, routes=routes), datapath_type="netdev")
    assert p.actions == (ReplaceRoute(Route(T_PRIV, ANY, dev="warp0")),)
    assert str(p.actions[0]) == "ip route replace 0.0.0.0/0 dev warp0 table 5303"


def test_a_down_netmaker_leaves_its_table_closed(seed_host):
    state = HostState(links=uplinks_up(**{"nm-privacy": Link("nm-privacy", Kind.L3, False)}))
    p = plan(seed_host, state)
    assert {a.route for a in of_type(p, AddRoute) if a.route.table == T_MESH} == {
        Route(T_MESH, ANY, "prohibit")}
    assert [f.subject for f in p.findings if f.subject != IP_FORWARD] == ["nm-privacy"]


def test_stale_routes_and_rules_in_socketnets_tables_go_others_stay(seed_host):
    state = converged(seed_host)
    stale_route = Route(T_NM, IPNetwork("10.0.0.0/24"), dev="mesh-gw")
    stale_rule = Rule(5310, "eth0", T_NM)
    stale_prohibit = Rule(T_WARP + 10, "eth0")
    other_rules = (Rule(100, "eth0", 77), Rule(200, "eth0"))
    p = plan(seed_host, replace(state, routes=state.routes + (stale_route,),
                                rules=state.rules + (stale_rule, stale_prohibit,
                                                     *other_rules)),
             datapath_type="netdev")
    assert p.actions == (DelRoute(stale_route), DelRule(stale_rule), DelRule(stale_prohibit))
    assert commands(p) == ["ip route del 10.0.0.0/24 dev mesh-gw table 5301",
                           "ip rule del priority 5310 iif eth0 lookup 5301",
                           "ip rule del priority 5314 iif eth0 prohibit"]


def test_warp_in_the_main_table_is_an_error(seed_host):
    state = replace(converged(seed_host),
                    foreign_routes=(Route(254, ANY, dev="warp0"),
                                    Route(254, IPNetwork("192.0.2.0/24"), dev="eth0")))
    p = plan(seed_host, state, datapath_type="netdev")
    assert p.actions == ()
    (error,) = p.errors
    assert "Table = off" in error.fix and error.subject == "warp0"


# --------------------------------------------------------------------------- the inter-bridge link


def test_an_inter_bridge_name_taken_by_something_else_is_an_error(seed_host, fresh):
    state = replace(fresh, links={**fresh.links,
                                  "to-privacy": Link("to-privacy", Kind.L2, True, (), "dummy")})
    p = plan(seed_host, state)
    assert not of_type(p, AddVeth)
    assert not any("to-privacy" in str(a) or "from-mesh" in str(a)
                   for a in p.actions if not isinstance(a, LoadNft))
    assert [f.subject for f in p.errors] == ["to-privacy"]
    assert "ip link del to-privacy" in p.errors[0].fix


def test_a_veth_paired_with_something_else_is_an_error(seed_host):
    state = converged(seed_host)
    links = {**state.links, "from-mesh": replace(state.links["from-mesh"], peer="eth9")}
    p = plan(seed_host, replace(state, links=links), datapath_type="netdev")
    assert [f.subject for f in p.errors] == ["from-mesh"]


# --------------------------------------------------------------------------- the script


def test_the_script_puts_each_reason_above_its_command(seed_host, fresh):
    script = plan(seed_host, fresh).script()
    lines = script.splitlines()
    i = lines.index("sysctl -w net.ipv4.ip_forward=1")
    assert lines[i - 1].startswith("# ")
    assert script.endswith("sysctl -w net.ipv4.ip_forward=1\n")
