"""socketnet's Prometheus metric families, built at scrape time from state the
controller already holds (STYLE.md: a custom collector's `collect()`). Pure:
plain values in (the Runtime with its host model, switch states and config
loads; the BridgeStats of each bridge; the classifier's counts and decision
cache; the version), prometheus_client families out. No os-ken; apps/metrics.py
serves them.

    families(runtime, bridges, version)   every family, in the order below:
    datapath_families    connection, syncs, flow-mods, OpenFlow errors per bridge
    flow_families        flow and class totals, tables, meters, the polls themselves
    port_families        each switch port's counters, with its role
    classifier_families  packet-ins, decisions, drops, the cache and its caps
    config_families      config loads, the version

Labels are bridges, tables, purposes, ports and roles, classes, reasons, meters,
error types: bounded by the config and the pipeline, never a 5-tuple or an
address. A bridge that has a switch state gets its BridgeStats at the first
scrape, so that its counters start at 0 rather than appear later.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from controller.classifier import DecisionCache
from controller.flow import OFPP_LOCAL
from controller.pipeline import KNOWN_SOURCES_METER, PACKET_IN_METER, TABLE_BY_ID
from controller.switches import Runtime
from controller.telemetry import UNAVAILABLE, BridgeStats, ClassifierCounts, stats_of
from topology.model import Host, TrafficClass

METER_NAMES = {PACKET_IN_METER: "packet-in", KNOWN_SOURCES_METER: "packet-in-known-sources"}
PORT_COUNTERS = ("packets", "bytes", "dropped", "errors")  # the order of PortCounters' tuples


def table_label(table_id: int) -> str:
    """A table's name in the pipeline, or its number for a table outside it."""
    table = TABLE_BY_ID.get(table_id)
    return table.name if table else str(table_id)


def meter_label(meter_id: int) -> str:
    return METER_NAMES.get(meter_id, str(meter_id))


def families(runtime: Runtime, bridges: dict, version: str) -> Iterator:
    """Every metric family; `bridges` is bridge name -> BridgeStats."""
    host = runtime.host
    counts = runtime.classifier_counts
    yield from datapath_families(runtime, bridges, counts)
    yield from flow_families(host, bridges)
    yield from port_families(runtime, bridges)
    yield from classifier_families(counts, runtime.decision_cache)
    yield from config_families(runtime, version)


def datapath_families(runtime: Runtime, bridges: dict,
                      counts: Optional[ClassifierCounts]) -> Iterator:
    """One series per bridge of the config (and origin, error type): its switch's
    connection, pipeline syncs, flow-mods and OpenFlow errors."""
    host = runtime.host
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
    by_bridge = {}  # bridge name -> its connected switch state, else its last one
    for state in runtime.switches.values():
        if state.bridge is not None:
            if state.bridge not in by_bridge or state.connected:
                by_bridge[state.bridge] = state
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
        if name == host.mesh.name and counts is not None:
            flow_mods.add_metric([name, "classifier"], counts.flow_mods)
        for kind, count in sorted(stats_of(bridges, name).errors.items()):
            errors.add_metric([name, kind], count)
    yield from (connected, connects, info, reconcile, failures, last_sync, flow_mods, errors)


def flow_families(host: Host, bridges: Mapping[str, BridgeStats]) -> Iterator:
    """What the polls taught, per bridge that has stats: flow totals per (table,
    purpose), class totals (mesh), tables, meters, and the polls themselves."""
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
    for name, stats in sorted(bridges.items()):
        for (table, purpose), totals in sorted(stats.flows.items()):
            labels = [name, table_label(table), purpose.label]
            packets.add_metric(labels, totals.packets)
            bytes_.add_metric(labels, totals.bytes)
        if name == host.mesh.name:
            for cls in TrafficClass:
                totals = stats.class_totals(cls)
                cls_packets.add_metric([name, cls.value], totals.packets)
                cls_bytes.add_metric([name, cls.value], totals.bytes)
        for table_id, t in sorted(stats.tables.items()):
            labels = [name, table_label(table_id)]
            occupancy.add_metric(labels, t.active)
            lookups.add_metric(labels, t.lookups)
            matched.add_metric(labels, t.matched)
        for meter_id, m in sorted(stats.meters.items()):
            labels = [name, meter_label(meter_id)]
            meter_packets.add_metric(labels, m.packets)
            meter_dropped.add_metric(labels, m.dropped_packets)
            meter_dropped_bytes.add_metric(labels, m.dropped_bytes)
        if stats.polled_at:
            polled.add_metric([name], stats.polled_at)
            poll_seconds.add_metric([name], stats.poll_seconds)
        poll_failures.add_metric([name], stats.poll_failures)
    yield from (packets, bytes_, cls_packets, cls_bytes, occupancy, lookups, matched,
                meter_packets, meter_dropped, meter_dropped_bytes, polled, poll_seconds,
                poll_failures)


