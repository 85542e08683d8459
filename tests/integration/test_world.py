"""The seed's whole world, end to end, with socketnet attached (topology.labs.world).

One world per module: the host (its own Open vSwitch, containers 100, 102, 200, 201,
host apply), the droplet, node2 (its own Open vSwitch, socketnet and vector DB) and
the VPS over the Netmaker WireGuard mesh, and the WARP exit over real WireGuard in
front of the VPS. Real TCP sessions prove W1-W5 across it; every N-rule is probed
with real packets, and the switches' port counters, the WireGuard uplinks' per-peer
transfer counters and the VPS's connection log show that nothing leaked. The
probes of one rule run at once (each waits ~1 s for what never comes).
"""
from __future__ import annotations

import concurrent.futures
import re
import textwrap
import uuid

import pytest

from topology.labs.ovs import lab_datapath, lab_wireguard
from topology.model import Role
from topology.system import wait_until

from tests.integration.conftest import SEED_YAML, a_world, report

XRAY, XRAY_PORT = "10.0.0.102", 8080
GATEWAY = "10.0.0.100"
MCP, API, MGMT_PORT = "10.1.0.200", "10.1.0.201", 9573
VECTOR_DB = "10.2.0.30"
DROPLET = "10.101.0.5"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with a_world(str(SEED_YAML), tmp_path_factory) as w:
        yield w


# --------------------------------------------------------------------------- probes

FRAME = textwrap.dedent("""
    import socket, struct, sys
    dst_mac, src_ip, dst_ip, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    src_mac = s.getsockname()[4]
    payload = b"socketnet probe"
    udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
    def checksum(b):
        total = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    frame = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + b"\\x08\\x00" + ip + udp
    for _ in range(count):
        s.send(frame)
""")


def ping(where, address, *extra):
    return ("ping", where, address, extra)


def tcp(where, address, port):
    return ("tcp", where, address, port)


def frame(where, dst_mac, src_ip, dst_ip):
    """A raw UDP frame: any destination MAC, any (forged) source address."""
    return ("frame", where, dst_mac, src_ip, dst_ip)


def run_probe(world, probe) -> bool:
    """Whether the probe got an answer (a frame never does: it is only sent)."""
    kind, where, *args = probe
    if kind == "ping":
        address, extra = args
        return world.exec(where, "ping", "-n", "-c", "1", "-W", "1", *extra,
                          address).returncode == 0
    if kind == "tcp":
        address, port = args
        return world.talk(where, address, port, timeout=1)[0]
    dst_mac, src_ip, dst_ip = args
    world.exec(where, "python3", "-c", FRAME, dst_mac, src_ip, dst_ip, "3", check=True)
    return False


def probe_all(world, probes) -> list:
    """The probes that got through (all run at once)."""
    with concurrent.futures.ThreadPoolExecutor(len(probes)) as pool:
        results = list(pool.map(lambda p: run_probe(world, p), probes))
    return [p for p, ok in zip(probes, results) if ok]


class Leaks:
    """Counters before and after: the switch ports (host and node2), the WireGuard
    uplinks per peer, the IPv4 packets each namespace's kernel received, the VPS's
    connections."""

    def __init__(self, world, new_exits: bool = False):
        self.world = world
        self.new_exits = new_exits
        self.ports = world.port_counters()
        self.exits = world.exit_counters(new_exits)
        self.received = world.ip_received()
        self.vps = len(world.vps_connections())

    def sent(self) -> dict:
        """Since: {(node, bridge, port): packets the switch sent out of it},
        {exit: packets (only new connections', with new_exits)}, {"got " + where:
        IPv4 packets received}; only what moved."""
        ports = self.world.port_counters()
        exits = self.world.exit_counters(self.new_exits)
        received = self.world.ip_received()
        sent = {k: ports[k][1] - self.ports.get(k, (0, 0))[1] for k in ports}
        sent.update({k: exits[k] - self.exits.get(k, 0) for k in exits})
        sent.update({got(k): received[k] - self.received.get(k, 0) for k in received})
        return {k: v for k, v in sent.items() if v}

    def new_vps_connections(self) -> list:
        return self.world.vps_connections()[self.vps:]


def mac_of(world, bridge_port, node="host"):
    lab = world.lab if node == "host" else world.node2
    return lab.ovs.vsctl("get", "Interface", bridge_port, "mac_in_use").strip().strip('"')


