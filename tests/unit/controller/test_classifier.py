"""controller.classifier: a packet-in's frame becomes a Flow5, the Flow5 a decision
that only ever sends privacy to the xray client's service and management to a
management container, the decision a table-1 flow; the cache keeps the switch
within its caps. Also the `socketnet classify` command, which shows all of it."""
import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from netaddr import IPAddress, IPNetwork, IPSet

from controller.classifier import (
    CLASS_OF_MARK, MARKS, OFPP_TABLE, P_SOURCE_BLOCK, PROTOCOL_NUMBERS, RETRIES, RETRY_WINDOW,
    Classifier, Decision, DecisionCache, DropReason, Flow5, Verdict, address_int,
    commit_actions, parse_ipv4, seed_service_rules, source_block_flow,
)
from controller.cli.main import main
from controller.compiler import P_CLASS
from controller.flow import CT, ETH_TYPE_IP, Output
from controller.pipeline import CLASSIFY, Mark, Purpose, check_flow
from topology.config import load_host
from topology.model import (Classification, ClassificationLimits, ClassRule,
                            TrafficClass)

SEED = Path(__file__).resolve().parents[3] / "examples" / "seed.yaml"
HOST = load_host(SEED)
PRIVACY, MANAGEMENT, DROP = TrafficClass.PRIVACY, TrafficClass.MANAGEMENT, TrafficClass.DROP
DROPLET, PEER, OUTSIDER = "10.101.0.5", "100.64.0.9", "192.0.2.7"
XRAY, MCP, API = "10.0.0.102", "10.1.0.200", "10.1.0.201"
TCP, UDP, ICMP, GRE = 6, 17, 1, 47


def host_with(**changes):
    """The seed host with its classification changed."""
    return replace(HOST, classification=replace(HOST.classification, **changes))


def rule(name, cls, src=None, dst=None, protocol="any", src_ports=(), dst_ports=()):
    return ClassRule(name, cls, IPSet(src) if src is not None else None,
                     IPSet(dst) if dst is not None else None, protocol, src_ports, dst_ports)


# --- frames ---------------------------------------------------------------------

MACS = bytes.fromhex("02000a000066" "02aabbccddee")


def frame(src=DROPLET, dst=XRAY, proto=TCP, sport=40000, dport=8080, options=b"",
          fragment=0, ethertype=ETH_TYPE_IP, payload=b"payload"):
    """An Ethernet II frame with an IPv4 header (and `options`) and an L4 header."""
    if proto in (TCP, UDP):
        l4 = struct.pack("!HH", sport, dport) + b"\0" * (16 if proto == TCP else 4)
    elif proto == ICMP:
        l4 = bytes([8, 0, 0, 0, 0, 1, 0, 1])
    else:
        l4 = b"\0" * 4
    header_len = 20 + len(options)
    total = header_len + len(l4) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | header_len // 4, 0, total, 1, fragment, 64, proto, 0,
                     IPAddress(src).packed, IPAddress(dst).packed)
    return MACS + struct.pack("!H", ethertype) + ip + options + l4 + payload


def test_parse_reads_tcp_udp_and_icmp():
    assert parse_ipv4(frame()) == Flow5.of(DROPLET, XRAY, "tcp", 40000, 8080)
    assert parse_ipv4(frame(proto=UDP, sport=53, dport=5353)) == Flow5.of(DROPLET, XRAY, "udp",
                                                                          53, 5353)
    assert parse_ipv4(frame(proto=ICMP)) == Flow5.of(DROPLET, XRAY, "icmp")


def test_parse_gives_other_ip_protocols_without_ports():
    assert parse_ipv4(frame(proto=GRE)) == Flow5(address_int(DROPLET), address_int(XRAY), GRE, 0, 0)


@pytest.mark.parametrize("words", [1, 2, 10])
def test_parse_finds_the_ports_after_ip_options(words):
    options = bytes([1]) * (4 * words)  # NOPs
    assert parse_ipv4(frame(options=options, sport=1, dport=2)) == Flow5.of(DROPLET, XRAY, "tcp",
                                                                            1, 2)


@pytest.mark.parametrize("ethertype", [0x8100, 0x88A8, 0x0806, 0x86DD])
def test_parse_refuses_other_ethertypes_vlan_tags_included(ethertype):
    assert parse_ipv4(frame(ethertype=ethertype)) is None


