"""The seed's own OpenFlow flows: parsed, checked against the host, and explained.

The seed writes one `ovs-ofctl` flow list per bridge under
`openflow.bridges.<name>.flows`. socketnet never installs those lines: it
compiles its own pipeline from the port roles. This module reads them anyway,
so that a config whose flows are broken is rejected like any other broken
config, and so that `assess` can say, for each line, what socketnet does
instead and which rule of the isolation promise (README) the literal flow would break.
`topology.config.check_file` reports those sentences as warnings.

    parse(bridge, text) -> SeedFlow       syntax only; raises SeedFlowError
    check_ports(flow, bridge) -> [str]    port names that are not ports of the bridge
    assess(flow, host) -> str             one sentence: what socketnet does instead

The syntax read is the part of ovs-ofctl(8) the seed uses: `priority=N`, match
fields written `key=value` or as a protocol shorthand (`ip`, `tcp`, ...), and
`actions=` last, with `output:PORT`, `normal`, `flood`, `all`, `drop`, `local`,
`in_port` and `controller`. Ports are named, never numbered: numbers are the
switch's business. A seed flow may name an l3 uplink by its WireGuard interface
(`nm-privacy`, `warp0`) although its bridge port is the adapter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from netaddr import EUI, AddrFormatError, IPAddress, IPNetwork

from topology.model import Bridge, Host, Port, Role

OFP_DEFAULT_PRIORITY = 32768  # what ovs-ofctl uses when a flow gives none
LOCAL = "LOCAL"

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

_SHORTHANDS = {
    "ip": {"dl_type": ETH_TYPE_IP},
    "icmp": {"dl_type": ETH_TYPE_IP, "nw_proto": IPPROTO_ICMP},
    "tcp": {"dl_type": ETH_TYPE_IP, "nw_proto": IPPROTO_TCP},
    "udp": {"dl_type": ETH_TYPE_IP, "nw_proto": IPPROTO_UDP},
    "arp": {"dl_type": ETH_TYPE_ARP},
}
# Other names ovs-ofctl accepts for the classic field names used here.
_ALIASES = {
    "eth_src": "dl_src", "eth_dst": "dl_dst", "eth_type": "dl_type",
    "ip_src": "nw_src", "ip_dst": "nw_dst", "ip_proto": "nw_proto",
    "tcp_src": "tp_src", "tcp_dst": "tp_dst", "udp_src": "tp_src", "udp_dst": "tp_dst",
}
_FLOODING = ("normal", "flood", "all")
_SIMPLE_ACTIONS = _FLOODING + ("local", "in_port")


class SeedFlowError(ValueError):
    """A seed flow line that is not valid ovs-ofctl, or not the subset read here."""


@dataclass(frozen=True)
class SeedFlow:
    """One line of `openflow.bridges.<bridge>.flows`, parsed.

    `match` uses ovs-ofctl's classic field names (`in_port`, `dl_type`,
    `nw_proto`, `nw_src`, `tp_dst`, ...), with protocol shorthands expanded and
    values normalised (numbers as int, prefixes as "addr/len"). `actions` are
    lower-case keywords and "output:NAME" strings, in order; `()` is drop.
    """
    bridge: str
    text: str
    priority: int
    match: dict = field(hash=False)
    actions: tuple = ()

    @property
    def in_port(self) -> Optional[str]:
        return self.match.get("in_port")

    @property
    def outputs(self) -> tuple:
        """The port names the flow outputs to."""
        return tuple(a.split(":", 1)[1] for a in self.actions if a.startswith("output:"))

    @property
    def flooding(self) -> Optional[str]:
        """The first of normal/flood/all among the actions, if any."""
        return next((a for a in self.actions if a in _FLOODING), None)


# --- parsing ------------------------------------------------------------------


def parse(bridge: str, text: str) -> SeedFlow:
    """Parse one seed flow line of `bridge`; raise SeedFlowError saying what is wrong."""
    if not isinstance(text, str):
        raise SeedFlowError("a flow is a string in ovs-ofctl syntax")
    head, actions_text = _split_actions(text)
    priority = OFP_DEFAULT_PRIORITY
    match: dict = {}
    for token in filter(None, re.split(r"[\s,]+", head)):
        key, has_value, value = token.partition("=")
        if key == "priority":
            priority = _number(key, value, 0, 0xFFFF)
        elif key in _SHORTHANDS and not has_value:
            for name, fixed in _SHORTHANDS[key].items():
                _set(match, name, fixed)
        elif _ALIASES.get(key, key) in _FIELD_READERS and has_value:
            name = _ALIASES.get(key, key)
            _set(match, name, _FIELD_READERS[name](key, value))
        elif _ALIASES.get(key, key) in _FIELD_READERS:
            raise SeedFlowError(f"{key} needs a value ({key}=...)")
        else:
            known = ", ".join(["priority", *sorted(_SHORTHANDS), *sorted(_FIELD_READERS)])
            raise SeedFlowError(f"unknown match field {token!r} (seed flows may use {known})")
    _check_prerequisites(match)
    if match.get("dl_type") == ETH_TYPE_ARP:
        # As ovs-ofctl does: with arp, nw_src/nw_dst mean the ARP addresses.
        for nw, arp in (("nw_src", "arp_spa"), ("nw_dst", "arp_tpa")):
            if nw in match:
                _set(match, arp, match.pop(nw))
    return SeedFlow(bridge, text, priority, match, _parse_actions(actions_text))


def _split_actions(text: str) -> tuple:
    """(match part, actions part) of a flow line; `actions=` comes last."""
    found = re.search(r"(?:^|[\s,])actions\s*=", text)
    if not found:
        raise SeedFlowError("no actions= (write actions=drop to drop)")
    return text[:found.start()], text[found.end():].strip()


def _set(match: dict, name: str, value) -> None:
    if name in match and match[name] != value:
        raise SeedFlowError(f"{name} is given twice, as {match[name]} and {value}")
    match[name] = value


def _number(key: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise SeedFlowError(f"{key}={text}: not a number") from None
    if not low <= value <= high:
        raise SeedFlowError(f"{key}={text}: not in {low}..{high}")
    return value


def _port_name(key: str, text: str) -> str:
    if not text or text.isdigit():
        raise SeedFlowError(f"{key}={text}: name the port; port numbers belong to the switch")
    return text


def _ipv4(key: str, text: str) -> str:
    """An IPv4 address, or a prefix as addr/len or addr/netmask, as "addr[/len]"."""
    address, slash, mask = text.partition("/")
    try:
        IPAddress(address, 4)
        if not slash:
            return address
        if mask.isdigit():
            network = IPNetwork(f"{address}/{int(mask)}")
        elif IPAddress(mask, 4).is_netmask():
            network = IPNetwork(f"{address}/{IPAddress(mask, 4).netmask_bits()}")
        else:
            raise ValueError(mask)
    except (AddrFormatError, ValueError):
        raise SeedFlowError(f"{key}={text}: not an IPv4 address or prefix") from None
    return address if network.prefixlen == 32 else str(network.cidr)


def _mac(key: str, text: str) -> str:
    try:
        return "/".join(str(EUI(part, version=48)).replace("-", ":").lower()
                        for part in text.split("/", 1))
    except (AddrFormatError, ValueError):
        raise SeedFlowError(f"{key}={text}: not a MAC address") from None


_FIELD_READERS = {
    "in_port": lambda key, text: text if text == LOCAL else _port_name(key, text),
    "dl_src": _mac,
    "dl_dst": _mac,
    "dl_type": lambda key, text: _number(key, text, 0, 0xFFFF),
    "nw_src": _ipv4,
    "nw_dst": _ipv4,
    "nw_proto": lambda key, text: _number(key, text, 0, 0xFF),
    "tp_src": lambda key, text: _number(key, text, 0, 0xFFFF),
    "tp_dst": lambda key, text: _number(key, text, 0, 0xFFFF),
    "icmp_type": lambda key, text: _number(key, text, 0, 0xFF),
    "icmp_code": lambda key, text: _number(key, text, 0, 0xFF),
    "arp_op": lambda key, text: _number(key, text, 0, 0xFFFF),
    "arp_spa": _ipv4,
    "arp_tpa": _ipv4,
}


def _check_prerequisites(match: dict) -> None:
    """Refuse fields whose protocol is not matched: Open vSwitch would drop
    them from the match without a word, and the flow would match more."""
    dl_type, nw_proto = match.get("dl_type"), match.get("nw_proto")
    needs = (
        (("nw_src", "nw_dst"), dl_type in (ETH_TYPE_IP, ETH_TYPE_ARP), "ip (or arp)"),
        (("nw_proto",), dl_type == ETH_TYPE_IP, "ip"),
        (("tp_src", "tp_dst"), dl_type == ETH_TYPE_IP and nw_proto in (IPPROTO_TCP, IPPROTO_UDP),
         "tcp or udp"),
        (("icmp_type", "icmp_code"), dl_type == ETH_TYPE_IP and nw_proto == IPPROTO_ICMP, "icmp"),
        (("arp_op", "arp_spa", "arp_tpa"), dl_type == ETH_TYPE_ARP, "arp"),
    )
    for names, met, what in needs:
        for name in names:
            if name in match and not met:
                raise SeedFlowError(f"{name} needs {what} in the match; without it Open vSwitch "
                                    f"drops {name} silently and the flow matches more")


def _parse_actions(text: str) -> tuple:
    words = _split_top_level(text)
    if not words:
        raise SeedFlowError("actions= is empty (write actions=drop to drop)")
    if any(word.lower() == "drop" for word in words):
        if len(words) > 1:
            raise SeedFlowError("drop must be the only action")
        return ()
    actions = []
    for word in words:
        lower = word.lower()
        if lower in _SIMPLE_ACTIONS:
            actions.append(lower)
        elif lower == "controller" or re.fullmatch(r"controller(:\d+|\(.*\))", lower):
            actions.append("controller")
        elif lower.startswith("output:"):
            port = _port_name("output", word.split(":", 1)[1])
            actions.append("local" if port == LOCAL else f"output:{port}")
        else:
            raise SeedFlowError(f"action {word!r} is not one socketnet reads (output:PORT, normal, "
                                f"flood, all, drop, local, in_port, controller)")
    return tuple(actions)


def _split_top_level(text: str) -> list:
    """Split an action list at the commas that are not inside parentheses."""
    words, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            words.append(text[start:i].strip())
            start = i + 1
    words.append(text[start:].strip())
    return [w for w in words if w]


# --- the flow against the host ---------------------------------------------


def _port_called(bridge: Bridge, name: str) -> Optional[Port]:
    """The port of `bridge` a seed flow means by `name`: its bridge port name or,
    for an l3 uplink, the seed's WireGuard interface behind the adapter."""
    for port in bridge.ports:
        if name in (port.name, port.interface):
            return port
    return None


