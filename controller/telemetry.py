"""What socketnet counts for Prometheus, held as plain data: no os-ken, no
prometheus_client, no clock. controller/metric_families.py turns it into metric
families at scrape time.

    Buckets(bounds)    a histogram: `observe(seconds)` is one bisection and two adds,
                       cheap enough for the packet-in path
    Totals             packets and bytes as counters that never go back, built from
                       what the switch reports for flows that come and go:
                       `observe(packets, bytes)` with the sum over the flows it holds
                       now, `removed(packets, bytes)` with a flow's final count
                       (flow-removed)
    BridgeStats        what the stats polls and flow-removed messages taught about
                       one bridge (apps/metrics.py feeds it plain values), kept by
                       bridge name so that its totals carry on across reconnects
    ClassifierCounts   what the classifier app counts: packet-ins, commits,
                       source blocks, decisions by class, the time of each decision

Why `Totals`: the switch counts per flow, and a reactive flow's counts leave with
it (idle or hard timeout). A sum over the live flows therefore drops whenever one
expires, which a Prometheus counter must never do, and a per-flow series would go
stale (Faucet's Gauge, issue 3264). A total here is `gone + live`:

- a flow-removed adds the flow's final count to `gone` and takes as much off the
  last `live` sum (no further than 0): the flow's count moves from live to gone,
  and its growth since the last poll is added once;
- a poll whose live sum is lower than the last one moves the difference to `gone`
  (flows that left without a flow-removed: a reconcile delete, a hard-timeout
  source block, a flushed switch): their last seen count stays counted.

Either step leaves `gone + live` where it was or raises it, in whatever order
polls and flow-removed messages are applied; applied in the order the switch sent
them (apps/metrics.py applies both in its event handlers), no packet is counted
twice. tests/unit/controller/test_telemetry.py checks both on random sequences.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Iterable, Mapping, NamedTuple

from controller.classifier import CLASS_OF_MARK
from controller.flow import Flow
from controller.pipeline import CLASSIFY, TABLE_BY_ID, Purpose, purpose_of
from topology.model import TrafficClass

# Seconds. A packet-in decision takes ~10 µs; a reconcile ~1 ms to seconds.
CLASSIFICATION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                          0.0025, 0.005, 0.01, 0.025, 0.1)
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0)


class Buckets:
    """A histogram's state: counts per upper bound (le), the last one +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]):
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list:
        """[(le as text, count of observations <= le)], ending with "+Inf"."""
        out, running = [], 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out


class _Total:
    __slots__ = ("gone", "live")

    def __init__(self):
        self.gone = 0
        self.live = 0

    @property
    def value(self) -> int:
        return self.gone + self.live

    def observe(self, live: int) -> None:
        if live < self.live:
            self.gone += self.live - live
        self.live = live

    def removed(self, final: int) -> None:
        self.gone += final
        self.live = max(0, self.live - final)


class Totals:
    """Packets and bytes of a set of flows, monotonic across flows expiring."""

    __slots__ = ("_packets", "_bytes")

    def __init__(self):
        self._packets = _Total()
        self._bytes = _Total()

    @property
    def packets(self) -> int:
        return self._packets.value

    @property
    def bytes(self) -> int:
        return self._bytes.value

    def observe(self, packets: int, bytes_: int) -> None:
        """The sum over the flows of the set the switch holds now."""
        self._packets.observe(packets)
        self._bytes.observe(bytes_)

    def removed(self, packets: int, bytes_: int) -> None:
        """One flow of the set left the switch with these final counts."""
        self._packets.removed(packets)
        self._bytes.removed(bytes_)


# --- what a bridge's polls taught ----------------------------------------------

# OpenFlow 1.3's error types (ofp_error_type) by number, as the labels of
# socketnet_openflow_errors_total; a type not here is counted as "other".
ERROR_TYPES = {0: "hello-failed", 1: "bad-request", 2: "bad-action", 3: "bad-instruction",
               4: "bad-match", 5: "flow-mod-failed", 6: "group-mod-failed",
               7: "port-mod-failed", 8: "table-mod-failed", 9: "queue-op-failed",
               10: "switch-config-failed", 11: "role-request-failed",
               12: "meter-mod-failed", 13: "table-features-failed", 0xFFFF: "experimenter"}
# The flow sets a poll asks aggregate stats of besides the desired flows' (mesh):
# the reactive flows, which the desired set never holds.
REACTIVE_SETS = ((CLASSIFY.id, Purpose.BLOCKED),)


class PortCounters(NamedTuple):
    """One port's counters in one poll, each direction (packets, bytes, dropped,
    errors); a counter the switch does not have is UNAVAILABLE."""
    rx: tuple
    tx: tuple


