"""The os-ken app that classifies Netmaker ingress reactively, on the mesh bridge.

Table 1's miss sends the first packet of an undecided flow here, through the
packet-in meter. One packet-in becomes one decision (controller.classifier, pure)
and one write to the switch: the decision's table-1 flow and, unless it is a
drop, the packet itself back to table 0 (PacketOut to OFPP_TABLE), which now
follows the decided path. Both messages are packed with `struct`
(controller.fastpath); OpenFlow keeps their order, so the packet meets its flow.

Flow-removed messages and a periodic sweep keep the count of cached decisions
right; a pipeline sync hands over the decisions the switch already holds.
"""
from __future__ import annotations

import collections
import itertools
import logging
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.channel import describe_error
from apps.pipeline import EventPipelineSynced
from controller import fastpath
from controller.classifier import (Classifier, DecisionCache, DropReason, Verdict, decision_flow,
                                   parse_ipv4, source_block_flow)
from controller.pipeline import CLASSIFY, Purpose
from controller.switches import Runtime
from topology.model import TrafficClass

LOG = logging.getLogger("socketnet.classifier")

MISS_COOKIE = Purpose.CLASSIFY.cookie
SWEEP_SECONDS = 5.0
# The xids of the last decisions sent, to name a refused one.
RECENT_XIDS = 4096


class ClassifierApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        host = self.runtime.host
        self.classification = host.classification
        self.classifier = Classifier(host)
        self.cache = DecisionCache(self.classification)
        self.decided = {cls.value: 0 for cls in TrafficClass}
        self._xids = itertools.count(1)
        self._sent = collections.OrderedDict()  # xid -> Flow5, the last RECENT_XIDS
        self.runtime.on_host_change(self._on_host_change)
        self._sweeper = hub.spawn(self._sweep)

    def _on_host_change(self, host):
        """New rules apply to new flows; decisions already cached run out."""
        self.classification = host.classification
        self.classifier = Classifier(host)
        self.cache.limits = host.classification.limits

    def _xid(self, flow5) -> int:
        xid = next(self._xids) & 0xFFFFFFFF
        self._sent[xid] = flow5
        if len(self._sent) > RECENT_XIDS:
            self._sent.popitem(last=False)
        return xid

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev):
        msg = ev.msg
        if msg.table_id != CLASSIFY.id or msg.cookie != MISS_COOKIE:
            return
        cache = self.cache
        flow5 = parse_ipv4(msg.data)
        if flow5 is None:
            cache.count_drop(DropReason.UNPARSABLE)
            return
        verdict = cache.admit(flow5, time.monotonic())
        if verdict is Verdict.SOURCE_OVER_CAP:
            seconds = self.classification.limits.over_limit_seconds
            LOG.warning("source %s is over its cap of %d cached decisions: dropped for %ds",
                        flow5, self.classification.limits.cached_per_source, seconds)
            msg.datapath.send(fastpath.pack_flow_mod(
                self._xid(flow5), source_block_flow(flow5.src, seconds)))
            return
        if not verdict.admitted:
            return
        decision = self.classifier.decide(flow5)
        self.decided[decision.cls.value] += 1
        out = fastpath.pack_flow_mod(self._xid(flow5), decision_flow(flow5, decision,
                                                                self.classification))
        if decision.cls is TrafficClass.DROP:
            cache.count_drop(decision.drop_reason)
        else:
            out += fastpath.pack_packet_out(self._xid(flow5), msg.match["in_port"], msg.data)
        msg.datapath.send(out)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _on_flow_removed(self, ev):
        msg = ev.msg
        if msg.cookie == Purpose.CLASSIFIED.cookie:
            self.cache.removed(dict(msg.match.items()))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _on_error(self, ev):
        flow5 = self._sent.get(ev.msg.xid)
        if flow5 is not None:
            LOG.error("switch refused the decision for %s: %s", flow5, describe_error(ev.msg))

    @set_ev_cls(EventPipelineSynced)
    def _on_synced(self, ev):
        if ev.bridge != self.runtime.host.mesh.name:
            return
        held = [f.match_dict for f in ev.reactive if f.cookie == Purpose.CLASSIFIED.cookie]
        self.cache.resync(held, time.monotonic())
        LOG.info("%s: %d cached decisions held by the switch", ev.bridge, len(held))

    def _sweep(self):
        while True:
            hub.sleep(SWEEP_SECONDS)
            self.cache.expire(time.monotonic())

    def close(self):
        hub.kill(self._sweeper)