def test_parse_refuses_later_fragments_but_reads_the_first():
    assert parse_ipv4(frame(fragment=0x2000 | 185)) is None  # MF, offset 185
    assert parse_ipv4(frame(fragment=185)) is None  # the last fragment
    assert parse_ipv4(frame(fragment=0x2000)) == Flow5.of(DROPLET, XRAY, "tcp", 40000, 8080)
    assert parse_ipv4(frame(fragment=0x4000)) is not None  # DF


def _patched(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1:]


@pytest.mark.parametrize("offset, value, why", [
    (14, 0x65, "IP version 6 in an IPv4 ethertype"),
    (14, 0x44, "header length of 16 bytes"),
    (17, 19, "total length shorter than the header"),
    (17, 22, "total length without the ports"),
])
def test_parse_refuses_malformed_headers(offset, value, why):
    data = frame()
    if offset == 17:
        data = _patched(data, 16, 0)
    assert parse_ipv4(_patched(data, offset, value)) is None, why


def test_parse_of_every_truncation_is_none_until_the_ports_are_there():
    data = frame(options=b"\1" * 8)
    needed = 14 + 28 + 4
    for n in range(len(data)):
        assert parse_ipv4(data[:n]) == (None if n < needed else parse_ipv4(data)), n


def test_parse_of_a_truncated_icmp_header_options_is_none():
    data = frame(proto=ICMP, options=b"\1" * 8)
    assert parse_ipv4(data[:14 + 24]) is None
    assert parse_ipv4(data[:14 + 28]) == Flow5.of(DROPLET, XRAY, "icmp")


@pytest.mark.parametrize("junk", [None, "", "a string", 42, b"", [1, 2]])
def test_parse_of_what_is_not_a_frame_is_none(junk):
    assert parse_ipv4(junk) is None


def test_parse_takes_bytearray_and_memoryview():
    data = frame()
    assert parse_ipv4(bytearray(data)) == parse_ipv4(memoryview(data)) == parse_ipv4(data)


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_parse_never_raises(data):
    parse_ipv4(data)
    parse_ipv4(frame()[:14] + data)


_ipv4 = st.integers(0, 2**32 - 1).map(lambda i: str(IPAddress(i, 4)))


@settings(max_examples=150)
@given(src=_ipv4, dst=_ipv4, proto=st.sampled_from(["tcp", "udp", "icmp"]),
       sport=st.integers(0, 65535), dport=st.integers(0, 65535), options=st.integers(0, 10))
def test_parse_agrees_with_os_ken_packet_library(src, dst, proto, sport, dport, options):
    from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("02:aa:bb:cc:dd:ee", "02:00:0a:00:00:66", ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(header_length=5 + options, proto=PROTOCOL_NUMBERS[proto],
                               src=src, dst=dst, option=b"\1" * (4 * options) or None))
    if proto == "tcp":
        pkt.add_protocol(tcp.tcp(src_port=sport, dst_port=dport))
    elif proto == "udp":
        pkt.add_protocol(udp.udp(src_port=sport, dst_port=dport))
    else:
        pkt.add_protocol(icmp.icmp())
        sport = dport = 0
    pkt.serialize()
    assert parse_ipv4(bytes(pkt.data)) == Flow5.of(src, dst, proto, sport, dport)


def test_flow5_of_refuses_ports_without_tcp_or_udp_and_bad_addresses():
    with pytest.raises(ValueError):
        Flow5.of(DROPLET, XRAY, "icmp", 0, 8)
    with pytest.raises(ValueError):
        Flow5.of("10.101.0", XRAY, "tcp", 1, 2)
    with pytest.raises(ValueError):
        Flow5.of(DROPLET, XRAY, "tcp", 1, 65536)


def test_flow5_reads_as_its_packet():
    assert str(TCP_FLOW) == "tcp 10.101.0.5:40000 -> 10.0.0.102:8080"
    assert str(Flow5.of(DROPLET, MCP, "icmp")) == "icmp 10.101.0.5 -> 10.1.0.200"


# --- deciding -------------------------------------------------------------------


