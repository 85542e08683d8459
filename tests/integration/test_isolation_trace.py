"""The isolation promise on the live switch's tables: every packet class at every
port of both bridges, traced with ofproto/trace across the inter-bridge link, judged
by the oracle (the promise as code). Once with socketnet attached, and again after
the controller was killed (N7: fail_mode=secure keeps the flows, nothing else passes).
"""
import pytest

from tests.integration.conftest import switch_macs
from tests.isolation.decisions import decisions, refused_by_config
from tests.isolation.oracle import Oracle
from tests.isolation.packets import LOCAL, legitimate, matrix, trace_flow

SHOWN = 8


def trace(lab, packet):
    port = packet.in_port if packet.in_port != LOCAL else "LOCAL"
    flow = trace_flow(packet).replace(f"in_port={LOCAL}", f"in_port={port}")
    path = lab.trace(packet.bridge, flow)
    outputs = [o for hop in path.hops for o in hop.outputs]
    return path, outputs


def violations(lab, oracle, packets):
    found = []
    for packet in packets:
        verdict = oracle.judge(packet)
        path, outputs = trace(lab, packet)
        for out in outputs:
            for rule in verdict.forbids((out.bridge, out.port)):
                found.append(f"{rule.rule}: {packet.name} entering {packet.bridge}/"
                             f"{packet.in_port} left by {out.bridge}/{out.port} ({rule.why})\n"
                             f"    trace: {path}")
    return found


def missing(lab, oracle, packets):
    found = []
    for packet in packets:
        verdict = oracle.judge(packet)
        path, outputs = trace(lab, packet)
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
def judged(attached):
    lab, ctl = attached
    macs = switch_macs(lab)
    # What the controller would cache for Netmaker ingress if the packets were
    # sent (trace sends none): its real decisions, W1's privacy ones left out.
    lab.ovs.add_flows(lab.host.mesh.name,
                      (flow.ofctl() for flow in decisions(lab.host, macs, privacy=False)))
    oracle = Oracle(lab.host, macs, privacy_classified=False)
    refused = refused_by_config(lab.host, macs)
    legit = [p for p in legitimate(lab.host, macs) if p.name not in refused]
    return lab, ctl, oracle, matrix(lab.host, macs), legit


def test_no_packet_class_at_any_port_reaches_what_an_n_rule_forbids(judged):
    lab, _, oracle, packets, _ = judged
    assert len(packets) > 1000
    problems = violations(lab, oracle, packets)
    assert not problems, report(problems)


def test_every_legitimate_flow_arrives_where_the_promise_says(judged):
    lab, _, oracle, _, legit = judged
    assert len(legit) > 50  # every W-rule has packets to prove
    problems = missing(lab, oracle, legit)
    assert not problems, report(problems)


def test_with_the_controller_killed_the_flows_stay_and_nothing_forbidden_passes(judged):
    lab, ctl, oracle, packets, legit = judged
    before = sorted(lab.ovs.dump_flows("mesh", stats=False) + lab.ovs.dump_flows("vmbr0", stats=False))
    ctl.kill()
    after = sorted(lab.ovs.dump_flows("mesh", stats=False) + lab.ovs.dump_flows("vmbr0", stats=False))
    assert after == before
    problems = violations(lab, oracle, packets) + missing(lab, oracle, legit)
    assert not problems, report(problems)


def test_the_live_check_catches_a_flooding_flow_added_behind_socketnets_back(judged):
    lab, _, oracle, packets, _ = judged
    lab.ovs.ofctl("add-flow", "vmbr0", "table=0,priority=65000,actions=NORMAL")
    problems = violations(lab, oracle, packets)
    rules = {p.split(":")[0] for p in problems}
    assert {"N2", "N6"} <= rules, report(problems)
