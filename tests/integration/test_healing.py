"""A host that heals itself (`socketnet host watch`), in the seed's whole world.

One world per module (topology.labs.world) and one `socketnet host watch` for its
host, in the host's netns, on the world's config. The interfaces socketnet
routes between are taken away and made again as netclient and wg-quick do when
they restart (the same WireGuard keys and peers, a new interface): no command is
typed; the watcher's log says what it did. While an interface is away and while
it comes back, the N-rules are probed with real packets every 0.2 s: Netmaker
ingress never reaches the privacy network (N4: the droplet to the gateway
container), management never reaches the xray client (N1), privacy traffic never
leaves over Netmaker (the VPS, which hears Netmaker and WARP apart, never sees the
gateway container over Netmaker). Afterwards W1 (the droplet through the xray
client) and W5 (management to node2 and back) work again; the seconds from the
interface's return to the first successful W1 and W5 are reported.

The outages, in order: the Netmaker interface re-created; the same with the
watcher paused (the baseline: nothing comes back); warp0 re-created; both
gone for 30 s; the controller restarted while Netmaker is away; ovs-vswitchd
restarted; the config given a new node's subnet; a power cut and a boot in five
orders of the units (each first once and last once). Then: `host status`; nothing
that is not socketnet's (an operator's interface, routes, rule, nftables table,
made before the watcher started) changed; the dashboard and alerts.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Optional

import pytest

from controller.process import free_port
from topology.model import Role
from topology.system import wait_until

from tests.integration.conftest import SEED_YAML, WIREGUARD, report, require, unique_lab_name

HEAL_WAIT = 60.0  # a bound, not a target: the VM lab's emulated guest is slow
SOCKETNET = (sys.executable, "-c", "from controller.cli.main import main; main()")


class HostWatch:
    """`socketnet host watch` for the world's host, its output kept."""

    def __init__(self, world, wait: bool = True):
        lab = world.lab
        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [*SOCKETNET, "host", "watch", "-c", world.config,
             "--netns", lab.ns("host"), "--ovs-db", f"unix:{lab.ovs.db_sock}",
             "--datapath-type", lab.ovs.datapath, "--warp-address", world.warp_address,
             "--controller", world.controllers["host"].target, "--interval", "1",
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            wait_until(lambda: self.metric("socketnet_host_matches_config") == 1.0, HEAL_WAIT,
                       "host watch to start with the host made")
        else:
            wait_until(lambda: self.metric("socketnet_host_last_check_timestamp_seconds")
                       is not None, HEAL_WAIT, "host watch to serve its metrics")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _scrape(self) -> Optional[str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def metric(self, name: str, labels: str = ""):
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", self._scrape() or "",
                      flags=re.M)
        return float(m.group(1)) if m else None

    def heals(self) -> float:
        """socketnet_host_heals_total, every trigger's (NaN when not scraped)."""
        text = self._scrape()
        if text is None:
            return float("nan")
        return sum(float(v) for v in re.findall(r"^socketnet_host_heals_total\{[^}]*\} (\S+)$",
                                                 text, flags=re.M))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# What the host has that is not socketnet's (an operator's veth pair, its
# routes in the main table and a table of its own, a rule, an nftables table):
# made before the watcher starts, compared after every heal of the module.
FOREIGN = [
    ("ip", "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1"),
    ("ip", "addr", "add", "192.0.2.1/24", "dev", "foreign0"),
    ("ip", "link", "set", "foreign0", "up"),
    ("ip", "route", "add", "203.0.113.0/24", "dev", "foreign0"),
    ("ip", "route", "add", "203.0.113.0/24", "dev", "foreign0", "table", "77"),
    ("ip", "route", "add", "default", "via", "192.0.2.254", "table", "77"),
    ("ip", "rule", "add", "from", "192.0.2.0/24", "lookup", "77", "priority", "1000"),
    ("nft", "add table inet foreign; add chain inet foreign input { type filter hook input "
            "priority 10; policy accept; }; add rule inet foreign input ip saddr "
            "203.0.113.0/24 accept"),
]


def _not_socketnets(world) -> dict:
    """What the host's netns has that socketnet does not own: its links and their
    addresses, routes (v4 and v6, every table) and rules, and nftables tables
    with their rules, but nothing on an interface the config names (those are
    made again with each heal), nothing in socketnet's routing tables or at its
    rule priorities, neither of socketnet's nftables tables, and not the world's
    own counters (they count)."""
    import json

    from topology.host.nft import NFT_TABLES
    from topology.host.routing import RoutingIds
    from topology.host.watch import watched_interfaces

    ids = RoutingIds()
    ours_tables = {str(t) for t in ids.tables}
    ours_priorities = {*ids.tables, *ids.prohibit_priorities}
    watched = watched_interfaces(world.host)

    def js(*cmd):
        return json.loads(world.exec("host", *cmd, check=True).stdout or "[]")
    def kept(item, keys):  # what an operator set, not the kernel's passing state
        return {k: item.get(k) for k in keys}
    links = {x["ifname"]: [kept(x, ("mtu", "address", "master", "link_type")),
                           sorted((a["family"], a["local"], a["prefixlen"])
                                  for a in x.get("addr_info", []))]
             for x in js("ip", "-j", "addr", "show") if x["ifname"] not in watched}
    routes = sorted(json.dumps(r, sort_keys=True) for family in ("-4", "-6")
                    for r in js("ip", "-j", family, "route", "show", "table", "all")
                    if r.get("dev") not in watched and str(r.get("table")) not in ours_tables
                    and not r.get("dst", "").startswith("fe80:"))  # the kernel's, after DAD
    rules = sorted(json.dumps(r, sort_keys=True) for r in js("ip", "-j", "rule", "show")
                   if r.get("priority") not in ours_priorities)
    tables = {(t["table"]["family"], t["table"]["name"])
              for t in js("nft", "-j", "list", "tables")["nftables"] if "table" in t}
    foreign = {f"{f} {n}": world.exec("host", "nft", "list", "table", f, n, check=True).stdout
               for f, n in tables - set(NFT_TABLES) if n != "world"}
    return {"links": links, "routes": routes, "rules": rules, "nft tables": sorted(tables),
            "nft": foreign}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require(*WIREGUARD, "nft", "sysctl", "socat")
    from topology.labs.world import World
    labs = tmp_path_factory.mktemp("labs")
    config = labs / "host.yaml"  # a copy: one test changes it
    config.write_text(SEED_YAML.read_text())
    w = World(str(config), unique_lab_name(), state_root=str(labs))
    w.up()
    watch = None
    try:
        for cmd in FOREIGN:
            w.exec("host", *(cmd if cmd[0] == "ip" else ("nft", cmd[1])), check=True)
        w.foreign = _not_socketnets(w)
        watch = HostWatch(w)
        w.watch = watch
        yield w
    finally:
        for each in {id(x): x for x in (watch, getattr(w, "watch", None)) if x}.values():
            each.stop()  # the boot tests start watchers of their own
        w.down()


def test_netlink_events_are_read_to_the_last_one_queued():
    """Three veth pairs made: the event socket is readable, one read hands out
    every message (six links) and leaves nothing behind, so a burst is seen when
    it happens, not when the next one arrives."""
    import select

    from pyroute2 import netns as pyroute2_netns

    from topology.host.watch import Events
    name = f"sn-{unique_lab_name()}-ev"
    pyroute2_netns.create(name)
    try:
        events = Events(name)
        try:
            for i in range(3):
                subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", f"ev{i}",
                                "type", "veth", "peer", "name", f"ew{i}"], check=True)
            assert select.select([events], [], [], 5)[0]
            got = {m.get_attr("IFLA_IFNAME") for m in events.read()
                   if m.get("event") == "RTM_NEWLINK"}
            assert got == {"ev0", "ev1", "ev2", "ew0", "ew1", "ew2"}
            assert not select.select([events], [], [], 0.2)[0]
            assert events.read() == [] and not events.overflowed
        finally:
            events.close()
    finally:
        pyroute2_netns.remove(name)