class TableCounters(NamedTuple):
    active: int    # flow entries
    lookups: int   # packets looked up
    matched: int   # packets that matched a flow


class MeterCounters(NamedTuple):
    packets: int          # offered to the meter
    dropped_packets: int  # summed over its bands
    dropped_bytes: int


UNAVAILABLE = 0xFFFFFFFFFFFFFFFF  # what Open vSwitch reports for a counter it does not have


def flow_sets(desired: Iterable[Flow], is_mesh: bool) -> list:
    """The (table id, Purpose) sets whose packets and bytes a poll asks for, sorted:
    those of the desired flows (socketnet's cookies only), and on the mesh the
    reactive ones."""
    sets = {(f.table, purpose_of(f.cookie)) for f in desired}
    if is_mesh:
        sets.update(REACTIVE_SETS)
    return sorted(s for s in sets if s[1] is not None)


def class_counts(entries: Iterable[tuple]) -> dict:
    """TrafficClass -> [packets, bytes] summed over table 1's class flows, given as
    (Flow, packets, bytes): one flow per class, told by the ct_mark it matches. A
    flow without a class's ct_mark counts for none; every class is there, from 0."""
    live = {cls: [0, 0] for cls in TrafficClass}
    for flow, packets, bytes_ in entries:
        cls = CLASS_OF_MARK.get(flow.match_dict.get("ct_mark"))
        if cls is not None:
            live[cls][0] += packets
            live[cls][1] += bytes_
    return live


class BridgeStats:
    """What the polls and flow-removed messages taught about one bridge; kept by
    bridge name, so that totals carry on across reconnects. Once a series exists
    it stays (no stale series); a port's go with the port."""

    def __init__(self):
        self.flows = {}    # (table id, Purpose) -> Totals
        self.classes = {}  # TrafficClass -> Totals (mesh)
        self.ports = {}    # port number -> PortCounters of the last poll
        self.tables = {}   # table id -> TableCounters of the last poll
        self.meters = {}   # meter id -> MeterCounters of the last poll
        self.polled_at = 0.0  # Unix time the last successful poll began
        self.poll_seconds = 0.0
        self.poll_failures = 0
        # OpenFlow error type label -> count; every type from 0, so that the first
        # error of a type is an increase, not a new series.
        self.errors = dict.fromkeys(sorted(set(ERROR_TYPES.values())), 0)

    def flow_totals(self, table: int, purpose: Purpose) -> Totals:
        key = (table, purpose)
        if key not in self.flows:
            self.flows[key] = Totals()
        return self.flows[key]

    def class_totals(self, cls: TrafficClass) -> Totals:
        if cls not in self.classes:
            self.classes[cls] = Totals()
        return self.classes[cls]

    def flow_removed(self, table: int, cookie: int, packets: int, bytes_: int) -> None:
        """A flow left with its final counts (a source block): they move from live
        to gone in its (table, purpose) totals. Not socketnet's cookie: ignored."""
        purpose = purpose_of(cookie)
        if purpose is not None:
            self.flow_totals(table, purpose).removed(packets, bytes_)

    def observe_classes(self, entries: Iterable[tuple]) -> None:
        """The whole reply of one poll of table 1's class flows, as (Flow, packets,
        bytes): see class_counts."""
        for cls, (packets, bytes_) in class_counts(entries).items():
            self.class_totals(cls).observe(packets, bytes_)

    def observe_tables(self, tables: Mapping[int, TableCounters]) -> None:
        """One poll's table stats: the pipeline's tables, and any other that holds
        flows (the switch reports all 255)."""
        self.tables = {t: c for t, c in tables.items() if t in TABLE_BY_ID or c.active}

    def error(self, type_: int) -> None:
        """An OpenFlow error message of this type (its number) came from the bridge."""
        kind = ERROR_TYPES.get(type_, "other")
        self.errors[kind] = self.errors.get(kind, 0) + 1


def stats_of(bridges: dict, name: str) -> BridgeStats:
    """bridges[name], a new BridgeStats the first time."""
    if name not in bridges:
        bridges[name] = BridgeStats()
    return bridges[name]


# --- what the classifier counts -------------------------------------------------


class ClassifierCounts:
    """The classifier app's counts for /metrics. It holds one and gives it to the
    Runtime (`classifier_counts`), where the metrics app reads it at scrape time."""

    __slots__ = ("packet_ins", "flow_mods", "commits", "decided", "latency")

    def __init__(self):
        self.packet_ins = 0  # packet-ins received
        self.flow_mods = 0   # flow-mods sent (source blocks)
        self.commits = 0     # packet-outs that committed a connection with its class
        self.decided = {cls.value: 0 for cls in TrafficClass}  # class value -> decisions
        self.latency = Buckets(CLASSIFICATION_BUCKETS)  # packet-in to its decision sent
