"""What the running controller knows about its switches, shared by its apps.

One `Runtime` per process (the os-ken context named "runtime"): the host model
and a `SwitchState` per datapath that has connected. The pipeline app writes it;
metrics and the REST API read it. Plain data: no os-ken, no I/O.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from controller.reconcile import Plan
from topology.model import Host


@dataclass
class SwitchState:
    dpid: int
    bridge: Optional[str] = None          # None: not a bridge of the config
    ports: dict = field(default_factory=dict)  # name -> SwitchPort
    connected: bool = False
    connects: int = 0
    desired: tuple = ()                   # the flows the switch should hold
    last_plan: Optional[Plan] = None
    last_sync: float = 0.0                # time.time() of the last confirmed sync
    last_error: str = ""

    def port_names(self) -> dict:
        """Port number -> name, for printing flows the way ovs-ofctl --names does."""
        return {p.number: p.name for p in self.ports.values()}

    def port_by_number(self, number: int) -> Optional[SwitchPort]:
        for p in self.ports.values():
            if p.number == number:
                return p
        return None


class Runtime:
    """The controller's shared state; `host` is set before the apps start."""

    def __init__(self):
        self.host: Optional[Host] = None
        self.switches: dict = {}  # dpid -> SwitchState
        self.started = time.time()
        self._on_host = []  # callables(host), told of every new host model

    def on_host_change(self, listener) -> None:
        """Call `listener(host)` whenever the running config is replaced."""
        self._on_host.append(listener)

    def replace_host(self, host: Host) -> None:
        """Run `host` from now on (a validated config reload): the apps
        recompile and re-sync, leaving unchanged flows untouched."""
        self.host = host
        for listener in self._on_host:
            listener(host)

    def switch(self, dpid: int) -> SwitchState:
        if dpid not in self.switches:
            self.switches[dpid] = SwitchState(dpid)
        return self.switches[dpid]

    def by_bridge(self, name: str) -> Optional[SwitchState]:
        for s in self.switches.values():
            if s.bridge == name and s.connected:
                return s
        return None
