"""The sync sequence: how the pipeline app brings one switch to its bridge's pipeline.

One sync, step by step (each step a value the app carries out on the switch):

1. `ReadPorts`, only while the bridge is not known yet: its ports, and by the name
   of its LOCAL port (Open vSwitch gives it the bridge's) which bridge of the
   config it is. A bridge the config does not name is reported and left alone.
2. a `controller.role.Claim`: this instance's OpenFlow role. A standby stops
   here: the switch would refuse its writes, and it makes none.
3. on the mesh, `ReadMeters` then, if any differ, `WriteMeters`: the packet-in
   meters of table 1 as the config's limits say (`reconcile.plan_meters`).
4. `ReadFlows`: the switch's socketnet flows.
5. `ApplyBundle`, only if something differs: the compiled flows against those
   (`reconcile.plan`), in one atomic bundle.
6. `Barrier`: all of it done; the sync is recorded and logged as in sync.

`sync(host, state, roles)` is a generator: it yields each step and is sent back
the step's answer as values (a list of SwitchPort for ReadPorts, of MeterConfig for
ReadMeters, SwitchFlows for ReadFlows, None for the rest); a step the switch
refused or did not answer is thrown into it as `Refused`. It returns the outcome
(Synced, Standby, NotInConfig, Failed), already recorded in `state`. `drive`
runs it with a function that carries out one step.

Also here: what a connect, a disconnect and a port change do to a switch's state.
No os-ken and no I/O: apps/pipeline.py drives it, and the tests answer it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Generator

from controller.compiler import SwitchPort, compile_bridge, packet_in_meters
from controller.flow import OFPP_LOCAL
from controller.pipeline import purpose_of
from controller.reconcile import REACTIVE, MeterConfig, Plan, plan, plan_meters
from controller.role import RolePolicy
from controller.switches import SwitchState
from topology.model import Host

LOG = logging.getLogger("socketnet.pipeline")

STALE_RETRIES = 1  # a role claim the switch finds stale is made again, this often


class Refused(Exception):
    """A step the switch refused or did not answer. `stale`: a role claim that the
    other instance's newer generation id overtook."""

    def __init__(self, message: str, stale: bool = False):
        super().__init__(message)
        self.stale = stale


# --- the steps ---------------------------------------------------------------


@dataclass(frozen=True)
class ReadPorts:
    """The switch's ports (port-desc)."""


@dataclass(frozen=True)
class ReadMeters:
    """The switch's meter config (meters without a band are left out)."""


@dataclass(frozen=True)
class WriteMeters:
    """Meters to add or modify, fenced by a barrier: (command, MeterConfig) pairs,
    command "add" or "modify"."""
    changes: tuple

    def describe(self, i: int) -> str:
        return f"packet-in meter {self.changes[i][1].meter_id}"


@dataclass(frozen=True)
class ReadFlows:
    """The switch's flows under socketnet's cookies."""


@dataclass(frozen=True)
class ApplyBundle:
    """One atomic bundle, in this order: strict deletes of the unreadable entries
    and of the flows no longer wanted, then the flows to add (or replace)."""
    bridge: str
    unreadable: tuple
    delete: tuple
    add: tuple
    names: dict = field(default_factory=dict, compare=False, repr=False)  # port no -> name

    def __len__(self) -> int:
        return len(self.unreadable) + len(self.delete) + len(self.add)

    def describe(self, i: int) -> str:
        """Message i of the bundle, as a refusal names it."""
        if i < len(self.unreadable):
            return f"{self.bridge}: unreadable flow in table {self.unreadable[i].table}"
        changed = self.delete + self.add
        return f"{self.bridge}: {changed[i - len(self.unreadable)].ofctl(self.names)}"


@dataclass(frozen=True)
class Barrier:
    """Everything sent before it done."""


# --- the outcomes ------------------------------------------------------------


@dataclass(frozen=True)
class Synced:
    bridge: str
    plan: Plan
    reactive: tuple  # the decision flows the switch holds (the classifier's)


@dataclass(frozen=True)
class Standby:
    bridge: str


@dataclass(frozen=True)
class NotInConfig:
    bridge: str  # the switch's LOCAL port's name, "?" without one


@dataclass(frozen=True)
class Failed:
    error: str


# --- the sequence ------------------------------------------------------------


