"""controller/telemetry.py: histograms, and flow totals that never go back."""
import random

import pytest

from controller.classifier import MARKS
from controller.flow import Flow
from controller.pipeline import CLASSIFY, Purpose
from controller.telemetry import (ERROR_TYPES, BridgeStats, Buckets, TableCounters, Totals,
                                  class_counts, flow_sets, stats_of)
from topology.model import TrafficClass


def test_buckets_are_cumulative_and_end_with_inf():
    b = Buckets((0.001, 0.01))
    for value in (0.0005, 0.001, 0.005, 0.5):
        b.observe(value)
    assert b.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert b.count == 4
    assert b.sum == pytest.approx(0.5065)


class _Switch:
    """Flows with growing counters; some leave with a flow-removed, some without."""

    def __init__(self, rng):
        self.rng = rng
        self.live = {}      # flow id -> packets
        self.total = 0      # every packet any flow ever counted
        self.next_id = 0

    def traffic(self):
        if not self.live or self.rng.random() < 0.3:
            self.live[self.next_id] = 0
            self.next_id += 1
        for fid in self.rng.sample(sorted(self.live), k=min(3, len(self.live))):
            n = self.rng.randint(0, 50)
            self.live[fid] += n
            self.total += n

    def remove(self):
        fid = self.rng.choice(sorted(self.live))
        return self.live.pop(fid)

    def poll(self):
        return sum(self.live.values())


def _run(seed, in_order):
    """Random traffic, polls and removals (with a flow-removed, or without: a
    reconcile delete, a flush); with `in_order` False, poll replies may also be
    computed before a removal and handled after it (`stale`)."""
    rng = random.Random(seed)
    switch = _Switch(rng)
    totals = Totals()
    last = 0
    stale = None
    for _ in range(300):
        step = rng.random()
        if step < 0.5:
            switch.traffic()
        elif step < 0.65:
            if in_order:
                live = switch.poll()
                totals.observe(live, live)
            else:
                stale = switch.poll()  # the reply leaves the switch now...
        elif step < 0.75 and stale is not None:
            totals.observe(stale, stale)  # ...and is handled now
            stale = None
        elif step < 0.9 and switch.live:
            final = switch.remove()
            totals.removed(final, final)
        elif switch.live:
            switch.remove()
        assert totals.packets >= last
        if in_order:
            assert totals.packets <= switch.total
        last = totals.packets
    return switch, totals


@pytest.mark.parametrize("seed", range(100))
def test_totals_never_decrease_whatever_the_order_of_polls_and_removals(seed):
    _run(seed, in_order=False)


@pytest.mark.parametrize("seed", range(100))
def test_totals_never_count_a_packet_twice_when_applied_in_the_order_sent(seed):
    """apps/metrics.py applies poll replies and flow-removed messages in its event
    handlers, in the order the switch sent them."""
    _run(seed, in_order=True)


def test_totals_equal_every_packet_when_each_flow_reports_its_removal():
    totals = Totals()
    totals.observe(10, 1000)          # flows a (4) and b (6)
    totals.removed(5, 500)            # a leaves at 5: its 5 move from live to gone
    assert (totals.packets, totals.bytes) == (10, 1000)
    totals.observe(9, 900)            # b at 9: a's last packet shows here
    assert totals.packets == 14
    totals.removed(9, 900)            # b leaves
    totals.observe(0, 0)
    assert (totals.packets, totals.bytes) == (14, 1400)


def test_a_removal_seen_before_any_poll_still_counts():
    totals = Totals()
    totals.removed(7, 700)
    totals.observe(0, 0)
    assert totals.packets == 7


# --- what a bridge's polls taught ------------------------------------------------


def test_error_types_are_openflow_1_3s_as_os_ken_numbers_them():
    from os_ken.ofproto import ofproto_v1_3 as ofp

    assert ERROR_TYPES == {getattr(ofp, n): n[len("OFPET_"):].lower().replace("_", "-")
                           for n in dir(ofp) if n.startswith("OFPET_")}


