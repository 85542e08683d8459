"""The os-ken app that serves socketnet's Prometheus metrics on /metrics.

Two jobs, neither on the packet-in path:

- a green thread polls every connected bridge each `stats_interval` seconds over
  the bridge's Channel (apps/channel.py, shared; each request waits on its own
  xid, so no other app waits on a poll): aggregate flow stats per (table, purpose
  cookie), the class flows of table 1 (one per class, matching the ct_mark
  decisions leave on connections: exact per-class packets and bytes, however many
  connections), port, table and meter stats. Replies come on the switch's
  connection in order with the packet-ins, which are decided as they are read
  (controller/wire.py), so every request is small;
- a custom collector hands every scrape to controller.metric_families (pure),
  which builds the families from what this app holds (a
  `controller.telemetry.BridgeStats` per bridge, fed plain values: the replies
  decoded here, class flows through controller.ofmsg) and what the shared Runtime
  holds (host model, switch states, config loads, the classifier's counts and
  decision cache). Labels are bounded by the config, never a 5-tuple.

Flow counters are monotonic across reactive flows expiring (only source blocks
are reactive now): each (bridge, table, purpose) and each class is a
`controller.telemetry.Totals`, fed by the polls and by flow-removed messages.

Served by `os_ken.lib.hub.WSGIServer` on `settings.metrics_listen_host:port`
(`socketnet run --metrics-listen`); a port already taken is logged as an error and
the controller runs on without metrics (forwarding matters more).
"""
from __future__ import annotations

import logging
import time
from importlib import metadata

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client import make_wsgi_app

from apps.channel import Channel, ChannelError, Channels
from controller import metric_families, ofmsg
from controller.flow import FlowError
from controller.pipeline import CLASSIFY, Purpose
from controller.switches import Runtime, SwitchState
from controller.telemetry import (BridgeStats, MeterCounters, PortCounters, TableCounters,
                                  flow_sets, stats_of)

LOG = logging.getLogger("socketnet.metrics")

FIRST_POLL_CHECK = 0.5  # seconds between looks for a bridge due a poll

_REPLIES = [ofp_event.EventOFPAggregateStatsReply, ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPPortStatsReply, ofp_event.EventOFPTableStatsReply,
            ofp_event.EventOFPMeterStatsReply]


def _version() -> str:
    try:
        return metadata.version("socketnet")
    except metadata.PackageNotFoundError:
        return "unknown"


def _port_counters(s) -> PortCounters:
    """An OFPPortStats entry as plain values."""
    return PortCounters((s.rx_packets, s.rx_bytes, s.rx_dropped, s.rx_errors),
                        (s.tx_packets, s.tx_bytes, s.tx_dropped, s.tx_errors))


def _meter_counters(s) -> MeterCounters:
    """An OFPMeterStats entry as plain values, its bands summed."""
    return MeterCounters(s.packet_in_count, sum(b.packet_band_count for b in s.band_stats),
                         sum(b.byte_band_count for b in s.band_stats))


class _Collector:
    def __init__(self, app: "MetricsApp"):
        self.app = app

    def collect(self):
        app = self.app
        return metric_families.families(app.runtime, app.bridges, app.version)


class MetricsApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime, "channels": Channels}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.channels: Channels = kwargs["channels"]
        self.bridges = {}      # bridge name -> BridgeStats
        # (request, on_reply, seen): the poller's request waiting for replies; `seen`
        # is set once this app's handler has had the last of them.
        self._inflight = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.version = _version()
        self._server = None
        self._threads = [hub.spawn(self._poll_loop)]
        self._serve()

    # --- serving ---------------------------------------------------------------

    def _serve(self):
        settings = self.runtime.host.settings
        where = (settings.metrics_listen_host, settings.metrics_listen_port)
        try:
            self._server = hub.WSGIServer(where, make_wsgi_app(self.registry))
        except OSError as exc:
            LOG.error("metrics: cannot listen on %s:%d (%s); running without /metrics",
                      *where, exc)
            return
        # eventlet.wsgi logs every request through this logger at INFO.
        logging.getLogger("os_ken.lib.hub").setLevel(logging.WARNING)
        self._threads.append(hub.spawn(self._server.serve_forever))
        LOG.info("metrics on http://%s:%d/metrics (stats every %gs)", *where,
                 settings.stats_interval)

    def close(self):
        for thread in self._threads:
            hub.kill(thread)
        if self._server is not None:
            self._server.server.close()

    def _stats(self, bridge: str) -> BridgeStats:
        return stats_of(self.bridges, bridge)

    # --- switch events ---------------------------------------------------------

    @set_ev_cls(_REPLIES, MAIN_DISPATCHER)
    def _on_reply(self, ev):
        """A reply to the poller's request, fed to it here (apps/connection.py
        hands it to the request)."""
        msg = ev.msg
        inflight = self._inflight
        if (inflight is None or inflight[0].xid != msg.xid
                or inflight[0].datapath is not msg.datapath):
            return
        try:
            inflight[1](msg)
        except Exception:  # never lose this app's event loop
            LOG.exception("metrics: handling a stats reply")
        if not msg.flags & ofp.OFPMPF_REPLY_MORE:
            inflight[2].set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev):
        msg = ev.msg
        state = self.runtime.switches.get(msg.datapath.id)
        if state is not None and state.bridge is not None:
            self._stats(state.bridge).error(msg.type)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _on_flow_removed(self, ev):
        """A flow left with its final counts (a source block): they move from live
        to gone in its (table, purpose) totals."""
        msg = ev.msg
        state = self.runtime.switches.get(msg.datapath.id)
        if state is None or state.bridge is None:
            return
        self._stats(state.bridge).flow_removed(msg.table_id, msg.cookie, msg.packet_count,
                                               msg.byte_count)

    # --- polling ---------------------------------------------------------------

    def _poll_loop(self):
        """Each connected bridge every stats_interval, and a bridge that has not
        been polled since it connected at once, so that its series are there a
        moment after it connects rather than an interval later."""
        polled = {}  # dpid -> time.monotonic() of its last poll, since it connected
        while True:
            hub.sleep(FIRST_POLL_CHECK)
            interval = self.runtime.host.settings.stats_interval
            for dpid, channel in self.channels.items():
                state = self.runtime.switches.get(dpid)
                if state is None or state.bridge is None or not state.connected:
                    polled.pop(dpid, None)
                    continue
                if time.monotonic() - polled.get(dpid, float("-inf")) < interval:
                    continue
                polled[dpid] = time.monotonic()
                stats = self._stats(state.bridge)
                began, started = time.time(), time.monotonic()
                try:
                    self.poll(channel, state, stats)
                except ChannelError as exc:
                    stats.poll_failures += 1
                    LOG.warning("%s: stats poll failed: %s", state.bridge, exc)
                except Exception:  # a bug here must not end the polling
                    stats.poll_failures += 1
                    LOG.exception("%s: stats poll failed", state.bridge)
                else:
                    stats.polled_at = began
                    stats.poll_seconds = time.monotonic() - started

    def poll(self, channel: Channel, state: SwitchState, stats: BridgeStats) -> None:
        dp = channel.dp
        is_mesh = state.bridge == self.runtime.host.mesh.name

        for table, purpose in flow_sets(state.desired, is_mesh):
            req = ofmsg.purpose_totals_request(dp, table, purpose.cookie)
            totals = stats.flow_totals(table, purpose)
            self._ask(channel, req, "aggregate-stats",
                      lambda msg, t=totals: t.observe(msg.body.packet_count,
                                                      msg.body.byte_count))
        if is_mesh:
            self._poll_decisions(channel, stats)

        replies = channel.request(ofmsg.port_stats_request(dp), "port-stats")
        stats.ports = {s.port_no: _port_counters(s) for r in replies for s in r.body}
        replies = channel.request(ofmsg.table_stats_request(dp), "table-stats")
        stats.observe_tables({s.table_id: TableCounters(s.active_count, s.lookup_count,
                                                        s.matched_count)
                              for r in replies for s in r.body})
        replies = channel.request(ofmsg.meter_stats_request(dp), "meter-stats")
        stats.meters = {s.meter_id: _meter_counters(s) for r in replies for s in r.body}

    def _poll_decisions(self, channel: Channel, stats: BridgeStats) -> None:
        """Packets and bytes per class: the class flows of table 1, one per ct_mark,
        read as Flow values (an entry that is not one of socketnet's counts for none)."""
        req = ofmsg.purpose_flows_request(channel.dp, CLASSIFY.id, Purpose.CLASSIFIED.cookie)
        entries = []  # (Flow, packets, bytes) over every part of the reply

        def on_reply(reply):
            for stat in reply.body:
                try:
                    flow = ofmsg.from_stats(stat, instructions=False)
                except FlowError:
                    continue
                entries.append((flow, stat.packet_count, stat.byte_count))
            if not reply.flags & ofp.OFPMPF_REPLY_MORE:
                stats.observe_classes(entries)

        self._ask(channel, req, "class-stats", on_reply)

    def _ask(self, channel: Channel, req, what: str, on_reply) -> list:
        """`channel.request`, with `on_reply(msg)` called for each reply as this
        app's event handler receives it: in order with the flow-removed messages,
        so that no flow's count is both in a poll and in its removal. The request
        may have its replies (from apps/connection.py's loop) before this app's
        loop has had them: it waits for that too."""
        seen = hub.Event()
        self._inflight = (req, on_reply, seen)
        try:
            replies = channel.request(req, what)
            if not seen.wait(channel.timeout):
                raise ChannelError(f"{what}: reply not seen in {channel.timeout}s")
            return replies
        finally:
            self._inflight = None
