"""The host plan: what a real host must be for the config, as a list of commands.

Owns, purely (no I/O), turning a `topology.model.Host` and a snapshot of what the
host has now (`HostState`, read by `topology.host_apply.read_state`) into the
actions that make the host match the config, and the findings a human must see.
An empty `HostState()` is a fresh host; a state that already matches gives an
empty plan, which is what makes `socketnet host apply` idempotent.

What the host gets (the routed design: the WireGuard interfaces stay outside the bridges):

- both bridges: `datapath_type` (an argument: "system" on a host, "netdev" in a
  lab), `fail_mode=secure`, `protocols=OpenFlow13`, `other-config:disable-in-band=true`,
  and the controller target with `connection-mode=out-of-band`, set once: a bridge
  with no controller gets it in one transaction; a bridge that has it is only
  corrected; a bridge with someone else's gets ours added (1 -> 2 does not flush
  the flows, 0 <-> 1 does). Nothing here ever removes a controller.
- each bridge's conntrack zone (the mesh's `classification.conntrack_zone`, vmbr0
  the next) with a timeout policy of `idle_timeout` (`ovs-vsctl add-zone-tp`, on
  the datapath type's Datapath record, made if missing);
- the inter-bridge link (a veth pair, IPv6 off, up) and its two ends on the bridges;
- for each l3 uplink (WireGuard), its adapter: an OVS internal port with its
  address (the containers' gateway), up; an l2 uplink is a plain port;
- `ofport_request` = the port's place in `Bridge.ports` (from 1), as in the lab;
- the routed glue, one routing table per incoming interface, each ending in
  `prohibit`, with an `ip rule iif IF lookup T` and behind it `ip rule iif IF
  prohibit` (a table that loses its routes, warp0 gone, never falls through to
  the main table):
      iif <netmaker uplink>   the xray client /32 and the management subnet -> mesh adapter
      iif <mesh adapter>      the Netmaker ranges and nodes' subnets -> netmaker uplink
      iif <privacy adapter>   blocked ranges and the host's subnets prohibited,
                              default -> warp uplink
      iif <warp uplink>       the privacy subnet -> privacy adapter
- the nftables tables `inet socketnet` and `arp socketnet` (`nft_script`): forward
  policy drop for what touches socketnet's interfaces with an allow-list (W1 to
  the xray client's services only, W5 both ways, privacy -> warp, established
  replies), MSS clamp, SNAT out of warp to the WARP address, an input rule
  dropping packets for a local address of another interface (Linux's weak host
  model), the host's IP stack kept off the switch ports, and Netmaker ingress
  policed before the mesh adapter (`limits.ingress_rate`, `ingress_per_source`:
  known sources in a lane of their own) when the Netmaker uplink is routed
  through the adapter;
- `net.ipv4.ip_forward=1`, last: nothing is forwarded before the filter is there.

Order of the actions: the safe parts first (an enslaved l3 interface released, the
filter, `fail_mode=secure` on the bridges), forwarding last; routes are added to a
table after its `prohibit`, rules after their table, so every step fails closed.

API
---
    plan(host, state, datapath_type="system", warp_address="172.16.0.2",
         controller=None, ids=RoutingIds()) -> HostPlan
    HostPlan.actions (each prints as its exact command: str(action)),
            .findings, .script() (a shell script of the whole plan), .errors
    HostState and its parts: the snapshot `plan` reads
    nft_script(host, warp_address) -> (script, digest)
    sysctl_keys(host), RoutingIds.tables: what `read_state` must read
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

from controller.compiler import conntrack_zone
from controller.conntrack import timeout_policy

from netaddr import IPNetwork, IPSet

from topology.model import UPLINK_ROLES, Host, Kind, Port, Role

DEFAULT_WARP_ADDRESS = "172.16.0.2"
DATAPATH_TYPES = ("system", "netdev")
NFT_TABLES = (("inet", "socketnet"), ("arp", "socketnet"))
NFT_DIGEST_PREFIX = "socketnet plan "
IP_FORWARD = "net.ipv4.ip_forward"
OUT_OF_BAND = "out-of-band"
OPENFLOW13 = "OpenFlow13"


# --------------------------------------------------------------------------- ids


@dataclass(frozen=True)
class RoutingIds:
    """The routing tables and rule priorities socketnet owns: `base`+1..+4, in the
    order netmaker uplink, mesh adapter, privacy adapter, warp uplink. A table's
    lookup rule has the table's number as priority (below main's 32766); its
    prohibit rule, right behind it, that number + 10."""
    base: int = 5300

    @property
    def tables(self) -> tuple:
        return tuple(self.base + i for i in range(1, 5))

    @property
    def prohibit_priorities(self) -> tuple:
        return tuple(t + 10 for t in self.tables)

    def netmaker_in(self) -> int:
        return self.base + 1

    def mesh_adapter_in(self) -> int:
        return self.base + 2

    def privacy_adapter_in(self) -> int:
        return self.base + 3

    def warp_in(self) -> int:
        return self.base + 4


# --------------------------------------------------------------------------- state


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


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    """One change to the host. `str()` is the exact command it corresponds to;
    `why` is printed above it in a script and not part of its identity."""
    why: str = field(default="", compare=False, kw_only=True)

    def argv(self) -> list:
        raise NotImplementedError

    def __str__(self) -> str:
        return shlex.join(self.argv())


@dataclass(frozen=True)
class Vsctl(Action):
    args: tuple

    def argv(self) -> list:
        return ["ovs-vsctl", *self.args]


@dataclass(frozen=True)
class AddVeth(Action):
    name: str
    peer: str

    def argv(self) -> list:
        return ["ip", "link", "add", self.name, "type", "veth", "peer", "name", self.peer]


@dataclass(frozen=True)
class LinkUp(Action):
    name: str

    def argv(self) -> list:
        return ["ip", "link", "set", "dev", self.name, "up"]


@dataclass(frozen=True)
class AddAddress(Action):
    dev: str
    address: IPNetwork

    def argv(self) -> list:
        return ["ip", "address", "add", str(self.address), "dev", self.dev]


@dataclass(frozen=True)
class AddRoute(Action):
    route: Route

    def argv(self) -> list:
        return ["ip", "route", "add", *self.route.spec()]


@dataclass(frozen=True)
class DelRoute(Action):
    route: Route

    def argv(self) -> list:
        return ["ip", "route", "del", *self.route.spec()]


@dataclass(frozen=True)
class ReplaceRoute(Action):
    route: Route

    def argv(self) -> list:
        return ["ip", "route", "replace", *self.route.spec()]


@dataclass(frozen=True)
class AddRule(Action):
    rule: Rule

    def argv(self) -> list:
        return ["ip", "rule", "add", *self.rule.spec()]


@dataclass(frozen=True)
class DelRule(Action):
    rule: Rule

    def argv(self) -> list:
        return ["ip", "rule", "del", *self.rule.spec()]


@dataclass(frozen=True)
class Sysctl(Action):
    key: str  # dotted, "net.ipv4.ip_forward"; interface names in it may hold dashes
    value: str

    def argv(self) -> list:
        return ["sysctl", "-w", f"{self.key}={self.value}"]


@dataclass(frozen=True)
class LoadNft(Action):
    """Replace the table atomically: `table X {}` makes sure it exists, so the
    `delete` always succeeds, and all three happen in one nft transaction."""
    script: str

    def argv(self) -> list:
        return ["nft", "-f", "-"]

    def __str__(self) -> str:
        return f"nft -f - <<'EOF'\n{self.script}EOF"


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Finding:
    """Something a human must know: `level` "error" (the host cannot carry the
    config as it is; fix it) or "warning"."""
    level: str
    subject: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.level}: {self.subject}: {self.message}"
        return text + (f"\n  fix: {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class HostPlan:
    actions: tuple = ()
    findings: tuple = ()

    @property
    def errors(self) -> tuple:
        return tuple(f for f in self.findings if f.level == "error")

    def commands(self) -> list:
        return [str(a) for a in self.actions]

    def script(self) -> str:
        """The plan as a shell script: each command, its reason as a comment above."""
        lines = []
        for action in self.actions:
            if action.why:
                lines.append(f"# {action.why}")
            lines.append(str(action))
        return "\n".join(lines) + ("\n" if lines else "")


def default_controller(host: Host) -> str:
    """The OpenFlow target the bridges connect to: socketnet's listen address, with a
    wildcard address replaced by loopback."""
    address = host.settings.ofp_listen_host or "127.0.0.1"
    if address in ("0.0.0.0", "*"):
        address = "127.0.0.1"
    elif address == "::":
        address = "::1"
    if ":" in address:
        address = f"[{address}]"
    return f"tcp:{address}:{host.settings.ofp_listen_port}"


def sysctl_keys(host: Host) -> tuple:
    """The sysctls the plan looks at: forwarding, and IPv6 on the inter-bridge veth."""
    return (IP_FORWARD, *(_ipv6_off_key(p.name) for p in _link_ports(host)))


def _ipv6_off_key(name: str) -> str:
    return f"net.ipv6.conf.{name}.disable_ipv6"


def _link_ports(host: Host) -> tuple:
    return tuple(p for b in host.bridges for p in b.with_role(Role.INTER_BRIDGE))


def _uplinks(host: Host) -> tuple:
    """(netmaker uplink port, warp uplink port), either None if the config has none."""
    def one(bridge, role):
        ports = bridge.with_role(role)
        return ports[0] if ports else None
    return one(host.mesh, Role.NETMAKER_UPLINK), one(host.privacy, Role.WARP_UPLINK)


def plan(host: Host, state: HostState, datapath_type: str = "system",
         warp_address: str = DEFAULT_WARP_ADDRESS, controller: Optional[str] = None,
         ids: RoutingIds = RoutingIds()) -> HostPlan:
    """The actions that make a host in `state` match `host`, and the findings."""
    if datapath_type not in DATAPATH_TYPES:
        raise ValueError(f"datapath_type {datapath_type!r}: one of {', '.join(DATAPATH_TYPES)}")
    p = _Planner(host, state, datapath_type, warp_address,
                 controller or default_controller(host), ids)
    p.release_enslaved()
    p.filter()
    p.bridges()
    p.conntrack()
    p.inter_bridge_link()
    p.ports()
    p.controllers()
    p.adapters()
    p.routing()
    p.forwarding()
    return HostPlan(tuple(p.actions), tuple(p.findings))


class _Planner:
    def __init__(self, host, state, datapath_type, warp_address, controller, ids):
        self.host = host
        self.state = state
        self.datapath_type = datapath_type
        self.warp_address = warp_address
        self.controller = controller
        self.ids = ids
        self.actions: list = []
        self.findings: list = []
        self.netmaker, self.warp = _uplinks(host)
        self.skipped_ports: set = set()  # ports not to add (a finding says why)

    def act(self, action: Action) -> None:
        self.actions.append(action)

    def find(self, level: str, subject: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(level, subject, message, fix))

    # -- l3 interfaces on a bridge ---------------------------------------------

    def release_enslaved(self) -> None:
        """An l3 interface enslaved on a bridge (the seed's wg-quick PostUp `ovs-vsctl
        add-port vmbr0 warp0`) cannot carry traffic there; take it off a managed
        bridge, and report it loudly: the PostUp puts it back on every restart."""
        managed = {b.name for b in self.host.bridges}
        configured_l3 = {p.interface: p for b in self.host.bridges for p in b.ports
                         if p.kind is Kind.L3}
        for bridge in self.state.bridges.values():
            for name in bridge.ports:
                if name == bridge.name:
                    continue
                link = self.state.links.get(name)
                interface = self.state.interfaces.get(name)
                if interface is not None and interface.type not in ("", "system"):
                    continue  # internal, patch, tunnel ports: OVS's own devices
                if name not in configured_l3 and (link is None or link.kind is not Kind.L3):
                    continue
                port = configured_l3.get(name)
                what = link.link_type if link is not None and link.link_type else "WireGuard"
                why = (f"{name} is a layer-3 interface ({what}, no Ethernet header) "
                       f"enslaved on bridge {bridge.name}: Open vSwitch accepts it and "
                       "cannot switch it (it reads the IP header as Ethernet, and refuses "
                       "to send Ethernet frames to it)")
                fix = (f"remove `ovs-vsctl add-port {bridge.name} {name}` (and its del-port) "
                       f"from the PostUp/PreDown of /etc/wireguard/{name}.conf (or whatever "
                       "enslaves it) and set `Table = off` there")
                if port is not None:
                    fix += (f"; socketnet reaches it through the adapter {port.name} on "
                            f"{port.bridge} with policy routing")
                if bridge.name in managed:
                    self.act(Vsctl(("--", "--if-exists", "del-port", bridge.name, name),
                                   why=f"release {name}: layer 3, cannot be switched"))
                    self.find("error", name, why + "; this plan takes it off the bridge, "
                              "which its PostUp undoes on the next restart", fix)
                else:
                    self.find("error", name, why + f"; {bridge.name} is not socketnet's "
                              "bridge: left alone", fix)

    # -- nftables ----------------------------------------------------------------

    def filter(self) -> None:
        script, digest = nft_script(self.host, self.warp_address)
        current = self.state.nft
        if current is None or current.digest != digest or current.rules != _rule_count(script):
            self.act(LoadNft(script, why="nftables: forward allow-list, Netmaker ingress "
                                         "policing, MSS clamp, SNAT to WARP, no weak-host "
                                         "access"))

    # -- bridges -----------------------------------------------------------------

    def bridges(self) -> None:
        wanted = {"datapath_type": self.datapath_type, "fail_mode": "secure",
                  "protocols": OPENFLOW13, "other-config:disable-in-band": "true"}
        for bridge in self.host.bridges:
            current = self.state.bridges.get(bridge.name)
            if current is None:
                self.act(Vsctl(("--", "add-br", bridge.name, "--", "set", "Bridge", bridge.name,
                                *(f"{k}={v}" for k, v in wanted.items())),
                               why=f"bridge {bridge.name}, secure, OpenFlow 1.3, no in-band"))
                continue
            have = {"datapath_type": current.datapath_type or "system",
                    "fail_mode": current.fail_mode,
                    "protocols": ",".join(current.protocols),
                    "other-config:disable-in-band": current.other_config.get(
                        "disable-in-band", "")}
            diff = [f"{k}={v}" for k, v in wanted.items() if have[k] != v]
            if have["datapath_type"] != self.datapath_type:
                self.find("warning", bridge.name,
                          f"datapath_type is {have['datapath_type']}, set to "
                          f"{self.datapath_type}: its ports are re-opened on the new datapath")
            if diff:
                self.act(Vsctl(("set", "Bridge", bridge.name, *diff),
                               why=f"bridge {bridge.name}: {', '.join(diff)}"))

    def conntrack(self) -> None:
        """Each bridge's conntrack zone gets the config's idle timeout as its
        timeout policy (Open vSwitch's own defaults keep an established TCP
        connection 24 h). Timeout policies live on a Datapath record."""
        dp = self.datapath_type
        policies = self.state.zone_policies.get(dp)
        if policies is None:
            self.act(Vsctl(("--", "--id=@dp", "create", "Datapath", "datapath_version=0", "--",
                            "set", "Open_vSwitch", ".", f"datapaths:{dp}=@dp"),
                           why=f"a Datapath record for {dp}: zone timeout policies live there"))
            policies = {}
        wanted = timeout_policy(self.host.classification)
        for bridge in self.host.bridges:
            zone = conntrack_zone(self.host, bridge)
            have = policies.get(zone)
            if have == wanted:
                continue
            add = ("add-zone-tp", dp, f"zone={zone}", *(f"{k}={v}" for k, v in wanted.items()))
            args = ("--", "del-zone-tp", dp, f"zone={zone}", "--", *add) if have else add
            self.act(Vsctl(args, why=f"zone {zone} ({bridge.name}): connections idle "
                                     f"{self.host.classification.idle_timeout}s end"))

    def controllers(self) -> None:
        for bridge in self.host.bridges:
            current = self.state.bridges.get(bridge.name)
            controllers = current.controllers if current else ()
            ours = [c for c in controllers if c.target == self.controller]
            ref = f"@ctl_{bridge.name.replace('-', '_').replace('.', '_')}"
            create = ("--", f"--id={ref}", "create", "Controller", f'target="{self.controller}"',
                      f"connection-mode={OUT_OF_BAND}")
            if not controllers:
                self.act(Vsctl((*create, "--", "set", "Bridge", bridge.name,
                                f"controller={ref}"),
                               why=f"bridge {bridge.name}: controller {self.controller}, "
                                   "out-of-band (set once: 0 -> 1 controllers flushes flows)"))
            elif not ours:
                others = ", ".join(c.target for c in controllers)
                self.find("warning", bridge.name,
                          f"has other controllers ({others}): socketnet's is added beside "
                          "them, not in their place (removing the last one would flush "
                          "the flows); they can install anything",
                          f"ovs-vsctl remove Bridge {bridge.name} controller UUID, once "
                          "socketnet is connected")
                self.act(Vsctl((*create, "--", "add", "Bridge", bridge.name, "controller", ref),
                               why=f"bridge {bridge.name}: add controller {self.controller}"))
            else:
                for c in ours:
                    if c.connection_mode != OUT_OF_BAND:
                        self.act(Vsctl(("set", "Controller", c.uuid,
                                        f"connection-mode={OUT_OF_BAND}"),
                                       why=f"bridge {bridge.name}: controller out-of-band "
                                           "(in-band adds hidden NORMAL flows)"))

    # -- links and ports -----------------------------------------------------------

    def inter_bridge_link(self) -> None:
        ends = _link_ports(self.host)
        if not ends:
            return
        end = ends[0]
        peer = end.peer or (ends[1].name if len(ends) > 1 else None)
        if peer is None:
            self.find("error", end.name, "inter-bridge port without a peer")
            return
        a, b = self.state.links.get(end.name), self.state.links.get(peer)
        if a is None and b is None:
            self.act(AddVeth(end.name, peer, why="the inter-bridge link"))
        else:
            for name, link, other in ((end.name, a, peer), (peer, b, end.name)):
                if link is None or link.link_type != "veth" or (
                        link.peer is not None and link.peer != other):
                    what = ("missing" if link is None else
                            f"a {link.link_type or 'non-veth'} link" if link.link_type != "veth"
                            else f"a veth paired with {link.peer}")
                    self.find("error", name,
                              f"inter-bridge end is {what}, not a veth paired with {other}",
                              f"ip link del {name}; then apply again")
                    self.skipped_ports.update((end.name, peer))
                    return
        for name in (end.name, peer):
            key = _ipv6_off_key(name)
            if self.state.sysctls.get(key) != "1":
                self.act(Sysctl(key, "1", why=f"{name} is a switch port: no IPv6 stack of its own"))
        for name in (end.name, peer):
            link = self.state.links.get(name)
            if link is None or not link.up:
                self.act(LinkUp(name, why=f"{name} up"))

    def ports(self) -> None:
        for bridge in self.host.bridges:
            for number, port in enumerate(bridge.ports, start=1):
                if port.container is not None or port.name in self.skipped_ports:
                    continue  # containers' veths: LXC adds them when it starts them
                if port.role in UPLINK_ROLES and not port.adapter:
                    if not self._l2_uplink_ok(port):
                        continue
                self._port(port, number)

    def _l2_uplink_ok(self, port: Port) -> bool:
        link = self.state.links.get(port.interface)
        if link is None:
            self.find("warning", port.interface,
                      f"l2 uplink does not exist yet: the port on {port.bridge} opens when it does")
        elif link.kind is Kind.L3:
            self.find("error", port.interface,
                      f"the config makes it l2 (enslaved on {port.bridge}) but the kernel "
                      "says layer 3 (no Ethernet header): Open vSwitch cannot switch it; "
                      "not enslaved",
                      f"drop `socketnet.ports.{port.interface}.kind: l2` (l3 is the default): "
                      "it then reaches the bridge through an adapter")
            return False
        return True

    def _port(self, port: Port, number: int) -> None:
        settings = [f"ofport_request={number}"]
        if port.adapter:
            settings.insert(0, "type=internal")
            if port.mac:
                settings.append(f'mac="{port.mac}"')
        where = self.state.bridge_of(port.name)
        if where is None or where != port.bridge:
            cmd = ("--", "--may-exist", "add-port", port.bridge, port.name,
                   "--", "set", "Interface", port.name, *settings)
            if where is not None:
                cmd = ("--", "del-port", where, port.name) + cmd
                self.find("warning", port.name, f"was on bridge {where}: moved to {port.bridge}")
            kind = "adapter (internal port)" if port.adapter else str(port.role)
            self.act(Vsctl(cmd, why=f"{port.bridge} port {number}: {port.name}, {kind}"))
            return
        current = self.state.interfaces.get(port.name, OvsInterface(port.name))
        have = {"type": current.type or "system", "ofport_request": current.ofport_request,
                "mac": current.mac}
        diff = []
        if port.adapter and have["type"] != "internal":
            diff.append("type=internal")
        elif not port.adapter and have["type"] != "system":
            self.find("error", port.name,
                      f"is an OVS {have['type']} port; the config needs the kernel interface",
                      f"ovs-vsctl del-port {port.bridge} {port.name}; then apply again")
            return
        if have["ofport_request"] != number:
            diff.append(f"ofport_request={number}")
        if port.adapter and port.mac and (have["mac"] or "").lower() != port.mac.lower():
            diff.append(f'mac="{port.mac}"')
        if diff:
            self.act(Vsctl(("set", "Interface", port.name, *diff),
                           why=f"{port.bridge} port {port.name}: {', '.join(diff)}"))
        elif current.ofport is not None and current.ofport != number:
            self.find("warning", port.name,
                      f"asked for port number {number} on {port.bridge} and has "
                      f"{current.ofport}: another port took it first (socketnet resolves "
                      "ports by name; only dumps read differently)",
                      "ovs-vsctl --columns=name,ofport list Interface; move the other port")

    def adapters(self) -> None:
        for bridge in self.host.bridges:
            for port in bridge.ports:
                if not port.adapter:
                    continue
                link = self.state.links.get(port.name)
                if port.address is not None and (
                        link is None or port.address not in link.addresses):
                    self.act(AddAddress(port.name, port.address,
                                        why=f"{port.name}: the {bridge.name} containers' gateway"))
                if link is None or not link.up:
                    self.act(LinkUp(port.name, why=f"{port.name} up"))

    # -- the routed glue -------------------------------------------------------------

    def routing(self) -> None:
        wanted_routes, wanted_rules = self.desired_routing()
        current = set(self.state.routes)
        ours = set(self.ids.tables)
        for table in self.ids.tables:
            routes = sorted((r for r in wanted_routes if r.table == table), key=_route_order)
            have = [r for r in self.state.routes if r.table == table]
            stale = [r for r in have if r not in routes]
            replaced = set()
            for route in routes:  # prohibits first: the table fails closed at every step
                if route in current:
                    continue
                clash = [r for r in stale if r.dst == route.dst]  # the kernel's key
                if clash:
                    replaced.update(clash)
                    self.act(ReplaceRoute(route, why=f"table {table}: {_route_why(route)} "
                                                     f"(was {' '.join(clash[0].spec()[:-2])})"))
                else:
                    self.act(AddRoute(route, why=f"table {table}: {_route_why(route)}"))
            for route in sorted(stale, key=_route_order):
                if route not in replaced:
                    self.act(DelRoute(route, why=f"table {table}: not in the config"))
        for rule in self.state.rules:
            if (rule.table in ours or (rule.table is None and rule.priority
                                       in self.ids.prohibit_priorities)) \
                    and rule not in wanted_rules:
                self.act(DelRule(rule, why="a rule into socketnet's tables the config has not"))
        for rule in wanted_rules:
            if rule not in self.state.rules:
                self.act(AddRule(rule, why=f"what enters from {rule.iif} uses table {rule.table}"
                                 if rule.table is not None else
                                 f"what enters from {rule.iif} and table {rule.priority - 10} "
                                 "does not route is prohibited, never the main table's"))
        for route in self.state.foreign_routes:
            if self.warp is not None and route.dev == self.warp.interface:
                self.find("error", route.dev,
                          f"route {' '.join(route.spec())}: WARP's routes belong in the "
                          "privacy table only, or the host's own traffic leaves through WARP",
                          f"set `Table = off` in /etc/wireguard/{route.dev}.conf")

    def _up(self, name: str) -> bool:
        link = self.state.links.get(name)
        return link is not None and link.up

    def desired_routing(self) -> tuple:
        host, ids = self.host, self.ids
        routes, rules = [], []

        def table(number, iif, entries):
            routes.append(Route(number, IPNetwork("0.0.0.0/0"), "prohibit"))
            routes.extend(entries)
            rules.append(Rule(number, iif, number))
            rules.append(Rule(number + 10, iif))  # if the table loses a route (warp0 gone)

        nm = self.netmaker if self.netmaker is not None and self.netmaker.adapter else None
        warp = self.warp if self.warp is not None and self.warp.adapter else None
        if nm is not None:
            to_mesh = [IPNetwork(f"{host.xray_client.container.address}/32"),
                       *host.management_subnet.iter_cidrs()]
            nm_up = self._up(nm.interface)
            table(ids.netmaker_in(), nm.interface,
                  [Route(ids.netmaker_in(), net, dev=nm.name) for net in to_mesh])
            table(ids.mesh_adapter_in(), nm.name,
                  [Route(ids.mesh_adapter_in(), net, dev=nm.interface)
                   for net in host.netmaker_side.iter_cidrs()] if nm_up else [])
            if not nm_up:
                self.find("warning", nm.interface,
                          "does not exist or is down: management traffic has no way to "
                          "Netmaker until it does (its table prohibits everything meanwhile)",
                          "start the Netmaker client (netclient), then apply again")
        if warp is not None:
            blocked = host.privacy_exit_blocked
            warp_up = self._up(warp.interface)
            entries = [Route(ids.privacy_adapter_in(), net, "prohibit")
                       for net in blocked.iter_cidrs()]
            if warp_up:
                entries.append(Route(ids.privacy_adapter_in(), IPNetwork("0.0.0.0/0"),
                                     dev=warp.interface))
            else:
                self.find("warning", warp.interface,
                          "does not exist or is down: privacy traffic has no exit until it "
                          "does (its table prohibits everything meanwhile)",
                          f"wg-quick up {warp.interface} (with `Table = off`), then apply again")
            table(ids.privacy_adapter_in(), warp.name, [])
            if warp_up:  # the default via warp replaces the catch-all prohibit
                routes.remove(Route(ids.privacy_adapter_in(), IPNetwork("0.0.0.0/0"), "prohibit"))
            routes.extend(entries)
            table(ids.warp_in(), warp.interface,
                  [Route(ids.warp_in(), net, dev=warp.name)
                   for net in host.privacy_subnet.iter_cidrs()])
        return routes, rules

    # -- forwarding -------------------------------------------------------------------

    def forwarding(self) -> None:
        if self.state.sysctls.get(IP_FORWARD) != "1":
            self.act(Sysctl(IP_FORWARD, "1", why="route between the adapters and the uplinks "
                                                 "(last: the filter is in place)"))
            self.find("warning", IP_FORWARD,
                      "forwarding turns on for every interface of the host: socketnet's "
                      "filter judges only what touches its own interfaces",
                      "make sure the host firewall drops forwarding between the others")
        for link_name, port in ((p.interface, p) for p in (self.netmaker, self.warp)
                                if p is not None):
            link = self.state.links.get(link_name)
            if link is not None and port.kind is Kind.L3 and link.kind is Kind.L2:
                self.find("warning", link_name,
                          "the config makes it l3 but the kernel says it has Ethernet: it is "
                          "routed through an adapter, which works, but enslaving it would too",
                          f"socketnet.ports.{link_name}.kind: l2, if it should be switched")


def _route_order(route: Route) -> tuple:
    """Prohibits first, widest first; then the routes that let traffic through."""
    return (route.type != "prohibit", route.dst.prefixlen, int(route.dst.network),
            route.dev or "")


def _route_why(route: Route) -> str:
    if route.type == "prohibit":
        return f"nothing to {route.dst}" if route.dst.prefixlen else "everything else prohibited"
    return f"{route.dst} via {route.dev}"


# --------------------------------------------------------------------------- nftables


def _names(items) -> str:
    items = list(dict.fromkeys(items))
    if len(items) == 1:
        return f'"{items[0]}"'
    return "{ " + ", ".join(f'"{i}"' for i in items) + " }"


def _nets(nets) -> str:
    cidrs = [str(c) for c in IPSet(nets).iter_cidrs()]
    if len(cidrs) == 1:
        return cidrs[0].removesuffix("/32")
    return "{ " + ", ".join(cidrs) + " }"


def nft_script(host: Host, warp_address: str = DEFAULT_WARP_ADDRESS) -> tuple:
    """(script, digest): the tables `inet socketnet` and `arp socketnet`, replaced
    atomically. The digest of their content rides in the first rule's comment, so a
    host that has exactly these tables is left alone.

    Besides the routed glue's filter, both tables keep the host's own IP stack off
    the bridges' switch ports (containers' veths, the inter-bridge link): with the
    userspace datapath those are ordinary kernel interfaces too, and the host would
    answer ARP for its gateway addresses on them and route what arrives there,
    past the bridge (measured in the lab). With the kernel datapath the rules never
    match: an enslaved port's packets never reach the IP stack."""
    netmaker, warp = _uplinks(host)
    nm = netmaker if netmaker is not None and netmaker.adapter else None
    wp = warp if warp is not None and warp.adapter else None
    ours = [i for p in (nm, wp) if p is not None for i in (p.interface, p.name)]
    switch_ports = [p.name for b in host.bridges for p in b.ports if not p.adapter]
    pre, forward, inp, post, arp = [], [], [], [], []
    if switch_ports:
        not_ours = ('comment "a switch port: the bridge\'s, never the host\'s IP stack '
                    '(userspace datapath)"')
        pre.append(f"iifname {_names(switch_ports)} drop {not_ours}")
        arp.append(f"iifname {_names(switch_ports)} drop {not_ours}")
    if ours:
        forward.append(f"iifname != {_names(ours)} oifname != {_names(ours)} accept "
                       'comment "not socketnet\'s interfaces"')
        forward.append('tcp flags syn tcp option maxseg size set rt mtu '
                       'comment "MSS clamp: the WireGuard uplinks have a small MTU"')
        forward.append('ct state established,related accept comment "replies"')
        inp.append(f"iifname {_names(ours)} fib daddr . iif type != "
                   "{ local, broadcast, multicast } drop "
                   'comment "no weak host: only the incoming interface\'s own addresses"')
    objects, policing = [], []
    if nm is not None:
        objects, policing = _ingress_policing(host)
        peer_objects, peer_rule = _peer_policing(host)
        objects += peer_objects
        pre += peer_rule
        if policing:
            # Past the replies rule: new connections, and what conntrack calls
            # invalid (a bad checksum, out of window) that W1 would still let in.
            forward.append(f'iifname "{nm.interface}" oifname "{nm.name}" '
                           'jump netmaker_new comment "police Netmaker ingress that is '
                           'no known connection"')
        xray = host.xray_client.container
        for service in xray.services:
            forward.append(
                f'iifname "{nm.interface}" oifname "{nm.name}" '
                f"ip saddr {_nets(host.netmaker_ranges)} ip daddr {xray.address} "
                f"{service.protocol} dport {service.port} accept "
                f'comment "W1: Netmaker to the xray client\'s {service.name}"')
        forward.append(f'iifname "{nm.name}" oifname "{nm.interface}" '
                       f"ip saddr {_nets(host.management_subnet.iter_cidrs())} "
                       f"ip daddr {_nets(host.netmaker_side.iter_cidrs())} accept "
                       'comment "W5: management to Netmaker"')
        forward.append(f'iifname "{nm.interface}" oifname "{nm.name}" '
                       f"ip saddr {_nets(host.netmaker_side.iter_cidrs())} "
                       f"ip daddr {_nets(host.management_subnet.iter_cidrs())} accept "
                       'comment "W5: Netmaker to management"')
    if wp is not None:
        blocked = host.privacy_exit_blocked
        forward.append(f'iifname "{wp.name}" oifname "{wp.interface}" '
                       f"ip saddr {_nets(host.privacy_subnet.iter_cidrs())} "
                       f"ip daddr != {_nets(blocked.iter_cidrs())} accept "
                       'comment "W2, W4: privacy to WARP"')
        post.append(f'oifname "{wp.interface}" snat ip to {warp_address} '
                    'comment "WARP accepts only its own address"')

    def chain(cname, hook_line, rules):
        if not rules:
            return []
        return chain_body(cname, [hook_line, *rules])

    def chain_body(cname, lines):
        if not lines:
            return []
        return [f"\tchain {cname} {{", *(f"\t\t{r}" for r in lines), "\t}"]

    inet = [*(objects if ours else []),
            *chain("prerouting", "type filter hook prerouting priority raw; policy accept;",
                   pre)]
    if ours:  # the forward policy is imposed only where something is routed
        inet += [*chain("forward", "type filter hook forward priority filter; policy drop;",
                        forward),
                 *chain_body("netmaker_new", policing),
                 *chain("input", "type filter hook input priority filter; policy accept;",
                        inp),
                 *chain("postrouting",
                        "type nat hook postrouting priority srcnat; policy accept;", post)]
    tables = {NFT_TABLES[0]: inet,
              NFT_TABLES[1]: chain("input", "type filter hook input priority filter; "
                                            "policy accept;", arp)}
    text = "".join("\n".join([f"table {f} {n} {{", *lines, "}"]) + "\n"
                   for (f, n), lines in tables.items())
    digest = hashlib.sha256(text.encode()).hexdigest()[:16] if 'comment "' in text else None
    text = text.replace('comment "', f'comment "{NFT_DIGEST_PREFIX}{digest}: ', 1)
    reset = "".join(f"table {f} {n} {{}}\ndelete table {f} {n}\n" for f, n in NFT_TABLES)
    return reset + text, digest


def _ingress_policing(host: Host) -> tuple:
    """(objects, rules): the `netmaker_new` chain, which the forward chain jumps to
    for every packet from the Netmaker uplink to the mesh adapter that is not part
    of a known connection (new, or invalid to conntrack), and the named
    counters and the per-source set it uses (`limits.ingress_rate`,
    `ingress_per_source`; see topology.config). Known sources have a lane of their
    own; a source that is not known is limited alone, then with all the others.
    With the per-source set full (a flood of many sources), a new source is
    limited only with all the others."""
    limits = host.classification.limits
    rate, per_source = limits.ingress_rate, limits.ingress_per_source
    known = [str(c) for c in host.known_sources.iter_cidrs()]
    objects, rules = [], []
    if not (rate or per_source):
        return [], []

    def over(name, limit, burst, why):
        objects.append(f"\tcounter {name} {{}}")
        return (f"limit rate over {limit}/second burst {burst} packets "
                f'counter name "{name}" drop comment "{why}"')

    if known and rate:
        rules.append(f"ip saddr {_nets(known)} "
                     + over("ingress_known_over", rate, max(rate // 10, 1),
                            f"known sources: over {rate} new flows/s"))
    if known:
        rules.append(f"ip saddr {_nets(known)} return "
                     'comment "known sources: their own lane"')
    if per_source:
        objects.append("\tset ingress_sources {\n\t\ttype ipv4_addr; size 65535; "
                       "flags dynamic,timeout; timeout 60s;\n\t}")
        rules.append("update @ingress_sources { ip saddr "
                     + over("ingress_source_over", per_source, per_source,
                            f"one source: over {per_source} new flows/s")
                     .replace(" counter", " } counter", 1))
    if rate:
        rules.append(over("ingress_over", rate, max(rate // 10, 1),
                          f"all other sources: over {rate} new flows/s"))
    return objects, rules


def _peer_policing(host: Host) -> tuple:
    """(objects, rules) for the prerouting chain: WireGuard datagrams to the
    Netmaker uplink's port, per peer endpoint (IPv4 or IPv6), over
    `limits.ingress_peer_rate` a second are dropped before conntrack and before
    WireGuard decrypts them."""
    limits = host.classification.limits
    rate, port = limits.ingress_peer_rate, limits.ingress_wireguard_port
    if not rate:
        return [], []
    objects, rules = ["\tcounter netmaker_peer_over {}"], []
    for family, address, suffix in (("ip", "ipv4_addr", ""), ("ip6", "ipv6_addr", "6")):
        objects.append(f"\tset netmaker_peers{suffix} {{\n\t\ttype {address} . inet_service; "
                       "size 65535; flags dynamic,timeout; timeout 60s;\n\t}")
        rules.append(f"udp dport {port} fib daddr type local update @netmaker_peers{suffix} "
                     f"{{ {family} saddr . udp sport limit rate over {rate}/second burst "
                     f"{max(rate // 100, 10)} packets }} counter name \"netmaker_peer_over\" "
                     f'drop comment "one Netmaker peer ({family}): over {rate} WireGuard '
                     'datagrams/s"')
    return objects, rules


def _rule_count(script: str) -> int:
    return sum(1 for line in script.splitlines() if 'comment "' in line)
