"""apps/channel.py without a switch: the shared Channels find a switch's channel
only while its connection is the current one, hand each reply to the one request
waiting for it, and every sender draws its xids from the connection's one sequence."""
from __future__ import annotations

import pytest
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from apps.channel import ChannelError, Channels, next_xid

TIMEOUT = 5.0


def test_a_switch_has_a_channel_from_its_connect_to_its_disconnect(connect):
    channels, dp = Channels(), connect(0x1)
    assert channels.current(dp) is None and channels.get(0x1) is None
    channel = channels.open(dp, TIMEOUT)
    assert channels.current(dp) is channel and channels.get(0x1) is channel
    assert channel.dp is dp and channel.timeout == TIMEOUT
    assert channels.items() == [(0x1, channel)] and channels.values() == [channel]
    assert channels.forget(dp) is True
    assert channels.current(dp) is None and channels.get(0x1) is None
    assert channels.forget(dp) is False  # a second DEAD changes nothing


def test_os_ken_can_close_the_shared_channels_when_the_process_stops(connect):
    """os-ken calls close() with no argument on every context it made."""
    channels = Channels()
    channels.open(connect(0x1), TIMEOUT)
    close = getattr(channels, "close", None)
    if close is not None:
        close()


def test_a_late_dead_of_a_replaced_connection_leaves_the_new_ones_channel(connect):
    channels = Channels()
    old, new = connect(0x1, port=40000), connect(0x1, port=40001)
    channels.open(old, TIMEOUT)
    channel = channels.open(new, TIMEOUT)  # the switch connected again before old's DEAD
    assert channels.current(old) is None
    assert channels.forget(old) is False
    assert channels.current(new) is channel and channels.get(0x1) is channel


def test_a_reply_reaches_the_request_waiting_on_it_once(connect):
    channels, dp = Channels(), connect(0x1)
    channel = channels.open(dp, TIMEOUT)
    dp.answer = lambda msg: channels.deliver(dp.reply(msg, parser.OFPBarrierReply))
    channel.barrier()
    [barrier] = dp.sent
    assert isinstance(barrier, parser.OFPBarrierRequest)

    def answer(msg):
        channels.deliver(dp.reply(msg, parser.OFPPortStatsReply,
                                  flags=ofp.OFPMPF_REPLY_MORE, body=["first"]))
        channels.deliver(dp.reply(msg, parser.OFPPortStatsReply, flags=0, body=["last"]))
    dp.answer = answer
    replies = channel.request(parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY), "port-stats")
    assert [r.body for r in replies] == [["first"], ["last"]]


def test_a_reply_to_no_request_and_one_of_another_connection_are_ignored(connect):
    channels = Channels()
    old, new = connect(0x1, port=40000), connect(0x1, port=40001)
    channels.open(old, TIMEOUT)
    channel = channels.open(new, TIMEOUT)

    def answer(msg):
        stray = old.reply(msg, parser.OFPBarrierReply)  # the same xid, on the old connection
        channels.deliver(stray)
        channels.deliver(new.reply(msg, parser.OFPBarrierReply))
    new.answer = answer
    assert len(channel.request(parser.OFPBarrierRequest(new), "barrier")) == 1
    unasked = parser.OFPBarrierReply(new)
    unasked.xid = 12345
    channels.deliver(unasked)
    assert channel._pending == {}


def test_a_refused_request_raises_the_switchs_error(connect):
    channels, dp = Channels(), connect(0x1)
    channel = channels.open(dp, TIMEOUT)
    dp.answer = lambda msg: channels.deliver(dp.reply(
        msg, parser.OFPErrorMsg, type_=ofp.OFPET_BAD_REQUEST, code=ofp.OFPBRC_BAD_MULTIPART))
    with pytest.raises(ChannelError, match=r"^port-stats: OFPET_BAD_REQUEST\(1\)/"
                                           r"OFPBRC_BAD_MULTIPART\(2\)$") as refused:
        channel.request(parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY), "port-stats")
    assert refused.value.error.code == ofp.OFPBRC_BAD_MULTIPART


def test_an_ofctl_request_gets_its_replies_and_no_channel_does(connect):
    """os-ken's ofctl (the REST API's Ryu answers) waits in `waiters`, Ryu's way."""
    channels, dp = Channels(), connect(0x1)
    channels.open(dp, TIMEOUT)
    request = parser.OFPPortDescStatsRequest(dp, 0)
    dp.set_xid(request)
    event, msgs = hub.Event(), []
    channels.waiters.setdefault(dp.id, {})[request.xid] = (event, msgs)
    first = dp.reply(request, parser.OFPPortDescStatsReply, flags=ofp.OFPMPF_REPLY_MORE)
    channels.deliver(first)
    assert msgs == [first] and not event.is_set()
    last = dp.reply(request, parser.OFPPortDescStatsReply, flags=0)
    channels.deliver(last)
    assert msgs == [first, last] and event.is_set() and channels.waiters[dp.id] == {}


def test_a_disconnect_ends_the_connections_ofctl_requests_not_a_late_dead(connect):
    channels = Channels()
    old, new = connect(0x1, port=40000), connect(0x1, port=40001)
    channels.open(old, TIMEOUT)
    channels.open(new, TIMEOUT)
    channels.waiters[0x1] = {7: (hub.Event(), [])}
    channels.forget(old)
    assert 7 in channels.waiters[0x1]
    channels.forget(new)
    assert 0x1 not in channels.waiters


def test_every_sender_draws_the_connections_xids_from_one_sequence(connect):
    """A Channel's request, os-ken's set_xid and a message packed by hand
    (`next_xid`) never reuse an xid: a reply or an error names one message."""
    channels, dp = Channels(), connect(0x1, xid=ofp.MAX_XID - 1)
    channel = channels.open(dp, TIMEOUT)
    dp.answer = lambda msg: channels.deliver(dp.reply(msg, parser.OFPBarrierReply))
    xids = [next_xid(dp)]
    channel.barrier()
    xids.append(dp.sent[-1].xid)
    xids.append(next_xid(dp))
    xids.append(dp.set_xid(parser.OFPEchoRequest(dp)))
    assert xids == [ofp.MAX_XID, 0, 1, 2]  # in order, wrapping as os-ken's own does
