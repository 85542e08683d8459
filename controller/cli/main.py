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

import click

from controller.cli.api_commands import COMMANDS as API_COMMANDS
from controller.cli.api_commands import EXIT_INVALID, load_or_exit
from topology import config as configmod
from topology.config import SEED_CONFIG
from topology.host.cli import host as host_group
from topology.labs.cli import lab as lab_group
from topology.model import host_document


def _listen(value: str, option: str) -> tuple:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint=option)
    return host.strip("[]"), int(port)


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("socketnet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="socketnet",
                      message="%(prog)s %(version)s")
@click.option("--lab", metavar="NAME", default=None,
              help="Point the API commands at this lab's host controller (its REST "
                   "address and token, from `socketnet lab up`'s record).")
@click.option("--lab-state-dir", metavar="DIR", default=None, hidden=False,
              help="Where lab records live [default: /run/socketnet/labs].")
def main(lab, lab_state_dir):
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
               f"{len(result.host.privacy_bridge.ports)} on {result.host.privacy_bridge.name})")


@main.command()
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False),
              help="Config file (YAML or JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def topology(file, as_json):
    """Print each bridge and its ports with name, role and kind."""
    host = load_or_exit(file)
    doc = host_document(host)
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
    host = load_or_exit(file)
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
    code = run_controller(host, listen[0], listen[1], tls, config_path=file)
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
    from topology.labs.demo import run_demo

    load_or_exit(file)  # refuse a bad config before building anything
    run_demo(file, name)


main.add_command(host_group)
for _command in API_COMMANDS:  # `flows` and `classify` keep -c FILE (offline), add --api
    main.add_command(_command)
main.add_command(lab_group)


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the shell completion script: eval "$(socketnet completion bash)"."""
    from click.shell_completion import get_completion_class
    cls = get_completion_class(shell)
    click.echo(cls(main, {}, "socketnet", "_SOCKETNET_COMPLETE").source())
