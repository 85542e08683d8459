"""The `socketnet:` section read: settings, ranges, nodes, port and container
options, classification. Every key is read and bounded by its declaration in
`topology.config.keys`; this module adds the structure (lists, mappings of
names) and the checks no declaration can say. What the options mean for the
bridges is `topology.config.assemble`'s business."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from netaddr import IPNetwork

import topology.config.keys as keys
from topology.config.reader import At, Reader
from topology.model import (
    DEFAULT_NETMAKER_RANGES, DEFAULT_PRIVACY_BLOCKED, DEFAULT_RULE, SERVICE_RULE_PREFIX,
    UNROUTABLE_RULE, Classification, ClassificationLimits, ClassRule, Kind, Node, Role, Settings,
)

RESERVED_RULE_NAMES = (DEFAULT_RULE, UNROUTABLE_RULE)


@dataclass(frozen=True)
class PortOptions:
    """socketnet.ports.<interface>."""
    at: At
    kind: Optional[Kind]
    adapter: Optional[str]
    address: Optional[IPNetwork]
    mac: Optional[str]
    bridge: Optional[str]


@dataclass(frozen=True)
class ContainerOptions:
    """socketnet.containers."<id>"."""
    at: At
    role: Optional[Role]
    mac: Optional[str]


@dataclass(frozen=True)
class Options:
    """The socketnet section."""
    settings: Settings
    netmaker_ranges: tuple  # of IPNetwork
    nodes: tuple  # of Node
    privacy_blocked: tuple  # of IPNetwork
    beyond: tuple  # (IPNetwork, what) the local subnets may not overlap
    ports: dict  # interface -> PortOptions
    containers: dict  # container id -> ContainerOptions
    classification: Classification
    rules_at: tuple  # of At: where each of classification.rules is written


def _option(f: Reader, at: At, path: str):
    """The value of the declared key `path`, read at `at` (its entry's mapping)."""
    k = keys.key(path)
    return k.value.read(f, at[k.name])


def read_socketnet(f: Reader, at: At) -> Options:
    f.table(at, keys.under(""))
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
        if not f.table(node_at, keys.under("nodes[]"), required=keys.required("nodes[]")):
            continue
        name = _option(f, node_at, "nodes[].name")
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
    if f.table(at["privacy"], keys.under("privacy")) and \
            at["privacy"]["blocked_destinations"].present:
        privacy_blocked = tuple(n for n in map(f.ipv4_network, f.sequence(
            at["privacy"]["blocked_destinations"])) if n is not None)

    ports = {}
    for name, port_at in f.named(at["ports"]):
        if f.table(port_at, keys.under("ports.<iface>")):
            ports[name] = PortOptions(at=port_at, **{
                field: _option(f, port_at, f"ports.<iface>.{field}")
                for field in ("kind", "adapter", "address", "mac", "bridge")})

    containers = {}
    for container_id, options_at in f.named(at["containers"]):
        if f.table(options_at, keys.under('containers."<id>"')):
            containers[container_id] = ContainerOptions(
                at=options_at, role=_option(f, options_at, 'containers."<id>".role'),
                mac=_option(f, options_at, 'containers."<id>".mac'))

    classification, rules_at = _read_classification(f, at["classification"])
    return Options(settings, netmaker_ranges, tuple(nodes), privacy_blocked, tuple(beyond),
                   ports, containers, classification, rules_at)


def _read_settings(f: Reader, at: At) -> Settings:
    for section in ("openflow", "metrics", "rest"):
        f.table(at[section], keys.under(section))
    changes = keys.read(f, at, "", Settings)
    for section in ("openflow", "metrics", "rest"):
        changes.update(keys.read(f, at[section], section, Settings))
    openflow = at["openflow"]
    if changes.get("role") == "standby" and not openflow["peer"].present:
        f.error(openflow["role"], "a standby needs socketnet.openflow.peer: the primary's "
                                  "OpenFlow address, to know when to take over")
    return replace(Settings(), **changes)


def _read_classification(f: Reader, at: At) -> tuple:
    """(Classification, where each rule is written): the rules' syntax only;
    what their destinations may be is checked against the containers later
    (`topology.config.assemble`)."""
    if not f.table(at, keys.under("classification")):
        return Classification(), ()
    changes = keys.read(f, at, "classification", Classification)

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


_RULE = "classification.rules[]"


def _read_rule(f: Reader, at: At) -> Optional[ClassRule]:
    if not f.table(at, keys.under(_RULE), required=keys.required(_RULE)):
        return None
    name = _option(f, at, f"{_RULE}.name")
    if name is not None and (name in RESERVED_RULE_NAMES
                             or name.startswith(SERVICE_RULE_PREFIX)):
        f.error(at["name"], f"reserved: socketnet names its own decisions "
                            f"{', '.join(RESERVED_RULE_NAMES)} and {SERVICE_RULE_PREFIX}...")
        name = None
    cls = _option(f, at, f"{_RULE}.class")
    protocol = _option(f, at, f"{_RULE}.protocol") if at["protocol"].present else "any"
    fields = {key: _option(f, at, f"{_RULE}.{key}")
              for key in ("src", "dst", "src_ports", "dst_ports")}
    for key in ("src_ports", "dst_ports"):
        if at[key].present and protocol not in (None, "tcp", "udp"):
            f.error(at[key], f"ports need protocol tcp or udp; this rule's is {protocol}")
            return None
    if None in (name, cls, protocol) or any(
            value is None and at[key].present for key, value in fields.items()):
        return None
    return ClassRule(name=name, cls=cls, src=fields["src"], dst=fields["dst"], protocol=protocol,
                     src_ports=fields["src_ports"] or (), dst_ports=fields["dst_ports"] or ())


_LIMITS = "classification.limits"


def _read_limits(f: Reader, at: At) -> ClassificationLimits:
    if not f.table(at, keys.under(_LIMITS)):
        return ClassificationLimits()
    changes = keys.read(f, at, _LIMITS, ClassificationLimits)
    if f.table(at["over_limit"], keys.under(f"{_LIMITS}.over_limit")):
        changes.update(keys.read(f, at["over_limit"], f"{_LIMITS}.over_limit",
                                 ClassificationLimits))
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
