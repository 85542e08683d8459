"""The os-ken app that classifies Netmaker ingress reactively, on the mesh bridge.

Table 1 sends the first packet of a connection the mesh's conntrack zone has no
decision for here, through the packet-in meter. One packet-in becomes one
decision (controller.classifier, pure) and one packet-out (controller.fastpath):
it commits the connection to the zone with its class as ct_mark and, unless the
class is drop, sends the packet back to table 0, where the mark now carries it.
The rest of the connection, both ways, stays in the switch. No FlowMod per
connection: only a source over its cap gets one (a timed block).

Packet-ins never become os-ken messages or events: the app takes them from the
switch connection's receive loop as bytes (controller.wire), decides each there,
and writes the answers to the packet-ins of one read together, BATCH at most at
a time, at once. What the controller cannot take yet waits in the socket and in
Open vSwitch's queue for the controller, behind the packet-in meter.

On connect (and on reload) it sets the zone's connection limit (cached_total)
through ovs-vswitchd's control socket when it can reach it (`dpctl/ct-set-limits`;
Open vSwitch 3.1 has no OVSDB column for it).

For /metrics (apps/metrics.py) it counts packet-ins, commits, decisions by class
and the time of each decision, in the ClassifierCounts it gives the Runtime.
"""
from __future__ import annotations

import logging
import struct
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.channel import describe_error, next_xid
from apps.pipeline import EventPipelineSynced
from controller import fastpath, ofmsg, wire
from controller.classifier import (ADMITTING, MARKS, RETRIES, Classifier, DecisionCache,
                                   DropReason, Verdict, parse_ipv4, source_block_flow)
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
# Enum members and values looked up once: on the packet-in path each lookup costs
# about as much as a dict access of the decision's own.
_VALUE = {cls: cls.value for cls in TrafficClass}
_DROP = TrafficClass.DROP
_OVER_CAP, _NOT_HELD = Verdict.SOURCE_OVER_CAP, Verdict.NOT_HELD


class ClassifierApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        host = self.runtime.host
        self.cache = DecisionCache(host.classification, host.known_sources)
        self._on_host_change(host)
        self.runtime.decision_cache = self.cache
        # (datapath, xid, Flow5) of the last decisions, by xid: the connection's
        # xids, which no other app's message shares (apps/channel.next_xid).
        self._sent = [None] * RECENT_XIDS
        self.counts = ClassifierCounts()  # for /metrics
        self.runtime.classifier_counts = self.counts
        # Answers not sent yet, per switch connection: written to it in one go when
        # its receive loop is done with a read (or BATCH of them), rather than one
        # socket write each. Per connection: each has a receive loop of its own, and
        # one may decide while another waits to write.
        self._out: dict = {}
        self.runtime.on_host_change(self._on_host_change)
        self._sweeper = hub.spawn(self._sweep)
        wire.take(ofp.OFPT_PACKET_IN, self)

    def _on_host_change(self, host):
        """New rules apply to new flows; decisions already cached run out."""
        self.classification = host.classification
        self.classifier = Classifier(host)
        self.zone = conntrack_zone(host, host.mesh)
        self.cache.reconfigure(host.classification, host.known_sources)

    def _xid(self, datapath, flow5) -> int:
        xid = next_xid(datapath)
        self._sent[xid % RECENT_XIDS] = (datapath, xid, flow5)
        return xid

    def _queue(self, datapath, message: bytes) -> None:
        out = self._out.get(datapath)
        if out is None:
            self._out[datapath] = [message]
        else:
            out.append(message)
            if len(out) >= BATCH:
                self._flush(datapath)

    def _flush(self, datapath) -> None:
        out = self._out.pop(datapath, None)  # before writing: a write may wait
        if out:
            wire.write(datapath, b"".join(out))

    # --- what controller.wire calls, in the switch connection's receive loop

    def handle(self, datapath, buf, at: int, length: int) -> bool:
        """A PACKET_IN, buf[at:at + length]: decided, its answer queued. Every one is
        taken (True): one of another table or cookie is counted and left alone."""
        started = time.perf_counter()
        counts = self.counts
        counts.packet_ins += 1
        try:
            table_id, cookie, in_port, data = fastpath.packet_in_fields(buf, at, length)
        except (struct.error, ValueError) as exc:
            LOG.warning("malformed packet-in from %s: %s", datapath.address, exc)
            self.cache.count_drop(DropReason.UNPARSABLE)
            return True
        if table_id != CLASSIFY.id or cookie != MISS_COOKIE:
            return True
        if in_port is None:
            LOG.warning("packet-in from %s without in_port: dropped", datapath.address)
            self.cache.count_drop(DropReason.UNPARSABLE)
            return True
        try:
            self._decide(datapath, in_port, data, started)
        except Exception:  # a bug must not end the switch connection
            LOG.exception("deciding a packet-in from %s failed: dropped", datapath.address)
            self.cache.count_drop(DropReason.ERROR)
        return True

    def flush(self, datapath) -> None:
        """The receive loop waits for more bytes, yields, or hands a message to
        os-ken: the connection's answers go out."""
        self._flush(datapath)

    def _decide(self, datapath, in_port: int, data: bytes, started: float) -> None:
        counts = self.counts
        cache = self.cache
        flow5 = parse_ipv4(data)
        if flow5 is None:
            cache.count_drop(DropReason.UNPARSABLE)
            return
        verdict = cache.admit(flow5, time.monotonic())
        if verdict in ADMITTING:
            decision = self.classifier.decide(flow5)
            cls = decision.cls
            counts.decided[_VALUE[cls]] += 1
            drop = cls is _DROP
            if drop:
                cache.count_drop(decision.drop_reason)
            self._queue(datapath, fastpath.pack_commit(
                self._xid(datapath, flow5), in_port, data, self.zone, _MARK[cls],
                send_on=not drop))
            counts.commits += 1
            counts.latency.observe(time.perf_counter() - started)
        elif verdict is _OVER_CAP:
            seconds = self.classification.limits.over_limit_seconds
            LOG.warning("source %s is over its cap of %d decisions: dropped for %ds",
                        flow5, self.classification.limits.cached_per_source, seconds)
            self._flush(datapath)  # what was decided before goes first
            block = ofmsg.flow_mod(datapath, source_block_flow(flow5.src, seconds, self.zone))
            # rare (one per source over its cap): os-ken packs it
            block.xid = self._xid(datapath, flow5)
            datapath.send_msg(block)
            counts.flow_mods += 1
        elif verdict is _NOT_HELD:
            LOG.warning("%s: committed %d times, the connection does not stay in zone %d "
                        "(is it full?): dropped", flow5, RETRIES, self.zone)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _on_error(self, ev):
        msg = ev.msg
        sent = self._sent[msg.xid % RECENT_XIDS]
        if sent is not None and sent[0] is msg.datapath and sent[1] == msg.xid:
            LOG.error("switch refused the decision for %s: %s", sent[2], describe_error(msg))

    @set_ev_cls(EventPipelineSynced)
    def _on_synced(self, ev):
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
        wire.give_back(ofp.OFPT_PACKET_IN, self)
        hub.kill(self._sweeper)
