"""topology.host.nft: socketnet's nftables tables, pure. The forward allow-list and
nothing more, Netmaker ingress policed per source and per peer, SNAT to WARP, and
the host's IP stack kept off the switch ports; the digest follows the content."""
from __future__ import annotations

from dataclasses import replace

import pytest

from topology.host.nft import nft_script


def test_nft_forward_policy_drop_with_the_allow_list(seed_host):
    script, digest = nft_script(seed_host)
    assert script.startswith("table inet socketnet {}\ndelete table inet socketnet\n"
                             "table arp socketnet {}\ndelete table arp socketnet\n")
    assert "type filter hook forward priority filter; policy drop;" in script
    assert script.count(f'comment "socketnet plan {digest}: ') == 1
    # W1: Netmaker to the xray client's service only
    assert ('iifname "nm-privacy" oifname "mesh-gw" ip saddr { 10.101.0.0/16, 100.64.0.0/10 } '
            "ip daddr 10.0.0.102 tcp dport 8080 accept") in script
    # W5 both ways
    assert ('iifname "mesh-gw" oifname "nm-privacy" ip saddr 10.1.0.0/24 '
            "ip daddr { 10.2.0.0/24, 10.101.0.0/16, 100.64.0.0/10 } accept") in script
    assert ('iifname "nm-privacy" oifname "mesh-gw" ip saddr '
            "{ 10.2.0.0/24, 10.101.0.0/16, 100.64.0.0/10 } ip daddr 10.1.0.0/24 accept") in script
    # privacy to warp, never to private ranges
    assert 'iifname "vmbr0-gw" oifname "warp0" ip saddr 10.0.0.0/24 ip daddr != {' in script
    assert "ct state established,related accept" in script
    # nothing between the two adapters
    assert 'iifname "mesh-gw" oifname "vmbr0-gw"' not in script
    assert 'iifname "vmbr0-gw" oifname "mesh-gw"' not in script


