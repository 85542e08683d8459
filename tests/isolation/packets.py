"""The packet classes the isolation promise is checked against.

`matrix(host, macs)` lists, for every port of both bridges (the uplink adapters,
the inter-bridge ends and each bridge's LOCAL port included), the frames a sender
on that port could put on the wire:

    ARP          who-has for every address on the host, gratuitous ARP, replies,
                 forged sender addresses
    broadcast    ff:ff:ff:ff:ff:ff with 255.255.255.255, each subnet's broadcast,
                 DHCP, unicast IPv4 inside a broadcast frame
    multicast    01:00:5e:00:00:fb with 224.0.0.251 (mDNS)
    unknown      unicast to a MAC nobody on the host owns
    IPv4         TCP, UDP and ICMP to every address the host knows (containers and
                 their services, the adapters), to Netmaker peers, to other nodes and
                 to the internet (TEST-NET-3), through the sender's gateway and
                 straight to the target's MAC; replies from the sender's services
    forged       a source address of the host that is not the sender's own
    IPv6         neighbour and router solicitation, unicast TCP
    W-flows      `legitimate(host, macs)`: W1-W6 exactly as real kernels send them,
                 and each of them replayed on every other port

A packet is a plain dict of header fields under their ovs-ofctl names: in_port
(the port's *name*), dl_src, dl_dst, dl_type, nw_src, nw_dst, nw_proto, tp_src,
tp_dst, icmp_type, icmp_code, arp_op, arp_spa, arp_tpa, arp_sha, arp_tha,
ipv6_src, ipv6_dst, icmpv6_type. `trace_flow(packet)` renders one as the flow
argument of `ovs-appctl ofproto/trace`.

Container MACs come from the host model. The MACs of adapters, inter-bridge ends
and LOCAL ports are learned from the switch at run time, so the caller passes
them in `macs` (port name -> MAC; a LOCAL port under its bridge's name).

What a packet must and must not do is not said here: that is oracle.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional

from netaddr import IPNetwork

from topology.model import Bridge, Host, Port, Role

LOCAL = "LOCAL"  # a bridge's local port, as ovs-ofctl and ofproto/trace name it

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58
ARP_REQUEST, ARP_REPLY = 1, 2

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
UNKNOWN_MAC = "02:de:ad:be:ef:01"  # owned by nobody on the host
MDNS_MAC, MDNS = "01:00:5e:00:00:fb", "224.0.0.251"
INTERNET = "203.0.113.10"  # TEST-NET-3: stands for any internet address
EPHEMERAL = 40000  # the client's source port of a TCP or UDP conversation


@dataclass(frozen=True)
class Packet:
    name: str      # what it is, readable in an assertion message
    bridge: str    # the bridge it enters
    headers: dict  # ovs-ofctl field names; headers["in_port"] is a port name

    @property
    def in_port(self) -> str:
        return self.headers["in_port"]

    @property
    def ingress(self) -> tuple:
        return (self.bridge, self.in_port)


@dataclass(frozen=True)
class Endpoint:
    """An IPv4 address the matrix talks to. On the host (a container or an
    adapter) it has a bridge, a port and a MAC; behind Netmaker, on another node
    or on the internet it has none."""
    label: str
    address: str
    bridge: Optional[str] = None
    port: Optional[str] = None
    mac: Optional[str] = None
    services: tuple = ()  # of topology.model.Service


@dataclass(frozen=True)
class Sender:
    """Whoever puts frames on one port, as a real kernel would."""
    bridge: str
    port: str                  # a port name, or LOCAL
    mac: str                   # the source MAC of its frames
    source: str                # the IPv4 source address it legitimately uses
    arp_from: Optional[str]    # the address it ARPs from (None: it does not ARP)
    gateway_mac: Optional[str] = None  # where it sends what is not on its bridge
    services: tuple = ()


# --- who is where -----------------------------------------------------------


def port_mac(port: Port, macs: Mapping[str, str]) -> str:
    """The MAC frames from `port`'s own host carry: the container's, the one
    the config gives, or the one learned from the switch."""
    if port.container is not None:
        return port.container.mac
    if port.mac:
        return port.mac.lower()
    try:
        return macs[port.name].lower()
    except KeyError:
        raise KeyError(f"macs has no MAC for port {port.name!r} of {port.bridge} "
                       "(adapters, inter-bridge ends and LOCAL ports need one)") from None


def ingress_points(host: Host) -> list:
    """(bridge, port name) of every port of both bridges, LOCAL last on each."""
    return [(b.name, p.name) for b in host.bridges for p in b.ports] + \
           [(b.name, LOCAL) for b in host.bridges]


def uplink(bridge: Bridge) -> Optional[Port]:
    """The bridge's uplink adapter (netmaker on mesh, warp on vmbr0), if any."""
    for p in bridge.ports:
        if p.role in (Role.NETMAKER_UPLINK, Role.WARP_UPLINK) and p.address is not None:
            return p
    return None


