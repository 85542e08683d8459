"""A packet-in flood from the Netmaker side, in the seed's whole world: for 30 s the
relay (a Netmaker ext-client gateway) sends first packets from random sources of its
clients' range and random ports, as fast as the lab can (unthrottled: one core of
Python and real WireGuard decide the rate). The controller stays responsive, its memory
stays bounded, privacy connections from a known source (the droplet, over its own
WireGuard peer) started mid-flood, early and once the flood's decisions fill their
share of the switch (cached_unknown), are each classified within a second, and the
drops show: the host's ingress policing (nftables, before the mesh adapter) in its
counters, the packet-in meter and the share's cap in socketnet's metrics.
"""
from __future__ import annotations

import pytest

from bench.flood import HealthAsker, config_file, connect, flood, host_counters, metric
from bench.stats import rss_kib
from topology.system import wait_until

from tests.integration.conftest import a_world

FLOOD_SECONDS = 30
CONNECTIONS = 3  # the droplet's, one after the other, at each point of the flood
UNKNOWN_CAP = 8_000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # The seed, its stats polled every second, one peer's WireGuard datagrams held
    # below what this lab's wireguard-go decrypts (LAB_PEER_RATE), and the flood's
    # share of the switch filled within the flood (the meter lets 1,000 packet-ins
    # a second through).
    path = config_file(str(tmp_path_factory.mktemp("flood")), UNKNOWN_CAP)
    with a_world(path, tmp_path_factory) as w:
        yield w


def test_a_flood_of_netmaker_sources_is_policed_before_the_switch_and_the_droplet_gets_through(
        world):
    ctl = world.controllers["host"]
    limits = world.host.classification.limits
    assert connect(world, "droplet", 3.0) is not None, "no W1 before the flood"
    before = host_counters(world)
    rss_before = rss_kib(ctl.pid)

    proc = flood(world, FLOOD_SECONDS)
    with HealthAsker(f"{ctl.rest_url}/v1/health") as health:
        try:
            # Mid-flood: the host polices and the packet-in meter drops.
            wait_until(lambda: host_counters(world)["ingress_over"] > before["ingress_over"]
                       and metric(ctl.metrics_url, "socketnet_meter_dropped_packets_total",
                                  meter="packet-in") > 0,
                       FLOOD_SECONDS / 2, "the host's policing and the packet-in meter to drop")
            mid = []

            def connections():
                for _ in range(CONNECTIONS):
                    assert proc.poll() is None, \
                        "the flood ended before the droplet's connections"
                    mid.append(connect(world, "droplet", 1.0))
            connections()
            # Later: the flood has filled its share of the switch.
            wait_until(lambda: metric(ctl.metrics_url, "socketnet_classifier_drops_total",
                                      reason="unknown-cap") > 0,
                       FLOOD_SECONDS, "the flood's decisions to reach cached_unknown")
            connections()
            during = host_counters(world)
            sent = int(proc.communicate(timeout=FLOOD_SECONDS + 30)[0])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = host_counters(world)

    assert None not in mid and max(mid) < 1.0, f"the droplet's connections mid-flood: {mid}"
    # The flood was more than the meter lets through, and the host cut it.
    assert sent > 2 * limits.packet_in_rate * FLOOD_SECONDS, sent
    policed = after["ingress_over"] - before["ingress_over"] \
        + after["ingress_source_over"] - before["ingress_source_over"]
    assert policed > 0
    # ... and the relay's WireGuard datagrams over its peer rate, before decryption.
    assert after["netmaker_peer_over"] > before["netmaker_peer_over"]
    # The droplet is a known source: its lane was never cut.
    assert after["ingress_known_over"] == before["ingress_known_over"] == during[
        "ingress_known_over"]
    assert len(health.latencies) > FLOOD_SECONDS and not health.failures, \
        f"the REST API stopped answering ({health.failures} failures)"
    print(f"flood: {sent} SYNs sent in {FLOOD_SECONDS}s, {policed} policed by the host; "
          f"droplet connected in {', '.join(f'{t:.4f}' for t in mid)} s; REST health p50 "
          f"{health.percentile(50):.4f}s p99 {health.percentile(99):.4f}s; "
          f"RSS {rss_before} -> {rss_kib(ctl.pid)} kB")
    assert rss_kib(ctl.pid) < 150 * 1024
    assert ctl.proc.poll() is None
    # What the meter let through was decided up to the flood's share; the rest
    # was dropped and counted.
    assert metric(ctl.metrics_url, "socketnet_classifier_decisions_total") > UNKNOWN_CAP
    assert metric(ctl.metrics_url, "socketnet_classifier_cached_unknown_decisions") \
        == UNKNOWN_CAP
    assert metric(ctl.metrics_url, "socketnet_meter_dropped_packets_total",
                  meter="packet-in") > 0
