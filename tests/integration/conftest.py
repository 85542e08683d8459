"""Fixtures for tests against real Open vSwitch labs (topology/labs/lab.py).

These tests need root, Open vSwitch and iproute2. Without them every test here is
skipped with the reason, except under CI (CI=true), where a missing prerequisite is
a failure: CI must never go green by running none of them.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import pytest

from topology.labs.ovs import lab_wireguard, schema_path
from topology.system import binary

from tests.conftest import SEED_YAML, unavailable  # noqa: F401 (SEED_YAML: for the tests)

HERE = Path(__file__).parent
NEEDED = ("ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl",
          "ovs-appctl", "ip", "ethtool", "ping", "socat")


def missing_prerequisites() -> list:
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    missing += [b for b in NEEDED if binary(b) is None]
    if schema_path() is None:
        missing.append("vswitch.ovsschema")
    try:
        import ovs.unixctl.client  # noqa: F401
    except ImportError:
        missing.append("python package ovs")
    return missing


def pytest_configure(config):
    # The `ovs` package's poller imports eventlet when it is installed (to detect
    # monkey-patching); eventlet then warns about its own deprecation and about
    # every os.fork (pyroute2 forks to enter namespaces). Neither concerns a lab.
    config.addinivalue_line("filterwarnings", "ignore:(?s).*Eventlet is deprecated")
    config.addinivalue_line("filterwarnings",
                            "ignore:Using fork\\(\\) is a bad idea:DeprecationWarning")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def integration_prerequisites():
    missing = missing_prerequisites()
    if missing:
        unavailable("integration tests need root, Open vSwitch, iproute2, ethtool, ping, "
                    f"socat; missing: {', '.join(missing)}")


# What the labs' WireGuard needs: wireguard-go and wg, or only wg where the labs make
# kernel interfaces (the VM lab).
# socketnet's units started by systemd need systemd as PID 1 (sd_booted: its
# runtime unit directory exists); `python -m topology.vmlab test` runs the module
# in a guest booted so. Anywhere else it is not collected: it is no test of this
# machine, and neither passes nor skips here.
collect_ignore = [] if os.path.isdir("/run/systemd/system") else ["test_units_systemd.py"]

WIREGUARD = ("wireguard-go", "wg") if lab_wireguard() == "go" else ("wg",)


def require(*binaries: str) -> None:
    """Skip the calling test when one of `binaries` (beyond NEEDED) is missing; under
    CI that is a failure, as for the rest."""
    missing = [b for b in binaries if binary(b) is None]
    if missing:
        unavailable(f"needs {', '.join(binaries)}; missing: {', '.join(missing)}")


def report(text: str) -> None:
    """Evidence a run prints besides pass or fail: appended to $SOCKETNET_LAB_REPORT
    when it is set (the VM lab prints that file after its suite)."""
    path = os.environ.get("SOCKETNET_LAB_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(text.rstrip("\n") + "\n")


_lab_numbers = itertools.count(1)


@contextlib.contextmanager
def a_world(config: str, tmp_path_factory):
    """The whole world (topology.labs.world) of `config`, up; taken down after."""
    require(*WIREGUARD, "nft", "sysctl")
    from topology.labs.world import World
    world = World(config, unique_lab_name(), state_root=str(tmp_path_factory.mktemp("labs")))
    world.up()
    try:
        yield world
    finally:
        world.down()


def unique_lab_name() -> str:
    """Unique among labs of this machine: pid and a counter (`t<pid>-<n>`)."""
    return f"t{os.getpid()}-{next(_lab_numbers)}"


@pytest.fixture
def lab_name() -> str:
    """A lab name no other lab on this machine uses now."""
    return unique_lab_name()


@pytest.fixture
def make_lab(seed_host):
    """Factory for labs torn down after the test: `make_lab()` or `make_lab(host)`."""
    from topology.labs.lab import Lab
    labs = []

    def make(host=None):
        lab = Lab(host or seed_host, unique_lab_name())
        labs.append(lab)
        return lab.up()

    yield make
    for lab in reversed(labs):
        lab.down()


@pytest.fixture
def lab(make_lab):
    """The seed host's bridges, up, no controller, no flows."""
    return make_lab()


@pytest.fixture
def controller():
    """Factory: a `socketnet run` child process on a free port, stopped after the test."""
    from controller.process import ControllerProcess
    procs = []

    def start(config=str(SEED_YAML), **kw):
        proc = ControllerProcess(config, **kw).start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def attached(lab, controller):
    """The seed lab with socketnet attached and both pipelines in sync: (lab, controller)."""
    ctl = controller()
    lab.attach(ctl.target)
    ctl.wait_synced([b.name for b in lab.host.bridges])
    return lab, ctl


def switch_macs(lab) -> dict:
    """Port name -> MAC as the lab's switch has them (LOCAL under the bridge's name)."""
    macs = {}
    for bridge in lab.host.bridges:
        for name in list(lab.port_numbers(bridge.name)) + [bridge.name]:
            macs[name] = lab.ovs.vsctl("get", "Interface", name, "mac_in_use").strip().strip('"')
    return macs
