"""controller/metric_families.py: the families /metrics serves, from held state,
with no switch: which series exist, with which labels and values."""
from __future__ import annotations

import pytest

from controller import metric_families
from controller.classifier import DecisionCache
from controller.compiler import SwitchPort
from controller.flow import OFPP_LOCAL, Flow
from controller.pipeline import ADMIT, CLASSIFY, Purpose
from controller.switches import Runtime
from controller.telemetry import (ERROR_TYPES, UNAVAILABLE, ClassifierCounts, MeterCounters,
                                  PortCounters, TableCounters, stats_of)
from topology.model import TrafficClass

LABELS = {"bridge", "table", "purpose", "class", "port", "role", "direction", "meter", "reason",
          "origin", "type", "dpid", "result", "version"}


def samples(families) -> dict:
    """(sample name, frozenset of its labels) -> value, over every family."""
    out = {}
    for family in families:
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, key
            out[key] = s.value
    return out


def value(found: dict, name: str, **labels):
    return found[(name, frozenset(labels.items()))]


def series(found: dict, name: str) -> list:
    """The label sets of one sample name, as sorted tuples of items."""
    return sorted(tuple(sorted(labels)) for n, labels in found if n == name)


@pytest.fixture
def runtime(seed_host) -> Runtime:
    """mesh connected (twice: one reconnect), vmbr0 never, and a switch that is
    not a bridge of the config."""
    rt = Runtime()
    rt.replace_host(seed_host)
    old = rt.switch(0x11)
    old.bridge, old.connects = "mesh", 1
    mesh = rt.switch(0xA1)
    mesh.bridge, mesh.connected, mesh.connects = "mesh", True, 1
    mesh.flow_mods, mesh.sync_failures, mesh.last_sync = 40, 1, 1700000000.0
    mesh.sync_seconds.observe(0.002)
    mesh.ports = {"mesh-gw": SwitchPort(1, "mesh-gw", "02:00:00:00:00:01"),
                  "veth200": SwitchPort(3, "veth200", "02:00:00:00:00:03"),
                  "stray0": SwitchPort(7, "stray0", "02:00:00:00:00:07"),
                  "mesh": SwitchPort(OFPP_LOCAL, "mesh", "02:00:00:00:00:ff")}
    rt.switch(0xB1)  # not a bridge of the config
    return rt


def test_each_bridge_of_the_config_has_its_connection_series_connected_or_not(runtime):
    found = samples(metric_families.families(runtime, {}, "1.0"))
    assert value(found, "socketnet_datapath_connected", bridge="mesh") == 1
    assert value(found, "socketnet_datapath_connected", bridge="vmbr0") == 0
    # connects over every switch state the bridge had: a reconnect shows as 2
    assert value(found, "socketnet_datapath_connects_total", bridge="mesh") == 2
    assert value(found, "socketnet_datapath_connects_total", bridge="vmbr0") == 0
    # the info, syncs and flow-mods of the connected switch, none for a bridge never seen
    assert series(found, "socketnet_datapath_info") == [(("bridge", "mesh"),
                                                         ("dpid", "00000000000000a1"))]
    assert value(found, "socketnet_reconcile_failures_total", bridge="mesh") == 1
    assert value(found, "socketnet_reconcile_duration_seconds_count", bridge="mesh") == 1
    assert value(found, "socketnet_reconcile_last_success_timestamp_seconds",
                 bridge="mesh") == 1700000000.0
    assert value(found, "socketnet_flow_mods_total", bridge="mesh", origin="reconciler") == 40
    assert not [k for k in found if dict(k[1]).get("bridge") == "vmbr0"
                and k[0] not in ("socketnet_datapath_connected",
                                 "socketnet_datapath_connects_total")]


def test_the_classifiers_flow_mods_and_families_appear_once_it_gives_its_counts(runtime,
                                                                                seed_host):
    without = samples(metric_families.families(runtime, {}, "1.0"))
    assert ("socketnet_flow_mods_total", frozenset({("bridge", "mesh"),
                                                    ("origin", "classifier")})) not in without
    assert not [k for k in without if k[0].startswith(("socketnet_classifier",
                                                       "socketnet_packet_ins"))]

    counts = ClassifierCounts()
    counts.packet_ins, counts.flow_mods, counts.commits = 12, 2, 9
    counts.decided["privacy"] = 7
    counts.latency.observe(0.00003)
    cache = DecisionCache(seed_host.classification, seed_host.known_sources)
    cache.drops["rule"] = 4
    runtime.classifier_counts, runtime.decision_cache = counts, cache
    found = samples(metric_families.families(runtime, {}, "1.0"))
    assert value(found, "socketnet_flow_mods_total", bridge="mesh", origin="classifier") == 2
    assert value(found, "socketnet_packet_ins_total") == 12
    assert value(found, "socketnet_classifier_commits_total") == 9
    assert {dict(k[1])["class"]: v for k, v in found.items()
            if k[0] == "socketnet_classifier_decisions_total"} == {
        "privacy": 7, "management": 0, "drop": 0}
    assert value(found, "socketnet_classifier_drops_total", reason="rule") == 4
    assert value(found, "socketnet_classifier_cached_decisions") == 0
    assert value(found, "socketnet_classifier_cache_limit") == \
        seed_host.classification.limits.cached_total
    assert value(found, "socketnet_classifier_unknown_limit") == \
        seed_host.classification.limits.cached_unknown
    assert value(found, "socketnet_classification_duration_seconds_bucket", le="5e-05") == 1
    assert value(found, "socketnet_classification_duration_seconds_count") == 1


