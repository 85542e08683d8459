"""Reactive classification of Netmaker ingress: a packet-in becomes a decision and a commit.

Netmaker ingress passes the connection tracker in the mesh's zone (table 1, see
controller.compiler). A connection with a decision carries it as its ct_mark and
static flows send it on; the first packet of a connection without one reaches
socketnet through the packet-in meter. This module is the pure core of what
happens to it: no os-ken, no clock (callers pass `now`), no I/O.

    parse_ipv4(frame) -> Flow5 | None           the packet's 5-tuple, read from the frame
    DecisionCache.admit(flow5, now) -> Verdict  may its source take one more decision?
    Classifier(host).decide(flow5) -> Decision  privacy, management or drop, and which rule
    commit_actions(decision, zone) -> actions   the packet-out's: commit with the class's
                                                mark, then (unless drop) back to table 0
    source_block_flow(src, seconds, zone) -> Flow
                                                drops a source over its cap, in the switch

The app around it, per packet-in: parse (None: drop, `DropReason.UNPARSABLE`);
admit (SOURCE_OVER_CAP: install `source_block_flow`; not admitted: drop);
decide; one packet-out that commits the connection with its class
(controller.fastpath.pack_commit). No FlowMod per connection.

How a decision is made: the first matching rule of `socketnet.classification.rules`,
then (with `seed_services`) the seed's services, then the default. Whatever the
rules say, the decision is privacy only for a Netmaker source reaching a service
of the xray client (W1), and management only for a management container's
address (W5); anything else becomes drop with the rule "unroutable". Table 2
would drop such packets anyway; this keeps the decision honest and counted.
"""
from __future__ import annotations

import enum
import socket
import struct
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from typing import NamedTuple, Optional, Union

from netaddr import IPNetwork, IPSet

from controller.flow import (CT, ETH_TYPE_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, OFPP_TABLE,
                             Flow, Output)
from controller.pipeline import CLASSIFY, Mark, Purpose, Zone
from topology.model import (DEFAULT_RULE, SERVICE_RULE_PREFIX, UNROUTABLE_RULE, Classification,
                            ClassRule, Host, TrafficClass)


PROTOCOL_NUMBERS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "icmp": IPPROTO_ICMP}
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}

# Table 1: above the undecided (metered) flows and the class flows.
P_SOURCE_BLOCK = 300

_U32 = struct.Struct("!I")


def address_int(text: str) -> int:
    """A dotted-quad IPv4 address as an integer; ValueError if it is not one."""
    try:
        return _U32.unpack(socket.inet_pton(socket.AF_INET, text))[0]
    except (OSError, TypeError) as e:
        raise ValueError(f"not an IPv4 address: {text!r}") from e


def address_text(value: int) -> str:
    return socket.inet_ntoa(_U32.pack(value))


# --- the packet ---------------------------------------------------------------


class Flow5(NamedTuple):
    """The key of a packet: addresses as integers, ports 0 unless TCP or UDP."""
    src: int
    dst: int
    proto: int
    sport: int = 0
    dport: int = 0

    @classmethod
    def of(cls, src: str, dst: str, proto: Union[int, str], sport: int = 0,
           dport: int = 0) -> "Flow5":
        """From dotted quads and a protocol name or number; ValueError if wrong."""
        number = PROTOCOL_NUMBERS[proto] if isinstance(proto, str) else int(proto)
        if number not in (IPPROTO_TCP, IPPROTO_UDP) and (sport or dport):
            raise ValueError(f"protocol {proto} has no ports")
        for port in (sport, dport):
            if not 0 <= port <= 0xFFFF:
                raise ValueError(f"port {port} is not within 0..65535")
        return cls(address_int(src), address_int(dst), number, sport, dport)

    def __str__(self) -> str:
        proto = _PROTOCOL_NAMES.get(self.proto, f"ip-proto-{self.proto}")
        if self.proto in (IPPROTO_TCP, IPPROTO_UDP):
            return (f"{proto} {address_text(self.src)}:{self.sport} -> "
                    f"{address_text(self.dst)}:{self.dport}")
        return f"{proto} {address_text(self.src)} -> {address_text(self.dst)}"


