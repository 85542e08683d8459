"""Part (a): new-flow setups on real Open vSwitch, in labs of the seed's bridges.

Every phase runs in a fresh lab (topology/labs/lab.py: a private userspace Open
vSwitch, the containers in network namespaces), so that none inherits another's
flows or connections; each is offered the same traffic: TCP SYNs of new 5-tuples
from Netmaker peers to the xray client's service, sent with AF_PACKET into the
Netmaker adapter (mesh-gw) from the lab's host netns (bench/traffic.py). Every
controller runs inside the OVS netns and is reached on its 127.0.0.1, as on a
real host (no relay). The mesh's conntrack zone gets socketnet's connection
limit (cached_total) in every phase that has socketnet's pipeline.

1. socketnet: pipelines synced, meter 1 raised (the bench config). A setup is a
   first packet delivered to the xray client's eth0 (captured there; its address
   is removed so its kernel answers nothing): table 1's conntrack pass, packet-in,
   decision, one PacketOut that commits the connection with its class's mark,
   table 1 again (the mark), mesh -> inter-bridge link -> vmbr0 (its own commit)
   -> veth102.
2. conntrack: socketnet installs the pipeline, a minimal controller joins mesh as
   a second controller (1 -> 2 controllers keeps the flows), socketnet stops; the
   minimal controller answers every packet-in exactly as socketnet does
   (bench/traffic.py --decisions conntrack: the same decision and the same
   PacketOut bytes, no os-ken, no bookkeeping). What Open vSwitch sustains for
   socketnet's design with a controller that costs next to nothing.
2b. alone: the same minimal controller in a process of its own (bench/traffic.py
   --serve), the packets captured at the xray client: ovs-vswitchd, a controller
   process and the traffic process on the two cores, as in phase 1 (in phase 2
   the minimal controller lives inside the traffic process, one hop fewer).
3. timed: the same minimal controller answering as the classifier did before its
   decisions moved into the connection tracker: a FlowMod of its own table-1 flow
   per decision (above socketnet's, with idle and hard timeouts), then a PacketOut
   (--decisions timed). That design's setup ceiling, on today's pipeline.
4. ceiling: socketnet's pipeline with a do-nothing sink in mesh's controller's
   place; the sink counts the packet-ins Open vSwitch manages to send for the same
   traffic: its upcall + packet-in ceiling, this machine, this run.
5. untimed: phase 3 with flows that carry no timeouts (the closed loop only):
   Open vSwitch walks every flow with a timeout after each revalidation round, and
   each FlowMod starts one; this is what the timeouts cost the timed design.
6. baseline: bench/simple_switch.py on mesh alone. It learns the MCP container's
   MAC (one ARP from it), the traffic is addressed to that MAC, and a setup is a
   first packet delivered to the MCP container's eth0 (its kernel drops it: not
   its address). One bridge, not two: Open vSwitch has less to do per setup.
7. live decisions (`live`, each N): socketnet as in 1, but before its closed loop
   N more connections are decided through it (a fill: N SYNs, all committed to the
   zone); the connections then in the zone (dpctl/ct-get-limits), socketnet's
   VmRSS, and the setups/s of the closed loop that follows.

Phases 1 to 4 run `repeat` times, in turn (1, 2, 3, 4, 1, 2, 3, 4, ...), then 5,
6 and 7. Phases 1, 2, 3 and 6: an open-loop run at 5,000 new flows/s (send stamp ->
capture: first-packet latency p50/p99), then a closed-loop run with a window of
packets in flight (delivered/s, the first half second left out). Phase 4 is that
closed loop only, a packet-in at the sink counting as delivered; phases 5 and 7
that closed loop only.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from bench import processes
from bench.stats import percentile
from controller.compiler import conntrack_zone
from topology.labs.lab import HOST, Lab
from topology.labs.ovs import OvsError
from topology.model import Host, Role
from topology.system import wait_until

WARMUP = 0.5
FILL_RATE_FLOOR = 1_000  # a fill slower than this (flows/s) is given up


@dataclass
class Phase:
    """One phase's numbers: new flows/s sustained with `window` in flight, and
    first-packet latency at a fixed offered rate (seconds)."""
    per_second: float
    window: int
    lost: int = 0
    p50_window: Optional[float] = None
    latency_rate: float = 0.0
    p50: Optional[float] = None
    p99: Optional[float] = None
    latency_delivered: int = 0
    latency_sent: int = 0
    cpu: dict = None  # process -> share of one core during the window run


@dataclass
class Live:
    """Phase 7 for one N: the fill, what it left in the zone, and the closed loop after."""
    decisions: int  # flows the fill sent
    filled: int  # of them delivered
    fill_per_second: float
    in_zone: Optional[int]  # connections in the mesh's zone after the fill (None: unknown)
    rss_kib: int  # socketnet's VmRSS after the fill
    idle_rss_kib: int  # and before it
    after: Phase  # the closed loop that followed


class Actor:
    """`python -m bench.traffic ARGS` in the lab's host netns; waits for "ready"."""

    def __init__(self, ns: str, *args: str):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.traffic", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.expect("ready")

    def expect(self, line: str) -> None:
        got = self.proc.stdout.readline().strip()
        if got != line:
            self.kill()
            raise RuntimeError(f"bench.traffic: expected {line!r}, got {got!r}")

    def result(self, timeout: float = 60.0) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out, _ = self.proc.communicate(timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    @property
    def pid(self) -> int:
        return self.proc.pid  # `ip netns exec` execs the command: the same process

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window_phase(r: dict, window: int) -> Phase:
    return Phase(per_second=r["delivered"] / r["seconds"], window=window, lost=r["lost"],
                 p50_window=percentile(r["latencies"], 50), cpu=r["cpu"])


class OvsBench:
    """`OvsBench(host, config, name, ...).run()`: the phases, each in a fresh lab
    named `name`-N (labs are torn down whatever happens). `live`: the N of phase 7
    (none: no phase 7); `untimed`: whether phase 5 runs."""

    def __init__(self, host: Host, config: str, name: str, seconds: float, window: int,
                 latency_rate: float, latency_seconds: float, repeat: int = 1,
                 live: tuple = (), untimed: bool = True):
        self.host, self.config, self.name = host, config, name
        self.seconds, self.window = seconds, window
        self.latency_rate, self.latency_seconds = latency_rate, latency_seconds
        self.repeat, self.live, self.untimed = repeat, tuple(live), untimed
        self.uplink = host.mesh.one(Role.NETMAKER_UPLINK).name
        self.zone = conntrack_zone(host, host.mesh)
        self.next_flow = 0
        self.lab: Optional[Lab] = None
        self._labs = 0
        self._children = []
        self._actors = []

    # --- labs and controllers ----------------------------------------------------

    @contextlib.contextmanager
    def _fresh_lab(self):
        """A new lab of the host; the xray client's kernel made mute (a RST would be
        one more slow-path packet per flow: without its address it drops them)."""
        self._labs += 1
        self.lab = Lab(self.host, f"{self.name}-{self._labs}")
        try:
            self.lab.up()
            self.uplink_mac = self.lab.exec(HOST, "cat", f"/sys/class/net/{self.uplink}/address",
                                            check=True).stdout.strip()
            self.lab.exec(self.host.xray_client.container.id, "ip", "addr", "flush", "dev",
                          "eth0", check=True)
            yield self.lab
        finally:
            for actor in self._actors:
                actor.kill()
            self._actors.clear()
            for child in self._children:
                child.stop()
            self._children.clear()
            self.lab.down()

    def _controllers(self, bridge: str, ports: list) -> None:
        """Set `bridge`'s controllers to tcp:127.0.0.1:PORT (of the OVS netns) each."""
        cmd, refs = [], []
        for i, port in enumerate(ports):
            ref = f"@c{i}"
            refs.append(ref)
            cmd += ["--", f"--id={ref}", "create", "Controller", f'target="tcp:127.0.0.1:{port}"',
                    "connection-mode=out-of-band"]
        cmd += ["--", "set", "Bridge", bridge, f"controller=[{','.join(refs)}]"]
        self.lab.ovs.vsctl(*cmd)

    def _start(self, child: processes.Child) -> processes.Child:
        self._children.append(child)
        return child.start()

    def _socketnet_synced(self) -> processes.Child:
        ctl = self._start(processes.socketnet(self.config, netns=self.lab.ns(HOST)))
        mark = ctl.mark()
        bridges = [b.name for b in self.host.bridges]
        for bridge in bridges:
            self._controllers(bridge, [ctl.port])
        ctl.wait_synced(bridges, after=mark)
        # What socketnet sets on a host when it reaches ovs-vswitchd's control
        # socket (the lab's is not where it looks): the zone's connection limit.
        # A datapath without zone limits leaves the zone bounded by its own.
        limit = self.host.classification.limits.cached_total
        with contextlib.suppress(OvsError):
            self.lab.ovs.appctl("dpctl/ct-set-limits", f"zone={self.zone},limit={limit}")
        return ctl

    def _in_zone(self) -> Optional[int]:
        """Connections in the mesh's conntrack zone now (dpctl/ct-get-limits)."""
        try:
            out = self.lab.ovs.appctl("dpctl/ct-get-limits", f"zone={self.zone}")
        except OvsError:
            return None
        found = re.search(rf"zone={self.zone},limit=\d+,count=(\d+)", out)
        return int(found.group(1)) if found else None

    # --- traffic -------------------------------------------------------------

    def _actor(self, mode: str, seconds: float, dst_mac: str, *end: str) -> Actor:
        xray = self.host.xray_client.container
        actor = Actor(self.lab.ns(HOST), "--ifname", self.uplink, "--src-mac", self.uplink_mac,
                      "--dst-mac", dst_mac, "--dst-ip", str(xray.address),
                      "--dport", str(xray.services[0].port), "--mode", mode,
                      "--window", str(self.window), "--rate", str(int(self.latency_rate)),
                      "--seconds", str(seconds), "--first", str(self.next_flow), *end)
        self._actors.append(actor)
        return actor

    def _run(self, actor: Actor, controller: Optional[processes.Child] = None,
             timeout: float = 60.0) -> dict:
        pids = {"ovs-vswitchd": self.lab.ovs.pids["ovs-vswitchd"]}
        if controller is not None and controller.proc.poll() is None:
            pids["controller"] = controller.pid
        before, started = {k: _cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
        try:
            result = actor.result(timeout)
        finally:
            actor.kill()
        wall = time.monotonic() - started
        result["cpu"] = {k: (_cpu_seconds(p) - before[k]) / wall for k, p in pids.items()}
        result["cpu"]["traffic"] = result["cpu_seconds"] / result["wall_seconds"]
        self.next_flow += result["sent"] + 1
        return result

    def _phase(self, dst_mac: str, receiver_ns: str, controller=None, sink: tuple = (),
               keep: tuple = (), latency: bool = True) -> Phase:
        """Latency at the fixed rate (unless not `latency`), then the window run.
        `sink`: the actor's own minimal controller (its arguments), made mesh's
        controller for each run beside the (stopped) controllers on ports `keep`,
        so that mesh never goes down to no controller (which would flush its flows)."""
        end = ("--receive-netns", receiver_ns, *sink)

        def one(mode, seconds):
            actor = self._actor(mode, seconds, dst_mac, *end)
            if sink:
                self._controllers(self.host.mesh.name, [*keep, int(sink[1])])
                actor.expect("connected")
            return self._run(actor, controller)

        if not latency:
            return _window_phase(one("window", self.seconds), self.window)
        fixed = one("rate", self.latency_seconds)
        time.sleep(0.3)  # what is still queued drains
        phase = _window_phase(one("window", self.seconds), self.window)
        phase.latency_rate = fixed["sent"] / self.latency_seconds
        phase.p50 = percentile(fixed["latencies"], 50)
        phase.p99 = percentile(fixed["latencies"], 99)
        phase.latency_delivered, phase.latency_sent = len(fixed["latencies"]), fixed["sent"]
        return phase

    # --- the phases ------------------------------------------------------------------

    def run(self) -> dict:
        """{phase: Phase}: "socketnet", "conntrack", "alone", "timed" and "ceiling" (the
        medians of `repeat` runs taken in turn, by throughput), "rounds" (each
        turn's setups/s of the four, for the ratios within one round, and
        socketnet's first-packet p50, p99 and whether all arrived), "untimed"
        (if run), "baseline", and "live" ([Live] for each N of `live`)."""
        names = ("socketnet", "conntrack", "alone", "timed", "ceiling")
        runs = {name: [] for name in names}
        for _ in range(self.repeat):
            runs["socketnet"].append(self._socketnet_phase())
            runs["conntrack"].append(self._minimal_phase("conntrack"))
            runs["alone"].append(self._minimal_alone_phase())
            runs["timed"].append(self._minimal_phase("timed"))
            runs["ceiling"].append(self._ceiling_phase())
        results = {name: sorted(phases, key=lambda p: p.per_second)[len(phases) // 2]
                   for name, phases in runs.items()}
        results["rounds"] = [{**{name: runs[name][i].per_second for name in names},
                              "p50": runs["socketnet"][i].p50, "p99": runs["socketnet"][i].p99,
                              "all_delivered": runs["socketnet"][i].latency_delivered
                              == runs["socketnet"][i].latency_sent}
                             for i in range(self.repeat)]
        if self.untimed:
            results["untimed"] = self._minimal_phase("untimed", latency=False)
        results["baseline"] = self._baseline_phase()
        results["live"] = [self._live_phase(n) for n in self.live]
        return results

    def _socketnet_phase(self) -> Phase:
        xray = self.host.xray_client.container
        with self._fresh_lab() as lab:
            ctl = self._socketnet_synced()
            return self._phase(xray.mac, lab.ns(xray.id), ctl)

    @contextlib.contextmanager
    def _pipeline_without_socketnet(self):
        """A fresh lab whose pipeline socketnet installed and then left: mesh gets a
        second controller first (1 -> 2 controllers keeps the flows, and so does the
        first's stopping). Yields (lab, the stopped controller)."""
        with self._fresh_lab() as lab:
            ctl = self._socketnet_synced()
            self._controllers(self.host.mesh.name, [ctl.port, processes.free_port()])
            ctl.stop()
            yield lab, ctl

    def _minimal_phase(self, decisions: str, latency: bool = True) -> Phase:
        """The minimal controller answering with `decisions` (bench/traffic.py
        --decisions) on socketnet's pipeline, in a fresh lab; no flow is added."""
        xray = self.host.xray_client.container
        with self._pipeline_without_socketnet() as (lab, ctl):
            port = str(processes.free_port())
            return self._phase(xray.mac, lab.ns(xray.id),
                               sink=("--sink-port", port, "--answer", self.config,
                                     "--decisions", decisions),
                               keep=(ctl.port,), latency=latency)

    def _minimal_alone_phase(self) -> Phase:
        """The conntrack minimal controller in a process of its own (bench/traffic.py
        --serve), the traffic captured at the xray client as for socketnet: the same
        three processes on the same cores as socketnet's phase."""
        xray = self.host.xray_client.container
        with self._pipeline_without_socketnet() as (lab, ctl):
            port = processes.free_port()
            server = Actor(lab.ns(HOST), "--serve", "--sink-port", str(port),
                           "--answer", self.config, "--decisions", "conntrack")
            self._actors.append(server)
            self._controllers(self.host.mesh.name, [ctl.port, port])
            server.expect("connected")
            return self._phase(xray.mac, lab.ns(xray.id), server)

    def _ceiling_phase(self) -> Phase:
        """socketnet installs the pipeline, then hands mesh to the do-nothing sink:
        1 -> 2 controllers keeps the flows, and so does its stopping."""
        mesh = self.host.mesh.name
        xray = self.host.xray_client.container
        with self._fresh_lab():
            ctl = self._socketnet_synced()
            sink_port = processes.free_port()
            sink = self._actor("window", self.seconds, xray.mac, "--sink-port", str(sink_port))
            self._controllers(mesh, [ctl.port, sink_port])
            sink.expect("connected")
            ctl.stop()
            return _window_phase(self._run(sink), self.window)

    def _baseline_phase(self) -> Phase:
        mesh = self.host.mesh.name
        with self._fresh_lab() as lab:
            base = self._start(processes.baseline(netns=lab.ns(HOST)))
            self._controllers(mesh, [base.port])
            wait_until(lambda: any("CONTROLLER" in f for f in lab.ovs.dump_flows(mesh)), 10,
                       "the baseline's table-miss flow")
            mcp = self.host.mesh.containers[0]
            lab.exec(mcp.id, "ping", "-c1", "-W0.3", str(mcp.gateway))  # its MAC, learned
            return self._phase(mcp.mac, lab.ns(mcp.id), base)

    def _live_phase(self, decisions: int) -> Live:
        """socketnet decides `decisions` connections first (a fill through it, the
        same traffic), then the closed loop; VmRSS and the zone read in between."""
        xray = self.host.xray_client.container
        with self._fresh_lab() as lab:
            ctl = self._socketnet_synced()
            idle = ctl.rss_kib()
            longest = decisions / FILL_RATE_FLOOR + 5
            actor = self._actor("fill", longest, xray.mac, "--receive-netns", lab.ns(xray.id),
                                "--count", str(decisions))
            fill = self._run(actor, ctl, timeout=longest + 30)
            time.sleep(0.3)  # the last answers' garbage goes, what is queued drains
            in_zone, rss = self._in_zone(), ctl.rss_kib()
            after = self._phase(xray.mac, lab.ns(xray.id), ctl, latency=False)
            return Live(decisions=fill["sent"], filled=fill["delivered"],
                        fill_per_second=fill["sent"] / fill["seconds"] if fill["seconds"] else 0.0,
                        in_zone=in_zone, rss_kib=rss, idle_rss_kib=idle, after=after)
