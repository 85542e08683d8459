"""apps/classifier.py on the wire: packet-in bytes in, from the receive loop
(controller.wire), committing packet-outs out, in order and batched, and a
malformed or foreign packet-in counted and left alone without harm to the rest."""
import types
from dataclasses import replace

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from apps import classifier as app_module
from bench import openflow as of
from controller import fastpath, wire
from controller.classifier import DropReason
from controller.compiler import conntrack_zone
from controller.pipeline import CLASSIFY, Mark, Purpose, Zone
from controller.switches import Runtime
from tests.unit.controller.test_classifier import DROPLET, MCP, PEER, XRAY, frame

MESH_GW = 3


class _Switch:
    """One switch connection as controller.wire and the app use it: the socket
    under eventlet's takes everything; os-ken's send loop waits with nothing queued."""

    ofproto = ofp
    ofproto_parser = parser

    def __init__(self):
        self.id, self.xid, self.address = 1, 100, ("192.0.2.1", 40000)
        self.wrote, self.msgs = [], []
        self.socket = types.SimpleNamespace(fd=types.SimpleNamespace(send=self._send))
        self.send_q = types.SimpleNamespace(qsize=lambda: 0, getting=lambda: 1, maxsize=16)
        self._send_q_sem = types.SimpleNamespace(balance=16)

    def _send(self, data):
        self.wrote.append(bytes(data))
        return len(data)

    def send(self, buf, close_socket=False):
        self.wrote.append(bytes(buf))
        return True

    def send_msg(self, msg):
        msg.serialize()
        self.wrote.append(bytes(msg.buf))
        self.msgs.append(msg)
        return True

    def messages(self):
        """(type, xid, bytes) of everything written, in order."""
        return list(of.Reader().feed(b"".join(self.wrote)))


@pytest.fixture
def app(seed_host, monkeypatch):
    # No sweeper: without os-ken's runner the hub's threads are native, and unkillable.
    monkeypatch.setattr(app_module.hub, "spawn", lambda *args: None)
    monkeypatch.setattr(app_module.hub, "kill", lambda thread: None)
    runtime = Runtime()
    runtime.host = seed_host
    app = app_module.ClassifierApp(runtime=runtime)
    yield app
    app.close()


def _packet_in(data, table=CLASSIFY.id, cookie=Purpose.CLASSIFY.cookie, xid=1):
    return of.packet_in(xid, table, cookie, MESH_GW, data, metadata=int(Zone.NETMAKER))


def _feed(app, switch, *messages):
    """The messages as one read of the receive loop: each handed over, then a flush."""
    buf = bytearray(b"".join(messages))
    at = 0
    for msg in messages:
        assert app.handle(switch, buf, at, len(msg)) is True
        at += len(msg)
    app.flush(switch)


def test_the_app_takes_packet_ins_from_the_receive_loop_and_gives_them_back(app):
    assert wire._TAKERS[ofp.OFPT_PACKET_IN] is app
    app.close()
    assert ofp.OFPT_PACKET_IN not in wire._TAKERS
    wire.take(ofp.OFPT_PACKET_IN, app)  # for the fixture's close


def test_one_read_of_packet_ins_is_answered_with_one_write_of_commits_in_order(app, seed_host):
    switch = _Switch()
    frames = [frame(src=DROPLET, sport=40000 + i) for i in range(3)] + [frame(dst=MCP, dport=9573)]
    _feed(app, switch, *(_packet_in(f, xid=i) for i, f in enumerate(frames)))
    assert len(switch.wrote) == 1
    sent = switch.messages()
    zone = conntrack_zone(app.runtime.host, app.runtime.host.mesh)
    marks = [int(Mark.PRIVACY)] * 3 + [int(Mark.MANAGEMENT)]
    assert [body for _, _, body in sent] == [
        fastpath.pack_commit(xid, MESH_GW, f, zone, mark)
        for (_, xid, _), f, mark in zip(sent, frames, marks)]
    assert [xid for _, xid, _ in sent] == [101, 102, 103, 104]
    assert app.counts.commits == 4 and app.counts.packet_ins == 4


