"""A traced packet explained: for each bridge it crosses, every table lookup with
the flow that decided (table name, priority, purpose, the flow's `ovs-ofctl`
line), ports by name, and the verdict with its reason.

Pure: it reads a controller.ovs_text.TracePath (what `ofproto/trace` printed, parsed)
and, for each bridge, the flows socketnet installed there and its port names
(controller.switches.SwitchState). The REST API's `POST /v1/trace` answers with
`path_doc`; `socketnet trace` prints `path_lines`.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional

from controller.pipeline import (ADMIT, ARP, CLASSIFY, FORWARD, TABLE_BY_ID, Purpose, Zone,
                                 owns, purpose_of)

_SHOWN = ("dl_src", "dl_dst", "nw_src", "nw_dst", "arp_spa", "arp_tpa", "arp_sha", "arp_tha",
          "arp_op", "tcp_src", "tcp_dst", "udp_src", "udp_dst")
# OpenFlow port numbers in what ovs-vswitchd prints of a flow: in_port=N, output:N.
_PORT_REFERENCE = re.compile(r"\b(in_port=|output:)(\d+)\b")


def _named(text: str, names: Mapping[int, str]) -> str:
    return _PORT_REFERENCE.sub(lambda m: m.group(1) + names.get(int(m.group(2)), m.group(2)),
                               text)


def _tokens(match: str) -> set:
    return {t.strip() for t in match.split(",") if t.strip()}


def installed_flow(step, desired) -> Optional[object]:
    """The flow of `desired` (controller.flow.Flow) that made trace step `step`:
    the same table, priority and cookie, and of several such the one whose match
    reads most like the one ovs-vswitchd printed. None when socketnet installed
    no such flow (a flow of somebody else's, or a lookup that missed)."""
    if step.match is None:
        return None
    same = [f for f in desired if f.table == step.table and f.priority == step.priority
            and f.cookie == step.cookie]
    if len(same) <= 1:
        return same[0] if same else None
    printed = _tokens(step.match)

    def overlap(flow):
        line = flow.ofctl().split(" actions=", 1)[0]
        ours = _tokens(line.split(f"priority={flow.priority}", 1)[1])
        return len(ours & printed) / (len(ours | printed) or 1)
    return max(same, key=overlap)


def step_doc(step, desired=(), names: Mapping[int, str] = None) -> dict:
    """One table lookup as JSON."""
    names = names or {}
    table = TABLE_BY_ID.get(step.table)
    doc = {"pass": step.pass_, "table": step.table, "name": table.name if table else None,
           "missed": step.missed}
    if step.missed:
        doc.update(priority=None, cookie=None, purpose=None, socketnet=False, match=None,
                   actions=list(step.actions), flow=None)
        return doc
    purpose = purpose_of(step.cookie or 0)
    flow = installed_flow(step, desired)
    doc.update(priority=step.priority, cookie=f"{step.cookie or 0:#x}",
               purpose=purpose.label if purpose else None, socketnet=owns(step.cookie or 0),
               match=_named(step.match, names) if step.match else "",
               actions=[_named(a, names) for a in step.actions],
               flow=flow.ofctl(names) if flow is not None else None)
    return doc


def verdict(hop) -> dict:
    """What one bridge did with the packet, and why: {"verdict": "output" |
    "controller" | "drop", "why": text}."""
    if hop.outputs:
        return {"verdict": "output",
                "why": "leaves by " + ", ".join(o.port for o in hop.outputs)}
    if hop.controller:
        return {"verdict": "controller", "why": "sent to the controller (a packet-in)"}
    last = hop.steps[-1] if hop.steps else None
    if last is None:
        return {"verdict": "drop", "why": "dropped (ovs-vswitchd printed no table lookup)"}
    table = TABLE_BY_ID.get(last.table)
    where = f"table {last.table}" + (f" ({table.name})" if table else "")
    if last.missed:
        return {"verdict": "drop", "why": f"dropped: no flow of {where} matched"}
    purpose = purpose_of(last.cookie or 0)
    if purpose is None:
        return {"verdict": "drop", "why": f"dropped by {where}, the priority {last.priority} "
                                          f"flow with cookie {last.cookie or 0:#x} (not "
                                          "socketnet's)"}
    reason = (_TABLE_DROPS.get(last.table, "nothing before it let the packet through")
              if purpose is Purpose.DROP else _REASONS.get(purpose, purpose.label))
    zone = _zone_of(hop)
    return {"verdict": "drop",
            "why": f"dropped by {where}, the priority {last.priority} flow of purpose "
                   f"{purpose.label}: {reason}" + (f" (the packet's zone: {zone})"
                                                   if zone and last.table != ADMIT.id else "")}


# Why a table's last flow (purpose drop) is where a packet ends.
_TABLE_DROPS = {
    ADMIT.id: "no port-security flow admits this sender (in_port, MAC and source "
              "address must be the port's own host's)",
    CLASSIFY.id: "no class flow takes the connection",
    FORWARD.id: "the isolation policy gives this zone no path to this destination",
    ARP.id: "no port owns the target address",
}
_REASONS = {
    Purpose.FORGED: "its source is not the port's own host (port security)",
    Purpose.INVALID: "the connection tracker says its state is invalid (+inv)",
    Purpose.BLOCKED: "its source is over its share of decisions and is blocked for a while",
    Purpose.CLASSIFIED: "its connection was classified drop",
}


def _zone_of(hop) -> Optional[str]:
    """The zone table 0 or 1 tagged the packet with (its metadata), by name."""
    value = (hop.final_flow or {}).get("metadata")
    try:
        return Zone(int(value, 0)).name.lower().replace("_", "-") if value else None
    except ValueError:
        return None


def path_doc(path, bridges: Mapping[str, object] = None) -> dict:
    """A TracePath as JSON: each hop's table lookups (step_doc), verdict and
    datapath actions, the exits with the headers the packet carries there, the
    bridges that hand it to the controller. `bridges`: name -> SwitchState (its
    `desired` flows and `port_names()`), for the flows' lines and port names."""
    bridges = bridges or {}

    def hop_doc(h):
        state = bridges.get(h.bridge)
        desired = state.desired if state is not None else ()
        names = state.port_names() if state is not None else {}
        return {"bridge": h.bridge, "flow": h.flow,
                "tables": [step_doc(s, desired, names) for s in h.steps],
                **verdict(h),
                "datapath_actions": list(h.datapath_actions),
                "outputs": [o.port for o in h.outputs], "controller": h.controller}
    hops = [hop_doc(h) for h in path.hops]
    exits = [{"bridge": o.bridge, "port": o.port,
              "headers": {k: v for k, v in o.flow.items() if v is not None and k in _SHOWN}}
             for o in path.exits]
    if exits:
        final = {"verdict": "output",
                 "why": "leaves by " + ", ".join(f"{e['bridge']}/{e['port']}" for e in exits)}
    elif path.controller:
        final = {"verdict": "controller",
                 "why": "goes to the controller from " + ", ".join(path.controller)}
    else:
        dropped = [h for h in hops if h["verdict"] == "drop"]
        final = {"verdict": "drop",
                 "why": f"{dropped[-1]['bridge']}: {dropped[-1]['why']}" if dropped
                 else "dropped"}
        last = dropped[-1]["tables"][-1] if dropped and dropped[-1]["tables"] else None
        if last is not None:
            final["dropped_by"] = {"bridge": dropped[-1]["bridge"],
                                   **{k: last[k] for k in ("table", "name", "priority",
                                                           "purpose", "flow")}}
    return {"hops": hops, "exits": exits, "controller": list(path.controller),
            "drop": path.drop, **final}


def path_lines(doc: dict) -> list:
    """`path_doc`'s document as the lines `socketnet trace` prints: per bridge,
    each lookup (table, priority, purpose) with the flow that matched as an
    `ovs-ofctl` line (ovs-vswitchd's own rendering where socketnet installed no
    such flow), then the bridge's verdict."""
    lines = []
    for hop in doc["hops"]:
        lines.append(f"{hop['bridge']}:")
        passes = 0
        for step in hop.get("tables", ()):
            if step["pass"] != passes:
                passes = step["pass"]
                lines.append("  (recirculated: back from the connection tracker)")
            where = f"  table {step['table']} ({step['name'] or '?'})"
            if step["missed"]:
                lines.append(f"{where}: no flow matched")
                continue
            purpose = (f"purpose {step['purpose']}" if step["purpose"] else
                       f"cookie {step['cookie']}, not socketnet's")
            lines.append(f"{where} priority {step['priority']}, {purpose}")
            lines.append("      " + (step["flow"] or f"{step['match'] or '(any)'} actions="
                                     f"{','.join(step['actions']) or 'drop'}"))
        lines.append(f"  => {hop.get('why', hop.get('verdict', ''))}")
    return lines
