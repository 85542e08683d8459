"""What the watcher makes of netlink messages: which interface a burst is put
down to (the one that moved itself, not the routes that moved with it), and
which interfaces a config makes it watch."""
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from topology.config import load_host
from topology.host.watch import Watcher, watched_interfaces

from tests.conftest import SEED_YAML


def _msg(cls, event, index=0, **attrs):
    m = cls()
    m["event"] = event
    if index:
        m["index"] = index
    m["attrs"] = list(attrs.items())
    return m


def _watcher(names):
    w = Watcher.__new__(Watcher)  # only the names: no config, no host
    w.names = set(names)
    return w


def test_a_link_outranks_the_routes_and_addresses_that_moved_with_it():
    w, by_index = _watcher({"warp0", "nm-privacy"}), {7: "nm-privacy"}
    seen = []
    out = w._triggers([
        _msg(rtmsg, "RTM_DELROUTE", RTA_OIF=7),
        _msg(ifaddrmsg, "RTM_DELADDR", index=7),
        _msg(ifinfmsg, "RTM_DELLINK", index=9, IFLA_IFNAME="warp0"),
    ], by_index, seen)
    assert out == {"nm-privacy": 1, "warp0": 0}
    assert seen == ["RTM_DELROUTE nm-privacy", "RTM_DELADDR nm-privacy", "RTM_DELLINK warp0"]


def test_names_follow_renames_and_unwatched_interfaces_are_other():
    w, by_index = _watcher({"warp0"}), {}
    out = w._triggers([
        _msg(ifinfmsg, "RTM_NEWLINK", index=12, IFLA_IFNAME="swg0123a"),  # born
        _msg(ifinfmsg, "RTM_NEWLINK", index=12, IFLA_IFNAME="warp0"),  # renamed
        _msg(rtmsg, "RTM_NEWROUTE", RTA_OIF=12),
        _msg(rtmsg, "RTM_NEWROUTE", RTA_OIF=99),  # an interface never seen
        _msg(fibmsg, "RTM_NEWRULE", FRA_IFNAME="eth9"),
        _msg(ifinfmsg, "RTM_NEWNEIGH", index=12, IFLA_IFNAME="warp0"),  # not watched for
    ], by_index)
    assert out == {"other": 0, "warp0": 0}
    assert by_index[12] == "warp0"


def test_a_rule_naming_a_watched_interface_counts_for_it():
    out = _watcher({"mesh-gw"})._triggers([_msg(fibmsg, "RTM_DELRULE", FRA_IFNAME="mesh-gw")],
                                          {})
    assert out == {"mesh-gw": 2}


def test_the_seeds_watched_interfaces_are_its_bridges_ports_and_uplinks():
    names = watched_interfaces(load_host(str(SEED_YAML)))
    assert {"mesh", "vmbr0", "nm-privacy", "warp0", "mesh-gw", "vmbr0-gw", "to-privacy",
            "from-mesh"} <= names
    assert not {"lo", "eth0"} & names
