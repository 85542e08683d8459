"""The isolation audit: the isolation promise's N-rules (README) checked against the live bridges.

`audit(host, macs, trace)` sends (by `ofproto/trace`, no packet on the wire)
a matrix of packet classes into every port of both bridges and reports each
exit a rule forbids. The product's own, compact reading of the promise; the
test suite's oracle (tests/isolation) is the stricter, independent one.

Per ingress port, the sender a real host there would be (a container with its
own MAC and address, an uplink adapter forwarding a Netmaker peer or the
internet, an inter-bridge end carrying what the other bridge may send across,
the LOCAL port) sends to every address of the host, a Netmaker peer, another
node and the internet: TCP (each service, else 443), UDP/53 and ICMP, to the
target's MAC and to its gateway's; the same in broadcast, multicast and
unknown-unicast frames; ARP who-has for every address; and, for the xray
client, replies from its service port. Exits are judged by the sender's origin:

    N1  from a management container: the inter-bridge link or anything on vmbr0
    N2  from warp: anything but a privacy container
    N3  privacy traffic (Netmaker ingress to the xray client's service, or what
        crosses from mesh) at a management port or Netmaker; the xray client's
        replies anywhere on mesh but Netmaker
    N4  other Netmaker ingress: the inter-bridge link or anything on vmbr0
    N5  from a privacy container: management ports; the gateway container: the
        link; the xray client: the link with anything but replies to the
        Netmaker side; from vmbr0 across the link: anything but such a reply
    N6  broadcast, multicast or unknown unicast: across the link
    N9  any bridge's LOCAL port
    W1  what is privacy ingress: anything but the xray client on vmbr0
    N8  the same packets (one conversation each) and ARP from a forged source:
        every container claiming every other container's address, judged by
        the rules of its own origin and of the origin it claims; the Netmaker
        and warp uplinks claiming any container's address, which may go nowhere
"""
from __future__ import annotations

import ipaddress
from typing import Callable, Mapping, NamedTuple, Optional

from controller.compiler import own_mac
from topology.model import Host, Role

INTERNET = "203.0.113.10"
EPHEMERAL = 40000
BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST = "01:00:5e:00:00:fb"
UNKNOWN = "02:de:ad:be:ef:01"


# A container port's role -> the origin its packets are judged by.
_ORIGIN = {Role.MANAGEMENT: "management", Role.XRAY_CLIENT: "xray", Role.PRIVACY_CONTAINER: "privacy"}


class Probe(NamedTuple):
    name: str
    bridge: str
    in_port: str
    flow: str  # ofproto/trace flow
    forbidden: dict  # (bridge, port) -> (rule, why)


class Sender(NamedTuple):
    bridge: str
    port: str  # trace name (LOCAL for the bridge's own port)
    origin: str
    mac: str
    address: str
    gateway_mac: Optional[str]


def _net(cidrs):
    return [ipaddress.ip_network(str(c)) for c in cidrs]


def _within(address: str, nets) -> bool:
    a = ipaddress.ip_address(address)
    return any(a in n for n in nets)