def check_ports(flow: SeedFlow, bridge: Bridge) -> list:
    """What is wrong with the port names of `flow` on `bridge`, one string each."""
    known = ", ".join(p.name if p.name == p.interface else f"{p.interface} ({p.name})"
                      for p in bridge.ports)
    problems = []
    named = [("in_port", flow.in_port)] if flow.in_port not in (None, LOCAL) else []
    named += [("output", name) for name in flow.outputs]
    for key, name in named:
        if _port_called(bridge, name) is None:
            problems.append(f"{key} {name!r} is not a port of {bridge.name} (its ports: {known})")
    return problems


# --- what socketnet does instead ---------------------------------------------

# What forwarding from a port of one role to a port of another would break, and
# what socketnet does instead. "{rules}" is where the broken rules go.
# Pairs not listed cannot happen (the roles are on different bridges) or are
# special cases handled in `_assess_output`.
_OUTPUT = {
    (Role.NETMAKER_UPLINK, Role.MANAGEMENT): (
        ("N4", "N8"), "passes Netmaker ingress to {target} whatever its class or source "
        "({rules}); socketnet delivers management-classified ingress to the container it is "
        "addressed to (W5)"),
    (Role.MANAGEMENT, Role.NETMAKER_UPLINK): (
        ("N8",), "sends everything from {source} to Netmaker without checking its source "
        "address ({rules}); socketnet routes management traffic to the Netmaker side after "
        "that check (W5)"),
    (Role.MANAGEMENT, Role.MANAGEMENT): (
        (), "socketnet switches between management containers by address, after checking the "
        "source address (W5, N8)"),
    (Role.MANAGEMENT, Role.INTER_BRIDGE): (
        ("N1",), "lets {source} reach {privacy} ({rules}); socketnet never forwards management "
        "traffic over the inter-bridge link"),
    (Role.INTER_BRIDGE, Role.NETMAKER_UPLINK): (
        ("N3",), "passes anything from {privacy} to Netmaker, not only the xray client's replies "
        "to users ({rules}); socketnet lets only those replies through (W3)"),
    (Role.INTER_BRIDGE, Role.MANAGEMENT): (
        ("N3",), "lets privacy traffic reach {target} ({rules}); socketnet never forwards from "
        "the inter-bridge link to a management port"),
    (Role.INTER_BRIDGE, Role.XRAY_CLIENT): (
        (), "socketnet does this only for traffic the mesh bridge classified privacy and "
        "addressed to the xray client (W1)"),
    (Role.INTER_BRIDGE, Role.PRIVACY_CONTAINER): (
        ("W1", "N4"), "lets Netmaker ingress reach {target}, though only the xray client may "
        "receive it ({rules})"),
    (Role.INTER_BRIDGE, Role.WARP_UPLINK): (
        ("W1",), "sends Netmaker ingress straight out through warp, past the xray client "
        "({rules})"),
    (Role.XRAY_CLIENT, Role.WARP_UPLINK): (
        ("W3",), "would send the xray client's replies to users into WARP instead of back over "
        "Netmaker ({rules}); socketnet sends only its internet traffic through warp (W2)"),
    (Role.XRAY_CLIENT, Role.INTER_BRIDGE): (
        ("N5",), "lets the xray client send anything over the inter-bridge link, not only "
        "replies to Netmaker-side peers ({rules}); socketnet passes only those replies (W3)"),
    (Role.PRIVACY_CONTAINER, Role.WARP_UPLINK): (
        (), "socketnet routes {source} through warp to internet destinations only, not to "
        "private or blocked ones (W4)"),
    (Role.PRIVACY_CONTAINER, Role.INTER_BRIDGE): (
        ("N5",), "lets {source} reach the inter-bridge link, which it may never do ({rules})"),
    (Role.WARP_UPLINK, Role.INTER_BRIDGE): (
        ("N2",), "lets warp traffic reach the inter-bridge link ({rules}); socketnet forwards "
        "warp traffic only to privacy containers"),
}
for _pair in ((Role.XRAY_CLIENT, Role.PRIVACY_CONTAINER), (Role.PRIVACY_CONTAINER, Role.XRAY_CLIENT),
              (Role.PRIVACY_CONTAINER, Role.PRIVACY_CONTAINER)):
    _OUTPUT[_pair] = ((), "socketnet switches between privacy containers by address, after "
                          "checking the source address (N8)")

