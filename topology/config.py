"""Reading a host's config: one YAML or JSON file becomes a `topology.model.Host`.

This module owns the config file: reading it, validating every field, and
deriving the bridges, their ports and the ports' roles. What the flows are is
not its business (see the pipeline compiler); what the seed's own flow lines
mean is `topology.seedflows`.

API
---
    load_host(path) -> Host               the host, or ConfigError with every issue
    check_file(path) -> CheckResult       (host or None, errors, warnings)
    check(path) -> list[ConfigIssue]      just the errors
    ConfigIssue(file, path, value, message)
        one problem at one field; str() reads
        "seed.yaml: lxc.containers[2].properties.ipv4_address = '10.0.0.300/24': not ..."
        `value` is ABSENT when the field is missing or the problem is the whole file.
    ConfigError(ValueError)               .issues; str() is one issue per line
    derived_mac(IPAddress) -> str         the MAC of a container that names none
    SEED_CONFIG                           the seed's host (topology/seed.yaml, shipped
                                          with the package): the labs' and demo's default

All errors of a file are collected in one pass. Warnings are only computed for
a file without errors: one per seed flow, saying what socketnet does instead
(`topology.seedflows.assess`).

The file
--------
The shape is the seed's `services.op-dbus.stateConfig`, so that
`builtins.toJSON` of it loads as it is (`.json` is read as JSON, anything else
as YAML), plus a `socketnet:` section. Inside the sections socketnet reads,
unknown keys are errors; `null` is the same as leaving a key out. What
socketnet reads:

    netmaker.interface, .bridge         the netmaker uplink and the mesh bridge
                                        (.mode, .network, .server: ignored)
    wireguard.<x>.interface, .enabled, .post_up
                                        a tunnel whose post_up runs
                                        `ovs-vsctl [opts] add-port BRIDGE IFACE` is
                                        the warp uplink and BRIDGE the privacy
                                        bridge; one on no bridge, or disabled, is
                                        not managed (Host.ignored)
                                        (.pre_down, .listen_port, .ip_pool,
                                        .auto_provision: ignored)
    networking.veth_pairs.<x>.peer1/peer2.name, .bridge
                                        the inter-bridge link (exactly one pair,
                                        one end on each bridge)
    openflow.bridges.<bridge>.flows     exactly the mesh and privacy bridges; the
                                        flows are parsed and checked, never installed
    lxc.containers[].id, .veth, .bridge, .properties.name, .ipv4_address
                    (addr/prefix), .gateway, .hwaddr, .services[].name/.protocol/.port
                                        (.running, .properties.template: ignored)
    systemd, packagekit                 accepted, ignored

Port roles: the netmaker interface is the netmaker uplink; the warp tunnel the
warp uplink; the veth pair ends are the inter-bridge link; a container on the
mesh bridge is management, on the privacy bridge it is the privacy proxy (the
xray client) if it offers services and privacy otherwise. Exactly one netmaker
uplink, warp uplink, inter-bridge link and privacy proxy. Uplinks are l3
(WireGuard) unless told otherwise and reach their bridge through an adapter
port whose address is the gateway of the bridge's containers. A container's MAC
is `properties.hwaddr`, else 02:00 followed by its IPv4 address's four bytes.
A bridge's ports are in the order uplink, inter-bridge, containers as listed.

The socketnet section
---------------------
Every key is optional.

| key                          | value                            | default                        |
|------------------------------|----------------------------------|--------------------------------|
| openflow.listen              | "HOST:PORT" or "[IPv6]:PORT"     | 127.0.0.1:6653                 |
| openflow.echo_interval       | seconds, > 0                     | 2                              |
| openflow.echo_misses         | integer, >= 1                    | 3                              |
| openflow.role                | primary or standby               | primary                        |
| openflow.peer                | "HOST:PORT" (with standby)       | none                           |
| reconcile_timeout            | seconds, > 0                     | 10                             |
| netmaker_ranges              | list of IPv4 networks            | 10.101.0.0/16, 100.64.0.0/10   |
| nodes[].name                 | string, one per node             | no nodes                       |
| nodes[].subnets              | list of IPv4 networks            |                                |
| privacy.blocked_destinations | list of IPv4 networks            | model.DEFAULT_PRIVACY_BLOCKED  |
| ports.<iface>.kind           | l2 or l3                         | l3                             |
| ports.<iface>.adapter        | interface name (l3 only)         | <bridge>-gw                    |
| ports.<iface>.address        | addr/prefix (l3 only)            | the containers' gateway/prefix |
| ports.<iface>.mac            | MAC address                      | learned from the switch        |
| ports.<iface>.bridge         | bridge name (wireguard only)     | the bridge post_up adds it to  |
| containers."<id>".role       | management/privacy/privacy-proxy | from bridge and services       |
| containers."<id>".mac        | MAC address                      | hwaddr, or 02:00+IPv4 bytes    |
| metrics.listen               | "HOST:PORT"                      | 127.0.0.1:9640                 |
| metrics.stats_interval       | seconds, > 0                     | 10                             |
| rest.listen                  | "HOST:PORT"                      | 127.0.0.1:9641                 |
| rest.token_env               | environment variable name        | SOCKETNET_TOKEN                |
| rest.token_file              | path of a file holding the token | none                           |
| rest.open_reads              | true or false                    | false                          |
| rest.ovs_ctl                 | path of ovs-vswitchd's control socket | found in $OVS_RUNDIR      |

- openflow.listen: where the controller accepts the bridges' OpenFlow connections.
- openflow.echo_interval, echo_misses: a bridge that leaves echo_misses echo
  requests, sent every echo_interval seconds, unanswered counts as gone.
- openflow.role, peer: two socketnet instances for one host, both set as the
  bridges' controllers. The primary claims the OpenFlow master role; a standby
  stays slave (it writes nothing) and claims master, with a newer generation id,
  only while the primary's OpenFlow address (peer) does not answer.
- reconcile_timeout: seconds allowed to bring a bridge's flow table to the
  desired state.
- netmaker_ranges: where Netmaker peers live.
- nodes: other socketnet hosts and the subnets behind them, which management
  containers reach over Netmaker.
- privacy.blocked_destinations: where privacy traffic may never go through warp.
- ports.<iface>: an uplink, by its seed interface name (netmaker.interface or
  a wireguard interface). An l3 uplink reaches its bridge through the adapter
  port; the adapter's address must be the containers' gateway if they name one,
  and must be given if none does. `mac` is the adapter's (l3) or the far end's
  (l2). `bridge` enslaves a wireguard interface without a post_up.
- containers."<id>": overrides for the container with that id.
- metrics: where Prometheus scrapes /metrics, and how often flow, port and
  table statistics are polled from the switches.
- rest: the flow-debug API. Every endpoint needs `Authorization: Bearer TOKEN`
  (the token from token_file, else from the environment variable token_env);
  with open_reads, reading endpoints need none. No token configured: only the
  open endpoints answer. ovs_ctl: where trace and audit reach ovs-vswitchd
  (else $SOCKETNET_OVS_CTL, else ovs-vswitchd.ctl or ovs-vswitchd.<pid>.ctl in
  $OVS_RUNDIR, default /var/run/openvswitch).

The management and privacy subnets may not overlap each other, the Netmaker
ranges or the nodes' subnets.

socketnet.classification
------------------------
How the mesh bridge decides Netmaker ingress: every such packet passes the
connection tracker in socketnet's zone (`conntrack_zone`). A connection with a
decision carries it as its ct_mark, and static flows send it on its class's
path; the first packet of a connection without one goes to socketnet, which
decides privacy, management or drop (`controller.classifier`) and commits the
connection with that class. Every key is optional.

| key (under classification)   | value                                          | default |
|------------------------------|------------------------------------------------|---------|
| default |
|------------------------------|------------------------------------------------|---------|
| default                      | privacy, management or drop                    | drop    |
| idle_timeout                 | seconds, 1..65535                              | 60      |
| conntrack_zone               | zone, 1..65534                                 | 21326   |
| seed_services                | true or false                                  | true    |
| rules[].name                 | string, unique (required)                      |         |
| rules[].class                | privacy, management or drop (required)         |         |
| rules[].src, rules[].dst     | list of IPv4 addresses or networks             | any     |
| rules[].protocol             | tcp, udp, icmp or any                          | any     |
| rules[].src_ports, dst_ports | list of ports and "low-high" ranges (tcp, udp) | any     |
| limits.cached_total          | integer, 1..10000000                           | 100000  |
| limits.cached_per_source     | integer, 1..cached_total                       | 1000    |
| limits.cached_unknown        | integer, 1..cached_total                       | 20000 (at most cached_total) |
| limits.packet_in_rate        | packets/s, 1..10000000                         | 1000    |
| limits.packet_in_burst       | packets, 0..10000000                           | 200     |
| limits.queue                 | packet-ins, 1..1000000                         | 1024    |
| limits.over_limit.action     | drop                                           | drop    |
| limits.over_limit.seconds    | seconds, 1..65535                              | 30      |
| limits.ingress_rate          | new flows/s, 0..10000000 (0: off)              | 2000    |
| limits.ingress_per_source    | new flows/s, 0..10000000 (0: off)              | 200     |
| limits.ingress_peer_rate     | datagrams/s, 0..100000000 (0: off)             | 100000  |
| limits.ingress_wireguard_port | UDP port, 1..65535                            | 51821   |

- The first rule that matches decides; then, with seed_services, the seed's own
  services: a service of the xray client is privacy, a service of a management
  container is management; then `default`.
- idle_timeout: how long a connection with no packets keeps its decision: the
  zone's timeout policy (`socketnet host apply`) for TCP established and every
  UDP and ICMP state. The connection tracker has no absolute lifetime, so the
  keys `hard_timeout` and `granularity` (one decision per host pair) of earlier
  versions are read, warned about and have no effect.
- conntrack_zone: the mesh's zone; vmbr0 uses the next one. Pick others if
  something else on the host uses these zones.
- A privacy rule's dst must lie within the xray client's address (W1), a
  management rule's within the management subnet (W5). Whatever a rule says,
  socketnet decides privacy only for a Netmaker source reaching an xray client
  service, and management only for a management container's address; anything
  else is dropped as unroutable.
- Rule names "default", "unroutable" and "service:..." are socketnet's own.
- limits: cached_total is the zone's connection limit, set in the datapath;
  cached_per_source caps the decisions one source holds at a time, and a
  source over it is dropped in the switch for over_limit.seconds.
  cached_unknown caps the decisions of sources that are not known (other
  nodes, sources of privacy and management rules): a flood of random sources
  fills that share and no more, and known sources go on being decided. The
  controller enforces both shares before it commits, counting a decision as
  held for idle_timeout (it does not see connections end). packet_in_rate and
  packet_in_burst are the meter in front of the controller; queue bounds the
  packet-ins waiting to be decided.
- ingress_rate and ingress_per_source police new Netmaker-ingress flows in
  the host's nftables (`socketnet host apply`; run it again after changing
  them or the known sources), before they reach the mesh adapter: known sources (other nodes, sources of privacy and management
  rules) get ingress_rate of their own; every other source at most
  ingress_per_source, and all of them together ingress_rate. A flood is cut
  there, where it is cheap, and cannot fill the switch's receive queue, where
  a known source's first packet would be lost with it.
- ingress_peer_rate: WireGuard datagrams a second that one Netmaker peer (by
  its endpoint address and port) may send to the uplink's UDP port
  (ingress_wireguard_port, Netmaker's 51821), dropped in nftables before
  WireGuard decrypts them: one flooding peer cannot fill the WireGuard
  receiver's queue, where every other peer's packets would be lost with its
  own. Set it below what the host's WireGuard decrypts in all.
"""
from __future__ import annotations

