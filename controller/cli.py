"""The `socketnet` command line.

    socketnet check FILE                 validate a config; exit 0, or 2 with every error
    socketnet topology -c FILE [--json]  what socketnet understood: bridges, ports, roles
    socketnet flows -c FILE [--bridge B] the flows each bridge would get (all ports present)
    socketnet classify -c FILE --src A --dst B --proto P [--sport N] [--dport N] [--json]
                                         how one Netmaker-ingress packet would be classified
    socketnet run -c FILE                the controller

Importing this module does not import os-ken: `run` chooses the hub first.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import click

from topology import config as configmod
from topology.model import Host, TrafficClass

EXIT_INVALID = 2
# The seed's host, shipped with the package (examples/seed.yaml points here).
SEED_CONFIG = str(Path(__file__).resolve().parents[1] / "topology" / "seed.yaml")


def _load(path: str) -> Host:
    try:
        return configmod.load_host(path)
    except configmod.ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)


def _listen(value: str, option: str) -> tuple:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint=option)
    return host.strip("[]"), int(port)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """socketnet: the OpenFlow 1.3 controller of a host's two socket networks,
    mesh (Netmaker, management) and vmbr0 (privacy, out through WARP only)."""


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print errors only, no warnings.")
def check(file, quiet):
    """Validate the config FILE (YAML or JSON).

    Exits 0 when it is valid, 2 with one line per error (file, field path,
    offending value). Warnings say what socketnet does instead of the seed's
    literal flows."""
    result = configmod.check_file(file)
    for issue in result.errors:
        click.echo(f"error: {issue}", err=True)
    if not quiet:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
    if result.errors:
        sys.exit(EXIT_INVALID)
    click.echo(f"{file}: valid ({len(result.host.mesh.ports)} ports on {result.host.mesh.name}, "
               f"{len(result.host.privacy.ports)} on {result.host.privacy.name})")


def _topology_doc(host: Host) -> dict:
    def port(p):
        doc = {"name": p.name, "role": str(p.role), "kind": str(p.kind)}
        if p.interface and p.interface != p.name:
            doc["interface"] = p.interface
        if p.address is not None:
            doc["address"] = str(p.address)
        if p.peer:
            doc["peer"] = p.peer
        if p.container is not None:
            c = p.container
            doc["container"] = {"id": c.id, "name": c.name, "address": str(c.network),
                                "mac": c.mac,
                                "services": [f"{s.protocol}/{s.port} ({s.name})"
                                             for s in c.services]}
        return doc

    return {
        "source": host.source,
        "bridges": [{"name": b.name,
                     "network": "mesh" if b is host.mesh else "privacy",
                     "ports": [port(p) for p in b.ports]} for b in host.bridges],
        "netmaker_ranges": [str(n) for n in host.netmaker_ranges],
        "nodes": [{"name": n.name, "subnets": [str(s) for s in n.subnets]} for n in host.nodes],
        "ignored": [{"name": name, "why": why} for name, why in host.ignored],
    }


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False),
              help="Config file (YAML or JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def topology(file, as_json):
    """Print each bridge and its ports with name, role and kind."""
    host = _load(file)
    doc = _topology_doc(host)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for bridge in doc["bridges"]:
        click.echo(f"{bridge['name']} ({bridge['network']} network)")
        for p in bridge["ports"]:
            extra = []
            if "interface" in p:
                extra.append(f"adapter for {p['interface']}")
            if "address" in p:
                extra.append(p["address"])
            if "peer" in p:
                extra.append(f"peer {p['peer']}")
            if "container" in p:
                c = p["container"]
                extra.append(f"{c['name']} {c['address']} {c['mac']}")
                extra.extend(c["services"])
            click.echo(f"  {p['name']:<12} {p['role']:<16} {p['kind']:<3}  {'  '.join(extra)}")
    for item in doc["ignored"]:
        click.echo(f"not managed: {item['name']}: {item['why']}")


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False))
@click.option("--bridge", help="Only this bridge.")
def flows(file, bridge):
    """Print the flows socketnet would install, as ovs-ofctl lines.

    Port numbers are assigned in config order from 1, as `socketnet lab` does;
    on a real switch they come from the switch."""
    from controller.compiler import SwitchPort, compile_bridge

    host = _load(file)
    for b in host.bridges:
        if bridge and b.name != bridge:
            continue
        live = {p.name: SwitchPort(i, p.name, p.mac or f"02:ff:00:00:00:{i:02x}")
                for i, p in enumerate(b.ports, start=1)}
        names = {sp.number: sp.name for sp in live.values()}
        click.echo(f"# {b.name}")
        for f in compile_bridge(host, b.name, live):
            click.echo(f.ofctl(names))


_CLASS_REACH = {
    TrafficClass.PRIVACY: "privacy goes only from a Netmaker peer to a service of the xray "
                          "client (W1)",
    TrafficClass.MANAGEMENT: "management goes only to a management container (W5)",
}


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False),
              help="Config file (YAML or JSON).")
@click.option("--src", required=True, metavar="ADDRESS", help="Source IPv4 address.")
@click.option("--dst", required=True, metavar="ADDRESS", help="Destination IPv4 address.")
@click.option("--proto", required=True, type=click.Choice(["tcp", "udp", "icmp"]))
@click.option("--sport", type=click.IntRange(0, 65535),
              help="Source port (tcp, udp) [default: 0]; rules may match on it.")
@click.option("--dport", type=click.IntRange(0, 65535),
              help="Destination port (required with tcp and udp).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def classify(file, src, dst, proto, sport, dport, as_json):
    """Say how socketnet classifies a Netmaker-ingress packet it has no flow for:
    the class, the rule that decided, and the table-1 flow that caches it."""
    from controller.classifier import (DEFAULT, UNROUTABLE, Classifier, Flow5, address_int,
                                       cache_match, decision_flow)

    for value, option in ((src, "--src"), (dst, "--dst")):
        try:
            address_int(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IPv4 address", param_hint=option)
    if proto == "icmp":
        for value, option in ((sport, "--sport"), (dport, "--dport")):
            if value is not None:
                raise click.BadParameter("icmp has no ports", param_hint=option)
    elif dport is None:
        raise click.BadParameter(f"required with --proto {proto}", param_hint="--dport")

    host = _load(file)
    classifier = Classifier(host)
    packet = Flow5.of(src, dst, proto, sport or 0, dport or 0)
    decision = classifier.decide(packet)
    cached = decision_flow(packet, decision, host.classification)
    why = ""
    if decision.rule == UNROUTABLE:
        wanted = {r.name: r.cls for r in classifier.rules}.get(decision.overruled,
                                                              classifier.default.cls)
        which = "the default" if decision.overruled == DEFAULT else f"rule {decision.overruled}"
        why = f"{which} says {wanted}, but {_CLASS_REACH[wanted]}"
    if as_json:
        click.echo(json.dumps({
            "packet": str(packet), "class": str(decision.cls), "rule": decision.rule,
            "overruled": decision.overruled or None, "why": why or None,
            "match": cache_match(packet, host.classification.granularity),
            "flow": cached.ofctl()}, indent=2))
        return
    click.echo(f"{packet}: {decision.cls}")
    click.echo(f"  decided by: {decision.rule}")
    if why:
        click.echo(f"  because:    {why}")
    click.echo(f"  cached as:  {cached.ofctl()}")


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False),
              help="Config file (YAML or JSON).")
@click.option("--ofp-listen", default=None, metavar="HOST:PORT",
              help="Where switches connect [default: the config's socketnet.openflow.listen, "
                   "else 127.0.0.1:6653].")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="Private key: serve OpenFlow over TLS (ssl: targets).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="Certificate for --tls-key.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA certificate(s): switches must present a certificate they signed.")
@click.option("--metrics-listen", default=None, metavar="HOST:PORT",
              help="Where Prometheus scrapes /metrics [default: socketnet.metrics.listen, "
                   "else 127.0.0.1:9640].")
@click.option("--rest-listen", default=None, metavar="HOST:PORT",
              help="The flow-debug REST API [default: socketnet.rest.listen, "
                   "else 127.0.0.1:9641].")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def run(file, ofp_listen, tls_key, tls_cert, tls_ca, metrics_listen, rest_listen, log_level):
    """Run the controller. Attach bridges with

        ovs-vsctl set-controller mesh tcp:127.0.0.1:6653

    and the same for vmbr0; socketnet tells them apart by name."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    host = _load(file)
    if ofp_listen:
        listen = _listen(ofp_listen, "--ofp-listen")
    else:
        listen = (host.settings.ofp_listen_host, host.settings.ofp_listen_port)
    overrides = {}
    if metrics_listen:
        overrides["metrics_listen_host"], overrides["metrics_listen_port"] = \
            _listen(metrics_listen, "--metrics-listen")
    if rest_listen:
        overrides["rest_listen_host"], overrides["rest_listen_port"] = \
            _listen(rest_listen, "--rest-listen")
    if overrides:
        host = dataclasses.replace(host, settings=dataclasses.replace(host.settings, **overrides))
    if bool(tls_key) != bool(tls_cert) or (tls_ca and not tls_key):
        raise click.BadParameter("TLS needs --tls-key and --tls-cert (and optionally --tls-ca)",
                                 param_hint="--tls-key/--tls-cert")
    from controller.runner import TLS, run as run_controller

    tls = TLS(tls_key, tls_cert, tls_ca) if tls_key else None
    code = run_controller(host, listen[0], listen[1], tls)
    # The apps are closed and the switches' connections with them. Skip the
    # interpreter's teardown, which under eventlet idles for about a second.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@main.command()
@click.option("-c", "--config", "file", default=SEED_CONFIG, show_default="the seed's host",
              type=click.Path(exists=True, dir_okay=False), help="Config file (YAML or JSON).")
@click.option("--name", default="demo", show_default=True,
              help="Lab name: its namespaces are called sn-NAME-*; two labs need two names.")
def demo(file, name):
    """The main job: the config's host as a lab in network namespaces, with
    socketnet attached, a short show of what gets through and what is dropped,
    then the lab stays up until Ctrl-C. Needs root and Open vSwitch."""
    from topology.demo import run_demo

    _load(file)  # refuse a bad config before building anything
    run_demo(file, name)


from topology.host_cli import host as host_group  # noqa: E402  (a group of its own)

main.add_command(host_group)
