"""Reconciliation: what to change so a switch holds exactly the desired flows.

`plan(desired, installed)` compares flow values. A flow the switch already holds
exactly as desired is left alone (its counters and duration survive a
reconnect); a flow whose entry (table, priority, match) is wanted with other
instructions, cookie or timeouts is replaced; an entry socketnet owns that is no
longer wanted is deleted. Flows under cookies socketnet does not own are never
touched, and neither are the reactive flows the classifier caches with timeouts
(they expire by themselves).
"""
from __future__ import annotations

from dataclasses import dataclass
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