def test_seed_services_become_rules_privacy_for_the_xray_client_management_for_the_mesh():
    assert [(r.name, r.cls, str(r.dst), r.protocol, r.dst_ports)
            for r in seed_service_rules(HOST)] == [
        ("service:xray-client/xray-client", PRIVACY, "IPSet(['10.0.0.102/32'])", "tcp",
         ((8080, 8080),)),
        ("service:mcp-server/mcp", MANAGEMENT, "IPSet(['10.1.0.200/32'])", "tcp", ((9573, 9573),)),
        ("service:op-dbus-api/api", MANAGEMENT, "IPSet(['10.1.0.201/32'])", "tcp",
         ((9573, 9573),)),
        ("service:mcp-server/netmaker-side", MANAGEMENT, "IPSet(['10.1.0.200/32'])", "any", ()),
        ("service:op-dbus-api/netmaker-side", MANAGEMENT, "IPSet(['10.1.0.201/32'])", "any",
         ()),
    ]


def test_the_netmaker_side_may_reach_management_containers_only_from_netmaker_or_nodes():
    (rule,) = [r for r in seed_service_rules(HOST) if r.name == "service:mcp-server/netmaker-side"]
    assert rule.src == HOST.netmaker_side


def test_rules_are_tried_explicit_first_then_seed_services():
    rules = Classifier(HOST).rules
    assert [r.name for r in rules] == ["droplet-to-xray", "service:xray-client/xray-client",
                                       "service:mcp-server/mcp", "service:op-dbus-api/api",
                                       "service:mcp-server/netmaker-side",
                                       "service:op-dbus-api/netmaker-side"]


@pytest.mark.parametrize("flow, expected", [
    (Flow5.of(DROPLET, XRAY, "tcp", 40000, 8080), Decision(PRIVACY, "droplet-to-xray")),
    (Flow5.of(PEER, XRAY, "tcp", 40000, 8080),
     Decision(PRIVACY, "service:xray-client/xray-client")),
    (Flow5.of(PEER, MCP, "tcp", 40000, 9573), Decision(MANAGEMENT, "service:mcp-server/mcp")),
    (Flow5.of(PEER, API, "tcp", 40000, 9573), Decision(MANAGEMENT, "service:op-dbus-api/api")),
    (Flow5.of(PEER, XRAY, "udp", 40000, 8080), Decision(DROP, "default")),
    (Flow5.of(PEER, XRAY, "tcp", 40000, 22), Decision(DROP, "default")),
    # replies to a management container's own connection over Netmaker (W5)
    (Flow5.of(PEER, MCP, "tcp", 443, 40000),
     Decision(MANAGEMENT, "service:mcp-server/netmaker-side")),
    (Flow5.of(PEER, MCP, "icmp"), Decision(MANAGEMENT, "service:mcp-server/netmaker-side")),
    (Flow5.of(OUTSIDER, MCP, "icmp"), Decision(DROP, "default")),
    (Flow5.of(PEER, "10.0.0.100", "tcp", 1, 8080), Decision(DROP, "default")),
    (Flow5.of(PEER, "8.8.8.8", "udp", 1, 53), Decision(DROP, "default")),
    (Flow5.of(OUTSIDER, XRAY, "tcp", 1, 8080),
     Decision(DROP, "unroutable", "service:xray-client/xray-client")),
])
def test_seed_decisions(flow, expected):
    assert Classifier(HOST).decide(flow) == expected


def test_an_explicit_drop_rule_wins_over_the_seed_services():
    host = host_with(rules=(rule("no-peer", DROP, src=["100.64.0.0/10"]),))
    assert Classifier(host).decide(Flow5.of(PEER, XRAY, "tcp", 1, 8080)) == Decision(DROP,
                                                                                     "no-peer")
    assert Classifier(host).decide(Flow5.of(DROPLET, XRAY, "tcp", 1, 8080)).cls is PRIVACY


def test_without_seed_services_only_rules_and_the_default_decide():
    classifier = Classifier(host_with(seed_services=False))
    assert classifier.decide(Flow5.of(DROPLET, XRAY, "tcp", 1, 8080)) == Decision(
        PRIVACY, "droplet-to-xray")
    assert classifier.decide(Flow5.of(PEER, XRAY, "tcp", 1, 8080)) == Decision(DROP, "default")
    assert classifier.decide(Flow5.of(PEER, MCP, "tcp", 1, 9573)) == Decision(DROP, "default")