def _gateway(world):
    xray = world.host.xray_client.container
    return next(c for c in world.host.privacy_bridge.containers if c is not xray)


class Probes:
    """The N-rules, probed with real packets every 0.2 s until stopped."""

    def __init__(self, world):
        from topology.labs.world import VPS, VPS_PORT
        self.world, self.broken = world, []
        self.vps_seen = len(world.vps_connections())
        gateway, mcp = _gateway(world), world.host.mesh.containers[0]
        xray = world.host.xray_client.container
        self.checks = [
            ("N4", lambda: world.talk("droplet", str(gateway.address), 3128, timeout=0.3)[0]),
            ("N1", lambda: world.talk(mcp.id, str(xray.address), xray.services[0].port,
                                      timeout=0.3)[0]),
            ("W2/W4 over Netmaker", lambda: world.talk(gateway.id, VPS, VPS_PORT,
                                                       timeout=0.3) and False),
        ]
        self.rounds = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for rule, through in self.checks:
                if through():
                    self.broken.append(rule)
            self.rounds += 1
            self.stop.wait(0.2)

    def finish(self) -> list:
        self.stop.set()
        self.thread.join(20)
        from topology.labs.world import WARP_EXIT
        over_netmaker = [c for c in self.world.vps_connections()[self.vps_seen:]
                         if c[0] == str(_gateway(self.world).address)]
        return self.broken + [f"the VPS saw the gateway over Netmaker: {c}"
                              for c in over_netmaker if c[0] != WARP_EXIT]


