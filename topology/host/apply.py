"""Host apply: read what a host has, and carry out a `topology.host.plan` plan on it.

Owns the I/O half of `socketnet host apply`; the decisions are `topology.host.plan`.

    HostSystem(netns=None, vsctl=None)  where to act: the current network namespace
                                        (a real host) or a named one (a test's), and
                                        how to reach OVSDB (default: the system's
                                        ovs-vsctl; a lab passes OvsInstance.vsctl)
    read_state(host, system, ids) -> HostState
    apply(plan, system) -> None         each action in order; stops at the first
                                        failure (HostApplyError names the command)

Links, addresses, routes and rules go through pyroute2 (netlink), bridges through
ovs-vsctl, sysctls and nftables through `sysctl` and `nft` run in the namespace.
Never import this into the controller process: pyroute2 does not work under
eventlet's monkey-patching (its green `select` has no `poll`).
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
from typing import Callable, Optional, Sequence

from netaddr import IPNetwork
from pyroute2 import IPRoute

from topology.host.actions import (
    Action, AddAddress, AddRoute, AddRule, AddVeth, DelRoute, DelRule, LinkUp, LoadNft,
    ReplaceRoute, Sysctl, Vsctl,
)
from topology.host.nft import NFT_DIGEST_PREFIX, NFT_TABLES
from topology.host.plan import DATAPATH_TYPES, HostPlan, sysctl_keys
from topology.host.routing import RoutingIds
from topology.host.state import (
    HostState, Link, NftState, OvsBridge, OvsController, OvsInterface, Route, Rule,
)
from topology.kind import netlink_kind
from topology.model import Host
from topology.system import binary, wait_until

IFF_UP = 0x1
RTN_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
LOCAL_TABLE = 255
FR_ACT_TO_TBL = 1
FR_ACT_PROHIBIT = 8
RTPROT_KERNEL = 2


class HostApplyError(RuntimeError):
    """Reading the host or carrying out an action failed; names the command."""


class HostSystem:
    """Where `read_state` and `apply` act. `netns` None: this process's namespace."""

    def __init__(self, netns: Optional[str] = None,
                 vsctl: Optional[Callable[..., str]] = None, timeout: float = 10.0):
        self.netns = netns
        self.timeout = timeout
        self._vsctl = vsctl

    def run(self, argv: Sequence[str], input: Optional[str] = None,
            check: bool = True) -> subprocess.CompletedProcess:
        exe = [binary(argv[0]) or argv[0], *argv[1:]]
        if self.netns is not None:
            exe = [binary("ip") or "ip", "netns", "exec", self.netns, *exe]
        proc = subprocess.run(exe, input=input, capture_output=True, text=True,
                              timeout=self.timeout)
        if check and proc.returncode != 0:
            raise HostApplyError(f"{' '.join(argv)}{self.where} exited {proc.returncode}: "
                                 f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def vsctl(self, *args: str) -> str:
        if self._vsctl is not None:
            return self._vsctl(*args)
        return self.run(["ovs-vsctl", f"--timeout={int(self.timeout)}", *args]).stdout.strip()

    def iproute(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns is not None else IPRoute()

    @property
    def where(self) -> str:
        return f" (in netns {self.netns})" if self.netns else ""


# --------------------------------------------------------------------------- reading


def read_state(host: Host, system: HostSystem, ids: RoutingIds = RoutingIds()) -> HostState:
    bridges, interfaces = _read_ovs(system)
    with system.iproute() as ipr:
        links, names = _read_links(ipr)
        routes, foreign = _read_routes(ipr, names, set(ids.tables))
        rules = _read_rules(ipr)
    sysctls = {}
    for key in sysctl_keys(host):
        proc = system.run(["sysctl", "-n", key], check=False)
        if proc.returncode == 0:
            sysctls[key] = proc.stdout.strip()
    return HostState(bridges=bridges, interfaces=interfaces, links=links, routes=routes,
                     rules=rules, sysctls=sysctls, nft=_read_nft(system),
                     foreign_routes=foreign, zone_policies=_read_zone_policies(system))


_ZONE_LINE = re.compile(r"^Zone:(\d+), Timeout Policies: (.*)$")


def _read_zone_policies(system: HostSystem) -> dict:
    """datapath type -> zone -> timeouts, for the types with a Datapath record."""
    out = {}
    for dp in DATAPATH_TYPES:
        try:
            text = system.vsctl("list-zone-tp", dp)
        except RuntimeError as exc:  # no Datapath record for that type
            if "does not exist" in str(exc) or "not found" in str(exc):
                continue
            raise
        zones = {}
        for line in text.splitlines():
            m = _ZONE_LINE.match(line.strip())
            if m:
                zones[int(m.group(1))] = {k: int(v) for k, v in
                                          (pair.split("=", 1) for pair in m.group(2).split())}
        out[dp] = zones
    return out


def _ovsdb(value):
    """An OVSDB JSON datum (--data=json) as Python: sets as lists, maps as dicts."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("set", "map", "uuid"):
        kind, inner = value
        if kind == "set":
            return [_ovsdb(v) for v in inner]
        if kind == "map":
            return {k: _ovsdb(v) for k, v in inner}
        return inner
    return value


def _table(system: HostSystem, table: str, columns: str) -> list:
    try:
        out = system.vsctl("--format=json", "--data=json", f"--columns={columns}",
                           "list", table)
    except Exception as e:
        raise HostApplyError(f"cannot read Open vSwitch ({table}): {e}") from e
    doc = json.loads(out)
    return [dict(zip(doc["headings"], (_ovsdb(v) for v in row))) for row in doc["data"]]


def _one(value):
    """An optional column: OVSDB gives an empty set for none."""
    return None if value == [] else value


def _read_ovs(system: HostSystem) -> tuple:
    ports = {r["_uuid"]: r["name"] for r in _table(system, "Port", "_uuid,name")}
    controllers = {r["_uuid"]: OvsController(r["_uuid"], r["target"],
                                             _one(r["connection_mode"]))
                   for r in _table(system, "Controller", "_uuid,target,connection_mode")}
    bridges = {}
    for r in _table(system, "Bridge", "name,datapath_type,fail_mode,protocols,other_config,"
                                      "controller,ports"):
        refs = r["controller"] if isinstance(r["controller"], list) else [r["controller"]]
        port_refs = r["ports"] if isinstance(r["ports"], list) else [r["ports"]]
        protocols = r["protocols"] if isinstance(r["protocols"], list) else [r["protocols"]]
        bridges[r["name"]] = OvsBridge(
            name=r["name"], datapath_type=r["datapath_type"] or "",
            fail_mode=_one(r["fail_mode"]) or "", protocols=tuple(protocols),
            other_config=dict(r["other_config"]),
            controllers=tuple(controllers[c] for c in refs if c in controllers),
            ports=tuple(sorted(ports[p] for p in port_refs if p in ports)))
    interfaces = {}
    for r in _table(system, "Interface", "name,type,ofport_request,mac,ofport"):
        ofport = _one(r["ofport"])
        interfaces[r["name"]] = OvsInterface(
            r["name"], r["type"] or "", _one(r["ofport_request"]), _one(r["mac"]),
            ofport if isinstance(ofport, int) and ofport > 0 else None)
    return bridges, interfaces


def _read_links(ipr: IPRoute) -> tuple:
    msgs = ipr.get_links()
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
    addresses: dict = {}
    for a in ipr.get_addr(family=socket.AF_INET):
        addresses.setdefault(a["index"], []).append(
            IPNetwork(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
    links = {}
    for m in msgs:
        name = names[m["index"]]
        link_type = m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
        peer = None
        if link_type == "veth" and m.get_attr("IFLA_LINK_NETNSID") is None:
            peer = names.get(m.get_attr("IFLA_LINK"))
        links[name] = Link(name=name, kind=netlink_kind(m), up=bool(m["flags"] & IFF_UP),
                           addresses=tuple(addresses.get(m["index"], ())),
                           link_type=link_type, peer=peer)
    return links, names


def _route_value(msg, names: dict) -> Route:
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    dst = msg.get_attr("RTA_DST") or "0.0.0.0"
    oif = msg.get_attr("RTA_OIF")
    return Route(table, IPNetwork(f"{dst}/{msg['dst_len']}"),
                 RTN_TYPES.get(msg["type"], str(msg["type"])),
                 names.get(oif) if oif is not None else None)


def _read_routes(ipr: IPRoute, names: dict, ours: set) -> tuple:
    """(routes in socketnet's tables, other routes that leave by some interface;
    the local table and addresses' own subnets left out)."""
    routes, foreign = [], []
    for msg in ipr.route("dump", family=socket.AF_INET):
        route = _route_value(msg, names)
        if route.table in ours:
            routes.append(route)
        elif route.table != LOCAL_TABLE and route.dev is not None \
                and msg["proto"] != RTPROT_KERNEL:  # not an address's own subnet
            foreign.append(route)
    return tuple(routes), tuple(foreign)


def _read_rules(ipr: IPRoute) -> tuple:
    rules = []
    for msg in ipr.get_rules(family=socket.AF_INET):
        iif = msg.get_attr("FRA_IIFNAME")
        if iif is None or msg["action"] not in (FR_ACT_TO_TBL, FR_ACT_PROHIBIT):
            continue
        table = msg.get_attr("FRA_TABLE") or msg["table"]
        rules.append(Rule(msg.get_attr("FRA_PRIORITY") or 0, iif,
                          table if msg["action"] == FR_ACT_TO_TBL else None))
    return tuple(rules)


def _read_nft(system: HostSystem) -> Optional[NftState]:
    digest, count, found = None, 0, False
    for family, name in NFT_TABLES:
        proc = system.run(["nft", "-j", "list", "table", family, name], check=False)
        if proc.returncode != 0:
            continue  # no such table
        found = True
        for item in json.loads(proc.stdout).get("nftables", []):
            rule = item.get("rule")
            if rule is None:
                continue
            count += 1
            comment = rule.get("comment", "")
            if digest is None and comment.startswith(NFT_DIGEST_PREFIX):
                digest = comment[len(NFT_DIGEST_PREFIX):].split(":")[0].strip()
    return NftState(digest, count) if found else None


# --------------------------------------------------------------------------- applying


def apply(plan: HostPlan, system: HostSystem, echo: Optional[Callable[[str], None]] = None
          ) -> None:
    """Carry out `plan.actions` in order (`echo` gets each command first). The
    netlink actions share one socket, opened at the first of them."""
    ipr = None
    try:
        for action in plan.actions:
            if echo is not None:
                echo(str(action))
            try:
                if isinstance(action, Vsctl):
                    system.vsctl(*action.args)
                elif isinstance(action, Sysctl):
                    system.run(action.argv())
                elif isinstance(action, LoadNft):
                    system.run(action.argv(), input=action.script)
                else:
                    if ipr is None:
                        ipr = system.iproute()
                    _netlink(action, ipr, system.timeout)
            except HostApplyError:
                raise
            except Exception as e:
                raise HostApplyError(f"{action}{system.where}: {e}") from e
    finally:
        if ipr is not None:
            ipr.close()


def _index(ipr: IPRoute, name: str, timeout: float) -> int:
    """The interface's index, waiting for it to appear (an OVS internal port's
    device is made by ovs-vswitchd)."""
    found = wait_until(lambda: ipr.link_lookup(ifname=name), timeout, f"interface {name}")
    return found[0]


def _netlink(action: Action, ipr: IPRoute, timeout: float) -> None:
    if isinstance(action, AddVeth):
        ipr.link("add", ifname=action.name, kind="veth", peer=action.peer)
    elif isinstance(action, LinkUp):
        ipr.link("set", index=_index(ipr, action.name, timeout), state="up")
    elif isinstance(action, AddAddress):
        ipr.addr("add", index=_index(ipr, action.dev, timeout),
                 address=str(action.address.ip), prefixlen=action.address.prefixlen)
    elif isinstance(action, (AddRoute, ReplaceRoute, DelRoute)):
        route = action.route
        spec = {"dst": str(route.dst), "table": route.table, "type": route.type}
        if route.dev is not None:
            spec["oif"] = _index(ipr, route.dev, timeout)
        command = {AddRoute: "add", ReplaceRoute: "replace", DelRoute: "del"}[type(action)]
        ipr.route(command, **spec)
    elif isinstance(action, (AddRule, DelRule)):
        rule = action.rule
        target = ({"action": "FR_ACT_PROHIBIT"} if rule.table is None
                  else {"action": "FR_ACT_TO_TBL", "table": rule.table})
        ipr.rule("add" if isinstance(action, AddRule) else "del", family=socket.AF_INET,
                 priority=rule.priority, iifname=rule.iif, **target)
    else:
        raise HostApplyError(f"no way to carry out {action!r}")