@pytest.mark.parametrize("flow, overruled", [
    (Flow5.of(PEER, XRAY, "udp", 1, 8080), "xray-any"),      # not the service's protocol
    (Flow5.of(PEER, XRAY, "tcp", 1, 443), "xray-any"),       # not the service's port
    (Flow5.of(PEER, XRAY, "icmp"), "xray-any"),
    (Flow5.of(OUTSIDER, XRAY, "tcp", 1, 8080), "xray-any"),  # not a Netmaker peer
    (Flow5.of(PEER, "10.1.0.50", "tcp", 1, 22), "mgmt-subnet"),  # no container there
    (Flow5.of(PEER, "10.0.0.100", "tcp", 1, 22), "default"),  # default privacy
    (Flow5.of(PEER, "203.0.113.1", "udp", 1, 53), "default"),
])
def test_privacy_and_management_only_reach_where_the_pipeline_lets_them(flow, overruled):
    host = host_with(default=PRIVACY, seed_services=False, rules=(
        rule("xray-any", PRIVACY, dst=["10.0.0.102/32"]),
        rule("mgmt-subnet", MANAGEMENT, dst=["10.1.0.0/24"]),
    ))
    decision = Classifier(host).decide(flow)
    assert decision == Decision(DROP, "unroutable", overruled)
    assert decision.drop_reason is DropReason.UNROUTABLE


def test_a_management_rule_reaches_the_management_containers_on_any_port():
    host = host_with(rules=(rule("mgmt", MANAGEMENT, dst=["10.1.0.0/24"]),))
    assert Classifier(host).decide(Flow5.of(PEER, API, "udp", 1, 53)) == Decision(MANAGEMENT,
                                                                                  "mgmt")
    assert Classifier(host).decide(Flow5.of(PEER, MCP, "icmp")) == Decision(MANAGEMENT, "mgmt")


def test_protocols_and_port_ranges_match_inclusively():
    host = host_with(seed_services=False, rules=(
        rule("icmp", DROP, protocol="icmp"),
        rule("high", MANAGEMENT, protocol="udp", src_ports=((1024, 2047), (3000, 3000)),
             dst_ports=((5000, 5001),)),
        rule("rest", MANAGEMENT, dst=[MCP]),
    ))
    decide = Classifier(host).decide
    assert decide(Flow5.of(PEER, MCP, "icmp")).rule == "icmp"
    assert decide(Flow5.of(PEER, MCP, "udp", 1024, 5000)).rule == "high"
    assert decide(Flow5.of(PEER, MCP, "udp", 2047, 5001)).rule == "high"
    assert decide(Flow5.of(PEER, MCP, "udp", 3000, 5001)).rule == "high"
    assert decide(Flow5.of(PEER, MCP, "udp", 2048, 5001)).rule == "rest"
    assert decide(Flow5.of(PEER, MCP, "udp", 1024, 5002)).rule == "rest"
    assert decide(Flow5.of(PEER, MCP, "tcp", 1024, 5000)).rule == "rest"
    assert decide(Flow5(address_int(PEER), address_int(MCP), GRE)).rule == "rest"


def test_drop_reason_tells_rules_from_unroutable():
    assert Decision(DROP, "default").drop_reason is DropReason.RULE
    assert Decision(DROP, "x").drop_reason is DropReason.RULE
    assert Decision(PRIVACY, "x").drop_reason is None


# Property: the compiled classifier decides exactly as the rules read literally.

_NETS = ["10.0.0.96/29", "10.0.0.102/32", "10.0.0.100/31", "10.1.0.200/31", "10.1.0.192/28",
         "10.1.0.0/24", "10.101.0.0/30", "10.101.0.5/32", "100.64.0.0/10", "0.0.0.0/0",
         "10.0.0.0/8", "192.0.2.0/24", "255.255.255.255/32", "0.0.0.0/32"]
_PORTS = st.sampled_from([0, 1, 53, 8079, 8080, 8081, 9573, 65535])


