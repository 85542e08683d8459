"""What the real classifier decides for the matrix's Netmaker ingress.

Table 1 sends Netmaker ingress without a decision to the controller, which
commits its connection to the mesh's conntrack zone with its class's mark. On a
switch without the controller (the table simulator, ofproto/trace) those
connections are said up front: decided by the real
`controller.classifier.Classifier` for the config. A privacy connection is also
in vmbr0's zone, where its first packet committed it on the way to the xray
client. A packet the config refuses (the seed's default is drop) is held to no
W-rule: that is the config's choice, not the pipeline's.
"""
from __future__ import annotations

from controller.classifier import MARKS, Classifier, Flow5
from controller.compiler import conntrack_zone
from controller.flow import ETH_TYPE_IP
from topology.model import Host, TrafficClass

from netaddr import IPSet

from tests.isolation.packets import TCP, UDP, matrix, port_mac, uplink


def netmaker_ingress(host: Host, macs: dict) -> list:
    """(packet, Flow5) of the matrix's IPv4 packets entering mesh from Netmaker
    that can reach the controller: from the adapter's MAC, with a source that is
    not one of the host's own (table 0 drops those as forged)."""
    out = []
    adapter = uplink(host.mesh)
    own = IPSet(host.management_subnet) | IPSet(host.privacy_subnet)
    for packet in matrix(host, macs):
        h = packet.headers
        if packet.bridge != host.mesh.name or packet.in_port != adapter.name \
                or h.get("dl_type") != ETH_TYPE_IP:
            continue
        if h.get("dl_src") != port_mac(adapter, macs) or h["nw_src"] in own:
            continue
        proto = h.get("nw_proto")
        ported = proto in (TCP, UDP)
        out.append((packet, Flow5.of(h["nw_src"], h["nw_dst"], proto,
                                     int(h["tp_src"]) if ported else 0,
                                     int(h["tp_dst"]) if ported else 0)))
    return out


def decisions(host: Host, macs: dict, privacy: bool) -> list:
    """(zone, headers, mark) of every connection the tracker holds once the
    controller has decided that ingress: management and drop decisions always,
    privacy ones only when `privacy` (otherwise W1 still waits at the controller)."""
    classifier = Classifier(host)
    mesh, vmbr0 = conntrack_zone(host, host.mesh), conntrack_zone(host, host.privacy_bridge)
    held, seen = [], set()
    for packet, flow5 in netmaker_ingress(host, macs):
        decision = classifier.decide(flow5)
        if (decision.cls is TrafficClass.PRIVACY and not privacy) or flow5 in seen:
            continue
        seen.add(flow5)
        h = packet.headers
        held.append((mesh, h, int(MARKS[decision.cls])))
        if decision.cls is TrafficClass.PRIVACY:
            held.append((vmbr0, h, 0))
    return held


def privacy_connections(held: list) -> set:
    """The (src, dst, proto, sport, dport) of the privacy connections in `held`:
    the oracle's W3 is their reply direction."""
    from tests.isolation.fake_switch import connection_of
    return {connection_of(h) for zone, h, mark in held if mark == int(MARKS[TrafficClass.PRIVACY])}


def refused_by_config(host: Host, macs: dict) -> set:
    """Names of the matrix's Netmaker ingress packets the classifier drops."""
    classifier = Classifier(host)
    return {p.name for p, flow5 in netmaker_ingress(host, macs)
            if classifier.decide(flow5).cls is TrafficClass.DROP}
