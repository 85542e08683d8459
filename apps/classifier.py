"""The os-ken app that classifies Netmaker ingress reactively, on the mesh bridge.

Table 1 sends the first packet of a connection the mesh's conntrack zone has no
decision for here, through the packet-in meter. One packet-in becomes one
decision (controller.classifier, pure) and one packet-out (controller.fastpath;
the packet-outs of packet-ins handled back to back go out in one write):
it commits the connection to the zone with its class as ct_mark and, unless the
class is drop, sends the packet back to table 0, where the mark now carries it.
The rest of the connection, both ways, stays in the switch. No FlowMod per
connection: only a source over its cap gets one (a timed block).

On connect (and on reload) it sets the zone's connection limit (cached_total)
through ovs-vswitchd's control socket when it can reach it (`dpctl/ct-set-limits`;
Open vSwitch 3.1 has no OVSDB column for it).

For /metrics (apps/metrics.py) it counts packet-ins, commits, decisions by class
and the time of each decision, in the ClassifierCounts it gives the Runtime.
"""
from __future__ import annotations

import logging
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofp_parser

from apps.channel import describe_error, next_xid
from apps.pipeline import EventPipelineSynced
from controller import fastpath, ofmsg
from controller.classifier import (MARKS, RETRIES, Classifier, DecisionCache, DropReason, Verdict,
                                   parse_ipv4, source_block_flow)
from controller.compiler import conntrack_zone
from controller.pipeline import CLASSIFY, Purpose
from controller.switches import Runtime
from controller.telemetry import ClassifierCounts
from controller.vswitchd import VswitchdUnreachable
from topology.model import TrafficClass

LOG = logging.getLogger("socketnet.classifier")

MISS_COOKIE = Purpose.CLASSIFY.cookie
SWEEP_SECONDS = 5.0
# The xids of the last decisions sent, to name a refused one.
RECENT_XIDS = 4096
# Answers written to the switch in one go at most (when packet-ins keep coming).
BATCH = 64
_MARK = {cls: int(mark) for cls, mark in MARKS.items()}  # the ct_mark of each class


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
        # (datapath, xid, Flow5) of the last decisions, by xid: the connection's
        # xids, which no other app's message shares (apps/channel.next_xid).
        self._sent = [None] * RECENT_XIDS
        self.counts = ClassifierCounts()  # for /metrics
        self.runtime.classifier_counts = self.counts
        # Answers not sent yet: written to the switch in one go once no packet-in is
        # waiting (or BATCH of them), rather than one socket write each.
        self._out, self._out_dp = [], None
        self.runtime.on_host_change(self._on_host_change)
        self._sweeper = hub.spawn(self._sweep)

    def _on_host_change(self, host):
        """New rules apply to new flows; decisions already cached run out."""
        self.classification = host.classification
        self.classifier = Classifier(host)
        self.zone = conntrack_zone(host, host.mesh)
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

    def _xid(self, datapath, flow5) -> int:
        xid = next_xid(datapath)
        self._sent[xid % RECENT_XIDS] = (datapath, xid, flow5)
        return xid

    def _queue(self, datapath, message: bytes) -> None:
        if datapath is not self._out_dp:
            self._flush()
            self._out_dp = datapath
        self._out.append(message)

    def _flush(self) -> None:
        if self._out:
            self._out_dp.send(b"".join(self._out))
            self._out = []

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev):
        try:
            self._decide(ev)
        finally:
            if len(self._out) >= BATCH or self.events.empty():
                self._flush()

    def _decide(self, ev):
        started = time.perf_counter()
        counts = self.counts
        counts.packet_ins += 1
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
            LOG.warning("source %s is over its cap of %d decisions: dropped for %ds",
                        flow5, self.classification.limits.cached_per_source, seconds)
            block = ofmsg.flow_mod(msg.datapath, source_block_flow(flow5.src, seconds, self.zone))
            # rare (one per source over its cap): os-ken packs it
            block.xid = self._xid(msg.datapath, flow5)
            msg.datapath.send_msg(block)
            counts.flow_mods += 1
            return
        if verdict is Verdict.NOT_HELD:
            LOG.warning("%s: committed %d times, the connection does not stay in zone %d "
                        "(is it full?): dropped", flow5, RETRIES, self.zone)
            return
        if not verdict.admitted:
            return
        decision = self.classifier.decide(flow5)
        counts.decided[decision.cls.value] += 1
        drop = decision.cls is TrafficClass.DROP
        if drop:
            cache.count_drop(decision.drop_reason)
        self._queue(msg.datapath, fastpath.pack_commit(
            self._xid(msg.datapath, flow5), msg.match["in_port"], msg.data, self.zone,
            _MARK[decision.cls], send_on=not drop))
        counts.commits += 1
        counts.latency.observe(time.perf_counter() - started)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _on_error(self, ev):
        self._flush()  # every event of this app's queue ends a batch
        msg = ev.msg
        sent = self._sent[msg.xid % RECENT_XIDS]
        if sent is not None and sent[0] is msg.datapath and sent[1] == msg.xid:
            LOG.error("switch refused the decision for %s: %s", sent[2], describe_error(msg))

    @set_ev_cls(EventPipelineSynced)
    def _on_synced(self, ev):
        self._flush()
        if ev.bridge != self.runtime.host.mesh.name:
            return
        limit = self.classification.limits.cached_total
        try:
            self.runtime.vswitchd.call("dpctl/ct-set-limits", f"zone={self.zone},limit={limit}")
        except (VswitchdUnreachable, ValueError) as exc:
            LOG.warning("zone %d: cannot set its connection limit (%d): %s; the zone is "
                        "bounded by the datapath's own limit only", self.zone, limit, exc)
        else:
            LOG.info("zone %d: connection limit %d", self.zone, limit)

    def _sweep(self):
        while True:
            hub.sleep(SWEEP_SECONDS)
            self.cache.expire(time.monotonic())

    def close(self):
        hub.kill(self._sweeper)
