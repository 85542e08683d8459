"""apps/connection.py without a switch: the one owner of the switch connections
opens a connection's channel before it tells the apps of it, closes it on that
connection's DEAD (a late DEAD of a replaced connection tells nobody), and hands
every reply and error once to the request waiting for it; no other app opens,
closes or feeds a channel."""
from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from apps.channel import ChannelError, Channels
from apps.connection import ConnectionApp, EventConnected, EventDisconnected
from controller.switches import Runtime


@pytest.fixture
def owner(seed_host):
    """The owner app, not started: its handlers called as os-ken's loop would, and
    what it tells the other apps kept in `told` (with the channel each then found)."""
    runtime = Runtime()
    runtime.host = seed_host
    app = ConnectionApp(runtime=runtime, channels=Channels())
    app.told = []

    def tell(ev, state=None):
        app.told.append((type(ev), ev.datapath, app.channels.current(ev.datapath)))
    app.send_event_to_observers = tell
    return app


def features(dp):
    return SimpleNamespace(msg=SimpleNamespace(datapath=dp))


def dead(dp):
    return SimpleNamespace(datapath=dp)


def test_no_channel_before_the_switch_connects(owner, connect):
    dp = connect(0x1)
    assert owner.channels.get(0x1) is None and owner.channels.current(dp) is None
    assert owner.told == []


def test_the_apps_are_told_of_a_connection_once_its_channel_is_open(owner, connect, seed_host):
    dp = connect(0x1)
    owner._on_features(features(dp))
    channel = owner.channels.current(dp)
    assert channel is not None and channel is owner.channels.get(0x1)
    assert channel.timeout == seed_host.settings.reconcile_timeout
    assert owner.told == [(EventConnected, dp, channel)]


def test_the_current_connections_dead_closes_its_channel_and_tells_the_apps(owner, connect):
    dp = connect(0x1)
    owner._on_features(features(dp))
    owner._on_dead(dead(dp))
    assert owner.channels.get(0x1) is None
    assert owner.told[1:] == [(EventDisconnected, dp, None)]


def test_a_late_dead_of_a_replaced_connection_tells_nobody(owner, connect):
    old, new = connect(0x1, port=40000), connect(0x1, port=40001)
    owner._on_features(features(old))
    owner._on_features(features(new))  # the switch connected again before old's DEAD
    channel = owner.channels.current(new)
    owner._on_dead(dead(old))
    assert [kind for kind, *_ in owner.told] == [EventConnected, EventConnected]
    assert owner.channels.get(0x1) is channel
    owner._on_dead(dead(new))
    assert owner.told[-1] == (EventDisconnected, new, None)


def test_a_dead_before_features_tells_nobody(owner, connect):
    """A connection that died in its handshake has no datapath id and no channel."""
    owner._on_dead(dead(connect(None)))
    assert owner.told == []


def test_every_reply_and_error_reaches_its_request_once(owner, connect):
    """What the switch answers goes through the owner's handler, once per message,
    to the channel the request waits on."""
    dp = connect(0x1)
    owner._on_features(features(dp))
    channel = owner.channels.current(dp)

    def answer(msg):
        owner._on_reply(SimpleNamespace(msg=dp.reply(msg, parser.OFPFlowStatsReply,
                                                     flags=0, body=[])))
    dp.answer = answer
    replies = channel.request(parser.OFPFlowStatsRequest(dp), "flow-stats")
    assert len(replies) == 1

    def refuse(msg):
        owner._on_reply(SimpleNamespace(msg=dp.reply(
            msg, parser.OFPErrorMsg, type_=ofp.OFPET_BAD_REQUEST, code=ofp.OFPBRC_EPERM)))
    dp.answer = refuse
    with pytest.raises(ChannelError, match="^role: OFPET_BAD_REQUEST"):
        channel.request(parser.OFPRoleRequest(dp, ofp.OFPCR_ROLE_MASTER, 1), "role")


def test_the_owner_takes_every_reply_the_apps_requests_wait_for():
    """The sync's, the metrics poller's, the REST API's and os-ken ofctl's
    requests are answered with these, and errors."""
    from apps import metrics

    handled = set(ConnectionApp._on_reply.callers)
    assert set(metrics._REPLIES) <= handled  # what the poller reads, the owner delivers
    for reply in ("PortDescStatsReply", "FlowStatsReply", "AggregateStatsReply",
                  "PortStatsReply", "TableStatsReply", "TableFeaturesStatsReply",
                  "MeterStatsReply", "MeterConfigStatsReply", "MeterFeaturesStatsReply",
                  "DescStatsReply", "BarrierReply", "RoleReply", "ErrorMsg"):
        assert getattr(ofp_event, f"EventOFP{reply}") in handled, reply
    assert ofp_event.EventONFBundleCtrlMsg in handled


def _handled(app) -> set:
    """The os-ken events an app's handlers are registered for."""
    return {ev for _, method in inspect.getmembers(app, inspect.isfunction)
            for ev in getattr(method, "callers", {})}


def test_only_the_owner_hears_a_switch_connect_and_go():
    """The apps that need a channel are told by the owner (EventConnected,
    EventDisconnected); none of them handles a switch's features or DEAD, or
    the replies the owner delivers, itself."""
    from apps import classifier, metrics, pipeline

    connection = {ofp_event.EventOFPSwitchFeatures, ofp_event.EventOFPStateChange}
    assert connection <= _handled(ConnectionApp)
    for app in (pipeline.PipelineApp, metrics.MetricsApp, classifier.ClassifierApp):
        assert not connection & _handled(app), app.__name__
        assert ofp_event.EventOFPBarrierReply not in _handled(app), app.__name__
    assert {EventConnected, EventDisconnected} <= _handled(pipeline.PipelineApp)