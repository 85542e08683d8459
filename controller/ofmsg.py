"""Flow values <-> os-ken OpenFlow 1.3 message objects.

`flow_mod(dp, flow, command)` builds the OFPFlowMod that installs, replaces or
deletes a Flow; `from_stats(stat)` turns one OFPFlowStats entry of a switch's
reply back into a Flow, so the reconciler can compare what the switch holds with
what the compiler wants, value for value. Only socketnet's subset of OpenFlow
(controller/flow.py) round-trips; anything else raises FlowError, and the
reconciler treats such a flow as foreign to its desired set.

The sync sequence's other values (controller/sync.py) go the same way: the
requests of its steps are built here, and their replies read back into plain
values (SwitchPorts, MeterConfigs, SwitchFlows); a role Claim becomes a role
request and a meter change a meter-mod.
"""
from __future__ import annotations

import logging
import struct

from os_ken.ofproto import nx_actions  # noqa: F401  (registers NXActionRegMove)
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.flow import (CT, OFPP_CONTROLLER, Apply, Controller, Flow, FlowError, Goto,
                             Meter, Move, Output, SetField, WriteMetadata)
from controller.compiler import SwitchPort
from controller.fastpath import NX_EXPERIMENTER_ID
from controller.pipeline import COOKIE_MASK, COOKIE_PREFIX, owns
from controller.reconcile import MeterConfig, SwitchFlows, Unreadable
from controller.role import Claim

LOG = logging.getLogger("socketnet.pipeline")

_MOVE_BITS = {"eth_src": 48, "eth_dst": 48, "arp_sha": 48, "arp_tha": 48,
              "arp_spa": 32, "arp_tpa": 32}

NX_CT_FLAG_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF

ADD = ofp.OFPFC_ADD
DELETE_STRICT = ofp.OFPFC_DELETE_STRICT


def _match(flow: Flow) -> parser.OFPMatch:
    fields = {}
    for name, value in flow.match:
        if name in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa") and "/" in value:
            addr, plen = value.split("/")
            mask = (0xFFFFFFFF << (32 - int(plen))) & 0xFFFFFFFF
            value = (addr, ".".join(str((mask >> s) & 0xFF) for s in (24, 16, 8, 0)))
        fields[name] = value
    return parser.OFPMatch(**fields)


def _action(action):
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, 0)
    if isinstance(action, Controller):
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action.max_len)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst,
                                      n_bits=_MOVE_BITS[action.src])
    if isinstance(action, CT):
        nested = [] if action.mark is None else [parser.OFPActionSetField(ct_mark=action.mark)]
        return parser.NXActionCT(
            flags=NX_CT_FLAG_COMMIT if action.commit else 0, zone_src="",
            zone_ofs_nbits=action.zone,
            recirc_table=NX_CT_RECIRC_NONE if action.table is None else action.table,
            alg=0, actions=nested)
    raise FlowError(f"cannot encode action {action!r}")


def _instruction(ins):
    if isinstance(ins, Apply):
        return parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                            [_action(a) for a in ins.actions])
    if isinstance(ins, Goto):
        return parser.OFPInstructionGotoTable(ins.table)
    if isinstance(ins, WriteMetadata):
        return parser.OFPInstructionWriteMetadata(ins.value, ins.mask)
    if isinstance(ins, Meter):
        return parser.OFPInstructionMeter(ins.meter_id)
    raise FlowError(f"cannot encode instruction {ins!r}")


def flow_mod(datapath, flow: Flow, command: int = ADD) -> parser.OFPFlowMod:
    """The FlowMod that adds (replaces) or strictly deletes `flow`."""
    flags = ofp.OFPFF_SEND_FLOW_REM if flow.send_flow_removed else 0
    if command == ADD:
        instructions = [_instruction(i) for i in flow.instructions]
        cookie_mask = 0
    else:
        instructions = []
        cookie_mask = 0xFFFFFFFFFFFFFFFF
    return parser.OFPFlowMod(
        datapath, cookie=flow.cookie, cookie_mask=cookie_mask, table_id=flow.table,
        command=command, idle_timeout=flow.idle_timeout, hard_timeout=flow.hard_timeout,
        priority=flow.priority, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, flags=flags, match=_match(flow), instructions=instructions)


# --- decoding ----------------------------------------------------------------


