"""`socketnet lab ...`: the seed's whole world (topology.labs.world) as a persistent lab.

A click group, registered by the `socketnet` command (`main.add_command(lab)`):

    socketnet lab up     [-c FILE] [--name NAME] [--state-dir DIR]
    socketnet lab status [--name NAME] [--state-dir DIR] [--json]
    socketnet lab down   [--name NAME] [--state-dir DIR]

`up` builds the world around the config's host (default: the seed's), starts
socketnet for it and for node2 as detached child processes, and returns once both
controllers have every bridge in sync. Everything it made is recorded in
`DIR/NAME.json` (default /run/socketnet/labs): namespaces, PIDs (Open vSwitch,
wireguard-go, relays, servers, controllers), the Open vSwitch directories, and each
controller's OpenFlow, REST and metrics addresses, its REST token's file and its
ovs-vswitchd control socket; logs are in `DIR/NAME/`. `socketnet --lab NAME
COMMAND` points the API commands at the lab's host controller. `status` says, part by part, whether it is alive (exit 0:
all of it, 3: something is gone, 1: no such lab). `down` removes exactly what the
record names, and the record. Two labs with different names run side by side.

Needs root, Open vSwitch, wireguard-go, wireguard-tools, nftables and socat.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from topology.config import SEED_CONFIG

STATE_ROOT = "/run/socketnet/labs"  # topology.labs.record.STATE_ROOT (not imported: pyroute2)

EXIT_FAILED = 1
EXIT_DEGRADED = 3
DEFAULT_NAME = "lab"


def lab_api(name: str, state_dir: str = None) -> tuple:
    """(REST address, token) of lab `name`'s host controller, from its record;
    exits 2 naming the lab when there is none."""
    path = Path(state_dir or STATE_ROOT) / f"{name}.json"
    try:
        record = json.loads(path.read_text())
        ctl = record["controllers"]["host"]
        with open(ctl["token_file"]) as f:
            token = f.readline().strip()
        return ctl["rest"], token
    except (OSError, KeyError, TypeError, ValueError) as exc:
        click.echo(f"error: --lab {name}: no usable lab record at {path} ({exc})", err=True)
        sys.exit(2)


def _state_dir_option(f):
    return click.option("--state-dir", default=STATE_ROOT, show_default=True,
                        type=click.Path(file_okay=False),
                        help="Where lab records live.")(f)


def _name_option(f):
    return click.option("--name", default=DEFAULT_NAME, show_default=True,
                        help="The lab's name: its namespaces are sn-NAME-*.")(f)


@click.group("lab")
def lab():
    """The seed's whole world in network namespaces: up, status, down."""


@lab.command("up")
@click.option("-c", "--config", "file", default=SEED_CONFIG, show_default="the seed's host",
              type=click.Path(exists=True, dir_okay=False), help="Config file (YAML or JSON).")
@_name_option
@_state_dir_option
def up(file, name, state_dir):
    """Build the world, attach socketnet, return when every pipeline is in sync."""
    from topology.config import ConfigError
    from topology.labs.world import World, WorldError

    try:
        world = World(file, name, state_root=state_dir)
        world.up()
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except (WorldError, TimeoutError, OSError, RuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    for node, finding in world.findings:
        if finding.level == "error":
            click.echo(f"{node}: {finding}", err=True)
    record = world.record
    click.echo(f"lab {name!r} up in {world.up_seconds:.1f}s (record {world.record_path})")
    for label, ctl in record["controllers"].items():
        click.echo(f"  controller {label}: OpenFlow {ctl['target']}, pid {ctl['pid']}, "
                   f"log {ctl['log']}")
        click.echo(f"    REST {ctl['rest']} (Authorization: Bearer <the first line of "
                   f"{ctl['token_file']}>), metrics {ctl['metrics']}")
    click.echo(f"  API commands: socketnet --lab {name}"
               + ("" if state_dir == STATE_ROOT else f" --lab-state-dir {state_dir}")
               + " switches|flows|cache|trace|audit ... (the host's controller)")
    for ovs in record["ovs"]:
        click.echo(f"  {ovs['node']} Open vSwitch: ovs-vsctl --db={ovs['db']} show")
    click.echo(f"  namespaces: {' '.join(record['namespaces'])}")
    click.echo("Try:")
    click.echo(f"  echo hi | ip netns exec {world.droplet} socat - "
               f"TCP:{world.host.xray_client.container.address}:"
               f"{world.host.xray_client.container.services[0].port}")
    click.echo(f"  socketnet lab status --name {name}; socketnet lab down --name {name}")


@lab.command("status")
@click.option("-c", "--config", "file", default=None, type=click.Path(dir_okay=False),
              help="Accepted for symmetry with up; the record says what runs.")
@_name_option
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status_command(file, name, state_dir, as_json):
    """What the lab runs, and whether each part is alive."""
    from topology.labs.record import load_record, status

    record = load_record(name, state_dir)
    if record is None:
        click.echo(f"no lab named {name!r} in {state_dir}", err=True)
        sys.exit(EXIT_FAILED)
    parts = status(record)
    if as_json:
        click.echo(json.dumps({"name": name, "config": record["config"],
                               "controllers": record["controllers"],
                               "parts": [p.__dict__ for p in parts]}, indent=2))
    else:
        click.echo(f"lab {name!r} ({record['config']})")
        for label, ctl in record["controllers"].items():
            click.echo(f"  controller {label}: OpenFlow {ctl['target']}, REST {ctl['rest']} "
                       f"(token {ctl['token_file']}), metrics {ctl['metrics']}")
        for p in parts:
            mark = "up  " if p.alive else "GONE"
            click.echo(f"  {mark} {p.kind:<10} {p.name}{'  ' + p.detail if p.detail else ''}")
        dead = [p for p in parts if not p.alive]
        click.echo(f"{len(parts) - len(dead)} of {len(parts)} parts alive")
    if any(not p.alive for p in parts):
        sys.exit(EXIT_DEGRADED)


@lab.command("down")
@click.option("-c", "--config", "file", default=None, type=click.Path(dir_okay=False),
              help="Accepted for symmetry with up; the record says what to remove.")
@_name_option
@_state_dir_option
def down(file, name, state_dir):
    """Remove exactly what `up` recorded."""
    from topology.labs.record import destroy, load_record

    record = load_record(name, state_dir)
    if record is None:
        click.echo(f"no lab named {name!r} in {state_dir}: nothing to remove")
        return
    removed = destroy(record)
    for line in removed:
        click.echo(f"  removed {line}")
    click.echo(f"lab {name!r} removed")
