"""`socketnet host ...`: make the machine itself match the config.

A click group, registered by the `socketnet` command (`main.add_command(host)`):

    socketnet host apply -c FILE [--dry-run] [--datapath-type system|netdev]
                         [--warp-address A] [--controller TARGET] [--from-scratch]
                         [--netns NAME] [--ovs-db DB]

reads the host (`topology.host_apply.read_state`), plans (`topology.host.plan`)
and carries the plan out. `--dry-run` prints the plan as a shell script (each
command exactly as it would run, its reason above it) and changes nothing.
Findings (an l3 interface enslaved on a bridge, a missing uplink, ...) go to
stderr with their fix. Exit: 0 done (or nothing to do), 1 a command failed,
2 invalid config or a finding of level error.

This runs as its own command, never inside the controller process: pyroute2 and
eventlet's monkey-patching do not mix (measured).
"""
from __future__ import annotations

import sys

import click

from topology import config as configmod
from topology.host import DATAPATH_TYPES, DEFAULT_WARP_ADDRESS, HostState, plan

EXIT_FAILED = 1
EXIT_INVALID = 2


@click.group("host")
def host():
    """Make this host's bridges, adapters, routing and filter match the config."""


@host.command("apply")
@click.option("-c", "--config", "file", required=True, type=click.Path(dir_okay=False),
              help="The config file (YAML or JSON).")
@click.option("--dry-run", is_flag=True,
              help="Print the commands that would run, as a shell script; change nothing.")
@click.option("--datapath-type", type=click.Choice(DATAPATH_TYPES), default="system",
              show_default=True,
              help="The bridges' datapath: system (kernel module) or netdev (userspace).")
@click.option("--warp-address", default=DEFAULT_WARP_ADDRESS, show_default=True,
              metavar="ADDRESS", help="What traffic leaving through WARP is SNATed to.")
@click.option("--controller", default=None, metavar="TARGET",
              help="The bridges' OpenFlow target [default: tcp: and socketnet.openflow.listen].")
@click.option("--from-scratch", is_flag=True,
              help="With --dry-run: plan for a host that has none of it, reading nothing.")
@click.option("--netns", default=None, metavar="NAME",
              help="Act inside this network namespace instead of the current one.")
@click.option("--ovs-db", default=None, metavar="DB",
              help="ovs-vsctl's --db (e.g. unix:/run/openvswitch/db.sock) [default: its own].")
def apply_command(file, dry_run, datapath_type, warp_address, controller, from_scratch,
                  netns, ovs_db):
    """Make the host match the config: bridges (fail_mode=secure, OpenFlow 1.3,
    out-of-band controller), the inter-bridge veth, the adapters, per-interface
    policy routing, the nftables tables and forwarding. A second run changes nothing."""
    if from_scratch and not dry_run:
        raise click.UsageError("--from-scratch only with --dry-run")
    try:
        config = configmod.load_host(file)
    except configmod.ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)

    system = None
    if from_scratch:
        state = HostState()
    else:
        from topology.host_apply import HostApplyError, HostSystem, read_state  # pyroute2
        vsctl = None
        if ovs_db is not None:
            def vsctl(*args):
                return system.run(["ovs-vsctl", f"--db={ovs_db}",
                                   f"--timeout={int(system.timeout)}", *args]).stdout.strip()
        system = HostSystem(netns=netns, vsctl=vsctl)
        try:
            state = read_state(config, system)
        except HostApplyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    result = plan(config, state, datapath_type=datapath_type, warp_address=warp_address,
                  controller=controller)
    for finding in result.findings:
        click.echo(str(finding), err=True)

    if dry_run:
        click.echo(result.script(), nl=False)
        if not result.actions:
            click.echo("# nothing to change", err=True)
    elif not result.actions:
        click.echo("nothing to change")
    else:
        from topology.host_apply import HostApplyError, apply
        try:
            apply(result, system, echo=lambda command: click.echo(f"+ {command}"))
        except HostApplyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        click.echo(f"{len(result.actions)} changes")
    if result.errors:
        sys.exit(EXIT_INVALID)
