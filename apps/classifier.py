"""The os-ken app that classifies Netmaker ingress reactively, on the mesh bridge.

Table 1's miss sends the first packet of an undecided flow here, through the
packet-in meter. One packet-in becomes one decision (controller.classifier, pure)
and one write to the switch: the decision's table-1 flow and, unless it is a
drop, the packet itself back to table 0 (PacketOut to OFPP_TABLE), which now
follows the decided path. Both messages are packed with `struct`
(controller.fastpath); OpenFlow keeps their order, so the packet meets its flow.

Flow-removed messages and a periodic sweep keep the count of cached decisions
right; a pipeline sync hands over the decisions the switch already holds.

For /metrics (apps/metrics.py) it counts packet-ins, flow-mods and the time of
each decision, and remembers the class of the newest decisions by their cache key
(`classes`), so that a flow-removed can be booked to its class.
"""
from __future__ import annotations

import itertools
import logging
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofp_parser

from apps.channel import describe_error
from apps.pipeline import EventPipelineSynced
from controller import fastpath
from controller.classifier import (Classifier, DecisionCache, DropReason, Verdict, cache_key,
                                   parse_ipv4, source_block_flow)
from controller.pipeline import CLASSIFY, Purpose
from controller.switches import Runtime
from controller.telemetry import CLASSIFICATION_BUCKETS, Buckets
from topology.model import TrafficClass

LOG = logging.getLogger("socketnet.classifier")

MISS_COOKIE = Purpose.CLASSIFY.cookie
SWEEP_SECONDS = 5.0
# The xids of the last decisions sent, to name a refused one.
RECENT_XIDS = 4096


def _packet_in(datapath, version, msg_type, msg_len, xid, buf):
    """os-ken's parser of PACKET_IN, replaced: the same OFPPacketIn, its fields
    read with `struct` (controller.fastpath) and its match a plain mapping, not
    an OFPMatch, which cost more than the whole decision."""
    msg = ofp_parser.OFPPacketIn(datapath)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.buf = buf
    fast = fastpath.unpack_packet_in(buf)
    msg.buffer_id, msg.total_len, msg.reason = fast.buffer_id, fast.total_len, fast.reason
    msg.table_id, msg.cookie, msg.match, msg.data = (fast.table_id, fast.cookie, fast.match,
                                                     fast.data)
    return msg


ofp_parser._MSG_PARSERS[ofp.OFPT_PACKET_IN] = _packet_in


class ClassifierApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        host = self.runtime.host
        self.cache = DecisionCache(host.classification, host.known_sources)
        self._on_host_change(host)
        queue = self.classification.limits.queue
        self.events = hub.Queue(queue)  # os-ken's default is 128, waiting when full
        self._events_sem = hub.BoundedSemaphore(queue)
        self.runtime.decision_cache = self.cache
        self.decided = {cls.value: 0 for cls in TrafficClass}
        self._xids = itertools.count(1)
        self._sent = [None] * RECENT_XIDS  # (xid, Flow5) of the last decisions, by xid
        # For /metrics: counters, the decision latency, and the class of each of the
        # newest decisions (never more than the cache may hold).
        self.packet_ins = 0
        self.flow_mods = 0
        self.latency = Buckets(CLASSIFICATION_BUCKETS)
        self.classes = {}  # cache key (controller.classifier.cache_key) -> TrafficClass
        self.runtime.on_host_change(self._on_host_change)
        self._sweeper = hub.spawn(self._sweep)

    def _on_host_change(self, host):
        """New rules apply to new flows; decisions already cached run out."""
        self.classification = host.classification
        self.classifier = Classifier(host)
        self.packer = fastpath.DecisionPacker(self.classification)
        self.cache.reconfigure(host.classification, host.known_sources)

    def _send_event(self, ev, state):
        """Packet-ins wait in a queue of `limits.queue`; one that finds it full is
        dropped and counted, never waited for (waiting would stall the switch's
        connection, and with it everything else it carries)."""
        if not isinstance(ev, ofp_event.EventOFPPacketIn):
            return super()._send_event(ev, state)
        if not self._events_sem.acquire(blocking=False):
            self.cache.count_drop(DropReason.QUEUE_FULL)
            return None
        self.events.put((ev, state))
        return None

    def _xid(self, flow5) -> int:
        xid = next(self._xids) & 0xFFFFFFFF
        self._sent[xid % RECENT_XIDS] = (xid, flow5)
        return xid

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev):
        started = time.perf_counter()
        self.packet_ins += 1
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
            self.flow_mods += 1
            return
        if not verdict.admitted:
            return
        decision = self.classifier.decide(flow5)
        self.decided[decision.cls.value] += 1
        out = self.packer.pack(self._xid(flow5), flow5, decision)
        if decision.cls is TrafficClass.DROP:
            cache.count_drop(decision.drop_reason)
        else:
            out += fastpath.pack_packet_out(self._xid(flow5), msg.match["in_port"], msg.data)
        msg.datapath.send(out)
        self.flow_mods += 1
        classes = self.classes
        classes[cache_key(flow5, cache.granularity)] = decision.cls
        if len(classes) > self.classification.limits.cached_total:
            del classes[next(iter(classes))]
        self.latency.observe(time.perf_counter() - started)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _on_flow_removed(self, ev):
        msg = ev.msg
        if msg.cookie == Purpose.CLASSIFIED.cookie:
            self.cache.removed(dict(msg.match.items()))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _on_error(self, ev):
        sent = self._sent[ev.msg.xid % RECENT_XIDS]
        if sent is not None and sent[0] == ev.msg.xid:
            LOG.error("switch refused the decision for %s: %s", sent[1], describe_error(ev.msg))

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
