"""The host as socketnet understands it: bridges, their ports with roles, containers.

Built from a validated config by `topology.config.load_host`; read by the pipeline
compiler, the CLI and the lab. Every value here is immutable; port numbers and
learned MAC addresses are not here, they come from the switch at run time.

Words follow the seed: the *mesh* bridge carries the *netmaker uplink*, management
containers and one end of the *inter-bridge link*; the *privacy* bridge (vmbr0)
carries the other end, the *xray client*, other privacy containers
and the *warp uplink*. `Classification` holds how table 1 decides Netmaker
ingress it has no flow for (the decisions themselves: `controller.classifier`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from netaddr import IPAddress, IPNetwork, IPSet


class Role(str, enum.Enum):
    NETMAKER_UPLINK = "netmaker-uplink"
    MANAGEMENT = "management"
    INTER_BRIDGE = "inter-bridge"
    XRAY_CLIENT = "xray-client"
    PRIVACY_CONTAINER = "privacy-container"
    WARP_UPLINK = "warp-uplink"

    def __str__(self) -> str:
        return self.value


class Kind(str, enum.Enum):
    """Layer of the interface behind a port: `l2` has Ethernet, `l3` (WireGuard,
    tun) does not and reaches its bridge through a routed adapter port."""
    L2 = "l2"
    L3 = "l3"

    def __str__(self) -> str:
        return self.value


UPLINK_ROLES = (Role.NETMAKER_UPLINK, Role.WARP_UPLINK)


@dataclass(frozen=True)
class Service:
    name: str
    protocol: str  # "tcp" or "udp"
    port: int


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    veth: str
    bridge: str
    address: IPAddress
    network: IPNetwork  # the container's subnet (address with its prefix)
    gateway: Optional[IPAddress]
    mac: str
    services: tuple = ()


@dataclass(frozen=True)
class Port:
    """One port of a bridge, by the name Open vSwitch knows it under.

    For an l3 uplink, `name` is the adapter port on the bridge and `interface`
    is the seed's WireGuard interface behind it; for everything else they are
    the same. `address` is the adapter's address (the containers' gateway).
    """
    name: str
    bridge: str
    role: Role
    kind: Kind = Kind.L2
    interface: str = ""
    container: Optional[Container] = None
    peer: Optional[str] = None  # inter-bridge: the port at the other end
    address: Optional[IPNetwork] = None
    mac: Optional[str] = None  # configured MAC; None = learn from the switch

    @property
    def adapter(self) -> bool:
        return self.kind is Kind.L3 and self.name != self.interface


@dataclass(frozen=True)
class Bridge:
    name: str
    ports: tuple  # of Port, in config order
    seed_flows: tuple = ()  # of topology.seedflows.SeedFlow

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise KeyError(name)

    def with_role(self, role: Role) -> tuple:
        return tuple(p for p in self.ports if p.role is role)

    def one(self, role: Role) -> Port:
        (p,) = self.with_role(role)
        return p

    @property
    def containers(self) -> tuple:
        return tuple(p.container for p in self.ports if p.container is not None)


@dataclass(frozen=True)
class Node:
    """Another socketnet host reached over Netmaker, and the subnets behind it."""
    name: str
    subnets: tuple  # of IPNetwork


@dataclass(frozen=True)
class Settings:
    """What the seed does not say: the `socketnet:` section, with defaults."""
    ofp_listen_host: str = "127.0.0.1"
    ofp_listen_port: int = 6653
    echo_interval: float = 2.0
    echo_misses: int = 3
    reconcile_timeout: float = 10.0
    role: str = "primary"  # or "standby": takes over only while `peer` is gone
    peer: Optional[tuple] = None  # (host, port): the other instance's OpenFlow listener
    metrics_listen_host: str = "127.0.0.1"
    metrics_listen_port: int = 9640
    stats_interval: float = 10.0  # seconds between flow/port/table stats polls
    rest_listen_host: str = "127.0.0.1"
    rest_listen_port: int = 9641
    rest_token_env: str = "SOCKETNET_TOKEN"  # environment variable holding the bearer token
    rest_token_file: Optional[str] = None  # or a file holding it (first line)
    rest_open_reads: bool = False  # read endpoints without the token
    rest_ovs_ctl: Optional[str] = None  # ovs-vswitchd's control socket (trace, audit)


class TrafficClass(str, enum.Enum):
    """What a classified Netmaker ingress flow is: table 1 tags it with the
    PRIVACY_INGRESS or MANAGEMENT zone, or drops it."""
    PRIVACY = "privacy"
    MANAGEMENT = "management"
    DROP = "drop"

    def __str__(self) -> str:
        return self.value


RULE_PROTOCOLS = ("tcp", "udp", "icmp", "any")

# The names socketnet gives its own decisions; no rule of the config may take them.
DEFAULT_RULE = "default"  # no rule and no service decided
UNROUTABLE_RULE = "unroutable"  # a rule decided a class the destination cannot have
SERVICE_RULE_PREFIX = "service:"  # a rule the seed's services imply


@dataclass(frozen=True)
class ClassRule:
    """One rule of `socketnet.classification.rules`, or one the seed's services imply.

    `src`/`dst` None matches any address; empty port tuples match any port.
    Ports are (low, high) pairs, inclusive, and only with tcp or udp.
    """
    name: str
    cls: TrafficClass
    src: Optional[IPSet] = field(default=None, hash=False)  # IPSet is unhashable
    dst: Optional[IPSet] = field(default=None, hash=False)
    protocol: str = "any"  # one of RULE_PROTOCOLS
    src_ports: tuple = ()  # of (low, high)
    dst_ports: tuple = ()


@dataclass(frozen=True)
class ClassificationLimits:
    """How much of the switch and the controller reactive classification may use."""
    cached_total: int = 100_000  # connections in the mesh's conntrack zone (its limit)
    cached_per_source: int = 1000  # decisions for one source address, live at a time
    packet_in_rate: int = 1000  # packets/s the meter lets through to the controller
    packet_in_burst: int = 200  # packets the meter lets through above the rate
    over_limit_action: str = "drop"  # what a source over its cap gets
    over_limit_seconds: int = 30  # for how long (a hard timeout in the switch)
    # The host's nftables, before the mesh adapter: new Netmaker-ingress flows
    # a second, known sources and the others each (a lane of their own), and
    # what one other source may open; 0 turns that limit off.
    ingress_rate: int = 2_000
    ingress_per_source: int = 200
    # WireGuard datagrams a second one Netmaker peer (its endpoint) may send to
    # the uplink's port (ingress_wireguard_port), before they are decrypted: one
    # flooding peer cannot take the WireGuard receiver from the others. 0: off.
    ingress_peer_rate: int = 100_000
    ingress_wireguard_port: int = 51821
    # Cached decisions of sources that are not known (Host.known_sources): a
    # flood's share of the switch (controller.classifier.DecisionCache).
    cached_unknown: int = 20_000


@dataclass(frozen=True)
class Classification:
    """`socketnet.classification`: how table 1 decides Netmaker ingress it has
    no flow for. First match wins: `rules`, then (with `seed_services`) the
    services of the xray client (privacy) and of the management containers
    (management), then `default`."""
    default: TrafficClass = TrafficClass.DROP
    idle_timeout: int = 60  # seconds a connection lives without traffic, >= 1
    conntrack_zone: int = 21326  # the mesh's connection-tracker zone (0x534e, "SN")
    seed_services: bool = True
    rules: tuple = ()  # of ClassRule, in config order
    limits: ClassificationLimits = field(default_factory=ClassificationLimits)


# Destinations privacy traffic may never be sent to through warp (besides the
# host's own subnets): the private, shared, loopback, link-local, multicast and
# reserved ranges. Traffic to them has no business on the privacy exit.
DEFAULT_PRIVACY_BLOCKED = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)
DEFAULT_NETMAKER_RANGES = ("10.101.0.0/16", "100.64.0.0/10")


@dataclass(frozen=True)
class Host:
    source: str  # the file it came from
    mesh: Bridge  # the bridge of the Netmaker uplink
    privacy_bridge: Bridge  # the bridge of the warp uplink (vmbr0 in the seed)
    netmaker_ranges: tuple  # of IPNetwork: where Netmaker peers live
    nodes: tuple = ()  # of Node
    privacy_blocked: tuple = ()  # of IPNetwork
    settings: Settings = field(default_factory=Settings)
    ignored: tuple = ()  # (name, why) of interfaces socketnet does not manage
    classification: Classification = field(default_factory=Classification)

    @property
    def bridges(self) -> tuple:
        return (self.mesh, self.privacy_bridge)

    def bridge(self, name: str) -> Bridge:
        for b in self.bridges:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def management_subnet(self) -> IPSet:
        return IPSet(c.network.cidr for c in self.mesh.containers)

    @property
    def privacy_subnet(self) -> IPSet:
        return IPSet(c.network.cidr for c in self.privacy_bridge.containers)

    @property
    def netmaker_side(self) -> IPSet:
        """Destinations management traffic may reach over Netmaker: the Netmaker
        ranges and the other nodes' subnets."""
        nets = list(self.netmaker_ranges)
        for node in self.nodes:
            nets.extend(node.subnets)
        return IPSet(nets)

    @property
    def inter_bridge_links(self) -> dict:
        """{(bridge, port): (bridge, port)} both ways along the inter-bridge link."""
        owner = {p.name: b.name for b in self.bridges for p in b.ports}
        return {(b.name, p.name): (owner[p.peer], p.peer) for b in self.bridges
                for p in b.with_role(Role.INTER_BRIDGE) if p.peer in owner}

    @property
    def privacy_exit_blocked(self) -> IPSet:
        """Destinations privacy traffic may never reach through warp: the blocked
        ranges and the host's own side (both subnets, Netmaker, other nodes). The
        one set routing, nftables and the pipeline all refuse."""
        return IPSet(self.privacy_blocked) | self.privacy_subnet | self.management_subnet \
            | self.netmaker_side

    @property
    def known_sources(self) -> IPSet:
        """Netmaker-side sources the config names: other nodes' subnets and the
        sources of privacy and management rules. Their new flows have a lane of
        their own, in the host's ingress policing and in front of the controller."""
        known = IPSet()
        for node in self.nodes:
            known.update(IPSet(node.subnets))
        for rule in self.classification.rules:
            if rule.src is not None and rule.cls is not TrafficClass.DROP:
                known.update(rule.src)
        return known

    @property
    def xray_client(self) -> Port:
        return self.privacy_bridge.one(Role.XRAY_CLIENT)


def host_document(host: Host) -> dict:
    """The host as socketnet understood it, as JSON-ready data (`socketnet
    topology --json`, the REST API's config)."""
    def port(p):
        doc = {"name": p.name, "role": str(p.role), "kind": str(p.kind)}
        if p.interface and p.interface != p.name:
            doc["interface"] = p.interface
        if p.address is not None:
            doc["address"] = str(p.address)
        if p.peer:
            doc["peer"] = p.peer
        if p.container is not None:
            c = p.container
            doc["container"] = {"id": c.id, "name": c.name, "address": str(c.network),
                                "mac": c.mac,
                                "services": [f"{s.protocol}/{s.port} ({s.name})"
                                             for s in c.services]}
        return doc

    return {
        "source": host.source,
        "bridges": [{"name": b.name,
                     "network": "mesh" if b is host.mesh else "privacy",
                     "ports": [port(p) for p in b.ports]} for b in host.bridges],
        "netmaker_ranges": [str(n) for n in host.netmaker_ranges],
        "nodes": [{"name": n.name, "subnets": [str(s) for s in n.subnets]} for n in host.nodes],
        "ignored": [{"name": name, "why": why} for name, why in host.ignored],
    }
