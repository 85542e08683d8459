"""The lab itself (topology/labs/lab.py, topology/labs/ovs.py): real bridges, real namespaces,
real packets between them, and traces that name ports. No controller here: flows are
written by hand with ovs-ofctl. Every packet stays inside namespaces the lab made."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket

import pytest
from pyroute2 import netns

from topology.labs.lab import Lab, LabError
from topology.labs.ovs import lab_datapath
from topology.system import process_alive, wait_until

MESH_NUMBERS = {"mesh-gw": 1, "to-privacy": 2, "veth200": 3, "veth201": 4}
VMBR0_NUMBERS = {"vmbr0-gw": 1, "from-mesh": 2, "veth100": 3, "veth102": 4}
BROADCAST_FROM_200 = "in_port=veth200,arp,dl_src=02:00:0a:01:00:c8,dl_dst=ff:ff:ff:ff:ff:ff"


def pings(lab, container_id, address) -> bool:
    return lab.exec(container_id, "ping", "-c1", "-W1", "-n", address).returncode == 0


def wait_ping(lab, container_id, address, timeout=8.0):
    """Ping until one answer (the first may wait for ARP), or fail after `timeout`."""
    wait_until(lambda: pings(lab, container_id, address), timeout,
               f"{address} to answer ping from container {container_id}")


def vsctl_json(lab, *args):
    return json.loads(lab.ovs.vsctl("--format=json", *args))


def port_stats(lab, bridge, port) -> dict:
    """{"rx_packets": n, "tx_packets": n} of one port as OVS counts it now (a port
    stats request: the database's statistics column is refreshed every 5 s only)."""
    out = lab.ovs.ofctl("dump-ports", bridge, port)
    return {f"{way}_packets": int(re.search(rf"\b{way} pkts=(\d+)", out).group(1))
            for way in ("rx", "tx")}


def add_normal(lab, bridge="mesh"):
    lab.ovs.ofctl("add-flow", bridge, "priority=0,actions=normal")


def test_bridges_are_on_the_labs_datapath_secure_openflow13_without_in_band(lab, seed_host):
    # netdev here; system (the kernel module, `system@ovs-system`) in the VM lab.
    datapath = lab_datapath()
    assert f"{datapath}@ovs-{datapath}:" in lab.ovs.appctl("dpif/show")
    for bridge in (seed_host.mesh.name, seed_host.privacy_bridge.name):
        assert lab.ovs.vsctl("get", "Bridge", bridge, "datapath_type") == datapath
        assert lab.ovs.vsctl("get", "Bridge", bridge, "fail_mode") == "secure"
        assert lab.ovs.vsctl("get", "Bridge", bridge, "protocols") == "[OpenFlow13]"
        assert lab.ovs.vsctl("get", "Bridge", bridge,
                             "other-config:disable-in-band") == '"true"'
        # No flows at all, not even OVS's hidden in-band ones (priority 180000+).
        assert lab.ovs.dump_flows(bridge) == []
        hidden = lab.ovs.appctl("bridge/dump-flows", bridge).splitlines()
        assert not [f for f in hidden if "table_id=254" not in f and f.strip()]


def test_ports_get_the_numbers_they_asked_for_in_config_order(lab, seed_host):
    for bridge in seed_host.bridges:
        expected = {p.name: n for n, p in enumerate(bridge.ports, start=1)}
        assert lab.port_numbers(bridge.name) == expected
    assert lab.port_numbers("mesh") == MESH_NUMBERS
    assert lab.port_numbers("vmbr0") == VMBR0_NUMBERS


def test_containers_have_their_mac_address_route_and_tx_checksum_offload_off(lab, seed_host):
    for c in (*seed_host.mesh.containers, *seed_host.privacy_bridge.containers):
        link = lab.exec(c.id, "ip", "-j", "addr", "show", "eth0", check=True).stdout
        (eth0,) = json.loads(link)
        assert eth0["address"] == c.mac
        assert eth0["operstate"] == "UP"
        inet = [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"]
        assert inet == [(str(c.address), c.network.prefixlen)]
        routes = json.loads(lab.exec(c.id, "ip", "-j", "route", "show", "default").stdout)
        assert [r["gateway"] for r in routes] == [str(c.gateway)]
        features = lab.exec(c.id, "ethtool", "-k", "eth0", check=True).stdout
        assert "tx-checksumming: off" in features
    # The adapters hold the gateway addresses, in the host's (OVS) netns.
    host_addrs = json.loads(lab.exec("host", "ip", "-j", "-4", "addr").stdout)
    by_name = {i["ifname"]: [f'{a["local"]}/{a["prefixlen"]}' for a in i["addr_info"]]
               for i in host_addrs}
    assert by_name["mesh-gw"] == ["10.1.0.1/24"]
    assert by_name["vmbr0-gw"] == ["10.0.0.1/24"]


def test_without_flows_a_secure_bridge_forwards_nothing(lab):
    before = port_stats(lab, "mesh", "veth201")
    assert not pings(lab, "200", "10.1.0.201")
    # The ARP requests did reach the bridge; nothing left it towards veth201.
    wait_until(lambda: port_stats(lab, "mesh", "veth200")["rx_packets"] > 0, 5,
               "veth200 to receive the ping's ARP")
    assert port_stats(lab, "mesh", "veth201")["tx_packets"] == before["tx_packets"]
    assert lab.ovs.trace("mesh", BROADCAST_FROM_200).drop


def test_a_normal_flow_lets_management_containers_ping_and_talk_tcp(lab):
    add_normal(lab)
    assert lab.ovs.dump_flows("mesh") == ["priority=0 actions=NORMAL"]
    wait_ping(lab, "200", "10.1.0.201")
    neigh = json.loads(lab.exec("200", "ip", "-j", "neigh", "show", "10.1.0.201").stdout)
    assert neigh[0]["lladdr"] == "02:00:0a:01:00:c9"

    # 200 kB over TCP: with tx checksum offload left on, this is what silently dies.
    server = lab.popen("201", "socat", "TCP-LISTEN:9573,bind=10.1.0.201,reuseaddr",
                       "SYSTEM:head -c 200000 /dev/zero")
    wait_until(lambda: _listening(server.pid, "10.1.0.201", 9573), 5, "server on 201:9573")
    got = lab.exec("200", "sh", "-c",
                   "socat -T5 -u TCP:10.1.0.201:9573,connect-timeout=5 - | wc -c",
                   timeout=15)
    assert got.stdout.strip() == "200000", got.stderr


def test_the_adapter_answers_as_the_containers_gateway(lab):
    add_normal(lab)
    add_normal(lab, "vmbr0")
    wait_ping(lab, "200", "10.1.0.1")
    wait_ping(lab, "102", "10.0.0.1")


def test_trace_names_output_ports_drops_and_packet_ins(lab):
    assert lab.ovs.trace("mesh", BROADCAST_FROM_200).drop

    lab.ovs.ofctl("add-flow", "mesh", "priority=10,in_port=veth200,actions=output:veth201")
    only = lab.ovs.trace("mesh", BROADCAST_FROM_200)
    assert only.ports == ["veth201"] and not only.drop and not only.controller

    lab.ovs.ofctl("add-flow", "mesh", "priority=20,in_port=veth200,actions=controller")
    punted = lab.ovs.trace("mesh", BROADCAST_FROM_200)
    assert punted.controller and punted.ports == [] and not punted.drop

    lab.ovs.ofctl("add-flow", "mesh", "priority=30,in_port=veth200,actions=normal")
    flooded = lab.ovs.trace("mesh", BROADCAST_FROM_200)
    # NORMAL floods to every other port, the bridge's LOCAL port (named as the bridge)
    # and the inter-bridge link included.
    assert sorted(flooded.ports) == ["mesh", "mesh-gw", "to-privacy", "veth201"]


def test_trace_follows_the_inter_bridge_link_with_rewritten_macs(lab):
    xray_mac = "02:00:0a:00:00:66"
    lab.ovs.ofctl("add-flow", "mesh", "priority=10,in_port=veth200,ip,"
                  f"actions=set_field:{xray_mac}->eth_dst,output:to-privacy")
    # Matches only the rewritten MAC: the trace must carry the rewrite across.
    lab.ovs.ofctl("add-flow", "vmbr0",
                  f"priority=10,ip,in_port=from-mesh,dl_dst={xray_mac},nw_dst=10.0.0.102,"
                  "actions=output:veth102")
    path = lab.trace("mesh", "in_port=veth200,tcp,dl_src=02:00:0a:01:00:c8,"
                             "dl_dst=02:00:00:00:00:01,nw_src=10.1.0.200,"
                             "nw_dst=10.0.0.102,tcp_dst=8080")
    assert [h.bridge for h in path.hops] == ["mesh", "vmbr0"]
    assert path.ports == {("vmbr0", "veth102")}
    (exit_,) = path.exits
    assert exit_.flow["dl_dst"] == xray_mac and exit_.flow["nw_dst"] == "10.0.0.102"
    assert exit_.flow["tcp_dst"] == "8080"
    assert path.hops[0].final_flow["dl_dst"] == xray_mac

    # Nothing on vmbr0 for other packets: they stop there.
    other = lab.trace("mesh", "in_port=veth200,udp,nw_src=10.1.0.200,nw_dst=10.0.0.100")
    assert other.drop and len(other.hops) == 2


def test_trace_gathers_outputs_across_conntrack_recirculation(lab):
    flows = ["table=0,priority=10,ip,in_port=veth200,actions=ct(commit,zone=1,table=1)",
             "table=1,priority=10,ct_state=+trk+new,actions=output:veth201",
             "table=1,priority=10,ct_state=+trk+est,actions=output:mesh-gw"]
    for flow in flows:
        lab.ovs.ofctl("add-flow", "mesh", flow)
    packet = "in_port=veth200,tcp,nw_src=10.1.0.200,nw_dst=10.1.0.201,tcp_dst=9573"
    new = lab.ovs.trace("mesh", packet)
    assert len(new.datapath_actions) == 2 and new.ports == ["veth201"]
    assert lab.ovs.trace("mesh", packet, ct_next="trk,est").ports == ["mesh-gw"]


def test_attach_reaches_a_controller_on_the_callers_loopback(lab, seed_host):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        lab.attach(f"tcp:127.0.0.1:{port}")
        for bridge in seed_host.bridges:
            (controller,) = vsctl_json(lab, "--columns=target,connection_mode",
                                       "list", "Controller",
                                       lab.ovs.vsctl("get", "Bridge", bridge.name,
                                                     "controller").strip("[]"))["data"]
            assert controller == [f"tcp:127.0.0.1:{port}", "out-of-band"]
        hellos = []
        for _ in seed_host.bridges:  # one connection per bridge, through the relay
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                header = conn.recv(8)
                hellos.append((header[0], header[1]))
        assert hellos == [(0x04, 0), (0x04, 0)]  # OpenFlow 1.3 HELLO
    lab.detach()
    assert lab.ovs.vsctl("list", "Controller") == ""


def test_a_container_port_removed_and_added_later(lab, seed_host):
    add_normal(lab)
    removed_ns = lab.ns("201")
    lab.remove_port("mesh", "veth201")
    assert "veth201" not in lab.port_numbers("mesh")
    assert removed_ns not in netns.listnetns()
    with pytest.raises(LabError):
        lab.ns("201")

    api = seed_host.mesh.port("veth201").container
    assert lab.add_container_port(api, ofport=4) == 4
    assert lab.port_numbers("mesh") == MESH_NUMBERS
    wait_ping(lab, "200", "10.1.0.201")

    # A container nobody configured: next free number.
    late = dataclasses.replace(api, id="209", veth="veth209")
    assert lab.add_container_port(late) == 5
    assert lab.port_numbers("mesh")["veth209"] == 5


def test_two_labs_run_side_by_side(make_lab):
    first, second = make_lab(), make_lab()
    assert not set(first.namespaces) & set(second.namespaces)
    assert first.ovs.pids["ovs-vswitchd"] != second.ovs.pids["ovs-vswitchd"]
    add_normal(first)
    add_normal(second)
    wait_ping(first, "200", "10.1.0.201")
    wait_ping(second, "201", "10.1.0.200")
    # Same interface names in both, each in its own namespaces.
    assert first.port_numbers("mesh") == second.port_numbers("mesh") == MESH_NUMBERS


def test_down_removes_everything_it_made_and_is_idempotent(seed_host, lab_name):
    lab = Lab(seed_host, lab_name).up()
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            lab.attach(f"tcp:127.0.0.1:{listener.getsockname()[1]}")
        server = lab.popen("100", "sleep", "60")
        namespaces, pids, directory = lab.namespaces, lab.ovs.pids, lab.ovs.dir
        assert len(namespaces) == 5 and len(pids) == 4 and os.path.isdir(directory)
    finally:
        lab.down()
    assert not set(namespaces) & set(netns.listnetns())
    assert not [name for name, pid in pids.items() if process_alive(pid)]
    assert server.poll() is not None
    assert not os.path.exists(directory)
    lab.down()  # again: nothing to do, no error


def _listening(pid: int, address: str, port: int) -> bool:
    want = "{:08X}:{:04X}".format(
        int.from_bytes(socket.inet_aton(address), "little"), port)
    with open(f"/proc/{pid}/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A"
                   for line in f.readlines()[1:])
