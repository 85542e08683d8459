"""socketnet attached to real Open vSwitch: the pipelines it installs, how it follows
port changes, and that reconnecting changes nothing that did not change."""
import re
import signal
import time

from controller.compiler import SwitchPort, compile_bridge
from controller.pipeline import COOKIE_PREFIX, Purpose
from topology.system import wait_until

FLOW_TIMEOUT = 15


def normalise(line: str) -> tuple:
    """An ovs-ofctl flow line as (cookie, table, priority, match set, actions):
    field order, quoting and the default table/cookie do not matter."""
    line = line.strip().replace('"', "")
    head, _, actions = line.partition(" actions=")
    fields = {}
    match = set()
    for token in re.split(r",\s*", head):
        key, eq, value = token.partition("=")
        if key in ("cookie", "table", "priority"):
            fields[key] = int(value, 0)
        elif key not in ("duration", "n_packets", "n_bytes", "idle_age", "hard_age"):
            match.add(token)
    return (fields.get("cookie", 0), fields.get("table", 0), fields.get("priority", 32768),
            frozenset(match), actions)


def live_ports(lab, bridge):
    numbers = lab.port_numbers(bridge)
    ports = {}
    for name, number in numbers.items():
        mac = lab.ovs.vsctl("get", "Interface", name, "mac_in_use").strip().strip('"')
        ports[name] = SwitchPort(number, name, mac)
    return ports


def expected_lines(lab, bridge):
    ports = live_ports(lab, bridge)
    names = {p.number: p.name for p in ports.values()}
    return {normalise(f.ofctl(names)) for f in compile_bridge(lab.host, bridge, ports)}


def switch_lines(lab, bridge):
    return {normalise(line) for line in lab.ovs.dump_flows(bridge, names=True, stats=False)}


def durations(lab, bridge):
    out = {}
    for line in lab.ovs.dump_flows(bridge, names=True, stats=True):
        d = re.search(r"duration=([\d.]+)s", line)
        out[normalise(line)] = float(d.group(1))
    return out


def test_connect_installs_exactly_the_compiled_pipeline_on_both_bridges(attached):
    lab, _ = attached
    for bridge in ("mesh", "vmbr0"):
        assert switch_lines(lab, bridge) == expected_lines(lab, bridge), bridge


def test_every_installed_flow_carries_a_socketnet_cookie_of_its_purpose(attached):
    lab, _ = attached
    purposes = {p.cookie for p in Purpose}
    for bridge in ("mesh", "vmbr0"):
        cookies = {line[0] for line in switch_lines(lab, bridge)}
        assert cookies <= purposes, bridge


def test_a_container_started_later_gets_its_flows_and_a_removed_one_loses_them(attached):
    lab, ctl = attached
    container = lab.host.mesh.port("veth201").container
    full = expected_lines(lab, "mesh")
    mark = ctl.mark()
    lab.remove_port("mesh", "veth201")
    ctl.wait_synced(["mesh"], after=mark)
    wait_until(lambda: not any("10.1.0.201" in str(line) or "veth201" in str(line)
                               for line in switch_lines(lab, "mesh")),
               FLOW_TIMEOUT, "veth201's flows to go")
    assert switch_lines(lab, "mesh") == expected_lines(lab, "mesh")

    mark = ctl.mark()
    lab.add_container_port(container)
    ctl.wait_synced(["mesh"], after=mark)
    wait_until(lambda: switch_lines(lab, "mesh") == expected_lines(lab, "mesh"),
               FLOW_TIMEOUT, "veth201's flows to return")
    assert any("veth201" in str(line) for line in switch_lines(lab, "mesh"))
    assert len(switch_lines(lab, "mesh")) == len(full)


def test_reconnect_with_unchanged_config_sends_no_flow_mod_and_keeps_counters(attached, controller):
    lab, ctl = attached
    before = {b: durations(lab, b) for b in ("mesh", "vmbr0")}
    ctl.stop()
    restarted = time.monotonic()
    ctl2 = controller(port=ctl.port)
    counts = ctl2.wait_synced(["mesh", "vmbr0"], timeout=30)
    elapsed = time.monotonic() - restarted
    for bridge in ("mesh", "vmbr0"):
        assert counts[bridge]["add"] == 0 and counts[bridge]["delete"] == 0, counts
        after = durations(lab, bridge)
        assert set(after) == set(before[bridge])
        for flow, age in after.items():
            # A flow re-added on reconnect would be younger than the restart.
            assert age >= before[bridge][flow] + elapsed * 0.9, flow


def test_flows_under_other_cookies_are_left_alone_and_stray_socketnet_flows_removed(
        attached, controller):
    lab, ctl = attached
    lab.ovs.ofctl("add-flow", "mesh", "cookie=0x1234,table=3,priority=5,actions=drop")
    stray = f"cookie={COOKIE_PREFIX | Purpose.MANAGEMENT.value:#x},table=2,priority=7,ip,actions=drop"
    lab.ovs.ofctl("add-flow", "mesh", stray)
    ctl.stop()
    ctl2 = controller(port=ctl.port)
    counts = ctl2.wait_synced(["mesh"], timeout=30)
    assert counts["mesh"]["delete"] == 1 and counts["mesh"]["add"] == 0
    lines = lab.ovs.dump_flows("mesh", names=True, stats=False)
    assert any("cookie=0x1234" in line for line in lines)
    assert not any("priority=7" in line for line in lines)


def test_a_bridge_the_config_does_not_name_is_reported_and_left_untouched(lab, controller):
    lab.ovs.vsctl("add-br", "other", "--", "set", "Bridge", "other", "datapath_type=netdev",
                  "fail_mode=secure", "protocols=OpenFlow13")
    ctl = controller()
    lab.attach(ctl.target)
    lab.ovs.vsctl("set-controller", "other", ctl.target)
    untouched = r"bridge 'other', which the config does not name; left untouched"
    ctl.wait_for(untouched, 30)
    ctl.wait_synced(["mesh", "vmbr0"])
    assert lab.ovs.dump_flows("other", stats=False) == []
    lab.ovs.ofctl("add-flow", "other", "cookie=0x534e000000000002,priority=5,actions=drop")
    ctl.stop()
    ctl2 = controller(port=ctl.port)
    ctl2.wait_for(untouched, 30)
    ctl2.wait_synced(["mesh", "vmbr0"])
    flows = lab.ovs.dump_flows("other", stats=False)
    assert len(flows) == 1 and "priority=5" in flows[0]


def test_sigterm_and_sigint_stop_the_controller_cleanly_within_a_second(controller):
    for sig in (signal.SIGTERM, signal.SIGINT):
        ctl = controller()
        started = time.monotonic()
        rc = ctl.stop(sig, timeout=10)
        assert rc == 0, ctl.log_tail()
        assert time.monotonic() - started < 1.0
        assert f"stopping on {signal.Signals(sig).name}" in ctl.log_tail()


def test_port_series_are_there_a_moment_after_a_bridge_connects_not_an_interval_later(
        lab, controller):
    """The first stats poll of a bridge is made when it connects; the config's
    interval (10 s by default) only spaces the ones after it."""
    import requests
    ctl = controller()
    assert lab.host.settings.stats_interval >= 10
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])

    def port_series():
        text = requests.get(ctl.metrics_url, timeout=5).text
        return all(f'socketnet_port_packets_total{{bridge="{b}"' in text
                   for b in ("mesh", "vmbr0"))
    wait_until(port_series, lab.host.settings.stats_interval / 2, "the port series",
               interval=0.2)
