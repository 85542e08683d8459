"""The host assembled from the sections: bridges placed, uplinks and their
adapters, the inter-bridge link, containers with their roles and MACs, and
every check across sections (one subnet per bridge, no overlaps, one use per
interface name, rules' reach, the seed's flows' ports). The result is
`topology.model.Host`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from netaddr import IPAddress, IPNetwork, IPSet

from topology import seedflows
from topology.config.issues import ConfigIssue
from topology.config.reader import At, Reader
from topology.config.seed import ContainerEntry, Seed, Uplink
from topology.config.socketnet import Options, PortOptions
from topology.model import Bridge, Container, Host, Kind, Port, Role, TrafficClass


@dataclass(frozen=True)
class _Placed:
    """A container with its role and MAC decided."""
    entry: ContainerEntry
    role: Role
    mac: str
    mac_at: At  # where the MAC comes from


@dataclass(frozen=True)
class _Subnet:
    """The one subnet and gateway the containers of a bridge share."""
    network: IPNetwork  # the cidr
    gateway: Optional[IPAddress]
    at: At  # where it is first given


def build_host(f: Reader, seed: Seed, file: str) -> Optional[Host]:
    options = seed.options
    netmaker = seed.netmaker
    warp, ignored = _place_tunnels(f, seed, options.ports)
    mesh = netmaker.bridge if netmaker else None
    privacy = warp.bridge if warp else None
    if mesh and mesh == privacy:
        f.error(warp.bridge_at, f"the warp uplink is on {mesh}, the mesh bridge with Netmaker; "
                                f"it belongs on the privacy bridge (N2)")
        privacy = None
    link = _inter_bridge_link(f, seed, mesh, privacy)
    placed = _place_containers(f, seed, mesh, privacy)
    _check_unique_containers(f, placed)
    subnets = {bridge: _bridge_subnet(f, bridge, placed) for bridge in (mesh, privacy) if bridge}
    uplinks = [u for u in (netmaker, warp) if u]
    uplink_ports = {u.role: _uplink_port(f, u, options.ports.get(u.interface),
                                         subnets.get(u.bridge), placed, seed.containers_readable)
                    for u in uplinks}
    for port in uplink_ports.values():
        if port is not None and port.address is not None and subnets.get(port.bridge) is None:
            # No containers: the adapter's address says what the subnet is.
            subnets[port.bridge] = _Subnet(port.address.cidr, port.address.ip,
                                           options.ports[port.interface].at["address"])
    _check_subnets(f, subnets, mesh, privacy, options)
    _check_rule_reach(f, options, placed, mesh)
    if netmaker and isinstance(seed.root["wireguard"].value, dict):
        _check_port_options(f, options.ports, uplinks, seed.tunnels, ignored)
    _check_interface_names(f, _claims(seed, mesh, privacy, uplinks, uplink_ports, link, placed))
    _check_openflow_bridges(f, seed, mesh, privacy)
    if f.issues:
        return None

    bridges = []
    for name, uplink_role in ((mesh, Role.NETMAKER_UPLINK), (privacy, Role.WARP_UPLINK)):
        ports = [uplink_ports[uplink_role]]
        ports += [end for end in link if end.bridge == name]
        ports += [_container_port(p) for p in placed if p.entry.bridge == name]
        bridge = Bridge(name, tuple(ports))
        flows = seed.openflow[name][1]
        for at, flow in flows:
            for problem in seedflows.check_ports(flow, bridge):
                f.error(at, problem)
        bridges.append(replace(bridge, seed_flows=tuple(flow for _, flow in flows)))
    if f.issues:
        return None
    return Host(
        source=file, mesh=bridges[0], privacy_bridge=bridges[1],
        netmaker_ranges=options.netmaker_ranges, nodes=options.nodes,
        privacy_blocked=options.privacy_blocked, settings=options.settings,
        ignored=tuple(ignored), classification=options.classification)


def _place_tunnels(f: Reader, seed: Seed, port_options: dict) -> tuple:
    """(the warp uplink or None, [(interface, why) of the tunnels not managed])."""
    uplinks, ignored = [], []
    for tunnel in seed.tunnels:
        options = port_options.get(tunnel.interface)
        bridge, bridge_at = tunnel.bridge, tunnel.at["post_up"]
        if options and options.bridge:
            if bridge and options.bridge != bridge:
                f.error(options.at["bridge"], f"post_up adds {tunnel.interface} to {bridge} "
                                              f"({bridge_at.path})")
            bridge, bridge_at = options.bridge, options.at["bridge"]
        if not tunnel.enabled:
            ignored.append((tunnel.interface, f"wireguard.{tunnel.name} is disabled"))
        elif bridge is None:
            ignored.append((tunnel.interface, f"wireguard.{tunnel.name} is on no bridge"))
        else:
            uplinks.append(Uplink(tunnel.interface, bridge, Role.WARP_UPLINK,
                                   tunnel.at["interface"], bridge_at))
    if not uplinks and isinstance(seed.root["wireguard"].value, dict):
        f.lacking(seed.root["wireguard"], "no warp uplink: no enabled entry is added to a bridge "
                                          "(by `ovs-vsctl add-port BRIDGE IFACE` in post_up, or "
                                          "socketnet.ports.<interface>.bridge)")
    for extra in uplinks[1:]:
        f.error(extra.at, f"a second warp uplink; the privacy bridge has exactly one "
                          f"({uplinks[0].at.path})")
    return (uplinks[0] if uplinks else None), ignored


def _inter_bridge_link(f: Reader, seed: Seed, mesh: Optional[str],
                       privacy: Optional[str]) -> tuple:
    """The two inter-bridge ports, or () when the link is missing or wrong."""
    known = (mesh, privacy) if mesh and privacy else None
    link, link_at = (), None
    for at, ends in seed.veth_pairs:
        strangers = [end for end in ends if known and end.bridge not in known]
        for end in strangers:
            f.error(end.at["bridge"], f"not a bridge of this host (the mesh bridge is {mesh}, "
                                      f"the privacy bridge {privacy})")
        if strangers:
            continue
        if ends[0].bridge == ends[1].bridge:
            f.error(ends[1].at["bridge"], f"both ends of the pair are on {ends[0].bridge}; the "
                                          f"inter-bridge link joins the mesh and privacy bridges")
        elif link:
            f.error(ends[0].at["name"], f"a second inter-bridge link; socketnet allows "
                                        f"exactly one ({link_at.path})")
        else:
            link_at = at
            link = tuple(Port(name=end.name, bridge=end.bridge, role=Role.INTER_BRIDGE,
                              kind=Kind.L2, interface=end.name, peer=end.peer) for end in ends)
    pairs = seed.root["networking"]["veth_pairs"]
    if isinstance(pairs.value, dict) and not pairs.value:
        f.lacking(pairs, "no inter-bridge link: one veth pair must join the mesh and privacy "
                         "bridges")
    return link


def _place_containers(f: Reader, seed: Seed, mesh: Optional[str],
                      privacy: Optional[str]) -> list:
    """Every container on a bridge of this host, with its role and MAC."""
    placed = []
    options = seed.options.containers
    for entry in seed.containers:
        if entry.bridge is None:
            continue
        if mesh and privacy and entry.bridge not in (mesh, privacy):
            f.error(entry.at["bridge"], f"not a bridge of this host (the mesh bridge is {mesh}, "
                                        f"the privacy bridge {privacy})")
            continue
        if entry.bridge not in (mesh, privacy):
            continue  # the bridges themselves are wrong; that is reported already
        role = Role.MANAGEMENT if entry.bridge == mesh else (
            Role.XRAY_CLIENT if entry.offers_services else Role.PRIVACY_CONTAINER)
        option = options.get(entry.id)
        if option and option.role:
            if (option.role is Role.MANAGEMENT) != (entry.bridge == mesh):
                f.error(option.at["role"], f"container {entry.id} is on {entry.bridge}; "
                        f"management containers are on the mesh bridge {mesh}, privacy "
                        f"containers on the privacy bridge {privacy}")
                continue
            role = option.role
        if option and option.mac:
            mac, mac_at = option.mac, option.at["mac"]
        elif entry.hwaddr:
            mac, mac_at = entry.hwaddr, entry.at["properties"]["hwaddr"]
        elif entry.interface is not None:
            mac, mac_at = derived_mac(entry.interface.ip), entry.address_at
        else:
            continue
        placed.append(_Placed(entry, role, mac, mac_at))

    for container_id, option in options.items():
        if container_id not in (e.id for e in seed.containers):
            f.error(At(option.at.path, container_id), f"no container has this id (ids: "
                    f"{', '.join(e.id for e in seed.containers)})")

    clients = [p for p in placed if p.role is Role.XRAY_CLIENT]
    if privacy and not clients and seed.containers_readable:
        f.lacking(seed.root["lxc"]["containers"], f"no xray client: no container on {privacy} "
                  f"offers services (or set socketnet.containers.\"<id>\".role: xray-client)")
    for extra in clients[1:]:
        f.error(extra.entry.at["id"], f"a second xray client (the first is container "
                f"{clients[0].entry.id}); set socketnet.containers.\"{extra.entry.id}\".role: "
                f"privacy-container for all but the xray client")
    return placed


def derived_mac(address: IPAddress) -> str:
    """The MAC of a container that names none: 02:00 and its IPv4 address's bytes."""
    return "02:00:" + ":".join(f"{byte:02x}" for byte in address.packed)


