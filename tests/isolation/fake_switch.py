"""An OpenFlow 1.3 interpreter of socketnet Flow values: a switch without a switch.

Like Faucet's FakeOFTable. `FakeSwitch(name, flows, ports)` holds one bridge's
flow tables and runs a packet (a header dict, packets.py) through them:

  - in each table the highest-priority matching flow wins; no match is a drop
    (OpenFlow 1.3 with no table-miss flow, as Open vSwitch does); two flows of
    one priority matching one packet with different instructions is an error,
    because the switch may pick either;
  - matches are exact or masked (MACs, metadata, IPv4 prefixes) and honour
    OpenFlow's prerequisites: tcp_dst only matches TCP packets, arp_tpa only ARP;
  - instructions run in order: meter (ignored), apply-actions (output, set_field,
    move, IN_PORT, CONTROLLER, ct), write-metadata, goto-table;
  - the connection tracker is modelled (`Tracker`, one per datapath, shared by both
    bridges, zones apart): ct(zone, table=T) continues in table T with ct_state,
    ct_zone and ct_mark of the packet's connection (+trk+new if the zone does not
    hold it, +trk+est if it does, +rpl in its reply direction); ct(commit) adds the
    connection (with its mark), and ct without a table leaves the packet
    untracked. Connections committed before a trace are the test's to say (a
    controller's decisions); what one trace commits is forgotten after it, so
    that each packet is judged on the same state;
  - an output to the packet's own in_port is dropped unless it is IN_PORT, as
    Open vSwitch does; FLOOD and ALL go everywhere but in_port, LOCAL included;
    NORMAL is taken to go everywhere too, the worst a learning switch can do.

Flows Open vSwitch would refuse are refused when the switch is built
(`FlowRejected`): a missing prerequisite in a match or for a set_field/move, a
goto that does not go forward, a port the switch does not have.

`HostSwitches` compiles both bridges of a host with `compile_bridge` from the
same port list and follows the inter-bridge link: a packet leaving one end
enters the other bridge by the peer end. A packet that comes back to a port it
already entered, or passes more than `MAX_HOPS` bridges, is a `ForwardingLoop`.

Port numbers are 1..n in the order of `Bridge.ports` (`port_numbers`), LOCAL is
0xfffffffe; `switch_macs` gives every port a fixed MAC where a real switch would
report one, and `live_ports` turns both into what `compile_bridge` takes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from controller.compiler import SwitchPort, compile_bridge
from controller.flow import (CT, CT_STATE_BITS, OFPP_CONTROLLER, OFPP_IN_PORT, OFPP_LOCAL,
                             Apply, Controller, Flow, Goto, Meter, Move, Output, SetField,
                             WriteMetadata)
from topology.model import Bridge, Host

from tests.isolation.packets import LOCAL

OFPP_TABLE = 0xFFFFFFF9
OFPP_NORMAL = 0xFFFFFFFA
OFPP_FLOOD = 0xFFFFFFFB
OFPP_ALL = 0xFFFFFFFC
MAX_HOPS = 4
MAX_RECIRCULATIONS = 4
_ALL_ONES = (1 << 64) - 1

# OXM field -> the packet header (ovs-ofctl name) it reads and writes.
HEADER = {
    "eth_src": "dl_src", "eth_dst": "dl_dst", "eth_type": "dl_type", "ip_proto": "nw_proto",
    "ipv4_src": "nw_src", "ipv4_dst": "nw_dst",
    "tcp_src": "tp_src", "tcp_dst": "tp_dst", "udp_src": "tp_src", "udp_dst": "tp_dst",
    "icmpv4_type": "icmp_type", "icmpv4_code": "icmp_code",
    "arp_op": "arp_op", "arp_spa": "arp_spa", "arp_tpa": "arp_tpa",
    "arp_sha": "arp_sha", "arp_tha": "arp_tha",
}
# OpenFlow 1.3 section 7.2.3.8, table 12: field -> (field it needs, values allowed).
PREREQUISITE = {
    "ipv4_src": ("eth_type", {0x0800}), "ipv4_dst": ("eth_type", {0x0800}),
    "ip_proto": ("eth_type", {0x0800, 0x86DD}),
    "tcp_src": ("ip_proto", {6}), "tcp_dst": ("ip_proto", {6}),
    "udp_src": ("ip_proto", {17}), "udp_dst": ("ip_proto", {17}),
    "icmpv4_type": ("ip_proto", {1}), "icmpv4_code": ("ip_proto", {1}),
    "arp_op": ("eth_type", {0x0806}), "arp_spa": ("eth_type", {0x0806}),
    "arp_tpa": ("eth_type", {0x0806}), "arp_sha": ("eth_type", {0x0806}),
    "arp_tha": ("eth_type", {0x0806}),
}
_MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha"}
_IPV4_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}


class FlowRejected(ValueError):
    """A flow Open vSwitch would refuse to install."""


class AmbiguousMatch(RuntimeError):
    """Two flows of one priority in one table match the same packet."""


class ForwardingLoop(RuntimeError):
    """A packet came back to a port it already entered, or went too far."""


# --- helpers for callers --------------------------------------------------------------


def port_numbers(bridge: Bridge) -> dict:
    """Port name -> OpenFlow port number: 1..n in config order, LOCAL 0xfffffffe."""
    numbers = {p.name: i for i, p in enumerate(bridge.ports, start=1)}
    numbers[LOCAL] = OFPP_LOCAL
    return numbers


def switch_macs(host: Host) -> dict:
    """A fixed MAC for every port of both bridges, as a switch would report it,
    and for each bridge's LOCAL port under the bridge's name."""
    macs = {}
    for b_index, bridge in enumerate(host.bridges, start=1):
        macs[bridge.name] = f"02:5e:00:00:{b_index:02x}:fe"
        for p_index, port in enumerate(bridge.ports, start=1):
            macs[port.name] = f"02:5e:00:00:{b_index:02x}:{p_index:02x}"
    return macs


def live_ports(bridge: Bridge, macs: Mapping[str, str], absent: Iterable[str] = ()) -> dict:
    """What `compile_bridge` takes: the bridge's ports the switch has, by name."""
    absent = set(absent)
    return {name: SwitchPort(number, name, macs[name])
            for name, number in port_numbers(bridge).items()
            if name != LOCAL and name not in absent}