def got(*where) -> set:
    """Counter keys: IPv4 received by these namespaces ("100", "node2:300", "vps")."""
    return {f"got {w}" for w in where} if len(where) != 1 else f"got {where[0]}"


LINK = {("host", "mesh", "to-privacy"), ("host", "vmbr0", "from-mesh")}
PRIVACY = {"got 100", "got 102"}
MGMT = {"got 200", "got 201", "got node2:300"}
WARP = "warp0 -> WARP exit"
NETMAKER = ("nm-privacy -> droplet", "nm-privacy -> node2", "nm-privacy -> vps")


def local_ports(world) -> dict:
    return {k: v for k, v in world.port_counters().items() if k[2] == "LOCAL"}


def assert_no_local(world):
    """N9: no packet ever left a bridge by its LOCAL port."""
    assert all(tx == 0 for _, tx in local_ports(world).values()), local_ports(world)


# --------------------------------------------------------------------------- W


def test_the_world_is_up_and_attached(world):
    # How long it took is the lab's to print (`socketnet lab up`), not a test's to
    # judge: timing belongs in bench/.
    record = world.record
    assert {"host", "node2"} <= set(record["controllers"])
    assert len(record["namespaces"]) == 12
    assert not [f for _, f in world.findings if f.level == "error"]


def test_the_bridges_run_on_the_labs_datapath_and_the_uplinks_on_its_wireguard(world):
    """netdev and wireguard-go here; in the VM lab the kernel's: `system@ovs-system`,
    nm-privacy and warp0 of kind wireguard, no wireguard-go process."""
    datapath, kind = lab_datapath(), lab_wireguard()
    dpif = world.lab.ovs.appctl("dpif/show")
    assert f"{datapath}@ovs-{datapath}:" in dpif
    links = {}
    for uplink in (world.host.mesh.one(Role.NETMAKER_UPLINK),
                   world.host.privacy_bridge.one(Role.WARP_UPLINK)):
        links[uplink.interface] = world.exec("host", "ip", "-d", "link", "show",
                                             uplink.interface, check=True).stdout
        found = re.search(r"^\s+(wireguard|tun)\b", links[uplink.interface], re.M)
        assert found and found[1] == ("wireguard" if kind == "kernel" else "tun")
    go = [p for p in world.record["processes"] if p["what"].startswith("wireguard-go")]
    assert bool(go) == (kind == "go")
    report(f"datapath ({datapath}): ovs-appctl dpif/show\n{dpif}\n"
           f"WireGuard ({kind}): ip -d link\n" + "".join(links.values())
           + f"wireguard-go processes: {len(go)}\n")


def test_a_users_session_reaches_the_vps_from_the_warp_exit_never_over_netmaker(world):
    """W1 in over Netmaker to the xray client, W2 out through WARP (SNAT to
    172.16.0.2, the only source the WARP end accepts, then the WARP exit's own
    address), W3 the reply back to the droplet over Netmaker."""
    from topology.labs.world import VPS, VPS_PORT, WARP_EXIT
    before = settled(world)
    fresh = Leaks(world, new_exits=True)  # exits that start connections: no stray late packets
    marker = f"user session {uuid.uuid4().hex[:8]}"
    reply = session(world, "droplet", XRAY, XRAY_PORT, marker)
    assert f"vps {VPS}:{VPS_PORT} saw {WARP_EXIT}" in reply and marker in reply
    assert set(before.new_vps_connections()) == {(WARP_EXIT, VPS)}  # none over Netmaker
    sent = before.sent()
    assert sent.get(WARP, 0) > 0, sent
    assert sent.get("nm-privacy -> droplet", 0) > 0, sent  # the reply, W3
    assert not fresh.sent().get("nm-privacy -> vps"), sent
    assert sent.get(("host", "mesh", "to-privacy"), 0) > 0  # W1 crossed the link
    assert sent.get(("host", "vmbr0", "from-mesh"), 0) > 0  # W3 crossed back
    assert not sent.get(("host", "mesh", "veth200")) and not sent.get(("host", "mesh", "veth201"))
    assert sent.get(got("102"), 0) > 0 and sent.get(got("vps"), 0) > 0  # the meter counts
    # the WARP end's tunnel delivered it: it accepts nothing but 172.16.0.2 (SNAT)
    assert sent.get(got("warp"), 0) > 0
    assert not sent.get(got("200")) and not sent.get(got("201")) and not sent.get(got("100"))


