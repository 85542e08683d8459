"""The host plan: what a real host must be for the config, as a list of commands.

Owns, purely (no I/O), turning a `topology.model.Host` and a snapshot of what the
host has now (`topology.host.state.HostState`, read by `topology.host.apply.read_state`)
into the actions that make the host match the config, and the findings a human
must see. An empty `HostState()` is a fresh host; a state that already matches
gives an empty plan, which is what makes `socketnet host apply` idempotent.

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
  `prohibit`, with an `ip rule` into it and a `prohibit` rule behind it
  (`topology.host.routing`);
- the nftables tables `inet socketnet` and `arp socketnet`: the forward
  allow-list, MSS clamp, SNAT to WARP, no weak host, the host's IP stack kept off
  the switch ports, Netmaker ingress policed (`topology.host.nft`);
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
    default_controller(host): the bridges' OpenFlow target when none is given
    sysctl_keys(host), RoutingIds.tables: what `read_state` must read
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from controller.compiler import conntrack_zone
from controller.conntrack import timeout_policy

from topology.host.actions import Action, AddAddress, AddVeth, LinkUp, LoadNft, Sysctl, Vsctl
from topology.host.nft import DEFAULT_WARP_ADDRESS, nft_script, rule_count
from topology.host.routing import RoutingIds, routed_uplinks, routing_actions, uplinks
from topology.host.state import HostState, OvsInterface
from topology.model import UPLINK_ROLES, Host, Kind, Port, Role

DATAPATH_TYPES = ("system", "netdev")
IP_FORWARD = "net.ipv4.ip_forward"
OUT_OF_BAND = "out-of-band"
OPENFLOW13 = "OpenFlow13"


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
        self.netmaker, self.warp = uplinks(host)
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
        if current is None or current.digest != digest or current.rules != rule_count(script):
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
        """socketnet's tables and rules (`topology.host.routing`); a routed uplink
        that is down, and WARP's routes outside them, are told."""
        nm, warp = routed_uplinks(self.host)
        if nm is not None and not self.state.is_up(nm.interface):
            self.find("warning", nm.interface,
                      "does not exist or is down: management traffic has no way to "
                      "Netmaker until it does (its table prohibits everything meanwhile)",
                      "start the Netmaker client (netclient), then apply again")
        if warp is not None and not self.state.is_up(warp.interface):
            self.find("warning", warp.interface,
                      "does not exist or is down: privacy traffic has no exit until it "
                      "does (its table prohibits everything meanwhile)",
                      f"wg-quick up {warp.interface} (with `Table = off`), then apply again")
        self.actions.extend(routing_actions(self.host, self.state, self.ids))
        for route in self.state.foreign_routes:
            if self.warp is not None and route.dev == self.warp.interface:
                self.find("error", route.dev,
                          f"route {' '.join(route.spec())}: WARP's routes belong in the "
                          "privacy table only, or the host's own traffic leaves through WARP",
                          f"set `Table = off` in /etc/wireguard/{route.dev}.conf")

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