# What NORMAL (or FLOOD, ALL) from a port of each role lets through besides
# flooding the inter-bridge link: (rule broken, what it lets through, what
# socketnet does instead). The inter-bridge link itself is handled apart.
_FLOODING_FROM = {
    Role.NETMAKER_UPLINK: ("N4", "lets unclassified Netmaker ingress into {privacy}",
                         "socketnet delivers classified ingress by address"),
    Role.MANAGEMENT: ("N1", "lets {source} reach {privacy}",
                    "socketnet switches management traffic by address and never over the "
                    "inter-bridge link"),
    Role.XRAY_CLIENT: ("N5", "lets the xray client send anything over it",
                       "socketnet passes only its replies to Netmaker-side peers (W3)"),
    Role.PRIVACY_CONTAINER: ("N5", "lets {source} reach it",
                 "socketnet forwards {source} only to warp and the other privacy containers"),
    Role.WARP_UPLINK: ("N2", "lets warp traffic reach it",
                     "socketnet returns warp replies to the privacy container they are "
                     "addressed to"),
}


def assess(flow: SeedFlow, host: Host) -> str:
    """One sentence: what socketnet does instead of installing `flow` literally,
    and which ISOLATION rule the literal flow would break. `flow` must have
    passed `check_ports` on its bridge."""
    bridge = host.bridge(flow.bridge)
    source = _port_called(bridge, flow.in_port) if flow.in_port not in (None, LOCAL) else None
    if flow.in_port == LOCAL or "local" in flow.actions:
        return ("involves the bridge's LOCAL port (N9); socketnet never forwards to or from it "
                "unless the config says so")
    if flow.flooding:
        return _assess_flooding(flow.flooding.upper(), source, bridge, host)
    if "in_port" in flow.actions:
        return "sends packets back out of the port they came in on; socketnet never does"
    if "controller" in flow.actions:
        return "sends packets to the controller; socketnet asks for the packets it needs itself"
    if not flow.actions:
        if source is None:
            return "drops everything else; socketnet's table-miss drops too, so this is implied"
        return (f"drops traffic from {_describe(source)}; socketnet drops whatever its pipeline "
                f"does not allow, so this is implied")
    targets = [_port_called(bridge, name) for name in flow.outputs]
    return "; and ".join(_assess_output(flow, source, target, bridge, host) for target in targets)


