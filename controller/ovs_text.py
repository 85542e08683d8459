"""What ovs-vswitchd prints, read: `ofproto/trace` (as Open vSwitch 3.1 prints
it) into a TraceResult, one trace per bridge followed over the veths between
bridges into a TracePath, and `dpif/show`'s port lines.

Pure text: no switch, no process. The API's trace (`controller/vswitchd.py`,
`controller/explain.py`) and the labs' (`topology/labs/ovs.py`) both read through it.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

# ofproto/trace output, as printed by Open vSwitch 3.1.
_FLOW_LINE = "Flow: "
_FINAL_FLOW_LINE = "Final flow: "
_ACTIONS_LINE = "Datapath actions: "
# `dpif/show`: "    veth200 3/2: (system)" = name, OpenFlow port / datapath port.
DPIF_PORT = re.compile(r"^\s{4}(\S+) (\d+)/(\d+):")
DPIF_BRIDGE = re.compile(r"^\s{2}(\S+):$")


_L4 = {"tcp": "tcp", "tcp6": "tcp", "udp": "udp", "udp6": "udp", "sctp": "sctp",
       "sctp6": "sctp"}


class TraceError(ValueError):
    """ovs-vswitchd's answer is not a trace (it refused the flow, or printed
    something else); the message has what it printed."""


def parse_flow(text: str) -> dict:
    """A flow in ovs-ofctl syntax ("tcp,in_port=3,nw_src=10.0.0.1") as a dict in
    order; bare keywords (protocols such as `tcp`, `eth`) map to None.

    ofproto/trace prints L4 ports as `tp_src`/`tp_dst`, but when parsing, OVS reads
    `tp_src` as `tcp_src` ("prerequisites not met" on a udp flow): they are renamed
    `tcp_*`/`udp_*`/`sctp_*` after the flow's protocol, so the dict reads back;
    likewise ICMPv6's `icmp_type`/`icmp_code` become `icmpv6_*`."""
    fields = {}
    for token in text.strip().split(","):
        if not token:
            continue
        key, sep, value = token.partition("=")
        fields[key] = value if sep else None
    l4 = next((_L4[k] for k in fields if k in _L4), None)
    if l4 and ("tp_src" in fields or "tp_dst" in fields):
        fields = {(f"{l4}_{k[3:]}" if k in ("tp_src", "tp_dst") else k): v
                  for k, v in fields.items()}
    if "icmp6" in fields:
        # Printed as icmp_type/icmp_code, read back only as icmpv6_*; and both
        # nd_sll and nd_tll are printed, but each is read back only for its
        # neighbour discovery message (135 solicitation, 136 advertisement).
        fields = {_ICMP6.get(k, k): v for k, v in fields.items()}
        keep = _ND_FIELDS.get(fields.get("icmpv6_type"), ())
        fields = {k: v for k, v in fields.items() if not k.startswith("nd_") or k in keep}
    return fields


_ICMP6 = {"icmp_type": "icmpv6_type", "icmp_code": "icmpv6_code"}
_ND_FIELDS = {"135": ("nd_target", "nd_sll"), "136": ("nd_target", "nd_tll")}


def format_flow(fields: Mapping[str, Optional[str]]) -> str:
    return ",".join(k if v is None else f"{k}={v}" for k, v in fields.items())


# Fields that belong to one bridge's pipeline, not to the packet: they do not cross a
# veth. `as_ingress` drops them when the packet is traced again on the next bridge.
_PIPELINE_FIELDS = {"in_port", "recirc_id", "dp_hash", "skb_priority", "skb_mark",
                    "pkt_mark", "metadata", "actset_output", "packet_type", "conj_id",
                    "eth"}
_PIPELINE_PREFIXES = ("ct_", "reg", "xreg", "xxreg", "tun_", "tunnel")

# Datapath `set(...)` keys as ovs-ofctl flow fields.
_ODP_SET_FIELDS = {
    "eth": {"src": "dl_src", "dst": "dl_dst"},
    "ipv4": {"src": "nw_src", "dst": "nw_dst", "tos": "nw_tos", "ttl": "nw_ttl"},
    "tcp": {"src": "tcp_src", "dst": "tcp_dst"},
    "udp": {"src": "udp_src", "dst": "udp_dst"},
    "sctp": {"src": "sctp_src", "dst": "sctp_dst"},
    "arp": {"sip": "arp_spa", "tip": "arp_tpa", "op": "arp_op", "sha": "arp_sha",
            "tha": "arp_tha"},
}


