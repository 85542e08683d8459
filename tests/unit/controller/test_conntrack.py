"""controller/conntrack.py: the zone's connections read from Open vSwitch's dump,
named by id and back, removed by their tuple, and the zone's timeouts."""
import pytest

from controller.classifier import TrafficClass
from controller.conntrack import (IDLE_TIMEOUTS, Connection, ConntrackError, flush_tuple,
                                  parse_dump, parse_id, timeout_policy)
from topology.model import Classification

ZONE = 21326
# As `ovs-appctl dpctl/dump-conntrack -s zone=...` prints them (Open vSwitch 3.1).
DUMP = f"""\
tcp,orig=(src=10.101.0.5,dst=10.0.0.102,sport=40000,dport=8080),reply=(src=10.0.0.102,dst=10.101.0.5,sport=8080,dport=40000),zone={ZONE},timeout=29,mark=1,protoinfo=(state=ESTABLISHED)
udp,orig=(src=10.1.0.200,dst=10.101.0.9,sport=5353,dport=53),reply=(src=10.101.0.9,dst=10.1.0.200,sport=53,dport=5353),zone={ZONE},timeout=30,mark=4
icmp,orig=(src=10.101.0.6,dst=10.1.0.200,id=7,type=8,code=0),reply=(src=10.1.0.200,dst=10.101.0.6,id=7,type=0,code=0),zone={ZONE},timeout=20,mark=3
tcp,orig=(src=10.101.0.5,dst=10.0.0.102,sport=40001,dport=8080),reply=(src=10.0.0.102,dst=10.101.0.5,sport=8080,dport=40001),zone={ZONE + 1},protoinfo=(state=SYN_SENT)
tcp,orig=(src=fe80::1,dst=fe80::2,sport=1,dport=2),reply=(src=fe80::2,dst=fe80::1,sport=2,dport=1),zone={ZONE}
tcp,orig=(src=10.101.0.8,dst=10.0.0.102,sport=40002,dport=8080),reply=(src=10.0.0.102,dst=10.101.0.8,sport=8080,dport=40002),zone={ZONE},protoinfo=(state=SYN_SENT)
"""


def test_the_dump_gives_this_zones_ipv4_connections_with_mark_state_and_timeout():
    tcp, udp, icmp, undecided = parse_dump(DUMP, ZONE)
    assert tcp == Connection("tcp", "10.101.0.5", "10.0.0.102", 40000, 8080, 0, 1,
                             "ESTABLISHED", 29)
    assert (tcp.cls, udp.cls, icmp.cls, undecided.cls) == (
        TrafficClass.PRIVACY.value, "reply", TrafficClass.DROP.value, None)
    assert (icmp.icmp_id, icmp.timeout, undecided.timeout) == (7, 20, None)
    assert parse_dump(DUMP, ZONE + 1)[0].sport == 40001  # the other zone's, apart
    assert parse_dump("", ZONE) == [] and parse_dump("garbage\n,,,\n", ZONE) == []


@pytest.mark.parametrize("connection", parse_dump(DUMP, ZONE), ids=lambda c: c.id)
def test_an_id_names_its_connection_and_reads_back(connection):
    back = parse_id(connection.id)
    assert back.id == connection.id
    assert (back.proto, back.src, back.dst, back.sport, back.dport, back.icmp_id) == (
        connection.proto, connection.src, connection.dst, connection.sport, connection.dport,
        connection.icmp_id)
    assert connection.doc()["id"] == connection.id


@pytest.mark.parametrize("entry, words", [
    ("tcp-10.101.0.5-40000-10.0.0.102", "expected tcp-SRC-SPORT-DST-DPORT"),
    ("tcp-10.101.0.5-x-10.0.0.102-8080", "'x' is not a number"),
    ("udp-10.101.0.5-1-10.0.0.102-70000", "within 0..65535"),
    ("icmp-10.101.0.600-10.0.0.102-1", "not an IPv4 address"),
    ("sctp-1.2.3.4-1-5.6.7.8-2", "expected"),
    ("10.9.9.9-10.9.9.8", "expected"),
])
def test_a_malformed_id_is_refused_naming_it(entry, words):
    with pytest.raises(ConntrackError) as info:
        parse_id(entry)
    assert entry in str(info.value) and words in str(info.value)


def test_a_connection_is_removed_by_its_original_tuple():
    tcp, udp, icmp, _ = parse_dump(DUMP, ZONE)
    assert flush_tuple(tcp) == ("ct_nw_src=10.101.0.5,ct_nw_dst=10.0.0.102,ct_nw_proto=6,"
                                "ct_tp_src=40000,ct_tp_dst=8080")
    assert flush_tuple(udp).endswith("ct_nw_proto=17,ct_tp_src=5353,ct_tp_dst=53")
    assert flush_tuple(icmp).endswith("ct_nw_proto=1,icmp_id=7,icmp_type=8,icmp_code=0")


def test_idle_timeout_sets_every_timeout_of_the_zones_policy():
    assert timeout_policy(Classification(idle_timeout=45)) == dict.fromkeys(IDLE_TIMEOUTS, 45)
    assert "tcp_established" in IDLE_TIMEOUTS