def inter_bridge_end(bridge: Bridge) -> Optional[Port]:
    for p in bridge.ports:
        if p.role is Role.INTER_BRIDGE:
            return p
    return None


def local_endpoints(host: Host, macs: Mapping[str, str]) -> list:
    """Every address on the host: containers, then the adapters."""
    out = []
    for b in host.bridges:
        for p in b.ports:
            if p.container is not None:
                c = p.container
                out.append(Endpoint(c.name, str(c.address), b.name, p.name, c.mac, c.services))
    for b in host.bridges:
        up = uplink(b)
        if up is not None:
            out.append(Endpoint(f"{up.name} ({up.interface} adapter)", str(up.address.ip),
                                b.name, up.name, port_mac(up, macs)))
    return out


def remote_endpoints(host: Host) -> list:
    """Addresses off the host: one Netmaker peer per Netmaker range (the range's
    5th address), one host per other node's subnet (its 50th), the internet."""
    out = [Endpoint(f"netmaker peer {IPNetwork(r).network + 5}", str(IPNetwork(r).network + 5))
           for r in host.netmaker_ranges]
    for node in host.nodes:
        for s in node.subnets:
            addr = str(IPNetwork(s).network + 50)
            out.append(Endpoint(f"{node.name} host {addr}", addr))
    out.append(Endpoint("internet host", INTERNET))
    return out


def netmaker_peer(host: Host) -> str:
    return remote_endpoints(host)[0].address


def senders(host: Host, macs: Mapping[str, str]) -> list:
    """One sender per ingress point (see `ingress_points`).

    The adapters carry what the host routes onto the bridge (Netmaker ingress
    from a Netmaker peer, warp replies from the internet) and the host's own ARP;
    an inter-bridge end carries what the other bridge legitimately sends across
    (W1 onto vmbr0, W3 onto mesh); LOCAL is the host on the bridge's own
    interface.
    """
    xray = host.xray_client.container
    out = []
    for b in host.bridges:
        up = uplink(b)
        gw_mac = port_mac(up, macs) if up is not None else None
        for p in b.ports:
            if p.container is not None:
                c = p.container
                out.append(Sender(b.name, p.name, c.mac, str(c.address), str(c.address),
                                  gw_mac, c.services))
            elif p is up:
                forwarded = netmaker_peer(host) if p.role is Role.NETMAKER_UPLINK else INTERNET
                out.append(Sender(b.name, p.name, port_mac(p, macs), forwarded,
                                  str(p.address.ip)))
            elif p.role is Role.INTER_BRIDGE and b is host.mesh:
                # W3 as vmbr0 forwards it: the xray client's frame to its gateway.
                far_up = uplink(host.privacy_bridge)
                out.append(Sender(b.name, p.name, xray.mac, str(xray.address), str(xray.address),
                                  port_mac(far_up, macs) if far_up else None, xray.services))
            elif p.role is Role.INTER_BRIDGE:
                # W1 as mesh forwards it: Netmaker ingress from the mesh adapter.
                far_up = uplink(host.mesh)
                out.append(Sender(b.name, p.name,
                                  port_mac(far_up, macs) if far_up else _mac(macs, p.name),
                                  netmaker_peer(host), str(far_up.address.ip) if far_up else None))
            else:
                out.append(Sender(b.name, p.name, _mac(macs, p.name), INTERNET, None))
        host_address = str(up.address.ip) if up is not None else "0.0.0.0"
        out.append(Sender(b.name, LOCAL, _mac(macs, b.name), host_address, host_address))
    return out


