"""What the flow-debug REST API answers, as data: a flow's class and the ports
it touches, a flow-stats line as ovs-ofctl prints it, the classifier's decision
for a packet (`classify_doc`) and the path its class takes, the packet a trace
is asked about (`trace_flow`, the destination container's MAC filled in on either
bridge), the running config with its secrets redacted (`config_doc`).

Pure: from the config's host and a switch's state; the CLI's offline commands
answer from the same functions.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import NamedTuple, Optional

from controller.api.routes import bad
from controller.classifier import CLASS_OF_MARK, Classifier, Flow5, commit_actions
from controller.compiler import conntrack_zone, own_mac
from controller.flow import Apply, Flow, Output
from controller.pipeline import Purpose
from controller.switches import SwitchState
from topology.model import DEFAULT_RULE, UNROUTABLE_RULE, Host, Role, TrafficClass

LOG = logging.getLogger("socketnet.api")


# --- switches, flows, ports --------------------------------------------------------


class FlowStat(NamedTuple):
    """One entry of a switch's flow table with its counters. `flow` is None when
    socketnet cannot read the entry (a foreign action); `text` then describes it."""
    flow: Optional[Flow]
    table: int
    priority: int
    cookie: int
    packets: int
    bytes: int
    duration: float
    text: str = ""


def token_of(host: Host) -> Optional[str]:
    """The bearer token the config points at: token_file's first line, else the
    environment variable token_env; None when neither gives one."""
    s = host.settings
    if s.rest_token_file:
        try:
            with open(s.rest_token_file, encoding="utf-8") as f:
                line = f.readline().strip()
            if line:
                return line
        except OSError as exc:
            LOG.warning("REST token file %s: %s", s.rest_token_file, exc)
    value = os.environ.get(s.rest_token_env, "").strip()
    return value or None


def dpid_text(dpid: int) -> str:
    return f"{dpid:016x}"


def port_number(state: SwitchState, text: str) -> int:
    if text in state.ports:
        return state.ports[text].number
    if text.upper() == "LOCAL":
        return 0xFFFFFFFE
    if text.isdigit() and text.isascii():
        return int(text)
    raise bad("port", f"{text!r} is no port of {state.bridge or dpid_text(state.dpid)}")


def touches(flow: Optional[Flow], port: int) -> bool:
    if flow is None:
        return False
    if flow.match_dict.get("in_port") == port:
        return True
    return any(isinstance(a, Output) and a.port == port
               for i in flow.instructions if isinstance(i, Apply) for a in i.actions)


_PURPOSE_CLASS = {Purpose.MANAGEMENT: "management", Purpose.PRIVACY: "privacy",
                  Purpose.WARP: "privacy", Purpose.DROP: "drop", Purpose.FORGED: "drop",
                  Purpose.BLOCKED: "drop"}


def flow_class(flow: Optional[Flow], purpose: Optional[Purpose]) -> Optional[str]:
    """The traffic class a flow carries: a class flow's (by the ct_mark it
    matches); management or privacy forwarding; drop for drops; None for the
    rest (admission, ARP, the connection tracker)."""
    if purpose is Purpose.CLASSIFIED and flow is not None:
        cls = CLASS_OF_MARK.get(flow.match_dict.get("ct_mark"))
        return cls.value if cls is not None else None
    if purpose is Purpose.REPLY:
        return TrafficClass.MANAGEMENT.value
    return _PURPOSE_CLASS.get(purpose)


def dump_line(stat: FlowStat, names: dict) -> str:
    """As `ovs-ofctl dump-flows` prints it: the flow with duration and counters."""
    base = stat.flow.ofctl(names) if stat.flow is not None else stat.text
    counters = (f"duration={stat.duration:.3f}s, table={stat.table}, "
                f"n_packets={stat.packets}, n_bytes={stat.bytes},")
    return base.replace(f"table={stat.table},", counters, 1)


_CLASS_REACH = {
    TrafficClass.PRIVACY: "privacy goes only from a Netmaker peer to a service of the xray "
                          "client (W1)",
    TrafficClass.MANAGEMENT: "management goes only to a management container (W5)",
}


def classify_doc(host: Host, body: dict) -> dict:
    """The classifier's decision for one packet, as the CLI and the API print it."""
    proto = body["proto"]
    sport, dport = body.get("sport"), body.get("dport")
    if proto == "icmp":
        for name in ("sport", "dport"):
            if body.get(name) is not None:
                raise bad(name, "icmp has no ports")
    elif dport is None:
        raise bad("dport", f"required with --proto {proto}")
    classifier = Classifier(host)
    packet = Flow5.of(body["src"], body["dst"], proto, sport or 0, dport or 0)
    decision = classifier.decide(packet)
    zone = conntrack_zone(host, host.mesh)
    mark = next(m for m, cls in CLASS_OF_MARK.items() if cls is decision.cls)
    why = None
    if decision.rule == UNROUTABLE_RULE:
        wanted = {r.name: r.cls for r in classifier.rules}.get(decision.overruled,
                                                              classifier.default.cls)
        which = "the default" if decision.overruled == DEFAULT_RULE else f"rule {decision.overruled}"
        why = f"{which} says {wanted}, but {_CLASS_REACH[TrafficClass(wanted)]}"
    return {"packet": str(packet), "class": str(decision.cls), "rule": decision.rule,
            "overruled": decision.overruled or None, "why": why, "mark": mark,
            "commit": ",".join(a.ofctl({}) for a in commit_actions(decision, zone)),
            "path": class_path(decision.cls)}