def sync(host: Host, state: SwitchState, roles: RolePolicy,
         clock: Callable[[], float] = time.monotonic,
         wall: Callable[[], float] = time.time) -> Generator:
    """One sync of `state`'s switch to `host`'s config, as steps (see the top)."""
    started = clock()
    try:
        if state.bridge is None or not state.ports:
            ports = yield ReadPorts()
            bridge = bridge_of(ports)
            if bridge not in {b.name for b in host.bridges}:
                LOG.warning("datapath %016x is bridge %r, which the config does not name; "
                            "left untouched", state.dpid, bridge)
                return NotInConfig(bridge)
            state.bridge = bridge
            state.ports = {p.name: p for p in ports}
            report_ports(host, state)

        if not (yield from _claim(roles)):
            LOG.info("%s: standby (OpenFlow slave): writes nothing", state.bridge)
            return Standby(state.bridge)
        desired = compile_bridge(host, state.bridge, state.ports)
        if state.bridge == host.mesh.name:
            yield from _meters(host)
        held = yield ReadFlows()
        todo = plan(desired, held.installed, held.foreign)
        if not todo.empty or held.unreadable:
            bundle = ApplyBundle(state.bridge, held.unreadable, todo.delete, todo.add,
                                 state.port_names())
            _log_changes(bundle, held.installed)
            state.flow_mods += len(bundle)
            yield bundle
        yield Barrier()
    except Refused as exc:
        state.last_error = str(exc)
        state.sync_failures += 1
        LOG.error("%s: sync failed: %s", state.bridge or f"{state.dpid:016x}", exc)
        return Failed(str(exc))
    elapsed = clock() - started
    state.desired, state.last_plan = desired, todo
    state.last_sync, state.last_error = wall(), ""
    state.sync_seconds.observe(elapsed)
    LOG.info("%s: pipeline in sync (%s) in %.1f ms", state.bridge, todo.summary(),
             elapsed * 1000)
    return Synced(state.bridge, todo,
                  tuple(f for f in held.installed if purpose_of(f.cookie) in REACTIVE))


def drive(steps: Generator, carry_out: Callable):
    """Run a sequence of steps: each to `carry_out(step)`, its answer sent back, a
    Refused it raises thrown in. The sequence's outcome."""
    answer, refused = None, None
    while True:
        try:
            step = steps.send(answer) if refused is None else steps.throw(refused)
        except StopIteration as end:
            return end.value
        try:
            answer, refused = carry_out(step), None
        except Refused as exc:
            answer, refused = None, exc


def _claim(roles: RolePolicy):
    """The role claim, made again with a newer generation id if the switch finds
    it stale (the other instance's claim overtook it); whether this instance may
    write."""
    for attempt in range(STALE_RETRIES + 1):
        try:
            yield roles.claim()
            return roles.active
        except Refused as exc:
            if attempt == STALE_RETRIES or not exc.stale:
                raise


def _meters(host: Host):
    """The packet-in meters of table 1 (compiler.packet_in_meters): added if
    missing, modified if different, left alone otherwise."""
    desired = [MeterConfig(mid, rate, burst)
               for mid, (rate, burst) in packet_in_meters(host).items()]
    installed = yield ReadMeters()
    changes = plan_meters(desired, installed).changes()
    for _, meter in changes:
        LOG.info("packet-in meter %d: %d packets/s, burst %d", meter.meter_id, meter.rate,
                 meter.burst)
    if changes:
        yield WriteMeters(changes)


def _log_changes(bundle: ApplyBundle, installed) -> None:
    if not LOG.isEnabledFor(logging.DEBUG):  # tens of thousands of decisions held
        return
    for f in bundle.delete:
        LOG.debug("%s: delete %s", bundle.bridge, f.ofctl(bundle.names))
    held = {f.key: f for f in installed}
    for f in bundle.add:
        if f.key in held:
            LOG.debug("%s: replace %s", bundle.bridge, held[f.key].ofctl(bundle.names))
        LOG.debug("%s: add %s", bundle.bridge, f.ofctl(bundle.names))


def bridge_of(ports) -> str:
    """The bridge a switch is: its LOCAL port's name ("?" without one)."""
    local = [p.name for p in ports if p.number == OFPP_LOCAL]
    return local[0] if local else "?"


def report_ports(host: Host, state: SwitchState) -> None:
    """Log which of the config's ports the switch has, and which it has that the
    config does not name."""
    configured = {p.name for p in host.bridge(state.bridge).ports}
    present = set(state.ports) - {state.bridge}
    missing = sorted(configured - present)
    extra = sorted(present - configured)
    LOG.info("%s: %d configured ports present%s%s", state.bridge,
             len(configured & present),
             f"; not on the switch yet: {', '.join(missing)}" if missing else "",
             f"; not in the config (traffic dropped): {', '.join(extra)}" if extra else "")


# --- the connection and its ports --------------------------------------------


def connected(state: SwitchState, address) -> None:
    """The switch connected (again), from `address`."""
    state.connected = True
    state.connects += 1
    LOG.info("datapath %016x connected from %s (connect #%d)", state.dpid, address,
             state.connects)


def disconnected(state: SwitchState) -> None:
    """The switch's current connection is gone; its flows stay on it."""
    state.connected = False
    LOG.warning("datapath %016x (%s) disconnected; its flows stay (fail_mode=secure)",
                state.dpid, state.bridge or "unknown bridge")


def port_changed(state: SwitchState, port: SwitchPort, reason: str) -> bool:
    """A port of the switch was "added", "deleted" or "modified": its ports as it
    has them now. Whether to sync: only a bridge of the config is."""
    if state.bridge is None:
        return False
    LOG.info("%s: port %s (%d) %s", state.bridge, port.name, port.number, reason)
    if reason == "deleted":
        state.ports.pop(port.name, None)
    else:
        state.ports[port.name] = port
    return True