def _mac(macs: Mapping[str, str], name: str) -> str:
    try:
        return macs[name].lower()
    except KeyError:
        raise KeyError(f"macs has no MAC for {name!r}") from None


# --- header builders ----------------------------------------------------------


def ipv4(in_port: str, dl_src: str, dl_dst: str, src: str, dst: str, proto: int,
         sport: int | None = None, dport: int | None = None) -> dict:
    h = {"in_port": in_port, "dl_src": dl_src, "dl_dst": dl_dst, "dl_type": ETH_IP,
         "nw_src": src, "nw_dst": dst, "nw_proto": proto}
    if proto == ICMP:
        h.update(icmp_type=8, icmp_code=0)  # echo request
    else:
        h.update(tp_src=sport if sport is not None else EPHEMERAL, tp_dst=dport)
    return h


def arp(in_port: str, op: int, dl_src: str, dl_dst: str, sha: str, spa: str,
        tha: str, tpa: str) -> dict:
    return {"in_port": in_port, "dl_src": dl_src, "dl_dst": dl_dst, "dl_type": ETH_ARP,
            "arp_op": op, "arp_sha": sha, "arp_spa": spa, "arp_tha": tha, "arp_tpa": tpa}


def ipv6(in_port: str, dl_src: str, dl_dst: str, src: str, dst: str, proto: int,
         icmpv6_type: int | None = None, dport: int | None = None) -> dict:
    h = {"in_port": in_port, "dl_src": dl_src, "dl_dst": dl_dst, "dl_type": ETH_IPV6,
         "ipv6_src": src, "ipv6_dst": dst, "nw_proto": proto}
    if icmpv6_type is not None:
        h["icmpv6_type"] = icmpv6_type
    if dport is not None:
        h.update(tp_src=EPHEMERAL, tp_dst=dport)
    return h


def _proto(proto: int) -> str:
    return {TCP: "tcp", UDP: "udp", ICMP: "icmp"}[proto]


def _flow_name(h: dict) -> str:
    """'tcp 10.1.0.200:40000 -> 10.1.0.201:9573' and the like."""
    if h["nw_proto"] == ICMP:
        return f"icmp echo {h['nw_src']} -> {h['nw_dst']}"
    return (f"{_proto(h['nw_proto'])} {h['nw_src']}:{h['tp_src']} -> "
            f"{h['nw_dst']}:{h['tp_dst']}")


# --- the legitimate W-flows ---------------------------------------------------


def legitimate(host: Host, macs: Mapping[str, str]) -> list:
    """W1-W6 as real kernels put them on the wire, each named after its rule.

    W1 is listed twice: as Netmaker ingress on the mesh adapter (the host
    resolved the xray client through the mesh's ARP responder, so dl_dst is the
    xray client's MAC) and as it arrives on vmbr0 from the inter-bridge link.
    W3 likewise: leaving the xray client (to its gateway's MAC) and arriving on
    mesh from the inter-bridge link.
    """
    return list(_legitimate(host, macs))


