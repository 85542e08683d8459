"""What the watcher makes of netlink messages: which interface a burst is put
down to (the one that moved itself, not the routes that moved with it), which
interfaces a config makes it watch, and which name a heal that races an
interface's return is counted under."""
import contextlib
import socket
import threading
from types import SimpleNamespace

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from topology.config import load_host
from topology.host import watch as watchmod
from topology.host.watch import Metrics, Watcher, watched_interfaces

from tests.conftest import SEED_YAML


def _msg(cls, event, index=0, **attrs):
    m = cls()
    m["event"] = event
    if index:
        m["index"] = index
    m["attrs"] = list(attrs.items())
    return m


def _watcher(names):
    w = Watcher.__new__(Watcher)  # only the names: no config, no host
    w.names = set(names)
    return w


def test_a_link_outranks_the_routes_and_addresses_that_moved_with_it():
    w, by_index = _watcher({"warp0", "nm-privacy"}), {7: "nm-privacy"}
    seen = []
    out = w._triggers([
        _msg(rtmsg, "RTM_DELROUTE", RTA_OIF=7),
        _msg(ifaddrmsg, "RTM_DELADDR", index=7),
        _msg(ifinfmsg, "RTM_DELLINK", index=9, IFLA_IFNAME="warp0"),
    ], by_index, seen)
    assert out == {"nm-privacy": 1, "warp0": 0}
    assert seen == ["RTM_DELROUTE nm-privacy", "RTM_DELADDR nm-privacy", "RTM_DELLINK warp0"]


def test_names_follow_renames_and_unwatched_interfaces_are_other():
    w, by_index = _watcher({"warp0"}), {}
    out = w._triggers([
        _msg(ifinfmsg, "RTM_NEWLINK", index=12, IFLA_IFNAME="swg0123a"),  # born
        _msg(ifinfmsg, "RTM_NEWLINK", index=12, IFLA_IFNAME="warp0"),  # renamed
        _msg(rtmsg, "RTM_NEWROUTE", RTA_OIF=12),
        _msg(rtmsg, "RTM_NEWROUTE", RTA_OIF=99),  # an interface never seen
        _msg(fibmsg, "RTM_NEWRULE", FRA_IFNAME="eth9"),
        _msg(ifinfmsg, "RTM_NEWNEIGH", index=12, IFLA_IFNAME="warp0"),  # not watched for
    ], by_index)
    assert out == {"other": 0, "warp0": 0}
    assert by_index[12] == "warp0"


def test_a_rule_naming_a_watched_interface_counts_for_it():
    out = _watcher({"mesh-gw"})._triggers([_msg(fibmsg, "RTM_DELRULE", FRA_IFNAME="mesh-gw")],
                                          {})
    assert out == {"mesh-gw": 2}


def test_the_seeds_watched_interfaces_are_its_bridges_ports_and_uplinks():
    names = watched_interfaces(load_host(str(SEED_YAML)))
    assert {"mesh", "vmbr0", "nm-privacy", "warp0", "mesh-gw", "vmbr0-gw", "to-privacy",
            "from-mesh"} <= names
    assert not {"lo", "eth0"} & names


class _Events:
    """Events as the loop reads them: a socket that is readable while messages
    wait, and the messages."""

    def __init__(self):
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.waiting, self.overflowed = [], False

    def arrive(self, *messages):
        self.waiting.extend(messages)
        self.theirs.send(b"x")

    def fileno(self):
        return self.ours.fileno()

    def read(self):
        with contextlib.suppress(BlockingIOError):
            while self.ours.recv(64):
                pass
        out, self.waiting = self.waiting, []
        return out


def _run_until_applied(names, checks):
    """The watcher's loop over `_Events`, a periodic heal every 10 ms, the host's
    reads answered by `checks` in turn (each a callable given the events, the
    actions it returns) until one heal has been applied: the triggers counted."""
    w = _watcher(names)
    w.metrics, w.interval, w.options = Metrics(), 0.01, {}
    w.system = SimpleNamespace(iproute=lambda: contextlib.nullcontext(
        SimpleNamespace(get_links=lambda: [])))
    w._reload_if_changed = lambda: False
    events, stop, turn = _Events(), threading.Event(), iter(checks)

    def check():
        return SimpleNamespace(actions=next(turn, lambda e: [])(events), errors=())
    w.check = check
    original = watchmod.apply
    watchmod.apply = lambda result, system, echo: stop.set()
    try:
        thread = threading.Thread(target=w._run, args=(stop, events), daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "no heal was applied"
    finally:
        watchmod.apply = original
        stop.set()
    return {s.labels["interface"]: s.value for s in w.metrics.registry.collect()
            for s in s.samples if s.name == "socketnet_host_heals_total" and s.value}


def test_a_periodic_heal_that_races_an_interfaces_return_is_counted_for_it():
    """The interface comes back while a periodic check reads the host: the check
    sees it, its events wait; the heal is the interface's."""
    def returned(events):
        events.arrive(_msg(ifinfmsg, "RTM_NEWLINK", index=5, IFLA_IFNAME="nm-x"))
        return ["a route"]
    counted = _run_until_applied({"nm-x"}, [lambda e: [], returned, lambda e: ["a route"]])
    assert counted == {"nm-x": 1.0}


def test_events_about_unwatched_interfaces_put_a_periodic_heal_off_once():
    def other(events):
        events.arrive(_msg(ifinfmsg, "RTM_NEWLINK", index=6, IFLA_IFNAME="eth7"))
        return ["a route"]
    counted = _run_until_applied({"nm-x"}, [lambda e: [], other, other, other])
    assert counted == {"periodic": 1.0}
