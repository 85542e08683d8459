"""A host that heals itself (`socketnet host watch`), in the seed's whole world.

One world per module (topology.world) and one `socketnet host watch` for its
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
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from controller.process import free_port
from topology.model import Role
from topology.ovs import wait_until

from tests.integration.conftest import SEED_YAML, WIREGUARD, report, require, unique_lab_name

HEAL_WAIT = 20.0
SOCKETNET = (sys.executable, "-c", "from controller.cli import main; main()")


class HostWatch:
    """`socketnet host watch` for the world's host, its output kept."""

    def __init__(self, world):
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
        wait_until(lambda: any("heal (start)" in x or "metrics on" in x for x in self.lines)
                   and self.metric("socketnet_host_matches_config") == 1.0, HEAL_WAIT,
                   "host watch to start with the host made")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def metric(self, name: str, labels: str = ""):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, flags=re.M)
        return float(m.group(1)) if m else None

    def heals(self) -> float:
        """socketnet_host_heals_total, every trigger's."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=2) as r:
                text = r.read().decode()
        except OSError:
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


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require(*WIREGUARD, "nft", "sysctl", "socat")
    from topology.world import World
    w = World(str(SEED_YAML), unique_lab_name(),
              state_root=str(tmp_path_factory.mktemp("labs")))
    w.up()
    watch = None
    try:
        watch = HostWatch(w)
        w.watch = watch
        yield w
    finally:
        if watch is not None:
            watch.stop()
        w.down()


def _gateway(world):
    xray = world.host.xray_client.container
    return next(c for c in world.host.privacy.containers if c is not xray)


class Probes:
    """The N-rules, probed with real packets every 0.2 s until stopped."""

    def __init__(self, world):
        from topology.world import VPS, VPS_PORT
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
        from topology.world import WARP_EXIT
        over_netmaker = [c for c in self.world.vps_connections()[self.vps_seen:]
                         if c[0] == str(_gateway(self.world).address)]
        return self.broken + [f"the VPS saw the gateway over Netmaker: {c}"
                              for c in over_netmaker if c[0] != WARP_EXIT]


def _w1(world) -> bool:
    xray = world.host.xray_client.container
    return world.talk("droplet", str(xray.address), xray.services[0].port, timeout=1)[0]


def _w5(world) -> bool:
    from topology.world import VECTOR_DB_PORT
    mcp = world.host.mesh.containers[0]
    vdb = world.node2_host.mesh.containers[0]
    return world.talk(mcp.id, str(vdb.address), VECTOR_DB_PORT, timeout=1)[0]


def _back(world, since: float) -> dict:
    """Seconds from `since` to the first W1 and W5 that get through."""
    seconds = {}
    for name, probe in (("W1", _w1), ("W5", _w5)):
        wait_until(lambda: probe(world), HEAL_WAIT, f"{name} back, with no command typed",
                   interval=0.1)
        seconds[name] = time.monotonic() - since
    return seconds


def _outage(world, remove, restore, away: float, what: str, interface: str) -> dict:
    assert _w1(world) and _w5(world), "W1 and W5 before the outage"
    mark = len(world.watch.lines)
    heals = world.watch.heals()
    probes = Probes(world)
    try:
        remove()
        time.sleep(away)  # what an outage is: time with the interface away
        restore()
        back = time.monotonic()
        seconds = _back(world, back)
    finally:
        broken = probes.finish()
    assert probes.rounds >= 3, "the N-rules were probed through the outage"
    assert not broken, broken
    healed = [x for x in world.watch.lines[mark:] if "change(s)" in x and interface in
              x.split("heal (", 1)[-1].split(":", 1)[0].split(",")]
    assert healed, "\n".join(world.watch.lines[mark:][-20:])  # set off by its return
    report(f"healing: {what} away {away:g} s: W1 back {seconds['W1']:.2f} s, W5 "
           f"{seconds['W5']:.2f} s after its return; {probes.rounds} rounds of N-probes, "
           f"none got through; heals {heals:g} -> {world.watch.heals():g}")
    return seconds


def test_the_netmaker_interface_recreated_is_healed_and_nothing_leaks(world):
    """netclient restarts: the Netmaker interface goes and comes back (index 0 of
    the mesh is this host)."""
    mesh = world.netmaker
    _outage(world, lambda: mesh.remove(0), lambda: mesh.restore(0), 1.0,
            "the Netmaker interface", world.host.mesh.one(Role.NETMAKER_UPLINK).interface)
    assert world.watch.metric("socketnet_host_matches_config") == 1.0


def test_warp_recreated_is_healed_and_privacy_never_leaves_over_netmaker(world):
    """wg-quick restarts: warp0 goes and comes back."""
    link = world.warp_link
    _outage(world, lambda: link.remove("a"), lambda: link.restore("a"), 1.0, "warp0",
            world.host.privacy.one(Role.WARP_UPLINK).interface)
    from topology.world import VPS, VPS_PORT
    gateway = _gateway(world)
    wait_until(lambda: world.talk(gateway.id, VPS, VPS_PORT, timeout=1)[0], HEAL_WAIT,
               "W4 back through WARP")


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
    from topology.host import RoutingIds
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

        warp = world.host.privacy.one(Role.WARP_UPLINK).interface
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