def _legitimate(host: Host, macs: Mapping[str, str]) -> Iterator[Packet]:
    mesh, vmbr0 = host.mesh, host.privacy_bridge
    mesh_up, warp_up = uplink(mesh), uplink(vmbr0)
    mesh_link, vmbr0_link = inter_bridge_end(mesh), inter_bridge_end(vmbr0)
    xray_port = host.xray_client
    xray = xray_port.container
    managed = [(p.name, p.container) for p in mesh.with_role(Role.MANAGEMENT)]
    privacy = [p for p in vmbr0.ports if p.container is not None]
    peers = [e for e in remote_endpoints(host) if e.label.startswith("netmaker peer")]
    nodes = [e for e in remote_endpoints(host)
             if not e.label.startswith("netmaker peer") and e.address != INTERNET]

    def pkt(name, bridge, headers):
        return Packet(name, bridge.name, headers)

    if mesh_up is not None:
        up_mac, up_ip = port_mac(mesh_up, macs), str(mesh_up.address.ip)
        # W1: Netmaker ingress for the xray service, and its ARP on the mesh adapter.
        for peer in peers:
            for svc in xray.services:
                h = ipv4(mesh_up.name, up_mac, xray.mac, peer.address, str(xray.address),
                         _PROTO[svc.protocol], dport=svc.port)
                yield pkt(f"W1: {_flow_name(h)} (xray service {svc.name}) from Netmaker",
                          mesh, h)
                if vmbr0_link is not None:
                    yield pkt(f"W1: {_flow_name(h)} arriving from {mesh.name}",
                              vmbr0, {**h, "in_port": vmbr0_link.name})
        yield pkt(f"W6 (W1): host ARP who-has {xray.address} (xray client) on {mesh_up.name}",
                  mesh, arp(mesh_up.name, ARP_REQUEST, up_mac, BROADCAST_MAC, up_mac, up_ip,
                            ZERO_MAC, str(xray.address)))
        for c_port, c in managed:
            # W5: Netmaker ingress classified management, and the replies.
            for src in peers + nodes:
                for svc in c.services:
                    h = ipv4(mesh_up.name, up_mac, c.mac, src.address, str(c.address),
                             _PROTO[svc.protocol], dport=svc.port)
                    yield pkt(f"W5: {_flow_name(h)} ({c.name} service {svc.name}) "
                              "from Netmaker", mesh, h)
                    r = ipv4(c_port, c.mac, up_mac, str(c.address), src.address,
                             _PROTO[svc.protocol], sport=svc.port, dport=EPHEMERAL)
                    yield pkt(f"W5: {_flow_name(r)} ({c.name} replies over Netmaker)", mesh, r)
                h = ipv4(mesh_up.name, up_mac, c.mac, src.address, str(c.address), ICMP)
                yield pkt(f"W5: {_flow_name(h)} ({c.name}) from Netmaker", mesh, h)
            # W5: management containers out to Netmaker peers and other nodes.
            for dst in peers + nodes:
                for proto, dport in ((TCP, 443), (UDP, 53), (ICMP, None)):
                    h = ipv4(c_port, c.mac, up_mac, str(c.address), dst.address, proto,
                             dport=dport)
                    yield pkt(f"W5: {_flow_name(h)} ({c.name} to {dst.label})", mesh, h)
            # W6: the host and the container resolve each other.
            yield pkt(f"W6: host ARP who-has {c.address} ({c.name}) on {mesh_up.name}", mesh,
                      arp(mesh_up.name, ARP_REQUEST, up_mac, BROADCAST_MAC, up_mac, up_ip,
                          ZERO_MAC, str(c.address)))
            yield pkt(f"W6: {c.name} ARP is-at to the host", mesh,
                      arp(c_port, ARP_REPLY, c.mac, up_mac, c.mac, str(c.address),
                          up_mac, up_ip))
            yield pkt(f"W6: {c.name} ARP who-has {up_ip} (its gateway)", mesh,
                      arp(c_port, ARP_REQUEST, c.mac, BROADCAST_MAC, c.mac, str(c.address),
                          ZERO_MAC, up_ip))
            yield pkt(f"W6: host ARP is-at {up_ip} to {c.name}", mesh,
                      arp(mesh_up.name, ARP_REPLY, up_mac, c.mac, up_mac, up_ip,
                          c.mac, str(c.address)))
    # W5 and W6: management containers with each other.
    for a_port, a in managed:
        for b_port, b in managed:
            if a is b:
                continue
            for svc in b.services:
                h = ipv4(a_port, a.mac, b.mac, str(a.address), str(b.address),
                         _PROTO[svc.protocol], dport=svc.port)
                yield pkt(f"W5: {_flow_name(h)} ({a.name} to {b.name} service {svc.name})",
                          mesh, h)
            h = ipv4(a_port, a.mac, b.mac, str(a.address), str(b.address), ICMP)
            yield pkt(f"W5: {_flow_name(h)} ({a.name} to {b.name})", mesh, h)
            yield pkt(f"W6: {a.name} ARP who-has {b.address} ({b.name})", mesh,
                      arp(a_port, ARP_REQUEST, a.mac, BROADCAST_MAC, a.mac, str(a.address),
                          ZERO_MAC, str(b.address)))
            yield pkt(f"W6: {b.name} ARP is-at to {a.name}", mesh,
                      arp(b_port, ARP_REPLY, b.mac, a.mac, b.mac, str(b.address),
                          a.mac, str(a.address)))

    if warp_up is not None:
        up_mac, up_ip = port_mac(warp_up, macs), str(warp_up.address.ip)
        for p in privacy:
            c = p.container
            rule = "W2" if p is xray_port else "W4"
            # W2 / W4: out through warp, and warp's replies.
            for proto, port in ((TCP, 443), (UDP, 443), (ICMP, None)):
                h = ipv4(p.name, c.mac, up_mac, str(c.address), INTERNET, proto, dport=port)
                yield pkt(f"{rule}: {_flow_name(h)} ({c.name} to the internet)", vmbr0, h)
                if proto == ICMP:
                    r = ipv4(warp_up.name, up_mac, c.mac, INTERNET, str(c.address), ICMP)
                    r.update(icmp_type=0)  # echo reply
                else:
                    r = ipv4(warp_up.name, up_mac, c.mac, INTERNET, str(c.address), proto,
                             sport=port, dport=EPHEMERAL)
                name = _flow_name(r).replace("icmp echo", "icmp echo-reply")
                yield pkt(f"{rule}: {name} (warp reply to {c.name})", vmbr0, r)
            # W6: gateway resolution both ways.
            yield pkt(f"W6: {c.name} ARP who-has {up_ip} (its gateway)", vmbr0,
                      arp(p.name, ARP_REQUEST, c.mac, BROADCAST_MAC, c.mac, str(c.address),
                          ZERO_MAC, up_ip))
            yield pkt(f"W6: host ARP is-at {up_ip} to {c.name}", vmbr0,
                      arp(warp_up.name, ARP_REPLY, up_mac, c.mac, up_mac, up_ip,
                          c.mac, str(c.address)))
            yield pkt(f"W6: host ARP who-has {c.address} ({c.name}) on {warp_up.name}", vmbr0,
                      arp(warp_up.name, ARP_REQUEST, up_mac, BROADCAST_MAC, up_mac, up_ip,
                          ZERO_MAC, str(c.address)))
            yield pkt(f"W6: {c.name} ARP is-at to the host", vmbr0,
                      arp(p.name, ARP_REPLY, c.mac, up_mac, c.mac, str(c.address),
                          up_mac, up_ip))
        # W3: the xray client's replies to Netmaker peers, leaving it and arriving on mesh.
        for peer in peers:
            for svc in xray.services:
                h = ipv4(xray_port.name, xray.mac, up_mac, str(xray.address), peer.address,
                         _PROTO[svc.protocol], sport=svc.port, dport=EPHEMERAL)
                yield pkt(f"W3: {_flow_name(h)} (xray client replies to Netmaker)", vmbr0, h)
                if mesh_link is not None:
                    yield pkt(f"W3: {_flow_name(h)} arriving from {vmbr0.name}",
                              mesh, {**h, "in_port": mesh_link.name})