def test_the_gateway_container_reaches_the_vps_through_warp(world):
    """W4."""
    from topology.labs.world import VPS, VPS_PORT, WARP_EXIT
    before = settled(world)
    fresh = Leaks(world, new_exits=True)
    reply = session(world, "100", VPS, VPS_PORT, "gateway")
    assert f"saw {WARP_EXIT}" in reply
    assert set(before.new_vps_connections()) == {(WARP_EXIT, VPS)}
    sent = before.sent()
    new = fresh.sent()
    assert sent.get(WARP, 0) > 0 and not any(new.get(k) for k in NETMAKER), (sent, new)
    assert not (LINK & set(sent)), sent


def test_mcp_and_the_vector_db_on_node2_reach_each_other_over_netmaker(world):
    """W5 across nodes, both ways, each node's socketnet classifying the other's
    ingress as management."""
    before = settled(world)
    fresh = Leaks(world, new_exits=True)
    reply = session(world, "200", VECTOR_DB, 6333, "query")
    assert f"vector-db {VECTOR_DB}:6333 hears {MCP}" in reply
    reply = session(world, "node2:300", MCP, MGMT_PORT, "callback")
    assert f"mcp-server {MCP}:{MGMT_PORT} hears {VECTOR_DB}" in reply
    sent = before.sent()
    assert sent.get("nm-privacy -> node2", 0) > 0, sent
    assert not fresh.sent().get(WARP) and not (LINK & set(sent)), sent
    assert sent.get(("node2", "mesh", "veth300"), 0) > 0


def test_management_reaches_the_vps_over_netmaker_and_never_through_warp(world):
    from topology.labs.world import VPS_PORT
    # Exits counted as new connections only: a late retransmission of an earlier
    # test's WARP session is not this session's.
    before = settled(world, new_exits=True)
    vps_nm = world.nm_address["vps"]
    reply = session(world, "201", vps_nm, VPS_PORT, "metrics")
    assert f"vps {vps_nm}:{VPS_PORT} saw {API}" in reply
    assert set(before.new_vps_connections()) == {(API, vps_nm)}
    sent = before.sent()
    assert sent.get("nm-privacy -> vps", 0) > 0 and not sent.get(WARP), sent


# --------------------------------------------------------------------------- N


def settled(world, new_exits: bool = False) -> Leaks:
    """Counters once the previous test's last packets (FINs, ACKs) are through: two
    snapshots in a row alike (or 3 s)."""
    last = [Leaks(world, new_exits)]

    def quiet():
        now = Leaks(world, new_exits)
        same = (now.ports, now.exits, now.received) == (last[0].ports, last[0].exits,
                                                        last[0].received)
        last[0] = now
        return same
    try:
        wait_until(quiet, 3, "the world to go quiet", interval=0.3)
    except TimeoutError:
        pass  # ARP and the like keep some port counters moving: compare from here
    return last[0]


def session(world, where, address, port, text, timeout=15) -> str:
    """A TCP conversation that must succeed (retried: the first packet of a flow
    waits for socketnet's decision and ARP). The server's answer."""
    return wait_until(lambda: (lambda r: r[1] if r[0] else None)(
        world.talk(where, address, port, text)), timeout, f"{where} -> {address}:{port}")


def assert_refused(world, probes, must_not_send):
    """Every probe fails, and none of the `must_not_send` counters moved (exits: no
    new connection; a finished session's late retransmission is not a leak)."""
    before = settled(world, new_exits=True)
    through = probe_all(world, probes)
    assert through == [], f"got through: {through}"
    sent = before.sent()
    leaked = {k: v for k, v in sent.items() if k in must_not_send}
    assert leaked == {}, f"leaked: {leaked} (all sent: {sent})"
    assert before.new_vps_connections() == []
    assert_no_local(world)


def test_n1_management_never_reaches_vmbr0_or_warp(world):
    from topology.labs.world import VPS, VPS_PORT, WARP_END
    probes = [tcp("200", XRAY, XRAY_PORT), ping("200", XRAY), ping("201", GATEWAY),
              tcp("201", GATEWAY, 3128), ping("200", "10.0.0.1"), tcp("200", VPS, VPS_PORT),
              ping("201", VPS), ping("200", WARP_END)]
    assert_refused(world, probes, PRIVACY | LINK | {WARP, "got warp", "got vps"})


def warp_end_sent(world) -> int:
    out = world.exec("warp", "wg", "show", world.warp_link.control["b"], "transfer",
                     check=True).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if line.strip())


