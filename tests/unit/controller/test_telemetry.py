"""controller/telemetry.py: histograms, and flow totals that never go back."""
import random

import pytest

from controller.telemetry import Buckets, Totals


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