def _check_unique_containers(f: Reader, placed: list) -> None:
    """Ids, names, addresses and MACs: each may belong to one container only."""
    seen = {}
    for p in placed:
        entry = p.entry
        for what, value, at in (
                ("id", entry.id, entry.at["id"]),
                ("name", entry.name, entry.at["properties"]["name"]),
                ("address", entry.interface.ip if entry.interface is not None else None,
                 entry.address_at),
                ("MAC", p.mac, p.mac_at)):
            if value is None:
                continue
            first = seen.setdefault((what, value), at)
            if first is at:
                continue
            if what == "MAC" and _is_address(first) and _is_address(at):
                continue  # both derived from one address, which is reported already
            derived = " (derived from the address)" if what == "MAC" and _is_address(at) else ""
            f.error(at, f"{what} {value}{derived} is already that of {first.path}")


def _is_address(at: At) -> bool:
    return at.path.endswith(".properties.ipv4_address")


def _bridge_subnet(f: Reader, bridge: str, placed: list) -> Optional[_Subnet]:
    """The subnet and gateway of the containers on `bridge`, which must all agree."""
    first = None
    for p in placed:
        entry = p.entry
        if entry.bridge != bridge or entry.interface is None:
            continue
        if first is None:
            first = p
            continue
        reference = first.entry
        if entry.interface.cidr != reference.interface.cidr:
            f.error(entry.address_at, f"subnet {entry.interface.cidr} differs from "
                    f"{reference.interface.cidr} of {reference.address_at.path}; the containers "
                    f"on one bridge share one subnet")
        elif entry.gateway != reference.gateway:
            f.error(entry.at["properties"]["gateway"],
                    f"the containers on one bridge share one gateway, and "
                    f"{reference.at['properties']['gateway'].path} is "
                    f"{reference.gateway or 'not given'}")
    if first is None:
        return None
    return _Subnet(first.entry.interface.cidr, first.entry.gateway, first.entry.address_at)


