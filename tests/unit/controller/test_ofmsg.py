"""Flow values survive the trip through os-ken's OpenFlow 1.3 encoding and back;
the sync's roles, meters, ports and flow reads are encoded and read as values."""
import struct

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_3 as ofp

from controller import ofmsg
from controller.compiler import SwitchPort
from controller.flow import (ETH_TYPE_ARP, ETH_TYPE_IP, IPPROTO_UDP, OFPP_IN_PORT, Apply,
                             Controller, Flow, Goto, Meter, Move, Output, SetField,
                             WriteMetadata)
from controller.pipeline import Purpose
from controller.reconcile import PACKET_METER_FLAGS, MeterConfig
from controller.role import Claim


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


def _parsed(msg):
    msg.set_xid(9)
    msg.serialize()
    version, msg_type, length, xid = ofproto_parser.header(msg.buf)
    return ofproto_parser.msg(_Datapath(), version, msg_type, length, xid, bytes(msg.buf))


class _Reply:
    def __init__(self, body):
        self.body = body


def _serialized(msg):
    """`msg`, encoded (os-ken parses no controller-to-switch message of these kinds)."""
    msg.set_xid(9)
    msg.serialize()
    return msg


def test_a_claim_becomes_a_role_request_with_its_generation():
    master = _serialized(ofmsg.role_request(_Datapath(), Claim(True, 1_700_000_000_123)))
    slave = _serialized(ofmsg.role_request(_Datapath(), Claim(False, 8)))
    assert bytes(master.buf[8:]) == struct.pack("!I4xQ", ofp.OFPCR_ROLE_MASTER,
                                                1_700_000_000_123)
    assert (master.role, master.generation_id) == (ofp.OFPCR_ROLE_MASTER, 1_700_000_000_123)
    assert (slave.role, slave.generation_id) == (ofp.OFPCR_ROLE_SLAVE, 8)


def test_only_a_role_request_failed_stale_error_is_stale():
    from os_ken.ofproto import ofproto_v1_3_parser as parser
    stale = parser.OFPErrorMsg(_Datapath(), ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE)
    other = parser.OFPErrorMsg(_Datapath(), ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_BAD_ROLE)
    assert ofmsg.stale_role(stale) and not ofmsg.stale_role(other)
    assert not ofmsg.stale_role(None)


def test_the_packet_meter_flags_are_open_flows():
    assert PACKET_METER_FLAGS == ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS


def test_a_meter_change_becomes_a_meter_mod_with_one_drop_band():
    meter = MeterConfig(2, 1000, 200)
    for command, code in (("add", ofp.OFPMC_ADD), ("modify", ofp.OFPMC_MODIFY)):
        mod = _serialized(ofmsg.meter_mod(_Datapath(), command, meter))
        assert bytes(mod.buf[8:16]) == struct.pack("!HHI", code, PACKET_METER_FLAGS, 2)
        assert (mod.command, mod.flags, mod.meter_id) == (code, PACKET_METER_FLAGS, 2)
        (band,) = mod.bands
        assert (band.type, band.rate, band.burst_size) == (ofp.OFPMBT_DROP, 1000, 200)


def test_meter_configs_read_back_their_first_band_and_leave_bandless_ones_out():
    from os_ken.ofproto import ofproto_v1_3_parser as parser
    held = parser.OFPMeterConfigStats(PACKET_METER_FLAGS, 1,
                                      [parser.OFPMeterBandDrop(rate=50, burst_size=10)])
    bare = parser.OFPMeterConfigStats(PACKET_METER_FLAGS, 3, [])
    assert ofmsg.meter_configs([_Reply([held, bare])]) == [MeterConfig(1, 50, 10)]


def test_the_switchs_flows_are_sorted_into_readable_foreign_and_unreadable():
    from os_ken.ofproto import ofproto_v1_3_parser as parser
    readable = _parsed(ofmsg.flow_mod(_Datapath(), FLOWS[0]))
    foreign = _parsed(ofmsg.flow_mod(_Datapath(), FLOWS[1]))
    foreign.instructions = [parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [])]
    unreadable = _parsed(ofmsg.flow_mod(_Datapath(), FLOWS[5]))
    unreadable.match = parser.OFPMatch(vlan_vid=5)
    theirs = _parsed(ofmsg.flow_mod(_Datapath(), FLOWS[5]))
    theirs.cookie = 0x1234
    held = ofmsg.switch_flows([_Reply([readable, foreign]), _Reply([unreadable, theirs])])
    assert held.installed == (FLOWS[0],)
    assert held.foreign == (Flow.make(1, 100, dict(FLOWS[1].match), (), FLOWS[1].cookie),)
    assert [(u.table, u.entry) for u in held.unreadable] == [(0, unreadable)]
    mods = ofmsg.flow_changes(_Datapath(), held.unreadable, (FLOWS[1],), (FLOWS[0],))
    assert [m.command for m in mods] == [ofp.OFPFC_DELETE_STRICT, ofp.OFPFC_DELETE_STRICT,
                                         ofp.OFPFC_ADD]
    assert mods[0].match is unreadable.match


def test_a_port_status_reads_as_a_switch_port_and_its_reason():
    from os_ken.ofproto import ofproto_v1_3_parser as parser
    desc = parser.OFPPort(port_no=3, hw_addr="02:AA:00:00:00:03", name=b"veth200\0\0",
                          config=0, state=0, curr=0, advertised=0, supported=0, peer=0,
                          curr_speed=0, max_speed=0)
    for reason, said in ((ofp.OFPPR_ADD, "added"), (ofp.OFPPR_DELETE, "deleted"),
                         (ofp.OFPPR_MODIFY, "modified")):
        status = parser.OFPPortStatus(_Datapath(), reason=reason, desc=desc)
        assert ofmsg.port_status(status) == (SwitchPort(3, "veth200", "02:aa:00:00:00:03"), said)


def test_a_zone_flush_is_open_vswitchs_ct_flush_zone_with_the_zone_last():
    msg = _serialized(ofmsg.ct_flush_zone(_Datapath(), 21326))
    assert msg.msg_type == ofp.OFPT_EXPERIMENTER
    # experimenter id, exp_type, then nx_zone_id: 6 zero bytes and the zone
    assert bytes(msg.buf[8:]) == struct.pack("!II6xH", 0x00002320, 29, 21326)


def test_a_purposes_requests_ask_for_exactly_its_cookie_in_its_table():
    for build in (ofmsg.purpose_flows_request, ofmsg.purpose_totals_request):
        msg = _serialized(build(_Datapath(), 1, Purpose.CLASSIFIED.cookie))
        # multipart header (type, flags, pad), then table, pad, out_port, out_group, pad
        table, out_port, out_group, cookie, mask = struct.unpack_from("!B3xII4xQQ", msg.buf, 16)
        assert (table, out_port, out_group) == (1, ofp.OFPP_ANY, ofp.OFPG_ANY)
        assert (cookie, mask) == (Purpose.CLASSIFIED.cookie, 0xFFFFFFFFFFFFFFFF)


def test_the_flow_debug_dump_asks_for_every_flow_whatever_its_cookie():
    msg = _serialized(ofmsg.all_flows_request(_Datapath()))
    table, cookie, mask = struct.unpack_from("!B3x4x4x4xQQ", msg.buf, 16)
    assert (table, cookie, mask) == (ofp.OFPTT_ALL, 0, 0)
