"""controller.fastpath: the hand-packed FlowMod, PacketOut and barrier are, byte for
byte, what os-ken serialises for the same flow (controller.ofmsg) and packet."""
import pytest
import struct

from hypothesis import given, settings, strategies as st
from netaddr import IPAddress
from os_ken.ofproto import ofproto_parser, ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from os_ken.lib.packet import ethernet, ipv4, packet, tcp

from controller import fastpath, ofmsg
from controller.classifier import (MARKS, Classifier, Decision, commit_actions, parse_ipv4)
from controller.flow import (ETH_TYPE_IP, Apply, Flow, FlowError, Goto, Meter, Output,
                             WriteMetadata)
from controller.pipeline import CLASSIFY, FORWARD, Purpose, Zone
from topology.model import TrafficClass


class _Datapath:
    """Just enough of an os-ken Datapath to serialise messages (as in test_ofmsg)."""
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def syn(src="10.101.0.5", dst="10.0.0.102", sport=40000, dport=8080) -> bytes:
    """A TCP SYN from a Netmaker peer, as the uplink hands it to the switch."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("02:00:0a:00:00:66", "02:aa:bb:cc:dd:ee", ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(proto=6, src=src, dst=dst))
    pkt.add_protocol(tcp.tcp(src_port=sport, dst_port=dport, bits=tcp.TCP_SYN))
    pkt.serialize()
    return bytes(pkt.data)


def osken_flow_mod(xid: int, flow: Flow, command=ofmsg.ADD) -> bytes:
    msg = ofmsg.flow_mod(_Datapath(), flow, command)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_packet_out(xid: int, in_port: int, data: bytes, output=ofp.OFPP_TABLE) -> bytes:
    msg = parser.OFPPacketOut(_Datapath(), buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                              actions=[parser.OFPActionOutput(output)], data=data)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def test_wire_constants_are_os_kens():
    for name in ("OFP_VERSION", "OFPT_PACKET_OUT", "OFPT_FLOW_MOD", "OFPT_BARRIER_REQUEST",
                 "OFPFC_ADD", "OFPFC_DELETE_STRICT", "OFPFF_SEND_FLOW_REM", "OFP_NO_BUFFER",
                 "OFPP_TABLE", "OFPP_ANY", "OFPG_ANY", "OFPCML_MAX", "OFPMT_OXM",
                 "OFPXMC_OPENFLOW_BASIC", "OFPIT_GOTO_TABLE", "OFPIT_WRITE_METADATA",
                 "OFPAT_OUTPUT"):
        assert getattr(fastpath, name) == getattr(ofp, name), name
    assert (fastpath.ADD, fastpath.DELETE_STRICT) == (ofmsg.ADD, ofmsg.DELETE_STRICT)


def test_os_ken_writes_an_output_action_with_max_len_ofpcml_max_by_default():
    assert parser.OFPActionOutput(ofp.OFPP_TABLE).max_len == fastpath.OFPCML_MAX


# --- FlowMod -------------------------------------------------------------------------

_CLASSES = list(TrafficClass)


def osken_commit(xid: int, in_port: int, data: bytes, decision, zone: int) -> bytes:
    """The packet-out of a decision as os-ken builds it from commit_actions."""
    actions = [ofmsg._action(a) for a in commit_actions(decision, zone)]
    msg = parser.OFPPacketOut(_Datapath(), buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                              actions=actions, data=data)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


@pytest.mark.parametrize("cls", _CLASSES, ids=str)
@given(xid=st.integers(0, 2**32 - 1), in_port=st.integers(1, 0xFFFFFF00),
       zone=st.integers(1, 0xFFFF), data=st.binary(min_size=14, max_size=1500))
@settings(max_examples=60, deadline=None)
def test_the_commit_packs_as_os_ken_serialises_the_decisions_actions(cls, xid, in_port, zone,
                                                                      data):
    decision = Decision(cls, "r")
    assert fastpath.pack_commit(xid, in_port, data, zone, int(MARKS[cls]),
                                send_on=cls is not TrafficClass.DROP) == \
        osken_commit(xid, in_port, data, decision, zone)


def test_the_commits_actions_decode_back_to_the_decisions():
    raw = fastpath.pack_commit(5, 3, syn(), 21326, 1)
    ct = parser.OFPAction.parser(raw, 24)
    output = parser.OFPAction.parser(raw, 24 + ct.len)
    assert (ofmsg._decode_action(ct), ofmsg._decode_action(output)) == commit_actions(
        Decision(TrafficClass.PRIVACY, "r"), 21326)


_u32 = st.integers(0, 2**32 - 1)
_u16 = st.integers(0, 2**16 - 1)
_ADDRESS = _u32.map(lambda i: str(IPAddress(i, 4)))
_PREFIX = st.tuples(_u32, st.integers(0, 32)).map(
    lambda a: f"{IPAddress(a[0] & ((0xFFFFFFFF << (32 - a[1])) & 0xFFFFFFFF), 4)}/{a[1]}")
_METADATA = st.integers(0, 2**64 - 1) | st.tuples(st.integers(0, 2**64 - 1),
                                                  st.integers(1, 2**64 - 2))


@st.composite
def _table1_flows(draw):
    """Flows of the shape table 1 holds, with any field values, masks and timeouts."""
    match = {"metadata": draw(_METADATA)}
    if draw(st.booleans()):
        match["eth_type"] = ETH_TYPE_IP
        for name in ("ipv4_src", "ipv4_dst"):
            if draw(st.booleans()):
                match[name] = draw(_ADDRESS | _PREFIX)
        proto = draw(st.sampled_from([None, 1, 6, 17, 47, 132]))
        if proto is not None:
            match["ip_proto"] = proto
            names = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst"),
                     1: ("icmpv4_type", "icmpv4_code")}.get(proto, ())
            for name in names:
                if draw(st.booleans()):
                    match[name] = draw(st.integers(0, 255) if name.startswith("icmp") else _u16)
    cls = draw(st.sampled_from(_CLASSES))
    instructions = {
        TrafficClass.PRIVACY: (WriteMetadata(int(Zone.PRIVACY_INGRESS)), Goto(FORWARD.id)),
        TrafficClass.MANAGEMENT: (WriteMetadata(draw(st.integers(0, 2**64 - 1)),
                                                draw(st.integers(0, 2**64 - 1))),
                                  Goto(draw(st.integers(0, 254)))),
        TrafficClass.DROP: draw(st.sampled_from([(), (Goto(FORWARD.id),)])),
    }[cls]
    return Flow.make(CLASSIFY.id, draw(_u16), match, instructions,
                     draw(st.sampled_from([Purpose.CLASSIFIED.cookie, 0, 2**64 - 1])),
                     idle_timeout=draw(_u16), hard_timeout=draw(_u16),
                     send_flow_removed=draw(st.booleans()))


@settings(max_examples=400, deadline=None)
@given(xid=_u32, flow=_table1_flows())
def test_flow_mods_are_byte_identical_to_os_kens(xid, flow):
    assert fastpath.pack_flow_mod(xid, flow) == osken_flow_mod(xid, flow)
    assert (fastpath.pack_flow_mod(xid, flow, fastpath.DELETE_STRICT)
            == osken_flow_mod(xid, flow, ofmsg.DELETE_STRICT))


@settings(max_examples=100, deadline=None)
@given(xid=_u32, flow=_table1_flows())
def test_os_ken_reads_the_packed_flow_mod_back_as_the_same_flow(xid, flow):
    data = fastpath.pack_flow_mod(xid, flow)
    version, msg_type, length, read_xid = ofproto_parser.header(data)
    assert (version, length, read_xid) == (ofp.OFP_VERSION, len(data), xid)
    parsed = ofproto_parser.msg(_Datapath(), version, msg_type, length, read_xid, data)
    assert ofmsg.from_stats(parsed) == flow


@pytest.mark.parametrize("flow, words", [
    (Flow.make(CLASSIFY.id, 1, {"in_port": 1}, (), 0), "match field 'in_port'"),
    (Flow.make(CLASSIFY.id, 1, {"eth_dst": "02:00:00:00:00:01"}, (), 0), "match field 'eth_dst'"),
    (Flow.make(CLASSIFY.id, 1, {}, (Apply((Output(1),)),), 0), "Apply"),
    (Flow.make(CLASSIFY.id, 1, {}, (Meter(1), Goto(2)), 0), "Meter"),
    (Flow.make(CLASSIFY.id, 70000, {}, (), 0), "cannot encode"),
    (Flow(CLASSIFY.id, 1, (("ipv4_src", "10.0.0.300"),)), "not an IPv4 address"),
])
def test_what_fastpath_does_not_encode_is_a_flow_error(flow, words):
    with pytest.raises(FlowError, match=words):
        fastpath.pack_flow_mod(1, flow)


def test_an_unknown_flow_mod_command_is_a_flow_error():
    with pytest.raises(FlowError, match="command 1"):
        fastpath.pack_flow_mod(1, Flow.make(CLASSIFY.id, 1, {"ipv4_src": "10.0.0.1",
                                                             "eth_type": ETH_TYPE_IP}),
                               ofp.OFPFC_MODIFY)


# --- PacketOut and barrier -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(xid=_u32, in_port=_u32, data=st.binary(max_size=1600))
def test_packet_outs_are_byte_identical_to_os_kens(xid, in_port, data):
    assert fastpath.pack_packet_out(xid, in_port, data) == osken_packet_out(xid, in_port, data)


@pytest.mark.parametrize("output", [1, ofp.OFPP_IN_PORT, ofp.OFPP_CONTROLLER])
def test_packet_out_to_another_port_is_byte_identical_too(output):
    data = syn()
    assert (fastpath.pack_packet_out(9, 3, data, output=output)
            == osken_packet_out(9, 3, data, output=output))


def test_packet_out_takes_bytearray_and_memoryview():
    data = syn()
    expected = fastpath.pack_packet_out(1, 2, data)
    assert fastpath.pack_packet_out(1, 2, bytearray(data)) == expected
    assert fastpath.pack_packet_out(1, 2, memoryview(data)) == expected


def test_a_frame_too_big_for_one_message_is_refused():
    fastpath.pack_packet_out(1, 2, bytes(0xFFFF - 40))
    with pytest.raises(ValueError, match="does not fit"):
        fastpath.pack_packet_out(1, 2, bytes(0xFFFF - 39))


@given(xid=_u32)
def test_barrier_is_byte_identical_to_os_kens(xid):
    msg = parser.OFPBarrierRequest(_Datapath())
    msg.set_xid(xid)
    msg.serialize()
    assert fastpath.pack_barrier(xid) == bytes(msg.buf)


# --- the hot path end to end ----------------------------------------------------------


def test_a_packet_in_frame_becomes_the_messages_os_ken_would_send(seed_host):
    data = syn(src="10.101.0.5", dst="10.0.0.102", sport=40000, dport=8080)
    key = parse_ipv4(data)
    decision = Classifier(seed_host).decide(key)
    zone = seed_host.classification.conntrack_zone
    assert decision == Decision(TrafficClass.PRIVACY, "droplet-to-xray")
    assert fastpath.pack_commit(8, 1, data, zone, int(MARKS[decision.cls])) == \
        osken_commit(8, 1, data, decision, zone)
    assert fastpath.pack_packet_out(8, 1, data) == osken_packet_out(8, 1, data)


# --- PACKET_IN, read without os-ken's OFPMatch ---------------------------------------------

def _packet_in_bytes(xid, buffer_id, total_len, reason, table_id, cookie, oxms, data):
    """A PACKET_IN as a switch sends it: oxms is [(field, value bytes, mask bytes or b"")]."""
    match = b"".join(struct.pack("!HBB", 0x8000, field << 1 | bool(mask), len(v) + len(mask))
                     + v + mask for field, v, mask in oxms)
    match_len = 4 + len(match)
    match_bytes = struct.pack("!HH", 1, match_len) + match + b"\0" * (-match_len % 8)
    body = struct.pack("!IHBBQ", buffer_id, total_len, reason, table_id, cookie) + match_bytes \
        + b"\0\0" + data
    return struct.pack("!BBHI", 4, 10, 8 + len(body), xid) + body


@given(in_port=st.integers(1, 0xFFFFFF00), metadata=st.integers(0, 2**64 - 1),
       masked=st.booleans(), port_first=st.booleans(), cookie=st.integers(0, 2**64 - 1),
       table=st.integers(0, 254), data=st.binary(max_size=200), pad=st.integers(0, 7),
       before=st.binary(max_size=40))
@settings(max_examples=200, deadline=None)
def test_packet_in_fields_read_with_struct_equal_os_kens_parse(in_port, metadata, masked,
                                                               port_first, cookie, table, data,
                                                               pad, before):
    """Wherever the message sits in the read buffer, and wherever in_port sits in
    its match."""
    from os_ken.ofproto import ofproto_parser
    from controller.fastpath import packet_in_fields

    mask = (2**64 - 1).to_bytes(8, "big") if masked else b""
    oxms = [(0, in_port.to_bytes(4, "big"), b""), (2, metadata.to_bytes(8, "big"), mask)]
    raw = _packet_in_bytes(9, 0xFFFFFFFF, len(data), 1, table, cookie,
                           oxms if port_first else oxms[::-1], data + b"\0" * pad)
    theirs = ofproto_parser.msg(_Datapath(), 4, 10, len(raw), 9, raw)
    buf = bytearray(before + raw + b"next message")
    assert packet_in_fields(buf, len(before), len(raw)) == (
        theirs.table_id, theirs.cookie, theirs.match["in_port"], theirs.data)
    assert packet_in_fields(raw) == packet_in_fields(buf, len(before), len(raw))


def test_a_packet_in_without_in_port_has_none_and_a_short_one_raises():
    from controller.fastpath import packet_in_fields

    raw = _packet_in_bytes(9, 0xFFFFFFFF, 3, 1, 1, 7, [(2, bytes(8), b"")], b"abc")
    assert packet_in_fields(raw) == (1, 7, None, b"abc")
    with pytest.raises((struct.error, ValueError)):
        packet_in_fields(raw[:20])
    long_match = bytearray(raw)
    long_match[26:28] = (200).to_bytes(2, "big")  # a match past the message's end
    with pytest.raises(ValueError, match="beyond"):
        packet_in_fields(bytes(long_match))