def _uplink_port(f: Reader, uplink: Uplink, options: Optional[PortOptions],
                 subnet: Optional[_Subnet], placed: list, containers_readable: bool
                 ) -> Optional[Port]:
    """The bridge port of an uplink: itself if l2, its adapter if l3."""
    kind = options.kind if options and options.kind else Kind.L3
    mac = options.mac if options else None
    if kind is Kind.L2:
        for key in ("adapter", "address"):
            if options and options.at[key].present:
                f.error(options.at[key], f"only an l3 uplink has an adapter; {uplink.interface} "
                                         f"is l2 and is itself the bridge port")
        return Port(name=uplink.interface, bridge=uplink.bridge, role=uplink.role, kind=Kind.L2,
                    interface=uplink.interface, mac=mac)

    if options and options.adapter:
        adapter, adapter_at = options.adapter, options.at["adapter"]
    else:
        adapter, adapter_at = f"{uplink.bridge}-gw", uplink.at
        if len(adapter) > 15:
            f.error(uplink.bridge_at, f"the default adapter name {adapter!r} is longer than 15 "
                    f"characters; set socketnet.ports.{uplink.interface}.adapter")
            return None
    if adapter == uplink.interface:
        f.error(adapter_at, "the adapter needs a name of its own: the WireGuard interface "
                            "cannot be a bridge port")
        return None

    address = _adapter_address(f, uplink, adapter, options, subnet, containers_readable)
    if address is not None:
        for p in placed:
            if p.entry.interface is not None and p.entry.interface.ip == address.ip:
                f.error(p.entry.address_at, f"{address.ip} is the address of the adapter "
                                            f"{adapter} (the gateway of {uplink.bridge})")
    return Port(name=adapter, bridge=uplink.bridge, role=uplink.role, kind=Kind.L3,
                interface=uplink.interface, address=address, mac=mac)