# Ethernet type, then the IPv4 header up to the addresses: version and IHL,
# total length, flags and fragment offset, protocol, source, destination.
_ETH_IPV4 = struct.Struct("!HBxHxxHxBxxII")
_L4_PORTS = struct.Struct("!HH")
_ETH_HEADER = 14
_FRAGMENT_OFFSET = 0x1FFF


def parse_ipv4(frame) -> Optional[Flow5]:
    """The Flow5 of an Ethernet II frame carrying IPv4; None for anything else.

    Anything else: another ethertype (VLAN tags included), a header that is
    malformed or cut short, a TCP or UDP header without its ports, a fragment
    other than the first (it has no ports). Never raises.
    """
    try:
        eth_type, version_ihl, total, fragment, proto, src, dst = _ETH_IPV4.unpack_from(frame, 12)
    except (struct.error, TypeError):
        return None
    if eth_type != ETH_TYPE_IP or version_ihl >> 4 != 4:
        return None
    header = (version_ihl & 0x0F) * 4
    if header < 20 or total < header or fragment & _FRAGMENT_OFFSET:
        return None
    if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
        if total < header + 4:
            return None
        try:
            sport, dport = _L4_PORTS.unpack_from(frame, _ETH_HEADER + header)
        except struct.error:
            return None
        return Flow5(src, dst, proto, sport, dport)
    if len(frame) < _ETH_HEADER + header:
        return None
    return Flow5(src, dst, proto, 0, 0)


# --- the decision -------------------------------------------------------------


class DropReason(str, enum.Enum):
    """Why a packet-in ended in a drop; the keys of `DecisionCache.drops`."""
    UNPARSABLE = "unparsable"          # not IPv4 socketnet can read, a later fragment, or a
                                       # malformed packet-in
    SOURCE_BLOCKED = "source-blocked"  # its source is blocked for going over its cap
    SOURCE_CAP = "source-cap"          # its source just went over cached_per_source
    TOTAL_CAP = "total-cap"            # cached_total decisions are held already
    NOT_HELD = "not-held"              # its commit does not hold (the zone is full)
    ERROR = "error"                    # deciding it failed (logged with its traceback)
    UNKNOWN_CAP = "unknown-cap"        # it holds cached_unknown of sources not known
    RULE = "rule"                      # a rule, or the default, decided drop
    UNROUTABLE = "unroutable"          # a rule decided a class the destination cannot have

    def __str__(self) -> str:
        return self.value


class Decision(NamedTuple):
    cls: TrafficClass
    rule: str  # a rule's name, "service:<container>/<service>", "default" or "unroutable"
    overruled: str = ""  # with "unroutable": the rule whose class could not be honoured

    @property
    def drop_reason(self) -> Optional[DropReason]:
        if self.cls is not TrafficClass.DROP:
            return None
        return DropReason.UNROUTABLE if self.rule == UNROUTABLE_RULE else DropReason.RULE


def seed_service_rules(host: Host) -> tuple:
    """The rules the seed's own data implies: a service of the xray client is
    privacy, a service of a management container is management; and anything a
    Netmaker peer or another node sends to a management container is management:
    the seed trusts the Netmaker side of the management network (its firewall
    trusts nm-privacy), and the replies to the management containers' own
    connections over Netmaker (W5) arrive as Netmaker ingress too."""
    rules = []
    for container, cls in ((host.xray_client.container, TrafficClass.PRIVACY),
                           *((c, TrafficClass.MANAGEMENT) for c in host.mesh.containers)):
        for service in container.services:
            rules.append(ClassRule(
                name=f"{SERVICE_RULE_PREFIX}{container.name}/{service.name}", cls=cls,
                dst=IPSet([IPNetwork(f"{container.address}/32")]), protocol=service.protocol,
                dst_ports=((service.port, service.port),)))
    for container in host.mesh.containers:
        rules.append(ClassRule(
            name=f"{SERVICE_RULE_PREFIX}{container.name}/netmaker-side", cls=TrafficClass.MANAGEMENT,
            src=host.netmaker_side, dst=IPSet([IPNetwork(f"{container.address}/32")])))
    return tuple(rules)


class _Ranges(NamedTuple):
    """Disjoint, sorted, inclusive integer ranges, for membership by bisection."""
    firsts: tuple
    lasts: tuple


