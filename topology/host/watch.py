"""`socketnet host watch`: keep the host made, with no operator at the console.

netclient deletes and re-creates the Netmaker interface when it restarts,
upgrades or re-joins; wg-quick does the same with warp0; after a reboot nothing
of the host's making is there and its parts start in any order. Each time, the
routes socketnet's per-interface tables had through the old
interface are gone (the rules, the tables' `prohibit` ends and nftables stay:
the host fails closed, but W1-W5 stay broken until the host is made again).

The watcher makes it again, as `socketnet host apply` does (the same read, plan
and fail-closed order, idempotent), whenever something it depends on moves:

- netlink: a link, address, route or rule of this network namespace added,
  removed or changed (`Events`, rtnetlink's groups) -- within `DEBOUNCE` of the
  first event of a burst;
- every `interval` seconds regardless (OVSDB changes, an Open vSwitch that came
  back with its database intact, anything netlink does not tell); a periodic
  check that finds a change whose events came while it read leaves the heal
  to them, so it is counted under the interface that moved;
- the config file changed (its mtime and size): re-read; a file with issues is
  refused with every issue logged, and the running config is kept.

Every heal is logged with its trigger and each command it ran; a heal that could
not make the host match (a command failed, or a finding of level error) is a
failure. /metrics (prometheus_client, `--metrics-listen`, default
127.0.0.1:9642): heals and failures per interface that triggered them, the last
heal, the last check, and whether the host matches the config.

Like `host apply` it runs as its own process (pyroute2 and the controller's
eventlet do not mix).
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.rtnl import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE,
                                   RTMGRP_LINK)
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from topology import config as configmod
from topology.host.apply import HostApplyError, HostSystem, apply, read_state
from topology.host.plan import plan

LOG = logging.getLogger("socketnet.host")

DEBOUNCE = 0.2
DEFAULT_INTERVAL = 5.0
DEFAULT_METRICS = "127.0.0.1:9642"
_EVENTS = {"RTM_NEWLINK", "RTM_DELLINK", "RTM_NEWADDR", "RTM_DELADDR", "RTM_NEWROUTE",
           "RTM_DELROUTE", "RTM_NEWRULE", "RTM_DELRULE"}


class Events:
    """rtnetlink's link, IPv4 address, route and rule notifications in `netns`
    (None: this process's), read to the last one queued each time.

    A socket of its own rather than pyroute2's IPRoute: IPRoute (0.9) reads
    ahead into a queue of its own and hands out one message per `get()`, so a
    `select` on its descriptor stays quiet while messages wait in that queue and
    each burst would be seen only when the next one arrives. pyroute2 still
    parses the messages."""

    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE
    RCVBUF = 1 << 20

    def __init__(self, netns: Optional[str] = None):
        made: dict = {}

        def make():  # setns changes the calling thread's namespace: a thread of its own
            try:
                if netns is not None:
                    pyroute2_netns.setns(netns, flags=0)
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, 33, self.RCVBUF)  # SO_RCVBUFFORCE
                except OSError:  # without CAP_NET_ADMIN: what rmem_max allows
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
                sock.bind((0, self.GROUPS))
                sock.setblocking(False)
                made["sock"] = sock
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                made["error"] = exc
        thread = threading.Thread(target=make, name="netlink-events")
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        self.sock = made["sock"]
        self.marshal = MarshalRtnl()
        self.overflowed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list:
        """Every message queued now (none if none); `overflowed` set when the
        kernel dropped some (ENOBUFS: the reader fell behind)."""
        out = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflowed = True
                    continue
                raise
            out.extend(self.marshal.parse(data))

    def close(self) -> None:
        self.sock.close()


def watched_interfaces(host) -> set:
    """The interface names the config makes the host depend on: every bridge
    port (containers' veths, the inter-bridge link's ends, the adapters) and the
    uplinks behind the adapters (the Netmaker and WARP interfaces)."""
    names = set()
    for bridge in host.bridges:
        names.add(bridge.name)
        for port in bridge.ports:
            names.update(n for n in (port.name, port.interface) if n)
    return names


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.heals = Counter("socketnet_host_heals", "Heals that changed the host, by the "
                             "interface whose change set them off (start, periodic, config "
                             "otherwise)", ["interface"], registry=self.registry)
        self.failures = Counter("socketnet_host_heal_failures", "Heals that could not make "
                                "the host match the config, by trigger", ["interface"],
                                registry=self.registry)
        self.matches = Gauge("socketnet_host_matches_config", "1 when the last check found "
                             "the host as the config makes it", registry=self.registry)
        self.last_heal = Gauge("socketnet_host_last_heal_timestamp_seconds",
                               "When a heal last changed the host", registry=self.registry)
        self.last_check = Gauge("socketnet_host_last_check_timestamp_seconds",
                                "When the host was last read and compared with the config",
                                registry=self.registry)
        self.config_refused = Counter("socketnet_host_config_refused", "Config files "
                                      "refused on re-read (the previous config kept)",
                                      registry=self.registry)


class Watcher:
    """Heal on every event, periodically and on config changes, until `stop`."""

    def __init__(self, config_path: str, system: HostSystem, datapath_type: str,
                 warp_address: str, controller: Optional[str], interval: float = DEFAULT_INTERVAL,
                 echo: Callable[[str], None] = LOG.info):
        self.config_path, self.system = config_path, system
        self.options = {"datapath_type": datapath_type, "warp_address": warp_address,
                        "controller": controller}
        self.interval, self.echo = interval, echo
        self.metrics = Metrics()
        self.host = configmod.load_host(config_path)  # a bad file at start: ConfigError
        self._stamp = self._config_stamp()
        self._watch(self.host)

    def _watch(self, host) -> None:
        """Watch the interfaces `host` names; every trigger's series exists from
        now on, at 0 until it counts (a series that appears only with its first
        heal would leave a dashboard empty and `increase()` blind to that heal)."""
        self.names = watched_interfaces(host)
        for trigger in ("start", "periodic", "config", "overflow", *sorted(self.names)):
            self.metrics.heals.labels(trigger)
            self.metrics.failures.labels(trigger)

    # --- the config ------------------------------------------------------------

    def _config_stamp(self):
        try:
            st = os.stat(self.config_path)
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def _reload_if_changed(self) -> bool:
        stamp = self._config_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.host = configmod.load_host(self.config_path)
        except configmod.ConfigError as exc:
            self.metrics.config_refused.inc()
            for issue in exc.issues:
                LOG.error("config re-read refused: %s", issue)
            LOG.error("config re-read refused: %d issue(s) in %s; healing to the previous "
                      "config", len(exc.issues), self.config_path)
            return False
        self._watch(self.host)
        LOG.info("config re-read from %s", self.config_path)
        return True

    # --- healing ----------------------------------------------------------------

    def check(self) -> list:
        """The actions that would make the host match the config now (none: it does)."""
        state = read_state(self.host, self.system)
        result = plan(self.host, state, **self.options)
        self.metrics.last_check.set_to_current_time()
        return result

    def heal(self, trigger: str, why: str = "",
             defer: Optional[Callable[[], bool]] = None) -> Optional[bool]:
        """Read, plan and, if anything differs, apply; then read again. Whether the
        host matches the config afterwards. `trigger`: what set it off, one or
        more (comma-separated) interfaces, "start", "periodic" or "config"; each
        is counted. `defer`: asked when something differs, before anything is
        applied; if it says so, nothing is applied or counted and the result is
        None (the caller heals again, under a better name)."""
        result = None
        try:
            result = self.check()
            if result.actions and defer is not None and defer():
                LOG.debug("heal (%s): %d change(s) deferred to the events that came "
                          "meanwhile", trigger, len(result.actions))
                return None
            if result.actions:
                LOG.info("heal (%s%s): %d change(s)", trigger, f": {why}" if why else "",
                         len(result.actions))
                apply(result, self.system, echo=lambda command: LOG.info("heal: + %s", command))
                for each in trigger.split(","):
                    self.metrics.heals.labels(each).inc()
                self.metrics.last_heal.set_to_current_time()
                result = self.check()
            matched = not result.actions and not result.errors
        except HostApplyError as exc:
            LOG.error("heal (%s): %s", trigger, exc)
            matched = False
        if result is not None:
            for finding in result.errors:
                LOG.error("heal (%s): %s", trigger, finding)
            if result.actions:
                LOG.error("heal (%s): the host still differs: %s", trigger,
                          "; ".join(str(a) for a in result.actions[:5]))
        if not matched:
            for each in trigger.split(","):
                self.metrics.failures.labels(each).inc()
        self.metrics.matches.set(1 if matched else 0)
        return matched

    # --- events -----------------------------------------------------------------

    def _triggers(self, messages, names_by_index: dict, seen: Optional[list] = None) -> dict:
        """{watched interface (or "other"): rank} of what the netlink messages are
        about; rank 0 for a link that came, went or changed, 1 an address, 2 a
        route or rule: a heal is put down to the interface that moved itself,
        not to the routes that moved with it. Each message about a watched
        interface is described in `seen` ("RTM_DELLINK warp0")."""
        out: dict = {}
        for msg in messages:
            event = msg.get("event")
            if event not in _EVENTS:
                continue
            name = msg.get_attr("IFLA_IFNAME") if event.endswith("LINK") else None
            index = msg.get("index") or msg.get_attr("RTA_OIF")
            if name is not None and index:
                names_by_index[index] = name
            elif name is None and index:
                name = names_by_index.get(index)
            if name is None and event.endswith("RULE"):
                name = msg.get_attr("FRA_IFNAME")
            rank = 0 if event.endswith("LINK") else 1 if event.endswith("ADDR") else 2
            key = name if name in self.names else "other"
            out[key] = min(rank, out.get(key, rank))
            if seen is not None and key != "other":
                seen.append(f"{event} {name}")
        return out

    def run(self, stop: threading.Event) -> None:
        """Heal now, then on every burst of netlink events about a watched
        interface, every `interval` seconds, and when the config file changes.
        What a heal changes comes back as events too: one more check, which finds
        nothing to do."""
        events = Events(self.system.netns)  # before the first read: nothing is missed
        try:
            self._run(stop, events)
        finally:
            events.close()

    def _run(self, stop: threading.Event, events: Events) -> None:
        with self.system.iproute() as ipr:
            names_by_index = {link["index"]: link.get_attr("IFLA_IFNAME")
                              for link in ipr.get_links()}
        self.heal("start")
        last = time.monotonic()
        fd = events.fileno()
        deferred = False

        def pending() -> bool:
            return bool(select.select([fd], [], [], 0)[0])
        while not stop.is_set():
            wait = max(0.0, min(1.0, self.interval - (time.monotonic() - last)))
            triggers: dict = {}
            seen: list = []

            def note(messages):
                for name, rank in self._triggers(messages, names_by_index, seen).items():
                    triggers[name] = min(rank, triggers.get(name, rank))
            if select.select([fd], [], [], wait)[0]:
                note(events.read())
                settle = time.monotonic() + DEBOUNCE  # the rest of the burst
                while (remaining := settle - time.monotonic()) > 0:
                    if select.select([fd], [], [], remaining)[0]:
                        note(events.read())
            if events.overflowed:  # some events were lost: any interface may have moved
                events.overflowed = False
                LOG.warning("netlink: the kernel dropped events (reader behind); "
                            "checking everything")
                triggers["overflow"] = 0
                seen.append("overflow")
            watched = sorted((t for t in triggers if t != "other"),
                             key=lambda t: (triggers[t], t))
            if seen:
                counted = dict.fromkeys(seen)  # in order, each once
                LOG.info("netlink: %s", ", ".join(
                    f"{e} x{seen.count(e)}" if seen.count(e) > 1 else e for e in counted))
            if self._reload_if_changed():
                self.heal("config")
            elif watched:
                first = triggers[watched[0]]  # the interfaces that moved themselves
                self.heal(",".join(t for t in watched if triggers[t] == first),
                          "netlink: " + ", ".join(watched))
            elif time.monotonic() - last >= self.interval:
                # What a periodic check finds may have moved while it read: the
                # kernel queued its events before the read saw it, so if events
                # wait now, they are read first and name the heal. Once: events
                # about unwatched interfaces alone must not put it off for good.
                if self.heal("periodic", defer=None if deferred else pending) is None:
                    deferred = True
                    continue
            else:
                continue
            deferred = False
            last = time.monotonic()