_PROTO = {"tcp": TCP, "udp": UDP}


def replayed(packets: Iterable[Packet], host: Host) -> Iterator[Packet]:
    """Each packet entering every other port of both bridges, unchanged: a
    legitimate flow where it has no business (and, mostly, a forged source)."""
    points = ingress_points(host)
    for p in packets:
        for bridge, port in points:
            if (bridge, port) != p.ingress:
                yield Packet(f"{p.name}, replayed on {bridge}/{port}", bridge,
                             {**p.headers, "in_port": port})


# --- the packet-class matrix ----------------------------------------------------


def matrix(host: Host, macs: Mapping[str, str]) -> list:
    """Every packet class at every port of both bridges, each once (by headers)."""
    local = local_endpoints(host, macs)
    remote = remote_endpoints(host)
    legit = legitimate(host, macs)
    packets = legit + list(replayed(legit, host))
    for s in senders(host, macs):
        packets += _arp_classes(s, local)
        packets += _ipv4_classes(s, local, remote)
        packets += _flood_classes(s, local, remote, host)
        packets += _forged_classes(s, local, remote)
        packets += _ipv6_classes(s, local)
    seen, out = set(), []
    for p in packets:
        key = (p.bridge, tuple(sorted(p.headers.items())))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def for_ingress(packets: Iterable[Packet], bridge: str, port: str) -> list:
    return [p for p in packets if p.ingress == (bridge, port)]


