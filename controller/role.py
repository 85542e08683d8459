"""OpenFlow roles: a primary and a standby serving the same switches.

The primary claims master, always. A standby claims slave (the switch refuses its
writes, and it makes none) and watches the primary's OpenFlow address: when that
has not answered `MISSES` probes in a row the standby becomes master, and when it
answers again the standby steps back to slave. Every claim carries a generation id
newer than any this instance gave before and no older than the time in ms, so a
claim made after a takeover or a restart overtakes the other instance's.

`RolePolicy` decides; the pipeline app probes, claims and re-syncs as it says.
Plain values: no os-ken, no I/O (the clock is passed in).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

LOG = logging.getLogger("socketnet.pipeline")

PROBE_SECONDS = 0.5  # between two probes of the peer, and each probe's timeout
MISSES = 2           # probes in a row the peer must miss before a standby takes over


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Claim:
    """One role request: master (may write) or slave, with its generation id."""
    master: bool
    generation: int


class RolePolicy:
    """This instance's role (`active`: master) and the generation ids it claims with.

    `role` is the config's "primary" or "standby"; `peer` the (host, port) a
    standby watches."""

    def __init__(self, role: str, peer: Optional[tuple] = None,
                 now_ms: Callable[[], int] = _now_ms):
        self.standby = role == "standby"
        self.peer = peer
        self.active = not self.standby
        self.generation = 0  # the last generation id claimed
        self.misses = 0      # probes in a row the peer did not answer
        self._now_ms = now_ms

    def claim(self) -> Claim:
        """The next claim: this instance's role, with a newer generation id than
        the last (a claim found stale is made again with the next one)."""
        self.generation = max(self.generation + 1, self._now_ms())
        return Claim(self.active, self.generation)

    def probed(self, alive: bool) -> bool:
        """A standby's probe of its peer answered (`alive`) or not: whether the role
        changed, so that every switch must be claimed again. A primary never
        changes its role."""
        if not self.standby:
            return False
        self.misses = 0 if alive else self.misses + 1
        if not self.active and self.misses >= MISSES:
            self.active = True
            LOG.warning("primary %s:%d does not answer: taking over as master", *self.peer)
            return True
        if self.active and alive:
            self.active = False
            LOG.warning("primary %s:%d answers again: back to standby", *self.peer)
            return True
        return False