def _adapter_address(f: Reader, uplink: Uplink, adapter: str,
                     options: Optional[PortOptions], subnet: Optional[_Subnet],
                     containers_readable: bool) -> Optional[IPNetwork]:
    """The adapter's address: the containers' gateway with their prefix, or as set."""
    if options and options.address is not None:
        address, at = options.address, options.at["address"]
        if subnet and address.cidr != subnet.network:
            f.error(at, f"not in the subnet {subnet.network} of the containers on "
                        f"{uplink.bridge} ({subnet.at.path})")
        elif subnet and subnet.gateway is not None and address.ip != subnet.gateway:
            f.error(at, f"the containers on {uplink.bridge} use the gateway {subnet.gateway}; "
                        f"the adapter is their gateway")
        return address
    if subnet and subnet.gateway is not None:
        return IPNetwork(f"{subnet.gateway}/{subnet.network.prefixlen}")
    if not containers_readable:
        return None  # the containers' gateway is unknown; lxc's error says why
    f.error(uplink.at, f"no address for the adapter {adapter}: no container on {uplink.bridge} "
                       f"names a gateway; set socketnet.ports.{uplink.interface}.address")
    return None


def _check_subnets(f: Reader, subnets: dict, mesh: Optional[str], privacy: Optional[str],
                   options: Options) -> None:
    """The management and privacy subnets overlap nothing else."""
    management, private = subnets.get(mesh), subnets.get(privacy)
    if management and private and _overlap(management.network, private.network):
        f.error(private.at, f"the privacy subnet {private.network} overlaps the management "
                            f"subnet {management.network} ({management.at.path})")
    for which, subnet in (("management", management), ("privacy", private)):
        if subnet is None:
            continue
        for network, what in options.beyond:
            if _overlap(subnet.network, network):
                f.error(subnet.at, f"the {which} subnet {subnet.network} overlaps {what}")


def _overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.first <= b.last and b.first <= a.last


def _check_port_options(f: Reader, port_options: dict, uplinks: list, tunnels: tuple,
                        ignored: list) -> None:
    """socketnet.ports names uplinks only; `bridge` is for wireguard tunnels only."""
    uplink_names = [u.interface for u in uplinks]
    reasons = dict(ignored)
    for name, options in port_options.items():
        key_at = At(options.at.path, name)
        if name in reasons:
            f.error(key_at, f"not a port: {reasons[name]}")
        elif name not in uplink_names:
            f.error(key_at, f"not a port with options; socketnet.ports describes the uplinks "
                            f"({', '.join(uplink_names) or 'none'})")
        elif options.bridge and name not in (t.interface for t in tunnels):
            f.error(options.at["bridge"], "only a wireguard tunnel's bridge is set here; the "
                                          "netmaker interface's is netmaker.bridge")


@dataclass(frozen=True)
class _Claim:
    """An interface name, what uses it, and on which bridge (None: not a bridge port)."""
    name: str
    what: str
    bridge: Optional[str]
    at: At


def _claims(seed: Seed, mesh: Optional[str], privacy: Optional[str], uplinks: list,
            uplink_ports: dict, link: tuple, placed: list) -> list:
    """Every interface name the config gives a use, in the order that decides
    which use of a name is the second one."""
    claims = []
    for uplink in uplinks:  # the bridges are named where their uplinks are added
        which = "mesh" if uplink.role is Role.NETMAKER_UPLINK else "privacy"
        if uplink.bridge == (mesh if which == "mesh" else privacy):
            claims.append(_Claim(uplink.bridge, f"the {which} bridge", None, uplink.bridge_at))
    for uplink in uplinks:
        port = uplink_ports[uplink.role]
        if port is None:
            continue
        claims.append(_Claim(uplink.interface, f"the {uplink.role} interface",
                             None if port.adapter else port.bridge, uplink.at))
        if port.adapter:
            options = seed.options.ports.get(uplink.interface)
            at = options.at["adapter"] if options and options.adapter else uplink.at
            claims.append(_Claim(port.name, f"the adapter of {uplink.interface}", port.bridge, at))
    managed = {u.interface for u in uplinks}
    for tunnel in seed.tunnels:
        if tunnel.interface not in managed:
            claims.append(_Claim(tunnel.interface, f"the interface of wireguard.{tunnel.name}",
                                 None, tunnel.at["interface"]))
    for _, ends in seed.veth_pairs:
        for end in ends:
            claims.append(_Claim(end.name, "an end of a veth pair", end.bridge, end.at["name"]))
    for p in placed:
        if p.entry.veth:
            claims.append(_Claim(p.entry.veth, f"the veth of container {p.entry.id}",
                                 p.entry.bridge, p.entry.at["veth"]))
    return claims