def _dl_dsts(s: Sender, dst: Endpoint) -> list:
    """The destination MACs a sender could use for `dst`: the target's own MAC
    when it is on the sender's bridge, else the sender's gateway; and the
    target's own MAC wherever it is (as the mesh's ARP responder hands out the
    xray client's)."""
    out = []
    if dst.mac and dst.bridge == s.bridge:
        out.append((dst.mac, f"to {dst.label}'s MAC"))
    elif s.gateway_mac:
        out.append((s.gateway_mac, "via the gateway"))
    if dst.mac and dst.mac not in {m for m, _ in out}:
        out.append((dst.mac, f"to {dst.label}'s MAC"))
    return out


def _conversations(dst: Endpoint) -> list:
    """(proto, dport, words) to try against an address: its services, else
    tcp/443; udp/53; icmp echo."""
    out = [(_PROTO[svc.protocol], svc.port, f"service {svc.name}") for svc in dst.services]
    if not dst.services:
        out.append((TCP, 443, ""))
    return out + [(UDP, 53, ""), (ICMP, None, "")]


def _arp_classes(s: Sender, local: list) -> list:
    if s.arp_from is None:
        return []
    out = []
    for t in local:
        if t.address == s.arp_from:
            continue
        out.append(Packet(f"ARP who-has {t.address} ({t.label})", s.bridge,
                          arp(s.port, ARP_REQUEST, s.mac, BROADCAST_MAC, s.mac, s.arp_from,
                              ZERO_MAC, t.address)))
        out.append(Packet(f"ARP is-at {s.arp_from} to {t.label}", s.bridge,
                          arp(s.port, ARP_REPLY, s.mac, t.mac, s.mac, s.arp_from,
                              t.mac, t.address)))
        out.append(Packet(f"ARP who-has {t.address} ({t.label}), unicast to its MAC", s.bridge,
                          arp(s.port, ARP_REQUEST, s.mac, t.mac, s.mac, s.arp_from,
                              ZERO_MAC, t.address)))
    out.append(Packet(f"gratuitous ARP for {s.arp_from}", s.bridge,
                      arp(s.port, ARP_REQUEST, s.mac, BROADCAST_MAC, s.mac, s.arp_from,
                          ZERO_MAC, s.arp_from)))
    return out


