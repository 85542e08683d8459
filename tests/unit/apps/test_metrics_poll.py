"""apps/metrics.py's poll without a switch: the owner of the connection hands a
poll's reply to the request, but the poll is done only once the metrics app's own
loop has had it too, in order with the flow-removed messages it handles."""
from __future__ import annotations

from types import SimpleNamespace

from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from apps.channel import Channels
from apps.metrics import MetricsApp


def _poller():
    """The app's poll and reply handler, without its server and threads."""
    app = object.__new__(MetricsApp)
    app._inflight = None
    return app


def test_a_poll_ends_once_the_apps_own_loop_has_had_every_part_of_its_reply(connect):
    app, channels, dp = _poller(), Channels(), connect(0x1)
    channel = channels.open(dp, 5.0)
    fed = []

    def answer(msg):
        parts = [dp.reply(msg, parser.OFPFlowStatsReply, flags=ofp.OFPMPF_REPLY_MORE, body=[]),
                 dp.reply(msg, parser.OFPFlowStatsReply, flags=0, body=[])]
        for part in parts:  # the owner's loop: the request has its replies at once
            channels.deliver(part)
        for i, part in enumerate(parts):  # this app's loop, a moment later
            hub.spawn_after(0.05 * (i + 1), app._on_reply, SimpleNamespace(msg=part))

    dp.answer = answer
    app._ask(channel, parser.OFPFlowStatsRequest(dp), "class-stats",
             lambda msg: fed.append(msg.flags))
    assert fed == [ofp.OFPMPF_REPLY_MORE, 0]
    assert app._inflight is None


def test_a_reply_to_another_request_or_connection_is_not_fed_to_the_poll(connect):
    app, channels = _poller(), Channels()
    dp, other = connect(0x1), connect(0x2)
    channel = channels.open(dp, 5.0)
    fed = []

    def answer(msg):
        for stray in (other.reply(msg, parser.OFPPortStatsReply, flags=0, body=[]),
                      dp.reply(SimpleNamespace(xid=msg.xid + 1), parser.OFPPortStatsReply,
                               flags=0, body=[])):
            app._on_reply(SimpleNamespace(msg=stray))
        reply = dp.reply(msg, parser.OFPPortStatsReply, flags=0, body=[])
        channels.deliver(reply)
        app._on_reply(SimpleNamespace(msg=reply))

    dp.answer = answer
    app._ask(channel, parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY), "port-stats",
             lambda msg: fed.append(msg.datapath))
    assert fed == [dp]
