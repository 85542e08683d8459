"""The isolation promise on the live switch's tables: every packet class at every
port of both bridges, traced with ofproto/trace across the inter-bridge link, judged
by the oracle (the promise as code), on each host of TOPOLOGIES (the seed, and one
unlike it in every name, address and number). Once with socketnet attached, and again after
the controller was killed (N7: fail_mode=secure keeps the flows, nothing else passes).

ofproto/trace sends no packet and consults no connection tracker: each packet is
traced in the state the tracker would give it (`--ct-next`, and its connection's
ct_mark in the flow), taken from the table simulator's model of the tracker holding
the controller's real decisions (tests/isolation/decisions.py).
"""
import pytest

from topology.config import load_host

from tests.conftest import TOPOLOGIES
from tests.integration.conftest import switch_macs
from controller.compiler import conntrack_zone
from tests.isolation.decisions import decisions, privacy_connections, refused_by_config
from tests.isolation.fake_switch import EST, NEW, RPL, TRK, Tracker
from tests.isolation.oracle import Oracle
from tests.isolation.packets import LOCAL, legitimate, matrix, trace_flow

SHOWN = 8


_FLAGS = ((TRK, "trk"), (NEW, "new"), (EST, "est"), (RPL, "rpl"))


def conntrack_state(host, tracker, packet):
    """(--ct-next flags, the connection's ct_mark) the tracker would give `packet`
    where it enters; (None, 0) for what the tracker does not follow."""
    h = packet.headers
    if h.get("dl_type") != 0x0800 or "nw_proto" not in h:
        return None, 0
    entry = host.bridge(packet.bridge)
    state, _, _ = tracker.state(conntrack_zone(host, entry), h)
    mark = tracker.state(conntrack_zone(host, host.mesh), h)[2]
    return ",".join(name for bit, name in _FLAGS if state & bit), mark


def trace(lab, packet, tracker=None):
    port = packet.in_port if packet.in_port != LOCAL else "LOCAL"
    flow = trace_flow(packet).replace(f"in_port={LOCAL}", f"in_port={port}")
    ct_next, mark = conntrack_state(lab.host, tracker or Tracker(), packet)
    path = lab.trace(packet.bridge, flow, ct_next=ct_next, ct_mark=mark)
    outputs = [o for hop in path.hops for o in hop.outputs]
    return path, outputs


def violations(lab, oracle, packets, tracker):
    found = []
    for packet in packets:
        verdict = oracle.judge(packet)
        path, outputs = trace(lab, packet, tracker)
        for out in outputs:
            for rule in verdict.forbids((out.bridge, out.port)):
                found.append(f"{rule.rule}: {packet.name} entering {packet.bridge}/"
                             f"{packet.in_port} left by {out.bridge}/{out.port} ({rule.why})\n"
                             f"    trace: {path}")
    return found


def missing(lab, oracle, packets, tracker):
    found = []
    for packet in packets:
        verdict = oracle.judge(packet)
        path, outputs = trace(lab, packet, tracker)
        for req in verdict.required:
            if not any(d.met_by((o.bridge, o.port), o.flow) for d in req.any_of for o in outputs):
                found.append(f"{req}: {packet.name} went to "
                             f"{[(o.bridge, o.port) for o in outputs] or 'nowhere'}\n"
                             f"    trace: {path}")
    return found


def report(problems):
    return "\n".join(problems[:SHOWN]) + (f"\n... and {len(problems) - SHOWN} more"
                                          if len(problems) > SHOWN else "")


@pytest.fixture
def judged(request, make_lab, controller):
    """A host of TOPOLOGIES (by the test's parameter; the seed's without) as a lab,
    socketnet attached with its config."""
    config = str(TOPOLOGIES[getattr(request, "param", "seed")])
    lab = make_lab(load_host(config))
    ctl = controller(config)
    lab.attach(ctl.target)
    ctl.wait_synced([b.name for b in lab.host.bridges])
    macs = switch_macs(lab)
    # The connections the controller would have committed for Netmaker ingress if
    # the packets were sent (trace sends none): its real decisions.
    held = decisions(lab.host, macs, privacy=True)
    tracker = Tracker()
    for zone, headers, mark in held:
        tracker.commit(zone, headers, mark)
    oracle = Oracle(lab.host, macs, privacy_classified=True,
                    privacy_connections=privacy_connections(held))
    refused = refused_by_config(lab.host, macs)
    legit = [p for p in legitimate(lab.host, macs) if p.name not in refused]
    return lab, ctl, oracle, matrix(lab.host, macs), legit, tracker


# The matrix on every host; what the controller's death and a flow behind its back
# do is the same on any (the seed's).
EVERY_HOST = pytest.mark.parametrize("judged", list(TOPOLOGIES), indirect=True)


@EVERY_HOST
def test_no_packet_class_at_any_port_reaches_what_an_n_rule_forbids(judged):
    lab, _, oracle, packets, _, tracker = judged
    assert len(packets) > 1000
    problems = violations(lab, oracle, packets, tracker)
    assert not problems, report(problems)


@EVERY_HOST
def test_every_legitimate_flow_arrives_where_the_promise_says(judged):
    lab, _, oracle, _, legit, tracker = judged
    assert len(legit) > 50  # every W-rule has packets to prove
    assert {p.name.split(":")[0] for p in legit} >= {"W1", "W2", "W3", "W4", "W5", "W6"}
    problems = missing(lab, oracle, legit, tracker)
    assert not problems, report(problems)


def test_with_the_controller_killed_the_flows_stay_and_nothing_forbidden_passes(judged):
    lab, ctl, oracle, packets, legit, tracker = judged
    def flows():
        return sorted(f for b in lab.host.bridges for f in lab.ovs.dump_flows(b.name, stats=False))
    before = flows()
    ctl.kill()
    after = flows()
    assert after == before
    problems = violations(lab, oracle, packets, tracker) + missing(lab, oracle, legit, tracker)
    assert not problems, report(problems)


def test_the_live_check_catches_a_flooding_flow_added_behind_socketnets_back(judged):
    lab, _, oracle, packets, _, tracker = judged
    lab.ovs.ofctl("add-flow", lab.host.privacy_bridge.name,
                  "table=0,priority=65000,actions=NORMAL")
    problems = violations(lab, oracle, packets, tracker)
    rules = {p.split(":")[0] for p in problems}
    assert {"N2", "N6"} <= rules, report(problems)
