"""Reactive classification of Netmaker ingress with real packets and real kernels.

The lab's OVS namespace is the host: its kernel owns the mesh adapter (mesh-gw,
10.1.0.1/24). Here it also plays the Netmaker side: it gets the droplet's Netmaker
address 10.101.0.5 and a /32 route to the xray client through the mesh adapter,
as the host's `iif nm-privacy` table would give it. So a connection from
10.101.0.5 enters mesh from the netmaker uplink exactly as Netmaker ingress does:
the host resolves 10.0.0.102 through mesh's ARP responder, the first packet goes
to socketnet, and the decision comes back as a commit: the connection in the mesh's
conntrack zone with its class as ct_mark, and no flow.
"""
import subprocess
import textwrap

import pytest
import yaml

from controller.conntrack import parse_dump
from controller.pipeline import Mark, Purpose
from topology.config import load_host
from topology.labs.lab import HOST
from topology.model import Role
from topology.system import wait_until

from tests.integration.conftest import SEED_YAML

DROPLET = "10.101.0.5"
OTHER_PEER = "10.101.0.6"
XRAY, XRAY_PORT = "10.0.0.102", 8080
MCP, MCP_PORT = "10.1.0.200", 9573

# Accepts connections, greets each and holds it open.
HOLD_SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
    print("listening", flush=True)
    held = []
    while True:
        c, _ = s.accept(); c.sendall(b"hello from " + sys.argv[1].encode()); held.append(c)
""")

# Opens N connections from a source address and holds them open.
HOLD = textwrap.dedent("""
    import socket, sys, time
    held = [socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5,
                                     source_address=(sys.argv[1], 0))
            for _ in range(int(sys.argv[4]))]
    print(f"open {len(held)}", flush=True)
    time.sleep(120)
""")

SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
    print("listening", flush=True)
    while True:
        c, _ = s.accept(); c.sendall(b"hello from " + sys.argv[1].encode()); c.close()
""")

CLIENT = textwrap.dedent("""
    import socket, sys, time
    started = time.monotonic()
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=float(sys.argv[4]),
                                 source_address=(sys.argv[1], 0))
    data = c.recv(100)
    print(f"{time.monotonic() - started:.4f} {data.decode()}")
""")


def tcp_counters(lab) -> dict:
    """The Netmaker side's (the lab host kernel's) TCP counters, Tcp and TcpExt
    (/proc/net/snmp and /proc/net/netstat), by name."""
    out = {}
    for table in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = lab.exec(HOST, "cat", table, check=True).stdout.splitlines()
        for heads, values in zip(lines[::2], lines[1::2]):
            if heads.startswith(("Tcp:", "TcpExt:")):
                out.update(zip(heads.split()[1:], map(int, values.split()[1:])))
    return out


def retransmissions(lab) -> int:
    """TCP segments the Netmaker side sent again."""
    return tcp_counters(lab)["RetransSegs"]


def connect(lab, source, address, port, timeout=3.0):
    return lab.exec(HOST, "python3", "-c", CLIENT, source, address, str(port), str(timeout),
                    timeout=timeout + 5)


def serve(lab, container_id, address, port):
    proc = lab.popen(container_id, "python3", "-c", SERVER, address, str(port),
                     stdout=__import__("subprocess").PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def netmaker_side(lab, *sources):
    """The lab host as the Netmaker side: peer addresses on the mesh's Netmaker
    adapter and the route a real host's Netmaker-interface table gives the xray
    client (all from the lab's config)."""
    adapter = lab.host.mesh.one(Role.NETMAKER_UPLINK).name
    for source in sources:
        lab.exec(HOST, "ip", "addr", "add", f"{source}/32", "dev", adapter, check=True)
    lab.exec(HOST, "ip", "route", "add", f"{lab.host.xray_client.container.address}/32",
             "dev", adapter, check=True)
    # A real host forwards the droplet's packets and asks ARP as the adapter's own
    # address (the only ARP sender mesh admits from it). Here the peer addresses
    # are local, and the kernel would ask as them.
    lab.exec(HOST, "sysctl", "-qw", f"net.ipv4.conf.{adapter}.arp_announce=2", check=True)


def table1(lab, cookie) -> list:
    return [line for line in lab.ovs.dump_flows(lab.host.mesh.name, names=True, stats=False)
            if f"cookie={cookie:#x}" in line]


def connections(lab) -> list:
    """The connections of the mesh's conntrack zone, as the datapath holds them."""
    zone = lab.host.classification.conntrack_zone
    return parse_dump(lab.ovs.appctl("dpctl/dump-conntrack", f"zone={zone}"), zone)


def mesh_flows(lab) -> list:
    return sorted(lab.ovs.dump_flows(lab.host.mesh.name, names=True, stats=False))


@pytest.fixture
def classified(lab, controller):
    ctl = controller()
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])
    netmaker_side(lab, DROPLET, OTHER_PEER)
    serve(lab, "102", XRAY, XRAY_PORT)
    serve(lab, "200", MCP, MCP_PORT)
    return lab, ctl


def test_a_users_connection_to_the_xray_client_is_classified_privacy_without_a_retransmission(
        classified):
    """One packet-in, one committing packet-out, no flow: the connection is in the
    zone marked privacy, both directions carried by static flows."""
    lab, _ = classified
    before, flows = retransmissions(lab), mesh_flows(lab)
    result = connect(lab, DROPLET, XRAY, XRAY_PORT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1)[1].strip() == f"hello from {XRAY}"
    assert retransmissions(lab) == before
    held = [c for c in connections(lab) if (c.src, c.dst, c.dport) == (DROPLET, XRAY, XRAY_PORT)]
    assert [c.mark for c in held] == [Mark.PRIVACY], connections(lab)
    assert mesh_flows(lab) == flows  # no FlowMod per connection
    assert all("idle_timeout" not in f and "hard_timeout" not in f
               for f in table1(lab, Purpose.CLASSIFIED.cookie))