def _ipv4_classes(s: Sender, local: list, remote: list) -> list:
    out = []
    for dst in local + remote:
        if dst.address == s.source:
            continue
        for dl_dst, how in _dl_dsts(s, dst):
            for proto, port, words in _conversations(dst):
                h = ipv4(s.port, s.mac, dl_dst, s.source, dst.address, proto, dport=port)
                what = f"{dst.label} {words}" if words else dst.label
                out.append(Packet(f"{_flow_name(h)} ({what}) {how}", s.bridge, h))
            # the sender's own services answering (replies)
            for svc in s.services:
                h = ipv4(s.port, s.mac, dl_dst, s.source, dst.address, _PROTO[svc.protocol],
                         sport=svc.port, dport=EPHEMERAL)
                out.append(Packet(f"{_flow_name(h)} (reply from service {svc.name} to "
                                  f"{dst.label}) {how}", s.bridge, h))
    return out


def _flood_classes(s: Sender, local: list, remote: list, host: Host) -> list:
    out = [
        Packet(f"broadcast: udp {s.source}:68 -> 255.255.255.255:67", s.bridge,
               ipv4(s.port, s.mac, BROADCAST_MAC, s.source, "255.255.255.255", UDP, 68, 67)),
        Packet("broadcast: DHCP discover 0.0.0.0:68 -> 255.255.255.255:67", s.bridge,
               ipv4(s.port, s.mac, BROADCAST_MAC, "0.0.0.0", "255.255.255.255", UDP, 68, 67)),
        Packet(f"multicast: mDNS {s.source} -> {MDNS}:5353", s.bridge,
               ipv4(s.port, s.mac, MDNS_MAC, s.source, MDNS, UDP, 5353, 5353)),
    ]
    subnets = list(host.management_subnet.iter_cidrs()) + list(host.privacy_subnet.iter_cidrs())
    for subnet in subnets:
        bcast = str(IPNetwork(subnet).broadcast)
        out.append(Packet(f"subnet broadcast: udp {s.source} -> {bcast}:137", s.bridge,
                          ipv4(s.port, s.mac, BROADCAST_MAC, s.source, bcast, UDP, dport=137)))
    frames = ((BROADCAST_MAC, "broadcast"), (MDNS_MAC, "multicast"),
              (UNKNOWN_MAC, "unknown unicast"))
    for dst in local + remote:
        if dst.address == s.source:
            continue
        proto, port, words = _conversations(dst)[0]
        for dl_dst, kind in frames:
            h = ipv4(s.port, s.mac, dl_dst, s.source, dst.address, proto, dport=port)
            out.append(Packet(f"{kind} frame: {_flow_name(h)} ({dst.label}) to {dl_dst}",
                              s.bridge, h))
            for svc in s.services:  # the sender's replies, in a frame for everyone
                h = ipv4(s.port, s.mac, dl_dst, s.source, dst.address, _PROTO[svc.protocol],
                         sport=svc.port, dport=EPHEMERAL)
                out.append(Packet(f"{kind} frame: {_flow_name(h)} (reply from service "
                                  f"{svc.name} to {dst.label}) to {dl_dst}", s.bridge, h))
    return out


def _forged_classes(s: Sender, local: list, remote: list) -> list:
    """The sender claiming another address of the host: with its own MAC, and
    with the claimed owner's MAC too."""
    out = []
    for claimed in local:
        if claimed.address in (s.source, s.arp_from):
            continue
        for dl_src in dict.fromkeys((s.mac, claimed.mac)):
            whose = "own MAC" if dl_src == s.mac else f"{claimed.label}'s MAC"
            tag = f"forged src {claimed.address} ({claimed.label}, {whose})"
            for dst in local + remote:
                if dst.address == claimed.address:
                    continue
                for dl_dst, how in _dl_dsts(s, dst)[:1]:
                    proto, port, words = _conversations(dst)[0]
                    h = ipv4(s.port, dl_src, dl_dst, claimed.address, dst.address, proto,
                             dport=port)
                    out.append(Packet(f"{tag}: {_flow_name(h)} ({dst.label}) {how}", s.bridge,
                                      h))
                    for svc in claimed.services:
                        h = ipv4(s.port, dl_src, dl_dst, claimed.address, dst.address,
                                 _PROTO[svc.protocol], sport=svc.port, dport=EPHEMERAL)
                        out.append(Packet(f"{tag}: {_flow_name(h)} (as a reply from service "
                                          f"{svc.name}) {how}", s.bridge, h))
            for t in local:
                if t.address == claimed.address or t.bridge != s.bridge:
                    continue
                out.append(Packet(f"{tag}: ARP who-has {t.address} ({t.label})", s.bridge,
                                  arp(s.port, ARP_REQUEST, dl_src, BROADCAST_MAC, dl_src,
                                      claimed.address, ZERO_MAC, t.address)))
                out.append(Packet(f"{tag}: ARP is-at to {t.label}", s.bridge,
                                  arp(s.port, ARP_REPLY, dl_src, t.mac, dl_src, claimed.address,
                                      t.mac, t.address)))
    return out


