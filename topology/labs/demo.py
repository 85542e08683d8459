"""The main job on its embedded default: the seed's whole world with socketnet attached.

`socketnet demo` brings up the world around the config's host
(topology.labs.world: the host's bridges and containers, host apply, the droplet,
node2 with its own socketnet and vector DB, WARP and the VPS, all in network
namespaces), with socketnet running for both nodes, then runs a short scripted
show of privacy and management traffic. For each probe it prints whether it got through (and whether
that is what the isolation promise says), what the far end answered, and then,
from an `ofproto/trace` of the probe's own first packet on each node it crosses
(the controllers' `POST /v1/trace`), the tables and purposes of the flows that
carried or dropped it on each bridge with the reason, the exit it took, and for
Netmaker ingress the classifier's decision; and where the VPS saw it come from
(its own log of connections). Only the probe's packet is described: counters
would also count the keepalives, ARP and whatever else crossed meanwhile. The
world stays up for exploration (`socketnet lab status --name NAME` shows it) until
Ctrl-C, then everything is removed.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

import click

from controller.api.client import ApiClientError
from topology.model import Role


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
    from topology.labs.nodes import VECTOR_DB_PORT
    from topology.labs.world import GATEWAY_PORT, VPS, VPS_PORT
    host = world.host
    xray = host.xray_client.container
    xray_port = xray.services[0].port
    managed = host.mesh.containers
    others = [c for c in host.privacy_bridge.containers if c is not xray]
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


def _api(world, label: str):
    from controller.api.client import ApiClient
    ctl = world.controllers[label]
    with open(ctl.token_file) as f:
        return ApiClient(ctl.rest_url, f.readline().strip(), timeout=30)


def _port_of(host, container_id: str):
    return next(((b, p) for b in host.bridges for p in b.ports
                 if p.container is not None and p.container.id == container_id), (None, None))


def _netmaker_port(host):
    return next(p for p in host.mesh.ports if p.role is Role.NETMAKER_UPLINK)


def probe_paths(world, probe: Probe) -> list:
    """[(node label, `POST /v1/trace` answer)] for the probe's first packet, on
    the node it starts on and, when it leaves that node over Netmaker for the
    other node, on that one too (entering by its Netmaker uplink). A trace follows
    only this packet: what else crosses the bridges meanwhile is not counted."""
    nodes = {"host": world.host}
    if world.node2 is not None:
        nodes["node2"] = world.node2_host
    body = {"proto": "tcp" if probe.port else "icmp", "dst": probe.address,
            **({"dport": probe.port} if probe.port else {})}
    if probe.source == "droplet":
        label, port = "host", _netmaker_port(world.host)
        body.update(bridge=world.host.mesh.name, in_port=port.name,
                    src=world.nm_address["droplet"])
    else:
        label, cid = (("node2", probe.source.split(":", 1)[1]) if probe.source.startswith("node2:")
                      else ("host", probe.source))
        bridge, port = _port_of(nodes[label], cid)
        body.update(bridge=bridge.name, in_port=port.name, src=str(port.container.address))
    out = []
    while label is not None:
        doc = _api(world, label).call("POST", "/v1/trace", body=body)
        out.append((label, doc))
        uplink = _netmaker_port(nodes[label]).name
        onward = [e for e in doc.get("exits", []) if e["port"] == uplink]
        other = next((n for n in nodes if n != label and any(
            p.container is not None and str(p.container.address) == probe.address
            for b in nodes[n].bridges for p in b.ports)), None)
        if not onward or other is None or len(out) > 1:
            break
        label, host = other, nodes[other]
        body = {**body, "bridge": host.mesh.name, "in_port": _netmaker_port(host).name}
        body.pop("eth_src", None)
        body.pop("eth_dst", None)
    return out


def _exit_name(world, label: str, port: str) -> str:
    host = world.host if label == "host" else world.node2_host
    for b in host.bridges:
        for p in b.ports:
            if p.name == port:
                if p.role is Role.NETMAKER_UPLINK:
                    return f"{port} (Netmaker)"
                if p.role is Role.WARP_UPLINK:
                    return f"{port} (WARP)"
                if p.container is not None:
                    return f"{port} ({p.container.name})"
    return port


def path_lines(world, paths: list) -> list:
    """The lines saying where the probe's packet went, node by node and bridge by
    bridge: the tables and purposes of the flows that took it, each bridge's
    verdict, the exit; for Netmaker ingress with no decision yet, the
    classifier's decision and the path that class then takes."""
    lines = []
    for label, doc in paths:
        for hop in doc["hops"]:
            steps = " > ".join(f"{t['name']}:{t['purpose'] or '?'}" for t in hop["tables"])
            lines.append(f"      {label:<5} {hop['bridge']:<6} {steps}")
            lines.append(f"{'':<19}=> {hop['why']}")
        decision = doc.get("decision")
        if doc.get("controller") and decision:
            lines.append(f"      {label:<5} undecided: the classifier decides {decision['class']}"
                         f" (rule {decision['rule']}), then:")
            lines += path_lines(world, [(label, doc["decided"])])
            continue
        exits = [_exit_name(world, label, e["port"]) for e in doc["exits"]]
        if exits:
            lines.append(f"      {label:<5} exit: {', '.join(exits)}")
    return lines


def run_probe(world, probe: Probe) -> tuple:
    if probe.port:
        return world.talk(probe.source, probe.address, probe.port, f"demo: {probe.rule}",
                          timeout=2)
    return world.pings(probe.source, probe.address), ""


def run_demo(config: str, name: str) -> None:
    from topology.labs.world import World

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
        from topology.labs.world import WARP_EXIT
        for probe in probes(world):
            seen = len(world.vps_connections())
            through, answer = run_probe(world, probe)
            verdict = "got through" if through else "did not get through"
            ok = "as promised" if through == probe.expect_through else "CHECK"
            click.echo(f"{probe.rule:<6} {probe.what}: {verdict} ({ok})")
            if answer:
                click.echo(f"      answer: {answer.splitlines()[0]}")
            try:
                for line in path_lines(world, probe_paths(world, probe)):
                    click.echo(line)
            except ApiClientError as exc:
                click.echo(f"      (no trace: {exc})")
            for source, address in world.vps_connections()[seen:]:
                how = ("from the WARP exit: not over Netmaker" if source == WARP_EXIT
                       else "over Netmaker")
                click.echo(f"      the VPS saw {source} at {address} ({how})")
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