def _names(host: Host, source: Optional[Port], target: Optional[Port] = None) -> dict:
    """The names the sentences use, for str.format."""
    return dict(mesh=host.mesh.name, privacy=host.privacy_bridge.name,
                source=_describe(source) if source else "",
                target=_describe(target) if target else "")


def _describe(port: Port) -> str:
    if port.container is not None:
        return f"{port.name} ({port.container.name})"
    return port.interface or port.name


def _assess_flooding(action: str, source: Optional[Port], bridge: Bridge, host: Host) -> str:
    if source is None:
        return (f"the catch-all {action} floods broadcast and unknown unicast across the "
                f"inter-bridge link (N6) and forwards whatever no other flow matched, also while "
                f"the controller is away (N7); socketnet's table-miss drops instead")
    if source.role is Role.INTER_BRIDGE and bridge.name == host.mesh.name:
        return (f"{action} lets anything from {host.privacy_bridge.name} reach the management ports and "
                f"Netmaker (N3); socketnet passes only the xray client's replies to users (W3)")
    if source.role is Role.INTER_BRIDGE:
        return (f"{action} lets Netmaker ingress reach every privacy container and warp, not "
                f"only the xray client (W1, N4); socketnet delivers privacy traffic to the xray "
                f"client only")
    rule, lets, instead = _FLOODING_FROM[source.role]
    names = _names(host, source)
    return (f"{action} floods broadcast and unknown unicast across the inter-bridge link (N6) and "
            f"{lets.format(**names)} ({rule}); {instead.format(**names)}")


