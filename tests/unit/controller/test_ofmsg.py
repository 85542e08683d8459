"""Flow values survive the trip through os-ken's OpenFlow 1.3 encoding and back."""
import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_3 as ofp

from controller import ofmsg
from controller.flow import (ETH_TYPE_ARP, ETH_TYPE_IP, IPPROTO_UDP, OFPP_IN_PORT, Apply,
                             Controller, Flow, Goto, Meter, Move, Output, SetField,
                             WriteMetadata)


class _Datapath:
    """Just enough of an os-ken Datapath to serialise messages."""
    ofproto = ofp
    from os_ken.ofproto import ofproto_v1_3_parser as ofproto_parser  # noqa: N815
    id = 1


def _wire_roundtrip(flow: Flow, command=ofmsg.ADD):
    msg = ofmsg.flow_mod(_Datapath(), flow, command)
    msg.set_xid(7)
    msg.serialize()
    version, msg_type, length, xid = ofproto_parser.header(msg.buf)
    parsed = ofproto_parser.msg(_Datapath(), version, msg_type, length, xid, bytes(msg.buf))
    return msg, parsed


FLOWS = [
    Flow.make(0, 200, {"in_port": 3, "eth_src": "02:00:0a:01:00:c8", "eth_type": ETH_TYPE_ARP,
                       "arp_spa": "10.1.0.200", "arp_sha": "02:00:0a:01:00:c8"},
              [Goto(3)], 0x534E000000000001),
    Flow.make(1, 100, {"metadata": 2, "eth_type": ETH_TYPE_IP, "ipv4_dst": "10.1.0.0/24"},
              [WriteMetadata(1), Goto(2)], 0x534E000000000010),
    Flow.make(2, 300, {"metadata": 4, "eth_type": ETH_TYPE_IP, "ip_proto": IPPROTO_UDP,
                       "ipv4_dst": "100.64.0.0/10", "udp_src": 53},
              [Apply((SetField("eth_dst", "02:aa:bb:cc:dd:ee"), Output(1)))], 0x534E000000000021,
              idle_timeout=30, hard_timeout=300, send_flow_removed=True),
    Flow.make(3, 300, {"in_port": 1, "eth_type": ETH_TYPE_ARP, "arp_op": 1,
                       "arp_tpa": "10.0.0.102"},
              [Apply((Move("eth_src", "eth_dst"), SetField("eth_src", "02:00:0a:00:00:66"),
                      SetField("arp_op", 2), Move("arp_sha", "arp_tha"),
                      Move("arp_spa", "arp_tpa"), SetField("arp_sha", "02:00:0a:00:00:66"),
                      SetField("arp_spa", "10.0.0.102"), Output(OFPP_IN_PORT)))],
              0x534E000000000031),
    Flow.make(1, 0, {}, [Meter(1), Apply((Controller(128),))], 0x534E000000000011),
    Flow.make(0, 0, {}, (), 0x534E000000000002),
]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.ofctl())
def test_flow_mod_decodes_back_to_the_same_flow(flow):
    _, parsed = _wire_roundtrip(flow)
    assert parsed.command == ofp.OFPFC_ADD
    assert ofmsg.from_stats(parsed) == flow


def test_strict_delete_carries_entry_and_full_cookie_mask_but_no_instructions():
    _, parsed = _wire_roundtrip(FLOWS[1], ofmsg.DELETE_STRICT)
    assert parsed.command == ofp.OFPFC_DELETE_STRICT
    assert parsed.cookie_mask == 0xFFFFFFFFFFFFFFFF
    assert parsed.instructions == []
    assert ofmsg.from_stats(parsed, instructions=False).key == FLOWS[1].key


def test_register_moves_read_back_under_their_nxm_names_are_the_same_moves():
    from os_ken.ofproto import ofproto_v1_3_parser as parser
    answered = parser.NXActionRegMove(src_field="arp_sha_nxm", dst_field="arp_tha_nxm",
                                      n_bits=48)
    assert ofmsg._decode_action(answered) == Move("arp_sha", "arp_tha")
