"""Reconciliation: what to change so a switch holds exactly the desired flows,
and the packet-in meters they use.

`plan(desired, installed)` compares flow values. A flow the switch already holds
exactly as desired is left alone (its counters and duration survive a
reconnect); a flow whose entry (table, priority, match) is wanted with other
instructions, cookie or timeouts is replaced; an entry socketnet owns that is no
longer wanted is deleted. Flows under cookies socketnet does not own are never
touched, and neither are the reactive flows the classifier caches with timeouts
(they expire by themselves).

`plan_meters(desired, installed)` does the same for meters: one missing is added,
one held with another rate, burst or flags is modified, one held as desired is
left alone. A meter socketnet does not want is left alone too: meters carry no
cookie, so it may be someone else's, and deleting a meter deletes the flows that
use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from controller.flow import Flow
from controller.pipeline import Purpose, owns, purpose_of

# Flows of these purposes are installed by event handlers, not by the compiler.
REACTIVE = frozenset({Purpose.BLOCKED})


@dataclass(frozen=True)
class Plan:
    delete: tuple  # flows to remove (strict, by entry and cookie)
    add: tuple     # flows to add or replace
    unchanged: int

    @property
    def empty(self) -> bool:
        return not self.delete and not self.add

    def summary(self) -> str:
        return f"{len(self.add)} to add, {len(self.delete)} to delete, {self.unchanged} unchanged"


def plan(desired: Iterable[Flow], installed: Iterable[Flow], foreign: Iterable[Flow] = ()) -> Plan:
    """`foreign`: entries under socketnet's cookie whose instructions socketnet
    cannot read (someone else wrote them); as a Flow without instructions. They
    are replaced where wanted, deleted otherwise."""
    want = {f.key: f for f in desired}
    have = {f.key: f for f in installed
            if owns(f.cookie) and purpose_of(f.cookie) not in REACTIVE}
    unreadable = {f.key: f for f in foreign if owns(f.cookie)}
    add = tuple(sorted(f for key, f in want.items()
                       if have.get(key) != f or key in unreadable))
    delete = tuple(sorted(f for key, f in {**have, **unreadable}.items() if key not in want))
    return Plan(delete=delete, add=add, unchanged=len(want) - len(add))


# --- what the switch holds ---------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    """An entry under socketnet's cookie of which even the match cannot be read:
    deleted as the switch reported it (`entry`, opaque here: the encoding's)."""
    table: int
    entry: object = field(compare=False, repr=False)


@dataclass(frozen=True)
class SwitchFlows:
    """A switch's flows under socketnet's cookies, as read: `installed` (readable),
    `foreign` (instructions unreadable: entries only, as Flows without them) and
    `unreadable` entries (deleted)."""
    installed: tuple = ()
    foreign: tuple = ()
    unreadable: tuple = ()


# --- meters ------------------------------------------------------------------

# OFPMF_PKTPS | OFPMF_BURST | OFPMF_STATS: a rate in packets/s, a burst, counters.
PACKET_METER_FLAGS = 0x2 | 0x4 | 0x8


@dataclass(frozen=True, order=True)
class MeterConfig:
    """One meter: its first band's `rate` and `burst` (socketnet's band drops above
    them) and the meter's flags."""
    meter_id: int
    rate: int
    burst: int
    flags: int = PACKET_METER_FLAGS


@dataclass(frozen=True)
class MeterPlan:
    add: tuple     # MeterConfigs the switch lacks
    modify: tuple  # MeterConfigs the switch holds otherwise
    unchanged: int
    extra: tuple   # ids of meters held and not wanted: left alone

    @property
    def empty(self) -> bool:
        return not self.add and not self.modify

    def changes(self) -> tuple:
        """(command, MeterConfig) by meter id, command "add" or "modify"."""
        return tuple(sorted([("add", m) for m in self.add] + [("modify", m) for m in self.modify],
                            key=lambda change: change[1].meter_id))


def plan_meters(desired: Iterable[MeterConfig], installed: Iterable[MeterConfig]) -> MeterPlan:
    want = {m.meter_id: m for m in desired}
    have = {m.meter_id: m for m in installed}
    add = tuple(sorted(m for mid, m in want.items() if mid not in have))
    modify = tuple(sorted(m for mid, m in want.items() if mid in have and have[mid] != m))
    extra = tuple(sorted(set(have) - set(want)))
    return MeterPlan(add=add, modify=modify, unchanged=len(want) - len(add) - len(modify),
                     extra=extra)
