"""`socketnet host ...`: make the machine itself match the config.

A click group, registered by the `socketnet` command (`main.add_command(host)`):

    socketnet host apply -c FILE [--dry-run] [--datapath-type system|netdev]
                         [--warp-address A] [--controller TARGET] [--from-scratch]
                         [--netns NAME] [--ovs-db DB]
    socketnet host status -c FILE [the same]      what differs now (exit 0: nothing)
    socketnet host watch -c FILE [the same] [--interval S] [--metrics-listen H:P]
                                                  keep it made (topology.host.watch)

reads the host (`topology.host.apply.read_state`), plans (`topology.host.plan.plan`)
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
from topology.host.nft import DEFAULT_WARP_ADDRESS
from topology.host.plan import DATAPATH_TYPES, plan
from topology.host.state import HostState

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNREADABLE = 3


@click.group("host")
def host():
    """Make this host's bridges, adapters, routing and filter match the config."""


def _target_options(command):
    """The options that say which config and which host: shared by apply, status
    and watch."""
    for option in reversed([
        click.option("-c", "--config", "file", required=True,
                     type=click.Path(dir_okay=False), help="The config file (YAML or JSON)."),
        click.option("--datapath-type", type=click.Choice(DATAPATH_TYPES), default="system",
                     show_default=True,
                     help="The bridges' datapath: system (kernel module) or netdev (userspace)."),
        click.option("--warp-address", default=DEFAULT_WARP_ADDRESS, show_default=True,
                     metavar="ADDRESS", help="What traffic leaving through WARP is SNATed to."),
        click.option("--controller", default=None, metavar="TARGET",
                     help="The bridges' OpenFlow target [default: tcp: and "
                          "socketnet.openflow.listen]."),
        click.option("--netns", default=None, metavar="NAME",
                     help="Act inside this network namespace instead of the current one."),
        click.option("--ovs-db", default=None, metavar="DB",
                     help="ovs-vsctl's --db (e.g. unix:/run/openvswitch/db.sock) "
                          "[default: its own]."),
    ]):
        command = option(command)
    return command


def _load(file):
    try:
        return configmod.load_host(file)
    except configmod.ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)


def _system(netns, ovs_db):
    from topology.host.apply import HostSystem  # pyroute2
    system = None
    vsctl = None
    if ovs_db is not None:
        def vsctl(*args):
            return system.run(["ovs-vsctl", f"--db={ovs_db}",
                               f"--timeout={int(system.timeout)}", *args]).stdout.strip()
    system = HostSystem(netns=netns, vsctl=vsctl)
    return system


def _read(config, system, exit_code: int):
    """The host's state, or exit `exit_code` naming what could not be read."""
    from topology.host.apply import HostApplyError, read_state  # pyroute2
    try:
        return read_state(config, system)
    except HostApplyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code)


def _plan(config, state, datapath_type, warp_address, controller):
    """The plan, its findings told on stderr."""
    result = plan(config, state, datapath_type=datapath_type, warp_address=warp_address,
                  controller=controller)
    for finding in result.findings:
        click.echo(str(finding), err=True)
    return result


@host.command("apply")
@_target_options
@click.option("--dry-run", is_flag=True,
              help="Print the commands that would run, as a shell script; change nothing.")
@click.option("--from-scratch", is_flag=True,
              help="With --dry-run: plan for a host that has none of it, reading nothing.")
def apply_command(file, dry_run, datapath_type, warp_address, controller, from_scratch,
                  netns, ovs_db):
    """Make the host match the config: bridges (fail_mode=secure, OpenFlow 1.3,
    out-of-band controller), the inter-bridge veth, the adapters, per-interface
    policy routing, the nftables tables and forwarding. A second run changes nothing."""
    if from_scratch and not dry_run:
        raise click.UsageError("--from-scratch only with --dry-run")
    config = _load(file)
    system = None
    if from_scratch:
        state = HostState()
    else:
        system = _system(netns, ovs_db)
        state = _read(config, system, EXIT_FAILED)
    result = _plan(config, state, datapath_type, warp_address, controller)
    if dry_run:
        click.echo(result.script(), nl=False)
        if not result.actions:
            click.echo("# nothing to change", err=True)
    elif not result.actions:
        click.echo("nothing to change")
    else:
        from topology.host.apply import HostApplyError, apply
        try:
            apply(result, system, echo=lambda command: click.echo(f"+ {command}"))
        except HostApplyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        click.echo(f"{len(result.actions)} changes")
    if result.errors:
        sys.exit(EXIT_INVALID)


@host.command("status")
@_target_options
def status_command(file, datapath_type, warp_address, controller, netns, ovs_db):
    """Say what differs between the host and the config right now: each change
    `host apply` would make, with its reason. Changes nothing. Exit 0: the host
    matches; 1: it differs; 2: invalid config or a finding of level error; 3: the
    host could not be read."""
    config = _load(file)
    state = _read(config, _system(netns, ovs_db), EXIT_UNREADABLE)
    result = _plan(config, state, datapath_type, warp_address, controller)
    for action in result.actions:
        click.echo(f"differs: {action.why or '(no reason given)'}\n  would run: {action}")
    click.echo("the host matches the config" if not result.actions else
               f"{len(result.actions)} difference(s); `socketnet host apply` makes them good")
    if result.errors:
        sys.exit(EXIT_INVALID)
    if result.actions:
        sys.exit(EXIT_FAILED)


@host.command("watch")
@_target_options
@click.option("--interval", type=click.FloatRange(0.5, 3600), default=5.0, show_default=True,
              help="Seconds between checks when nothing happens.")
@click.option("--metrics-listen", default="127.0.0.1:9642", show_default=True,
              metavar="HOST:PORT", help="Where to serve /metrics (empty: nowhere).")
def watch_command(file, datapath_type, warp_address, controller, netns, ovs_db, interval,
                  metrics_listen):
    """Keep the host made: heal it as `host apply` does whenever a link, address,
    route or rule changes (netclient or wg-quick re-creating an interface, an Open
    vSwitch restart), every --interval seconds, and when the config file changes.
    Logs each heal and each command; runs until SIGTERM or SIGINT."""
    import logging
    import signal
    import threading

    from topology.host.watch import Watcher
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: "
                                                   "%(message)s")
    try:  # a bad file at start: exit 2 with every issue
        watcher = Watcher(file, _system(netns, ovs_db), datapath_type, warp_address,
                          controller, interval=interval)
    except configmod.ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    if metrics_listen:
        from prometheus_client import start_http_server
        address, _, port = metrics_listen.rpartition(":")
        start_http_server(int(port), addr=address or "127.0.0.1", registry=watcher.metrics.registry)
        logging.getLogger("socketnet.host").info("metrics on http://%s/metrics", metrics_listen)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watcher.run(stop)