@dataclass(frozen=True)
class Output:
    """The packet leaving `bridge` by `port` (a port NAME; the bridge's LOCAL port has
    the bridge's name), with its header fields as they are at that point."""
    bridge: str
    port: str
    flow: Mapping[str, Optional[str]] = field(hash=False)

    def as_ingress(self, in_port: str) -> str:
        """This packet as a flow string entering a bridge on `in_port`: for tracing
        the next hop after a veth (the inter-bridge link). Pipeline metadata
        (registers, conntrack state, recirculation) is dropped: it does not cross."""
        kept = {k: v for k, v in self.flow.items()
                if k not in _PIPELINE_FIELDS and not k.startswith(_PIPELINE_PREFIXES)}
        return format_flow({"in_port": in_port, **kept})


@dataclass(frozen=True)
class TraceStep:
    """One table lookup in a trace: the flow that matched, as ovs-vswitchd prints
    it (`match` None: no flow matched, the lookup missed), and what it did. `pass_`
    counts the recirculations before it (0: the packet as it arrived; each
    `ct(...,table=N)` resumes the pipeline in a new pass with the tracker's answer)."""
    pass_: int
    table: int
    match: Optional[str]
    priority: Optional[int] = None
    cookie: Optional[int] = None
    actions: tuple = ()  # of str, as ovs-vswitchd printed them

    @property
    def missed(self) -> bool:
        return self.match is None


# " 1. ip,metadata=0x2, priority 100, cookie 0x534e000000000013" or " 0. No match."
_STEP = re.compile(r"^(?P<indent> *)(?P<table>\d+)\. (?P<rest>.*)$")
_STEP_FLOW = re.compile(r"^(?P<match>.*?),? ?priority (?P<priority>\d+)"
                        r"(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?$")
_PASS_HEADER = re.compile(r"^recirc\(0x[0-9a-f]+\) - ")


def parse_steps(text: str) -> tuple:
    """The table lookups of an `ofproto/trace` output, in order (TraceStep each).
    An action line is one indented deeper than its step; lines starting "->" are
    ovs-vswitchd's comments, not actions."""
    steps, current, passes = [], None, 0
    for line in text.splitlines():
        if _PASS_HEADER.match(line):
            passes += 1
            current = None
            continue
        m = _STEP.match(line)
        if m and len(m.group("indent")) <= 8:
            rest = m.group("rest").strip()
            flow = _STEP_FLOW.match(rest)
            if flow:
                current = TraceStep(passes, int(m.group("table")), flow.group("match"),
                                    int(flow.group("priority")),
                                    int(flow.group("cookie"), 16) if flow.group("cookie")
                                    else 0)
            else:  # "No match." (and its variants)
                current = TraceStep(passes, int(m.group("table")), None)
            steps.append(current)
            continue
        action = line.strip()
        if current is None or not action or not line.startswith(" ") \
                or action.startswith(("->", ">>", "thaw", "Resuming")):
            if not line.startswith(" "):
                current = None  # "Final flow:", "bridge(...)", a blank line: the step is over
            continue
        steps[-1] = current = dataclasses.replace(current, actions=current.actions + (action,))
    return tuple(steps)


@dataclass(frozen=True)
class TraceResult:
    """What `ofproto/trace` says one bridge does with a packet.

    `outputs` gathers the output actions of every pass (a `ct(...,table=N)` makes the
    trace recirculate: each pass has its own `Datapath actions:` line). `final_flow`
    is the last pass's `Final flow:` ("unchanged" resolved to that pass's `Flow:`).
    `drop` means the packet goes nowhere: no output port and no packet-in."""
    bridge: str
    flow: str
    text: str
    outputs: tuple = ()  # of Output
    controller: bool = False
    datapath_actions: tuple = ()  # of str, one per pass
    final_flow: Mapping[str, Optional[str]] = field(default_factory=dict, hash=False)
    steps: tuple = ()  # of TraceStep: every table lookup, every pass

    @property
    def ports(self) -> list:
        """Output port names, in datapath order."""
        return [o.port for o in self.outputs]

    @property
    def drop(self) -> bool:
        return not self.outputs and not self.controller

    def __str__(self) -> str:
        return (f"trace {self.bridge} {self.flow} -> "
                f"{' | '.join(self.datapath_actions) or '?'}")


