"""The seed's own sections read: netmaker, wireguard (and the bridge a
post_up adds a tunnel to), networking.veth_pairs, openflow.bridges, lxc
containers and their services. Each field is checked on its own here; how
they fit together is `topology.config.assemble`'s."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Iterator, Optional

from netaddr import IPAddress, IPNetwork

from topology import seedflows
from topology.config.reader import At, Reader
from topology.config.socketnet import Options, read_socketnet
from topology.model import Role, Service

_SECTIONS = ("netmaker", "networking", "wireguard", "openflow", "lxc", "socketnet")
_IGNORED_SECTIONS = ("systemd", "packagekit")
_REQUIRED_SECTIONS = ("netmaker", "networking", "wireguard", "openflow", "lxc")
_NETMAKER_KEYS = ("interface", "bridge", "mode", "network", "server")
_WIREGUARD_KEYS = ("interface", "enabled", "post_up", "pre_down",
                   "listen_port", "ip_pool", "auto_provision")
_CONTAINER_KEYS = ("id", "veth", "bridge", "running", "properties")
_PROPERTY_KEYS = ("name", "ipv4_address", "gateway", "hwaddr", "template", "services")
_SERVICE_KEYS = ("name", "protocol", "port")
_PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class Uplink:
    """The netmaker interface or the warp tunnel, and the bridge it is added to."""
    interface: str
    bridge: str
    role: Role
    at: At  # where the interface is named
    bridge_at: At  # where its bridge is named


@dataclass(frozen=True)
class _Tunnel:
    """One `wireguard.<name>` entry."""
    name: str
    interface: str
    enabled: bool
    bridge: Optional[str]  # the bridge its post_up adds it to
    at: At  # the entry


@dataclass(frozen=True)
class _VethEnd:
    name: str
    bridge: str
    peer: str
    at: At  # the peer1/peer2 mapping


@dataclass(frozen=True)
class ContainerEntry:
    at: At  # the lxc.containers[i] entry
    id: str
    name: Optional[str]
    veth: Optional[str]
    bridge: Optional[str]
    interface: Optional[IPNetwork]  # the address with its prefix
    gateway: Optional[IPAddress]
    hwaddr: Optional[str]
    services: tuple  # of Service, those that are valid
    offers_services: bool  # whether it lists any, valid or not

    @property
    def address_at(self) -> At:
        return self.at["properties"]["ipv4_address"]



@dataclass(frozen=True)
class Seed:
    """Everything read from the file, each field checked on its own."""
    root: At
    netmaker: Optional[Uplink]
    tunnels: tuple  # of _Tunnel
    veth_pairs: tuple  # of (at, (_VethEnd, _VethEnd))
    openflow: dict  # bridge name -> (at, tuple of (at, SeedFlow or None))
    containers: tuple  # of ContainerEntry
    options: Options

    @property
    def containers_readable(self) -> bool:
        """Whether lxc.containers is a list: if not, what the containers would
        have decided (roles, gateways) cannot be checked."""
        return isinstance(self.root["lxc"]["containers"].value, list)


def read_seed(f: Reader, root: At) -> Seed:
    f.table(root, _SECTIONS + _IGNORED_SECTIONS, required=_REQUIRED_SECTIONS)
    return Seed(
        root=root,
        netmaker=_read_netmaker(f, root["netmaker"]),
        tunnels=tuple(_read_wireguard(f, root["wireguard"])),
        veth_pairs=tuple(_read_veth_pairs(f, root["networking"])),
        openflow=_read_openflow(f, root["openflow"]),
        containers=tuple(_read_containers(f, root["lxc"])),
        options=read_socketnet(f, root["socketnet"]),
    )


def _read_netmaker(f: Reader, at: At) -> Optional[Uplink]:
    if not f.table(at, _NETMAKER_KEYS, required=("interface", "bridge")):
        return None
    interface, bridge = f.ifname(at["interface"]), f.ifname(at["bridge"])
    if interface is None or bridge is None:
        return None
    return Uplink(interface, bridge, Role.NETMAKER_UPLINK, at["interface"], at["bridge"])


def _read_wireguard(f: Reader, section: At) -> Iterator[_Tunnel]:
    for name, at in f.named(section):
        if not f.table(at, _WIREGUARD_KEYS, required=("interface",)):
            continue
        interface = f.ifname(at["interface"])
        enabled = f.flag(at["enabled"])
        if interface is None:
            continue
        bridge = _enslaving_bridge(f, at["post_up"], interface)
        yield _Tunnel(name, interface, enabled is not False, bridge, at)


def _enslaving_bridge(f: Reader, at: At, interface: str) -> Optional[str]:
    """The bridge a wg-quick PostUp adds `interface` to with `ovs-vsctl add-port`."""
    command = f.text(at)
    if command is None:
        return None
    try:
        lexer = shlex.shlex(command.replace("%i", interface), posix=True,
                            punctuation_chars=";&|")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError as e:
        f.error(at, f"cannot read as a shell command: {e}")
        return None
    added = list(_ovs_vsctl_add_ports(words))
    bridges = {bridge for bridge, port in added if port == interface}
    if len(bridges) > 1:
        f.error(at, f"adds {interface} to more than one bridge: {', '.join(sorted(bridges))}")
        return None
    if not bridges and added:
        bridge, port = added[0]
        f.error(at, f"adds {port!r} to {bridge}, not this entry's interface {interface!r}")
        return None
    return bridges.pop() if bridges else None


def _ovs_vsctl_add_ports(words: list) -> Iterator[tuple]:
    """(bridge, port) of every `add-port` in the ovs-vsctl commands among `words`
    (shell words, with ;, && and | as words of their own)."""
    commands, current = [], []
    for word in words + [";"]:
        if word and set(word) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    for command in commands:
        starts = [i for i, word in enumerate(command) if word.rsplit("/", 1)[-1] == "ovs-vsctl"]
        if not starts:
            continue
        # ovs-vsctl runs several commands separated by "--"; options start with "-".
        arguments, skip_next = [[]], False
        for word in command[starts[0] + 1:]:
            if skip_next:
                skip_next = False
            elif word == "--":
                arguments.append([])
            elif word in ("-t", "--timeout", "--db"):
                skip_next = True
            elif not word.startswith("-"):
                arguments[-1].append(word)
        for args in arguments:
            if len(args) >= 3 and args[0] == "add-port":
                yield args[1], args[2]


def _read_veth_pairs(f: Reader, networking: At) -> Iterator[tuple]:
    if not f.table(networking, ("veth_pairs",), required=("veth_pairs",)):
        return
    for _, at in f.named(networking["veth_pairs"]):
        if not f.table(at, ("peer1", "peer2"), required=("peer1", "peer2")):
            continue
        ends = []
        for end in (at["peer1"], at["peer2"]):
            if f.table(end, ("name", "bridge"), required=("name", "bridge")):
                name, bridge = f.ifname(end["name"]), f.ifname(end["bridge"])
                if name and bridge:
                    ends.append((name, bridge, end))
        if len(ends) == 2:
            (name1, bridge1, at1), (name2, bridge2, at2) = ends
            yield at, (_VethEnd(name1, bridge1, name2, at1), _VethEnd(name2, bridge2, name1, at2))


def _read_openflow(f: Reader, openflow: At) -> dict:
    bridges = {}
    if not f.table(openflow, ("bridges",), required=("bridges",)):
        return bridges
    for name, at in f.named(openflow["bridges"]):
        flows = []
        if f.table(at, ("flows",)):
            for flow_at in f.sequence(at["flows"]):
                try:
                    flows.append((flow_at, seedflows.parse(name, flow_at.value)))
                except seedflows.SeedFlowError as e:
                    f.error(flow_at, str(e))
                    flows.append((flow_at, None))
        bridges[name] = (at, tuple(flows))
    return bridges


def _read_containers(f: Reader, lxc: At) -> Iterator[ContainerEntry]:
    if not f.table(lxc, ("containers",), required=("containers",)):
        return
    for at in f.sequence(lxc["containers"]):
        if not f.table(at, _CONTAINER_KEYS, required=("id", "veth", "bridge", "properties")):
            continue
        props = at["properties"]
        f.table(props, _PROPERTY_KEYS, required=("name", "ipv4_address"))
        container_id = f.identifier(at["id"])
        if container_id is None:
            continue
        interface = f.ipv4_interface(props["ipv4_address"])
        gateway = f.ipv4_address(props["gateway"])
        if interface is not None:
            _check_container_address(f, props, interface, gateway)
        yield ContainerEntry(
            at=at, id=container_id, name=f.text(props["name"]), veth=f.ifname(at["veth"]),
            bridge=f.ifname(at["bridge"]), interface=interface, gateway=gateway,
            hwaddr=f.mac(props["hwaddr"]), services=_read_services(f, props["services"]),
            offers_services=bool(props["services"].present and props["services"].value))


def _check_container_address(f: Reader, props: At, interface: IPNetwork,
                             gateway: Optional[IPAddress]) -> None:
    if interface.prefixlen < 31 and interface.ip in (interface.network, interface.broadcast):
        which = "network" if interface.ip == interface.network else "broadcast"
        f.error(props["ipv4_address"], f"{interface.ip} is the {which} address of "
                                       f"{interface.cidr}, not a host's")
    if gateway is not None and gateway not in interface.cidr:
        f.error(props["gateway"], f"not inside the container's subnet {interface.cidr}")
    elif gateway is not None and gateway == interface.ip:
        f.error(props["gateway"], "is the container's own address")


def _read_services(f: Reader, services: At) -> tuple:
    found = []
    for at in f.sequence(services):
        if f.table(at, _SERVICE_KEYS, required=_SERVICE_KEYS):
            name, protocol, port = (f.text(at["name"]), f.choice(at["protocol"], _PROTOCOLS),
                                    f.port_number(at["port"]))
            if None not in (name, protocol, port):
                found.append(Service(name, protocol, port))
    return tuple(found)