class Matrix:
    def __init__(self, host: Host, macs: Mapping[str, str]):
        self.host = host
        self.mesh, self.vmbr0 = host.mesh.name, host.privacy_bridge.name
        self.macs = {k: v.lower() for k, v in macs.items()}
        self.points = [(b.name, p.name) for b in host.bridges for p in b.ports] + \
                      [(b.name, b.name) for b in host.bridges]  # LOCAL under the bridge's name
        self._role = {(b.name, p.name): p.role for b in host.bridges for p in b.ports}

        def with_role(bridge, *roles):
            return [(bridge.name, p.name) for p in bridge.ports if p.role in roles]

        self.management = with_role(host.mesh, Role.MANAGEMENT)
        self.privacy_containers = with_role(host.privacy_bridge, Role.PRIVACY_CONTAINER, Role.XRAY_CLIENT)
        self.xray = (self.vmbr0, host.xray_client.name)
        self.netmaker = next(iter(with_role(host.mesh, Role.NETMAKER_UPLINK)), None)
        self.link = {self.mesh: next(iter(with_role(host.mesh, Role.INTER_BRIDGE)), None),
                     self.vmbr0: next(iter(with_role(host.privacy_bridge, Role.INTER_BRIDGE)), None)}
        xc = host.xray_client.container
        self.xray_address, self.xray_services = str(xc.address), xc.services
        self.netmaker_side = _net(host.netmaker_side.iter_cidrs())
        self.peer = str(ipaddress.ip_network(str(host.netmaker_ranges[0])).network_address + 5) \
            if host.netmaker_ranges else None
        self.on = {b.name: [pt for pt in self.points if pt[0] == b.name] for b in host.bridges}
        self.owners = {str(p.container.address): _ORIGIN[p.role]  # address -> origin
                       for b in host.bridges for p in b.ports if p.container is not None}
        self.known_macs = set()
        self.targets = []  # (label, address, bridge or None, mac or None, services)
        for b in host.bridges:
            for p in b.ports:
                if p.container is not None:
                    c = p.container
                    self.targets.append((c.name, str(c.address), b.name, c.mac, c.services))
                    self.known_macs.add(c.mac)
                elif p.address is not None and p.role in (Role.NETMAKER_UPLINK,
                                                          Role.WARP_UPLINK):
                    mac = self.port_mac(b.name, p.name)
                    self.targets.append((f"{p.name} adapter", str(p.address.ip), b.name, mac, ()))
                    if mac:
                        self.known_macs.add(mac)
        if self.peer:
            self.targets.append(("netmaker peer", self.peer, None, None, ()))
        for node in host.nodes:
            for s in node.subnets:
                addr = str(ipaddress.ip_network(str(s)).network_address + 50)
                self.targets.append((f"{node.name} host", addr, None, None, ()))
        self.targets.append(("internet host", INTERNET, None, None, ()))

    def port_mac(self, bridge: str, name: str) -> Optional[str]:
        return own_mac(self.host.bridge(bridge), name, self.macs.get(name))

    def _uplink(self, bridge):
        return next((p for p in bridge.ports if p.address is not None
                     and p.role in (Role.NETMAKER_UPLINK, Role.WARP_UPLINK)), None)

    def senders(self) -> list:
        out = []
        xc = self.host.xray_client.container
        for b in self.host.bridges:
            up = self._uplink(b)
            gw = self.port_mac(b.name, up.name) if up is not None else None
            for p in b.ports:
                mac = self.port_mac(b.name, p.name)
                if mac is None:
                    continue  # not on the switch: nothing enters there
                if p.container is not None:
                    out.append(Sender(b.name, p.name, _ORIGIN[p.role], mac,
                                      str(p.container.address), gw))
                elif p.role is Role.NETMAKER_UPLINK and self.peer:
                    out.append(Sender(b.name, p.name, "netmaker", mac, self.peer, None))
                elif p.role is Role.WARP_UPLINK:
                    out.append(Sender(b.name, p.name, "warp", mac, INTERNET, None))
                elif p.role is Role.INTER_BRIDGE and b is self.host.mesh:
                    far = self._uplink(self.host.privacy_bridge)
                    out.append(Sender(b.name, p.name, "from-vmbr0", xc.mac, str(xc.address),
                                      self.port_mac(self.vmbr0, far.name) if far else None))
                elif p.role is Role.INTER_BRIDGE and self.peer:
                    far = self._uplink(self.host.mesh)
                    out.append(Sender(b.name, p.name, "from-mesh",
                                      (self.port_mac(self.mesh, far.name) if far else mac),
                                      self.peer, None))
            local_mac = self.macs.get(b.name)
            if local_mac and up is not None:
                out.append(Sender(b.name, "LOCAL", "netmaker" if b is self.host.mesh else "warp",
                                  local_mac, str(up.address.ip), None))
        return out

    # --- what is forbidden -------------------------------------------------------

    def _reply_to_netmaker_side(self, src, dst, proto, sport) -> bool:
        return (src == self.xray_address and dst is not None
                and _within(dst, self.netmaker_side)
                and any(s.protocol == proto and s.port == sport for s in self.xray_services))

    def forbidden(self, s: Sender, dl_dst: str, proto: str, dst: str, sport, dport) -> dict:
        out = {}

        def forbid(points, rule, why):
            for pt in points:
                if pt is not None and pt not in out:
                    out[pt] = (rule, why)

        forbid([(self.mesh, self.mesh), (self.vmbr0, self.vmbr0)], "N9",
               "the bridge's LOCAL port")
        mesh_pts, vmbr0_pts = self.on[self.mesh], self.on[self.vmbr0]
        if s.origin == "management":
            forbid([self.link[self.mesh]] + vmbr0_pts, "N1",
                   "a management container's traffic reaches vmbr0")
        elif s.origin == "netmaker":
            to_service = (dst == self.xray_address and any(
                svc.protocol == proto and svc.port == dport for svc in self.xray_services))
            if to_service:
                forbid(self.management + [self.netmaker], "N3",
                       "privacy ingress reaches a management port or Netmaker")
                forbid([p for p in vmbr0_pts if p != self.xray], "W1",
                       "privacy ingress reaches the xray client and only it")
            else:
                forbid([self.link[self.mesh]] + vmbr0_pts, "N4",
                       "unclassified or management Netmaker ingress reaches vmbr0")
        elif s.origin == "warp":
            forbid([p for p in self.points if p not in self.privacy_containers], "N2",
                   "warp ingress reaches something other than a privacy container")
        elif s.origin in ("xray", "privacy"):
            forbid(self.management, "N5", "a privacy container reaches a management port")
            if s.origin == "privacy":
                forbid([self.link[self.vmbr0]] + mesh_pts, "N5",
                       "the gateway container reaches the inter-bridge link")
            elif self._reply_to_netmaker_side(s.address, dst, proto, sport):
                forbid([p for p in mesh_pts if p != self.netmaker], "N3",
                       "the xray client's replies cross only to go out to Netmaker")
            else:
                forbid([self.link[self.vmbr0]] + mesh_pts, "N5",
                       "the xray client crosses with something other than a reply")
        elif s.origin == "from-vmbr0":
            if self._reply_to_netmaker_side(s.address, dst, proto, sport):
                forbid([p for p in self.points if p != self.netmaker], "N3",
                       "the xray client's replies go out to Netmaker and nowhere else")
            else:
                forbid(self.points, "N5", "only the xray client's replies may come across")
        elif s.origin == "from-mesh":
            forbid(self.management + [self.netmaker], "N3", "privacy traffic goes back to mesh")
            forbid([p for p in self.points if p != self.xray], "W1",
                   "what comes across from mesh reaches the xray client and only it")
        flooding = (dl_dst == BROADCAST or int(dl_dst[:2], 16) & 1
                    or dl_dst not in self.known_macs)
        if flooding:
            if s.origin in ("from-vmbr0", "from-mesh"):
                if dl_dst == BROADCAST or int(dl_dst[:2], 16) & 1:
                    forbid(self.points, "N6", "broadcast or multicast arrived over the link")
            else:
                other = self.vmbr0 if s.bridge == self.mesh else self.mesh
                forbid([self.link[s.bridge]] + self.on[other], "N6",
                       "broadcast, multicast or unknown unicast crosses the link")
        return out

    def forgers(self, senders: list) -> list:
        """N8: `senders` again, the containers and the uplinks each claiming a
        container's address that is not its own."""
        forging = ("management", "xray", "privacy", "netmaker", "warp")
        return [s._replace(address=claim) for s in senders
                if s.port != "LOCAL" and s.origin in forging
                for claim in self.owners if claim != s.address]

    def forged(self, s: Sender, dl_dst: str, proto: str, dst: str, sport, dport) -> dict:
        """Where a packet of a forged source may not go: from a container, what its
        own origin may not reach and what the origin it claims may not; from
        outside, anywhere."""
        if s.origin in ("netmaker", "warp"):
            return {pt: ("N8", f"{s.origin} ingress claiming a container's address "
                               "goes nowhere") for pt in self.points}
        out = {}
        claimed = s._replace(origin=self.owners[s.address])
        for sender, as_what in ((s, "its own origin"), (claimed, f"the {claimed.origin} "
                                                                   "it claims to be")):
            for pt, (rule, why) in self.forbidden(sender, dl_dst, proto, dst, sport,
                                                  dport).items():
                out.setdefault(pt, ("N8", f"from a forged source, as {as_what}: {why} "
                                          f"({rule})"))
        return out

    # --- the probes --------------------------------------------------------------

    def probes(self) -> list:
        senders = self.senders()
        return self._probes(senders, forged=False) \
            + self._probes(self.forgers(senders), forged=True)

    def _probes(self, senders, forged: bool) -> list:
        out = []
        for s in senders:
            for label, address, bridge, mac, services in self.targets:
                if address == s.address:
                    continue
                dl_dsts = []
                if mac and bridge == s.bridge:
                    dl_dsts.append(mac)
                elif s.gateway_mac:
                    dl_dsts.append(s.gateway_mac)
                if mac and mac not in dl_dsts:
                    dl_dsts.append(mac)
                if not dl_dsts:
                    dl_dsts.append(UNKNOWN)
                convs = [(svc.protocol, EPHEMERAL, svc.port) for svc in services] or \
                        [("tcp", EPHEMERAL, 443)]
                convs += [("udp", EPHEMERAL, 53), ("icmp", None, None)]
                if s.origin in ("xray", "from-vmbr0"):
                    convs += [(svc.protocol, svc.port, EPHEMERAL) for svc in self.xray_services]
                if forged:  # one conversation: table 0 judges the source, not the rest
                    dl_dsts, convs = dl_dsts[:1], convs[:1]
                for dl_dst in dl_dsts:
                    for proto, sport, dport in convs:
                        out.append(self._probe(s, label, dl_dst, proto, address, sport, dport,
                                               forged))
                proto, sport, dport = convs[0]
                if not forged:
                    for dl_dst in (BROADCAST, MULTICAST, UNKNOWN):
                        out.append(self._probe(s, label, dl_dst, proto, address, sport,
                                               dport))
                out.append(self._arp(s, label, address, forged))
        return out

    def _probe(self, s, label, dl_dst, proto, dst, sport, dport, forged=False) -> Probe:
        parts = [f"in_port={s.port}", proto, f"dl_src={s.mac}", f"dl_dst={dl_dst}",
                 f"nw_src={s.address}", f"nw_dst={dst}"]
        if proto in ("tcp", "udp"):
            parts += [f"{proto}_src={sport}", f"{proto}_dst={dport}"]
            what = f"{proto} {s.address}:{sport} -> {dst}:{dport}"
        else:
            parts += ["icmp_type=8", "icmp_code=0"]
            what = f"icmp {s.address} -> {dst}"
        name = f"{what} ({label}) to {dl_dst}" + (", forged source" if forged else "")
        judge = self.forged if forged else self.forbidden
        return Probe(name, s.bridge, s.port, ",".join(parts),
                     judge(s, dl_dst, proto, dst, sport, dport))

    def _arp(self, s, label, dst, forged=False) -> Probe:
        flow = ",".join([f"in_port={s.port}", "arp", f"dl_src={s.mac}", f"dl_dst={BROADCAST}",
                         "arp_op=1", f"arp_spa={s.address}", f"arp_tpa={dst}",
                         f"arp_sha={s.mac}", "arp_tha=00:00:00:00:00:00"])
        judge = self.forged if forged else self.forbidden
        return Probe(f"ARP who-has {dst} ({label})" + (", forged source" if forged else ""),
                     s.bridge, s.port, flow, judge(s, BROADCAST, "arp", dst, None, None))


def audit(host: Host, macs: Mapping[str, str], trace: Callable[[str, str], object]) -> dict:
    """Run every probe through `trace(bridge, flow)` (a TracePath: `.exits` with
    `.bridge` and `.port`); report the exits a rule forbids."""
    matrix = Matrix(host, macs)
    probes = matrix.probes()
    violations, errors = [], []
    for probe in probes:
        try:
            path = trace(probe.bridge, probe.flow)
        except ValueError as exc:
            errors.append({"packet": probe.name, "bridge": probe.bridge,
                           "in_port": probe.in_port, "error": str(exc)})
            continue
        for out in path.exits:
            hit = probe.forbidden.get((out.bridge, out.port))
            if hit:
                violations.append({"rule": hit[0], "why": hit[1], "packet": probe.name,
                                   "bridge": probe.bridge, "in_port": probe.in_port,
                                   "exit": f"{out.bridge}/{out.port}", "flow": probe.flow})
    return {"ok": not violations and not errors, "packets": len(probes),
            "violations": violations, "errors": errors,
            "rules": sorted({v["rule"] for v in violations})}