def _decode_action(action):
    if isinstance(action, parser.OFPActionOutput):
        if action.port == OFPP_CONTROLLER:
            return Controller(action.max_len)
        return Output(action.port)
    if isinstance(action, parser.OFPActionSetField):
        value = action.value
        if isinstance(value, str):
            value = value.lower()
        return SetField(action.key, value)
    if isinstance(action, parser.NXActionRegMove):
        # Open vSwitch answers with the NXM names of the fields (eth_src_nxm).
        src = action.src_field.removesuffix("_nxm")
        dst = action.dst_field.removesuffix("_nxm")
        if _MOVE_BITS.get(src) != action.n_bits or action.src_ofs or action.dst_ofs:
            raise FlowError(f"partial register move {action!r}")
        return Move(src, dst)
    if isinstance(action, parser.NXActionCT):
        return _decode_ct(action)
    raise FlowError(f"unknown action {action!r}")


def _decode_ct(action) -> CT:
    """Only socketnet's form of ct: an immediate zone, no ALG, at most a ct_mark set."""
    if action.zone_src or action.alg or action.flags & ~NX_CT_FLAG_COMMIT:
        raise FlowError(f"unsupported ct action {action!r}")
    mark = None
    for nested in action.actions:
        if not (isinstance(nested, parser.OFPActionSetField) and nested.key == "ct_mark"
                and mark is None):
            raise FlowError(f"unsupported action inside ct: {nested!r}")
        mark = nested.value
    table = None if action.recirc_table == NX_CT_RECIRC_NONE else action.recirc_table
    return CT(zone=action.zone_ofs_nbits, table=table,
              commit=bool(action.flags & NX_CT_FLAG_COMMIT), mark=mark)


def _decode_instruction(ins):
    if isinstance(ins, parser.OFPInstructionActions):
        if ins.type != ofp.OFPIT_APPLY_ACTIONS:
            raise FlowError(f"unsupported instruction {ins!r}")
        return Apply(tuple(_decode_action(a) for a in ins.actions))
    if isinstance(ins, parser.OFPInstructionGotoTable):
        return Goto(ins.table_id)
    if isinstance(ins, parser.OFPInstructionWriteMetadata):
        return WriteMetadata(ins.metadata, ins.metadata_mask)
    if isinstance(ins, parser.OFPInstructionMeter):
        return Meter(ins.meter_id)
    raise FlowError(f"unknown instruction {ins!r}")


def delete_stat(datapath, stat) -> parser.OFPFlowMod:
    """Strictly delete the entry a flow-stats entry describes, whatever it holds."""
    return parser.OFPFlowMod(
        datapath, cookie=stat.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=stat.table_id,
        command=DELETE_STRICT, priority=stat.priority, buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=stat.match, instructions=[])


def from_stats(stat, instructions: bool = True) -> Flow:
    """The Flow an OFPFlowStats entry describes (counters are not part of it).

    With `instructions=False`, the entry alone (table, priority, match, cookie)."""
    instructions = [_decode_instruction(i) for i in stat.instructions] if instructions else []
    # An empty apply-actions is the same as none at all (a drop).
    instructions = [i for i in instructions if not (isinstance(i, Apply) and not i.actions)]
    return Flow.make(stat.table_id, stat.priority, dict(stat.match.items()), instructions,
                     stat.cookie, idle_timeout=stat.idle_timeout,
                     hard_timeout=stat.hard_timeout,
                     send_flow_removed=bool(stat.flags & ofp.OFPFF_SEND_FLOW_REM))


def flow_changes(datapath, unreadable, delete, add) -> list:
    """The flow-mods of one sync's bundle, in its order: strict deletes of the
    unreadable entries and of the flows in `delete`, then adds of those in `add`."""
    return ([delete_stat(datapath, u.entry) for u in unreadable]
            + [flow_mod(datapath, f, DELETE_STRICT) for f in delete]
            + [flow_mod(datapath, f, ADD) for f in add])


def flow_stats_request(datapath) -> parser.OFPFlowStatsRequest:
    """Every flow under socketnet's cookie prefix, of every table."""
    return parser.OFPFlowStatsRequest(datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      COOKIE_PREFIX, COOKIE_MASK, parser.OFPMatch())


ALL_ONES = 0xFFFFFFFFFFFFFFFF  # a cookie mask that matches the cookie exactly
NXT_CT_FLUSH_ZONE = 29


def all_flows_request(datapath) -> parser.OFPFlowStatsRequest:
    """Every flow of every table, socketnet's or not (the flow-debug dump)."""
    return parser.OFPFlowStatsRequest(datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      0, 0, parser.OFPMatch())


def purpose_flows_request(datapath, table: int, cookie: int) -> parser.OFPFlowStatsRequest:
    """The flows of `table` with exactly `cookie` (a purpose's)."""
    return parser.OFPFlowStatsRequest(datapath, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      cookie, ALL_ONES, parser.OFPMatch())