def _w1(world) -> bool:
    xray = world.host.xray_client.container
    return world.talk("droplet", str(xray.address), xray.services[0].port, timeout=1)[0]


def _w5(world) -> bool:
    from topology.labs.nodes import VECTOR_DB_PORT
    mcp = world.host.mesh.containers[0]
    vdb = world.node2_host.mesh.containers[0]
    return world.talk(mcp.id, str(vdb.address), VECTOR_DB_PORT, timeout=1)[0]


def _w4(world) -> bool:
    from topology.labs.world import VPS, VPS_PORT
    return world.talk(_gateway(world).id, VPS, VPS_PORT, timeout=1)[0]


def seconds_text(seconds: dict) -> str:
    return ", ".join(f"{w} {s:.2f} s" for w, s in seconds.items())


def _back(world, since: float) -> dict:
    """Seconds from `since` to the first W1, W5 and W4 that get through. W1 is a
    conversation through the xray client with the VPS over WARP: W2 and W3 with it."""
    seconds = {}
    for name, probe in (("W1", _w1), ("W5", _w5), ("W4", _w4)):
        wait_until(lambda: probe(world), HEAL_WAIT, f"{name} back, with no command typed",
                   interval=0.1)
        seconds[name] = time.monotonic() - since
    return seconds


def _outage(world, remove, restore, away: float, what: str, interfaces,
            healed: bool = True) -> dict:
    """`remove`, `away` seconds, `restore`, with the N-rules probed throughout; the
    seconds from the return to W1 and W5. `interfaces`: the ones whose return
    must have set a heal off (unless not `healed`)."""
    wait_until(lambda: _w1(world) and _w5(world), HEAL_WAIT, "W1 and W5 before the outage")
    mark = len(world.watch.lines)
    heals = world.watch.heals()
    probes = Probes(world)
    try:
        remove()
        during = probes.rounds
        time.sleep(away)  # what an outage is: time with the interface away
        wait_until(lambda: probes.rounds >= during + 2, HEAL_WAIT,
                   "a whole round of N-probes while it is away")
        restore()
        back = time.monotonic()
        seconds = _back(world, back)
    finally:
        broken = probes.finish()
    assert not broken, broken
    if healed:
        assert _heals_by(world, mark, interfaces), "\n".join(world.watch.lines[mark:][-20:])
    wait_until(lambda: world.watch.metric("socketnet_host_matches_config") == 1.0, HEAL_WAIT,
               "the watcher to find the host matching its config")
    report(f"healing: {what} away {away:g} s: {seconds_text(seconds)} after its return; "
           f"{probes.rounds} rounds of N-probes, none got through; heals {heals:g} -> "
           f"{world.watch.heals():g}")
    return seconds


