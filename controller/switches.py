"""What the running controller knows about its switches, shared by its apps.

One `Runtime` per process (the os-ken context named "runtime"): the host model
and a `SwitchState` per datapath that has connected. The pipeline app writes it;
metrics and the REST API read it. Plain data: no os-ken, no I/O.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from controller.reconcile import Plan
from controller.telemetry import RECONCILE_BUCKETS, Buckets
from topology.model import Host

if TYPE_CHECKING:  # the compiler imports nothing from here; no cycle at run time
    from controller.compiler import SwitchPort

LOG = logging.getLogger("socketnet.config")


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
    # Counted for /metrics (apps/metrics.py):
    flow_mods: int = 0                    # flow-mods the syncs sent
    sync_failures: int = 0
    sync_seconds: Buckets = field(default_factory=lambda: Buckets(RECONCILE_BUCKETS))

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
        self.config_path: Optional[str] = None  # the file `reload` reads
        self._on_host = []  # callables(host), told of every new host model
        # The classifier app's DecisionCache, for the REST API's counts (None until it starts).
        self.decision_cache = None
        # Its ClassifierCounts (controller.telemetry), for /metrics (None until it starts).
        self.classifier_counts = None
        # Config loads, for /metrics: the first one and every reload.
        self.config_loads = {"success": 0, "failure": 0}
        self.config_loaded_at = 0.0  # time.time() the running config was taken on
        self.config_error = ""  # why the last load was refused; "" if it was not
        self._vswitchd = None

    @property
    def vswitchd(self):
        """The one connection to ovs-vswitchd's control socket the apps share
        (controller.vswitchd.Vswitchd: trace, audit, conntrack), opened when first used."""
        if self._vswitchd is None:
            from controller.vswitchd import Vswitchd
            self._vswitchd = Vswitchd(lambda: self.host.settings.rest_ovs_ctl)
        return self._vswitchd

    def on_host_change(self, listener) -> None:
        """Call `listener(host)` whenever the running config is replaced."""
        self._on_host.append(listener)

    def reload(self, asked_by: str = "SIGHUP") -> list:
        """Load the config file again: run it if valid, else keep the running one.
        The issues of a refused file (empty when it was taken). Either way it is
        logged, every issue of a refused file with it, and counted
        (`config_loads`), whoever asked (`asked_by`: SIGHUP, the REST API)."""
        from topology.config import ConfigError, load_host

        try:
            host = load_host(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                LOG.error("config reload (%s) refused: %s", asked_by, issue)
            LOG.error("config reload (%s) refused: %d issue(s) in %s; the running config "
                      "stays", asked_by, len(exc.issues), self.config_path)
            self.config_refused(str(exc))
            return list(exc.issues)
        self.replace_host(host)
        LOG.info("config reloaded from %s (%s)", self.config_path, asked_by)
        return []

    def replace_host(self, host: Host) -> None:
        """Run `host` from now on (a validated config reload): the apps
        recompile and re-sync, leaving unchanged flows untouched."""
        self.host = host
        self.config_loads["success"] += 1
        self.config_loaded_at, self.config_error = time.time(), ""
        for listener in self._on_host:
            listener(host)

    def config_refused(self, error: str) -> None:
        """A reload was refused (invalid config): the running one stays."""
        self.config_loads["failure"] += 1
        self.config_error = error

    def switch(self, dpid: int) -> SwitchState:
        if dpid not in self.switches:
            self.switches[dpid] = SwitchState(dpid)
        return self.switches[dpid]

    def by_bridge(self, name: str) -> Optional[SwitchState]:
        for s in self.switches.values():
            if s.bridge == name and s.connected:
                return s
        return None