def purpose_totals_request(datapath, table: int, cookie: int) -> parser.OFPAggregateStatsRequest:
    """The packets and bytes of the flows of `table` with exactly `cookie`, summed."""
    return parser.OFPAggregateStatsRequest(datapath, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                           cookie, ALL_ONES, parser.OFPMatch())


def port_stats_request(datapath) -> parser.OFPPortStatsRequest:
    return parser.OFPPortStatsRequest(datapath, 0, ofp.OFPP_ANY)


def table_stats_request(datapath) -> parser.OFPTableStatsRequest:
    return parser.OFPTableStatsRequest(datapath, 0)


def meter_stats_request(datapath) -> parser.OFPMeterStatsRequest:
    return parser.OFPMeterStatsRequest(datapath, 0, ofp.OFPM_ALL)


def ct_flush_zone(datapath, zone: int) -> parser.OFPExperimenter:
    """Open vSwitch's NXT_CT_FLUSH_ZONE: every connection of conntrack `zone` gone."""
    return parser.OFPExperimenter(datapath, experimenter=NX_EXPERIMENTER_ID,
                                  exp_type=NXT_CT_FLUSH_ZONE,
                                  data=struct.pack("!6xH", zone))  # 6 zero bytes, the zone


def switch_flows(replies) -> SwitchFlows:
    """The flow-stats replies as SwitchFlows: the entries socketnet owns that it
    can read; those whose instructions it cannot (as Flows without them); those
    of which even the match is unreadable."""
    installed, foreign, unreadable = [], [], []
    for reply in replies:
        for stat in reply.body:
            if not owns(stat.cookie):
                continue
            try:
                installed.append(from_stats(stat))
            except FlowError as exc:
                LOG.debug("unreadable flow in table %d: %s", stat.table_id, exc)
                try:
                    foreign.append(from_stats(stat, instructions=False))
                except FlowError:
                    unreadable.append(Unreadable(stat.table_id, stat))
    return SwitchFlows(tuple(installed), tuple(foreign), tuple(unreadable))


# --- ports -------------------------------------------------------------------

_PORT_REASONS = {ofp.OFPPR_ADD: "added", ofp.OFPPR_DELETE: "deleted",
                 ofp.OFPPR_MODIFY: "modified"}


def port(desc) -> SwitchPort:
    """The SwitchPort an OFPPort (of a port-desc reply or a port-status) describes."""
    name = desc.name.decode("utf-8", "replace") if isinstance(desc.name, bytes) else desc.name
    return SwitchPort(desc.port_no, name.rstrip("\0"), desc.hw_addr.lower())


def port_desc_request(datapath) -> parser.OFPPortDescStatsRequest:
    return parser.OFPPortDescStatsRequest(datapath, 0)


def ports(replies) -> list:
    """The port-desc replies' ports, in the switch's order."""
    return [port(d) for reply in replies for d in reply.body]


def port_status(msg) -> tuple:
    """(SwitchPort, "added" | "deleted" | "modified") of an OFPPortStatus."""
    return port(msg.desc), _PORT_REASONS.get(msg.reason, str(msg.reason))


# --- roles -------------------------------------------------------------------


def role_request(datapath, claim: Claim) -> parser.OFPRoleRequest:
    role = ofp.OFPCR_ROLE_MASTER if claim.master else ofp.OFPCR_ROLE_SLAVE
    return parser.OFPRoleRequest(datapath, role, claim.generation)


def stale_role(error) -> bool:
    """Whether an OFPErrorMsg (or None) refuses a role claim as stale."""
    return error is not None and (error.type, error.code) == (ofp.OFPET_ROLE_REQUEST_FAILED,
                                                              ofp.OFPRRFC_STALE)


# --- meters ------------------------------------------------------------------

_METER_COMMANDS = {"add": ofp.OFPMC_ADD, "modify": ofp.OFPMC_MODIFY}


def meter_config_request(datapath) -> parser.OFPMeterConfigStatsRequest:
    return parser.OFPMeterConfigStatsRequest(datapath, 0, ofp.OFPM_ALL)


def meter_configs(replies) -> list:
    """The meter-config replies as MeterConfigs (their first band); a meter
    without bands is left out."""
    return [MeterConfig(cfg.meter_id, cfg.bands[0].rate, cfg.bands[0].burst_size, cfg.flags)
            for reply in replies for cfg in reply.body if cfg.bands]


def meter_mod(datapath, command: str, meter: MeterConfig) -> parser.OFPMeterMod:
    """Add or modify (`command`) `meter`: one band that drops above its rate."""
    band = parser.OFPMeterBandDrop(rate=meter.rate, burst_size=meter.burst)
    return parser.OFPMeterMod(datapath, _METER_COMMANDS[command], meter.flags, meter.meter_id,
                              [band])
