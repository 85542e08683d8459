"""Hand-packed OpenFlow 1.3 messages for the packet-in hot path.

Each new Netmaker-ingress connection costs socketnet one PacketOut: the packet
itself, committing its connection to the conntrack zone with its class's mark
and sent back through the pipeline. Building messages from os-ken objects costs
tens of µs each (measured), more than everything else per packet-in together;
here the same bytes are packed with `struct` directly.
tests/unit/controller/test_fastpath.py proves them identical, byte for byte, to
what os-ken sends for the same message (controller.ofmsg).

    pack_commit(xid, in_port, data, zone, mark, send_on=True) -> bytes
                                                     the PacketOut of a decision
    pack_flow_mod(xid, flow, command=ADD) -> bytes   a flow of basic match fields
    pack_packet_out(xid, in_port, data, output=OFPP_TABLE) -> bytes
    pack_barrier(xid) -> bytes
    packet_in_fields(buf, at, length) -> (table_id, cookie, in_port, data)
                                                     the other way: what the classifier
                                                     reads of a PACKET_IN, from its bytes

pack_flow_mod encodes only OpenFlow-basic match fields (metadata, eth_type,
ip_proto, IPv4 addresses, TCP/UDP ports, ICMP type and code; metadata and
addresses may be masked) and the instructions write-metadata and goto-table.
Anything else raises FlowError: use controller.ofmsg for it. Importing this module does not import os-ken.
"""
from __future__ import annotations

import socket
import struct
from struct import Struct

from controller.flow import Flow, FlowError, Goto, WriteMetadata

# OpenFlow 1.3 wire constants (spec section 7; the tests check them against os-ken's).
OFP_VERSION = 0x04
OFPT_PACKET_OUT = 13
OFPT_FLOW_MOD = 14
OFPT_BARRIER_REQUEST = 20
OFPFC_ADD = 0
OFPFC_DELETE_STRICT = 4
OFPFF_SEND_FLOW_REM = 1 << 0
OFP_NO_BUFFER = 0xFFFFFFFF
OFPP_TABLE = 0xFFFFFFF9
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPCML_MAX = 0xFFE5  # os-ken's default max_len of an output action
OFPMT_OXM = 1
OFPXMC_OPENFLOW_BASIC = 0x8000
OFPIT_GOTO_TABLE = 1
OFPIT_WRITE_METADATA = 2
OFPAT_OUTPUT = 0

ADD = OFPFC_ADD
DELETE_STRICT = OFPFC_DELETE_STRICT

# ofp_header + ofp_flow_mod up to its match + the match's type and length.
_FLOW_MOD_HEAD = Struct("!BBHIQQBBHHHIIIH2xHH")
_FLOW_MOD_FIXED = 48  # ofp_header and ofp_flow_mod without the match
_WRITE_METADATA = Struct("!HH4xQQ")
_GOTO_TABLE = Struct("!HHB3x")
# ofp_header + ofp_packet_out + one ofp_action_output.
_PACKET_OUT_HEAD = Struct("!BBHIIIH6xHHIH6x")
_PACKET_OUT_FIXED_HEAD = Struct("!BBHIIIH6x")  # without its actions
_PACKET_OUT_FIXED = _PACKET_OUT_FIXED_HEAD.size
_OUTPUT_ACTION_LEN = 16
_BARRIER = Struct("!BBHI")
_MAX_MESSAGE = 0xFFFF


# --- OXM match fields -----------------------------------------------------------


def _oxm_header(field: int, length: int, masked: bool = False) -> int:
    return (OFPXMC_OPENFLOW_BASIC << 16) | (field << 9) | (int(masked) << 8) | length


def _integer_field(field: int, fmt: str):
    """An OXM field holding one unsigned integer, never masked."""
    packer = Struct("!I" + fmt)
    header = _oxm_header(field, packer.size - 4)

    def encode(value) -> bytes:
        if type(value) is tuple:
            raise FlowError(f"OXM field {field} cannot be masked")
        return packer.pack(header, value)
    return encode


def _metadata_field(field: int):
    exact, masked = Struct("!IQ"), Struct("!IQQ")
    exact_header, masked_header = _oxm_header(field, 8), _oxm_header(field, 16, True)

    def encode(value) -> bytes:
        if type(value) is tuple:
            return masked.pack(masked_header, value[0], value[1])
        return exact.pack(exact_header, value)
    return encode


