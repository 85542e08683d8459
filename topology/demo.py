"""The main job on its embedded default: the seed's whole world with socketnet attached.

`socketnet demo` brings up the world around the config's host (topology.world: the
host's bridges and containers, host apply, the droplet, node2 with its own
socketnet and vector DB, WARP and the VPS, all in network namespaces), with
socketnet running for both nodes, then runs a short scripted show of privacy and
management traffic. For each probe it prints whether it got through (and whether
that is what the isolation promise says), what the far end answered, which of
socketnet's flows carried or dropped it (bridge, table, purpose, from the
switches' counters), which ports it left each bridge by, which exit it took (the
WireGuard uplinks' per-peer counters) and where the VPS saw it come from. The
world stays up for exploration (`socketnet lab status --name NAME` shows it) until
Ctrl-C, then everything is removed.
"""
from __future__ import annotations

import collections
import re
import signal
import threading
from dataclasses import dataclass

import click

from controller.pipeline import TABLE_BY_ID, purpose_of
from topology.lab import Lab
from topology.ovs import wait_until


@dataclass(frozen=True)
class Probe:
    rule: str        # the isolation rule it shows (W.. must pass, N.. must not)
    what: str
    source: str      # where it starts: a container id, "droplet", "node2:<id>" (World.ns)
    address: str
    port: int = 0    # 0: a ping, else a TCP session
    expect_through: bool = True


def probes(world) -> list:
    """What the show tries, from the world's own containers and addresses."""
    from topology.world import GATEWAY_PORT, VPS, VPS_PORT, VECTOR_DB_PORT
    host = world.host
    xray = host.xray_client.container
    xray_port = xray.services[0].port
    managed = host.mesh.containers
    others = [c for c in host.privacy.containers if c is not xray]
    mcp = managed[0]
    out = [Probe("W1-W3", "the user on the droplet opens a session through the xray client "
                 "to the VPS", "droplet", str(xray.address), xray_port)]
    if others:
        out.append(Probe("W4", f"{others[0].name} reaches the VPS", others[0].id, VPS,
                         VPS_PORT))
    if world.node2 is not None:
        vdb = world.node2_host.mesh.containers[0]
        out.append(Probe("W5", f"{mcp.name} queries {vdb.name} on node2", mcp.id,
                         str(vdb.address), VECTOR_DB_PORT))
        service = mcp.services[0].port if mcp.services else 0
        out.append(Probe("W5", f"node2's {vdb.name} calls {mcp.name} back", f"node2:{vdb.id}",
                         str(mcp.address), service))
    out.append(Probe("W5", f"{managed[-1].name} reaches the VPS over Netmaker", managed[-1].id,
                     world.nm_address["vps"], VPS_PORT))
    out.append(Probe("N1", f"{mcp.name} tries the xray client", mcp.id, str(xray.address),
                     xray_port, False))
    out.append(Probe("N1", f"{mcp.name} tries the VPS on the internet", mcp.id, VPS, VPS_PORT,
                     False))
    out.append(Probe("N3", "the xray client tries the droplet directly", xray.id,
                     world.nm_address["droplet"], 0, False))
    if others:
        out.append(Probe("N4", f"the droplet tries {others[0].name}", "droplet",
                         str(others[0].address), GATEWAY_PORT, False))
        out.append(Probe("N5", f"{others[0].name} tries {mcp.name}", others[0].id,
                         str(mcp.address), mcp.services[0].port if mcp.services else 0, False))
    return out


def counters(lab: Lab) -> collections.Counter:
    """Packets per (bridge, table name, purpose), from the switch."""
    total = collections.Counter()
    lab.ovs.unixctl("revalidator/wait")  # flow statistics lag the datapath: catch up
    for bridge in lab.host.bridges:
        for line in lab.ovs.dump_flows(bridge.name, names=True, stats=True):
            cookie = re.search(r"cookie=(0x[0-9a-f]+)", line)
            table = re.search(r"table=(\d+)", line)
            packets = re.search(r"n_packets=(\d+)", line)
            purpose = purpose_of(int(cookie.group(1), 16)) if cookie else None
            table_name = TABLE_BY_ID[int(table.group(1)) if table else 0].name
            if purpose and packets:
                total[(bridge.name, table_name, purpose.label)] += int(packets.group(1))
    return total


