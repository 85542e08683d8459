"""What a host has now, as far as the host plan cares: the observed state values.

Owns the snapshot `topology.host.plan.plan` reads and `topology.host.apply.read_state`
fills in: Open vSwitch's bridges, interfaces and controllers, the kernel's links, the
routes in socketnet's tables and the rules into them, the sysctls, socketnet's
nftables tables and the conntrack zones' timeout policies. `Route` and `Rule` are
also what the plan wants: one value for both sides, so the two compare.

    HostState()   an empty snapshot: a fresh host
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from netaddr import IPNetwork

from topology.model import Kind


@dataclass(frozen=True)
class OvsController:
    uuid: str
    target: str
    connection_mode: Optional[str] = None


@dataclass(frozen=True)
class OvsBridge:
    name: str
    datapath_type: str = ""  # "" is what OVS stores for the default, "system"
    fail_mode: str = ""
    protocols: tuple = ()
    other_config: Mapping[str, str] = field(default_factory=dict, hash=False)
    controllers: tuple = ()  # of OvsController
    ports: tuple = ()  # port names, the bridge's own LOCAL port included


@dataclass(frozen=True)
class OvsInterface:
    name: str
    type: str = ""  # "" = system
    ofport_request: Optional[int] = None
    mac: Optional[str] = None  # the requested MAC (Interface.mac), not mac_in_use
    ofport: Optional[int] = None  # the number it got (None: unknown)


@dataclass(frozen=True)
class Link:
    """A kernel network interface of the host's netns."""
    name: str
    kind: Kind = Kind.L2
    up: bool = False
    addresses: tuple = ()  # of IPNetwork (IPv4, with prefix)
    link_type: str = ""  # IFLA_INFO_KIND: veth, wireguard, tun, openvswitch, ...
    peer: Optional[str] = None  # a veth's other end, when in the same netns


@dataclass(frozen=True)
class Route:
    table: int
    dst: IPNetwork
    type: str = "unicast"  # or "prohibit"
    dev: Optional[str] = None

    def spec(self) -> list:
        words = [] if self.type == "unicast" else [self.type]
        words.append(str(self.dst))
        if self.dev:
            words += ["dev", self.dev]
        return words + ["table", str(self.table)]


@dataclass(frozen=True)
class Rule:
    """`ip rule`: what enters from `iif` looks up `table`; with table None it is
    prohibited (the catch-all behind a table whose routes do not cover everything)."""
    priority: int
    iif: str
    table: Optional[int] = None

    def spec(self) -> list:
        action = ["prohibit"] if self.table is None else ["lookup", str(self.table)]
        return ["priority", str(self.priority), "iif", self.iif, *action]


@dataclass(frozen=True)
class NftState:
    """What socketnet's nftables tables hold: the plan digest in the first rule's
    comment, and how many rules they have together (None: no tables)."""
    digest: Optional[str]
    rules: int


@dataclass(frozen=True)
class HostState:
    """A snapshot of the host, as far as the plan cares. Empty: a fresh host."""
    bridges: Mapping[str, OvsBridge] = field(default_factory=dict)
    interfaces: Mapping[str, OvsInterface] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)
    routes: tuple = ()  # of Route, in socketnet's tables
    rules: tuple = ()  # of Rule, IPv4
    sysctls: Mapping[str, str] = field(default_factory=dict)
    nft: Optional[NftState] = None
    foreign_routes: tuple = ()  # of Route through an uplink outside socketnet's tables
    # datapath type -> {conntrack zone -> {timeout key: seconds}}; a type missing has
    # no Datapath record in OVSDB (timeout policies need one)
    zone_policies: Mapping[str, Mapping[int, Mapping[str, int]]] = field(default_factory=dict)

    def bridge_of(self, port: str) -> Optional[str]:
        for b in self.bridges.values():
            if port in b.ports and port != b.name:
                return b.name
        return None

    def is_up(self, name: str) -> bool:
        """A link of that name exists and is up."""
        link = self.links.get(name)
        return link is not None and link.up
