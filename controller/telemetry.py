"""What socketnet counts for Prometheus, held as plain data: no os-ken, no
prometheus_client, no clock. apps/metrics.py turns it into metric families at
scrape time.

    Buckets(bounds)    a histogram: `observe(seconds)` is one bisection and two adds,
                       cheap enough for the packet-in path
    Totals             packets and bytes as counters that never go back, built from
                       what the switch reports for flows that come and go:
                       `observe(packets, bytes)` with the sum over the flows it holds
                       now, `removed(packets, bytes)` with a flow's final count
                       (flow-removed)

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
from typing import Iterable

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