def _assess_output(flow: SeedFlow, source: Optional[Port], target: Port, bridge: Bridge,
                   host: Host) -> str:
    if source is None:
        broken = sorted({rule for port in bridge.ports if port is not target
                         for rule in _OUTPUT.get((port.role, target.role), ((), ""))[0]})
        sentence = f"sends whatever arrives on any port of {bridge.name} to {_describe(target)}"
        if broken:
            sentence += f", which breaks {', '.join(broken)}"
        return sentence + "; socketnet forwards by port role and address"
    names = _names(host, source, target)
    pair = (source.role, target.role)
    if pair == (Role.NETMAKER_UPLINK, Role.INTER_BRIDGE):
        if set(flow.match) - {"in_port"}:
            return ("socketnet classifies Netmaker ingress itself and forwards only privacy "
                    "traffic, to the xray client, over the inter-bridge link (W1, N4)")
        return (f"sends unclassified Netmaker ingress into {names['privacy']} (N4); socketnet "
                f"classifies first and forwards only privacy traffic, to the xray client (W1)")
    if source.role is Role.WARP_UPLINK and target.container is not None:
        return _assess_warp_return(target, bridge)
    rules, sentence = _OUTPUT.get(pair, ((), "socketnet forwards by port role and address"))
    return sentence.format(rules=", ".join(rules), **names)


def _assess_warp_return(target: Port, bridge: Bridge) -> str:
    """Every warp reply to one container: the other privacy containers lose theirs."""
    others = [p for p in bridge.ports if p.container is not None and p is not target]
    if not others:
        return (f"socketnet returns warp replies to {_describe(target)} by destination "
                f"address (W2)")
    rules = sorted({"W2" if p.role is Role.XRAY_CLIENT else "W4" for p in others})
    return (f"hands every warp reply to {_describe(target)}, so nothing returns warp traffic to "
            f"{', '.join(_describe(p) for p in others)} ({', '.join(rules)}); socketnet returns "
            f"warp replies by destination address")
