"""A packet-in flood from the Netmaker side, in the seed's whole world: for 30 s the
relay (a Netmaker ext-client gateway) sends first packets from random sources of its
clients' range and random ports, as fast as the lab can (unthrottled: one core of
Python and real WireGuard decide the rate). The controller stays responsive, its memory
stays bounded, a privacy connection from a known source (the droplet, over its own
WireGuard peer) started mid-flood is classified within a second, and the drops show:
the host's ingress policing (nftables, before the mesh adapter) in its counters, the
packet-in meter in socketnet's metrics.
"""
from __future__ import annotations

import json
import re
import subprocess
import textwrap
import threading
import time
import urllib.request

import pytest
import yaml

from topology.ovs import wait_until

from tests.integration.conftest import SEED_YAML, require, unique_lab_name

FLOOD_SECONDS = 30
XRAY, XRAY_PORT = "10.0.0.102", 8080

# TCP SYNs from random sources of NET and random ports to DST:PORT through the
# relay's routes (its WireGuard peer), for SECONDS, unthrottled; prints how many.
FLOOD = textwrap.dedent("""
    import random, socket, struct, sys, time
    net, bits, dst, port, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
        int(sys.argv[4]), float(sys.argv[5])
    base = struct.unpack("!I", socket.inet_aton(net))[0]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst_ip = socket.inet_aton(dst)
    def checksum(b, n):
        t = sum(struct.unpack(f"!{n}H", b))
        t = (t & 0xFFFF) + (t >> 16)
        return ~((t & 0xFFFF) + (t >> 16)) & 0xFFFF
    sent, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        for _ in range(200):
            src = struct.pack("!I", base + random.randrange(1, (1 << bits) - 1))
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, src, dst_ip)
            ip = ip[:10] + struct.pack("!H", checksum(ip, 10)) + ip[12:]
            tcp = struct.pack("!HHIIBBHHH", random.randrange(1024, 65535), port, 1, 0, 0x50,
                              0x02, 64240, 0, 0)
            pseudo = src + dst_ip + struct.pack("!HH", 6, 20)
            tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp, 16)) + tcp[18:]
            try:
                s.sendto(ip + tcp, (dst, 0))
                sent += 1
            except OSError:  # the tunnel's queue is full: the lab's ceiling
                pass
    print(sent)
""")

CONNECT = textwrap.dedent("""
    import socket, sys, time
    started = time.monotonic()
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(f"{time.monotonic() - started:.4f}")
""")


def rss_kb(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def metric(url, name, **labels) -> float:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def host_counters(world) -> dict:
    """The host's ingress policing counters (host apply's nftables)."""
    doc = json.loads(world.exec("host", "nft", "-j", "list", "counters", "table", "inet",
                                "socketnet", check=True).stdout)
    return {item["counter"]["name"]: item["counter"]["packets"]
            for item in doc["nftables"] if "counter" in item}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require("wireguard-go", "wg", "nft", "sysctl")
    from topology.world import World
    data = yaml.safe_load(SEED_YAML.read_text())
    data["socketnet"]["metrics"] = {"stats_interval": 1}
    path = tmp_path_factory.mktemp("flood") / "seed.yaml"
    path.write_text(yaml.safe_dump(data))
    w = World(str(path), unique_lab_name(), state_root=str(tmp_path_factory.mktemp("labs")))
    w.up()
    try:
        yield w
    finally:
        w.down()


def test_a_flood_of_netmaker_sources_is_policed_before_the_switch_and_the_droplet_gets_through(
        world):
    ctl = world.controllers["host"]
    limits = world.host.classification.limits
    assert (world.exec("droplet", "python3", "-c", CONNECT, XRAY, str(XRAY_PORT), "3",
                       check=True).returncode == 0), "no W1 before the flood"
    before = host_counters(world)
    rss_before = rss_kb(ctl.pid)

    flood = subprocess.Popen(
        ["ip", "netns", "exec", world.ns("relay"), "python3", "-c", FLOOD,
         str(world.clients.network), str(32 - world.clients.prefixlen), XRAY, str(XRAY_PORT),
         str(FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True)
    health, stop = [], threading.Event()

    def ask_health():
        while not stop.is_set():
            started = time.monotonic()
            with urllib.request.urlopen(f"{ctl.rest_url}/v1/health", timeout=5) as r:
                assert r.status == 200
            health.append(time.monotonic() - started)
            time.sleep(0.05)

    asker = threading.Thread(target=ask_health, daemon=True)
    asker.start()
    try:
        # Mid-flood: the host polices and the packet-in meter drops.
        wait_until(lambda: host_counters(world)["ingress_over"] > before["ingress_over"]
                   and metric(ctl.metrics_url, "socketnet_meter_dropped_packets_total",
                              meter="packet-in") > 0,
                   FLOOD_SECONDS / 2, "the host's policing and the packet-in meter to drop")
        assert flood.poll() is None, "the flood ended before the droplet's connection"
        mid = world.exec("droplet", "python3", "-c", CONNECT, XRAY, str(XRAY_PORT), "1")
        during = host_counters(world)
        sent = int(flood.communicate(timeout=FLOOD_SECONDS + 30)[0])
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
        stop.set()
        asker.join(10)
    after = host_counters(world)

    assert mid.returncode == 0, f"the droplet's connection mid-flood failed: {mid.stderr}"
    assert float(mid.stdout.split()[0]) < 1.0
    # The flood was more than the meter lets through, and the host cut it.
    assert sent > 2 * limits.packet_in_rate * FLOOD_SECONDS, sent
    policed = after["ingress_over"] - before["ingress_over"] \
        + after["ingress_source_over"] - before["ingress_source_over"]
    assert policed > 0
    # The droplet is a known source: its lane was never cut.
    assert after["ingress_known_over"] == before["ingress_known_over"] == during[
        "ingress_known_over"]
    assert len(health) > FLOOD_SECONDS, "the REST API stopped answering"
    health.sort()
    p99 = health[int(len(health) * 0.99) - 1]
    print(f"flood: {sent} SYNs sent in {FLOOD_SECONDS}s, {policed} policed by the host; "
          f"droplet connected in {mid.stdout.split()[0]}s; REST health p50 "
          f"{health[len(health) // 2]:.4f}s p99 {p99:.4f}s; "
          f"RSS {rss_before} -> {rss_kb(ctl.pid)} kB")
    assert rss_kb(ctl.pid) < 150 * 1024
    assert ctl.proc.poll() is None
    # What the meter let through was decided; the rest was dropped and counted.
    assert metric(ctl.metrics_url, "socketnet_classifier_decisions_total") > 1000
    assert metric(ctl.metrics_url, "socketnet_meter_dropped_packets_total",
                  meter="packet-in") > 0