# --- the connection tracker ---------------------------------------------------------------

TRK, NEW, EST, RPL, INV = (CT_STATE_BITS[n] for n in ("trk", "new", "est", "rpl", "inv"))
UNTRACKED = (0, 0, 0)  # ct_state, ct_zone, ct_mark


def connection_of(packet: Mapping) -> Optional[tuple]:
    """An IPv4 packet's connection in the direction it travels: (src, dst, proto,
    sport, dport); ICMP echo request and reply are one connection. None for anything
    the tracker cannot follow."""
    if packet.get("dl_type") != 0x0800 or "nw_proto" not in packet:
        return None
    proto = packet["nw_proto"]
    ports = (packet.get("tp_src", 0), packet.get("tp_dst", 0)) if proto in (6, 17) else (0, 0)
    return (packet["nw_src"], packet["nw_dst"], proto) + ports


def reverse(connection: tuple) -> tuple:
    src, dst, proto, sport, dport = connection
    return (dst, src, proto, dport, sport)


class Tracker:
    """Connections by zone, in their original direction, each with its ct_mark."""

    def __init__(self, connections: Optional[Mapping] = None):
        self.connections = dict(connections or {})  # (zone, connection) -> mark

    def copy(self) -> "Tracker":
        return Tracker(self.connections)

    def commit(self, zone: int, packet: Mapping, mark: Optional[int] = None) -> None:
        c = connection_of(packet)
        if c is None:
            return
        for key in ((zone, c), (zone, reverse(c))):
            if key in self.connections:
                if mark is not None:
                    self.connections[key] = mark
                return
        self.connections[(zone, c)] = mark or 0

    def state(self, zone: int, packet: Mapping) -> tuple:
        """(ct_state, ct_zone, ct_mark) of the packet after ct(zone=...)."""
        c = connection_of(packet)
        if c is None:
            return (TRK | INV, zone, 0)
        if (zone, c) in self.connections:
            return (TRK | EST, zone, self.connections[(zone, c)])
        if (zone, reverse(c)) in self.connections:
            return (TRK | EST | RPL, zone, self.connections[(zone, reverse(c))])
        return (TRK | NEW, zone, 0)