def test_n2_what_enters_from_warp_reaches_neither_the_mesh_nor_netmaker(world):
    """A hostile WARP end: it is let to send anything into the tunnel, and routes
    the host's subnets and Netmaker into it."""
    control = world.warp_link.control["b"]
    host_key = world.warp_link.public["a"]
    targets = ["10.1.0.0/24", "10.101.0.0/16", "10.2.0.0/24", "10.0.0.0/24"]
    world.exec("warp", "wg", "set", control, "peer", host_key, "allowed-ips",
               "0.0.0.0/0", check=True)
    for net in targets:
        world.exec("warp", "ip", "route", "add", net, "dev", "warp", check=True)
    try:
        probes = [ping("warp", MCP), tcp("warp", MCP, MGMT_PORT), tcp("warp", API, MGMT_PORT),
                  ping("warp", DROPLET), ping("warp", world.nm_address["host"]),
                  tcp("warp", VECTOR_DB, 6333), ping("warp", "10.1.0.1"),
                  tcp("warp", XRAY, XRAY_PORT), ping("warp", GATEWAY)]
        into_tunnel = warp_end_sent(world)
        assert_refused(world, probes, MGMT | LINK | set(NETMAKER) | {"got droplet", "got vps"})
        assert warp_end_sent(world) > into_tunnel  # the probes did go into the tunnel
    finally:
        for net in targets:
            world.exec("warp", "ip", "route", "del", net, "dev", "warp")
        world.exec("warp", "wg", "set", control, "peer", host_key, "allowed-ips",
                   f"{world.warp_address}/32", check=True)


def test_n3_n5_privacy_containers_reach_no_management_port_and_no_netmaker(world):
    """N3: privacy traffic leaves by warp or not at all. N5: no privacy container
    reaches a management port; the gateway never the inter-bridge link; the xray
    client only with replies."""
    vps_nm = world.nm_address["vps"]
    probes = [ping("100", MCP), tcp("100", MCP, MGMT_PORT), ping("102", API),
              tcp("102", API, MGMT_PORT), ping("100", DROPLET), ping("102", DROPLET),
              tcp("102", DROPLET, 22), tcp("100", VECTOR_DB, 6333), tcp("102", vps_nm, 443),
              ping("102", "10.1.0.1"), ping("100", world.nm_address["host"])]
    assert_refused(world, probes, MGMT | LINK | set(NETMAKER) | {"got droplet", "got vps"})


def test_n4_netmaker_ingress_not_classified_privacy_never_reaches_vmbr0(world):
    probes = [ping("droplet", GATEWAY), tcp("droplet", GATEWAY, 3128), ping("droplet", XRAY),
              tcp("droplet", XRAY, 22), ping("droplet", "10.0.0.1"),
              tcp("node2:300", XRAY, XRAY_PORT), tcp("vps", GATEWAY, 3128)]
    assert_refused(world, probes, PRIVACY | LINK | {WARP, "got warp"})


def test_n6_broadcast_multicast_and_unknown_unicast_never_cross_the_link(world):
    """From each side in turn (a broadcast reaches its own bridge's containers)."""
    unknown = "02:de:ad:be:ef:01"
    from_mesh = [ping("200", "10.1.0.255", "-b"), ping("201", "224.0.0.251"),
                 frame("200", "ff:ff:ff:ff:ff:ff", MCP, "10.0.0.255"),
                 frame("201", "01:00:5e:00:00:fb", API, "224.0.0.251"),
                 frame("200", unknown, MCP, GATEWAY), frame("201", unknown, API, XRAY)]
    assert_refused(world, from_mesh, PRIVACY | LINK | {WARP, "got warp"} | set(NETMAKER))
    from_vmbr0 = [ping("100", "10.0.0.255", "-b"), ping("102", "224.0.0.251"),
                  frame("100", unknown, GATEWAY, MCP),
                  frame("102", "ff:ff:ff:ff:ff:ff", XRAY, "255.255.255.255"),
                  frame("100", "01:00:5e:00:00:fb", GATEWAY, "224.0.0.251")]
    assert_refused(world, from_vmbr0, MGMT | LINK | set(NETMAKER) | {"got droplet"})


