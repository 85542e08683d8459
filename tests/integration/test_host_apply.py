"""`socketnet host apply` against a scratch network namespace and a private Open
vSwitch (topology.labs.ovs.OvsInstance): the first apply builds the seed host, a second
changes nothing, --dry-run changes nothing, and the glue routes as the routed design needs.

nm-privacy and warp0 are tun devices here (layer 3, like WireGuard, no process
behind them); test_wireguard.py has real WireGuard.
"""
from __future__ import annotations

import difflib
import json
import subprocess

import pytest
from click.testing import CliRunner

from topology.config import load_host
from topology.host.apply import HostSystem, apply, read_state
from topology.host.cli import host as host_group
from topology.host.plan import plan
from topology.host.state import HostState
from topology.labs.ovs import OvsInstance, lab_datapath
from topology.system import wait_until

from tests.integration.conftest import SEED_YAML, require, unique_lab_name


@pytest.fixture(autouse=True)
def nftables():
    require("nft", "sysctl")


def ip(ns, *args, check=True):
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=check)


def in_ns(ns, *cmd):
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          check=True).stdout


def seed_leftovers(ovs: OvsInstance) -> OvsInstance:
    """nm-privacy and warp0 (tun, up), and vmbr0 as the seed leaves it: standalone,
    warp0 enslaved by its PostUp."""
    for dev in ("nm-privacy", "warp0"):
        ip(ovs.netns, "tuntap", "add", "mode", "tun", "name", dev)
        ip(ovs.netns, "link", "set", dev, "up")
    ovs.vsctl("add-br", "vmbr0", "--", "set", "Bridge", "vmbr0",
              f"datapath_type={lab_datapath()}")
    ovs.vsctl("add-port", "vmbr0", "warp0")
    return ovs


@pytest.fixture
def scratch():
    """A private OVS whose netns stands for the host, as the seed leaves it."""
    with OvsInstance(unique_lab_name()) as ovs:
        yield seed_leftovers(ovs)


@pytest.fixture(scope="module")
def host():
    return load_host(str(SEED_YAML))


@pytest.fixture(scope="module")
def applied(host):
    """A scratch host after one apply, shared by the routing checks (they only read)."""
    with OvsInstance(unique_lab_name()) as ovs:
        system = HostSystem(netns=seed_leftovers(ovs).netns, vsctl=ovs.vsctl)
        apply(plan(host, read_state(host, system), datapath_type=lab_datapath()), system)
        yield ovs


def snapshot(ovs) -> tuple:
    """Everything apply could touch, as text, once the kernel has settled: on the
    kernel datapath the adapters are real netdevs, whose IPv6 link-local addresses
    stay `tentative` until duplicate address detection ends, seconds after they
    come up, with no one changing anything."""
    ns = ovs.netns
    wait_until(lambda: not ip(ns, "-6", "address", "show", "tentative").stdout.strip(), 10,
               f"IPv6 duplicate address detection in {ns}")
    # A tun's carrier follows whoever holds it open (ovs-vswitchd on the kernel
    # datapath, a moment after its port was added): wait for two reads alike.
    last = [None]

    def steady():
        now, last[0] = ip(ns, "-d", "address").stdout, last[0]
        same, last[0] = now == last[0], now
        return same
    wait_until(steady, 10, f"the links of {ns} to settle", interval=0.5)
    return (ovs.vsctl("show"),
            # Not `status`/`is_connected`: ovs-vswitchd's live connection state,
            # which changes by itself while it retries.
            ovs.vsctl("--format=json", "--columns=target,connection_mode,inactivity_probe,"
                      "max_backoff,other_config,external_ids", "list", "Controller"),
            ip(ns, "-d", "address").stdout, ip(ns, "rule").stdout,
            ip(ns, "route", "show", "table", "all").stdout,
            in_ns(ns, "sysctl", "-n", "net.ipv4.ip_forward"),
            subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                           capture_output=True, text=True).stdout)