@st.composite
def _rules(draw):
    protocol = draw(st.sampled_from(["tcp", "udp", "icmp", "any"]))
    nets = st.none() | st.lists(st.sampled_from(_NETS), min_size=1, max_size=3)
    ports = st.lists(st.tuples(_PORTS, _PORTS).map(lambda p: tuple(sorted(p))), max_size=2)
    with_ports = protocol in ("tcp", "udp")
    return rule(f"r{draw(st.integers(0, 10**6))}", draw(st.sampled_from(list(TrafficClass))),
                draw(nets), draw(nets), protocol,
                tuple(draw(ports)) if with_ports else (), tuple(draw(ports)) if with_ports else ())


@st.composite
def _addresses(draw):
    net = IPNetwork(draw(st.sampled_from(_NETS)))
    where = draw(st.sampled_from(["first", "last", "before", "after", "inside"]))
    value = {"first": net.first, "last": net.last, "before": net.first - 1,
             "after": net.last + 1,
             "inside": net.first + draw(st.integers(0, net.size - 1))}[where]
    return min(max(value, 0), 2**32 - 1)


@st.composite
def _flows(draw):
    proto = draw(st.sampled_from([TCP, UDP, ICMP, GRE]))
    ports = (draw(_PORTS), draw(_PORTS)) if proto in (TCP, UDP) else (0, 0)
    return Flow5(draw(_addresses()), draw(_addresses()), proto, *ports)


def _literal_decision(host, flow) -> Decision:
    """What the rules say, read one by one with netaddr, and the reach guard."""
    classification = host.classification
    rules = list(classification.rules) + list(seed_service_rules(host)
                                              if classification.seed_services else [])
    found = Decision(classification.default, "default")
    for r in rules:
        if r.protocol != "any" and PROTOCOL_NUMBERS[r.protocol] != flow.proto:
            continue
        if r.src is not None and IPAddress(flow.src) not in r.src:
            continue
        if r.dst is not None and IPAddress(flow.dst) not in r.dst:
            continue
        if r.src_ports and not any(lo <= flow.sport <= hi for lo, hi in r.src_ports):
            continue
        if r.dst_ports and not any(lo <= flow.dport <= hi for lo, hi in r.dst_ports):
            continue
        found = Decision(r.cls, r.name)
        break
    xray = host.xray_client.container
    services = {(int(xray.address), PROTOCOL_NUMBERS[s.protocol], s.port) for s in xray.services}
    if found.cls is PRIVACY and not ((flow.dst, flow.proto, flow.dport) in services
                                     and IPAddress(flow.src) in IPSet(host.netmaker_ranges)):
        return Decision(DROP, "unroutable", found.rule)
    if found.cls is MANAGEMENT and flow.dst not in {int(c.address) for c in host.mesh.containers}:
        return Decision(DROP, "unroutable", found.rule)
    return found


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(_rules(), max_size=8, unique_by=lambda r: r.name),
       default=st.sampled_from(list(TrafficClass)), seed_services=st.booleans(),
       flows=st.lists(_flows(), min_size=1, max_size=20))
def test_compiled_decisions_are_the_rules_read_literally(rules, default, seed_services, flows):
    host = host_with(rules=tuple(rules), default=default, seed_services=seed_services)
    classifier = Classifier(host)
    for flow in flows:
        assert classifier.decide(flow) == _literal_decision(host, flow), str(flow)


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(_rules(), max_size=8, unique_by=lambda r: r.name),
       default=st.sampled_from(list(TrafficClass)), flows=st.lists(_flows(), max_size=20))
def test_no_rules_ever_send_privacy_or_management_where_they_cannot_go(rules, default, flows):
    classifier = Classifier(host_with(rules=tuple(rules), default=default))
    xray, mesh = int(IPAddress(XRAY)), {int(IPAddress(MCP)), int(IPAddress(API))}
    netmaker = IPSet(HOST.netmaker_ranges)
    for flow in flows:
        cls = classifier.decide(flow).cls
        if cls is PRIVACY:
            assert (flow.dst, flow.proto, flow.dport) == (xray, TCP, 8080)
            assert IPAddress(flow.src) in netmaker
        if cls is MANAGEMENT:
            assert flow.dst in mesh


# --- what the controller answers with ---------------------------------------------