def port_families(runtime: Runtime, bridges: Mapping[str, BridgeStats]) -> Iterator:
    """Each port of a connected bridge, as the last poll counted it, by its name and
    role: its role in the config, "local" for the bridge's own port, "unmanaged"
    for one the config does not name. A port gone since the poll has no series; a
    counter the switch does not have is left out."""
    host = runtime.host
    families_ = {
        "packets": CounterMetricFamily("socketnet_port_packets",
                                       "Packets through each switch port.",
                                       labels=["bridge", "port", "role", "direction"]),
        "bytes": CounterMetricFamily("socketnet_port_bytes",
                                     "Bytes through each switch port.",
                                     labels=["bridge", "port", "role", "direction"]),
        "dropped": CounterMetricFamily("socketnet_port_dropped",
                                       "Packets each switch port dropped.",
                                       labels=["bridge", "port", "role", "direction"]),
        "errors": CounterMetricFamily("socketnet_port_errors",
                                      "Errors of each switch port.",
                                      labels=["bridge", "port", "role", "direction"]),
    }
    for state in runtime.switches.values():
        if state.bridge is None or not state.connected or state.bridge not in bridges:
            continue
        configured = {p.name: str(p.role) for p in host.bridge(state.bridge).ports}
        for number, counters in sorted(bridges[state.bridge].ports.items()):
            port = state.port_by_number(number)
            if port is None:  # gone since the poll: its series go with it
                continue
            role = "local" if number == OFPP_LOCAL else configured.get(port.name, "unmanaged")
            for direction, values in (("rx", counters.rx), ("tx", counters.tx)):
                for kind, value in zip(PORT_COUNTERS, values):
                    if value != UNAVAILABLE:
                        families_[kind].add_metric([state.bridge, port.name, role, direction],
                                                   value)
    yield from families_.values()


def classifier_families(counts: Optional[ClassifierCounts],
                        cache: Optional[DecisionCache]) -> Iterator:
    """The classifier's counts and its decision cache; none without a classifier."""
    if counts is None:
        return
    yield CounterMetricFamily("socketnet_packet_ins",
                              "Packet-ins received by the classifier.",
                              value=counts.packet_ins)
    decisions = CounterMetricFamily("socketnet_classifier_decisions",
                                    "Netmaker ingress decisions made, by class.",
                                    labels=["class"])
    for cls, count in sorted(counts.decided.items()):
        decisions.add_metric([cls], count)
    yield decisions
    drops = CounterMetricFamily(
        "socketnet_classifier_drops",
        "Packet-ins that ended in a drop, by reason (rule and unroutable are drop "
        "decisions; the others were dropped without one).", labels=["reason"])
    for reason, count in sorted(cache.drops.items()):
        drops.add_metric([reason], count)
    yield drops
    yield CounterMetricFamily("socketnet_classifier_commits",
                              "Packet-outs that committed a connection with its class "
                              "to the mesh's conntrack zone.", value=counts.commits)
    yield GaugeMetricFamily("socketnet_classifier_cached_decisions",
                            "Decisions held within idle_timeout, as the classifier "
                            "counts them for the caps.",
                            value=len(cache))
    yield GaugeMetricFamily("socketnet_classifier_cache_limit",
                            "classification.limits.cached_total: the zone's connection "
                            "limit.",
                            value=cache.limits.cached_total)
    yield GaugeMetricFamily("socketnet_classifier_cached_unknown_decisions",
                            "Cached decisions of sources the config does not name.",
                            value=cache.unknown)
    yield GaugeMetricFamily("socketnet_classifier_unknown_limit",
                            "classification.limits.cached_unknown.",
                            value=cache.limits.cached_unknown)
    latency = HistogramMetricFamily(
        "socketnet_classification_duration_seconds",
        "Time from a packet-in to its decision sent to the switch (the committing "
        "packet-out).")
    latency.add_metric([], counts.latency.cumulative(), counts.latency.sum)
    yield latency


def config_families(runtime: Runtime, version: str) -> Iterator:
    """Config loads by result, the last one's outcome and time, the version."""
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
    info.add_metric([version], 1)
    yield info