def cli(ovs, *args):
    return CliRunner().invoke(host_group, ["apply", "-c", str(SEED_YAML), "--netns", ovs.netns,
                                           "--ovs-db", f"unix:{ovs.db_sock}",
                                           *datapath_option(), *args])


def datapath_option() -> list:
    """The CLI's own default (system) in the VM lab, netdev here."""
    return [] if lab_datapath() == "system" else ["--datapath-type", "netdev"]


def test_first_apply_builds_the_host_and_a_second_changes_nothing(scratch, host):
    system = HostSystem(netns=scratch.netns, vsctl=scratch.vsctl)
    first = plan(host, read_state(host, system), datapath_type=lab_datapath())
    assert [f.subject for f in first.errors] == ["warp0"]  # enslaved by the seed's PostUp
    assert str(first.actions[0]) == "ovs-vsctl -- --if-exists del-port vmbr0 warp0"
    apply(first, system)

    again = plan(host, read_state(host, system), datapath_type=lab_datapath())
    assert again.actions == (), again.script()
    assert again.findings == ()

    # what the switch has
    for bridge in ("mesh", "vmbr0"):
        assert scratch.vsctl("get", "Bridge", bridge, "fail_mode") == "secure"
        assert scratch.vsctl("get", "Bridge", bridge, "protocols") == "[OpenFlow13]"
        assert scratch.vsctl("get", "Bridge", bridge,
                             "other-config:disable-in-band") == '"true"'
        assert scratch.vsctl("get", "Bridge", bridge, "datapath_type") == lab_datapath()
    controllers = json.loads(scratch.vsctl("--format=json", "--columns=target,connection_mode",
                                           "list", "Controller"))["data"]
    assert controllers == [["tcp:127.0.0.1:6653", "out-of-band"]] * 2
    numbers = scratch.dpif_ports()
    assert {p: n for p, (n, _) in numbers["mesh"].items() if p != "mesh"} == {
        "mesh-gw": 1, "to-privacy": 2}
    assert {p: n for p, (n, _) in numbers["vmbr0"].items() if p != "vmbr0"} == {
        "vmbr0-gw": 1, "from-mesh": 2}
    assert scratch.vsctl("port-to-br", "mesh-gw") == "mesh"
    assert "warp0" not in scratch.vsctl("list-ports", "vmbr0").split()

    # what the kernel has
    ns = scratch.netns
    assert "inet 10.1.0.1/24" in ip(ns, "address", "show", "dev", "mesh-gw").stdout
    assert "inet 10.0.0.1/24" in ip(ns, "address", "show", "dev", "vmbr0-gw").stdout
    assert "5301:\tfrom all iif nm-privacy lookup 5301" in ip(ns, "rule").stdout
    assert in_ns(ns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    ruleset = in_ns(ns, "nft", "list", "table", "inet", "socketnet")
    assert "policy drop" in ruleset and "snat ip to 172.16.0.2" in ruleset


@pytest.mark.parametrize("route,expected", [
    # from Netmaker: the xray client and the management subnet, nothing else
    (("10.0.0.102", "from", "10.101.0.5", "iif", "nm-privacy"), "dev mesh-gw"),
    (("10.1.0.200", "from", "10.101.0.5", "iif", "nm-privacy"), "dev mesh-gw"),
    (("10.0.0.100", "from", "10.101.0.5", "iif", "nm-privacy"), None),
    (("8.8.8.8", "from", "10.101.0.5", "iif", "nm-privacy"), None),
    # from management: Netmaker and node2 only
    (("10.101.0.5", "from", "10.1.0.200", "iif", "mesh-gw"), "dev nm-privacy"),
    (("10.2.0.7", "from", "10.1.0.200", "iif", "mesh-gw"), "dev nm-privacy"),
    (("10.0.0.102", "from", "10.1.0.200", "iif", "mesh-gw"), None),
    (("8.8.8.8", "from", "10.1.0.200", "iif", "mesh-gw"), None),
    # from privacy: the internet through warp0, never private ranges
    (("8.8.8.8", "from", "10.0.0.100", "iif", "vmbr0-gw"), "dev warp0"),
    (("10.1.0.200", "from", "10.0.0.100", "iif", "vmbr0-gw"), None),
    (("10.101.0.5", "from", "10.0.0.100", "iif", "vmbr0-gw"), None),
    (("192.168.1.1", "from", "10.0.0.100", "iif", "vmbr0-gw"), None),
    # from warp0: the privacy subnet only
    (("10.0.0.100", "from", "1.1.1.1", "iif", "warp0"), "dev vmbr0-gw"),
    (("10.1.0.200", "from", "1.1.1.1", "iif", "warp0"), None),
])
def test_the_glue_routes_each_incoming_interface_only_where_the_notes_say(
        applied, route, expected):
    result = ip(applied.netns, "route", "get", *route, check=False)
    if expected is None:
        assert result.returncode != 0 and "Permission denied" in result.stderr, result.stdout
    else:
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout


def test_without_warp0_privacy_traffic_is_prohibited_not_routed_by_main(scratch, host):
    system = HostSystem(netns=scratch.netns, vsctl=scratch.vsctl)
    apply(plan(host, read_state(host, system), datapath_type=lab_datapath()), system)
    ip(scratch.netns, "route", "add", "default", "dev", "nm-privacy")  # a main-table way out
    ip(scratch.netns, "link", "del", "warp0")  # takes its routes along
    result = ip(scratch.netns, "route", "get", "8.8.8.8", "from", "10.0.0.100",
                "iif", "vmbr0-gw", check=False)
    assert result.returncode != 0 and "Permission denied" in result.stderr, result.stdout


def test_the_cli_dry_run_changes_nothing_then_apply_then_nothing_to_change(scratch):
    before = snapshot(scratch)
    result = cli(scratch, "--dry-run")
    assert result.exit_code == 2, result.output  # warp0 enslaved: an error finding
    assert "error: warp0:" in result.stderr and "PostUp" in result.stderr
    assert "ovs-vsctl -- --if-exists del-port vmbr0 warp0" in result.stdout
    assert "sysctl -w net.ipv4.ip_forward=1" in result.stdout
    same(snapshot(scratch), before)

    result = cli(scratch)
    assert result.exit_code == 2, result.output  # done, and the PostUp still needs fixing
    assert "+ ovs-vsctl -- --if-exists del-port vmbr0 warp0" in result.stdout
    assert result.stdout.rstrip().endswith("changes")
    built = snapshot(scratch)
    assert built != before

    result = cli(scratch)
    assert result.exit_code == 0, result.output
    assert result.stdout == "nothing to change\n"
    assert result.stderr == ""
    result = cli(scratch, "--dry-run")
    assert result.exit_code == 0 and result.stdout == ""
    same(snapshot(scratch), built)


def same(now: tuple, then: tuple) -> None:
    """Two snapshots are equal; else the lines that differ, part by part."""
    diffs = ["\n".join(difflib.unified_diff(b.splitlines(), a.splitlines(), lineterm=""))
             for a, b in zip(now, then) if a != b]
    assert not diffs, "\n".join(diffs)


def test_a_fresh_host_plan_reads_as_empty_where_nothing_exists(scratch, host):
    """Reading a namespace socketnet never touched finds none of its state."""
    state = read_state(host, HostSystem(netns=scratch.netns, vsctl=scratch.vsctl))
    assert state.nft is None
    assert state.routes == () and all(r.table not in range(5301, 5305) for r in state.rules)
    assert set(state.bridges) == {"vmbr0"}
    assert state.links["warp0"].kind.value == "l3" and state.links["lo"].kind.value == "l2"
    assert isinstance(state, HostState)
