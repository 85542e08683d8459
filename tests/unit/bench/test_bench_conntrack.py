"""bench/traffic.py's minimal controller, both ways it answers, and the verdicts
bench/classifier.py prints for them.

- conntrack: the bytes are socketnet's own answer (controller.fastpath.pack_commit
  with the mesh's zone and the class's mark), and os-ken reads them as one ct
  commit with that mark, then (unless drop) the tables again;
- timed: os-ken reads a FlowMod of a table-1 flow above every flow of socketnet's
  classify table, with the timed design's timeouts and the class's path as
  instructions, then a PacketOut of the frame to the tables; untimed: the same
  flow without timeouts.

No switch, no root, no timing."""
import socket
import struct

import pytest
from os_ken.ofproto import nicira_ext, ofproto_parser, ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from bench import classifier as bench_classifier
from bench import frames, traffic
from bench.real_ovs import Live, Phase
from controller import fastpath
from controller.classifier import MARKS, Flow5, parse_ipv4
from controller.compiler import CLASS_PATHS, SwitchPort, compile_bridge, conntrack_zone
from controller.flow import Flow
from controller.pipeline import CLASSIFY, FORWARD, Zone, owns
from topology.config import load_host
from topology.model import TrafficClass

from tests.conftest import SEED_YAML

XRAY = ("10.0.0.102", 8080)  # the seed's xray client service: privacy from a Netmaker peer
IN_PORT = 7


class _Datapath:
    ofproto, ofproto_parser = ofproto_v1_3, parser


def _frame(i: int = 1, dst: tuple = XRAY) -> bytes:
    frame = frames.syn_frame(i, "02:00:00:00:00:01", "02:00:00:00:00:02", *dst)
    frames.stamp(frame, i, 0)
    return bytes(frame)


class _PacketOut:
    """A PACKET_OUT read as os-ken would: its fixed fields with struct (os-ken's own
    OFPPacketOut.parser cannot build one without an in_port), each action with
    os-ken's OFPAction.parser, then the frame."""

    def __init__(self, xid: int, buf: bytes):
        self.xid = xid
        self.buffer_id, self.in_port, actions_len = struct.unpack_from("!IIH", buf, 8)
        self.actions, at, end = [], 24, 24 + actions_len
        while at < end:
            action = parser.OFPAction.parser(buf, at)
            self.actions.append(action)
            at += action.len
        assert at == end
        self.data = bytes(buf[end:])


def _messages(data: bytes) -> list:
    """The OpenFlow messages in `data`: FlowMods parsed by os-ken, PacketOuts as above."""
    out, at = [], 0
    while at < len(data):
        version, msg_type, length, xid = ofproto_parser.header(data[at:])
        assert version == ofproto_v1_3.OFP_VERSION and at + length <= len(data)
        buf = data[at:at + length]
        if msg_type == ofproto_v1_3.OFPT_FLOW_MOD:
            out.append(parser.OFPFlowMod.parser(_Datapath(), version, msg_type, length, xid, buf))
        else:
            assert msg_type == ofproto_v1_3.OFPT_PACKET_OUT
            out.append(_PacketOut(xid, buf))
        at += length
    return out


@pytest.fixture(scope="module")
def host():
    return load_host(str(SEED_YAML))


# --- conntrack: socketnet's own answer ------------------------------------------


def test_the_conntrack_answer_is_socketnets_commit_of_the_connection_with_its_class_mark(host):
    answer = traffic._minimal_controller(str(SEED_YAML), "conntrack")
    frame = _frame()
    msg = answer(frame, IN_PORT)
    zone = conntrack_zone(host, host.mesh)
    assert msg == fastpath.pack_commit(1, IN_PORT, frame, zone, int(MARKS[TrafficClass.PRIVACY]))

    (out,) = _messages(msg)  # one PacketOut, no FlowMod
    assert isinstance(out, _PacketOut)
    assert (out.buffer_id, out.in_port, out.data) == (ofproto_v1_3.OFP_NO_BUFFER, IN_PORT, frame)
    ct, output = out.actions
    assert isinstance(ct, parser.NXActionCT)
    assert ct.flags == nicira_ext.NX_CT_F_COMMIT and ct.zone_ofs_nbits == zone
    assert ct.recirc_table == nicira_ext.NX_CT_RECIRC_NONE  # goes on here, to the output
    (set_mark,) = ct.actions
    assert (set_mark.key, set_mark.value) == ("ct_mark", int(MARKS[TrafficClass.PRIVACY]))
    assert isinstance(output, parser.OFPActionOutput) and output.port == ofproto_v1_3.OFPP_TABLE


