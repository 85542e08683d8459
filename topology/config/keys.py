"""Every key of the `socketnet:` section, declared once.

A `Key` says where it is (its path under `socketnet:`), what it takes (a
`Value`: the type, its bounds, how it is read), its default, and what it is
for. The section's reader (`topology.config.socketnet`) reads and bounds every
key by its declaration, and the keys a mapping takes are the declared ones.
The key list of `topology.config`'s docstring is `listing()`, the README's
key table `markdown_table()`; a test holds both to it. A key that goes into a field of
the model (`into`) takes its default from that field, so the default too is
written in one place.

What no declaration can say (a standby needs a peer; a share is at most the
total; a rule's reach) is checked by hand, where the key is read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from topology.model import (
    DEFAULT_NETMAKER_RANGES, RULE_PROTOCOLS, Classification, ClassificationLimits, Kind, Role,
    Settings, TrafficClass,
)


@dataclass(frozen=True)
class Value:
    """What a key takes: `words` for a reader of the docs, `read(reader, at)` the
    checked value or None (with the problem reported at `at`)."""
    words: str
    read: Callable
    bounds: Optional[tuple] = None  # (low, high) of an integer


def seconds() -> Value:
    return Value("seconds, > 0", lambda f, at: f.seconds(at))


def integer(low: int, high: int, words: str = "integer") -> Value:
    return Value(f"{words}, {low}..{high}", lambda f, at: f.integer(at, low, high),
                 (low, high))


def choice(options, convert: Callable = str, words: Optional[str] = None) -> Value:
    options = tuple(options)
    return Value(words or " or ".join(", ".join(options).rsplit(", ", 1)),
                 lambda f, at: _converted(f.choice(at, options), convert))


def _converted(value, convert):
    return None if value is None else convert(value)


LISTEN = Value('"HOST:PORT" or "[IPv6]:PORT"', lambda f, at: f.listen(at))
FLAG = Value("true or false", lambda f, at: f.flag(at))
TEXT = Value("string", lambda f, at: f.text(at))
PATH = Value("path", lambda f, at: f.text(at))
ENV_NAME = Value("environment variable name", lambda f, at: f.identifier(at))
IFNAME = Value("interface name", lambda f, at: f.ifname(at))
MAC = Value("MAC address", lambda f, at: f.mac(at))
INTERFACE_ADDRESS = Value("addr/prefix", lambda f, at: f.ipv4_interface(at))
NETWORKS = Value("list of IPv4 networks", None)  # read as a list, entry by entry
ADDRESS_SET = Value("list of IPv4 addresses or networks", lambda f, at: f.address_set(at))
PORT_RANGES = Value('list of ports and "low-high" ranges (tcp, udp)',
                    lambda f, at: f.port_ranges(at))
CLASS = choice([c.value for c in TrafficClass], TrafficClass)
CONTAINER_ROLES = (Role.MANAGEMENT, Role.PRIVACY_CONTAINER, Role.XRAY_CLIENT)
RENAMED_ROLES = {"privacy": Role.PRIVACY_CONTAINER, "privacy-proxy": Role.XRAY_CLIENT}


def _container_role(f, at):
    """A container's role; the names of earlier versions are read, with a warning."""
    if isinstance(at.value, str) and at.value in RENAMED_ROLES:
        role = RENAMED_ROLES[at.value]
        f.warn(at, f"renamed {role.value}; the old name still reads as it")
        return role
    return _converted(f.choice(at, [r.value for r in CONTAINER_ROLES]), Role)


CONTAINER_ROLE = Value("management, privacy-container or xray-client", _container_role)


