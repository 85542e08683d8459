"""The pipeline compiler: host model + the switch's ports -> the flows a bridge must hold.

Pure: no os-ken, no I/O. `compile_bridge(host, name, ports)` returns the complete
desired flow set of one bridge; the reconciler makes the switch match it. Ports
the switch does not have (yet) simply get no flows, and everything not allowed
here is dropped by each table's last flow, so a missing port can only ever
remove reach, never add it.

How each W-rule of the isolation promise is carried (zones: `pipeline.Zone`):

    W1  mesh:  uplink -> classify: the connection tracker (the mesh's zone); a
               connection marked privacy by the controller (controller/classifier.py)
               -> PRIVACY_INGRESS -> inter-bridge link
        vmbr0: inter-bridge (Netmaker source) -> PRIVACY_INGRESS -> committed in
               vmbr0's zone -> xray client, eth_src rewritten to vmbr0's gateway
    W2  vmbr0: XRAY_CLIENT -> warp uplink (never to private ranges); WARP -> xray client
    W3  vmbr0: XRAY_CLIENT to a Netmaker peer, only in the reply direction of a connection
               of vmbr0's zone -> inter-bridge link
        mesh:  PROXY_REPLY, only in the reply direction of a connection marked
               privacy -> netmaker uplink, eth_dst rewritten to the adapter
    W4  vmbr0: PRIVACY -> warp uplink; WARP -> the privacy container
    W5  mesh:  MANAGEMENT -> management containers, or -> netmaker uplink for
               Netmaker ranges and other nodes' subnets (a new connection is
               committed to the mesh's zone marked OUTBOUND, so its replies need
               no decision); Netmaker ingress becomes MANAGEMENT by a connection
               marked management, as W1 becomes PRIVACY_INGRESS
    W6  both:  ARP directed to the target's port; the mesh answers ARP for the
               xray client itself so no ARP crosses the inter-bridge link
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from netaddr import IPSet

from controller.flow import (CT, ETH_TYPE_ARP, ETH_TYPE_IP, IPPROTO_TCP, IPPROTO_UDP,
                             OFPP_IN_PORT, Apply, Controller, Flow, Goto, Meter, Move, Output,
                             SetField, WriteMetadata)
from controller.pipeline import (ADMIT, ARP, CLASSIFY, FORWARD, KNOWN_SOURCES_METER,
                                 PACKET_IN_METER, TABLES, Mark, Purpose, Zone, check_flow)
from topology.model import Bridge, Host, Port, Role

# Priorities, highest first within each table.
P_FORGED = 300
P_ADMIT = 200
P_REPLY = 300
P_HOST = 260
P_BLOCKED = 250
P_EXIT = 100
P_RESPONDER = 300
P_DIRECTED = 200
P_INVALID = 400
P_CLASS = 200  # table 1: a connection's class, by its mark
P_KNOWN = 4  # table 1: undecided ingress from a known source, to its own meter
P_UNDECIDED = 3  # table 1: undecided ingress from anyone else, to the other meter
P_MISS = 0
# A flow that sends packets into the connection tracker has the priority of the
# flows it stands for; the flows of what tracked packets do are two above it,
# and between them the drop of a tracked packet none of them takes, which must
# not go into the tracker again. Tracked means tracked in socketnet's zone:
# packets the host's own stack sends through an adapter on the kernel datapath
# arrive tracked already, in the host's zone.
TRACKED_LEFTOVER = 1
TRACKED_STATES = 2

INVALID = "+trk+inv"

# An Ethernet destination with the group bit clear: any unicast address.
UNICAST = ("00:00:00:00:00:00", "01:00:00:00:00:00")


@dataclass(frozen=True)
class SwitchPort:
    """A port as the switch reports it (port-desc / port-status)."""
    number: int
    name: str
    mac: str


def own_mac(bridge: Bridge, name: str, learned: Optional[str]) -> Optional[str]:
    """The MAC of the host behind port `name`: its container's, else the one the
    config gives, else `learned` (what the switch reports: an adapter's)."""
    try:
        port = bridge.port(name)
    except KeyError:
        port = None
    if port is not None and port.container is not None:
        return port.container.mac
    if port is not None and port.mac:
        return port.mac.lower()
    return learned.lower() if learned else None


class _Ports:
    """The bridge's configured ports that the switch has right now."""

    def __init__(self, bridge: Bridge, live: Mapping[str, SwitchPort]):
        self.bridge = bridge
        self._live = live

    def number(self, port: Port) -> int | None:
        sp = self._live.get(port.name)
        return sp.number if sp else None

    def mac(self, port: Port) -> str | None:
        sp = self._live.get(port.name)
        return own_mac(self.bridge, port.name, sp.mac if sp else None)

    def present(self, role: Role) -> list:
        return [p for p in self.bridge.with_role(role) if self.number(p) is not None]

    def uplink(self, role: Role):
        """(port, number, mac) of the bridge's uplink, or None when absent."""
        for p in self.present(role):
            return p, self.number(p), self.mac(p)
        return None


def compile_bridge(host: Host, bridge_name: str, live: Mapping[str, SwitchPort]) -> tuple:
    """Every flow `bridge_name` must hold, given the ports the switch has."""
    bridge = host.bridge(bridge_name)
    ports = _Ports(bridge, live)
    if bridge is host.mesh:
        flows = list(_mesh(host, ports)) + _classify(host)
    else:
        flows = list(_privacy(host, ports))
    flows.append(_invalid(FORWARD, conntrack_zone(host, bridge)))
    flows += [Flow.make(t.id, P_MISS, {}, (), Purpose.DROP.cookie) for t in TABLES]
    return tuple(sorted((check_flow(f) for f in flows),
                        key=lambda f: (f.table, -f.priority, f.match)))


def conntrack_zone(host: Host, bridge: Bridge) -> int:
    """The connection tracker's zone of `bridge`: the config's for the mesh, the
    next one for vmbr0 (zones are shared by every bridge of a datapath)."""
    zone = host.classification.conntrack_zone
    return zone if bridge is host.mesh else zone + 1


# Where table 1 sends a connection of each class (Mark), and in which direction
# of the connection: a class is decided for the connection a Netmaker peer opens;
# OUTBOUND connections are opened by a management container, so only their
# replies arrive as Netmaker ingress.
CLASS_PATHS = {
    Mark.PRIVACY: ("-rpl", (WriteMetadata(int(Zone.PRIVACY_INGRESS)), Goto(FORWARD.id))),
    Mark.MANAGEMENT: ("-rpl", (WriteMetadata(int(Zone.MANAGEMENT)), Goto(FORWARD.id))),
    Mark.DROP: ("", ()),
    Mark.OUTBOUND: ("+rpl", (WriteMetadata(int(Zone.MANAGEMENT)), Goto(FORWARD.id))),
}


def _classify(host: Host) -> list:
    """Table 1 of the mesh: Netmaker ingress through the connection tracker, then
    its connection's class; a connection with none goes to the controller,
    through a meter, and comes back committed with one (controller.classifier)."""
    zone = conntrack_zone(host, host.mesh)
    netmaker = {"metadata": int(Zone.NETMAKER)}
    tracked = {**netmaker, "ct_zone": zone}
    flows = [Flow.make(CLASSIFY.id, P_MISS + TRACKED_LEFTOVER,
                       {**netmaker, "eth_type": ETH_TYPE_IP},  # ct needs an IP match
                       (Apply((CT(zone, table=CLASSIFY.id),)),), Purpose.CONNTRACK.cookie),
             Flow.make(CLASSIFY.id, P_MISS + TRACKED_STATES, tracked, (), Purpose.DROP.cookie),
             _invalid(CLASSIFY, zone, netmaker)]
    for mark, (direction, instructions) in CLASS_PATHS.items():
        purpose = Purpose.REPLY if mark is Mark.OUTBOUND else Purpose.CLASSIFIED
        flows.append(Flow.make(CLASSIFY.id, P_CLASS,
                               {**tracked, "ct_state": "+trk-inv" + direction,
                                "ct_mark": int(mark)}, instructions, purpose.cookie))
    undecided = {**tracked, "ct_state": "+trk-inv", "ct_mark": int(Mark.UNDECIDED)}
    flows.append(Flow.make(CLASSIFY.id, P_UNDECIDED, undecided,
                           (Meter(PACKET_IN_METER), Apply((Controller(),))),
                           Purpose.CLASSIFY.cookie))
    for cidr in _cidrs(host.known_sources):
        flows.append(Flow.make(CLASSIFY.id, P_KNOWN,
                               {**undecided, "eth_type": ETH_TYPE_IP, "ipv4_src": cidr},
                               (Meter(KNOWN_SOURCES_METER), Apply((Controller(),))),
                               Purpose.CLASSIFY.cookie))
    return flows


def _invalid(table, zone: int, match: Optional[Mapping] = None) -> Flow:
    """A table's drop of packets the connection tracker finds invalid in `zone`, counted."""
    return Flow.make(table.id, P_INVALID, {**(match or {}), "ct_zone": zone,
                                           "ct_state": INVALID}, (), Purpose.INVALID.cookie)


def _tracked(table, priority: int, match: dict, zone: int, states: Mapping, cookie: int) -> list:
    """Packets of `match` through the connection tracker (`zone`) and back to
    `table`; then, for each ct_state (or (ct_state, ct_mark)) in `states`, what a
    packet in that state does. A tracked packet in none of them is dropped."""
    tracked = {**match, "ct_zone": zone}
    flows = [Flow.make(table.id, priority, match, (Apply((CT(zone, table=table.id),)),),
                       Purpose.CONNTRACK.cookie),
             Flow.make(table.id, priority + TRACKED_LEFTOVER, tracked, (), Purpose.DROP.cookie)]
    for state, actions in states.items():
        state, mark = state if isinstance(state, tuple) else (state, None)
        extra = {"ct_state": state} if mark is None else {"ct_state": state, "ct_mark": int(mark)}
        flows.append(Flow.make(table.id, priority + TRACKED_STATES, {**tracked, **extra},
                               (Apply(tuple(actions)),), cookie))
    return flows


def packet_in_meters(host: Host) -> dict:
    """meter id -> (packets/s, burst) of the meters the mesh's table 1 uses."""
    limits = host.classification.limits
    lane = (limits.packet_in_rate, limits.packet_in_burst)
    return {PACKET_IN_METER: lane, KNOWN_SOURCES_METER: lane}


# --- building blocks --------------------------------------------------------


def _cidrs(nets: Iterable) -> list:
    return [str(c) for c in IPSet(nets).iter_cidrs()]


def _zone(zone: Zone, table) -> tuple:
    return (WriteMetadata(int(zone)), Goto(table.id))


def _admit_host(number: int, mac: str, address, zone: Zone) -> list:
    """Table 0: a port whose one sender is (mac, address): its ARP and its IPv4."""
    return [
        Flow.make(ADMIT.id, P_ADMIT,
                  {"in_port": number, "eth_src": mac, "eth_type": ETH_TYPE_ARP,
                   "arp_spa": str(address), "arp_sha": mac},
                  (Goto(ARP.id),), Purpose.ADMIT.cookie),
        Flow.make(ADMIT.id, P_ADMIT,
                  {"in_port": number, "eth_src": mac, "eth_type": ETH_TYPE_IP,
                   "ipv4_src": str(address)},
                  _zone(zone, FORWARD), Purpose.ADMIT.cookie),
    ]


def _admit_uplink(number: int, mac: str, address, zone: Zone, table, forged: Iterable) -> list:
    """Table 0: an uplink adapter: its own ARP, and IPv4 from anywhere but `forged`."""
    flows = [
        Flow.make(ADMIT.id, P_ADMIT,
                  {"in_port": number, "eth_src": mac, "eth_type": ETH_TYPE_ARP,
                   "arp_spa": str(address), "arp_sha": mac},
                  (Goto(ARP.id),), Purpose.ADMIT.cookie),
        Flow.make(ADMIT.id, P_ADMIT,
                  {"in_port": number, "eth_src": mac, "eth_type": ETH_TYPE_IP},
                  _zone(zone, table), Purpose.ADMIT.cookie),
    ]
    for cidr in _cidrs(forged):
        flows.append(Flow.make(ADMIT.id, P_FORGED,
                               {"in_port": number, "eth_type": ETH_TYPE_IP, "ipv4_src": cidr},
                               (), Purpose.FORGED.cookie))
    return flows


def _to_host(zone: Zone, port_number: int, mac: str, address, purpose: Purpose) -> Flow:
    """Table 2: IPv4 of `zone` addressed to one host (MAC and address) -> its port."""
    return Flow.make(FORWARD.id, P_HOST,
                     {"metadata": int(zone), "eth_type": ETH_TYPE_IP, "eth_dst": mac,
                      "ipv4_dst": str(address)},
                     (Apply((Output(port_number),)),), purpose.cookie)


def _directed_arp(address, port_number: int) -> Flow:
    return Flow.make(ARP.id, P_DIRECTED, {"eth_type": ETH_TYPE_ARP, "arp_tpa": str(address)},
                     (Apply((Output(port_number),)),), Purpose.ARP.cookie)


def _service_match(service) -> tuple:
    if service.protocol == "tcp":
        return IPPROTO_TCP, "tcp_src", "tcp_dst"
    return IPPROTO_UDP, "udp_src", "udp_dst"


# --- mesh -------------------------------------------------------------------


def _mesh(host: Host, ports: _Ports):
    uplink = ports.uplink(Role.NETMAKER_UPLINK)
    managed = [(p, ports.number(p)) for p in ports.present(Role.MANAGEMENT)]
    xray = host.xray_client
    links = ports.present(Role.INTER_BRIDGE)
    local = list(host.management_subnet.iter_cidrs()) + list(host.privacy_subnet.iter_cidrs())

    for port, number in managed:
        c = port.container
        yield from _admit_host(number, c.mac, c.address, Zone.MANAGEMENT)
        # W5: management hosts reach each other, and Netmaker ingress
        # classified management reaches them.
        yield _to_host(Zone.MANAGEMENT, number, c.mac, c.address, Purpose.MANAGEMENT)
        yield _directed_arp(c.address, number)

    zone = conntrack_zone(host, host.mesh)
    if uplink:
        port, number, mac = uplink
        if mac:
            yield from _admit_uplink(number, mac, port.address.ip, Zone.NETMAKER, CLASSIFY, local)
            out = Output(number)
            # W5 out: a management container's new connection is committed,
            # marked OUTBOUND; then its own packets and the management replies to
            # Netmaker peers' connections go out. Nothing else of that zone does.
            for cidr in _cidrs(host.netmaker_side):
                yield from _tracked(
                    FORWARD, P_EXIT, {"metadata": int(Zone.MANAGEMENT), "eth_type": ETH_TYPE_IP,
                                      "eth_dst": mac, "ipv4_dst": cidr}, zone,
                    {"+trk+new-inv": (CT(zone, commit=True, mark=int(Mark.OUTBOUND)), out),
                     ("+trk+est-rpl-inv", Mark.OUTBOUND): (out,),
                     ("+trk+rpl-inv", Mark.MANAGEMENT): (out,)},
                    Purpose.MANAGEMENT.cookie)
            yield _directed_arp(port.address.ip, number)

    for link in links:
        link_no = ports.number(link)
        xc = xray.container
        # W1, mesh half: classified privacy, addressed to an xray service.
        for svc in xc.services:
            proto, _, dst_field = _service_match(svc)
            for src in _cidrs(host.netmaker_ranges):
                yield Flow.make(FORWARD.id, P_HOST,
                                {"metadata": int(Zone.PRIVACY_INGRESS), "eth_type": ETH_TYPE_IP,
                                 "ip_proto": proto, "eth_dst": xc.mac, "ipv4_src": src,
                                 "ipv4_dst": str(xc.address), dst_field: svc.port},
                                (Apply((Output(link_no),)),), Purpose.PRIVACY.cookie)
        if not uplink or not uplink[2]:
            continue
        up_port, up_no, up_mac = uplink
        # W3, mesh half: the xray client's replies, back to Netmaker.
        # Unicast frames only: nothing broadcast or multicast crosses (N6).
        yield Flow.make(ADMIT.id, P_ADMIT,
                        {"in_port": link_no, "eth_src": xc.mac, "eth_dst": UNICAST,
                         "eth_type": ETH_TYPE_IP, "ipv4_src": str(xc.address)},
                        _zone(Zone.XRAY_REPLY, FORWARD), Purpose.ADMIT.cookie)
        # Only as the reply direction of a connection marked privacy.
        for dst in _cidrs(host.netmaker_ranges):
            yield from _tracked(
                FORWARD, P_REPLY, {"metadata": int(Zone.XRAY_REPLY), "eth_type": ETH_TYPE_IP,
                                   "ipv4_dst": dst}, zone,
                {("+trk+rpl-inv", Mark.PRIVACY): (SetField("eth_dst", up_mac), Output(up_no))},
                Purpose.PRIVACY.cookie)
        # W6 for W1: the host resolves the xray client on the mesh adapter; the
        # switch answers, so ARP never crosses the inter-bridge link (N6).
        yield Flow.make(ARP.id, P_RESPONDER,
                        {"in_port": up_no, "eth_type": ETH_TYPE_ARP, "arp_op": 1,
                         "arp_tpa": str(xc.address)},
                        (Apply(_arp_reply(xc.mac, xc.address)),), Purpose.ARP_RESPONDER.cookie)


def _arp_reply(mac: str, address) -> tuple:
    """Turn an ARP request for `address` into the reply `mac` would send."""
    return (
        Move("eth_src", "eth_dst"),
        SetField("eth_src", mac),
        SetField("arp_op", 2),
        Move("arp_sha", "arp_tha"),
        Move("arp_spa", "arp_tpa"),
        SetField("arp_sha", mac),
        SetField("arp_spa", str(address)),
        Output(OFPP_IN_PORT),
    )


# --- vmbr0, the privacy bridge ----------------------------------------------


def _privacy(host: Host, ports: _Ports):
    uplink = ports.uplink(Role.WARP_UPLINK)
    clients = [(p, ports.number(p), Zone.XRAY_CLIENT) for p in ports.present(Role.XRAY_CLIENT)]
    others = [(p, ports.number(p), Zone.PRIVACY_CONTAINER) for p in ports.present(Role.PRIVACY_CONTAINER)]
    members = clients + others
    links = ports.present(Role.INTER_BRIDGE)
    xc = host.xray_client.container
    inside_zones = (Zone.XRAY_CLIENT, Zone.PRIVACY_CONTAINER, Zone.WARP)

    for port, number, zone in members:
        c = port.container
        yield from _admit_host(number, c.mac, c.address, zone)
        yield _directed_arp(c.address, number)
        # Privacy containers reach each other, and warp replies reach them.
        for source in inside_zones:
            purpose = Purpose.WARP if source is Zone.WARP else Purpose.PRIVACY
            yield _to_host(source, number, c.mac, c.address, purpose)

    if not uplink or not uplink[2]:
        return
    up_port, up_no, up_mac = uplink
    forged = (list(host.management_subnet.iter_cidrs()) + list(host.privacy_subnet.iter_cidrs())
              + list(host.netmaker_side.iter_cidrs()))
    yield from _admit_uplink(up_no, up_mac, up_port.address.ip, Zone.WARP, FORWARD, forged)
    yield _directed_arp(up_port.address.ip, up_no)

    # W2 and W4: out through warp, to anything but private and local ranges.
    blocked = _cidrs(host.privacy_exit_blocked)
    for zone in (Zone.XRAY_CLIENT, Zone.PRIVACY_CONTAINER):
        for cidr in blocked:
            yield Flow.make(FORWARD.id, P_BLOCKED,
                            {"metadata": int(zone), "eth_type": ETH_TYPE_IP, "ipv4_dst": cidr},
                            (), Purpose.DROP.cookie)
        yield Flow.make(FORWARD.id, P_EXIT,
                        {"metadata": int(zone), "eth_type": ETH_TYPE_IP, "eth_dst": up_mac},
                        (Apply((Output(up_no),)),), Purpose.WARP.cookie)

    xray_present = any(p.role is Role.XRAY_CLIENT for p, _, _ in members)
    zone = conntrack_zone(host, host.privacy_bridge)
    for link in links:
        link_no = ports.number(link)
        for src in _cidrs(host.netmaker_ranges):
            yield Flow.make(ADMIT.id, P_ADMIT,
                            {"in_port": link_no, "eth_type": ETH_TYPE_IP, "ipv4_src": src},
                            _zone(Zone.PRIVACY_INGRESS, FORWARD), Purpose.ADMIT.cookie)
        if not xray_present:
            continue
        xray_no = ports.number(host.xray_client)
        for svc in xc.services:
            proto, _, dst_field = _service_match(svc)
            # W1, vmbr0 half: to the xray service, as if from vmbr0's gateway,
            # the connection committed to vmbr0's zone.
            yield from _tracked(
                FORWARD, P_HOST, {"metadata": int(Zone.PRIVACY_INGRESS), "eth_type": ETH_TYPE_IP,
                                  "ip_proto": proto, "eth_dst": xc.mac,
                                  "ipv4_dst": str(xc.address), dst_field: svc.port}, zone,
                {"+trk-rpl-inv": (CT(zone, commit=True), SetField("eth_src", up_mac),
                                  Output(xray_no))},
                Purpose.PRIVACY.cookie)
        # W3, vmbr0 half: to Netmaker peers, only as replies (vmbr0's zone).
        for dst in _cidrs(host.netmaker_ranges):
            yield from _tracked(
                FORWARD, P_REPLY, {"metadata": int(Zone.XRAY_CLIENT), "eth_type": ETH_TYPE_IP,
                                   "eth_dst": up_mac, "ipv4_dst": dst}, zone,
                {"+trk+rpl-inv": (Output(link_no),)}, Purpose.PRIVACY.cookie)