def test_netmaker_ingress_to_a_management_service_is_classified_management(classified):
    lab, _ = classified
    result = connect(lab, DROPLET, MCP, MCP_PORT)
    assert result.returncode == 0, result.stderr
    assert f"hello from {MCP}" in result.stdout
    assert [c.mark for c in connections(lab) if c.dst == MCP] == [Mark.MANAGEMENT]


def test_what_no_rule_claims_is_dropped_and_the_drop_is_kept_in_the_zone(classified):
    lab, ctl = classified
    result = connect(lab, DROPLET, XRAY, 22, timeout=1.5)
    assert result.returncode != 0
    drops = [c for c in connections(lab) if c.dport == 22]
    assert [c.mark for c in drops] == [Mark.DROP], connections(lab)
    # The SYN's retransmissions were dropped by the drop class's flow, in the switch.
    (drop_flow,) = [f for f in lab.ovs.dump_flows("mesh", names=True, stats=True)
                    if f"ct_mark={int(Mark.DROP):#x}" in f]
    assert int(drop_flow.split("n_packets=")[1].split(",")[0]) >= 1, drop_flow


@pytest.fixture
def capped_config(tmp_path):
    data = yaml.safe_load(SEED_YAML.read_text())
    data["socketnet"]["classification"]["limits"].update(
        cached_per_source=5, over_limit={"action": "drop", "seconds": 60})
    path = tmp_path / "capped.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_source_over_its_cap_is_blocked_in_the_switch_while_others_are_still_classified(
        make_lab, controller, capped_config):
    lab = make_lab(load_host(capped_config))
    ctl = controller(capped_config)
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])
    netmaker_side(lab, DROPLET, OTHER_PEER)
    serve(lab, "102", XRAY, XRAY_PORT)
    for _ in range(8):  # each connection a new source port: a new 5-tuple
        connect(lab, DROPLET, XRAY, XRAY_PORT, timeout=1.0)
    wait_until(lambda: table1(lab, Purpose.BLOCKED.cookie), 10, "the source block flow")
    (block,) = table1(lab, Purpose.BLOCKED.cookie)
    assert f"nw_src={DROPLET}" in block and "hard_timeout=60" in block
    assert "ct_mark=0" in block  # only new connections: decided ones go on
    assert connect(lab, DROPLET, XRAY, XRAY_PORT, timeout=1.0).returncode != 0
    ctl.wait_for(r"over its cap of 5 decisions", 5)
    result = connect(lab, OTHER_PEER, XRAY, XRAY_PORT)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def small_zone_config(tmp_path):
    def make(lab):
        data = yaml.safe_load(SEED_YAML.read_text())
        data["socketnet"]["classification"]["limits"].update(
            cached_total=3, cached_per_source=3, cached_unknown=3)
        # The controller sets the zone's limit through this lab's ovs-vswitchd.
        data["socketnet"].setdefault("rest", {})["ovs_ctl"] = lab.ovs.vswitchd_ctl
        path = tmp_path / "small-zone.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)
    return make


def test_a_full_zone_refuses_new_connections_on_either_datapath_and_keeps_the_others(
        make_lab, controller, small_zone_config, monkeypatch):
    """cached_total is the zone's connection limit in the datapath. A restarted
    controller counts no decision yet, so it commits past the limit: the kernel
    datapath refuses the commit and drops the packet, the userspace one skips it
    silently and the connection comes back for a decision, which the controller
    drops once it has committed it RETRIES times. Either way the new connection
    fails, the zone holds its limit, and the connections in it go on."""
    from controller.classifier import RETRIES
    monkeypatch.delenv("SOCKETNET_OVS_CTL", raising=False)
    lab = make_lab(load_host(str(SEED_YAML)))
    config = small_zone_config(lab)
    ctl = controller(config)
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])
    zone = lab.host.classification.conntrack_zone
    wait_until(lambda: f"zone={zone},limit=3" in lab.ovs.appctl("dpctl/ct-get-limits",
                                                                  f"zone={zone}"),
               10, "the controller to set the zone's limit")
    netmaker_side(lab, DROPLET, OTHER_PEER)
    # Three connections held open at both ends fill the zone (the kernel's limit
    # counts only connections that are not closing).
    server = lab.popen("102", "python3", "-c", HOLD_SERVER, XRAY, str(XRAY_PORT),
                       stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening"
    holder = lab.popen(HOST, "python3", "-c", HOLD, DROPLET, XRAY, str(XRAY_PORT), "3",
                       stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open 3"
        assert len(connections(lab)) == 3
        ctl.stop()
        ctl = controller(config, port=ctl.port)
        ctl.wait_synced(["mesh", "vmbr0"], timeout=30)
        assert "limit=3" in lab.ovs.appctl("dpctl/ct-get-limits", f"zone={zone}")
        result = connect(lab, OTHER_PEER, XRAY, XRAY_PORT, timeout=3.0)
        assert result.returncode != 0, result.stdout
        assert len(connections(lab)) == 3, connections(lab)
        assert holder.poll() is None  # the three go on
        if lab.ovs.datapath == "netdev":
            ctl.wait_for(rf"committed {RETRIES} times, the connection does not stay", 10)
    finally:
        for proc in (holder, server):
            proc.kill()
            proc.wait()