# --- one bridge ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A packet leaving one bridge."""
    port: str        # a port name, or LOCAL
    headers: dict    # the packet as it leaves, without in_port
    flows: tuple     # the flows hit up to this output, in order


@dataclass(frozen=True)
class Run:
    """One pass through one bridge's tables."""
    outputs: tuple     # of Sent
    packet_ins: tuple  # of Sent (port "CONTROLLER")
    flows: tuple       # every flow hit


@dataclass
class _Entry:
    flow: Flow
    in_port: Optional[int]   # an exact in_port match, else None
    metadata: Optional[int]  # an exact metadata match, else None
    fields: tuple            # the other fields: (oxm name, value, mask)


class FakeSwitch:
    """One bridge's flow tables, interpreted. `ports` maps the port names the
    switch has to their numbers (LOCAL is always there)."""

    def __init__(self, name: str, flows: Iterable[Flow], ports: Mapping[str, int],
                 tracker: Optional[Tracker] = None):
        self.name = name
        self.tracker = tracker if tracker is not None else Tracker()
        self.numbers = dict(ports)
        self.numbers.setdefault(LOCAL, OFPP_LOCAL)
        self.names = {n: name for name, n in self.numbers.items()}
        self.flows = tuple(flows)
        tables: dict = {}
        for f in self.flows:
            self._check(f)
            tables.setdefault(f.table, []).append(_entry(f))
        self._tables = {t: sorted(es, key=lambda e: -e.flow.priority) for t, es in tables.items()}
        self._candidates: dict = {}

    def _check(self, f: Flow) -> None:
        """Refuse what Open vSwitch would refuse at flow-mod time."""
        match = f.match_dict
        for name in match:
            _require_prerequisites(name, match, f, "match")
        if "in_port" in match and match["in_port"] not in self.names:
            raise FlowRejected(f"{self.name}: in_port {match['in_port']} is not a port "
                               f"of the switch: {f.ofctl(self.names)}")
        recirculates = any(isinstance(a, CT) and a.table is not None
                           for ins in f.instructions if isinstance(ins, Apply)
                           for a in ins.actions)
        for ins in f.instructions:
            if isinstance(ins, Goto) and ins.table <= f.table:
                raise FlowRejected(f"{self.name}: goto_table must go forward: "
                                   f"{f.ofctl(self.names)}")
            if isinstance(ins, Goto) and recirculates:
                raise FlowRejected(f"{self.name}: ct(table=...) and goto_table fork the "
                                   f"packet in two: {f.ofctl(self.names)}")
            for action in (ins.actions if isinstance(ins, Apply) else ()):
                if isinstance(action, SetField):
                    _require_prerequisites(action.field, match, f, "set_field")
                elif isinstance(action, Move):
                    _require_prerequisites(action.src, match, f, "move")
                    _require_prerequisites(action.dst, match, f, "move")
                elif isinstance(action, CT) and match.get("eth_type") not in (0x0800, 0x86DD):
                    raise FlowRejected(f"{self.name}: ct needs a match on IPv4 or IPv6: "
                                       f"{f.ofctl(self.names)}")
                elif isinstance(action, Output) and action.port not in self.names and \
                        action.port not in (OFPP_IN_PORT, OFPP_CONTROLLER, OFPP_NORMAL,
                                            OFPP_FLOOD, OFPP_ALL):
                    raise FlowRejected(f"{self.name}: output to port {action.port:#x}, which "
                                       f"the switch does not have: {f.ofctl(self.names)}")

    def ofctl(self, f: Flow) -> str:
        return f.ofctl(self.names)

    def run(self, headers: Mapping, tracker: Optional[Tracker] = None) -> Run:
        """One pass through this bridge's tables for a packet entering
        `headers["in_port"]` (a port name); `tracker`: the connection tracker it
        meets (default: the switch's own)."""
        tracker = self.tracker if tracker is None else tracker
        in_port = self.numbers[headers["in_port"]]
        packet = {k: v for k, v in headers.items() if k != "in_port"}
        metadata, table, hit = 0, 0, []
        outputs, packet_ins = [], []
        ct = UNTRACKED
        recirculations = 0
        while True:
            flow = self._lookup(table, packet, in_port, metadata, ct)
            if flow is None:
                break  # table miss: drop
            hit.append(flow)
            goto = None
            for ins in flow.instructions:
                if isinstance(ins, Apply):
                    for action in ins.actions:
                        if isinstance(action, CT):
                            if action.commit:
                                tracker.commit(action.zone, packet, action.mark)
                            ct = UNTRACKED
                            if action.table is not None:
                                recirculations += 1
                                if recirculations > MAX_RECIRCULATIONS:
                                    raise ForwardingLoop(f"{self.name}: {packet} goes into the "
                                                         f"connection tracker again and again")
                                ct = tracker.state(action.zone, packet)
                                goto = action.table
                            continue
                        self._apply(action, packet, in_port, tuple(hit), outputs, packet_ins)
                elif isinstance(ins, WriteMetadata):
                    metadata = (metadata & ~ins.mask & _ALL_ONES) | (ins.value & ins.mask)
                elif isinstance(ins, Goto):
                    goto = ins.table
                elif not isinstance(ins, Meter):
                    raise FlowRejected(f"{self.name}: unknown instruction {ins!r}")
            if goto is None:
                break
            table = goto
        return Run(tuple(outputs), tuple(packet_ins), tuple(hit))

    def _apply(self, action, packet: dict, in_port: int, hit: tuple, outputs: list,
               packet_ins: list) -> None:
        if isinstance(action, SetField):
            packet[HEADER[action.field]] = action.value
        elif isinstance(action, Move):
            packet[HEADER[action.dst]] = packet[HEADER[action.src]]
        elif isinstance(action, Controller) or (
                isinstance(action, Output) and action.port == OFPP_CONTROLLER):
            packet_ins.append(Sent("CONTROLLER", dict(packet), hit))
        elif isinstance(action, Output):
            if action.port == OFPP_IN_PORT:
                ports = [in_port]
            elif action.port in (OFPP_FLOOD, OFPP_ALL, OFPP_NORMAL):
                ports = [n for n in self.names if n != in_port]
            elif action.port == in_port:
                ports = []  # Open vSwitch skips output to the input port
            else:
                ports = [action.port]
            for n in ports:
                outputs.append(Sent(self.names[n], dict(packet), hit))
        else:
            raise FlowRejected(f"{self.name}: unknown action {action!r}")

    def _lookup(self, table: int, packet: Mapping, in_port: int, metadata: int,
                ct: tuple = UNTRACKED) -> Optional[Flow]:
        key = (table, in_port, metadata)
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = [e for e in self._tables.get(table, ())
                          if e.in_port in (None, in_port) and e.metadata in (None, metadata)]
            self._candidates[key] = candidates
        view = _oxm_view(packet, metadata)
        view["ct_state"], view["ct_zone"], view["ct_mark"] = ct
        winner = None
        for e in candidates:
            if winner is not None and e.flow.priority < winner.flow.priority:
                break
            if _matches(e.fields, view):
                if winner is None:
                    winner = e
                elif e.flow.instructions != winner.flow.instructions:
                    raise AmbiguousMatch(
                        f"{self.name} table {table}: two flows of priority "
                        f"{e.flow.priority} match {packet}:\n  {self.ofctl(winner.flow)}\n"
                        f"  {self.ofctl(e.flow)}")
        return winner.flow if winner else None


