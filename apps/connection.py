"""The os-ken app that owns every switch connection's Channel (apps/channel.py).

One owner for all the apps: on a switch's features it opens the connection's
Channel in the shared `Channels` (the os-ken context "channels"), then tells the
other apps (EventConnected); on that same connection's DEAD it closes it and
tells them (EventDisconnected; a late DEAD of a connection since replaced is
ignored). Every reply and error a request may wait for comes here once and goes
to its one taker (`Channels.deliver`).

Each os-ken app handles its events in its own loop, in no set order with the
others', so the apps start on a connection when told of it here, never on the
switch's features: by then its channel is open. Apps that only look a switch up
(the REST API, the metrics poller) find it here once it is connected.
"""
from __future__ import annotations

import logging

from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                       set_ev_cls)
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.channel import Channels
from controller.switches import Runtime

LOG = logging.getLogger("socketnet.channel")

# Every reply any app's request waits for (the sync's, the metrics poller's, the
# REST API's and os-ken ofctl's), and errors.
_REPLIES = [ofp_event.EventOFPPortDescStatsReply, ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPAggregateStatsReply, ofp_event.EventOFPPortStatsReply,
            ofp_event.EventOFPTableStatsReply, ofp_event.EventOFPTableFeaturesStatsReply,
            ofp_event.EventOFPMeterStatsReply, ofp_event.EventOFPMeterConfigStatsReply,
            ofp_event.EventOFPMeterFeaturesStatsReply, ofp_event.EventOFPDescStatsReply,
            ofp_event.EventOFPBarrierReply, ofp_event.EventONFBundleCtrlMsg,
            ofp_event.EventOFPRoleReply, ofp_event.EventOFPErrorMsg]


class EventConnected(event.EventBase):
    """A switch connected: the channel of `datapath` is open."""

    def __init__(self, datapath):
        super().__init__()
        self.datapath = datapath


class EventDisconnected(event.EventBase):
    """The current connection of a switch died: its channel is closed."""

    def __init__(self, datapath):
        super().__init__()
        self.datapath = datapath


class ConnectionApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime, "channels": Channels}
    _EVENTS = [EventConnected, EventDisconnected]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.channels: Channels = kwargs["channels"]

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev):
        dp = ev.msg.datapath
        self.channels.open(dp, self.runtime.host.settings.reconcile_timeout)
        self.send_event_to_observers(EventConnected(dp))

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _on_dead(self, ev):
        dp = ev.datapath
        if self.channels.forget(dp):  # not a late DEAD of a connection since replaced
            self.send_event_to_observers(EventDisconnected(dp))

    @set_ev_cls(_REPLIES, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_reply(self, ev):
        if isinstance(ev.msg, ev.msg.datapath.ofproto_parser.OFPErrorMsg):
            LOG.debug("error from %016x xid %d", ev.msg.datapath.id, ev.msg.xid)
        self.channels.deliver(ev.msg)