def chain(script, name) -> list:
    body = script.split(f"\tchain {name} {{\n", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_netmaker_ingress_is_policed_before_the_mesh_adapter(seed_host):
    """What is not a known connection jumps to netmaker_new before W1 and W5 may
    accept it: known sources (node2's subnet, the droplet's rule) have their own
    lane; any other source is limited alone, then with all the others."""
    script, _ = nft_script(seed_host)
    forward = chain(script, "forward")
    jump = next(i for i, r in enumerate(forward) if "jump netmaker_new" in r)
    assert forward[jump].startswith('iifname "nm-privacy" oifname "mesh-gw" jump netmaker_new')
    assert "ct state" not in forward[jump]  # invalid packets are policed too
    assert jump > next(i for i, r in enumerate(forward) if "established,related accept" in r)
    assert jump < min(i for i, r in enumerate(forward) if r.startswith(("iifname", "ip"))
                      and " accept " in r and "W" in r)
    rules = chain(script, "netmaker_new")
    known = "ip saddr { 10.2.0.0/24, 10.101.0.5/32 }"
    assert rules[0].startswith(f"{known} limit rate over 2000/second burst 200 packets "
                               'counter name "ingress_known_over" drop')
    assert rules[1].startswith(f"{known} return")
    assert rules[2].startswith("update @ingress_sources { ip saddr limit rate over 200/second "
                               'burst 200 packets } counter name "ingress_source_over" drop')
    assert rules[3].startswith('limit rate over 2000/second burst 200 packets '
                               'counter name "ingress_over" drop')
    assert len(rules) == 4
    for name in ("ingress_known_over", "ingress_source_over", "ingress_over"):
        assert f"\tcounter {name} {{}}" in script
    assert "set ingress_sources {" in script and "flags dynamic,timeout;" in script


def test_one_netmaker_peer_is_policed_before_wireguard_decrypts(seed_host):
    """Per peer endpoint, at the uplink's UDP port, in the raw prerouting chain:
    before conntrack, before the WireGuard receiver's queue."""
    script, _ = nft_script(seed_host)
    v4, v6 = [r for r in chain(script, "prerouting") if "netmaker_peers" in r]
    assert v4.startswith("udp dport 51821 fib daddr type local update @netmaker_peers "
                         "{ ip saddr . udp sport limit rate over 100000/second burst "
                         '1000 packets } counter name "netmaker_peer_over" drop')
    assert v6.startswith("udp dport 51821 fib daddr type local update @netmaker_peers6 "
                         "{ ip6 saddr . udp sport limit rate over 100000/second burst "
                         '1000 packets } counter name "netmaker_peer_over" drop')
    assert "type ipv4_addr . inet_service;" in script
    assert "type ipv6_addr . inet_service;" in script
    assert script.index("set netmaker_peers {") < script.index("chain prerouting {")
    limits = replace(seed_host.classification.limits, ingress_peer_rate=0)
    off = replace(seed_host, classification=replace(seed_host.classification, limits=limits))
    assert "netmaker_peer" not in nft_script(off)[0]


@pytest.mark.parametrize("rate, per_source, expect", [
    (0, 200, ["return", "update @ingress_sources"]),
    (5000, 0, ["ingress_known_over", "return", "ingress_over"]),
    (0, 0, []),
])
def test_ingress_limits_of_zero_are_off(seed_host, rate, per_source, expect):
    limits = replace(seed_host.classification.limits, ingress_rate=rate,
                     ingress_per_source=per_source)
    host = replace(seed_host, classification=replace(seed_host.classification, limits=limits))
    script, _ = nft_script(host)
    if not expect:
        assert "netmaker_new" not in script and "ingress_" not in script
        return
    rules = chain(script, "netmaker_new")
    assert [next(word for word in expect if word in r) for r in rules] == expect
    if rate:
        assert f"over {rate}/second" in script


def test_with_no_known_sources_every_source_shares_one_lane(seed_host):
    c = replace(seed_host.classification, rules=())
    host = replace(seed_host, nodes=(), classification=c)
    rules = chain(nft_script(host)[0], "netmaker_new")
    assert len(rules) == 2 and rules[0].startswith("update @ingress_sources")


def test_nft_snat_mss_clamp_and_no_weak_host(seed_host):
    script, _ = nft_script(seed_host, warp_address="172.16.0.9")
    assert 'oifname "warp0" snat ip to 172.16.0.9' in script
    assert "tcp flags syn tcp option maxseg size set rt mtu" in script
    assert ('iifname { "nm-privacy", "mesh-gw", "warp0", "vmbr0-gw" } '
            "fib daddr . iif type != { local, broadcast, multicast } drop") in script


def test_nft_leaves_traffic_between_other_interfaces_alone(seed_host):
    """A forward policy of drop would also cut the host's other forwarding (the
    seed's wg0 VPN server): only what touches socketnet's interfaces is judged."""
    script, _ = nft_script(seed_host)
    ours = '{ "nm-privacy", "mesh-gw", "warp0", "vmbr0-gw" }'
    assert f"iifname != {ours} oifname != {ours} accept" in script


def test_the_host_ip_stack_is_kept_off_the_switch_ports(seed_host):
    """With the userspace datapath a switch port is also a kernel interface: the host
    would answer ARP for 10.1.0.1 on veth200 with veth200's MAC, and route what
    arrives there, past the bridge."""
    script, _ = nft_script(seed_host)
    ports = '{ "to-privacy", "veth200", "veth201", "from-mesh", "veth100", "veth102" }'
    inet, arp = script.split("table arp socketnet {\n")
    assert "type filter hook prerouting priority raw; policy accept;" in inet
    assert f"iifname {ports} drop" in inet
    assert "type filter hook input priority filter; policy accept;" in arp
    assert f"iifname {ports} drop" in arp
    assert "mesh-gw" not in arp and "vmbr0-gw" not in arp


def test_the_nft_digest_follows_the_content(seed_host):
    a = nft_script(seed_host)[1]
    assert nft_script(seed_host)[1] == a
    assert nft_script(seed_host, warp_address="172.16.0.9")[1] != a