@pytest.mark.parametrize("cls", list(MARKS))
def test_commit_answer_is_pack_commit_for_every_class(host, cls):
    zone = conntrack_zone(host, host.mesh)
    frame = _frame()
    assert traffic.commit_answer(9, IN_PORT, frame, cls, zone) == fastpath.pack_commit(
        9, IN_PORT, frame, zone, int(MARKS[cls]), send_on=cls is not TrafficClass.DROP)


def test_a_drop_decision_is_committed_and_not_sent_on(host):
    answer = traffic._minimal_controller(str(SEED_YAML), "conntrack")
    frame = _frame(dst=("10.0.0.250", 22))  # no service there: the seed's default, drop
    (out,) = _messages(answer(frame, IN_PORT))
    (ct,) = out.actions
    assert ct.actions[0].value == int(MARKS[TrafficClass.DROP])


def test_a_frame_socketnet_cannot_parse_gets_no_answer():
    for decisions in ("conntrack", "timed"):
        answer = traffic._minimal_controller(str(SEED_YAML), decisions)
        assert answer(b"\x00" * 20, IN_PORT) == b""


# --- timed: the design before conntrack -------------------------------------------


@pytest.mark.parametrize("decisions, idle, hard", [
    ("timed", traffic.TIMED_IDLE_TIMEOUT, traffic.TIMED_HARD_TIMEOUT),
    ("untimed", 0, 0)])
def test_the_timed_answer_is_a_flow_mod_of_the_connection_then_its_packet_out(
        decisions, idle, hard):
    answer = traffic._minimal_controller(str(SEED_YAML), decisions)
    frame = _frame(5)
    flow_mod, packet_out = _messages(answer(frame, IN_PORT))
    assert isinstance(flow_mod, parser.OFPFlowMod)
    assert (flow_mod.table_id, flow_mod.priority, flow_mod.command) == (
        CLASSIFY.id, traffic.TIMED_PRIORITY, ofproto_v1_3.OFPFC_ADD)
    assert (flow_mod.idle_timeout, flow_mod.hard_timeout) == (idle, hard)
    assert flow_mod.flags == ofproto_v1_3.OFPFF_SEND_FLOW_REM
    assert flow_mod.cookie == traffic.BENCH_COOKIE and not owns(flow_mod.cookie)
    src, sport = frames.flow_source(5)
    assert dict(flow_mod.match.items()) == {
        "metadata": int(Zone.NETMAKER), "eth_type": 0x0800, "ip_proto": 6,
        "ipv4_src": socket.inet_ntoa(struct.pack("!I", src)), "ipv4_dst": XRAY[0],
        "tcp_src": sport, "tcp_dst": XRAY[1]}
    write, goto = flow_mod.instructions
    assert isinstance(write, parser.OFPInstructionWriteMetadata)
    assert write.metadata == int(Zone.PRIVACY_INGRESS)
    assert isinstance(goto, parser.OFPInstructionGotoTable) and goto.table_id == FORWARD.id

    assert isinstance(packet_out, _PacketOut)
    assert packet_out.xid == flow_mod.xid + 1
    assert (packet_out.in_port, packet_out.data) == (IN_PORT, frame)
    (output,) = packet_out.actions
    assert output.port == ofproto_v1_3.OFPP_TABLE


@pytest.mark.parametrize("flow5", [
    Flow5.of("10.101.0.9", "10.0.0.102", "tcp", 4000, 8080),
    Flow5.of("10.101.0.9", "10.0.0.50", "udp", 4000, 53),
    Flow5.of("10.101.0.9", "10.0.0.50", "icmp")])
@pytest.mark.parametrize("cls", list(MARKS))
def test_timed_flow_is_canonical_and_takes_the_class_path(flow5, cls):
    flow = traffic.timed_flow(flow5, cls)
    ports = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst")}.get(flow5.proto, ())
    match = {"metadata": int(Zone.NETMAKER), "eth_type": 0x0800, "ip_proto": flow5.proto,
             "ipv4_src": "10.101.0.9", "ipv4_dst": str(flow.match_dict["ipv4_dst"]),
             **dict(zip(ports, (flow5.sport, flow5.dport)))}
    assert flow == Flow.make(CLASSIFY.id, traffic.TIMED_PRIORITY, match,
                             CLASS_PATHS[MARKS[cls]][1], traffic.BENCH_COOKIE,
                             idle_timeout=60, hard_timeout=3600, send_flow_removed=True)
    fastpath.pack_flow_mod(1, flow)  # within what the fast path encodes