TCP_FLOW = Flow5.of(DROPLET, XRAY, "tcp", 40000, 8080)
UDP_FLOW = Flow5.of(PEER, MCP, "udp", 5353, 53)
ICMP_FLOW = Flow5.of(PEER, MCP, "icmp")
ZONE = HOST.classification.conntrack_zone


@pytest.mark.parametrize("cls, mark", [(PRIVACY, Mark.PRIVACY), (MANAGEMENT, Mark.MANAGEMENT),
                                       (DROP, Mark.DROP)])
def test_a_decision_commits_its_connection_with_its_class_mark(cls, mark):
    actions = commit_actions(Decision(cls, "r"), ZONE)
    assert actions[0] == CT(ZONE, commit=True, mark=int(mark))
    # Sent on through table 0 (where the mark now carries it), unless dropped.
    assert actions[1:] == (() if cls is DROP else (Output(OFPP_TABLE),))


def test_every_class_has_its_own_mark_and_none_is_the_undecided_one():
    assert len(set(MARKS.values())) == len(TrafficClass)
    assert Mark.UNDECIDED not in MARKS.values() and Mark.OUTBOUND not in MARKS.values()
    assert {CLASS_OF_MARK[int(m)] for m in MARKS.values()} == set(TrafficClass)


def test_source_block_flow_drops_only_undecided_connections_of_a_source():
    flow = source_block_flow(address_int(PEER), 30, ZONE)
    assert flow == source_block_flow(PEER, 30, ZONE)
    assert check_flow(flow) is flow
    assert flow.priority == P_SOURCE_BLOCK > P_CLASS
    assert (flow.table, flow.instructions, flow.hard_timeout, flow.idle_timeout) == (
        CLASSIFY.id, (), 30, 0)
    assert flow.match_dict == {"metadata": 2, "ct_zone": ZONE, "ct_mark": 0,
                               "eth_type": 0x800, "ipv4_src": PEER}
    assert flow.cookie == Purpose.BLOCKED.cookie


# --- the decisions a source holds ------------------------------------------------


def cache(idle_timeout=60, **limits):
    return DecisionCache(Classification(idle_timeout=idle_timeout,
                                        limits=ClassificationLimits(**limits)))


def tcp(src=PEER, sport=1, dst=XRAY, dport=8080):
    return Flow5.of(src, dst, "tcp", sport, dport)


def test_admit_counts_a_new_decision_once_and_a_repeat_as_pending():
    c = cache()
    assert c.admit(tcp(), 0.0) is Verdict.ADMITTED
    assert c.admit(tcp(), 0.1) is Verdict.PENDING
    assert Verdict.ADMITTED.admitted and Verdict.PENDING.admitted
    assert len(c) == 1 and c.cached_for(address_int(PEER)) == 1 and list(c) == [tcp()]


def test_a_connection_that_keeps_coming_back_is_not_held_and_is_dropped():
    """A commit the tracker does not keep (a full zone on the userspace datapath
    skips it silently) would send the packet round and round through the meter."""
    c = cache()
    c.admit(tcp(), 0.0)
    assert [c.admit(tcp(), 0.1 * i) for i in range(1, RETRIES + 1)] == [Verdict.PENDING] * RETRIES
    assert c.admit(tcp(), 0.5) is Verdict.NOT_HELD and not Verdict.NOT_HELD.admitted
    assert c.drops["not-held"] == 1
    assert c.admit(tcp(), 0.5 + RETRY_WINDOW) is Verdict.PENDING  # a new window


def test_a_source_over_its_cap_is_blocked_for_the_configured_seconds():
    c = cache(cached_per_source=2, over_limit_seconds=30)
    src = address_int(PEER)
    assert [c.admit(tcp(sport=p), 0.0) for p in (1, 2)] == [Verdict.ADMITTED] * 2
    assert c.admit(tcp(sport=3), 1.0) is Verdict.SOURCE_OVER_CAP
    assert c.blocked(src, 1.0) and c.blocked(src, 30.9) and not c.blocked(src, 31.0)
    assert c.admit(tcp(sport=4), 30.9) is Verdict.SOURCE_BLOCKED
    assert not Verdict.SOURCE_BLOCKED.admitted and not Verdict.SOURCE_OVER_CAP.admitted
    assert c.admit(tcp(src=DROPLET), 2.0) is Verdict.ADMITTED  # other sources go on
    assert c.forget(tcp(sport=1))
    assert c.admit(tcp(sport=4), 31.0) is Verdict.ADMITTED
    assert c.drops["source-cap"] == 1 and c.drops["source-blocked"] == 1


