"""bench/traffic.py's conntrack answer: the PacketOut it sends decodes, with os-ken's
own parser, to one ct action that commits in the bench's zone with the class's mark
and resubmits to the classify table; the static flows give each mark its class's
path and leave connections without one to socketnet's miss."""
import struct

from os_ken.ofproto import nicira_ext, ofproto_v1_3, ofproto_v1_3_parser as parser

from bench import traffic
from controller.classifier import TrafficClass
from controller.pipeline import CLASSIFY

from tests.conftest import SEED_YAML


def test_the_packet_out_commits_the_connection_with_its_class_mark_and_no_flow_mod():
    decide = traffic._minimal_controller(str(SEED_YAML), "conntrack")
    # A Netmaker peer's TCP SYN to the xray client's service: privacy.
    from bench import frames
    frame = frames.syn_frame(1, "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.102", 8080)
    msg = decide(bytes(frame), 7)
    version, msg_type, length, xid = struct.unpack_from("!BBHI", msg)
    assert (version, msg_type, length) == (ofproto_v1_3.OFP_VERSION,
                                           ofproto_v1_3.OFPT_PACKET_OUT, len(msg))
    buffer_id, in_port, actions_len = struct.unpack_from("!IIH", msg, 8)
    assert (buffer_id, in_port) == (ofproto_v1_3.OFP_NO_BUFFER, 7)
    assert msg[16 + 8 + actions_len:] == bytes(frame)
    action = parser.OFPAction.parser(msg, 24)
    assert isinstance(action, parser.NXActionCT) and action.len == actions_len  # the only one
    assert action.flags == nicira_ext.NX_CT_F_COMMIT
    assert (action.zone_ofs_nbits, action.recirc_table) == (traffic.CT_ZONE, CLASSIFY.id)
    (set_mark,) = action.actions
    assert (set_mark.key, set_mark.value) == ("ct_mark", traffic._marks()[TrafficClass.PRIVACY])


def test_each_mark_takes_its_class_path_and_unmarked_connections_fall_through():
    flows = traffic.conntrack_flows(str(SEED_YAML))
    by_mark = {int(f.split("ct_mark=")[1].split(",")[0]): f.split("actions=")[1]
               for f in flows if "ct_mark=" in f}
    marks = traffic._marks()
    assert by_mark[marks[TrafficClass.DROP]] == "drop"
    assert "goto_table:" in by_mark[marks[TrafficClass.PRIVACY]]
    assert by_mark[marks[TrafficClass.PRIVACY]] != by_mark[marks[TrafficClass.MANAGEMENT]]
    assert 0 not in by_mark  # no decision yet: socketnet's own miss, the meter
    assert any("ct_state=-trk" in f and f"ct(table={CLASSIFY.id},zone={traffic.CT_ZONE})" in f
               for f in flows)
    assert any("+inv" in f and f.endswith("actions=drop") for f in flows)
