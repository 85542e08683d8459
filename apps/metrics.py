"""The os-ken app that serves socketnet's Prometheus metrics on /metrics.

Two jobs, neither on the packet-in path:

- a green thread polls every connected bridge each `stats_interval` seconds over
  its own Channel (its own xids; the other apps never wait on it): aggregate flow
  stats per (table, purpose cookie), the class flows of table 1 (one per class,
  matching the ct_mark decisions leave on connections: exact per-class packets and
  bytes, however many connections), port, table and meter stats. Replies are
  parsed in os-ken's receive loop, ahead of packet-ins queued behind them, so
  every request is small;
- a custom collector computes every metric family at scrape time from what this
  app, the classifier app and the shared Runtime hold (STYLE.md). Labels are
  bridges, tables, purposes, ports and roles, classes, reasons: bounded by the
  config, never a 5-tuple.

Flow counters are monotonic across reactive flows expiring (only source blocks
are reactive now): each (bridge, table, purpose) and each class is a
`controller.telemetry.Totals`, fed by the polls and by flow-removed messages, and
once a series exists it stays (no stale series). A port's series go with the port.

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
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                       set_ev_cls)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client import make_wsgi_app
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from apps.channel import Channel, ChannelError, Channels
from controller.classifier import CLASS_OF_MARK
from controller.pipeline import (CLASSIFY, KNOWN_SOURCES_METER, PACKET_IN_METER, TABLE_BY_ID,
                                 Purpose, purpose_of)
from controller.switches import Runtime, SwitchState
from controller.telemetry import Totals
from topology.model import TrafficClass

LOG = logging.getLogger("socketnet.metrics")

ALL_ONES = 0xFFFFFFFFFFFFFFFF
FIRST_POLL_CHECK = 0.5  # seconds between looks for a bridge due a poll
UNAVAILABLE = ALL_ONES  # what Open vSwitch reports for a counter it does not have
REACTIVE_PAIRS = ((CLASSIFY.id, Purpose.BLOCKED),)
METER_NAMES = {PACKET_IN_METER: "packet-in", KNOWN_SOURCES_METER: "packet-in-known-sources"}
ERROR_TYPES = {getattr(ofp, n): n[len("OFPET_"):].lower().replace("_", "-")
               for n in dir(ofp) if n.startswith("OFPET_")}

_REPLIES = [ofp_event.EventOFPAggregateStatsReply, ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPPortStatsReply, ofp_event.EventOFPTableStatsReply,
            ofp_event.EventOFPMeterStatsReply]


def _version() -> str:
    try:
        return metadata.version("socketnet")
    except metadata.PackageNotFoundError:
        return "unknown"


def table_label(table_id: int) -> str:
    table = TABLE_BY_ID.get(table_id)
    return table.name if table else str(table_id)


class BridgeStats:
    """What the polls and flow-removed messages taught about one bridge; kept by
    bridge name, so that totals carry on across reconnects."""

    def __init__(self):
        self.flows = {}    # (table id, Purpose) -> Totals
        self.classes = {}  # TrafficClass -> Totals (mesh)
        self.ports = {}    # port number -> OFPPortStats of the last poll
        self.tables = {}   # table id -> OFPTableStats of the last poll
        self.meters = {}   # meter id -> OFPMeterStats of the last poll
        self.polled_at = 0.0  # time.time() the last successful poll began
        self.poll_seconds = 0.0
        self.poll_failures = 0
        # OpenFlow error type label -> count; every type from 0, so that the first
        # error of a type is an increase, not a new series.
        self.errors = dict.fromkeys(sorted(set(ERROR_TYPES.values())), 0)

    def flow_totals(self, table: int, purpose: Purpose) -> Totals:
        key = (table, purpose)
        if key not in self.flows:
            self.flows[key] = Totals()
        return self.flows[key]

    def class_totals(self, cls: TrafficClass) -> Totals:
        if cls not in self.classes:
            self.classes[cls] = Totals()
        return self.classes[cls]


class _Collector:
    def __init__(self, app: "MetricsApp"):
        self.app = app

    def collect(self):
        return self.app.families()


class MetricsApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.channels = Channels()
        self.bridges = {}      # bridge name -> BridgeStats
        self._inflight = None  # (request, on_reply): the poller's request waiting for replies
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._version = _version()
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

    def _classifier(self):
        return app_manager.lookup_service_brick("ClassifierApp")

    def _stats(self, bridge: str) -> BridgeStats:
        if bridge not in self.bridges:
            self.bridges[bridge] = BridgeStats()
        return self.bridges[bridge]

    # --- switch events ---------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev):
        dp = ev.msg.datapath
        self.channels.open(dp, self.runtime.host.settings.reconcile_timeout)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _on_dead(self, ev):
        self.channels.close(ev.datapath)

    @set_ev_cls(_REPLIES, MAIN_DISPATCHER)
    def _on_reply(self, ev):
        msg = ev.msg
        channel = self.channels.current(msg.datapath)
        if channel is None:
            return
        inflight = self._inflight
        if (inflight is not None and inflight[0].xid == msg.xid
                and inflight[0].datapath is msg.datapath
                and not isinstance(msg, msg.datapath.ofproto_parser.OFPErrorMsg)):
            try:
                inflight[1](msg)
            except Exception:  # never lose this app's event loop
                LOG.exception("metrics: handling a stats reply")
        channel.deliver(msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev):
        msg = ev.msg
        state = self.runtime.switches.get(msg.datapath.id)
        if state is not None and state.bridge is not None:
            errors = self._stats(state.bridge).errors
            kind = ERROR_TYPES.get(msg.type, "other")
            errors[kind] = errors.get(kind, 0) + 1
        self._on_reply(ev)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _on_flow_removed(self, ev):
        """A flow left with its final counts (a source block): they move from live
        to gone in its (table, purpose) totals."""
        msg = ev.msg
        purpose = purpose_of(msg.cookie)
        state = self.runtime.switches.get(msg.datapath.id)
        if purpose is None or state is None or state.bridge is None:
            return
        stats = self._stats(state.bridge)
        stats.flow_totals(msg.table_id, purpose).removed(msg.packet_count, msg.byte_count)

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
        parser = dp.ofproto_parser
        is_mesh = state.bridge == self.runtime.host.mesh.name

        pairs = {(f.table, purpose_of(f.cookie)) for f in state.desired}
        if is_mesh:
            pairs.update(REACTIVE_PAIRS)
        for table, purpose in sorted(p for p in pairs if p[1] is not None):
            req = parser.OFPAggregateStatsRequest(dp, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                                  purpose.cookie, ALL_ONES, parser.OFPMatch())
            totals = stats.flow_totals(table, purpose)
            self._ask(channel, req, "aggregate-stats",
                      lambda msg, t=totals: t.observe(msg.body.packet_count,
                                                      msg.body.byte_count))
        if is_mesh:
            self._poll_decisions(channel, stats)

        replies = channel.request(parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY), "port-stats")
        stats.ports = {s.port_no: s for r in replies for s in r.body}
        replies = channel.request(parser.OFPTableStatsRequest(dp, 0), "table-stats")
        stats.tables = {s.table_id: s for r in replies for s in r.body
                        if s.table_id in TABLE_BY_ID or s.active_count}
        replies = channel.request(parser.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL),
                                  "meter-stats")
        stats.meters = {s.meter_id: s for r in replies for s in r.body}

    def _poll_decisions(self, channel: Channel, stats: BridgeStats) -> None:
        """Packets and bytes per class: the class flows of table 1, one per ct_mark."""
        dp = channel.dp
        parser = dp.ofproto_parser
        req = parser.OFPFlowStatsRequest(dp, 0, CLASSIFY.id, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         Purpose.CLASSIFIED.cookie, ALL_ONES, parser.OFPMatch())
        live = {cls: [0, 0] for cls in TrafficClass}

        def on_reply(reply):
            for stat in reply.body:
                cls = CLASS_OF_MARK.get(dict(stat.match.items()).get("ct_mark"))
                if cls is not None:
                    live[cls][0] += stat.packet_count
                    live[cls][1] += stat.byte_count
            if not reply.flags & ofp.OFPMPF_REPLY_MORE:
                for cls, (packets, bytes_) in live.items():
                    stats.class_totals(cls).observe(packets, bytes_)

        self._ask(channel, req, "class-stats", on_reply)

    def _ask(self, channel: Channel, req, what: str, on_reply) -> list:
        """`channel.request`, with `on_reply(msg)` called for each reply as this
        app's event handler receives it: in order with the flow-removed messages,
        so that no flow's count is both in a poll and in its removal."""
        self._inflight = (req, on_reply)
        try:
            return channel.request(req, what)
        finally:
            self._inflight = None

    # --- the metric families, computed at scrape time ------------------------------

    def families(self):
        runtime = self.runtime
        host = runtime.host
        yield from self._datapath_families(runtime, host)
        yield from self._flow_families(host)
        yield from self._port_families(runtime, host)
        yield from self._classifier_families()
        yield from self._config_families(runtime)

    def _datapath_families(self, runtime, host):
        connected = GaugeMetricFamily(
            "socketnet_datapath_connected",
            "1 while the bridge's switch is connected to socketnet, else 0.", labels=["bridge"])
        connects = CounterMetricFamily(
            "socketnet_datapath_connects",
            "Connections of the bridge's switch since socketnet started (reconnects: "
            "increase above 1).", labels=["bridge"])
        info = GaugeMetricFamily("socketnet_datapath_info", "The datapath id of each bridge.",
                                 labels=["bridge", "dpid"])
        reconcile = HistogramMetricFamily(
            "socketnet_reconcile_duration_seconds",
            "Time of one pipeline sync: read ports and flows, plan, apply the bundle.",
            labels=["bridge"])
        failures = CounterMetricFamily("socketnet_reconcile_failures",
                                       "Pipeline syncs that failed.", labels=["bridge"])
        last_sync = GaugeMetricFamily(
            "socketnet_reconcile_last_success_timestamp_seconds",
            "When the bridge's pipeline was last confirmed in sync (Unix time).",
            labels=["bridge"])
        flow_mods = CounterMetricFamily(
            "socketnet_flow_mods", "Flow-mods sent, by who sent them: the reconciler "
            "(pipeline syncs) or the classifier (cached decisions, source blocks).",
            labels=["bridge", "origin"])
        errors = CounterMetricFamily("socketnet_openflow_errors",
                                     "OpenFlow error messages received, by error type.",
                                     labels=["bridge", "type"])
        by_bridge = {}
        for state in runtime.switches.values():
            if state.bridge is not None:
                if state.bridge not in by_bridge or state.connected:
                    by_bridge[state.bridge] = state
        classifier = self._classifier()
        for bridge in host.bridges:
            name = bridge.name
            state = by_bridge.get(name)
            connected.add_metric([name], 1 if state is not None and state.connected else 0)
            connects.add_metric([name], sum(s.connects for s in runtime.switches.values()
                                            if s.bridge == name))
            if state is None:
                continue
            info.add_metric([name, f"{state.dpid:016x}"], 1)
            sync = state.sync_seconds
            reconcile.add_metric([name], sync.cumulative(), sync.sum)
            failures.add_metric([name], state.sync_failures)
            last_sync.add_metric([name], state.last_sync)
            flow_mods.add_metric([name, "reconciler"], state.flow_mods)
            if name == host.mesh.name and classifier is not None:
                flow_mods.add_metric([name, "classifier"], classifier.flow_mods)
            for kind, count in sorted(self._stats(name).errors.items()):
                errors.add_metric([name, kind], count)
        yield from (connected, connects, info, reconcile, failures, last_sync, flow_mods, errors)

    def _flow_families(self, host):
        packets = CounterMetricFamily(
            "socketnet_flow_packets",
            "Packets matched by socketnet's flows, by bridge, table and purpose (cookie); "
            "monotonic across reactive flows expiring.", labels=["bridge", "table", "purpose"])
        bytes_ = CounterMetricFamily(
            "socketnet_flow_bytes", "Bytes matched by socketnet's flows, as "
            "socketnet_flow_packets_total.", labels=["bridge", "table", "purpose"])
        cls_packets = CounterMetricFamily(
            "socketnet_class_packets",
            "Netmaker ingress packets by the class of their connection (table 1's class "
            "flows, one per conntrack mark).", labels=["bridge", "class"])
        cls_bytes = CounterMetricFamily(
            "socketnet_class_bytes", "Netmaker ingress bytes by class, as "
            "socketnet_class_packets_total.", labels=["bridge", "class"])
        occupancy = GaugeMetricFamily("socketnet_table_flows",
                                      "Flow entries in each table of the pipeline.",
                                      labels=["bridge", "table"])
        lookups = CounterMetricFamily("socketnet_table_lookups",
                                      "Packets looked up in each table.",
                                      labels=["bridge", "table"])
        matched = CounterMetricFamily("socketnet_table_matched",
                                      "Packets that matched a flow of each table.",
                                      labels=["bridge", "table"])
        meter_packets = CounterMetricFamily("socketnet_meter_packets",
                                            "Packets offered to each meter.",
                                            labels=["bridge", "meter"])
        meter_dropped = CounterMetricFamily(
            "socketnet_meter_dropped_packets",
            "Packets each meter dropped (meter packet-in: packet-ins the switch did not "
            "send to socketnet).", labels=["bridge", "meter"])
        meter_dropped_bytes = CounterMetricFamily("socketnet_meter_dropped_bytes",
                                                  "Bytes each meter dropped.",
                                                  labels=["bridge", "meter"])
        polled = GaugeMetricFamily("socketnet_stats_last_poll_timestamp_seconds",
                                   "When the last successful stats poll of the bridge "
                                   "began (Unix time): the values are at least this new.",
                                   labels=["bridge"])
        poll_seconds = GaugeMetricFamily("socketnet_stats_poll_duration_seconds",
                                         "How long the last stats poll of the bridge took.",
                                         labels=["bridge"])
        poll_failures = CounterMetricFamily("socketnet_stats_poll_failures",
                                            "Stats polls that failed.", labels=["bridge"])
        is_mesh = {host.mesh.name}
        for name, stats in sorted(self.bridges.items()):
            for (table, purpose), totals in sorted(stats.flows.items()):
                labels = [name, table_label(table), purpose.label]
                packets.add_metric(labels, totals.packets)
                bytes_.add_metric(labels, totals.bytes)
            if name in is_mesh:
                for cls in TrafficClass:
                    totals = stats.class_totals(cls)
                    cls_packets.add_metric([name, cls.value], totals.packets)
                    cls_bytes.add_metric([name, cls.value], totals.bytes)
            for table_id, t in sorted(stats.tables.items()):
                labels = [name, table_label(table_id)]
                occupancy.add_metric(labels, t.active_count)
                lookups.add_metric(labels, t.lookup_count)
                matched.add_metric(labels, t.matched_count)
            for meter_id, m in sorted(stats.meters.items()):
                labels = [name, METER_NAMES.get(meter_id, str(meter_id))]
                meter_packets.add_metric(labels, m.packet_in_count)
                meter_dropped.add_metric(labels, sum(b.packet_band_count for b in m.band_stats))
                meter_dropped_bytes.add_metric(labels,
                                               sum(b.byte_band_count for b in m.band_stats))
            if stats.polled_at:
                polled.add_metric([name], stats.polled_at)
                poll_seconds.add_metric([name], stats.poll_seconds)
            poll_failures.add_metric([name], stats.poll_failures)
        yield from (packets, bytes_, cls_packets, cls_bytes, occupancy, lookups, matched,
                    meter_packets, meter_dropped, meter_dropped_bytes, polled, poll_seconds,
                    poll_failures)

    def _port_families(self, runtime, host):
        labels = ["bridge", "port", "role", "direction"]
        families = {
            "packets": CounterMetricFamily("socketnet_port_packets",
                                           "Packets through each switch port.", labels=labels),
            "bytes": CounterMetricFamily("socketnet_port_bytes",
                                         "Bytes through each switch port.", labels=labels),
            "dropped": CounterMetricFamily("socketnet_port_dropped",
                                           "Packets each switch port dropped.", labels=labels),
            "errors": CounterMetricFamily("socketnet_port_errors",
                                          "Errors of each switch port.", labels=labels),
        }
        for state in runtime.switches.values():
            if state.bridge is None or not state.connected or state.bridge not in self.bridges:
                continue
            configured = {p.name: str(p.role) for p in host.bridge(state.bridge).ports}
            for number, s in sorted(self.bridges[state.bridge].ports.items()):
                port = state.port_by_number(number)
                if port is None:  # gone since the poll: its series go with it
                    continue
                if number == ofp.OFPP_LOCAL:
                    role = "local"
                else:
                    role = configured.get(port.name, "unmanaged")
                for direction, values in (
                        ("rx", (s.rx_packets, s.rx_bytes, s.rx_dropped, s.rx_errors)),
                        ("tx", (s.tx_packets, s.tx_bytes, s.tx_dropped, s.tx_errors))):
                    for kind, value in zip(("packets", "bytes", "dropped", "errors"), values):
                        if value != UNAVAILABLE:
                            families[kind].add_metric([state.bridge, port.name, role,
                                                       direction], value)
        yield from families.values()

    def _classifier_families(self):
        classifier = self._classifier()
        if classifier is None:
            return
        yield CounterMetricFamily("socketnet_packet_ins",
                                  "Packet-ins received by the classifier.",
                                  value=classifier.packet_ins)
        decisions = CounterMetricFamily("socketnet_classifier_decisions",
                                        "Netmaker ingress decisions made, by class.",
                                        labels=["class"])
        for cls, count in sorted(classifier.decided.items()):
            decisions.add_metric([cls], count)
        yield decisions
        drops = CounterMetricFamily(
            "socketnet_classifier_drops",
            "Packet-ins that ended in a drop, by reason (rule and unroutable are drop "
            "decisions; the others were dropped without one).", labels=["reason"])
        for reason, count in sorted(classifier.cache.drops.items()):
            drops.add_metric([reason], count)
        yield drops
        yield CounterMetricFamily("socketnet_classifier_commits",
                                  "Packet-outs that committed a connection with its class "
                                  "to the mesh's conntrack zone.", value=classifier.commits)
        yield GaugeMetricFamily("socketnet_classifier_cached_decisions",
                                "Decisions held within idle_timeout, as the classifier "
                                "counts them for the caps.",
                                value=len(classifier.cache))
        yield GaugeMetricFamily("socketnet_classifier_cache_limit",
                                "classification.limits.cached_total: the zone's connection "
                                "limit.",
                                value=classifier.cache.limits.cached_total)
        yield GaugeMetricFamily("socketnet_classifier_cached_unknown_decisions",
                                "Cached decisions of sources the config does not name.",
                                value=classifier.cache.unknown)
        yield GaugeMetricFamily("socketnet_classifier_unknown_limit",
                                "classification.limits.cached_unknown.",
                                value=classifier.cache.limits.cached_unknown)
        latency = HistogramMetricFamily(
            "socketnet_classification_duration_seconds",
            "Time from a packet-in to its decision sent to the switch (the committing "
            "packet-out).")
        latency.add_metric([], classifier.latency.cumulative(), classifier.latency.sum)
        yield latency

    def _config_families(self, runtime):
        loads = CounterMetricFamily("socketnet_config_loads",
                                    "Config loads (the first and every reload), by result.",
                                    labels=["result"])
        for result, count in sorted(runtime.config_loads.items()):
            loads.add_metric([result], count)
        yield loads
        yield GaugeMetricFamily("socketnet_config_last_load_successful",
                                "1 if the last config load was taken, 0 if refused.",
                                value=0 if runtime.config_error else 1)
        yield GaugeMetricFamily("socketnet_config_last_load_success_timestamp_seconds",
                                "When the running config was loaded (Unix time).",
                                value=runtime.config_loaded_at)
        info = GaugeMetricFamily("socketnet_build_info", "socketnet's version.",
                                 labels=["version"])
        info.add_metric([self._version], 1)
        yield info