def test_a_source_still_over_its_cap_when_its_block_ends_is_blocked_again():
    c = cache(cached_per_source=1, over_limit_seconds=5)
    c.admit(tcp(sport=1), 0.0)
    assert c.admit(tcp(sport=2), 0.0) is Verdict.SOURCE_OVER_CAP
    assert c.admit(tcp(sport=2), 5.0) is Verdict.SOURCE_OVER_CAP


def test_the_total_cap_refuses_new_decisions_of_any_source():
    c = cache(cached_total=2, cached_per_source=2)
    assert c.admit(tcp(src=PEER), 0.0) is Verdict.ADMITTED
    assert c.admit(tcp(src=DROPLET), 0.0) is Verdict.ADMITTED
    assert c.admit(tcp(src="10.101.0.6"), 0.0) is Verdict.TOTAL_OVER_CAP
    assert c.admit(tcp(src=PEER), 0.0) is Verdict.PENDING  # decided ones still go on
    assert c.drops["total-cap"] == 1
    assert not c.blocked(address_int("10.101.0.6"), 0.0)


def test_sources_not_known_share_cached_unknown_and_known_ones_go_on():
    """A flood of random sources takes its share of the decisions and no more."""
    known = IPSet([DROPLET + "/32"])
    c = DecisionCache(Classification(limits=ClassificationLimits(cached_unknown=2)), known)
    assert c.admit(tcp(src="10.101.7.1"), 0.0) is Verdict.ADMITTED
    assert c.admit(tcp(src="10.101.7.2"), 0.0) is Verdict.ADMITTED
    assert c.admit(tcp(src="10.101.7.3"), 0.0) is Verdict.UNKNOWN_OVER_CAP
    assert not Verdict.UNKNOWN_OVER_CAP.admitted
    assert [c.admit(tcp(src=DROPLET, sport=p), 0.0) for p in (1, 2, 3)] == [
        Verdict.ADMITTED] * 3
    assert c.unknown == 2 and len(c) == 5 and c.drops["unknown-cap"] == 1
    assert not c.blocked(address_int("10.101.7.3"), 0.0)  # dropped, not blocked
    assert c.forget(tcp(src="10.101.7.1")) and c.forget(tcp(src=DROPLET, sport=1))
    assert not c.forget(tcp(src=DROPLET, sport=1))
    assert c.unknown == 1
    assert c.admit(tcp(src="10.101.7.3"), 1.0) is Verdict.ADMITTED


def test_a_decision_counts_for_idle_timeout_and_then_is_forgotten():
    c = cache(idle_timeout=100, cached_per_source=5, over_limit_seconds=10)
    c.admit(tcp(sport=1), 0.0)
    c.admit(tcp(sport=2), 50.0)
    assert c.expire(100.0) == 0
    assert c.expire(100.1) == 1
    assert len(c) == 1 and c.cached_for(address_int(PEER)) == 1
    assert c.expire(1000.0) == 1 and len(c) == 0


def test_the_unknown_count_follows_expiry_and_a_new_known_set():
    classification = Classification(idle_timeout=10, limits=ClassificationLimits(
        cached_unknown=3))
    c = DecisionCache(classification, IPSet([DROPLET + "/32"]))
    for s in ("10.101.7.1", "10.101.7.2", DROPLET):
        c.admit(tcp(src=s), 0.0)
    assert c.unknown == 2 and len(c) == 3
    c.reconfigure(classification, IPSet(["10.101.7.0/24"]))  # a reload names them
    assert c.unknown == 1
    assert c.expire(10.1) == 3 and c.unknown == 0 and len(c) == 0


def test_a_reload_brings_its_idle_timeout_and_a_flush_forgets_everything():
    c = cache(idle_timeout=60)
    c.admit(tcp(sport=1), 0.0)
    c.reconfigure(Classification(idle_timeout=5), None)
    assert c.expire(5.1) == 1
    c.admit(tcp(sport=2), 10.0)
    c.admit(tcp(sport=3, src=DROPLET), 10.0)
    c.clear()
    assert len(c) == 0 and c.cached_for(address_int(PEER)) == 0 and c.unknown == 0
    assert c.admit(tcp(sport=2), 11.0) is Verdict.ADMITTED