class Snapshot:
    """Everything the show reports a probe by: flows, ports, exits, the VPS's log."""

    def __init__(self, world):
        self.flows = {label: counters(lab) for label, lab in
                      (("host", world.lab), ("node2", world.node2)) if lab is not None}
        self.ports = world.port_counters()
        self.exits = world.exit_counters()
        self.vps = len(world.vps_connections())

    def report(self, world) -> tuple:
        """(the lines saying where the traffic since this snapshot went, the settled
        snapshot they were read from: the next probe's starting point)."""
        now = settle(world)
        lines = []
        for label, flows in now.flows.items():
            for (bridge, table, purpose), n in sorted((flows - self.flows[label]).items()):
                lines.append(f"      {label:<5} {bridge:<6} table {table:<8} {purpose:<14} "
                             f"{n} packets")
        out = collections.defaultdict(list)
        for (label, bridge, port), (_, tx) in sorted(now.ports.items()):
            sent = tx - self.ports.get((label, bridge, port), (0, 0))[1]
            if sent:
                out[(label, bridge)].append(f"{port} {sent}")
        for (label, bridge), ports in out.items():
            lines.append(f"      {label:<5} {bridge:<6} left by  {', '.join(ports)}")
        exits = [f"{k} {v - self.exits.get(k, 0)} packets" for k, v in sorted(now.exits.items())
                 if v - self.exits.get(k, 0)]
        lines.append(f"      exit: {'; '.join(exits) if exits else 'none'}")
        from topology.world import WARP_EXIT
        for source, address in world.vps_connections()[self.vps:]:
            how = ("from the WARP exit: not over Netmaker" if source == WARP_EXIT
                   else "over Netmaker")
            lines.append(f"      the VPS saw {source} at {address} ({how})")
        return lines, now


def settle(world, timeout: float = 3.0) -> Snapshot:
    """A snapshot once the previous probe's last packets (FINs, ACKs, ARP) are
    through: two in a row with the same flow counters, or `timeout`."""
    last = [Snapshot(world)]

    def quiet():
        now = Snapshot(world)
        same = now.flows == last[0].flows
        last[0] = now
        return same
    try:
        wait_until(quiet, timeout, "the switches to go quiet", interval=0.3)
    except TimeoutError:
        pass  # busy: report what there is
    return last[0]


def run_probe(world, probe: Probe) -> tuple:
    if probe.port:
        return world.talk(probe.source, probe.address, probe.port, f"demo: {probe.rule}",
                          timeout=2)
    return world.pings(probe.source, probe.address), ""


def run_demo(config: str, name: str) -> None:
    from topology.world import World

    stop = threading.Event()
    world = World(config, name)
    click.echo(f"building world {name!r}: the host, node2, the droplet, WARP and the VPS ...")
    try:
        world.up()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        click.echo(f"world {name!r} up in {world.up_seconds:.1f}s")
        for label, ctl in world.controllers.items():
            click.echo(f"  socketnet for {label} on {ctl.target} (log {ctl.log})")
        click.echo("")
        before = settle(world)
        for probe in probes(world):
            through, answer = run_probe(world, probe)
            verdict = "got through" if through else "did not get through"
            ok = "as promised" if through == probe.expect_through else "CHECK"
            click.echo(f"{probe.rule:<6} {probe.what}: {verdict} ({ok})")
            if answer:
                click.echo(f"      answer: {answer.splitlines()[0]}")
            lines, before = before.report(world)
            for line in lines:
                click.echo(line)
        xray = world.host.xray_client.container
        click.echo(f"\nThe world stays up (socketnet lab status --name {name}). Try, for example:")
        click.echo(f"  echo hi | ip netns exec {world.droplet} socat - "
                   f"TCP:{xray.address}:{xray.services[0].port}")
        click.echo(f"  ip netns exec {world.lab.ns(world.host.mesh.containers[0].id)} ping "
                   f"{world.host.mesh.containers[-1].address}")
        click.echo(f"  ovs-ofctl -O OpenFlow13 --names dump-flows "
                   f"{world.lab.ovs.mgmt_sock(world.host.mesh.name)}")
        click.echo("Ctrl-C removes it.")
        while not stop.wait(0.5):
            pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    finally:
        click.echo("removing the world")
        world.down()