_PREFIX_MASKS = tuple(((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF).to_bytes(4, "big")
                      for n in range(33))


def _ipv4_field(field: int):
    exact, masked = Struct("!I4s"), Struct("!I4s4s")
    exact_header, masked_header = _oxm_header(field, 4), _oxm_header(field, 8, True)

    def encode(value: str) -> bytes:
        try:
            if "/" not in value:
                return exact.pack(exact_header, socket.inet_pton(socket.AF_INET, value))
            address, prefix = value.split("/")
            return masked.pack(masked_header, socket.inet_pton(socket.AF_INET, address),
                               _PREFIX_MASKS[int(prefix)])
        except (OSError, TypeError, ValueError, IndexError) as e:
            raise FlowError(f"not an IPv4 address or prefix: {value!r}") from e
    return encode


# Field name -> (OXM field number, encoder). os-ken writes the fields of a match
# in the order of their numbers, and so does pack_flow_mod.
_OXM = {
    "metadata": (2, _metadata_field(2)),
    "eth_type": (5, _integer_field(5, "H")),
    "ip_proto": (10, _integer_field(10, "B")),
    "ipv4_src": (11, _ipv4_field(11)),
    "ipv4_dst": (12, _ipv4_field(12)),
    "tcp_src": (13, _integer_field(13, "H")),
    "tcp_dst": (14, _integer_field(14, "H")),
    "udp_src": (15, _integer_field(15, "H")),
    "udp_dst": (16, _integer_field(16, "H")),
    "icmpv4_type": (19, _integer_field(19, "B")),
    "icmpv4_code": (20, _integer_field(20, "B")),
}
_OXM_SLOTS = 21


def _match_fields(flow: Flow) -> bytes:
    slots = [b""] * _OXM_SLOTS
    for name, value in flow.match:
        oxm = _OXM.get(name)
        if oxm is None:
            raise FlowError(f"fastpath does not encode match field {name!r}: {flow}")
        slots[oxm[0]] = oxm[1](value)
    return b"".join(slots)


def _instructions(flow: Flow) -> bytes:
    parts = []
    for ins in flow.instructions:
        kind = type(ins)
        if kind is WriteMetadata:
            parts.append(_WRITE_METADATA.pack(OFPIT_WRITE_METADATA, _WRITE_METADATA.size,
                                              ins.value, ins.mask))
        elif kind is Goto:
            parts.append(_GOTO_TABLE.pack(OFPIT_GOTO_TABLE, _GOTO_TABLE.size, ins.table))
        else:
            raise FlowError(f"fastpath does not encode {kind.__name__}: {flow}")
    return b"".join(parts)


# --- messages ---------------------------------------------------------------------


def pack_flow_mod(xid: int, flow: Flow, command: int = ADD) -> bytes:
    """The FlowMod controller.ofmsg.flow_mod(dp, flow, command) serialises to.

    ADD installs (or replaces) the flow; DELETE_STRICT removes its entry, with
    the full cookie mask and no instructions."""
    if command == ADD:
        cookie_mask = 0
    elif command == DELETE_STRICT:
        cookie_mask = 0xFFFFFFFFFFFFFFFF
    else:
        raise FlowError(f"fastpath does not encode flow-mod command {command}")
    try:
        fields = _match_fields(flow)
        instructions = _instructions(flow) if command == ADD else b""
        match_len = 4 + len(fields)
        padding = b"\0" * (-match_len % 8)
        head = _FLOW_MOD_HEAD.pack(
            OFP_VERSION, OFPT_FLOW_MOD,
            _FLOW_MOD_FIXED + match_len + len(padding) + len(instructions), xid,
            flow.cookie, cookie_mask, flow.table, command, flow.idle_timeout,
            flow.hard_timeout, flow.priority, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY,
            OFPFF_SEND_FLOW_REM if flow.send_flow_removed else 0, OFPMT_OXM, match_len)
    except struct.error as e:  # a value out of its field's range
        raise FlowError(f"cannot encode {flow}: {e}") from e
    return head + fields + padding + instructions


def pack_packet_out(xid: int, in_port: int, data: bytes, output: int = OFPP_TABLE) -> bytes:
    """A PacketOut of the frame `data` (not buffered in the switch) as if it
    arrived on `in_port`, with one action: output to `output`. The default,
    OFPP_TABLE, runs it through the flow tables from table 0, where the
    decision just installed now applies to it."""
    length = _PACKET_OUT_HEAD.size + len(data)
    if length > _MAX_MESSAGE:
        raise ValueError(f"a {len(data)}-byte frame does not fit in one OpenFlow message")
    return _PACKET_OUT_HEAD.pack(
        OFP_VERSION, OFPT_PACKET_OUT, length, xid, OFP_NO_BUFFER, in_port,
        _OUTPUT_ACTION_LEN, OFPAT_OUTPUT, _OUTPUT_ACTION_LEN, output, OFPCML_MAX) + data


# Nicira's ct action (NXAST_CT) with an immediate zone and no ALG, optionally
# holding one set_field of ct_mark (Open vSwitch's exec(set_field:M->ct_mark)).
OFPAT_EXPERIMENTER = 0xFFFF
OFPAT_SET_FIELD = 25
NX_EXPERIMENTER_ID = 0x00002320
NXAST_CT = 35
NX_CT_FLAG_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF
_CT_ACTION = Struct("!HHIHH4sHB3xH")
_SET_CT_MARK = Struct("!HHII4x")  # set_field header, NXM1 ct_mark OXM, value, padding
_CT_MARK_OXM = (0x0001 << 16) | (107 << 9) | 4
_OUTPUT_ACTION = Struct("!HHIH6x")


def pack_commit(xid: int, in_port: int, data: bytes, zone: int, mark: int,
                send_on: bool = True) -> bytes:
    """The PacketOut that decides a connection: the frame `data`, as if it arrived
    on `in_port`, commits its connection to the connection tracker's `zone` with
    ct_mark `mark`, then (`send_on`) goes through the flow tables from table 0,
    where the mark now sends it on its class's path. Without `send_on` the frame
    is dropped once committed (a drop decision)."""
    ct_len = _CT_ACTION.size + _SET_CT_MARK.size
    actions = _CT_ACTION.pack(OFPAT_EXPERIMENTER, ct_len, NX_EXPERIMENTER_ID, NXAST_CT,
                              NX_CT_FLAG_COMMIT, b"\0\0\0\0", zone, NX_CT_RECIRC_NONE, 0)
    actions += _SET_CT_MARK.pack(OFPAT_SET_FIELD, _SET_CT_MARK.size, _CT_MARK_OXM, mark)
    if send_on:
        actions += _OUTPUT_ACTION.pack(OFPAT_OUTPUT, _OUTPUT_ACTION_LEN, OFPP_TABLE, 0)
    length = _PACKET_OUT_FIXED + len(actions) + len(data)
    if length > _MAX_MESSAGE:
        raise ValueError(f"a {len(data)}-byte frame does not fit in one OpenFlow message")
    return _PACKET_OUT_FIXED_HEAD.pack(OFP_VERSION, OFPT_PACKET_OUT, length, xid,
                                       OFP_NO_BUFFER, in_port, len(actions)) + actions + data


def pack_barrier(xid: int) -> bytes:
    return _BARRIER.pack(OFP_VERSION, OFPT_BARRIER_REQUEST, _BARRIER.size, xid)


# --- the other way: PACKET_IN -------------------------------------------------

# After ofp_header: total_len, reason, table_id, cookie; the match's type and length.
_PACKET_IN_FIELDS = Struct("!HBBQHH")
_PACKET_IN_MATCH_AT = 24  # after ofp_header (8) and the fixed fields (16)
_U32 = Struct("!I")
_OXM_IN_PORT = _oxm_header(0, 4)  # what Open vSwitch puts first in a packet-in's match


def packet_in_fields(buf, at: int = 0, length: int = None) -> tuple:
    """(table_id, cookie, in_port, data) of the PACKET_IN at `at` of `buf` (`length`
    bytes with its header; the rest of buf by default): what os-ken's OFPPacketIn
    parser gives for them, with no object built. in_port is None when the match
    has none; data is a copy, cut to total_len. Raises struct.error or ValueError
    on a message too short for what it says."""
    end = len(buf) if length is None else at + length
    total_len, _, table_id, cookie, _, match_len = _PACKET_IN_FIELDS.unpack_from(buf, at + 12)
    if match_len < 4:
        raise ValueError(f"match length {match_len}")
    data_at = at + _PACKET_IN_MATCH_AT + ((match_len + 7) // 8) * 8 + 2
    if data_at > end:
        raise ValueError(f"match length {match_len} beyond the message's {end - at} bytes")
    in_port = None
    field, fields_end = at + _PACKET_IN_MATCH_AT + 4, at + _PACKET_IN_MATCH_AT + match_len
    while field + 4 <= fields_end:
        header = _U32.unpack_from(buf, field)[0]
        if header == _OXM_IN_PORT and field + 8 <= fields_end:
            in_port = _U32.unpack_from(buf, field + 4)[0]
            break
        field += 4 + (header & 0xFF)
    if data_at + total_len < end:
        end = data_at + total_len  # padding for 8-byte alignment
    return table_id, cookie, in_port, bytes(buf[data_at:end])