import json
import re
import reprlib
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional

from netaddr import EUI, AddrFormatError, IPAddress, IPNetwork, IPSet, mac_unix_expanded

from topology import seedflows
from topology.document import load as _load
from topology.model import (
    DEFAULT_NETMAKER_RANGES, DEFAULT_PRIVACY_BLOCKED, RULE_PROTOCOLS, Bridge, Classification,
    ClassificationLimits, ClassRule, Container, Host, Kind, Node, Port, Role,
    Service, Settings, TrafficClass,
)

SEED_CONFIG = str(Path(__file__).resolve().parent / "seed.yaml")


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # ConfigIssue.value of a missing field or a whole-file problem


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, at one field."""
    file: str
    path: str  # "lxc.containers[2].properties.ipv4_address"; "" for the whole file
    value: Any = field(hash=False)  # the offending value as the file has it, or ABSENT
    message: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        if self.value is ABSENT:
            return f"{where}: {self.message}"
        value = _REPR.repr(self.value)  # bounded: never the whole of a big value
        if len(value) > _LONGEST_VALUE:
            value = value[:_LONGEST_VALUE - 3] + "..."
        return f"{where} = {value}: {self.message}"


_LONGEST_VALUE = 60  # a mapping or list given where a scalar belongs can be long
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 80, 80


class ConfigError(ValueError):
    """A config file socketnet cannot run from; `.issues` says everything wrong with it."""

    def __init__(self, issues: list):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class CheckResult:
    host: Optional[Host]  # None when there are errors
    errors: list
    warnings: list  # of ConfigIssue: retired keys; seed flows socketnet does not install as written


def load_host(path) -> Host:
    """The host described by the config file at `path`; ConfigError if it has errors."""
    result = check_file(path)
    if result.errors:
        raise ConfigError(result.errors)
    return result.host


def check(path) -> list:
    """Every error in the config file at `path` (empty when it is good)."""
    return check_file(path).errors


def check_file(path) -> CheckResult:
    """Read, validate and build the host; report errors and warnings."""
    file = str(path)
    data, problem = _load(file)
    if problem:
        return CheckResult(None, [ConfigIssue(file, "", ABSENT, problem)], [])
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"the top is {_kind(data)}"
        return CheckResult(None, [ConfigIssue(
            file, "", ABSENT, f"{what}; expected the stateConfig mapping")], [])
    reader = _Reader(file)
    host = _build_host(reader, _read_seed(reader, _At("", data)), file)
    if reader.issues:
        return CheckResult(None, reader.issues, [])
    return CheckResult(host, [], reader.warnings + _flow_warnings(file, host))


# --- the file --------------------------------------------------------------


# The file itself is read by topology.document (bounded size, depth and alias
# expansion; duplicate keys refused).


# --- walking the data ------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class _At:
    """A value in the file and the field path that leads to it."""
    path: str
    value: Any

    def __getitem__(self, key: str) -> "_At":
        """The value under `key` of this mapping; ABSENT if there is none (or null)."""
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return _At(self.key_path(key), ABSENT if value is None else value)

    def key_path(self, key) -> str:
        part = str(key)
        part = part if _PLAIN_KEY.match(part) else json.dumps(part)
        return f"{self.path}.{part}" if self.path else part

    def index(self, i: int) -> "_At":
        return _At(f"{self.path}[{i}]", self.value[i])

    @property
    def present(self) -> bool:
        return self.value is not ABSENT


def _kind(value) -> str:
    for python_type, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                              (str, "a string"), (list, "a list"), (dict, "a mapping")):
        if isinstance(value, python_type):
            return name
    return "null" if value is None else type(value).__name__


class _Reader:
    """Reads one file's data field by field. A value that is not what it should
    be becomes a ConfigIssue naming its field path, and the read returns None,
    so the caller carries on with the rest. An absent field reads as None
    without an issue: tables say which fields are required."""

    def __init__(self, file: str):
        self.file = file
        self.issues: list = []
        self.warnings: list = []

    def error(self, at: _At, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, at.path, at.value, message))

    def warn(self, at: _At, message: str) -> None:
        """Not an error: the file loads, and `check` says this."""
        self.warnings.append(ConfigIssue(self.file, at.path, at.value, message))

    def lacking(self, at: _At, message: str) -> None:
        """An error about what a section lacks, rather than about its value."""
        self.issues.append(ConfigIssue(self.file, at.path, ABSENT, message))

    def table(self, at: _At, keys, required=()) -> bool:
        """Whether `at` is a mapping; reports keys not in `keys` and missing `required` ones."""
        if not at.present:
            return False
        if not isinstance(at.value, dict):
            self.error(at, f"expected a mapping, got {_kind(at.value)}")
            return False
        for key, value in at.value.items():
            if key not in keys:
                where = at.path or "the top level"
                self.error(_At(at.key_path(key), value),
                           f"unknown key; {where} takes {', '.join(sorted(keys))}")
        for key in required:
            if not at[key].present:
                self.error(at[key], "required, but missing")
        return True

    def named(self, at: _At) -> Iterator:
        """(name, value) for each entry of a mapping whose keys are names."""
        if not at.present:
            return
        if not isinstance(at.value, dict):
            self.error(at, f"expected a mapping of names, got {_kind(at.value)}")
            return
        for key, value in at.value.items():
            yield str(key), _At(at.key_path(key), ABSENT if value is None else value)

    def sequence(self, at: _At) -> Iterator:
        if not at.present:
            return
        if not isinstance(at.value, list):
            self.error(at, f"expected a list, got {_kind(at.value)}")
            return
        for i in range(len(at.value)):
            yield at.index(i)

    def text(self, at: _At) -> Optional[str]:
        if not at.present:
            return None
        if not isinstance(at.value, str) or not at.value.strip():
            self.error(at, f"expected a non-empty string, got {_kind(at.value)}")
            return None
        return at.value

    def identifier(self, at: _At) -> Optional[str]:
        """A container id: a string, or an integer as YAML reads an unquoted one."""
        if isinstance(at.value, int) and not isinstance(at.value, bool):
            return str(at.value)
        return self.text(at)

    def flag(self, at: _At) -> Optional[bool]:
        if not at.present:
            return None
        if not isinstance(at.value, bool):
            self.error(at, f"expected true or false, got {_kind(at.value)}")
            return None
        return at.value

    def integer(self, at: _At, low: int, high: int) -> Optional[int]:
        if not at.present:
            return None
        if not isinstance(at.value, int) or isinstance(at.value, bool):
            self.error(at, f"expected an integer, got {_kind(at.value)}")
            return None
        if not low <= at.value <= high:
            self.error(at, f"not in {low}..{high}")
            return None
        return at.value

    def seconds(self, at: _At) -> Optional[float]:
        if not at.present:
            return None
        if not isinstance(at.value, (int, float)) or isinstance(at.value, bool):
            self.error(at, f"expected a number of seconds, got {_kind(at.value)}")
            return None
        if at.value <= 0:
            self.error(at, "must be more than 0")
            return None
        return float(at.value)

    def port_number(self, at: _At) -> Optional[int]:
        return self.integer(at, 1, 65535)

    def choice(self, at: _At, options) -> Optional[str]:
        value = self.text(at)
        if value is not None and value not in options:
            self.error(at, f"must be one of {', '.join(options)}")
            return None
        return value

    def ifname(self, at: _At) -> Optional[str]:
        """A Linux interface name: 1 to 15 characters, no '/', ':' or whitespace."""
        name = self.text(at)
        if name is None:
            return None
        if len(name) > 15 or name in (".", "..") or re.search(r"[/:\s]", name):
            self.error(at, "not a valid interface name (1 to 15 characters, no '/', ':' "
                           "or whitespace)")
            return None
        return name

    def ipv4_address(self, at: _At) -> Optional[IPAddress]:
        text = self.text(at)
        if text is None:
            return None
        try:
            return IPAddress(text, 4)
        except (AddrFormatError, ValueError):
            self.error(at, "not an IPv4 address")
            return None

    def ipv4_interface(self, at: _At) -> Optional[IPNetwork]:
        """An address with its prefix, "10.0.0.100/24"."""
        return self._prefixed(at, "not an IPv4 interface address (addr/prefix)")

    def ipv4_network(self, at: _At) -> Optional[IPNetwork]:
        """A network, "10.0.0.0/24": no host bits set."""
        network = self._prefixed(at, "not an IPv4 network (addr/prefix)")
        if network is not None and network.ip != network.network:
            self.error(at, f"host bits are set; the network is {network.cidr}")
            return None
        return network

    def _prefixed(self, at: _At, message: str) -> Optional[IPNetwork]:
        text = self.text(at)
        if text is None:
            return None
        address, slash, prefix = text.partition("/")
        try:
            if not (slash and prefix.isdigit() and 0 <= int(prefix) <= 32):
                raise ValueError(prefix)
            return IPNetwork(f"{IPAddress(address, 4)}/{int(prefix)}")
        except (AddrFormatError, ValueError):
            self.error(at, message)
            return None

    def address_set(self, at: _At) -> Optional[IPSet]:
        """A non-empty list of IPv4 addresses and networks, as one IPSet."""
        items = list(self.sequence(at))
        if at.present and isinstance(at.value, list) and not items:
            self.error(at, "an empty list matches nothing; leave the key out to match any")
            return None
        nets = []
        for item in items:
            if isinstance(item.value, str) and "/" in item.value:
                nets.append(self.ipv4_network(item))
            else:
                address = self.ipv4_address(item)
                nets.append(IPNetwork(f"{address}/32") if address is not None else None)
        if not nets or None in nets:
            return None
        return IPSet(nets)

    def port_ranges(self, at: _At) -> Optional[tuple]:
        """A non-empty list of ports and "low-high" ranges, as (low, high) pairs."""
        items = list(self.sequence(at))
        if at.present and isinstance(at.value, list) and not items:
            self.error(at, "an empty list matches nothing; leave the key out to match any")
            return None
        ranges = []
        for item in items:
            value = item.value
            if isinstance(value, int) and not isinstance(value, bool):
                low = high = value
            elif isinstance(value, str) and re.fullmatch(r"\d+(-\d+)?", value.strip()):
                low, _, high = value.strip().partition("-")
                low, high = int(low), int(high or low)
            else:
                self.error(item, 'expected a port or a range "low-high"')
                ranges.append(None)
                continue
            if not 1 <= low <= high <= 65535:
                self.error(item, "not a port range within 1..65535 with low <= high")
                ranges.append(None)
                continue
            ranges.append((low, high))
        if not ranges or None in ranges:
            return None
        return tuple(ranges)

    def mac(self, at: _At) -> Optional[str]:
        """A unicast MAC address, as "02:00:0a:01:00:c8"."""
        if not at.present:
            return None
        if isinstance(at.value, int) and not isinstance(at.value, bool):
            self.error(at, "expected a MAC address, got an integer: YAML reads an unquoted MAC "
                           "of digits and colons as a base-60 number; quote it")
            return None
        text = self.text(at)
        if text is None:
            return None
        try:
            mac = EUI(text, version=48, dialect=mac_unix_expanded)
        except (AddrFormatError, ValueError, TypeError):
            self.error(at, "not a MAC address")
            return None
        if mac.words[0] & 1:
            self.error(at, "a multicast MAC address cannot be a port's")
            return None
        return str(mac)

    def listen(self, at: _At) -> Optional[tuple]:
        """"HOST:PORT" (or "[IPv6]:PORT") as (host, port)."""
        text = self.text(at)
        if text is None:
            return None
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host, version = host[1:-1], 6
        else:
            version = 4
        try:
            IPAddress(host, version)
            if not (sep and port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(port)
        except (AddrFormatError, ValueError):
            self.error(at, "not HOST:PORT (an IPv4 address, or [IPv6], and a port 1..65535)")
            return None
        return host, int(port)


# --- the seed's sections ---------------------------------------------------

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
class _Uplink:
    """The netmaker interface or the warp tunnel, and the bridge it is added to."""
    interface: str
    bridge: str
    role: Role
    at: _At  # where the interface is named
    bridge_at: _At  # where its bridge is named


@dataclass(frozen=True)
class _Tunnel:
    """One `wireguard.<name>` entry."""
    name: str
    interface: str
    enabled: bool
    bridge: Optional[str]  # the bridge its post_up adds it to
    at: _At  # the entry


@dataclass(frozen=True)
class _VethEnd:
    name: str
    bridge: str
    peer: str
    at: _At  # the peer1/peer2 mapping


@dataclass(frozen=True)
class _ContainerEntry:
    at: _At  # the lxc.containers[i] entry
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
    def address_at(self) -> _At:
        return self.at["properties"]["ipv4_address"]


@dataclass(frozen=True)
class _PortOptions:
    """socketnet.ports.<interface>."""
    at: _At
    kind: Optional[Kind]
    adapter: Optional[str]
    address: Optional[IPNetwork]
    mac: Optional[str]
    bridge: Optional[str]


@dataclass(frozen=True)
class _ContainerOptions:
    """socketnet.containers."<id>"."""
    at: _At
    role: Optional[Role]
    mac: Optional[str]


@dataclass(frozen=True)
class _Options:
    """The socketnet section."""
    settings: Settings
    netmaker_ranges: tuple  # of IPNetwork
    nodes: tuple  # of Node
    privacy_blocked: tuple  # of IPNetwork
    beyond: tuple  # (IPNetwork, what) the local subnets may not overlap
    ports: dict  # interface -> _PortOptions
    containers: dict  # container id -> _ContainerOptions
    classification: Classification
    rules_at: tuple  # of _At: where each of classification.rules is written


@dataclass(frozen=True)
class _Seed:
    """Everything read from the file, each field checked on its own."""
    root: _At
    netmaker: Optional[_Uplink]
    tunnels: tuple  # of _Tunnel
    veth_pairs: tuple  # of (at, (_VethEnd, _VethEnd))
    openflow: dict  # bridge name -> (at, tuple of (at, SeedFlow or None))
    containers: tuple  # of _ContainerEntry
    options: _Options

    @property
    def containers_readable(self) -> bool:
        """Whether lxc.containers is a list: if not, what the containers would
        have decided (roles, gateways) cannot be checked."""
        return isinstance(self.root["lxc"]["containers"].value, list)


def _read_seed(f: _Reader, root: _At) -> _Seed:
    f.table(root, _SECTIONS + _IGNORED_SECTIONS, required=_REQUIRED_SECTIONS)
    return _Seed(
        root=root,
        netmaker=_read_netmaker(f, root["netmaker"]),
        tunnels=tuple(_read_wireguard(f, root["wireguard"])),
        veth_pairs=tuple(_read_veth_pairs(f, root["networking"])),
        openflow=_read_openflow(f, root["openflow"]),
        containers=tuple(_read_containers(f, root["lxc"])),
        options=_read_socketnet(f, root["socketnet"]),
    )


def _read_netmaker(f: _Reader, at: _At) -> Optional[_Uplink]:
    if not f.table(at, _NETMAKER_KEYS, required=("interface", "bridge")):
        return None
    interface, bridge = f.ifname(at["interface"]), f.ifname(at["bridge"])
    if interface is None or bridge is None:
        return None
    return _Uplink(interface, bridge, Role.NETMAKER_UPLINK, at["interface"], at["bridge"])


def _read_wireguard(f: _Reader, section: _At) -> Iterator[_Tunnel]:
    for name, at in f.named(section):
        if not f.table(at, _WIREGUARD_KEYS, required=("interface",)):
            continue
        interface = f.ifname(at["interface"])
        enabled = f.flag(at["enabled"])
        if interface is None:
            continue
        bridge = _enslaving_bridge(f, at["post_up"], interface)
        yield _Tunnel(name, interface, enabled is not False, bridge, at)


def _enslaving_bridge(f: _Reader, at: _At, interface: str) -> Optional[str]:
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


def _read_veth_pairs(f: _Reader, networking: _At) -> Iterator[tuple]:
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


def _read_openflow(f: _Reader, openflow: _At) -> dict:
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


def _read_containers(f: _Reader, lxc: _At) -> Iterator[_ContainerEntry]:
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
        yield _ContainerEntry(
            at=at, id=container_id, name=f.text(props["name"]), veth=f.ifname(at["veth"]),
            bridge=f.ifname(at["bridge"]), interface=interface, gateway=gateway,
            hwaddr=f.mac(props["hwaddr"]), services=_read_services(f, props["services"]),
            offers_services=bool(props["services"].present and props["services"].value))


def _check_container_address(f: _Reader, props: _At, interface: IPNetwork,
                             gateway: Optional[IPAddress]) -> None:
    if interface.prefixlen < 31 and interface.ip in (interface.network, interface.broadcast):
        which = "network" if interface.ip == interface.network else "broadcast"
        f.error(props["ipv4_address"], f"{interface.ip} is the {which} address of "
                                       f"{interface.cidr}, not a host's")
    if gateway is not None and gateway not in interface.cidr:
        f.error(props["gateway"], f"not inside the container's subnet {interface.cidr}")
    elif gateway is not None and gateway == interface.ip:
        f.error(props["gateway"], "is the container's own address")


def _read_services(f: _Reader, services: _At) -> tuple:
    found = []
    for at in f.sequence(services):
        if f.table(at, _SERVICE_KEYS, required=_SERVICE_KEYS):
            name, protocol, port = (f.text(at["name"]), f.choice(at["protocol"], _PROTOCOLS),
                                    f.port_number(at["port"]))
            if None not in (name, protocol, port):
                found.append(Service(name, protocol, port))
    return tuple(found)


# --- the socketnet section -------------------------------------------------

_SOCKETNET_KEYS = ("openflow", "reconcile_timeout", "netmaker_ranges", "nodes", "privacy",
                   "ports", "containers", "classification", "metrics", "rest")
_PORT_OPTION_KEYS = ("kind", "adapter", "address", "mac", "bridge")
_CONTAINER_OPTION_KEYS = ("role", "mac")


def _read_socketnet(f: _Reader, at: _At) -> _Options:
    f.table(at, _SOCKETNET_KEYS)
    settings = _read_settings(f, at)

    netmaker_ranges = tuple(IPNetwork(n) for n in DEFAULT_NETMAKER_RANGES)
    beyond = [(n, f"the Netmaker range {n} (default of socketnet.netmaker_ranges)")
              for n in netmaker_ranges]
    if at["netmaker_ranges"].present:
        ranges = [(f.ipv4_network(r), r) for r in f.sequence(at["netmaker_ranges"])]
        netmaker_ranges = tuple(n for n, _ in ranges if n is not None)
        beyond = [(n, f"the Netmaker range {n} ({r.path})") for n, r in ranges if n is not None]

    nodes = []
    for node_at in f.sequence(at["nodes"]):
        if not f.table(node_at, ("name", "subnets"), required=("name", "subnets")):
            continue
        name = f.text(node_at["name"])
        if name is not None and name in (n.name for n in nodes):
            f.error(node_at["name"], "a second node of that name")
        subnets = []
        for subnet_at in f.sequence(node_at["subnets"]):
            subnet = f.ipv4_network(subnet_at)
            if subnet is not None:
                subnets.append(subnet)
                beyond.append((subnet, f"node {name}'s subnet {subnet} ({subnet_at.path})"))
        if name is not None:
            nodes.append(Node(name, tuple(subnets)))

    privacy_blocked = tuple(IPNetwork(n) for n in DEFAULT_PRIVACY_BLOCKED)
    if f.table(at["privacy"], ("blocked_destinations",)) and \
            at["privacy"]["blocked_destinations"].present:
        privacy_blocked = tuple(n for n in map(f.ipv4_network, f.sequence(
            at["privacy"]["blocked_destinations"])) if n is not None)

    ports = {}
    for name, port_at in f.named(at["ports"]):
        if f.table(port_at, _PORT_OPTION_KEYS):
            kind = f.choice(port_at["kind"], [k.value for k in Kind])
            ports[name] = _PortOptions(
                at=port_at, kind=Kind(kind) if kind else None,
                adapter=f.ifname(port_at["adapter"]), address=f.ipv4_interface(port_at["address"]),
                mac=f.mac(port_at["mac"]), bridge=f.ifname(port_at["bridge"]))

    containers = {}
    for container_id, options_at in f.named(at["containers"]):
        if f.table(options_at, _CONTAINER_OPTION_KEYS):
            role = f.choice(options_at["role"], [r.value for r in _CONTAINER_ROLE_NAMES])
            containers[container_id] = _ContainerOptions(
                at=options_at, role=Role(role) if role else None, mac=f.mac(options_at["mac"]))

    classification, rules_at = _read_classification(f, at["classification"])
    return _Options(settings, netmaker_ranges, tuple(nodes), privacy_blocked, tuple(beyond),
                    ports, containers, classification, rules_at)


_CONTAINER_ROLE_NAMES = (Role.MANAGEMENT, Role.PRIVACY, Role.PRIVACY_PROXY)


def _read_settings(f: _Reader, at: _At) -> Settings:
    openflow = at["openflow"]
    f.table(openflow, ("listen", "echo_interval", "echo_misses", "role", "peer"))
    changes = {}
    listen = f.listen(openflow["listen"])
    if listen:
        changes["ofp_listen_host"], changes["ofp_listen_port"] = listen
    role = f.choice(openflow["role"], ("primary", "standby"))
    if role:
        changes["role"] = role
    peer = f.listen(openflow["peer"])
    if peer:
        changes["peer"] = peer
    if role == "standby" and not openflow["peer"].present:
        f.error(openflow["role"], "a standby needs socketnet.openflow.peer: the primary's "
                                  "OpenFlow address, to know when to take over")
    for key, value in (("echo_interval", f.seconds(openflow["echo_interval"])),
                       ("echo_misses", f.integer(openflow["echo_misses"], 1, 1000)),
                       ("reconcile_timeout", f.seconds(at["reconcile_timeout"]))):
        if value is not None:
            changes[key] = value

    metrics = at["metrics"]
    f.table(metrics, ("listen", "stats_interval"))
    listen = f.listen(metrics["listen"])
    if listen:
        changes["metrics_listen_host"], changes["metrics_listen_port"] = listen
    interval = f.seconds(metrics["stats_interval"])
    if interval is not None:
        changes["stats_interval"] = interval

    rest = at["rest"]
    f.table(rest, ("listen", "token_env", "token_file", "open_reads", "ovs_ctl"))
    listen = f.listen(rest["listen"])
    if listen:
        changes["rest_listen_host"], changes["rest_listen_port"] = listen
    for key, value in (("rest_token_env", f.identifier(rest["token_env"])),
                       ("rest_token_file", f.text(rest["token_file"])),
                       ("rest_open_reads", f.flag(rest["open_reads"])),
                       ("rest_ovs_ctl", f.text(rest["ovs_ctl"]))):
        if value is not None:
            changes[key] = value
    return replace(Settings(), **changes)


_CLASSIFICATION_KEYS = ("default", "idle_timeout", "conntrack_zone", "seed_services", "rules",
                        "limits") + ("granularity", "hard_timeout")  # the last two: retired
_RETIRED = {
    "granularity": "has no effect: decisions live in the connection tracker, one per "
                   "connection (its 5-tuple); a host pair is not a connection",
    "hard_timeout": "has no effect: the connection tracker has no absolute lifetime; a "
                    "connection keeps its decision until idle for idle_timeout "
                    "(`socketnet cache flush` ends them all)",
}
_RULE_KEYS = ("name", "class", "src", "dst", "protocol", "src_ports", "dst_ports")
_LIMIT_KEYS = ("cached_total", "cached_per_source", "cached_unknown", "packet_in_rate",
               "packet_in_burst", "queue", "over_limit", "ingress_rate", "ingress_per_source",
               "ingress_peer_rate", "ingress_wireguard_port")
_OVER_LIMIT_KEYS = ("action", "seconds")
_OVER_LIMIT_ACTIONS = ("drop",)
_RESERVED_RULE_NAMES = ("default", "unroutable")
_SERVICE_RULE_PREFIX = "service:"  # the names of the rules seed_services implies
_CLASSES = tuple(c.value for c in TrafficClass)


def _read_classification(f: _Reader, at: _At) -> tuple:
    """(Classification, where each rule is written): the rules' syntax only;
    what their destinations may be is checked against the containers later
    (`_check_rule_reach`)."""
    if not f.table(at, _CLASSIFICATION_KEYS):
        return Classification(), ()
    changes = {}
    default = f.choice(at["default"], _CLASSES)
    if default is not None:
        changes["default"] = TrafficClass(default)
    for key, why in _RETIRED.items():
        if at[key].present:
            f.warn(at[key], why)
    for key, value in (("idle_timeout", f.integer(at["idle_timeout"], 1, 65535)),
                       ("conntrack_zone", f.integer(at["conntrack_zone"], 1, 65534)),
                       ("seed_services", f.flag(at["seed_services"]))):
        if value is not None:
            changes[key] = value

    rules, rules_at = [], []
    for rule_at in f.sequence(at["rules"]):
        rule = _read_rule(f, rule_at)
        if rule is None:
            continue
        if rule.name in (r.name for r in rules):
            f.error(rule_at["name"], "a second rule of that name")
            continue
        rules.append(rule)
        rules_at.append(rule_at)
    changes["rules"] = tuple(rules)
    changes["limits"] = _read_limits(f, at["limits"])
    return replace(Classification(), **changes), tuple(rules_at)


def _read_rule(f: _Reader, at: _At) -> Optional[ClassRule]:
    if not f.table(at, _RULE_KEYS, required=("name", "class")):
        return None
    name = f.text(at["name"])
    if name is not None and (name in _RESERVED_RULE_NAMES
                             or name.startswith(_SERVICE_RULE_PREFIX)):
        f.error(at["name"], f"reserved: socketnet names its own decisions "
                            f"{', '.join(_RESERVED_RULE_NAMES)} and {_SERVICE_RULE_PREFIX}...")
        name = None
    cls = f.choice(at["class"], _CLASSES)
    protocol = f.choice(at["protocol"], RULE_PROTOCOLS) if at["protocol"].present else "any"
    src, dst = f.address_set(at["src"]), f.address_set(at["dst"])
    src_ports, dst_ports = f.port_ranges(at["src_ports"]), f.port_ranges(at["dst_ports"])
    for key in ("src_ports", "dst_ports"):
        if at[key].present and protocol not in (None, "tcp", "udp"):
            f.error(at[key], f"ports need protocol tcp or udp; this rule's is {protocol}")
            return None
    fields = {"src": src, "dst": dst, "src_ports": src_ports, "dst_ports": dst_ports}
    if None in (name, cls, protocol) or any(
            value is None and at[key].present for key, value in fields.items()):
        return None
    return ClassRule(name=name, cls=TrafficClass(cls), src=src, dst=dst, protocol=protocol,
                     src_ports=src_ports or (), dst_ports=dst_ports or ())


def _read_limits(f: _Reader, at: _At) -> ClassificationLimits:
    if not f.table(at, _LIMIT_KEYS):
        return ClassificationLimits()
    changes = {}
    for key, low, high in (("cached_total", 1, 10_000_000),
                           ("cached_per_source", 1, 10_000_000),
                           ("cached_unknown", 1, 10_000_000),
                           ("packet_in_rate", 1, 10_000_000),
                           ("packet_in_burst", 0, 10_000_000),
                           ("queue", 1, 1_000_000),
                           ("ingress_rate", 0, 10_000_000),
                           ("ingress_per_source", 0, 10_000_000),
                           ("ingress_peer_rate", 0, 100_000_000),
                           ("ingress_wireguard_port", 1, 65535)):
        value = f.integer(at[key], low, high)
        if value is not None:
            changes[key] = value
    over = at["over_limit"]
    if f.table(over, _OVER_LIMIT_KEYS):
        action = f.choice(over["action"], _OVER_LIMIT_ACTIONS)
        seconds = f.integer(over["seconds"], 1, 65535)
        if action is not None:
            changes["over_limit_action"] = action
        if seconds is not None:
            changes["over_limit_seconds"] = seconds
    if "cached_unknown" not in changes:  # the default, within a smaller cached_total
        changes["cached_unknown"] = min(ClassificationLimits.cached_unknown,
                                        changes.get("cached_total",
                                                    ClassificationLimits.cached_total))
    limits = replace(ClassificationLimits(), **changes)
    for key in ("cached_per_source", "cached_unknown"):
        if getattr(limits, key) > limits.cached_total:
            which = at[key] if at[key].present else at["cached_total"]
            f.error(which, f"{key} ({getattr(limits, key)}) is more than "
                           f"cached_total ({limits.cached_total})")
    return limits


def _check_rule_reach(f: _Reader, options: _Options, placed: list, mesh: Optional[str]) -> None:
    """A privacy rule's destinations lie within the xray client's address (W1),
    a management rule's within the management subnet (W5)."""
    proxies = [p.entry.interface for p in placed
               if p.role is Role.PRIVACY_PROXY and p.entry.interface is not None]
    management = IPSet(p.entry.interface.cidr for p in placed
                       if p.entry.bridge == mesh and p.entry.interface is not None)
    reach = {}
    if len(proxies) == 1:
        xray = proxies[0].ip
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