def test_a_poll_asks_for_the_desired_flows_sets_and_on_the_mesh_the_reactive_ones():
    desired = [Flow.make(2, 10, {}, (), Purpose.PRIVACY.cookie),
               Flow.make(0, 10, {}, (), Purpose.ADMIT.cookie),
               Flow.make(0, 20, {"in_port": 1}, (), Purpose.ADMIT.cookie),
               Flow.make(0, 30, {}, (), 0x1234)]  # not socketnet's: no set
    assert flow_sets(desired, is_mesh=False) == [(0, Purpose.ADMIT), (2, Purpose.PRIVACY)]
    assert flow_sets(desired, is_mesh=True) == [(0, Purpose.ADMIT), (CLASSIFY.id, Purpose.BLOCKED),
                                                (2, Purpose.PRIVACY)]


def test_class_counts_sum_the_flows_of_each_class_mark_and_no_other():
    privacy, drop = int(MARKS[TrafficClass.PRIVACY]), int(MARKS[TrafficClass.DROP])
    entries = [(Flow.make(CLASSIFY.id, 10, {"ct_mark": privacy}), 4, 400),
               (Flow.make(CLASSIFY.id, 11, {"ct_mark": privacy}), 1, 100),
               (Flow.make(CLASSIFY.id, 10, {"ct_mark": drop}), 2, 20),
               (Flow.make(CLASSIFY.id, 10, {"ct_mark": (privacy, 0xF)}), 50, 50),  # masked
               (Flow.make(CLASSIFY.id, 10, {}), 60, 60)]
    assert class_counts(entries) == {TrafficClass.PRIVACY: [5, 500],
                                     TrafficClass.MANAGEMENT: [0, 0],
                                     TrafficClass.DROP: [2, 20]}


def test_the_meshs_class_flows_read_back_from_the_switch_count_one_class_each(seed_host):
    """What apps/metrics.py does with a flow-stats reply: each entry through
    ofmsg.from_stats; every class has exactly its own flow."""
    from os_ken.ofproto import ofproto_parser, ofproto_v1_3_parser

    from controller import ofmsg
    from controller.compiler import compile_bridge

    class Datapath:
        ofproto, ofproto_parser, id = ofproto_v1_3_parser.ofproto, ofproto_v1_3_parser, 1

    classified = [f for f in compile_bridge(seed_host, "mesh", {})
                  if f.cookie == Purpose.CLASSIFIED.cookie]
    entries = []
    for i, flow in enumerate(classified):
        msg = ofmsg.flow_mod(Datapath(), flow)
        msg.set_xid(1)
        msg.serialize()
        header = ofproto_parser.header(msg.buf)
        parsed = ofproto_parser.msg(Datapath(), *header, bytes(msg.buf))
        entries.append((ofmsg.from_stats(parsed, instructions=False), 10 ** i, 1))
    counts = class_counts(entries)
    assert sorted(p for p, _ in counts.values()) == sorted(10 ** i for i in range(len(entries)))
    assert len(entries) == len(TrafficClass)


def test_bridge_stats_keep_the_pipelines_tables_and_any_that_holds_flows():
    stats = BridgeStats()
    stats.observe_tables({CLASSIFY.id: TableCounters(0, 5, 0), 9: TableCounters(3, 1, 1),
                          200: TableCounters(0, 7, 0)})
    assert sorted(stats.tables) == [CLASSIFY.id, 9]


def test_bridge_stats_count_errors_by_type_from_0_and_unknown_types_as_other():
    stats = BridgeStats()
    assert set(stats.errors) == set(ERROR_TYPES.values())
    assert not any(stats.errors.values())
    stats.error(4)
    stats.error(4)
    stats.error(77)
    assert stats.errors["bad-match"] == 2
    assert stats.errors["other"] == 1


def test_a_removed_flow_counts_to_its_purpose_and_a_foreign_cookie_to_none():
    stats = BridgeStats()
    stats.flow_removed(CLASSIFY.id, Purpose.BLOCKED.cookie, 3, 300)
    stats.flow_removed(CLASSIFY.id, 0x99, 5, 500)
    assert list(stats.flows) == [(CLASSIFY.id, Purpose.BLOCKED)]
    assert stats.flow_totals(CLASSIFY.id, Purpose.BLOCKED).packets == 3


def test_stats_of_keeps_one_bridge_stats_per_name():
    bridges = {}
    first = stats_of(bridges, "mesh")
    assert stats_of(bridges, "mesh") is first
    assert list(bridges) == ["mesh"]
