"""The seed host for real: the lab's bridges and containers, real WireGuard for
nm-privacy (to a "droplet" namespace) and warp0 (to a "WARP" namespace with an
internet address behind it), `host apply` for the routed glue, and socketnet
attached. Real packets, only inside namespaces this test made.

The WARP end accepts only 172.16.0.2 from the host (its allowed-ips), so a privacy
container's ping answered from the internet proves the SNAT too.
"""
from __future__ import annotations

import subprocess

import pytest
from pyroute2 import IPRoute, netns

from topology.host.apply import HostSystem, apply, read_state
from topology.host.plan import plan
from topology.labs.ovs import lab_datapath
from topology.labs.wireguard import WgEnd, WireGuardLink
from topology.system import wait_until

from tests.integration.conftest import WIREGUARD, require, unique_lab_name

INTERNET = "198.51.100.1"  # on the WARP namespace's lo: "the internet"
DROPLET = "10.101.0.5"


def pings(lab, where, address) -> bool:
    return lab.exec(where, "ping", "-c1", "-W1", "-n", address).returncode == 0


def in_ns(ns, *cmd):
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True)


@pytest.fixture
def routed(attached):
    """(lab, droplet netns, warp netns): the seed lab attached to socketnet, its
    WireGuard uplinks up, and `host apply` done."""
    require(*WIREGUARD, "nft", "sysctl")
    lab, ctl = attached
    host_ns = lab.ns("host")
    made, links = [], []
    try:
        droplet, warp = (f"sn-{unique_lab_name()}-{w}" for w in ("drop", "warp"))
        for ns in (droplet, warp):
            netns.create(ns)
            made.append(ns)
            with IPRoute(netns=ns) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with IPRoute(netns=warp) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=INTERNET,
                     prefixlen=32)
        links.append(WireGuardLink(f"{lab.name}-nm",
            WgEnd(host_ns, "nm-privacy", "10.101.0.1/16", ("10.101.0.0/16",),
                  "192.0.2.1/30", 51821),
            WgEnd(droplet, "netmaker", f"{DROPLET}/16",
                  ("10.101.0.1/32", "10.1.0.0/24", "10.0.0.0/24"), "192.0.2.2/30", 51821,
                  routes=("10.1.0.0/24", "10.0.0.0/24"))).up())
        links.append(WireGuardLink(f"{lab.name}-warp",
            WgEnd(host_ns, "warp0", "172.16.0.2/32", ("0.0.0.0/0",), "192.0.2.5/30", 2408),
            WgEnd(warp, "wsrv0", "172.16.0.1/32", ("172.16.0.2/32",), "192.0.2.6/30", 2408,
                  routes=("172.16.0.2/32",))).up())
        system = HostSystem(netns=host_ns, vsctl=lab.ovs.vsctl)
        result = plan(lab.host, read_state(lab.host, system), datapath_type=lab_datapath(),
                      controller=ctl.target)
        assert [f.subject for f in result.findings] == ["net.ipv4.ip_forward"], \
            "\n".join(map(str, result.findings))
        # the lab built the bridges, ports and adapters as apply would: only the glue
        # and the conntrack zones' timeout policies are left
        assert not [a for a in result.actions if "ovs-vsctl" in str(a)
                    and "zone-tp" not in str(a) and "create Datapath" not in str(a)
                    ], result.script()
        apply(result, system)
        assert plan(lab.host, read_state(lab.host, system), datapath_type=lab_datapath(),
                    controller=ctl.target).actions == ()
        yield lab, droplet, warp
    finally:
        for link in reversed(links):
            link.down()
        for ns in made:
            if ns in netns.listnetns():
                netns.remove(ns)


def test_privacy_containers_reach_the_internet_through_warp_only_as_172_16_0_2(routed):
    lab, droplet, warp = routed
    for container in ("100", "102"):  # W4 the gateway, W2 the xray client
        wait_until(lambda: pings(lab, container, INTERNET), 8,
                   f"{INTERNET} to answer container {container} through warp0")


def fetch(lab, droplet, container, address, port, size=20000):
    """The droplet reads `size` bytes over TCP from a server in `container`: more than
    one WireGuard MTU, so MSS clamping and checksums count. True when all arrive."""
    lab.popen(container, "socat", f"TCP-LISTEN:{port},bind={address},reuseaddr,fork",
              f"SYSTEM:head -c {size} /dev/zero")

    def once():
        got = in_ns(droplet, "sh", "-c", f"socat -T3 -u TCP:{address}:{port},"
                                         "connect-timeout=2 - | wc -c")
        return got.stdout.strip() == str(size)
    return wait_until(once, 10, f"{size} bytes from {address}:{port} to the droplet")


def test_netmaker_reaches_a_management_service_and_its_replies_come_back(routed):
    lab, droplet, warp = routed
    assert fetch(lab, droplet, "201", "10.1.0.201", 9573)  # W5, classified management


def test_the_droplet_reaches_the_xray_client_and_its_replies_leave_over_netmaker(routed):
    lab, droplet, warp = routed
    assert fetch(lab, droplet, "102", "10.0.0.102", 8080)  # W1 in, W3 out


def test_what_the_glue_and_the_filter_refuse(routed):
    lab, droplet, warp = routed
    wait_until(lambda: pings(lab, "100", INTERNET), 8, "warp0 to work at all")
    # N3: privacy never reaches Netmaker, not even the droplet
    assert not pings(lab, "100", DROPLET)
    # N4: Netmaker reaches neither the gateway container nor the privacy adapter
    assert in_ns(droplet, "ping", "-c1", "-W1", "-n", "10.0.0.100").returncode != 0
    assert in_ns(droplet, "ping", "-c1", "-W1", "-n", "10.0.0.1").returncode != 0  # weak host
    # N1: management never reaches the internet (there is no way but warp0)
    assert not pings(lab, "200", INTERNET)
