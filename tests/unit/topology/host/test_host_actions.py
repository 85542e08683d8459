"""topology.host.actions: each action prints as its exact command, and its reason is
not part of what it is."""
from __future__ import annotations

import pytest
from netaddr import IPNetwork

from topology.host.actions import (
    AddAddress, AddRoute, AddRule, AddVeth, DelRoute, DelRule, LinkUp, LoadNft, Sysctl, Vsctl,
)
from topology.host.state import Route, Rule

ANY = IPNetwork("0.0.0.0/0")


@pytest.mark.parametrize("action,command", [
    (Vsctl(("set", "Bridge", "mesh", "fail_mode=secure")),
     "ovs-vsctl set Bridge mesh fail_mode=secure"),
    (AddVeth("a", "b"), "ip link add a type veth peer name b"),
    (LinkUp("a"), "ip link set dev a up"),
    (AddAddress("a", IPNetwork("10.1.0.1/24")), "ip address add 10.1.0.1/24 dev a"),
    (AddRoute(Route(7, ANY, "prohibit")), "ip route add prohibit 0.0.0.0/0 table 7"),
    (DelRoute(Route(7, IPNetwork("10.0.0.0/24"), dev="x")),
     "ip route del 10.0.0.0/24 dev x table 7"),
    (AddRule(Rule(5, "warp0", 7)), "ip rule add priority 5 iif warp0 lookup 7"),
    (DelRule(Rule(5, "warp0", 7)), "ip rule del priority 5 iif warp0 lookup 7"),
    (Sysctl("net.ipv4.ip_forward", "1"), "sysctl -w net.ipv4.ip_forward=1"),
    (LoadNft("table inet x {}\n"), "nft -f - <<'EOF'\ntable inet x {}\nEOF"),
])
def test_each_action_prints_as_its_exact_command(action, command):
    assert str(action) == command


def test_reasons_do_not_change_what_an_action_is():
    assert LinkUp("a", why="x") == LinkUp("a", why="y")