def test_timed_flows_sit_above_every_flow_of_socketnets_classify_table(host):
    mesh = host.mesh
    live = {p.name: SwitchPort(i, p.name, p.mac or f"02:ff:00:00:01:{i:02x}")
            for i, p in enumerate(mesh.ports, start=1)}
    live[mesh.name] = SwitchPort(0xFFFFFFFE, mesh.name, "02:ff:00:00:01:fe")
    classify = [f for f in compile_bridge(host, mesh.name, live) if f.table == CLASSIFY.id]
    assert classify and max(f.priority for f in classify) < traffic.TIMED_PRIORITY


def test_a_drop_decision_gets_a_timed_flow_without_instructions():
    answer = traffic._minimal_controller(str(SEED_YAML), "timed")
    frame = _frame(dst=("10.0.0.250", 22))  # no service there: drop
    flow_mod, packet_out = _messages(answer(frame, IN_PORT))
    assert flow_mod.instructions == []  # CLASS_PATHS gives drop none: the flow drops
    assert dict(flow_mod.match.items())["tcp_dst"] == parse_ipv4(frame).dport == 22
    assert packet_out.data == frame  # sent anyway, into the new drop flow


# --- the traffic actor's command line --------------------------------------------


@pytest.mark.parametrize("extra", [["--mode", "fill"], ["--mode", "window", "--count", "5"]])
def test_fill_and_count_go_together(extra, capsys):
    base = ["--ifname", "x", "--src-mac", "02:00:00:00:00:01", "--dst-mac", "02:00:00:00:00:02",
            "--dst-ip", XRAY[0], "--dport", str(XRAY[1]), "--seconds", "1",
            "--receive-netns", "nowhere"]
    with pytest.raises(SystemExit):
        traffic.main(base + extra)
    assert "--count" in capsys.readouterr().err


# --- what the bench prints ---------------------------------------------------------


def _ovs(socketnet: float, conntrack: float, timed: float, ceiling: float, p99: float,
         rss_mb: float) -> dict:
    def phase(per_second, p99=None):
        return Phase(per_second=per_second, window=128, p50=p99 and p99 / 2, p99=p99,
                     latency_delivered=15_000, latency_sent=15_000, cpu={})
    return {"socketnet": phase(socketnet, p99), "conntrack": phase(conntrack, 0.001),
            "alone": phase(conntrack * 0.9, 0.001),
            "timed": phase(timed, 0.002), "ceiling": phase(ceiling), "untimed": phase(timed * 4),
            "baseline": phase(5_000, 0.01),
            "rounds": [{"socketnet": socketnet, "conntrack": conntrack,
                        "alone": conntrack * 0.9, "timed": timed,
                        "ceiling": ceiling, "p50": p99 / 2, "p99": p99, "all_delivered": True}],
            "live": [Live(1_000, 1_000, 9_000.0, 1_000, 80_000, 70_000, phase(socketnet)),
                     Live(100_000, 100_000, 9_000.0, 100_000, int(rss_mb * 1024), 70_000,
                          phase(socketnet))]}


ROWS = {"ceiling": "(a) socketnet / packet-in ceiling",
        "timed": "(a) socketnet / timed minimal",
        "conntrack": "(a) socketnet / conntrack minimal",
        "alone": "(a) socketnet / minimal in its own process",
        "p99": "(a) OVS first-packet p50/p99 ms at",
        "rss": "(a) socketnet VmRSS MB at"}


def _verdicts(text: str) -> dict:
    """Each target row's last word: its PASS or FAIL."""
    return {name: line.split()[-1] for line in text.splitlines()
            for name, start in ROWS.items() if line.startswith(start)}


def test_the_report_prints_each_target_pass_or_fail():
    passing = bench_classifier.report({}, {}, _ovs(30_000, 32_000, 8_000, 100_000, 0.0015, 120))
    assert _verdicts(passing) == {"ceiling": "PASS", "timed": "PASS", "conntrack": "PASS",
                                  "alone": "PASS", "p99": "PASS", "rss": "PASS"}
    failing = bench_classifier.report({}, {}, _ovs(20_000, 40_000, 8_000, 100_000, 0.003, 200))
    assert _verdicts(failing) == {"ceiling": "FAIL", "timed": "FAIL", "conntrack": "FAIL",
                                  "alone": "FAIL", "p99": "FAIL", "rss": "FAIL"}


def test_a_round_that_lost_a_first_packet_fails_the_latency_target():
    ovs = _ovs(30_000, 32_000, 8_000, 100_000, 0.0015, 120)
    ovs["rounds"].append({**ovs["rounds"][0], "all_delivered": False})
    assert _verdicts(bench_classifier.report({}, {}, ovs))["p99"] == "FAIL"
