"""topology.labs.wireguard: real WireGuard (wireguard-go + wg) between network namespaces,
with the seed's interface names in each namespace and machine-unique control names."""
from __future__ import annotations

import os
import subprocess

import pytest
from pyroute2 import IPRoute, netns

from topology.kind import netlink_kind
from topology.labs.wireguard import WgEnd, WireGuardLink, control_socket
from topology.model import Kind
from topology.system import process_alive

from tests.integration.conftest import WIREGUARD, require, unique_lab_name


@pytest.fixture(autouse=True)
def wireguard_tools():
    require(*WIREGUARD)


@pytest.fixture
def namespaces():
    """Factory: fresh network namespaces with lo up, removed after the test."""
    made = []

    def make(count):
        names = []
        for _ in range(count):
            name = f"sn-{unique_lab_name()}-wg"
            netns.create(name)
            made.append(name)
            with IPRoute(netns=name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            names.append(name)
        return names

    yield make
    for name in made:
        if name in netns.listnetns():
            netns.remove(name)


def ping(ns, address):
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", address],
                          capture_output=True, text=True)


def warp_like(tag, host_ns, server_ns):
    """host: warp0 172.16.0.2/32 sending everything; server: the far end."""
    return WireGuardLink(
        tag,
        WgEnd(host_ns, "warp0", "172.16.0.2/32", ("0.0.0.0/0",), "192.0.2.1/30", 2408,
              routes=("172.16.0.1/32",)),
        WgEnd(server_ns, "wsrv0", "172.16.0.1/32", ("172.16.0.2/32",), "192.0.2.2/30", 2408,
              routes=("172.16.0.2/32",)))


def test_a_ping_crosses_real_wireguard_between_namespaces(namespaces):
    host_ns, server_ns = namespaces(2)
    tag = unique_lab_name()
    with warp_like(tag, host_ns, server_ns) as link:
        result = ping(host_ns, "172.16.0.1")
        assert result.returncode == 0, result.stdout + result.stderr
        assert link.handshake("a") and link.handshake("b")

        # named as the config knows it, and layer 3 as the real thing
        with IPRoute(netns=host_ns) as ipr:
            (msg,) = ipr.get_links(ipr.link_lookup(ifname="warp0")[0])
            assert netlink_kind(msg) is Kind.L3
            assert msg.get_attr("IFLA_MTU") == 1280
        # wireguard-go: a process and a control socket per end; kernel: neither.
        sockets = [control_socket(name) for name in link.control.values()]
        pids = list(link.pids.values())
        go = link.kind == "go"
        assert [os.path.exists(s) for s in sockets] == [go, go]
        assert len(pids) == (2 if go else 0)
    assert not any(os.path.exists(s) for s in sockets)
    assert not any(process_alive(p) for p in pids)
    with IPRoute(netns=host_ns) as ipr:
        assert not ipr.link_lookup(ifname="warp0")


def test_two_tunnels_with_the_same_interface_names_run_side_by_side(namespaces):
    a_host, a_server, b_host, b_server = namespaces(4)
    with warp_like(unique_lab_name(), a_host, a_server) as one, \
            warp_like(unique_lab_name(), b_host, b_server) as two:
        # wireguard-go's control sockets share one directory: machine-unique names.
        # Kernel interfaces are per namespace: both tunnels' are warp0 and wsrv0.
        assert set(one.control.values()).isdisjoint(two.control.values()) \
            == (one.kind == "go")
        for host_ns, server_ns in ((a_host, a_server), (b_host, b_server)):
            assert ping(host_ns, "172.16.0.1").returncode == 0
