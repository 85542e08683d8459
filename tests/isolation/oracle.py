"""The promise (README, W1-W6 and N1-N9) as code: where a packet must never go, and where it must arrive.

`Oracle(host, macs).judge(packet)` answers, for a packet entering one port of
one bridge (packets.py), with a `Verdict`:

    forbidden  every egress point the packet must never reach, each with every
               rule that forbids it (N1-N9, or "W1" for its "and only it")
    required   for a legitimate W-flow (the sender's own MAC and address), where
               it must arrive (any one of a few deliveries, none of them
               forbidden) and the headers it must carry there

An egress point is (bridge, port name), LOCAL included, over both bridges: a
packet leaving mesh by the inter-bridge link goes on into vmbr0 and can reach
vmbr0's ports (and back), so every rule speaks of the whole host.

This file is written from the promise, the seed's architecture and the routed
design (topology/host/plan.py); never from the compiler's flows. The readings it
takes where the text leaves room, each in one place below:

  - A packet is judged by who sent it: the role of the port it entered by.
    The bridge's LOCAL port is the host, like the bridge's uplink adapter: on
    mesh it is judged as Netmaker ingress, on vmbr0 as warp ingress.
  - An inter-bridge end carries only what the other bridge may send across:
    on vmbr0, privacy-classified Netmaker ingress (W1); on mesh, the xray
    client's replies (W3). Anything else arriving there is judged as such.
  - An uplink adapter is the host, which routes on: a packet for the privacy
    subnet handed to the mesh adapter reaches vmbr0, a packet for the management
    subnet or the Netmaker side handed to the warp adapter reaches mesh or
    Netmaker. The flow tables must not count on the host's policy routing.
  - Classification of Netmaker ingress (`classify`): to a management container's
    address it is management; from a Netmaker peer to the xray client it is
    privacy once the product classifies (`privacy_classified=True`) and
    unclassified until then; anything else is unclassified, and must still be
    safe (N4). W1 is required only of privacy-classified ingress to the xray
    service, addressed to the xray client's MAC (what the mesh's ARP answer
    gives the host).
  - The xray client's "replies to Netmaker-side peers" (N5, W3) are the reply
    direction of a privacy connection: one a Netmaker-side peer opened to its
    service and the product classified privacy (`privacy_connections`, the
    connections the tracker holds). Anything else the xray client sends to the
    Netmaker side, from whatever port, is not a reply.
  - N6: a frame is flooding traffic when its destination MAC is a group address
    or a unicast MAC no container or adapter of this host owns, or its IPv4
    destination is a broadcast or multicast address. It must not cross the
    inter-bridge link; and a broadcast or multicast arriving over the link must go
    nowhere (each bridge stops it, so one bridge's stale flows cannot let it
    through).
  - N8: a source address of the host that is not the sender's own is forged.
    From outside (an uplink, the inter-bridge link, LOCAL) it may reach nothing;
    from a container it is held to the rules of the sender *and* of the host it
    claims to be. A forged packet is never required to arrive anywhere.
  - N9: no config asks for LOCAL, so LOCAL is always forbidden.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass
from typing import Mapping, Optional

from topology.model import Host, Role

from tests.isolation.packets import (ARP_REPLY, ARP_REQUEST, BROADCAST_MAC, ETH_ARP, ETH_IP,
                                     LOCAL, Packet, port_mac)

Point = tuple  # (bridge name, port name or LOCAL)
UNKNOWN_UNICAST = "unknown unicast"


class Origin(str, enum.Enum):
    """Who a packet speaks for, from the port it entered by."""
    MANAGEMENT = "management container"
    NETMAKER = "Netmaker ingress"
    WARP = "warp ingress"
    XRAY = "xray client"
    PRIVACY = "privacy container"
    FROM_VMBR0 = "arriving over the inter-bridge link from the privacy bridge"
    FROM_MESH = "arriving over the inter-bridge link from mesh"

    def __str__(self) -> str:
        return self.value


class Classification(str, enum.Enum):
    PRIVACY = "privacy"
    MANAGEMENT = "management"
    UNCLASSIFIED = "unclassified"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Forbidden:
    point: Point
    rule: str  # "N1".."N9", or "W1" for its "and only it"
    why: str

    def __str__(self) -> str:
        return f"{self.rule} ({self.why})"


@dataclass(frozen=True)
class Delivery:
    """Arriving at `point` with these header values (ovs-ofctl names)."""
    point: Point
    headers: tuple = ()  # of (field, value)

    def met_by(self, point: Point, headers: Mapping) -> bool:
        """`headers` as the table simulator gives them, or as a trace prints them
        (every value a string)."""
        return point == self.point and all(str(headers.get(k)).lower() == str(v).lower()
                                           for k, v in self.headers)

    def __str__(self) -> str:
        with_ = ", ".join(f"{k}={v}" for k, v in self.headers)
        return f"{self.point[0]}/{self.point[1]}" + (f" with {with_}" if with_ else "")


@dataclass(frozen=True)
class Required:
    rule: str  # "W1".."W6"
    why: str
    any_of: tuple  # of Delivery

    def __str__(self) -> str:
        return f"{self.rule} ({self.why}): at " + " or ".join(str(d) for d in self.any_of)


@dataclass(frozen=True)
class Verdict:
    origin: Origin
    classification: Optional[Classification]
    forged: Optional[str]  # why the source is forged, or None
    forbidden: Mapping  # Point -> tuple of Forbidden: every rule that forbids it
    required: tuple  # of Required

    def forbids(self, point: Point) -> tuple:
        """The rules that forbid `point` (empty: the packet may go there)."""
        return self.forbidden.get(point, ())


class Oracle:
    """The isolation policy of one host. `macs` are the MACs learned from the
    switch (packets.py): the adapters' are part of what W1 and W3 must carry."""

    def __init__(self, host: Host, macs: Mapping[str, str], privacy_classified: bool = False,
                 privacy_connections: frozenset = frozenset()):
        self.host = host
        self.privacy_classified = privacy_classified
        # (src, dst, proto, sport, dport) of the privacy connections Netmaker peers opened
        self.privacy_connections = frozenset(privacy_connections)
        self.mesh, self.vmbr0 = host.mesh.name, host.privacy_bridge.name
        self._ports = {(b.name, p.name): p for b in host.bridges for p in b.ports}
        self.points = tuple(self._ports) + ((self.mesh, LOCAL), (self.vmbr0, LOCAL))
        self._on = {b.name: [pt for pt in self.points if pt[0] == b.name] for b in host.bridges}

        def points(bridge, *roles):
            return [(bridge.name, p.name) for p in bridge.ports if p.role in roles]

        self.management = points(host.mesh, Role.MANAGEMENT)
        self.privacy_containers = points(host.privacy_bridge, Role.PRIVACY_CONTAINER, Role.XRAY_CLIENT)
        self.xray = (self.vmbr0, host.xray_client.name)
        self.netmaker = _first(points(host.mesh, Role.NETMAKER_UPLINK))
        self.warp = _first(points(host.privacy_bridge, Role.WARP_UPLINK))
        self.link = {self.mesh: _first(points(host.mesh, Role.INTER_BRIDGE)),
                     self.vmbr0: _first(points(host.privacy_bridge, Role.INTER_BRIDGE))}

        xc = host.xray_client.container
        self.xray_address, self.xray_mac, self.xray_services = str(xc.address), xc.mac, xc.services
        self._owner = {}  # address -> point of the port whose host owns it
        self._mac = {}    # point -> MAC of the host behind it (containers, adapters)
        for point, port in self._ports.items():
            if port.container is not None:
                self._owner[str(port.container.address)] = point
                self._mac[point] = port.container.mac
            elif (port.role in (Role.NETMAKER_UPLINK, Role.WARP_UPLINK)
                  and port.address is not None):
                self._owner[str(port.address.ip)] = point
                self._mac[point] = port_mac(port, macs)
        self.known_macs = frozenset(self._mac.values())

        def nets(cidrs):
            return tuple(ipaddress.ip_network(str(c)) for c in cidrs)

        self.management_subnet = nets(host.management_subnet.iter_cidrs())
        self.privacy_subnet = nets(host.privacy_subnet.iter_cidrs())
        self.netmaker_ranges = nets(host.netmaker_ranges)
        self.netmaker_side = nets(host.netmaker_side.iter_cidrs())
        self.not_internet = (self.management_subnet + self.privacy_subnet + self.netmaker_side
                             + nets(host.privacy_blocked)
                             + nets(["224.0.0.0/4", "255.255.255.255/32"]))
        self.broadcasts = frozenset(
            ["255.255.255.255"] + [str(n.broadcast_address)
                                   for n in self.management_subnet + self.privacy_subnet])
        self.resolutions = frozenset(self._resolutions())

    # --- who sent it ------------------------------------------------------------

    def origin(self, bridge: str, port: str) -> Origin:
        if port == LOCAL:
            return Origin.NETMAKER if bridge == self.mesh else Origin.WARP
        role = self._ports[(bridge, port)].role
        if role is Role.INTER_BRIDGE:
            return Origin.FROM_VMBR0 if bridge == self.mesh else Origin.FROM_MESH
        return {Role.MANAGEMENT: Origin.MANAGEMENT, Role.NETMAKER_UPLINK: Origin.NETMAKER,
                Role.WARP_UPLINK: Origin.WARP, Role.XRAY_CLIENT: Origin.XRAY,
                Role.PRIVACY_CONTAINER: Origin.PRIVACY}[role]

    def classify(self, headers: Mapping) -> Classification:
        """What Netmaker ingress is, by where it is going (see the module doc)."""
        dst = _destination(headers)
        if dst is not None and self._owner.get(dst) in self.management:
            return Classification.MANAGEMENT
        if (dst == self.xray_address and self.privacy_classified
                and _in(_source(headers), self.netmaker_ranges)):
            return Classification.PRIVACY
        return Classification.UNCLASSIFIED

    # --- the verdict ----------------------------------------------------------------

    def judge(self, packet: Packet,
              classification: Optional[Classification] = None) -> Verdict:
        h = packet.headers
        origin = self.origin(packet.bridge, packet.in_port)
        if origin is Origin.NETMAKER and classification is None:
            classification = self.classify(h)
        elif origin is Origin.FROM_MESH:
            classification = Classification.PRIVACY  # the only thing that may cross
        elif origin is not Origin.NETMAKER:
            classification = None

        forbidden: dict = {}  # point -> {rule: Forbidden}
        _forbid(forbidden, [(self.mesh, LOCAL), (self.vmbr0, LOCAL)], "N9",
                "the bridge's LOCAL port")
        self._forbid_by_origin(forbidden, origin, classification, h)
        self._forbid_flooding(forbidden, origin, packet.bridge, h)
        forged = self._forged(origin, packet.ingress, h)
        if forged:
            claimed = self._owner_origin(_source(h))
            if origin in (Origin.MANAGEMENT, Origin.XRAY, Origin.PRIVACY) and claimed:
                as_claimed: dict = {}
                claimed_class = self.classify(h) if claimed is Origin.NETMAKER else None
                self._forbid_by_origin(as_claimed, claimed, claimed_class, h)
                for point, rules in as_claimed.items():
                    first = next(iter(rules.values()))
                    _forbid(forbidden, [point], "N8", f"{forged}; as the {claimed} it claims "
                            f"to be: {first}")
            else:
                _forbid(forbidden, self.points, "N8", f"{forged}, from outside")
        required = []
        for r in (() if forged else self._required(origin, classification, packet)):
            # a delivery some rule forbids is no option (warp's ARP is not answered
            # back into warp: N2)
            options = tuple(d for d in r.any_of if d.point not in forbidden)
            required.append(Required(r.rule, r.why, options))
        required = tuple(required)
        return Verdict(origin, classification, forged,
                       {point: tuple(rules.values()) for point, rules in forbidden.items()},
                       required)

    # --- N1-N5 and W1's "only it", by origin ---------------------------------------

    def _forbid_by_origin(self, out: dict, origin: Origin, classification,
                          h: Mapping) -> None:
        mesh_points, vmbr0_points = self._on[self.mesh], self._on[self.vmbr0]
        mesh_link, vmbr0_link = self.link[self.mesh], self.link[self.vmbr0]
        # Where the host routes an IPv4 packet an adapter hands it.
        dst = h.get("nw_dst") if h.get("dl_type") == ETH_IP else None

        if origin is Origin.MANAGEMENT:
            _forbid(out, [mesh_link] + vmbr0_points, "N1",
                    "a management container's traffic reaches vmbr0")
            if _in(dst, self.privacy_subnet):
                _forbid(out, [self.netmaker], "N1",
                        "hands the host a packet for the privacy subnet")

        elif origin is Origin.NETMAKER and classification is Classification.PRIVACY:
            _forbid(out, self.management, "N3", "privacy traffic reaches a management port")
            _forbid(out, [self.netmaker], "N3", "privacy traffic leaves by Netmaker, not warp")
            _forbid(out, [p for p in vmbr0_points if p != self.xray], "W1",
                    "privacy ingress reaches the xray client and only it")

        elif origin is Origin.NETMAKER:
            _forbid(out, [mesh_link] + vmbr0_points, "N4",
                    f"{classification} Netmaker ingress reaches vmbr0")
            if _in(dst, self.privacy_subnet):
                _forbid(out, [self.netmaker], "N4", f"{classification} Netmaker ingress "
                        "handed back to the host for the privacy subnet")

        elif origin is Origin.WARP:
            _forbid(out, [p for p in self.points if p not in self.privacy_containers], "N2",
                    "warp ingress reaches something other than a privacy container")

        elif origin in (Origin.XRAY, Origin.PRIVACY):
            _forbid(out, self.management, "N5", "a privacy container reaches a management port")
            if origin is Origin.PRIVACY:
                _forbid(out, [vmbr0_link] + mesh_points, "N5", "a privacy container other "
                        "than the xray client reaches the inter-bridge link")
            elif self._is_reply_to_netmaker_side(h):
                _forbid(out, [p for p in mesh_points if p != self.netmaker], "N3",
                        "the xray client's replies cross only to go out to Netmaker")
            else:
                _forbid(out, [vmbr0_link] + mesh_points, "N5", "the xray client crosses the "
                        "inter-bridge link with something other than a reply to a "
                        "Netmaker-side peer")
            if _in(dst, self.management_subnet):
                _forbid(out, [self.warp], "N5",
                        "hands the host a packet for the management subnet")
            elif _in(dst, self.netmaker_side):
                _forbid(out, [self.warp], "N3", "hands the host a packet for the Netmaker "
                        "side: it would leave by Netmaker, not warp")

        elif origin is Origin.FROM_VMBR0:
            if self._is_reply_to_netmaker_side(h):
                _forbid(out, self.management, "N5", "privacy traffic reaches a management port")
                _forbid(out, [p for p in self.points if p != self.netmaker], "N3",
                        "the xray client's replies go out to Netmaker and nowhere else")
            else:
                _forbid(out, self.points, "N5", "only the xray client's replies to "
                        "Netmaker-side peers may come across from the privacy bridge")

        elif origin is Origin.FROM_MESH:
            _forbid(out, self.management + [self.netmaker], "N3",
                    "privacy traffic goes back to mesh")
            _forbid(out, [p for p in self.points if p != self.xray], "W1", "what comes "
                    "across from mesh is privacy ingress: the xray client and only it")

    def internet(self, address: str) -> bool:
        """Neither the host's, nor Netmaker's, nor private, reserved, multicast."""
        return not _in(address, self.not_internet)

    def _is_reply_to_netmaker_side(self, h: Mapping) -> bool:
        """The xray client answering a Netmaker-side peer's privacy connection to
        its service: the one thing N5 lets it send across the link."""
        if h.get("dl_type") != ETH_IP or h.get("nw_src") != self.xray_address:
            return False
        proto = h.get("nw_proto")
        ports = (h.get("tp_src", 0), h.get("tp_dst", 0)) if proto in (6, 17) else (0, 0)
        opened = (h.get("nw_dst"), h.get("nw_src"), proto, ports[1], ports[0])
        return (_in(h.get("nw_dst"), self.netmaker_side) and opened in self.privacy_connections
                and any(_PROTO[s.protocol] == proto and ports[0] == s.port
                        for s in self.xray_services))

    # --- N6 -------------------------------------------------------------------------------

    def flooding(self, h: Mapping) -> Optional[str]:
        """Why this frame is broadcast, multicast or unknown unicast, or None."""
        dl_dst = h.get("dl_dst", "").lower()
        if dl_dst == BROADCAST_MAC:
            return "broadcast"
        if int(dl_dst.split(":")[0], 16) & 1:
            return "multicast"
        if h.get("dl_type") == ETH_IP:
            dst = h.get("nw_dst")
            if dst in self.broadcasts:
                return "IPv4 broadcast"
            if _address(dst).is_multicast:
                return "IPv4 multicast"
        if dl_dst not in self.known_macs:
            return UNKNOWN_UNICAST
        return None

    def _forbid_flooding(self, out: dict, origin: Origin, bridge: str, h: Mapping) -> None:
        kind = self.flooding(h)
        if kind is None:
            return
        if origin in (Origin.FROM_VMBR0, Origin.FROM_MESH):
            # Broadcast and multicast are plain to see on arrival, so the
            # receiving bridge must stop them too. Whether a unicast MAC is
            # unknown is the sending bridge's call: its hosts are not this one's.
            if kind == UNKNOWN_UNICAST:
                return
            points, why = self.points, f"{kind} arrived over the inter-bridge link"
        else:
            other = self.vmbr0 if bridge == self.mesh else self.mesh
            points, why = [self.link[bridge]] + self._on[other], f"{kind} crosses the link"
        _forbid(out, points, "N6", why)

    # --- N8 -------------------------------------------------------------------------------

    def _forged(self, origin: Origin, ingress: Point, h: Mapping) -> Optional[str]:
        """Why the source address is forged, or None."""
        src = _source(h)
        if src is None or not _in(src, self.management_subnet + self.privacy_subnet):
            return None
        if origin in (Origin.MANAGEMENT, Origin.XRAY, Origin.PRIVACY):
            own = self._ports[ingress].container.address
            if src == str(own):
                return None
        elif origin is Origin.NETMAKER and self._owner.get(src) == self.netmaker:
            return None
        elif origin is Origin.WARP and self._owner.get(src) == self.warp:
            return None
        elif origin is Origin.FROM_VMBR0 and _in(src, self.privacy_subnet):
            return None  # the privacy side's own addresses; N5 judges the rest
        owner = self._owner.get(src)
        whose = f"{owner[0]}/{owner[1]}'s" if owner else "an unassigned local"
        return f"{origin} claims {whose} address {src}"

    def _owner_origin(self, src: Optional[str]) -> Optional[Origin]:
        owner = self._owner.get(src)
        if owner is not None:
            return self.origin(*owner)
        if _in(src, self.management_subnet):
            return Origin.MANAGEMENT
        if _in(src, self.privacy_subnet):
            return Origin.PRIVACY
        return None

    # --- W1-W6: where a legitimate packet must arrive --------------------------------------

    def _legitimate_sender(self, origin: Origin, ingress: Point, h: Mapping) -> bool:
        """dl_src (and the ARP sender) are the sender's own, the source is its own."""
        src, dl_src = _source(h), h.get("dl_src")
        if h.get("dl_type") == ETH_ARP and h.get("arp_sha") != dl_src:
            return False
        if origin in (Origin.MANAGEMENT, Origin.XRAY, Origin.PRIVACY):
            return dl_src == self._mac[ingress]
        if origin is Origin.NETMAKER and ingress == self.netmaker:
            return dl_src == self._mac[self.netmaker]
        if origin is Origin.WARP and ingress == self.warp:
            return dl_src == self._mac[self.warp]
        if origin is Origin.FROM_VMBR0:
            return dl_src == self.xray_mac and src == self.xray_address
        if origin is Origin.FROM_MESH and self.netmaker is not None:
            return dl_src == self._mac[self.netmaker] and _in(src, self.netmaker_ranges)
        return False

    def _required(self, origin: Origin, classification, packet: Packet):
        h, ingress = packet.headers, packet.ingress
        if not self._legitimate_sender(origin, ingress, h):
            return
        if h.get("dl_type") == ETH_ARP:
            yield from self._required_arp(ingress, h)
            return
        if h.get("dl_type") != ETH_IP or self.flooding(h):
            return
        src, dst, dl_dst = h["nw_src"], h["nw_dst"], h["dl_dst"]
        to_host = self._owner.get(dst)
        to_host_mac = self._mac.get(to_host)
        warp_mac, netmaker_mac = self._mac.get(self.warp), self._mac.get(self.netmaker)
        internet = self.internet(dst)

        def required(rule, why, point, **headers):
            if point is not None:
                yield Required(rule, why, (Delivery(point, tuple(sorted(headers.items()))),))

        to_xray_service = dst == self.xray_address and dl_dst == self.xray_mac and any(
            _PROTO[s.protocol] == h["nw_proto"] and h.get("tp_dst") == s.port
            for s in self.xray_services)
        if (classification is Classification.PRIVACY and to_xray_service
                and _in(src, self.netmaker_ranges)):
            yield from required("W1", "privacy ingress reaches the xray client", self.xray,
                                dl_dst=self.xray_mac)
        if (classification is Classification.MANAGEMENT and to_host in self.management
                and dl_dst == to_host_mac):
            yield from required("W5", "management ingress reaches its container", to_host)
        if origin is Origin.MANAGEMENT:
            if to_host in self.management and dl_dst == to_host_mac:
                yield from required("W5", "management containers reach each other", to_host)
            if _in(dst, self.netmaker_side) and dl_dst == netmaker_mac:
                yield from required("W5", "management containers reach Netmaker",
                                    self.netmaker)
        if origin in (Origin.XRAY, Origin.PRIVACY) and internet and dl_dst == warp_mac:
            yield from required("W2" if origin is Origin.XRAY else "W4",
                                "a privacy container reaches the internet through warp",
                                self.warp)
        if origin is Origin.WARP and self.internet(src) and to_host in self.privacy_containers \
                and dl_dst == to_host_mac:
            yield from required("W2" if to_host == self.xray else "W4",
                                "warp's replies come back", to_host)
        if (origin in (Origin.XRAY, Origin.FROM_VMBR0) and _in(dst, self.netmaker_ranges)
                and self._is_reply_to_netmaker_side(h) and dl_dst == warp_mac):
            yield from required("W3", "the xray client's replies go out to Netmaker",
                                self.netmaker, dl_dst=netmaker_mac)

    def _resolutions(self) -> list:
        """(who asks, whose address) for every ARP resolution W1-W5 need."""
        pairs = [(a, b) for a in self.management for b in self.management if a != b]
        if self.netmaker is not None:
            pairs += [(m, self.netmaker) for m in self.management]
            pairs += [(self.netmaker, m) for m in self.management]
            if self.privacy_classified:
                pairs.append((self.netmaker, self.xray))  # answered on mesh (W1)
        if self.warp is not None:
            pairs += [(p, self.warp) for p in self.privacy_containers]
            pairs += [(self.warp, p) for p in self.privacy_containers]
        return pairs

    def _required_arp(self, ingress: Point, h: Mapping):
        """W6: a request W1-W5 need is delivered to the owner of the address (or,
        across bridges, answered on the way in with the owner's MAC); its reply
        is delivered to whoever asked."""
        if self._owner.get(h["arp_spa"]) != ingress:
            return
        target = self._owner.get(h["arp_tpa"])
        if h["arp_op"] == ARP_REQUEST and (ingress, target) in self.resolutions:
            answer = Delivery(ingress, tuple(sorted({
                "arp_op": ARP_REPLY, "arp_spa": h["arp_tpa"], "arp_sha": self._mac[target],
                "dl_src": self._mac[target], "dl_dst": h["arp_sha"],
                "arp_tpa": h["arp_spa"], "arp_tha": h["arp_sha"]}.items())))
            options = (Delivery(target), answer) if target[0] == ingress[0] else (answer,)
            yield Required("W6", f"who-has {h['arp_tpa']} is answered", options)
        if (h["arp_op"] == ARP_REPLY and (target, ingress) in self.resolutions
                and h["dl_dst"] == self._mac[target] and target[0] == ingress[0]):
            yield Required("W6", f"the is-at for {h['arp_tpa']} reaches whoever asked",
                           (Delivery(target),))


_PROTO = {"tcp": 6, "udp": 17}


def _forbid(out: dict, points, rule: str, why: str) -> None:
    """Add `rule` to the rules that forbid each point (once per rule)."""
    for point in points:
        if point is not None:
            rules = out.setdefault(point, {})
            if rule not in rules:
                rules[rule] = Forbidden(point, rule, why)


def _first(items):
    return items[0] if items else None


def _source(h: Mapping) -> Optional[str]:
    if h.get("dl_type") == ETH_IP:
        return h.get("nw_src")
    if h.get("dl_type") == ETH_ARP:
        return h.get("arp_spa")
    return None


def _destination(h: Mapping) -> Optional[str]:
    if h.get("dl_type") == ETH_IP:
        return h.get("nw_dst")
    if h.get("dl_type") == ETH_ARP:
        return h.get("arp_tpa")
    return None


def _in(address: Optional[str], networks) -> bool:
    return address is not None and any(_address(address) in n for n in networks)


@functools.lru_cache(maxsize=None)
def _address(text: str):
    return ipaddress.ip_address(text)