def _ipv6_classes(s: Sender, local: list) -> list:
    out = [
        Packet("IPv6 neighbour solicitation", s.bridge,
               ipv6(s.port, s.mac, "33:33:ff:00:00:01", "fe80::1", "ff02::1:ff00:1", ICMPV6,
                    icmpv6_type=135)),
        Packet("IPv6 router solicitation", s.bridge,
               ipv6(s.port, s.mac, "33:33:00:00:00:02", "fe80::1", "ff02::2", ICMPV6,
                    icmpv6_type=133)),
    ]
    for dst in local:
        if dst.mac and dst.mac != s.mac:
            out.append(Packet(f"IPv6 tcp to {dst.label}'s MAC", s.bridge,
                              ipv6(s.port, s.mac, dst.mac, "fd00::1", "fd00::2", TCP,
                                   dport=443)))
    return out


# --- ofproto/trace ----------------------------------------------------------------


def trace_flow(packet: Packet | dict) -> str:
    """The packet as the flow argument of `ovs-appctl ofproto/trace BRIDGE FLOW`.

    The port is given by name (ofproto/trace accepts names), and L4 ports as
    tcp_/udp_ fields, which ofproto/trace reads reliably where tp_ may not.
    """
    h = packet.headers if isinstance(packet, Packet) else packet
    parts = [f"in_port={h['in_port']}"]
    dl_type, proto = h.get("dl_type"), h.get("nw_proto")
    if dl_type == ETH_ARP:
        parts.append("arp")
    elif dl_type == ETH_IP:
        parts.append({TCP: "tcp", UDP: "udp", ICMP: "icmp"}.get(proto, "ip"))
    elif dl_type == ETH_IPV6:
        parts.append({TCP: "tcp6", UDP: "udp6", ICMPV6: "icmp6"}.get(proto, "ipv6"))
    elif dl_type is not None:
        parts.append(f"dl_type={dl_type:#06x}")
    parts += [f"dl_src={h['dl_src']}", f"dl_dst={h['dl_dst']}"]
    if dl_type == ETH_ARP:
        parts += [f"arp_op={h['arp_op']}", f"arp_spa={h['arp_spa']}", f"arp_tpa={h['arp_tpa']}",
                  f"arp_sha={h['arp_sha']}", f"arp_tha={h['arp_tha']}"]
    elif dl_type == ETH_IP:
        parts += [f"nw_src={h['nw_src']}", f"nw_dst={h['nw_dst']}"]
        if proto not in (TCP, UDP, ICMP):
            parts.append(f"nw_proto={proto}")
    elif dl_type == ETH_IPV6:
        parts += [f"ipv6_src={h['ipv6_src']}", f"ipv6_dst={h['ipv6_dst']}"]
    if proto in (TCP, UDP) and "tp_dst" in h:
        word = "tcp" if proto == TCP else "udp"
        parts += [f"{word}_src={h['tp_src']}", f"{word}_dst={h['tp_dst']}"]
    elif proto == ICMP and dl_type == ETH_IP:
        parts += [f"icmp_type={h['icmp_type']}", f"icmp_code={h['icmp_code']}"]
    elif proto == ICMPV6 and "icmpv6_type" in h:
        parts.append(f"icmpv6_type={h['icmpv6_type']}")
    return ",".join(parts)