def test_a_bridge_with_a_switch_gets_every_error_type_and_its_poll_series_from_0(runtime):
    bridges = {}
    found = samples(metric_families.families(runtime, bridges, "1.0"))
    assert set(bridges) == {"mesh"}  # held from now on
    types = {dict(k[1])["type"] for k in found if k[0] == "socketnet_openflow_errors_total"}
    assert types == set(ERROR_TYPES.values())
    assert value(found, "socketnet_stats_poll_failures_total", bridge="mesh") == 0
    for cls in TrafficClass:
        assert value(found, "socketnet_class_packets_total", bridge="mesh",
                     **{"class": cls.value}) == 0
    # no poll yet: no poll time, no table, meter or port series
    assert series(found, "socketnet_stats_last_poll_timestamp_seconds") == []
    assert series(found, "socketnet_table_flows") == []
    assert series(found, "socketnet_port_packets_total") == []

    bridges["mesh"].error(5)
    bridges["mesh"].error(0x1234)  # not an OpenFlow 1.3 type
    found = samples(metric_families.families(runtime, bridges, "1.0"))
    assert value(found, "socketnet_openflow_errors_total", bridge="mesh",
                 type="flow-mod-failed") == 1
    assert value(found, "socketnet_openflow_errors_total", bridge="mesh", type="other") == 1


def test_flow_totals_are_named_by_table_and_purpose_and_never_go_back(runtime):
    bridges = {}
    stats = stats_of(bridges, "mesh")
    stats.flow_totals(ADMIT.id, Purpose.ADMIT).observe(10, 1000)
    blocked = stats.flow_totals(CLASSIFY.id, Purpose.BLOCKED)
    blocked.observe(6, 600)
    stats.polled_at, stats.poll_seconds = 1700000001.0, 0.25

    def flow_packets():
        found = samples(metric_families.families(runtime, bridges, "1.0"))
        return {(dict(k[1])["table"], dict(k[1])["purpose"]): v for k, v in found.items()
                if k[0] == "socketnet_flow_packets_total"}, found

    packets, found = flow_packets()
    assert packets == {("admit", "admit"): 10, ("classify", "blocked"): 6}
    assert value(found, "socketnet_flow_bytes_total", bridge="mesh", table="admit",
                 purpose="admit") == 1000
    assert value(found, "socketnet_stats_last_poll_timestamp_seconds",
                 bridge="mesh") == 1700000001.0
    assert value(found, "socketnet_stats_poll_duration_seconds", bridge="mesh") == 0.25

    # the source block expires with 8 packets, then a poll sees none left
    stats.flow_removed(CLASSIFY.id, Purpose.BLOCKED.cookie, 8, 800)
    blocked.observe(0, 0)
    stats.flow_removed(CLASSIFY.id, 0x1234, 99, 99)  # not socketnet's cookie: ignored
    packets, _ = flow_packets()
    assert packets == {("admit", "admit"): 10, ("classify", "blocked"): 8}


def test_class_totals_are_the_meshs_only_and_every_class_is_there(runtime):
    bridges = {}
    stats_of(bridges, "vmbr0")
    stats_of(bridges, "mesh").observe_classes(
        [(Flow.make(CLASSIFY.id, 10, {"ct_mark": 1}), 5, 500)])
    found = samples(metric_families.families(runtime, bridges, "1.0"))
    assert series(found, "socketnet_class_packets_total") == sorted(
        (("bridge", "mesh"), ("class", cls.value)) for cls in TrafficClass)
    assert sum(v for k, v in found.items() if k[0] == "socketnet_class_packets_total") == 5


