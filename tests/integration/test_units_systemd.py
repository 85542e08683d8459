"""socketnet's units, as they ship, started by a real systemd (PID 1).

Where systemd is PID 1 (the VM lab's systemd guest: `python -m topology.vmlab
test` runs this module there; elsewhere it is not collected): the world's host
config is /etc/socketnet/host.yaml, the path the units name;
`deploy/socketnet.service` (the controller) and `deploy/socketnet-host.service`
(the watcher) are installed unchanged, each with the drop-in an operator of this
host would write: the socketnet command's place, the world's ports and Open
vSwitch database, and for the watcher the host's network namespace
(`NetworkNamespacePath=`: the world's host is a namespace, not the guest).

The world's own controller gives way to socketnet.service on the same ports.
Then, as in test_healing, on this datapath (the kernel's, with kernel
WireGuard, in the VM lab): a power cut, and boots with both units starting
together (as an enabled boot starts them) before and after Open vSwitch,
netclient and wg-quick (which make the Netmaker interface and warp0 anew: the
unit heals what their return needs), the N-rules probed from the power cut to
the end;
afterwards W1 and W5 work with nothing typed, `socketnet host status` exits 0,
and the watcher's journal says what it healed. Last, systemd's Restart=: the
watcher killed comes back by itself.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from topology.system import wait_until

from tests.integration.conftest import SEED_YAML, WIREGUARD, report, require, unique_lab_name
from tests.integration.test_healing import HEAL_WAIT, _boot, seconds_text

DEPLOY = SEED_YAML.parents[1] / "deploy"
CONFIG = "/etc/socketnet/host.yaml"  # the units' own path
UNITS = "/run/systemd/system"  # runtime units: gone with the guest
WRAPPER = "/usr/local/bin/socketnet"  # what `pip install .` would put there
CONTROLLER, WATCHER = "socketnet.service", "socketnet-host.service"


def systemctl(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"systemctl {' '.join(args)} exited {proc.returncode}: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}\n"
                             + journal(CONTROLLER)[-2000:] + journal(WATCHER)[-2000:])
    return proc


def journal(unit: str) -> str:
    return subprocess.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"],
                          capture_output=True, text=True, timeout=30).stdout


def _install(world) -> None:
    """The units as shipped, the wrapper, and a drop-in each for this host."""
    pythonpath = ":".join(p for p in sys.path if p.startswith(("/src", "/opt/socketnet")))
    with open(WRAPPER, "w") as f:
        f.write(f"#!/bin/sh\nexec {sys.executable} -c 'from controller.cli.main import main; "
                f"main()' \"$@\"\n")
    os.chmod(WRAPPER, 0o755)
    ctl, lab = world.controllers["host"], world.lab
    env = f"Environment=PYTHONPATH={pythonpath} PYTHONDONTWRITEBYTECODE=1\n"
    dropins = {
        CONTROLLER: (env + "ExecStart=\n"
                     f"ExecStart={WRAPPER} run -c {CONFIG} --ofp-listen 127.0.0.1:{ctl.port} "
                     f"--metrics-listen {ctl.listen_address('--metrics-listen')} "
                     f"--rest-listen {ctl.listen_address('--rest-listen')}\n"),
        WATCHER: (env + f"NetworkNamespacePath=/run/netns/{lab.ns('host')}\n"
                  # the lab's Open vSwitch keeps its database socket in a temp dir
                  f"PrivateTmp=no\nReadWritePaths={lab.ovs.dir}\n"
                  "ExecStart=\n"
                  f"ExecStart={WRAPPER} host watch -c {CONFIG} --ovs-db unix:{lab.ovs.db_sock} "
                  f"--datapath-type {lab.ovs.datapath} --warp-address {world.warp_address} "
                  f"--controller {ctl.target} --interval 1\n"),
    }
    for unit, text in dropins.items():
        shutil.copy(DEPLOY / unit, os.path.join(UNITS, unit))
        os.makedirs(os.path.join(UNITS, f"{unit}.d"), exist_ok=True)
        with open(os.path.join(UNITS, f"{unit}.d", "lab.conf"), "w") as f:
            f.write("[Service]\n" + text)
    systemctl("daemon-reload")


def _uninstall() -> None:
    systemctl("stop", CONTROLLER, WATCHER, check=False)
    for unit in (CONTROLLER, WATCHER):
        shutil.rmtree(os.path.join(UNITS, f"{unit}.d"), ignore_errors=True)
        if os.path.exists(os.path.join(UNITS, unit)):
            os.remove(os.path.join(UNITS, unit))
    if os.path.exists(WRAPPER):
        os.remove(WRAPPER)
    systemctl("daemon-reload", check=False)
    systemctl("reset-failed", CONTROLLER, WATCHER, check=False)


def host_status(world) -> int:
    """`socketnet host status` in the host: 0 when it matches the config."""
    lab, ctl = world.lab, world.controllers["host"]
    return world.exec("host", WRAPPER, "host", "status", "-c", CONFIG, "--ovs-db",
                      f"unix:{lab.ovs.db_sock}", "--datapath-type", lab.ovs.datapath,
                      "--warp-address", world.warp_address, "--controller", ctl.target,
                      timeout=120).returncode


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require(*WIREGUARD, "nft", "sysctl", "socat", "systemctl", "journalctl")
    from topology.labs.world import World
    os.makedirs(os.path.dirname(CONFIG), mode=0o755, exist_ok=True)
    shutil.copy(SEED_YAML, CONFIG)
    os.chmod(CONFIG, 0o644)  # socketnet.service runs as a dynamic user
    w = World(CONFIG, unique_lab_name(), state_root=str(tmp_path_factory.mktemp("labs")))
    w.up()
    try:
        w.stop_controller("host")  # socketnet.service takes its place, same ports
        _install(w)
        systemctl("start", CONTROLLER, WATCHER)
        wait_until(lambda: host_status(w) == 0, HEAL_WAIT,
                   "the units to make the host as the config says")
        yield w
    finally:
        _uninstall()
        w.down()
        os.remove(CONFIG)


def _step(world, step: str) -> None:
    if step == "units":
        systemctl("start", CONTROLLER, WATCHER)
    elif step == "openvswitch":
        world.lab.ovs.boot()
    elif step == "netclient":
        world.netmaker.restore(0)
    else:
        world.warp_link.restore("a")


# An enabled boot starts both units together: before the rest, and after it (the
# orders between are test_healing's, on either datapath).
ORDERS = (("units", "openvswitch", "netclient", "wg-quick"),
          ("openvswitch", "netclient", "wg-quick", "units"))


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_a_boot_under_systemd_comes_up_fail_closed(world, order):
    seconds, rounds = _boot(world, order, _step, lambda: systemctl("stop", CONTROLLER, WATCHER))
    wait_until(lambda: host_status(world) == 0, HEAL_WAIT, "the host matching its config")
    for unit in (CONTROLLER, WATCHER):
        assert systemctl("is-active", unit, check=False).stdout.strip() == "active", unit
    healed = journal(WATCHER)
    assert "heal (start)" in healed and "heal: + " in healed, healed[-2000:]
    report(f"systemd: boot in the order {', '.join(order)}: {seconds_text(seconds)} after "
           f"the last; {rounds} rounds of N-probes from the power cut, none got through")


def test_the_watcher_killed_is_restarted_by_systemd(world):
    before = systemctl("show", "-p", "MainPID", "--value", WATCHER).stdout.strip()
    systemctl("kill", "-s", "KILL", WATCHER)
    wait_until(lambda: systemctl("show", "-p", "MainPID", "--value", WATCHER).stdout.strip()
               not in ("0", before) and systemctl("is-active", WATCHER, check=False)
               .stdout.strip() == "active", HEAL_WAIT, "systemd to start the watcher again")
    from topology.host.routing import RoutingIds
    world.exec("host", "ip", "route", "flush", "table", str(RoutingIds().mesh_adapter_in()))
    wait_until(lambda: host_status(world) == 0, HEAL_WAIT,
               "the restarted watcher to heal a table flushed behind its back")