def _check_interface_names(f: Reader, claims: list) -> None:
    """One interface, one use: no port on two bridges, no name used twice."""
    first = {}
    for claim in claims:
        other = first.setdefault(claim.name, claim)
        if other is claim:
            continue
        if other.bridge and claim.bridge and other.bridge != claim.bridge:
            f.error(claim.at, f"already {other.what} on {other.bridge} ({other.at.path}); an "
                              f"interface is a port of one bridge only")
        else:
            f.error(claim.at, f"already {other.what} ({other.at.path})")


def _check_openflow_bridges(f: Reader, seed: Seed, mesh: Optional[str],
                            privacy: Optional[str]) -> None:
    """openflow.bridges names exactly the mesh and the privacy bridge."""
    if not seed.root["openflow"].present or not isinstance(seed.root["openflow"].value, dict):
        return
    bridges_at = seed.root["openflow"]["bridges"]
    for name, which in ((mesh, "mesh"), (privacy, "privacy")):
        if name and name not in seed.openflow and isinstance(bridges_at.value, dict):
            f.error(bridges_at[name], f"missing; the {which} bridge needs its entry here")
    if mesh and privacy:
        for name, (at, _) in seed.openflow.items():
            if name not in (mesh, privacy):
                f.error(At(at.path, name), f"no port of this host is on this bridge; socketnet "
                                            f"runs {mesh} (mesh) and {privacy} (privacy)")


def _container_port(p: _Placed) -> Port:
    entry = p.entry
    container = Container(
        id=entry.id, name=entry.name, veth=entry.veth, bridge=entry.bridge,
        address=entry.interface.ip, network=entry.interface, gateway=entry.gateway,
        mac=p.mac, services=entry.services)
    return Port(name=entry.veth, bridge=entry.bridge, role=p.role, kind=Kind.L2,
                interface=entry.veth, container=container)


def flow_warnings(file: str, host: Host) -> list:
    """One warning per seed flow: socketnet installs none of them as written."""
    warnings = []
    for bridge in host.bridges:
        flows_at = At("openflow.bridges", None).key_path(bridge.name) + ".flows"
        for i, flow in enumerate(bridge.seed_flows):
            warnings.append(ConfigIssue(file, f"{flows_at}[{i}]", flow.text,
                                        seedflows.assess(flow, host)))
    return warnings


def _check_rule_reach(f: Reader, options: Options, placed: list, mesh: Optional[str]) -> None:
    """A privacy rule's destinations lie within the xray client's address (W1),
    a management rule's within the management subnet (W5)."""
    clients = [p.entry.interface for p in placed
               if p.role is Role.XRAY_CLIENT and p.entry.interface is not None]
    management = IPSet(p.entry.interface.cidr for p in placed
                       if p.entry.bridge == mesh and p.entry.interface is not None)
    reach = {}
    if len(clients) == 1:
        xray = clients[0].ip
        reach[TrafficClass.PRIVACY] = (
            IPSet([IPNetwork(f"{xray}/32")]),
            f"privacy rules must target the xray client (W1): dst within {xray}/32")
    if management:
        cidrs = ", ".join(str(c) for c in management.iter_cidrs())
        reach[TrafficClass.MANAGEMENT] = (
            management, f"management rules must target the management subnet {cidrs} (W5)")
    for rule, at in zip(options.classification.rules, options.rules_at):
        if rule.cls not in reach:
            continue
        allowed, message = reach[rule.cls]
        if rule.dst is None:
            f.lacking(at["dst"], message)
        elif not rule.dst.issubset(allowed):
            f.error(at["dst"], message)