def test_tables_and_meters_are_named_or_numbered(runtime):
    bridges = {}
    stats = stats_of(bridges, "mesh")
    stats.observe_tables({ADMIT.id: TableCounters(12, 300, 280), 9: TableCounters(1, 2, 2),
                          200: TableCounters(0, 5, 0)})
    stats.meters = {1: MeterCounters(50, 4, 400), 2: MeterCounters(7, 0, 0),
                    9: MeterCounters(1, 1, 1)}
    found = samples(metric_families.families(runtime, bridges, "1.0"))
    assert value(found, "socketnet_table_flows", bridge="mesh", table="admit") == 12
    assert value(found, "socketnet_table_lookups_total", bridge="mesh", table="admit") == 300
    assert value(found, "socketnet_table_matched_total", bridge="mesh", table="admit") == 280
    # a table outside the pipeline that holds flows, by number; an empty one not at all
    assert series(found, "socketnet_table_flows") == [(("bridge", "mesh"), ("table", "9")),
                                                      (("bridge", "mesh"), ("table", "admit"))]
    assert value(found, "socketnet_meter_packets_total", bridge="mesh", meter="packet-in") == 50
    assert value(found, "socketnet_meter_dropped_packets_total", bridge="mesh",
                 meter="packet-in") == 4
    assert value(found, "socketnet_meter_dropped_bytes_total", bridge="mesh",
                 meter="packet-in") == 400
    assert value(found, "socketnet_meter_packets_total", bridge="mesh",
                 meter="packet-in-known-sources") == 7
    assert value(found, "socketnet_meter_packets_total", bridge="mesh", meter="9") == 1


def test_ports_carry_their_role_and_go_with_the_port(runtime):
    bridges = {}
    stats = stats_of(bridges, "mesh")
    counters = PortCounters((10, 1000, 1, UNAVAILABLE), (20, 2000, 0, 0))
    stats.ports = {1: counters, 3: counters, 7: counters, OFPP_LOCAL: counters,
                   5: counters}  # port 5: gone since the poll
    found = samples(metric_families.families(runtime, bridges, "1.0"))
    roles = {dict(k[1])["port"]: dict(k[1])["role"] for k in found
             if k[0] == "socketnet_port_packets_total"}
    assert roles == {"mesh-gw": "netmaker-uplink", "veth200": "management",
                     "stray0": "unmanaged", "mesh": "local"}
    assert value(found, "socketnet_port_bytes_total", bridge="mesh", port="mesh-gw",
                 role="netmaker-uplink", direction="tx") == 2000
    assert value(found, "socketnet_port_dropped_total", bridge="mesh", port="mesh-gw",
                 role="netmaker-uplink", direction="rx") == 1
    # a counter the switch does not have is left out, the other direction's is there
    assert series(found, "socketnet_port_errors_total") == sorted(
        (("bridge", "mesh"), ("direction", "tx"), ("port", p), ("role", r))
        for p, r in roles.items())

    runtime.switch(0xA1).connected = False  # a disconnected bridge's ports have no series
    found = samples(metric_families.families(runtime, bridges, "1.0"))
    assert series(found, "socketnet_port_packets_total") == []


def test_config_loads_and_the_version(runtime):
    runtime.config_refused("bad file")
    found = samples(metric_families.families(runtime, {}, "2.5.0"))
    assert value(found, "socketnet_config_loads_total", result="success") == 1
    assert value(found, "socketnet_config_loads_total", result="failure") == 1
    assert value(found, "socketnet_config_last_load_successful") == 0
    assert value(found, "socketnet_config_last_load_success_timestamp_seconds") == \
        runtime.config_loaded_at
    assert value(found, "socketnet_build_info", version="2.5.0") == 1
    runtime.replace_host(runtime.host)
    found = samples(metric_families.families(runtime, {}, "2.5.0"))
    assert value(found, "socketnet_config_last_load_successful") == 1


def test_series_stay_bounded_by_the_config_whatever_the_traffic(runtime, seed_host):
    """Thousands of decisions, class flows and errors later, the same series."""
    counts = ClassifierCounts()
    runtime.classifier_counts = counts
    runtime.decision_cache = DecisionCache(seed_host.classification, seed_host.known_sources)
    bridges = {}
    stats = stats_of(bridges, "mesh")

    def every_series():
        found = samples(metric_families.families(runtime, bridges, "1.0"))
        return {(name, tuple(sorted(dict(labels)))) for name, labels in found}, found

    before, _ = every_series()
    for i in range(2000):
        counts.packet_ins += 1
        counts.decided[list(TrafficClass)[i % 3].value] += 1
        counts.latency.observe(i * 1e-6)
        stats.error(i % 20)
    stats.observe_classes([(Flow.make(CLASSIFY.id, 10, {"ct_mark": i % 5}), i, i)
                           for i in range(2000)])
    after, found = every_series()
    assert {name for name, _ in after} == {name for name, _ in before}
    assert len(found) == len(samples(metric_families.families(runtime, bridges, "1.0")))
    assert len(series(found, "socketnet_class_packets_total")) == len(TrafficClass)
    assert len(series(found, "socketnet_openflow_errors_total")) == len(ERROR_TYPES) + 1
    for _, labels in found:
        assert {k for k, _ in labels if k != "le"} <= LABELS


def test_a_table_outside_the_pipeline_is_labelled_by_its_number():
    assert metric_families.table_label(ADMIT.id) == "admit"
    assert metric_families.table_label(42) == "42"