def test_n8_forged_sources_get_nowhere(world):
    """A management container claiming the xray client's or another container's
    address; Netmaker ingress claiming a local container's address (the droplet
    sends from it: WireGuard's allowed-ips and socketnet's admission refuse it)."""
    from topology.labs.world import VPS
    mesh_gw = mac_of(world, "mesh-gw")
    probes = [frame("200", mesh_gw, XRAY, GATEWAY), frame("200", mesh_gw, XRAY, VPS),
              frame("201", mesh_gw, MCP, DROPLET), frame("200", mac_of(world, "veth201"),
                                                         XRAY, API),
              frame("100", mac_of(world, "vmbr0-gw"), MCP, DROPLET)]
    world.exec("droplet", "ip", "addr", "add", f"{GATEWAY}/32", "dev", "lo", check=True)
    try:
        probes += [ping("droplet", XRAY, "-I", GATEWAY), ping("droplet", MCP, "-I", GATEWAY)]
        assert_refused(world, probes, LINK | {WARP} | set(NETMAKER) | PRIVACY | {
            "got 200", "got 201", "got droplet", "got vps"})
    finally:
        world.exec("droplet", "ip", "addr", "del", f"{GATEWAY}/32", "dev", "lo")


def test_n7_with_the_controller_stopped_nothing_leaks_and_it_comes_back(world):
    """Secure mode: the flows stay, nothing new is classified (a new session to the
    xray client is dropped, not switched), and the N-probes still get nowhere; but a
    management container still opens new connections over Netmaker: their replies
    are replies in the connection tracker and need no decision.
    Runs last: it restarts the host's controller."""
    from topology.labs.world import VPS_PORT
    flows = {b: len(world.lab.ovs.dump_flows(b)) for b in ("mesh", "vmbr0")}
    world.stop_controller("host")
    try:
        vps_nm = world.nm_address["vps"]
        before = settled(world, new_exits=True)
        reply = session(world, "201", vps_nm, VPS_PORT, "while the controller is away")
        assert f"vps {vps_nm}:{VPS_PORT} saw {API}" in reply
        assert set(before.new_vps_connections()) == {(API, vps_nm)}
        assert not before.sent().get(WARP)
        probes = [tcp("droplet", XRAY, XRAY_PORT),  # needs a decision: none while away
                  tcp("200", XRAY, XRAY_PORT), ping("201", GATEWAY), ping("100", MCP),
                  ping("102", DROPLET), ping("droplet", GATEWAY),
                  frame("200", mac_of(world, "mesh-gw"), XRAY, GATEWAY)]
        # the droplet gets the host's "prohibited" errors, which do not count
        assert_refused(world, probes, PRIVACY | LINK | {WARP, "got warp", "got vps",
                                                        "got 200", "got droplet"})
        # no flow comes or goes: decisions live in the connection tracker
        assert {b: len(world.lab.ovs.dump_flows(b)) for b in flows} == flows
    finally:
        world.start_controller("host")
    from topology.labs.world import VPS, WARP_EXIT
    reply = session(world, "droplet", XRAY, XRAY_PORT, "after restart")
    assert f"{VPS}:443 saw {WARP_EXIT}" in reply


# --------------------------------------------------------------------------- the demo


def test_the_demo_reports_each_probe_by_its_own_packet_only(world):
    """`socketnet demo`'s show: each probe gets through or not as the promise says,
    and what the show prints for it (tables, purposes, exits) is its own packet's
    trace: with the gateway pinging the VPS through WARP all along, no refused
    probe is shown an exit, and each probe that got through is shown the exit
    its destination is behind."""
    import threading

    from topology.labs import demo
    stop = threading.Event()

    def background():
        while not stop.is_set():
            world.pings(world.host.privacy_bridge.containers[0].id, "203.0.113.10")
    noise = threading.Thread(target=background, daemon=True)
    noise.start()
    try:
        shown = []
        for probe in demo.probes(world):
            if probe.expect_through:  # a slow machine may take more than one try
                wait_until(lambda: demo.run_probe(world, probe)[0], 60, f"{probe} through")
            else:
                assert not demo.run_probe(world, probe)[0], probe
            lines = demo.path_lines(world, demo.probe_paths(world, probe))
            shown.append((probe, lines))
    finally:
        stop.set()
        noise.join(10)
    for probe, lines in shown:
        text = "\n".join(lines)
        assert "=>" in text, (probe, text)
        exits = [line for line in lines if " exit: " in line]
        if probe.expect_through:
            assert exits, (probe, text)
        else:
            assert not exits and "dropped by table" in text, (probe, text)
    w1 = "\n".join(shown[0][1])
    assert shown[0][0].rule == "W1-W3" and "classifier decides privacy" in w1
    assert "exit: veth102 (xray-client)" in w1