def _matches(fields: tuple, view: Mapping) -> bool:
    for name, value, mask in fields:
        x = view.get(name)
        if x is None or x & mask != value:
            return False
    return True


def _require_prerequisites(name: str, match: Mapping, f: Flow, what: str) -> None:
    while name in PREREQUISITE:
        needed, values = PREREQUISITE[name]
        if match.get(needed) not in values:
            raise FlowRejected(f"{what} on {name} needs {needed} in "
                               f"{sorted(hex(v) for v in values)}: {f}")
        if name.startswith("icmpv4") and match.get("eth_type") != 0x0800:
            raise FlowRejected(f"{what} on {name} needs eth_type 0x800: {f}")
        name = needed


def _entry(f: Flow) -> _Entry:
    in_port = metadata = None
    fields = []
    for name, value in f.match:
        if name == "in_port":
            in_port = value
        elif name == "metadata" and not isinstance(value, tuple):
            metadata = value
        else:
            v, mask = _value_and_mask(name, value)
            fields.append((name, v & mask, mask))
    return _Entry(f, in_port, metadata, tuple(fields))


def _value_and_mask(name: str, value) -> tuple:
    if name in _MAC_FIELDS:
        if isinstance(value, tuple):
            return _mac(value[0]), _mac(value[1])
        return _mac(value), (1 << 48) - 1
    if name in _IPV4_FIELDS:
        address, _, plen = str(value).partition("/")
        plen = int(plen) if plen else 32
        return _ipv4(address), ((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1)
    if isinstance(value, tuple):
        return value
    return int(value), _ALL_ONES


def _oxm_view(packet: Mapping, metadata: int) -> dict:
    """The packet's fields as OXM integers, each only where its prerequisites hold."""
    view = {"metadata": metadata}
    for name in ("dl_src", "dl_dst"):
        if name in packet:
            view["eth_src" if name == "dl_src" else "eth_dst"] = _mac(packet[name])
    eth_type = packet.get("dl_type")
    if eth_type is None:
        return view
    view["eth_type"] = eth_type
    if eth_type == 0x0806:
        for name in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"):
            if name in packet:
                value = packet[name]
                view[name] = (_mac(value) if name in _MAC_FIELDS else
                              _ipv4(value) if name in _IPV4_FIELDS else int(value))
        return view
    if eth_type not in (0x0800, 0x86DD) or "nw_proto" not in packet:
        return view
    proto = view["ip_proto"] = packet["nw_proto"]
    if eth_type == 0x0800:
        view["ipv4_src"], view["ipv4_dst"] = _ipv4(packet["nw_src"]), _ipv4(packet["nw_dst"])
        if proto == 1:
            view["icmpv4_type"] = packet.get("icmp_type", 0)
            view["icmpv4_code"] = packet.get("icmp_code", 0)
    if proto in (6, 17) and "tp_dst" in packet:
        word = "tcp" if proto == 6 else "udp"
        view[f"{word}_src"], view[f"{word}_dst"] = packet["tp_src"], packet["tp_dst"]
    return view


@functools.lru_cache(maxsize=None)
def _mac(text: str) -> int:
    return int(str(text).replace(":", ""), 16)


@functools.lru_cache(maxsize=None)
def _ipv4(text: str) -> int:
    a, b, c, d = (int(x) for x in str(text).split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


# --- both bridges and the link between them ---------------------------------------------


@dataclass(frozen=True)
class Egress:
    """The packet leaving `bridge` by `port`, as it is there."""
    bridge: str
    port: str
    headers: dict
    path: tuple  # of (bridge, Flow): every flow hit on the way, across hops

    @property
    def point(self) -> tuple:
        return (self.bridge, self.port)


@dataclass(frozen=True)
class Trace:
    egress: tuple  # of Egress, the inter-bridge hop included
    packet_ins: tuple = field(default=())  # of Egress with port "CONTROLLER"

    @property
    def points(self) -> set:
        return {e.point for e in self.egress}


class HostSwitches:
    """Both bridges of a host and the inter-bridge link between them."""

    def __init__(self, host: Host, switches: Mapping[str, FakeSwitch],
                 tracker: Optional[Tracker] = None):
        self.host = host
        self.switches = dict(switches)
        self.tracker = tracker if tracker is not None else Tracker()
        # (bridge, port) -> (bridge, port) at the far end of the inter-bridge
        # link, as configured; an end its switch does not have takes nothing in.
        self.link = {}
        for b in host.bridges:
            for p in b.ports:
                if not p.peer:
                    continue
                for far in host.bridges:
                    if far is not b and p.peer in (q.name for q in far.ports):
                        self.link[(b.name, p.name)] = (far.name, p.peer)

    @classmethod
    def compile(cls, host: Host, macs: Mapping[str, str], absent: Iterable[str] = (),
                extra_flows: Optional[Mapping[str, Iterable[Flow]]] = None) -> "HostSwitches":
        """Each bridge with the flows `compile_bridge` gives for its live ports
        (every port but `absent`), plus `extra_flows` by bridge name."""
        absent = set(absent)
        switches = {}
        for b in host.bridges:
            live = live_ports(b, macs, absent)
            flows = list(compile_bridge(host, b.name, live))
            flows += list((extra_flows or {}).get(b.name, ()))
            switches[b.name] = FakeSwitch(b.name, flows,
                                          {name: sp.number for name, sp in live.items()})
        return cls(host, switches)

    def commit(self, zone: int, packet: Mapping, mark: Optional[int] = None) -> None:
        """A connection the tracker holds before any trace (a controller's decision)."""
        self.tracker.commit(zone, packet, mark)

    def trace(self, bridge: str, headers: Mapping) -> Trace:
        """Every place the packet leaves a bridge, following the link."""
        egress, packet_ins = [], []
        trial = self.tracker.copy()  # what this trace commits, it forgets
        pending = [(bridge, dict(headers), (), ())]  # ..., path, ports entered so far
        while pending:
            bridge, h, path, entered = pending.pop(0)
            if (bridge, h["in_port"]) in entered or len(entered) >= MAX_HOPS:
                raise ForwardingLoop(f"{h} entered {bridge}/{h['in_port']} after "
                                     f"{' '.join('/'.join(e) for e in entered)}:\n"
                                     + self.render(path))
            entered += ((bridge, h["in_port"]),)
            switch = self.switches[bridge]
            if h["in_port"] not in switch.numbers:
                continue  # the switch does not have that port: nothing enters
            run = switch.run(h, trial)
            for out in run.packet_ins:
                packet_ins.append(Egress(bridge, out.port, out.headers,
                                         path + tuple((bridge, f) for f in out.flows)))
            for out in run.outputs:
                e = Egress(bridge, out.port, out.headers,
                           path + tuple((bridge, f) for f in out.flows))
                egress.append(e)
                far = self.link.get(e.point)
                if far is not None:
                    pending.append((far[0], {**out.headers, "in_port": far[1]}, e.path,
                                    entered))
        return Trace(tuple(egress), tuple(packet_ins))

    def render(self, path: Iterable) -> str:
        """A path of (bridge, Flow) as ovs-ofctl lines with port names."""
        return "\n".join(f"    {b}: {self.switches[b].ofctl(f)}" for b, f in path)