def test_every_drop_reason_has_a_counter_from_the_start():
    c = cache()
    assert c.drops == {reason.value: 0 for reason in DropReason}
    c.count_drop(DropReason.UNPARSABLE)
    c.count_drop(Decision(DROP, "unroutable", "x").drop_reason)
    assert c.drops["unparsable"] == 1 and c.drops["unroutable"] == 1


def test_blocks_end_on_expiry():
    c = cache(cached_per_source=1, over_limit_seconds=5)
    c.admit(tcp(sport=1), 0.0)
    c.admit(tcp(sport=2), 0.0)
    assert c.blocked(address_int(PEER), 1.0)
    c.expire(6.0)
    assert not c.blocked(address_int(PEER), 6.0)


# --- purity ----------------------------------------------------------------------


def test_the_core_imports_no_os_ken():
    code = ("import sys, controller.classifier, controller.fastpath; "
            "sys.exit(any(m.startswith('os_ken') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=SEED.parents[1]).returncode == 0


# --- socketnet classify ------------------------------------------------------------


def classify(*args):
    return CliRunner().invoke(main, ["classify", "-c", str(SEED), *args])


def test_classify_prints_class_rule_the_commit_and_the_path():
    result = classify("--src", DROPLET, "--dst", XRAY, "--proto", "tcp", "--sport", "40000",
                      "--dport", "8080")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "tcp 10.101.0.5:40000 -> 10.0.0.102:8080: privacy",
        "  decided by: droplet-to-xray",
        f"  committed:  ct(commit,zone={ZONE},exec(set_field:0x1->ct_mark)),TABLE (ct_mark 1)",
        "  then:       table 1 tags it privacy ingress and sends it to table 2 (forward), "
        "with every later packet of the connection",
    ]


def test_classify_says_why_a_decision_is_unroutable():
    result = classify("--src", OUTSIDER, "--dst", XRAY, "--proto", "tcp", "--dport", "8080")
    assert result.exit_code == 0
    assert "decided by: unroutable" in result.output
    assert ("because:    rule service:xray-client/xray-client says privacy, but privacy goes "
            "only from a Netmaker peer") in result.output


def test_classify_json_has_class_rule_mark_and_commit():
    result = classify("--src", PEER, "--dst", XRAY, "--proto", "icmp", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["class"] == "drop" and doc["rule"] == "default" and doc["overruled"] is None
    assert doc["mark"] == int(Mark.DROP)
    assert doc["commit"] == f"ct(commit,zone={ZONE},exec(set_field:0x3->ct_mark))"
    assert doc["path"].startswith("dropped in table 1")


@pytest.mark.parametrize("args, option, words", [
    (["--src", "10.101.0", "--dst", XRAY, "--proto", "tcp", "--dport", "1"], "--src",
     "is not an IPv4 address"),
    (["--src", PEER, "--dst", "::1", "--proto", "tcp", "--dport", "1"], "--dst",
     "is not an IPv4 address"),
    (["--src", PEER, "--dst", XRAY, "--proto", "udp"], "--dport", "required with --proto udp"),
    (["--src", PEER, "--dst", XRAY, "--proto", "icmp", "--sport", "1"], "--sport",
     "icmp has no ports"),
    (["--src", PEER, "--dst", XRAY, "--proto", "tcp", "--dport", "65536"], "--dport", "65536"),
    (["--src", PEER, "--dst", XRAY, "--proto", "sctp", "--dport", "1"], "--proto", "sctp"),
])
def test_classify_bad_input_exits_2_naming_the_option(args, option, words):
    result = classify(*args)
    assert result.exit_code == 2
    assert option in result.output and words in result.output


def test_classify_with_a_bad_config_exits_2_with_its_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("dst: [10.0.0.102/32]", "dst: [10.0.0.100/32]"))
    result = CliRunner().invoke(main, ["classify", "-c", str(bad), "--src", PEER, "--dst", XRAY,
                                       "--proto", "icmp"])
    assert result.exit_code == 2
    assert "privacy rules must target the xray client (W1)" in result.output