# --- the host --------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    """A container with its role and MAC decided."""
    entry: _ContainerEntry
    role: Role
    mac: str
    mac_at: _At  # where the MAC comes from


@dataclass(frozen=True)
class _Subnet:
    """The one subnet and gateway the containers of a bridge share."""
    network: IPNetwork  # the cidr
    gateway: Optional[IPAddress]
    at: _At  # where it is first given


def _build_host(f: _Reader, seed: _Seed, file: str) -> Optional[Host]:
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
        source=file, mesh=bridges[0], privacy=bridges[1],
        netmaker_ranges=options.netmaker_ranges, nodes=options.nodes,
        privacy_blocked=options.privacy_blocked, settings=options.settings,
        ignored=tuple(ignored), classification=options.classification)


def _place_tunnels(f: _Reader, seed: _Seed, port_options: dict) -> tuple:
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
            uplinks.append(_Uplink(tunnel.interface, bridge, Role.WARP_UPLINK,
                                   tunnel.at["interface"], bridge_at))
    if not uplinks and isinstance(seed.root["wireguard"].value, dict):
        f.lacking(seed.root["wireguard"], "no warp uplink: no enabled entry is added to a bridge "
                                          "(by `ovs-vsctl add-port BRIDGE IFACE` in post_up, or "
                                          "socketnet.ports.<interface>.bridge)")
    for extra in uplinks[1:]:
        f.error(extra.at, f"a second warp uplink; the privacy bridge has exactly one "
                          f"({uplinks[0].at.path})")
    return (uplinks[0] if uplinks else None), ignored


