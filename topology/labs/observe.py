"""What a running world's parts saw, for tests and the demo to compare before and after.

Owns the world's own nftables counters (table `inet world` in the host's netns and
in the droplet's, WARP exit's and VPS's: never host apply's table), made once the
mesh is up (`install_counters`) and read back (`exit_counters`, `ip_received`);
the switches' port counters (`port_counters`, `parse_dump_ports`); the containers'
kernel IPv4 counters; and the VPS's log of connections (`vps_connections`).
`World`'s methods of the same names call these with itself.
"""
from __future__ import annotations

import json
import os
import re

from topology.model import Role

# The droplet's, WARP exit's and VPS's interfaces whose IPv4 ingress `ip_received`
# counts (their underlay's WireGuard datagrams are not the traffic that matters).
COUNTED = {"droplet": '"netmaker"', "warp": '"warp"', "vps": '"netmaker", "eth0"'}
VPS_LOG = "vps-connections.log"  # in the world's directory: the VPS's server appends to it


def _warp_interface(world) -> str:
    return world.host.privacy_bridge.one(Role.WARP_UPLINK).interface


def _nm_interface(world) -> str:
    return world.host.mesh.one(Role.NETMAKER_UPLINK).interface


def install_counters(world) -> None:
    """What the far ends received on their tunnels (`COUNTED`), and what the host
    sends out of each uplink per peer, all and new connections only."""
    for where, ifaces in COUNTED.items():
        _counters(world, where, "prerouting", [
            f"iifname {{ {ifaces} }} icmp type destination-unreachable return",
            f'iifname {{ {ifaces} }} meta nfproto ipv4 counter name "received"'])
    exits = []
    for suffix, state in (("", ""), ("_new", "ct state new ")):
        exits.append(f'oifname "{_warp_interface(world)}" {state}'
                     f'counter name "exit_warp{suffix}"')
        for i, member in enumerate(world.netmaker.members[1:], start=1):
            exits.append(f'oifname "{_nm_interface(world)}" ip daddr '
                         f'{{ {", ".join(member.owns)} }} {state}'
                         f'counter name "exit_nm_{i}{suffix}"')
    _counters(world, "host", "postrouting", exits)


def _counters(world, where: str, hook: str, rules: list) -> None:
    """The world's own observation counters in `where` (table `inet world`, not
    host apply's): named counters, counted by `rules` at `hook`."""
    names = re.findall(r'counter name "(\w+)"', "\n".join(rules))
    lines = ["table inet world {", *(f"\tcounter {n} {{}}" for n in dict.fromkeys(names)),
             f"\tchain {hook} {{",
             f"\t\ttype filter hook {hook} priority raw; policy accept;",
             *(f"\t\t{r}" for r in rules), "\t}", "}", ""]
    world.exec(where, "nft", "-f", "-", input="\n".join(lines), check=True)


def read_counters(world, where: str) -> dict:
    """{counter name: packets} of the world's table in `where`."""
    doc = json.loads(world.exec(where, "nft", "-j", "list", "counters", "table", "inet",
                                "world", check=True).stdout)
    return {item["counter"]["name"]: item["counter"]["packets"]
            for item in doc["nftables"] if "counter" in item}


def port_counters(world) -> dict:
    """{(node, bridge, port): (rx packets, tx packets)} from the switches, LOCAL
    ports included."""
    counters = {}
    for label, lab in (("host", world.lab), ("node2", world.node2)):
        if lab is None:
            continue
        for bridge in lab.host.bridges:
            counters.update({(label, bridge.name, port): value for port, value in
                             parse_dump_ports(lab.ovs.ofctl("dump-ports", "--names",
                                                            bridge.name)).items()})
    return counters


def exit_counters(world, new: bool = False) -> dict:
    """IPv4 packets this host sent out of its WireGuard uplinks, per peer:
    {"warp0 -> WARP exit": n, "nm-privacy -> droplet": n, ...}; with `new`, only
    those that start a connection (conntrack state new: not replies, not a late
    retransmission of a finished session). Counted by the world's own nftables
    counters in the host's netns: WireGuard's keepalives and handshakes are not
    anyone's packets."""
    counted = read_counters(world, "host")
    suffix = "_new" if new else ""
    out = {f"{_warp_interface(world)} -> WARP exit": counted[f"exit_warp{suffix}"]}
    for i, member in enumerate(world.netmaker.members[1:], start=1):
        out[f"{_nm_interface(world)} -> {member.label}"] = counted[f"exit_nm_{i}{suffix}"]
    return out


def ip_received(world) -> dict:
    """{where: IPv4 packets its kernel received, ICMP destination-unreachable
    errors not counted} for every container (node2's as "node2:<id>"), and what
    the droplet, the WARP exit and the VPS received on their tunnels (and the
    VPS on the internet), not their underlays: ARP does not count, so a probe's
    target that stays at the same number got nothing (a prohibit route's error
    back to the probe's sender does not count either)."""
    places = [c.id for b in world.host.bridges for c in b.containers]
    if world.node2 is not None:
        places += [f"node2:{c.id}" for b in world.node2_host.bridges for c in b.containers]
    out = {}
    for where in COUNTED:
        out[where] = read_counters(world, where)["received"]
    for where in places:
        snmp = world.exec(where, "cat", "/proc/net/snmp", check=True).stdout.splitlines()
        table = {}
        for head, values in zip(snmp[::2], snmp[1::2]):
            names, numbers = head.split()[1:], values.split()[1:]
            table[head.split(":")[0]] = dict(zip(names, map(int, numbers)))
        out[where] = table["Ip"]["InReceives"] - table["Icmp"]["InDestUnreachs"]
    return out


def vps_connections(world) -> list:
    """[(source address, the VPS address it reached)] in the order they came."""
    try:
        with open(os.path.join(world.dir, VPS_LOG)) as f:
            return [tuple(line.split()[:2]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def parse_dump_ports(text: str) -> dict:
    """`ovs-ofctl --names dump-ports` -> {port name: (rx packets, tx packets)}."""
    counters, port, rx = {}, None, None
    for line in text.splitlines():
        m = re.match(r'\s*port\s+"?([^":]+)"?:\s*rx pkts=(\d+)', line)
        if m:
            port, rx = m.group(1).strip(), int(m.group(2))
            continue
        m = re.match(r"\s*tx pkts=(\d+)", line)
        if m and port is not None:
            counters[port] = (rx, int(m.group(1)))
            port = None
    return counters


__all__ = ["COUNTED", "VPS_LOG", "install_counters", "read_counters", "port_counters",
           "exit_counters", "ip_received", "vps_connections", "parse_dump_ports"]