def undecided_packet(host: Host, bridge: str, flow: str) -> Optional[dict]:
    """The classify body of a traced IPv4 packet entering the mesh from the
    Netmaker uplink (what table 1 hands the controller); None for anything else."""
    fields = dict(part.partition("=")[::2] for part in flow.split(","))
    uplink = next((p for p in host.mesh.ports if p.role is Role.NETMAKER_UPLINK), None)
    if bridge != host.mesh.name or uplink is None or fields.get("in_port") != uplink.name:
        return None
    proto = next((p for p in ("tcp", "udp", "icmp") if p in fields), None)
    if proto is None or "nw_src" not in fields or "nw_dst" not in fields:
        return None
    body = {"src": fields["nw_src"], "dst": fields["nw_dst"], "proto": proto}
    if proto != "icmp":
        body["sport"] = int(fields.get(f"{proto}_src", 0))
        body["dport"] = int(fields.get(f"{proto}_dst", 0))
    return body


def class_path(cls: TrafficClass) -> str:
    """Where table 1 sends a connection of class `cls`, in words."""
    if cls is TrafficClass.DROP:
        return "dropped in table 1, with every later packet of the connection"
    zone = {TrafficClass.PRIVACY: "privacy ingress", TrafficClass.MANAGEMENT: "management"}[cls]
    return (f"table 1 tags it {zone} and sends it to table 2 (forward), with every later "
            "packet of the connection")


# --- trace -------------------------------------------------------------------------------

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
BROADCAST = "ff:ff:ff:ff:ff:ff"


def trace_flow(host: Host, bridge_name: str, body: dict, state: Optional[SwitchState]) -> str:
    """The described packet as the flow argument of `ofproto/trace`. MACs left out
    are filled in as a sender on that port would: its own MAC; the destination
    container's MAC (on either bridge), else the bridge's gateway (uplink adapter)."""
    bridge = host.bridge(bridge_name)
    in_port = body["in_port"]
    names = {p.name for p in bridge.ports}
    live = state.ports if state is not None else {}
    if in_port != "LOCAL" and in_port not in names and in_port not in live:
        raise bad("in_port", f"{in_port!r} is no port of {bridge_name} (or LOCAL)")
    for field in ("eth_src", "eth_dst"):
        if field in body and not _MAC.match(body[field]):
            raise bad(field, f"{body[field]!r} is not a MAC address")
    proto = body.get("proto", "tcp")
    if proto in ("icmp", "arp"):
        for name in ("sport", "dport"):
            if name in body:
                raise bad(name, f"{proto} has no ports")

    def mac_of_port(name):
        sp = live.get(bridge_name if name == "LOCAL" else name)
        return own_mac(bridge, name, sp.mac if sp is not None else None)

    src_default = None
    try:
        port = bridge.port(in_port)
        if port.container is not None:
            src_default = str(port.container.address)
    except KeyError:
        pass
    src = body.get("src") or src_default
    if src is None:
        raise bad("src", f"required for a packet entering {in_port}")
    eth_src = (body.get("eth_src") or mac_of_port(in_port) or "02:00:00:00:00:01").lower()
    dst = body["dst"]
    eth_dst = body.get("eth_dst")
    if eth_dst is None:
        if proto == "arp":
            eth_dst = BROADCAST
        else:
            # A container's address is answered with its own MAC on every bridge
            # (table 3's responder), so a sender addresses the owner wherever it is.
            owner = next((p for b in host.bridges for p in b.ports if p.container is not None
                          and str(p.container.address) == dst), None)
            gateway = next((p for p in bridge.ports if p.address is not None
                            and p.role.value.endswith("uplink")), None)
            eth_dst = (owner.container.mac if owner else
                       mac_of_port(gateway.name) if gateway else None) or BROADCAST
    eth_dst = eth_dst.lower()
    parts = [f"in_port={in_port}"]
    if proto == "arp":
        parts += ["arp", f"dl_src={eth_src}", f"dl_dst={eth_dst}", "arp_op=1",
                  f"arp_spa={src}", f"arp_tpa={dst}", f"arp_sha={eth_src}",
                  "arp_tha=00:00:00:00:00:00"]
    else:
        parts += [proto, f"dl_src={eth_src}", f"dl_dst={eth_dst}", f"nw_src={src}",
                  f"nw_dst={dst}"]
        if proto in ("tcp", "udp"):
            parts += [f"{proto}_src={body.get('sport', 40000)}",
                      f"{proto}_dst={body.get('dport', 443)}"]
        else:
            parts += ["icmp_type=8", "icmp_code=0"]
    return ",".join(parts)


# --- config ---------------------------------------------------------------------------


def jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def config_doc(host: Host) -> dict:
    """The running config as socketnet understood it; the REST token is never shown."""
    from topology.model import host_document

    settings = {k: jsonable(v) for k, v in dataclasses.asdict(host.settings).items()}
    settings["rest_token"] = "<redacted>" if token_of(host) else None
    c = host.classification
    return {
        **host_document(host),
        "settings": settings,
        "privacy_blocked": [str(n) for n in host.privacy_blocked],
        "classification": {
            "default": str(c.default), "idle_timeout": c.idle_timeout,
            "conntrack_zone": c.conntrack_zone,
            "seed_services": c.seed_services,
            "rules": [{"name": r.name, "class": str(r.cls), "protocol": r.protocol,
                       "src": [str(n) for n in r.src.iter_cidrs()] if r.src else None,
                       "dst": [str(n) for n in r.dst.iter_cidrs()] if r.dst else None,
                       "src_ports": [list(p) for p in r.src_ports],
                       "dst_ports": [list(p) for p in r.dst_ports]} for r in c.rules],
            "limits": dataclasses.asdict(c.limits)},
    }