def _within(ranges: _Ranges, value: int) -> bool:
    i = bisect_right(ranges.firsts, value) - 1
    return i >= 0 and value <= ranges.lasts[i]


def _address_ranges(addresses: Optional[IPSet]) -> Optional[_Ranges]:
    if addresses is None:
        return None
    spans = list(addresses.iter_ipranges())  # merged and sorted
    return _Ranges(tuple(r.first for r in spans), tuple(r.last for r in spans))


def _port_ranges(pairs: tuple) -> Optional[_Ranges]:
    if not pairs:
        return None
    merged = []
    for low, high in sorted(pairs):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return _Ranges(tuple(m[0] for m in merged), tuple(m[1] for m in merged))


class _Candidate(NamedTuple):
    """A compiled rule, once its protocol and destination are known to match."""
    src: Optional[_Ranges]
    sport: Optional[_Ranges]
    dport: Optional[_Ranges]
    decision: Decision


_OTHER_PROTOCOLS = -1  # the bucket of IP protocols other than tcp, udp and icmp
_LAST_ADDRESS = 0xFFFFFFFF


def _by_destination(entries: list) -> tuple:
    """(bounds, candidates) for one protocol: the destination space cut into
    intervals [bounds[i], bounds[i+1]), each with the rules, in order, whose dst
    covers it. `entries` is [(dst ranges or None for any, _Candidate)] in order."""
    starts, stops = defaultdict(list), defaultdict(list)
    for order, (dst, _) in enumerate(entries):
        spans = [(0, _LAST_ADDRESS)] if dst is None else zip(dst.firsts, dst.lasts)
        for first, last in spans:
            starts[first].append(order)
            stops[last + 1].append(order)
    cuts = sorted({0, *starts, *(cut for cut in stops if cut <= _LAST_ADDRESS)})
    active, bounds, candidates, interned = set(), [], [], {}
    for cut in cuts:
        active.difference_update(stops.get(cut, ()))
        active.update(starts.get(cut, ()))
        group = tuple(entries[order][1] for order in sorted(active))
        if candidates and group == candidates[-1]:
            continue
        bounds.append(cut)
        candidates.append(interned.setdefault(group, group))
    return bounds, candidates


_DROP, _PRIVACY = TrafficClass.DROP, TrafficClass.PRIVACY  # looked up once, not per decision


class Classifier:
    """Decides a Flow5 in a few microseconds.

    The rules are compiled once: split by protocol ("any" goes to every
    protocol), then by destination interval, so a decision is one dict lookup,
    one bisection and a scan of the few rules whose protocol and destination
    match, in rule order.
    """

    def __init__(self, host: Host):
        classification = host.classification
        services = seed_service_rules(host) if classification.seed_services else ()
        self.rules = tuple(classification.rules) + services  # in the order they are tried
        self.default = Decision(TrafficClass(classification.default), DEFAULT_RULE)

        buckets = {IPPROTO_TCP: [], IPPROTO_UDP: [], IPPROTO_ICMP: [], _OTHER_PROTOCOLS: []}
        for rule in self.rules:
            candidate = _Candidate(_address_ranges(rule.src), _port_ranges(rule.src_ports),
                                   _port_ranges(rule.dst_ports),
                                   Decision(TrafficClass(rule.cls), rule.name))
            protocols = buckets if rule.protocol == "any" else (PROTOCOL_NUMBERS[rule.protocol],)
            for protocol in protocols:
                buckets[protocol].append((_address_ranges(rule.dst), candidate))
        self._by_protocol = {p: _by_destination(entries) for p, entries in buckets.items()}
        self._other = self._by_protocol.pop(_OTHER_PROTOCOLS)

        # Where each class may go (W1, W5): the guard every decision passes.
        xray = host.xray_client.container
        self._xray_services = frozenset((int(xray.address), PROTOCOL_NUMBERS[s.protocol], s.port)
                                        for s in xray.services)
        self._netmaker = _address_ranges(IPSet(host.netmaker_ranges))
        self._management = frozenset(int(c.address) for c in host.mesh.containers)

    def decide(self, flow: Flow5) -> Decision:
        src, dst, proto, sport, dport = flow
        bounds, candidates = self._by_protocol.get(proto, self._other)
        decision = self.default
        for rule in candidates[bisect_right(bounds, dst) - 1]:
            if rule.src is not None and not _within(rule.src, src):
                continue
            if rule.sport is not None and not _within(rule.sport, sport):
                continue
            if rule.dport is not None and not _within(rule.dport, dport):
                continue
            decision = rule.decision
            break

        cls = decision.cls
        if cls is _DROP:
            return decision
        if cls is _PRIVACY:
            if (dst, proto, dport) in self._xray_services and _within(self._netmaker, src):
                return decision
        elif dst in self._management:
            return decision
        return Decision(TrafficClass.DROP, UNROUTABLE_RULE, decision.rule)


