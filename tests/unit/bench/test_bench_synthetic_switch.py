"""The bench's synthetic switch speaks OpenFlow 1.3 that os-ken reads, and reads what
socketnet and the baseline send (bench/openflow.py, bench/frames.py): so that
`python -m bench.classifier` cannot rot silently while the test suite stays green."""
from __future__ import annotations

import pytest

from bench import frames
from bench import openflow as of
from bench.synthetic import SyntheticSwitch, mesh_ports
from controller import fastpath
from controller.classifier import MARKS, Classifier, Flow5, parse_ipv4
from controller.pipeline import CLASSIFY, Purpose, Zone
from topology.model import TrafficClass

from os_ken.ofproto import ofproto_common, ofproto_parser  # noqa: E402  (after the pure imports)
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser


class _Datapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1

    def set_xid(self, msg):
        msg.xid = 7


def parse(data: bytes):
    """The message os-ken's receive loop would hand its apps for these bytes."""
    version, msg_type, length, xid = ofproto_parser.header(data)
    assert length == len(data)
    return ofproto_parser.msg(_Datapath(), version, msg_type, length, xid, data)


def test_the_wire_constants_are_os_kens():
    assert (of.OFP_VERSION, of.OFPT_PACKET_IN, of.OFPT_FLOW_MOD, of.OFPT_PACKET_OUT,
            of.OFPT_MULTIPART_REQUEST, of.OFPT_BARRIER_REQUEST, of.OFPT_ROLE_REQUEST,
            of.OFPT_EXPERIMENTER, of.OFPT_FEATURES_REQUEST, of.OFPT_ECHO_REQUEST) == (
        ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, ofp.OFPT_FLOW_MOD, ofp.OFPT_PACKET_OUT,
        ofp.OFPT_MULTIPART_REQUEST, ofp.OFPT_BARRIER_REQUEST, ofp.OFPT_ROLE_REQUEST,
        ofp.OFPT_EXPERIMENTER, ofp.OFPT_FEATURES_REQUEST, ofp.OFPT_ECHO_REQUEST)
    assert (of.OFPMP_FLOW, of.OFPMP_METER_CONFIG, of.OFPMP_PORT_DESC, of.OFPP_LOCAL) == (
        ofp.OFPMP_FLOW, ofp.OFPMP_METER_CONFIG, ofp.OFPMP_PORT_DESC, ofp.OFPP_LOCAL)
    assert (of.ONF_EXPERIMENTER_ID, of.ONF_ET_BUNDLE_CONTROL) == (
        ofproto_common.ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_CONTROL)


def test_the_handshake_and_sync_answers_parse_as_os_ken_messages(seed_host):
    assert isinstance(parse(of.hello(1)), parser.OFPHello)
    features = parse(of.features_reply(2, 0x534E0001))
    assert isinstance(features, parser.OFPSwitchFeatures) and features.datapath_id == 0x534E0001

    ports = mesh_ports(seed_host)
    desc = parse(of.port_desc_reply(3, ports))
    assert isinstance(desc, parser.OFPPortDescStatsReply) and desc.flags == 0
    assert [(p.port_no, p.name.decode(), p.hw_addr) for p in desc.body] == [
        (p.number, p.name, p.mac) for p in ports]
    assert desc.body[0].name == b"mesh" and desc.body[0].port_no == ofp.OFPP_LOCAL

    flows = parse(of.empty_multipart_reply(4, of.OFPMP_FLOW))
    meters = parse(of.empty_multipart_reply(5, of.OFPMP_METER_CONFIG))
    assert isinstance(flows, parser.OFPFlowStatsReply) and flows.body == []
    assert isinstance(meters, parser.OFPMeterConfigStatsReply) and meters.body == []
    aggregate = parse(of.empty_multipart_reply(5, of.OFPMP_AGGREGATE))
    assert isinstance(aggregate, parser.OFPAggregateStatsReply)
    assert aggregate.body.flow_count == 0
    desc = parse(of.empty_multipart_reply(5, of.OFPMP_DESC))
    assert isinstance(desc, parser.OFPDescStatsReply) and desc.body.dp_desc == b"mesh"
    assert isinstance(parse(of.barrier_reply(6)), parser.OFPBarrierReply)
    echo = parse(of.echo_reply(7, b"ping"))
    assert isinstance(echo, parser.OFPEchoReply) and echo.data == b"ping"
    role = parse(of.role_reply(8, ofp.OFPCR_ROLE_MASTER, 42))
    assert isinstance(role, parser.OFPRoleReply)
    assert (role.role, role.generation_id) == (ofp.OFPCR_ROLE_MASTER, 42)

    bundle = parse(of.bundle_ctrl_reply(9, 5, ofp.ONF_BCT_COMMIT_REQUEST))
    assert isinstance(bundle, parser.ONFBundleCtrlMsg)
    assert (bundle.bundle_id, bundle.type, bundle.flags) == (5, ofp.ONF_BCT_COMMIT_REPLY, 0)