def _heals_by(world, mark: int, triggers) -> list:
    """The watcher's heals since line `mark` that changed something and were set
    off by one of `triggers`."""
    found = (re.search(r"heal \(([^:)]+)[^)]*\): \d+ change", x)
             for x in world.watch.lines[mark:])
    return [m.group(0) for m in found if m and set(m.group(1).split(",")) & set(triggers)]


def test_the_netmaker_interface_recreated_is_healed_and_nothing_leaks(world):
    """netclient restarts: the Netmaker interface goes and comes back (index 0 of
    the mesh is this host)."""
    mesh = world.netmaker
    _outage(world, lambda: mesh.remove(0), lambda: mesh.restore(0), 1.0,
            "the Netmaker interface", [_netmaker(world)])


def test_without_the_watcher_the_netmaker_interface_recreated_stays_broken(world):
    """The baseline: the watcher paused (SIGSTOP), the Netmaker interface re-created
    as before; for 10 s neither W1 nor W5 gets through (the host stays closed, and
    broken). Let go on, the watcher heals it from the events it had queued."""
    import signal
    mesh = world.netmaker
    wait_until(lambda: _w1(world) and _w5(world), HEAL_WAIT, "W1 and W5 before the outage")
    world.watch.proc.send_signal(signal.SIGSTOP)
    through = []
    try:
        mesh.remove(0)
        time.sleep(1.0)
        mesh.restore(0)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not through:
            through = [w for w, probe in (("W1", _w1), ("W5", _w5)) if probe(world)]
    finally:
        world.watch.proc.send_signal(signal.SIGCONT)
    assert not through, f"{through} came back with no watcher: the test shows nothing"
    seconds = _back(world, time.monotonic())
    report(f"healing: the Netmaker interface re-created with the watcher paused: W1 and W5 "
           f"still broken 10 s after its return; the watcher let go on: "
           f"{seconds_text(seconds)}")


def test_warp_recreated_is_healed_and_privacy_never_leaves_over_netmaker(world):
    """wg-quick restarts: warp0 goes and comes back."""
    link = world.warp_link
    _outage(world, lambda: link.remove("a"), lambda: link.restore("a"), 1.0, "warp0",
            [_warp(world)])


def _netmaker(world) -> str:
    return world.host.mesh.one(Role.NETMAKER_UPLINK).interface


def _warp(world) -> str:
    return world.host.privacy_bridge.one(Role.WARP_UPLINK).interface


def test_netmaker_and_warp_both_gone_for_30_s_then_back(world):
    mesh, link = world.netmaker, world.warp_link

    def remove():
        mesh.remove(0)
        link.remove("a")

    def restore():
        link.restore("a")
        mesh.restore(0)
    _outage(world, remove, restore, 30.0, "the Netmaker interface and warp0",
            [_netmaker(world), _warp(world)])


def test_the_controller_restarted_while_netmaker_is_down(world):
    """netclient is down; meanwhile the controller restarts (an upgrade): it
    reconciles its pipelines with Netmaker's interface away; Netmaker returns."""
    mesh = world.netmaker

    def remove():
        mesh.remove(0)
        world.stop_controller("host")
        world.start_controller("host")  # returns with both pipelines in sync
    _outage(world, remove, lambda: mesh.restore(0), 1.0,
            "the Netmaker interface (the controller restarted meanwhile)",
            [_netmaker(world)])