# --- what the controller answers with --------------------------------------

MARKS = {TrafficClass.PRIVACY: Mark.PRIVACY, TrafficClass.MANAGEMENT: Mark.MANAGEMENT,
         TrafficClass.DROP: Mark.DROP}
CLASS_OF_MARK = {int(mark): cls for cls, mark in MARKS.items()}


def commit_actions(decision: Decision, zone: int) -> tuple:
    """The actions of the packet-out that answers a packet-in with `decision`:
    commit the connection to `zone` with its class's mark, and, unless the
    class is drop, send the packet back through the tables (it now follows the
    mark). fastpath.pack_commit packs the same."""
    commit = CT(zone, commit=True, mark=int(MARKS[decision.cls]))
    if decision.cls is TrafficClass.DROP:
        return (commit,)
    return (commit, Output(OFPP_TABLE))


def source_block_flow(src: Union[int, str], seconds: int, zone: int) -> Flow:
    """The table-1 flow that drops every new (undecided) connection from `src`
    for `seconds`, so that its packets stop reaching the controller; connections
    it has already go on."""
    address = address_text(src) if isinstance(src, int) else src
    return Flow.make(CLASSIFY.id, P_SOURCE_BLOCK,
                     {"metadata": int(Zone.NETMAKER), "ct_zone": zone,
                      "ct_mark": int(Mark.UNDECIDED), "eth_type": ETH_TYPE_IP,
                      "ipv4_src": address},
                     (), Purpose.BLOCKED.cookie, hard_timeout=seconds)


# --- how many decisions a source holds ----------------------------------------


class Verdict(str, enum.Enum):
    """What `DecisionCache.admit` allows for one packet-in."""
    ADMITTED = "admitted"              # a new decision: commit it, send the packet on
    PENDING = "pending"                # decided a moment ago (the packet was on its way
                                       # before the commit): commit again, send it on
    SOURCE_BLOCKED = "source-blocked"  # drop; the source is blocked already
    SOURCE_OVER_CAP = "source-cap"     # drop; install source_block_flow for the source
    TOTAL_OVER_CAP = "total-cap"       # drop; commit nothing
    UNKNOWN_OVER_CAP = "unknown-cap"   # drop; commit nothing
    NOT_HELD = "not-held"              # drop: committed again and again, the connection
                                       # does not stay (the zone is full)

    @property
    def admitted(self) -> bool:
        return self in ADMITTING


ADMITTING = (Verdict.ADMITTED, Verdict.PENDING)  # the verdicts that commit


# A connection that comes back to the controller this many times within
# RETRY_WINDOW seconds of its last commit is not being held by the tracker.
RETRIES = 3
RETRY_WINDOW = 1.0