def test_the_synthetic_switch_reads_os_kens_requests_and_answers_them(seed_host):
    switch = SyntheticSwitch(("127.0.0.1", 1), seed_host)
    dp = _Datapath()
    for request, answer in (
            (parser.OFPPortDescStatsRequest(dp, 0), parser.OFPPortDescStatsReply),
            (parser.OFPFlowStatsRequest(dp), parser.OFPFlowStatsReply),
            (parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL),
             parser.OFPMeterConfigStatsReply),
            (parser.OFPAggregateStatsRequest(dp, 0, 1, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0,
                                             parser.OFPMatch()), parser.OFPAggregateStatsReply),
            (parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY), parser.OFPPortStatsReply),
            (parser.OFPTableStatsRequest(dp, 0), parser.OFPTableStatsReply),
            (parser.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL), parser.OFPMeterStatsReply),
            (parser.OFPBarrierRequest(dp), parser.OFPBarrierReply),
            (parser.OFPRoleRequest(dp, ofp.OFPCR_ROLE_EQUAL, 0), parser.OFPRoleReply),
            (parser.ONFBundleCtrlMsg(dp, 3, ofp.ONF_BCT_OPEN_REQUEST,
                                     ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED, []),
             parser.ONFBundleCtrlMsg),
            (parser.OFPEchoRequest(dp, b"x"), parser.OFPEchoReply)):
        request.xid = 11
        request.serialize()
        (msg_type, xid, msg), = of.Reader().feed(bytes(request.buf))
        reply = parse(switch._control(msg_type, xid, msg))
        assert isinstance(reply, answer) and reply.xid == 11
    assert switch.unanswered == {}


def test_a_packet_in_parses_and_carries_a_new_flow_socketnet_classifies_privacy(seed_host):
    xray = seed_host.xray_client.container
    frame = frames.syn_frame(70_000, "02:fe:00:00:00:01", xray.mac, str(xray.address), 8080)
    frames.stamp(frame, 70_000, 123456789)
    msg = parse(of.packet_in(12, CLASSIFY.id, Purpose.CLASSIFY.cookie, 1, bytes(frame),
                             metadata=int(Zone.NETMAKER)))
    assert isinstance(msg, parser.OFPPacketIn)
    assert (msg.table_id, msg.cookie, msg.buffer_id, msg.total_len) == (
        CLASSIFY.id, Purpose.CLASSIFY.cookie, ofp.OFP_NO_BUFFER, len(frame))
    assert msg.match["in_port"] == 1 and msg.match["metadata"] == int(Zone.NETMAKER)
    assert msg.data == bytes(frame)

    src, sport = frames.flow_source(70_000)
    assert parse_ipv4(msg.data) == Flow5(src, int(xray.address), 6, sport, 8080)
    assert str(parse_ipv4(msg.data)).startswith("tcp 10.101.")
    assert Classifier(seed_host).decide(parse_ipv4(msg.data)).cls is TrafficClass.PRIVACY
    assert frames.read_stamp(msg.data) == (70_000, 123456789)


def test_every_flow_has_its_own_source_and_port():
    keys = {frames.flow_source(i) for i in range(0, 300_000, 7)}
    assert len(keys) == len(range(0, 300_000, 7))


def test_the_answers_of_socketnet_and_of_the_baseline_name_their_flow(seed_host):
    flow5 = Flow5.of("10.101.3.4", "10.0.0.102", "tcp", 4321, 8080)
    decision = Classifier(seed_host).decide(flow5)
    socketnet = fastpath.pack_commit(2, 1, bytes(
        frames.syn_frame(0, "02:fe:00:00:00:01", "02:00:0a:00:00:66", "10.0.0.102", 8080)),
        seed_host.classification.conntrack_zone, int(MARKS[decision.cls]))
    dp = _Datapath()
    baseline = parser.OFPFlowMod(dp, match=parser.OFPMatch(
        in_port=1, eth_type=0x0800, ip_proto=6, ipv4_src="10.101.3.4", ipv4_dst="10.0.0.102",
        tcp_src=4321, tcp_dst=8080), instructions=[])
    baseline.serialize()
    table_miss = parser.OFPFlowMod(dp, match=parser.OFPMatch(), instructions=[])
    table_miss.serialize()

    reader = of.Reader()
    stream = socketnet + bytes(baseline.buf) + bytes(table_miss.buf)
    got = list(reader.feed(stream[:50])) + list(reader.feed(stream[50:]))
    assert [t for t, _, _ in got] == [of.OFPT_PACKET_OUT, of.OFPT_FLOW_MOD, of.OFPT_FLOW_MOD]
    assert of.packet_out_key(got[0][2]) == frames.flow_source(0)
    assert of.flow_mod_key(got[1][2]) == (flow5.src, 4321)
    assert of.flow_mod_key(got[2][2]) is None


@pytest.mark.parametrize("length", [0, 4, 7])
def test_the_reader_refuses_a_message_shorter_than_its_header(length):
    with pytest.raises(ValueError):
        list(of.Reader().feed(of.HEADER.pack(4, 0, length, 1)))
