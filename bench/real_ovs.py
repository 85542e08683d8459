"""Part (a): new-flow setups on real Open vSwitch, in labs of the seed's bridges.

Four phases, each in a fresh lab (topology/lab.py: a private userspace Open
vSwitch, the containers in network namespaces), so that none inherits another's
flows; each offered the same traffic: TCP SYNs of new 5-tuples from Netmaker peers
to the xray client's service, sent with AF_PACKET into the Netmaker adapter
(mesh-gw) from the lab's host netns (bench/traffic.py). Every controller runs
inside the OVS netns and is reached on its 127.0.0.1, as on a real host (no relay).

1. socketnet: pipelines synced, meter 1 raised (the bench config). A setup is a
   first packet delivered to the xray client's eth0 (captured there; its address
   is removed so its kernel answers nothing): packet-in -> decision -> FlowMod +
   PacketOut -> mesh -> inter-bridge link -> vmbr0 -> veth102.
2. ceiling: socketnet installs the pipeline, a do-nothing sink joins mesh as a
   second controller (1 -> 2 controllers keeps the flows), socketnet stops; the
   traffic now ends at table 1's miss and the sink counts the packet-ins Open
   vSwitch manages to send: its upcall + packet-in ceiling, this machine, this run.
3. minimal: the same, but the sink answers each packet-in as socketnet's pure core
   would (the same decision, struct-packed, no os-ken; bench/traffic.py --answer):
   Open vSwitch's ceiling for whole setups (packet-in, FlowMod, PacketOut, both
   bridges) with a controller that costs next to nothing.
4. untimed: phase 3 with decisions that carry no idle and hard timeout (the
   throughput run only). Open vSwitch walks every flow that has a timeout after
   each revalidation round, and each FlowMod starts one: this is what the
   timeouts issue #4 asks of a cached decision cost the switch.
5. conntrack: phase 3 with the decision kept in the connection tracker instead of a
   flow (bench/traffic.py --decisions conntrack): static flows on mesh's classify
   table send untracked packets through conntrack and each class's mark its way;
   the sink answers a packet-in with one PacketOut that commits the connection with
   its class's mark, and no FlowMod (the throughput run only). Open vSwitch's setup
   ceiling for that design, against phase 3's for today's.
6. baseline: bench/simple_switch.py on mesh alone. It learns the MCP container's
   MAC (one ARP from it), the traffic is addressed to that MAC, and a setup is a
   first packet delivered to the MCP container's eth0 (its kernel drops it: not
   its address). One bridge, not two: Open vSwitch has less to do per setup.

Phases 1 and 3 run `repeat` times, in turn (1, 3, 1, 3, ...), then 2, 4, 5 and 6.
Each phase (but 2 and 4): an open-loop run at 5,000 new flows/s (send stamp -> capture:
first-packet latency p50/p99), then a closed-loop run with a window of packets in
flight (delivered/s, the first half second left out). Phase 2 is that closed loop
only, a packet-in at the sink counting as delivered; phases 4 and 5 that closed
loop only.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from bench import processes, traffic
from bench.stats import percentile
from topology.lab import HOST, Lab
from topology.model import Host, Role
from topology.ovs import wait_until

WARMUP = 0.5


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

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OvsBench:
    """`OvsBench(host, config, name, ...).run()`: the phases, each in a fresh lab
    named `name`-N (labs are torn down whatever happens)."""

    def __init__(self, host: Host, config: str, name: str, seconds: float, window: int,
                 latency_rate: float, latency_seconds: float, repeat: int = 1):
        self.host, self.config, self.name = host, config, name
        self.seconds, self.window = seconds, window
        self.latency_rate, self.latency_seconds = latency_rate, latency_seconds
        self.repeat = repeat
        self.uplink = host.mesh.one(Role.NETMAKER_UPLINK).name
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
        return ctl

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

    def _run(self, actor: Actor, controller: Optional[processes.Child] = None) -> dict:
        pids = {"ovs-vswitchd": self.lab.ovs.pids["ovs-vswitchd"]}
        if controller is not None and controller.proc.poll() is None:
            pids["controller"] = controller.pid
        before, started = {k: _cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
        try:
            result = actor.result()
        finally:
            actor.kill()
        wall = time.monotonic() - started
        result["cpu"] = {k: (_cpu_seconds(p) - before[k]) / wall for k, p in pids.items()}
        result["cpu"]["traffic"] = result["cpu_seconds"] / result["wall_seconds"]
        self.next_flow += result["sent"] + 1
        return result

    def _phase(self, dst_mac: str, receiver_ns: str, controller=None, sink: tuple = (),
                keep: tuple = ()) -> Phase:
        """Latency at the fixed rate, then the window run. `sink`: the actor's own
        minimal controller (its arguments), made mesh's controller for each run
        beside the (stopped) controllers on ports `keep`, so that mesh never goes
        down to no controller (which would flush its flows)."""
        end = ("--receive-netns", receiver_ns, *sink)

        def one(mode, seconds):
            actor = self._actor(mode, seconds, dst_mac, *end)
            if sink:
                self._controllers(self.host.mesh.name, [*keep, int(sink[1])])
                actor.expect("connected")
            return self._run(actor, controller)

        fixed = one("rate", self.latency_seconds)
        time.sleep(0.3)  # what is still queued drains
        r = one("window", self.seconds)
        return Phase(per_second=r["delivered"] / r["seconds"], window=self.window,
                     lost=r["lost"], p50_window=percentile(r["latencies"], 50), cpu=r["cpu"],
                     latency_rate=fixed["sent"] / self.latency_seconds,
                     p50=percentile(fixed["latencies"], 50),
                     p99=percentile(fixed["latencies"], 99),
                     latency_delivered=len(fixed["latencies"]), latency_sent=fixed["sent"])

    # --- the phases ------------------------------------------------------------------

    def run(self) -> dict:
        """{phase: Phase}; with `repeat`, socketnet and minimal run that many times,
        one after the other, their median throughput run kept, and "shares" holds
        each pair's socketnet/minimal ratio."""
        runs = {"socketnet": [], "minimal": []}
        for _ in range(self.repeat):
            runs["socketnet"].append(self._socketnet_phase())
            runs["minimal"].append(self._minimal_phase())
        results = {name: sorted(phases, key=lambda p: p.per_second)[len(phases) // 2]
                   for name, phases in runs.items()}
        results["shares"] = [s.per_second / m.per_second
                             for s, m in zip(runs["socketnet"], runs["minimal"])
                             if m.per_second]
        results.update(self._other_phases())
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

    def _minimal_phase(self) -> Phase:
        xray = self.host.xray_client.container
        with self._pipeline_without_socketnet() as (lab, ctl):
            port = str(processes.free_port())
            return self._phase(xray.mac, lab.ns(xray.id),
                               sink=("--sink-port", port, "--answer", self.config),
                               keep=(ctl.port,))

    def _minimal_throughput(self, decisions: str) -> Phase:
        """The minimal controller's closed-loop run, answering with `decisions`
        (bench/traffic.py --decisions), in a fresh lab."""
        mesh = self.host.mesh.name
        xray = self.host.xray_client.container
        with self._pipeline_without_socketnet() as (lab, ctl):
            if decisions == "conntrack":
                lab.ovs.add_flows(mesh, traffic.conntrack_flows(self.config))
            port = processes.free_port()
            actor = self._actor("window", self.seconds, xray.mac, "--receive-netns",
                                lab.ns(xray.id), "--sink-port", str(port), "--answer",
                                self.config, "--decisions", decisions)
            self._controllers(mesh, [ctl.port, port])
            actor.expect("connected")
            r = self._run(actor)
            return Phase(per_second=r["delivered"] / r["seconds"], window=self.window,
                         lost=r["lost"], p50_window=percentile(r["latencies"], 50),
                         cpu=r["cpu"])

    def _other_phases(self) -> dict:
        mesh = self.host.mesh.name
        xray = self.host.xray_client.container
        results = {}

        with self._fresh_lab() as lab:
            # socketnet installs the pipeline, then hands mesh to the sink: 1 -> 2
            # controllers keeps the flows, and so does its stopping.
            ctl = self._socketnet_synced()
            sink_port = processes.free_port()
            sink = self._actor("window", self.seconds, xray.mac, "--sink-port", str(sink_port))
            self._controllers(mesh, [ctl.port, sink_port])
            sink.expect("connected")
            ctl.stop()
            r = self._run(sink)
            results["ceiling"] = Phase(per_second=r["delivered"] / r["seconds"],
                                       window=self.window, lost=r["lost"],
                                       p50_window=percentile(r["latencies"], 50), cpu=r["cpu"])

        for decisions in ("untimed", "conntrack"):
            results[decisions] = self._minimal_throughput(decisions)

        with self._fresh_lab() as lab:
            base = self._start(processes.baseline(netns=lab.ns(HOST)))
            self._controllers(mesh, [base.port])
            wait_until(lambda: any("CONTROLLER" in f for f in lab.ovs.dump_flows(mesh)), 10,
                       "the baseline's table-miss flow")
            mcp = self.host.mesh.containers[0]
            lab.exec(mcp.id, "ping", "-c1", "-W0.3", str(mcp.gateway))  # its MAC, learned
            results["baseline"] = self._phase(mcp.mac, lab.ns(mcp.id), base)
        return results