def _inter_bridge_link(f: _Reader, seed: _Seed, mesh: Optional[str],
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


def _place_containers(f: _Reader, seed: _Seed, mesh: Optional[str],
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
            Role.PRIVACY_PROXY if entry.offers_services else Role.PRIVACY)
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
            f.error(_At(option.at.path, container_id), f"no container has this id (ids: "
                    f"{', '.join(e.id for e in seed.containers)})")

    proxies = [p for p in placed if p.role is Role.PRIVACY_PROXY]
    if privacy and not proxies and seed.containers_readable:
        f.lacking(seed.root["lxc"]["containers"], f"no privacy proxy: no container on {privacy} "
                  f"offers services (or set socketnet.containers.\"<id>\".role: privacy-proxy)")
    for extra in proxies[1:]:
        f.error(extra.entry.at["id"], f"a second privacy proxy (the first is container "
                f"{proxies[0].entry.id}); set socketnet.containers.\"{extra.entry.id}\".role: "
                f"privacy for all but the xray client")
    return placed


def derived_mac(address: IPAddress) -> str:
    """The MAC of a container that names none: 02:00 and its IPv4 address's bytes."""
    return "02:00:" + ":".join(f"{byte:02x}" for byte in address.packed)


def _check_unique_containers(f: _Reader, placed: list) -> None:
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


def _is_address(at: _At) -> bool:
    return at.path.endswith(".properties.ipv4_address")


def _bridge_subnet(f: _Reader, bridge: str, placed: list) -> Optional[_Subnet]:
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


def _uplink_port(f: _Reader, uplink: _Uplink, options: Optional[_PortOptions],
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


def _adapter_address(f: _Reader, uplink: _Uplink, adapter: str,
                     options: Optional[_PortOptions], subnet: Optional[_Subnet],
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


def _check_subnets(f: _Reader, subnets: dict, mesh: Optional[str], privacy: Optional[str],
                   options: _Options) -> None:
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


def _check_port_options(f: _Reader, port_options: dict, uplinks: list, tunnels: tuple,
                        ignored: list) -> None:
    """socketnet.ports names uplinks only; `bridge` is for wireguard tunnels only."""
    uplink_names = [u.interface for u in uplinks]
    reasons = dict(ignored)
    for name, options in port_options.items():
        key_at = _At(options.at.path, name)
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
    at: _At


def _claims(seed: _Seed, mesh: Optional[str], privacy: Optional[str], uplinks: list,
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


def _check_interface_names(f: _Reader, claims: list) -> None:
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


def _check_openflow_bridges(f: _Reader, seed: _Seed, mesh: Optional[str],
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
                f.error(_At(at.path, name), f"no port of this host is on this bridge; socketnet "
                                            f"runs {mesh} (mesh) and {privacy} (privacy)")


def _container_port(p: _Placed) -> Port:
    entry = p.entry
    container = Container(
        id=entry.id, name=entry.name, veth=entry.veth, bridge=entry.bridge,
        address=entry.interface.ip, network=entry.interface, gateway=entry.gateway,
        mac=p.mac, services=entry.services)
    return Port(name=entry.veth, bridge=entry.bridge, role=p.role, kind=Kind.L2,
                interface=entry.veth, container=container)


def _flow_warnings(file: str, host: Host) -> list:
    """One warning per seed flow: socketnet installs none of them as written."""
    warnings = []
    for bridge in host.bridges:
        flows_at = _At("openflow.bridges", None).key_path(bridge.name) + ".flows"
        for i, flow in enumerate(bridge.seed_flows):
            warnings.append(ConfigIssue(file, f"{flows_at}[{i}]", flow.text,
                                        seedflows.assess(flow, host)))
    return warnings