@dataclass(frozen=True)
class Key:
    path: str  # under socketnet:, "openflow.echo_interval", "nodes[].name", 'containers."<id>".mac'
    value: Value
    description: str
    into: tuple = ()  # (model class, field, ...): where the value goes; its default is theirs
    default: Optional[str] = None  # the default as words, for a key with no model field
    required: bool = False  # within its entry (a rule's name)
    retired: Optional[str] = None  # read, warned about with this, and without effect

    @property
    def parent(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def default_words(self) -> str:
        if self.default is not None:
            return self.default
        if not self.into:
            return ""
        values = [_field_default(self.into[0], name) for name in self.into[1:]]
        if len(values) == 2:  # a listener's host and port
            return f"{values[0]}:{values[1]}"
        return _words(values[0])


def _field_default(cls, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    raise LookupError(f"{cls.__name__} has no field {name}")


def _words(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_LIMITS = "classification.limits"

KEYS = (
    Key("openflow.listen", LISTEN, "where the bridges' OpenFlow connections are accepted",
        (Settings, "ofp_listen_host", "ofp_listen_port")),
    Key("openflow.echo_interval", seconds(), "seconds between echo requests to a bridge",
        (Settings, "echo_interval")),
    Key("openflow.echo_misses", integer(1, 1000),
        "unanswered echo requests after which a bridge counts as gone",
        (Settings, "echo_misses")),
    Key("openflow.role", choice(("primary", "standby")),
        "primary claims the master role; a standby only while its peer is gone",
        (Settings, "role")),
    Key("openflow.peer", LISTEN, "the primary's OpenFlow address (a standby's, required)",
        (Settings, "peer")),
    Key("reconcile_timeout", seconds(), "seconds to bring a bridge's flows to the desired state",
        (Settings, "reconcile_timeout")),
    Key("netmaker_ranges", NETWORKS, "where Netmaker peers live",
        default=", ".join(DEFAULT_NETMAKER_RANGES)),
    Key("nodes[].name", TEXT, "another socketnet host, one entry per node", default="no nodes",
        required=True),
    Key("nodes[].subnets", NETWORKS, "the subnets behind it, reached over Netmaker",
        required=True),
    Key("privacy.blocked_destinations", NETWORKS,
        "where privacy traffic may never go through warp",
        default="private and reserved ranges"),
    Key("ports.<iface>.kind", choice([k.value for k in Kind], Kind),
        "an uplink's layer: l3 (WireGuard) reaches its bridge through an adapter", default="l3"),
    Key("ports.<iface>.adapter", IFNAME, "the adapter's name (l3 only)", default="<bridge>-gw"),
    Key("ports.<iface>.address", INTERFACE_ADDRESS, "the adapter's address (l3 only)",
        default="the containers' gateway/prefix"),
    Key("ports.<iface>.mac", MAC, "the adapter's MAC (l3) or the far end's (l2)",
        default="learned from the switch"),
    Key("ports.<iface>.bridge", IFNAME,
        "the bridge a wireguard interface is on, without a post_up",
        default="the bridge post_up adds it to"),
    Key('containers."<id>".role', CONTAINER_ROLE, "the container's role", default="from its bridge and services"),
    Key('containers."<id>".mac', MAC, "the container's MAC",
        default="hwaddr, or 02:00+IPv4 bytes"),
    Key("metrics.listen", LISTEN, "where Prometheus scrapes /metrics",
        (Settings, "metrics_listen_host", "metrics_listen_port")),
    Key("metrics.stats_interval", seconds(), "seconds between flow, port and table stats polls",
        (Settings, "stats_interval")),
    Key("rest.listen", LISTEN, "where the flow-debug API answers",
        (Settings, "rest_listen_host", "rest_listen_port")),
    Key("rest.token_env", ENV_NAME, "the environment variable holding the bearer token",
        (Settings, "rest_token_env")),
    Key("rest.token_file", PATH, "a file holding the token (its first line), before token_env",
        (Settings, "rest_token_file")),
    Key("rest.open_reads", FLAG, "reading endpoints answer without the token",
        (Settings, "rest_open_reads")),
    Key("rest.ovs_ctl", PATH, "ovs-vswitchd's control socket, for trace and audit",
        (Settings, "rest_ovs_ctl"), default="found in $OVS_RUNDIR"),
    Key("classification.default", CLASS, "the class when no rule and no service decides",
        (Classification, "default")),
    Key("classification.idle_timeout", integer(1, 65535, "seconds"),
        "how long an idle connection keeps its decision", (Classification, "idle_timeout")),
    Key("classification.conntrack_zone", integer(1, 65534, "zone"),
        "the mesh's conntrack zone; vmbr0 uses the next", (Classification, "conntrack_zone")),
    Key("classification.seed_services", FLAG,
        "the seed's services decide after the rules", (Classification, "seed_services")),
    Key("classification.granularity", TEXT, "retired", retired=(
        "has no effect: decisions live in the connection tracker, one per connection (its "
        "5-tuple); a host pair is not a connection")),
    Key("classification.hard_timeout", TEXT, "retired", retired=(
        "has no effect: the connection tracker has no absolute lifetime; a connection keeps "
        "its decision until idle for idle_timeout (`socketnet cache flush` ends them all)")),
    Key("classification.rules[].name", TEXT, "unique; the decisions it makes carry it",
        required=True),
    Key("classification.rules[].class", CLASS, "what the rule decides", required=True),
    Key("classification.rules[].src", ADDRESS_SET, "sources it matches", default="any"),
    Key("classification.rules[].dst", ADDRESS_SET, "destinations it matches", default="any"),
    Key("classification.rules[].protocol", choice(RULE_PROTOCOLS), "the protocol it matches",
        default="any"),
    Key("classification.rules[].src_ports", PORT_RANGES, "source ports it matches",
        default="any"),
    Key("classification.rules[].dst_ports", PORT_RANGES, "destination ports it matches",
        default="any"),
    Key(f"{_LIMITS}.cached_total", integer(1, 10_000_000),
        "the zone's connection limit", (ClassificationLimits, "cached_total")),
    Key(f"{_LIMITS}.cached_per_source", integer(1, 10_000_000),
        "decisions one source holds at a time, at most cached_total",
        (ClassificationLimits, "cached_per_source")),
    Key(f"{_LIMITS}.cached_unknown", integer(1, 10_000_000),
        "decisions all unknown sources hold together, at most cached_total",
        (ClassificationLimits, "cached_unknown"),
        default=f"{ClassificationLimits.cached_unknown} (at most cached_total)"),
    Key(f"{_LIMITS}.packet_in_rate", integer(1, 10_000_000, "packets/s"),
        "the meter in front of the controller", (ClassificationLimits, "packet_in_rate")),
    Key(f"{_LIMITS}.packet_in_burst", integer(0, 10_000_000, "packets"),
        "what the meter lets through above the rate", (ClassificationLimits, "packet_in_burst")),
    Key(f"{_LIMITS}.queue", TEXT, "retired", retired=(
        "has no effect: packet-ins are decided as they are read from the switch; those the "
        "controller has not read yet wait in Open vSwitch's queue for it, and packet_in_rate "
        "and packet_in_burst bound how many come")),
    Key(f"{_LIMITS}.over_limit.action", choice(("drop",)),
        "what a source over its share gets", (ClassificationLimits, "over_limit_action")),
    Key(f"{_LIMITS}.over_limit.seconds", integer(1, 65535, "seconds"),
        "for how long, in the switch", (ClassificationLimits, "over_limit_seconds")),
    Key(f"{_LIMITS}.ingress_rate", integer(0, 10_000_000, "new flows/s"),
        "new Netmaker-ingress flows, in nftables (0: off)",
        (ClassificationLimits, "ingress_rate")),
    Key(f"{_LIMITS}.ingress_per_source", integer(0, 10_000_000, "new flows/s"),
        "new flows one unknown source may open (0: off)",
        (ClassificationLimits, "ingress_per_source")),
    Key(f"{_LIMITS}.ingress_peer_rate", integer(0, 100_000_000, "datagrams/s"),
        "WireGuard datagrams one Netmaker peer may send (0: off)",
        (ClassificationLimits, "ingress_peer_rate")),
    Key(f"{_LIMITS}.ingress_wireguard_port", integer(1, 65535, "UDP port"),
        "the Netmaker uplink's WireGuard port", (ClassificationLimits, "ingress_wireguard_port")),
)

_BY_PATH = {key.path: key for key in KEYS}


def key(path: str) -> Key:
    return _BY_PATH[path]


def under(parent: str) -> tuple:
    """The names a mapping at `parent` takes ("" is the section itself): its
    keys, and the mappings and lists that lead to deeper keys."""
    depth = parent.count(".") + 1 if parent else 0
    names = []
    for k in KEYS:
        parts = k.path.split(".")
        if ".".join(parts[:depth]) != parent or len(parts) <= depth:
            continue
        name = parts[depth].removesuffix("[]")
        if name.startswith("<") or name.startswith('"<'):
            continue  # an entry of a mapping of names, not a key
        if name not in names:
            names.append(name)
    return tuple(names)


def required(parent: str) -> tuple:
    """The keys an entry at `parent` must have."""
    return tuple(k.name for k in KEYS if k.parent == parent and k.required)


def read(f, at, parent: str, target) -> dict:
    """The values of the keys directly under `parent` that go into fields of
    `target` (a model class), read from the mapping `at`: {field: value}. A
    retired key written there is warned about, and has no value."""
    changes = {}
    for k in KEYS:
        if k.parent != parent:
            continue
        if k.retired:
            if at[k.name].present:
                f.warn(at[k.name], k.retired)
            continue
        if not k.into or k.into[0] is not target:
            continue
        value = k.value.read(f, at[k.name])
        if value is None:
            continue
        if len(k.into) == 3:
            changes[k.into[1]], changes[k.into[2]] = value
        else:
            changes[k.into[1]] = value
    return changes


def _rows(section: str) -> list:
    """(key, value, default, what) of the part of the section under `section`
    ("classification", or "" for the rest), retired keys left out."""
    rows = []
    for k in KEYS:
        inside = k.path.startswith("classification.")
        if k.retired or inside != (section == "classification"):
            continue
        path = k.path.removeprefix("classification.") if inside else k.path
        rows.append((path, k.value.words + (", required" if k.required else ""),
                     k.default_words(), k.description))
    return rows


def markdown_table(section: str = "") -> str:
    """The README's key table of `section` (see `_rows`)."""
    lines = ["| key | value | default | what |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {value} | {default} | {what} |"
              for key, value, default, what in _rows(section)]
    return "\n".join(lines)


def listing(section: str = "") -> str:
    """The docstring's key list of `section`: each key with its value and
    default, and under it what it is for."""
    lines = []
    for key, value, default, what in _rows(section):
        lines.append(f"    {key}: {value}" + (f"; default {default}" if default else ""))
        lines.append(f"        {what}")
    return "\n".join(lines)