def test_answers_go_out_every_batch_while_packet_ins_keep_coming(app):
    switch = _Switch()
    count = app_module.BATCH * 2 + 5
    _feed(app, switch, *(_packet_in(frame(src=f"10.101.{i // 200}.{i % 200 + 1}",
                                          sport=40000 + i)) for i in range(count)))
    per_write = [len(list(of.Reader().feed(data))) for data in switch.wrote]
    assert per_write == [app_module.BATCH, app_module.BATCH, 5]


def test_a_malformed_packet_in_is_counted_and_the_rest_of_the_read_decided(app):
    switch = _Switch()
    good = _packet_in(frame())
    short_match = bytearray(good)
    short_match[26:28] = (2).to_bytes(2, "big")  # a match length under its own header
    beyond = bytearray(good)
    beyond[26:28] = (400).to_bytes(2, "big")  # a match past the message's end
    before = app.cache.drops[DropReason.UNPARSABLE.value]
    _feed(app, switch, bytes(short_match), bytes(beyond), _packet_in(frame(sport=40001)))
    assert app.cache.drops[DropReason.UNPARSABLE.value] == before + 2
    assert [t for t, _, _ in switch.messages()] == [ofp.OFPT_PACKET_OUT]


def test_a_packet_in_of_another_table_or_cookie_is_counted_and_not_answered(app):
    switch = _Switch()
    _feed(app, switch, _packet_in(frame(), table=0), _packet_in(frame(), cookie=1))
    assert switch.wrote == [] and app.counts.packet_ins == 2 and app.counts.commits == 0


def test_a_frame_socketnet_cannot_read_is_dropped_as_unparsable(app):
    switch = _Switch()
    _feed(app, switch, _packet_in(frame(ethertype=0x86DD)))
    assert switch.wrote == [] and app.cache.drops[DropReason.UNPARSABLE.value] == 1


def test_a_source_over_its_cap_gets_its_block_after_the_answers_decided_before_it(app):
    host = app.runtime.host
    limits = replace(host.classification.limits, cached_per_source=2)
    app._on_host_change(replace(host, classification=replace(host.classification,
                                                             limits=limits)))
    switch = _Switch()
    _feed(app, switch, *(_packet_in(frame(src=PEER, dst=XRAY, sport=40000 + i))
                         for i in range(3)))  # the cap is 2
    assert [t for t, _, _ in switch.messages()] == [
        ofp.OFPT_PACKET_OUT, ofp.OFPT_PACKET_OUT, ofp.OFPT_FLOW_MOD]
    (block,) = switch.msgs
    assert block.hard_timeout == app.classification.limits.over_limit_seconds
    assert app.counts.flow_mods == 1


def test_two_connections_deciding_in_turn_each_get_their_own_answers(app):
    """Each connection has a receive loop of its own; one may decide while the
    other has answers not written yet."""
    mesh, other = _Switch(), _Switch()
    other.id, other.xid = 2, 500
    one, two = _packet_in(frame(sport=40001)), _packet_in(frame(sport=40002))
    assert app.handle(mesh, bytearray(one), 0, len(one))
    assert app.handle(other, bytearray(two), 0, len(two))  # mesh's answer still pending
    app.flush(other)
    assert [xid for _, xid, _ in other.messages()] == [501] and mesh.wrote == []
    app.flush(mesh)
    assert [xid for _, xid, _ in mesh.messages()] == [101]


def test_a_failure_while_deciding_is_logged_counted_and_the_connection_goes_on(app, monkeypatch,
                                                                                caplog):
    switch = _Switch()
    decide = app.classifier.decide
    monkeypatch.setattr(app.classifier, "decide", lambda flow5: 1 / 0)
    _feed(app, switch, _packet_in(frame()))
    assert app.cache.drops[DropReason.ERROR.value] == 1 and switch.wrote == []
    assert "ZeroDivisionError" in caplog.text
    monkeypatch.setattr(app.classifier, "decide", decide)
    _feed(app, switch, _packet_in(frame(sport=40001)))
    assert [t for t, _, _ in switch.messages()] == [ofp.OFPT_PACKET_OUT]
