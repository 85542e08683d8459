"""The main job on its embedded default: the seed's lab with the controller attached.

`socketnet demo` builds the config's host in network namespaces (topology.lab),
starts `socketnet run` as a child process, attaches both bridges, then runs a
short scripted show of real traffic between the containers. For each probe it
prints whether it got through and which of socketnet's flows carried or dropped
it, from the switch's own counters (bridge, table, purpose). The lab stays up
for exploration until Ctrl-C, then everything is removed.
"""
from __future__ import annotations

import collections
import re
import signal
import threading
from dataclasses import dataclass

import click

from controller.pipeline import TABLE_BY_ID, purpose_of
from controller.process import ControllerProcess
from topology.lab import Lab
from topology.model import Host


@dataclass(frozen=True)
class Probe:
    rule: str        # the isolation rule it shows (W.. must pass, N.. must not)
    what: str
    source: str      # container id
    command: tuple
    expect_through: bool


def probes(host: Host) -> list:
    """What the show tries, from the host's own containers."""
    managed = host.mesh.containers
    xray = host.xray_client.container
    others = [c for c in host.privacy.containers if c is not xray]
    ping = ("ping", "-c", "2", "-W", "1", "-i", "0.2")
    out = []
    if len(managed) >= 2:
        a, b = managed[0], managed[1]
        out.append(Probe("W5", f"{a.name} pings {b.name}", a.id, ping + (str(b.address),), True))
    if managed:
        out.append(Probe("N1", f"{managed[0].name} pings the xray client", managed[0].id,
                         ping + (str(xray.address),), False))
    for c in others[:1]:
        if managed:
            out.append(Probe("N5", f"{c.name} pings {managed[0].name}", c.id,
                             ping + (str(managed[0].address),), False))
        gw = str(c.gateway)
        out.append(Probe("W6", f"{c.name} resolves its gateway {gw} by ARP", c.id,
                         ("sh", "-c", f"ping -c1 -W1 {gw} >/dev/null; "
                                      f"ip neigh show {gw} | grep -q lladdr"), True))
    return out


def counters(lab: Lab) -> collections.Counter:
    """Packets per (bridge, table name, purpose), from the switch."""
    total = collections.Counter()
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


def run_demo(config: str, name: str) -> None:
    from topology.config import load_host

    host = load_host(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Lab(host, name) as lab, ControllerProcess(config) as ctl:
        lab.attach(ctl.target)
        synced = ctl.wait_synced([b.name for b in host.bridges])
        click.echo(f"lab {name!r} up; controller on {ctl.target}")
        for bridge, counts in synced.items():
            click.echo(f"  {bridge}: pipeline installed ({counts['add']} flows)")
        click.echo("")
        for probe in probes(host):
            before = counters(lab)
            result = lab.exec(probe.source, *probe.command, timeout=10)
            through = result.returncode == 0
            delta = counters(lab) - before
            verdict = "got through" if through else "did not get through"
            ok = "as promised" if through == probe.expect_through else "CHECK"
            click.echo(f"{probe.rule}  {probe.what}: {verdict} ({ok})")
            for (bridge, table, purpose), n in sorted(delta.items()):
                click.echo(f"      {bridge:<6} table {table:<8} {purpose:<14} {n} packets")
        click.echo("\nThe lab stays up. Try, for example:")
        click.echo(f"  ip netns exec {lab.ns(host.mesh.containers[0].id)} ping "
                   f"{host.mesh.containers[-1].address}")
        click.echo(f"  ovs-ofctl -O OpenFlow13 --names dump-flows {lab.ovs.mgmt_sock('mesh')}")
        click.echo("Ctrl-C removes it.")
        while not stop.wait(0.5):
            pass
        click.echo("removing the lab")