class DecisionCache:
    """The decisions socketnet has committed, counted per source, for sources
    that are not `known` (Host.known_sources: a flood's random sources are never
    known) and in all, and the sources blocked for going over their cap. Pure
    bookkeeping: the caller passes the time (`now`, seconds on a monotonic clock).

    The connection tracker does not say when a connection ends, so a decision
    counts for `idle_timeout` seconds after it was made: the least a connection
    lives in the zone. What this bounds is how many new decisions a source, or
    the sources not known, may take within that time; the zone's own limit
    (cached_total, set in the datapath) bounds the connections in the zone.
    Why a share for sources that are not known (`cached_unknown`): a flood of
    random sources takes that share and no more, while known sources go on
    being decided up to cached_total."""

    def __init__(self, classification: Classification, known: Optional[IPSet] = None):
        # Flow5 -> when it was decided, oldest first. Plain floats: no per-entry
        # container for Python's garbage collector to walk at 100,000 decisions.
        self._entries: OrderedDict = OrderedDict()
        self._retries: dict = {}  # Flow5 -> (times it came back, since when): rare
        self._per_source: dict = {}  # source address -> decisions it holds
        self._unknown = 0  # decisions held by sources that are not known
        self._blocked: dict = {}  # source address -> blocked until
        self.drops = {reason.value: 0 for reason in DropReason}
        self.reconfigure(classification, known)

    def reconfigure(self, classification: Classification, known: Optional[IPSet]) -> None:
        """New limits, idle timeout and known sources (a reload); decisions held stay."""
        self.limits = classification.limits
        self.lifetime = classification.idle_timeout
        self._known = _address_ranges(known or IPSet())
        self._unknown = sum(n for src, n in self._per_source.items() if not self.known(src))

    def known(self, src: int) -> bool:
        return _within(self._known, src)

    @property
    def unknown(self) -> int:
        """Decisions held by sources that are not known."""
        return self._unknown

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        """The Flow5 of each decision held, oldest first."""
        return iter(list(self._entries))

    def cached_for(self, src: int) -> int:
        return self._per_source.get(src, 0)

    def blocked(self, src: int, now: float) -> bool:
        return self._blocked.get(src, now) > now

    def admit(self, flow: Flow5, now: float) -> Verdict:
        src = flow.src
        until = self._blocked.get(src)
        if until is not None:
            if now < until:
                self.drops[DropReason.SOURCE_BLOCKED.value] += 1
                return Verdict.SOURCE_BLOCKED
            del self._blocked[src]
        entries = self._entries
        if flow in entries:
            count, since = self._retries.get(flow, (0, now))
            if now - since >= RETRY_WINDOW:
                count, since = 0, now
            count += 1
            self._retries[flow] = (count, since)
            if count > RETRIES:
                self.drops[DropReason.NOT_HELD.value] += 1
                return Verdict.NOT_HELD
            return Verdict.PENDING
        count = self._per_source.get(src, 0)
        if count >= self.limits.cached_per_source:
            self._blocked[src] = now + self.limits.over_limit_seconds
            self.drops[DropReason.SOURCE_CAP.value] += 1
            return Verdict.SOURCE_OVER_CAP
        if len(entries) >= self.limits.cached_total:
            self.drops[DropReason.TOTAL_CAP.value] += 1
            return Verdict.TOTAL_OVER_CAP
        known = self.known(src)
        if not known and self._unknown >= self.limits.cached_unknown:
            self.drops[DropReason.UNKNOWN_CAP.value] += 1
            return Verdict.UNKNOWN_OVER_CAP
        entries[flow] = now
        self._per_source[src] = count + 1
        if not known:
            self._unknown += 1
        return Verdict.ADMITTED

    def forget(self, flow: Flow5) -> bool:
        """The connection was deleted (REST, CLI); whether it was held."""
        if self._entries.pop(flow, None) is None:
            return False
        self._retries.pop(flow, None)
        self._forget_source(flow.src)
        return True

    def clear(self) -> None:
        """The zone was flushed: no decision is held any more."""
        self._entries.clear()
        self._retries.clear()
        self._per_source.clear()
        self._unknown = 0

    def count_drop(self, reason: DropReason) -> None:
        """Count a drop decided outside `admit`: unparsable, queue full, a drop decision."""
        self.drops[reason.value] += 1

    def expire(self, now: float) -> int:
        """Forget the decisions older than idle_timeout, and blocks that are over;
        how many decisions."""
        for src in [s for s, until in self._blocked.items() if until <= now]:
            del self._blocked[src]
        oldest_alive = now - self.lifetime
        forgotten = 0
        while self._entries:
            key, decided = next(iter(self._entries.items()))
            if decided >= oldest_alive:
                break
            del self._entries[key]
            self._retries.pop(key, None)
            self._forget_source(key.src)
            forgotten += 1
        for key in [k for k, (_, since) in self._retries.items() if since < now - RETRY_WINDOW]:
            del self._retries[key]
        return forgotten

    def _forget_source(self, src: int) -> None:
        if not self.known(src):
            self._unknown -= 1
        left = self._per_source[src] - 1
        if left:
            self._per_source[src] = left
        else:
            del self._per_source[src]
