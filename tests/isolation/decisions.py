"""What the real classifier decides for the matrix's Netmaker ingress.

Table 1 sends undecided Netmaker ingress to the controller; on a switch without
the controller (the table simulator, ofproto/trace) the decisions it would cache
are installed up front, made by the real `controller.classifier.Classifier` for
the seed's config. A packet the config refuses (the seed's default is drop) is
held to no W-rule: that is the config's choice, not the pipeline's.
"""
from __future__ import annotations

from controller.classifier import Classifier, Flow5, decision_flow
from controller.flow import ETH_TYPE_IP
from topology.model import Host, TrafficClass

from tests.isolation.packets import TCP, UDP, matrix, uplink


def netmaker_ingress(host: Host, macs: dict) -> list:
    """(packet, Flow5) of the matrix's IPv4 packets entering mesh from Netmaker."""
    out = []
    for packet in matrix(host, macs):
        h = packet.headers
        if packet.bridge != host.mesh.name or packet.in_port != uplink(host.mesh).name \
                or h.get("dl_type") != ETH_TYPE_IP:
            continue
        proto = h.get("nw_proto")
        ported = proto in (TCP, UDP)
        out.append((packet, Flow5.of(h["nw_src"], h["nw_dst"], proto,
                                     int(h["tp_src"]) if ported else 0,
                                     int(h["tp_dst"]) if ported else 0)))
    return out


def decisions(host: Host, macs: dict, privacy: bool) -> list:
    """The table-1 flows the classifier caches for that ingress: management and
    drop decisions always, privacy ones only when `privacy` (otherwise W1
    still waits at the controller)."""
    classifier = Classifier(host)
    flows = set()
    for _, flow5 in netmaker_ingress(host, macs):
        decision = classifier.decide(flow5)
        if decision.cls is TrafficClass.PRIVACY and not privacy:
            continue
        flows.add(decision_flow(flow5, decision, host.classification))
    return sorted(flows)


def refused_by_config(host: Host, macs: dict) -> set:
    """Names of the matrix's Netmaker ingress packets the classifier drops."""
    classifier = Classifier(host)
    return {p.name for p, flow5 in netmaker_ingress(host, macs)
            if classifier.decide(flow5).cls is TrafficClass.DROP}