def test_open_vswitch_restarted(world):
    """ovs-vswitchd stops and starts again (an upgrade, a crash): its flows are
    gone until the controller is back, the bridges fail secure meanwhile. Its
    database keeps the bridges and ports, so the adapters come back as they were
    (a heal is needed only if they come back without their addresses; the
    watcher checks on their events either way)."""
    adapters = [world.host.mesh.one(Role.NETMAKER_UPLINK).name,
                world.host.privacy_bridge.one(Role.WARP_UPLINK).name]
    ctl = world.controllers["host"]
    mark = ctl.mark()
    _outage(world, world.lab.ovs.restart_vswitchd,
            lambda: ctl.wait_synced([b.name for b in world.host.bridges], after=mark), 0.0,
            "ovs-vswitchd (restarted)", adapters, healed=False)


def test_a_config_reload_adding_a_nodes_subnet(world):
    """A Netmaker peer becomes a socketnet node behind a subnet of its own (the
    relay, given 10.2.2.0/24 as Netmaker gives an egress range): the config
    gains the node, the controller is told (SIGHUP), nothing else is typed. The
    watcher sees the file change and routes the subnet; management reaches the
    new node's service; privacy never does (it would leave over Netmaker)."""
    import os
    import signal

    import yaml
    from netaddr import IPNetwork

    taken = [*world.host.management_subnet.iter_cidrs(),
             *world.host.privacy_subnet.iter_cidrs(),
             *(n for node in world.host.nodes for n in node.subnets),
             *world.host.netmaker_ranges, *world.node2_host.privacy_subnet.iter_cidrs()]
    subnet = world.host.nodes[0].subnets[0]
    while any(subnet in t or t in subnet for t in taken):
        subnet = subnet.next()
    service = str(IPNetwork(subnet)[30])
    relay = next(i for i, m in enumerate(world.netmaker.members) if m.label == "relay")
    world.exec("relay", "ip", "addr", "add", f"{service}/32", "dev", "lo", check=True)
    world.serve("relay", service, 7000, "node3")
    world.netmaker.add_owned(relay, str(subnet))
    mcp, gateway = world.host.mesh.containers[0], _gateway(world)
    assert not world.talk(mcp.id, service, 7000, timeout=1)[0], \
        "the new node's service out of management's reach before the config names it"

    probes = Probes(world)
    probes.checks.append(("privacy to the new node (over Netmaker)",
                          lambda: world.talk(gateway.id, service, 7000, timeout=0.3)[0]))
    try:
        mark = len(world.watch.lines)
        doc = yaml.safe_load(open(world.config))
        doc["socketnet"]["nodes"].append({"name": "node3", "subnets": [str(subnet)]})
        tmp = world.config + ".new"
        with open(tmp, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        ctl = world.controllers["host"]
        after = ctl.mark()
        os.replace(tmp, world.config)
        changed = time.monotonic()
        ctl.proc.send_signal(signal.SIGHUP)
        ctl.wait_synced([b.name for b in world.host.bridges], after=after)
        wait_until(lambda: world.talk(mcp.id, service, 7000, timeout=1)[0], HEAL_WAIT,
                   "management to the new node's service", interval=0.1)
        seconds = time.monotonic() - changed
        wait_until(lambda: _w1(world) and _w5(world), HEAL_WAIT, "W1 and W5 after the reload")
    finally:
        broken = probes.finish()
    assert not broken, broken
    assert _heals_by(world, mark, ["config"]), "\n".join(world.watch.lines[mark:][-20:])
    assert any("config re-read" in x for x in world.watch.lines[mark:])
    report(f"healing: a node's subnet added to the config: management reaches it "
           f"{seconds:.2f} s after the file changed; {probes.rounds} rounds of N-probes "
           f"(privacy to the new subnet among them), none got through")


def _power_off(world, stop_units=None) -> None:
    """The host as it is after a power cut, as far as socketnet is concerned: the
    watcher, the controller and Open vSwitch's daemons stopped (its database
    kept, as on disk), netclient's and wg-quick's interfaces gone, and of what
    host apply made, what the kernel forgets: socketnet's nftables tables, rules
    and routing tables, the adapters' addresses, forwarding off. The containers
    and the other nodes stay up (theirs is not this host's boot); so does what
    is not socketnet's (it is the operator's business to make it again).
    `stop_units`: what stops socketnet's own processes (default: the module's
    watcher and the world's controller)."""
    from topology.host.nft import NFT_TABLES
    from topology.host.routing import RoutingIds
    if stop_units is not None:
        stop_units()
    else:
        world.watch.stop()
        world.stop_controller("host")
    ids = RoutingIds()
    for family, name in NFT_TABLES:
        world.exec("host", "nft", "delete", "table", family, name)
    for priority in (*ids.tables, *ids.prohibit_priorities):
        while world.exec("host", "ip", "rule", "del", "priority", str(priority)).returncode == 0:
            pass
    for table in ids.tables:
        world.exec("host", "ip", "route", "flush", "table", str(table))
    for port in (world.host.mesh.one(Role.NETMAKER_UPLINK), world.host.privacy_bridge.one(
            Role.WARP_UPLINK)):
        world.exec("host", "ip", "addr", "flush", "dev", port.name)
    world.exec("host", "sysctl", "-qw", "net.ipv4.ip_forward=0", check=True)
    world.lab.ovs.shut_down()
    world.netmaker.remove(0)
    world.warp_link.remove("a")


BOOT_STEPS = ("socketnet-host", "openvswitch", "controller", "netclient", "wg-quick")


def _boot_step(world, step: str) -> None:
    if step == "socketnet-host":
        world.watch = HostWatch(world, wait=False)
    elif step == "openvswitch":
        world.lab.ovs.boot()
    elif step == "controller":
        world.controllers["host"].start()
        world.save()
    elif step == "netclient":
        world.netmaker.restore(0)
    else:
        world.warp_link.restore("a")


@pytest.mark.parametrize("first", range(len(BOOT_STEPS)),
                         ids=lambda i: "-".join(BOOT_STEPS[i:] + BOOT_STEPS[:i]))
def test_boot_in_any_order_comes_up_fail_closed(world, first):
    """The host boots with the units enabled; they start in this order (each
    unit first once and last once over the five orders), a second apart; the
    N-rules are probed from the power cut to the end. Then W1 and W5 work with
    nothing typed, and the host matches its config."""
    order = BOOT_STEPS[first:] + BOOT_STEPS[:first]
    seconds, rounds = _boot(world, order, _boot_step)
    wait_until(lambda: world.watch.metric("socketnet_host_matches_config") == 1.0, HEAL_WAIT,
               "the watcher to find the host matching its config")
    report(f"healing: boot in the order {', '.join(order)}: {seconds_text(seconds)} after "
           f"the last; {rounds} rounds of N-probes from the power cut, none got through")


def _boot(world, order, boot_step, stop_units=None) -> tuple:
    """A power cut, then `boot_step(world, step)` for each step of `order` a second
    apart, the N-rules probed from the cut until W1 and W5 work: (the seconds from
    the last step to W1 and W5, the rounds of probes). None may get through."""
    probes = Probes(world)
    try:
        _power_off(world, stop_units)
        for step in order:
            time.sleep(1.0)  # time with the host part-booted, probed
            boot_step(world, step)
        seconds = _back(world, time.monotonic())
    finally:
        broken = probes.finish()
    assert not broken, broken
    return seconds, probes.rounds


def test_host_status_says_what_differs_and_exits_0_when_nothing(world):
    lab = world.lab
    argv = [*SOCKETNET, "host", "status", "-c", world.config,
            "--netns", lab.ns("host"), "--ovs-db", f"unix:{lab.ovs.db_sock}",
            "--datapath-type", lab.ovs.datapath, "--warp-address", world.warp_address,
            "--controller", world.controllers["host"].target]
    same = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "the host matches the config" in same.stdout
    # With the watcher paused, one of socketnet's routes goes: status names it
    # (exit 1); the watcher, let go on, heals it from the netlink event it missed.
    import signal
    from pyroute2 import IPRoute
    from topology.host.routing import RoutingIds
    table = RoutingIds().tables[0]
    with IPRoute(netns=lab.ns("host")) as ipr:
        routes = [r for r in ipr.get_routes(table=table) if r.get_attr("RTA_DST")]
    assert routes, f"socketnet's table {table} has routes"
    victim = routes[0].get_attr("RTA_DST")
    world.watch.proc.send_signal(signal.SIGSTOP)
    try:
        lab.exec("host", "ip", "route", "del", f"{victim}/{routes[0]['dst_len']}", "table",
                 str(table), check=True)
        differs = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        world.watch.proc.send_signal(signal.SIGCONT)
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert victim in differs.stdout and "would run: ip route" in differs.stdout, differs.stdout
    wait_until(lambda: subprocess.run(argv, capture_output=True, timeout=60).returncode == 0,
               HEAL_WAIT, "the watcher to put the route back")


def test_nothing_else_on_the_host_was_touched(world):
    """Through every heal of the module, what is not socketnet's stayed as it was
    (one more heal first, so that there is one whatever ran before)."""
    link = world.warp_link
    _outage(world, lambda: link.remove("a"), lambda: link.restore("a"), 0.5, "warp0 (again)",
            [_warp(world)])
    now = _not_socketnets(world)
    for what, before in world.foreign.items():
        assert now[what] == before, what
    assert "foreign0" in now["links"] and "inet foreign" in now["nft"]


def test_the_host_dashboard_and_alerts_read_the_watchers_metrics(world, tmp_path):
    """A real Prometheus scrapes the watcher: every panel of the host dashboard
    returns data; SocketnetHostDiverged's condition holds while the host carries
    what the config forbids (a route of the main table through WARP, which only
    an operator may take away) and clears when it goes; SocketnetHostWatchDown's
    once the watcher stops (last: the module's watcher is gone after it)."""
    import yaml

    from tests.integration.test_metrics import (MONITORING, Prometheus, _alert_rules,
                                                _as_grafana_asks, _panel_exprs)
    require("prometheus")
    doc = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    doc["global"].update(scrape_interval="1s", evaluation_interval="1s")
    doc["rule_files"] = [str(MONITORING / "alerts.yml")]
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "socketnet-host"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{world.watch.metrics_port}"]
    doc["scrape_configs"] = [job]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(doc))
    prom = Prometheus(config, tmp_path)
    try:
        panels = _panel_exprs(host=True)
        assert panels
        for _, title, expr in panels:
            query = _as_grafana_asks(expr)
            wait_until(lambda: prom.query(query), HEAL_WAIT, f"{title}: {query}", interval=0.2)
        alerts = {r["alert"]: r["expr"] for r in _alert_rules("socketnet-host")}
        assert set(alerts) == {"SocketnetHostDiverged", "SocketnetHostWatchDown"}

        warp = world.host.privacy_bridge.one(Role.WARP_UPLINK).interface
        route = ["198.51.100.0/24", "dev", warp]
        world.lab.exec("host", "ip", "route", "add", *route, check=True)
        try:
            wait_until(lambda: prom.query(alerts["SocketnetHostDiverged"]), HEAL_WAIT,
                       "SocketnetHostDiverged's condition", interval=0.2)
            assert any("WARP's routes belong in the privacy table" in x
                       for x in world.watch.lines), world.watch.lines[-10:]
        finally:
            world.lab.exec("host", "ip", "route", "del", *route, check=True)
        wait_until(lambda: not prom.query(alerts["SocketnetHostDiverged"]), HEAL_WAIT,
                   "the host matching again")
        world.watch.stop()
        wait_until(lambda: prom.query(alerts["SocketnetHostWatchDown"]), HEAL_WAIT,
                   "SocketnetHostWatchDown's condition", interval=0.2)
    finally:
        prom.stop()