def _split_top(text: str) -> list:
    """Split "a,b(c,d),e" on the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _inner(action: str) -> str:
    return action[action.index("(") + 1:action.rindex(")")]


def _apply_set(flow: dict, action: str) -> None:
    """Apply a datapath `set(eth(src=..,dst=..))` (or masked_set) to `flow`."""
    for header in _split_top(_inner(action)):
        if "(" not in header:
            continue
        names = _ODP_SET_FIELDS.get(header[:header.index("(")], {})
        for assignment in _split_top(_inner(header)):
            key, _, value = assignment.partition("=")
            if key in names:
                flow[names[key]] = value.split("/")[0]


def _walk_actions(actions: str, flow: dict, bridge: str, names: Callable[[int], str],
                  outputs: list) -> bool:
    """Follow one `Datapath actions:` list in order; append an Output per output
    action; return whether a packet-in (userspace(...controller(...))) occurs."""
    controller = False
    for action in _split_top(actions):
        if action.isdigit():
            outputs.append(Output(bridge, names(int(action)), dict(flow)))
        elif action.startswith(("set(", "masked_set(")):
            _apply_set(flow, action)
        elif action.startswith("clone("):
            controller |= _walk_actions(_inner(action), dict(flow), bridge, names, outputs)
        elif action.startswith("userspace(") and "controller" in action:
            controller = True  # userspace(pid=0,controller(reason=1,...))
        # drop, ct(), recirc(), meter(), push/pop_vlan...: no output of their own.
    return controller


def parse_trace(bridge: str, flow: str, text: str,
                names: Callable[[int], str]) -> TraceResult:
    """Parse `ofproto/trace` output; `names` maps a datapath port number to a name."""
    outputs, actions_lines = [], []
    controller = False
    pass_flow: dict = {}
    final: dict = {}
    for line in text.splitlines():
        if line.startswith(_FLOW_LINE):
            pass_flow = parse_flow(line[len(_FLOW_LINE):])
        elif line.startswith(_FINAL_FLOW_LINE):
            value = line[len(_FINAL_FLOW_LINE):].strip()
            final = dict(pass_flow) if value == "unchanged" else parse_flow(value)
        elif line.startswith(_ACTIONS_LINE):
            actions = line[len(_ACTIONS_LINE):].strip()
            actions_lines.append(actions)
            controller |= _walk_actions(actions, dict(pass_flow), bridge, names, outputs)
    if not actions_lines:
        raise TraceError(f"trace on {bridge} of {flow!r}: no 'Datapath actions:' in\n{text}")
    return TraceResult(bridge=bridge, flow=flow, text=text, outputs=tuple(outputs),
                       controller=controller, datapath_actions=tuple(actions_lines),
                       final_flow=final, steps=parse_steps(text))


@dataclass(frozen=True)
class TracePath:
    """A packet traced across bridges: one TraceResult per bridge it crossed.
    `exits` are the outputs that leave the traced topology (the followed link
    ports are not among them); `controller` names the bridges that punt it."""
    hops: tuple  # of TraceResult
    exits: tuple  # of Output
    controller: tuple  # of bridge names

    @property
    def ports(self) -> set:
        """{(bridge, port)} the packet finally leaves by."""
        return {(o.bridge, o.port) for o in self.exits}

    @property
    def drop(self) -> bool:
        return not self.exits and not self.controller

    def __str__(self) -> str:
        return " ; ".join(str(h) for h in self.hops)


def follow_links(trace: Callable[[str, str], TraceResult], bridge: str, flow: str,
                 links: Mapping[tuple, tuple], max_hops: int = 4,
                 ct_mark: Optional[int] = None) -> TracePath:
    """Trace a packet with `trace(bridge, flow)` and follow it over veths between
    bridges (a trace stops at a veth): `links` maps (bridge, port) to the (bridge,
    port) at the veth's other end; a packet leaving by a linked port is traced again
    entering the peer, with its modified header fields and no pipeline metadata.
    After `max_hops` traces, outputs to linked ports count as exits. `ct_mark`: the
    mark its connection has, given to the packet on every hop (with --ct-next it
    is what the tracker answers; it does not cross a veth by itself)."""
    hops, exits, controller = [], [], []
    marked = f",ct_mark={ct_mark}" if ct_mark else ""
    queue, seen = [(bridge, flow + marked)], set()
    while queue:
        br, fl = queue.pop(0)
        if (br, fl) in seen:
            continue
        seen.add((br, fl))
        result = trace(br, fl)
        hops.append(result)
        if result.controller:
            controller.append(br)
        for out in result.outputs:
            peer = links.get((br, out.port))
            if peer is not None and len(hops) < max_hops:
                queue.append((peer[0], out.as_ingress(peer[1]) + marked))
            else:
                exits.append(out)
    return TracePath(hops=tuple(hops), exits=tuple(exits), controller=tuple(controller))


# --------------------------------------------------------------------------- instance
