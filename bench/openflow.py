"""Just enough OpenFlow 1.3, packed and read with `struct`, for the bench's own
switch-side actors: the synthetic switch (bench/synthetic.py) and the do-nothing
packet-in sink (bench/traffic.py).

    encode: hello, features_reply, port_desc_reply, empty_multipart_reply,
            barrier_reply, echo_reply, role_reply, bundle_ctrl_reply, packet_in
    decode: Reader (a byte stream -> (type, xid, message) triples),
            multipart_type, role_request, bundle_ctrl, flow_mod_key, packet_out_key

The key of a new flow is (IPv4 source, TCP/UDP source port): every frame the bench
sends has its own. `flow_mod_key` reads it from a FlowMod's match, `packet_out_key`
from the frame a PacketOut carries, so an answer is matched to its packet-in
whatever xid the controller chose. tests/unit/bench/test_bench_synthetic_switch.py parses
every encoded message with os-ken's own parser, so this cannot rot silently.
Importing this module does not import os-ken.
"""
from __future__ import annotations

import struct
from struct import Struct
from typing import Iterator, NamedTuple, Optional, Sequence

# Wire constants (OpenFlow 1.3 spec; the unit test checks them against os-ken's).
OFP_VERSION = 0x04
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPT_FEATURES_REQUEST = 5
OFPT_FEATURES_REPLY = 6
OFPT_PACKET_IN = 10
OFPT_PACKET_OUT = 13
OFPT_FLOW_MOD = 14
OFPT_MULTIPART_REQUEST = 18
OFPT_MULTIPART_REPLY = 19
OFPT_BARRIER_REQUEST = 20
OFPT_BARRIER_REPLY = 21
OFPT_ROLE_REQUEST = 24
OFPT_ROLE_REPLY = 25
OFPMP_DESC = 0
OFPMP_FLOW = 1
OFPMP_AGGREGATE = 2
OFPMP_METER_CONFIG = 10
OFPMP_PORT_DESC = 13
OFPP_LOCAL = 0xFFFFFFFE
OFP_NO_BUFFER = 0xFFFFFFFF
OFPR_NO_MATCH = 0
OFPMT_OXM = 1
OFPXMC_OPENFLOW_BASIC = 0x8000
OXM_IN_PORT = 0
OXM_METADATA = 2
OXM_IPV4_SRC = 11
OXM_TCP_SRC = 13
OXM_UDP_SRC = 15
ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_ET_BUNDLE_CONTROL = 2300
# Capabilities OVS reports: flow, table, port stats, group stats, queue stats.
CAPABILITIES = 0x4F

HEADER = Struct("!BBHI")
_FEATURES = Struct("!QIBB2xII")
_MULTIPART = Struct("!HH4x")
_PORT = Struct("!I4x6s2x16sIIIIIIII")
_EXPERIMENTER = Struct("!II")
_BUNDLE_CTRL = Struct("!IHH")
_ROLE = Struct("!I4xQ")
_PACKET_IN = Struct("!IHBBQ")
_FLOW_MOD_MATCH = 48  # ofp_header + ofp_flow_mod up to its match
_PACKET_OUT = Struct("!IIH6x")
_OXM = Struct("!I")
_U16 = Struct("!H")
_U32 = Struct("!I")
# Ethernet, IPv4 without options: the frame's source address and source port.
_FRAME_SRC = 26
_FRAME_SPORT = 34


def _message(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(OFP_VERSION, msg_type, HEADER.size + len(body), xid) + body


def _oxm(field: int, value: bytes) -> bytes:
    return _OXM.pack((OFPXMC_OPENFLOW_BASIC << 16) | (field << 9) | len(value)) + value


def _match(oxms: bytes) -> bytes:
    length = 4 + len(oxms)
    return struct.pack("!HH", OFPMT_OXM, length) + oxms + b"\0" * (-length % 8)


# --- encode ---------------------------------------------------------------------


def hello(xid: int = 0) -> bytes:
    return _message(OFPT_HELLO, xid)


def features_reply(xid: int, dpid: int, n_tables: int = 254) -> bytes:
    return _message(OFPT_FEATURES_REPLY, xid,
                    _FEATURES.pack(dpid, 0, n_tables, 0, CAPABILITIES, 0))


class Port(NamedTuple):
    number: int
    name: str
    mac: str


def port_desc_reply(xid: int, ports: Sequence[Port]) -> bytes:
    body = b"".join(_PORT.pack(p.number, bytes.fromhex(p.mac.replace(":", "")),
                               p.name.encode()[:15], 0, 0, 0, 0, 0, 0, 10_000_000, 10_000_000)
                    for p in ports)
    return _message(OFPT_MULTIPART_REPLY, xid, _MULTIPART.pack(OFPMP_PORT_DESC, 0) + body)


# Replies whose body is one fixed structure, not a list: what an empty switch says.
_FIXED_BODIES = {
    OFPMP_DESC: struct.pack("!256s256s256s32s256s", b"socketnet bench", b"synthetic switch",
                            b"bench/synthetic.py", b"0", b"mesh"),
    OFPMP_AGGREGATE: struct.pack("!QQI4x", 0, 0, 0),  # packets, bytes, flows
}


def empty_multipart_reply(xid: int, mp_type: int) -> bytes:
    """The reply of a switch that holds nothing of the kind asked: no flows, no
    meters, no statistics (an aggregate of zeros; a description of itself)."""
    return _message(OFPT_MULTIPART_REPLY, xid,
                    _MULTIPART.pack(mp_type, 0) + _FIXED_BODIES.get(mp_type, b""))


def barrier_reply(xid: int) -> bytes:
    return _message(OFPT_BARRIER_REPLY, xid)


def echo_reply(xid: int, data: bytes = b"") -> bytes:
    return _message(OFPT_ECHO_REPLY, xid, data)


def role_reply(xid: int, role: int, generation_id: int) -> bytes:
    """The answer to a role request: the role granted, as asked."""
    return _message(OFPT_ROLE_REPLY, xid, _ROLE.pack(role, generation_id))


def bundle_ctrl_reply(xid: int, bundle_id: int, request_type: int, flags: int = 0) -> bytes:
    """The ONF bundle control reply to a request (open, close, commit, discard):
    each reply type is its request's plus one. Open vSwitch sets the reply's
    flags to 0 whatever the request's were (ofproto.c, handle_bundle_control);
    so does this, by default."""
    return _message(OFPT_EXPERIMENTER, xid,
                    _EXPERIMENTER.pack(ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_CONTROL)
                    + _BUNDLE_CTRL.pack(bundle_id, request_type + 1, flags))


def packet_in(xid: int, table_id: int, cookie: int, in_port: int, data: bytes,
              metadata: Optional[int] = None) -> bytes:
    """An unbuffered table-miss packet-in, its match as Open vSwitch fills it:
    in_port and, when the pipeline wrote one, metadata."""
    oxms = _oxm(OXM_IN_PORT, _U32.pack(in_port))
    if metadata is not None:
        oxms += _oxm(OXM_METADATA, struct.pack("!Q", metadata))
    return _message(OFPT_PACKET_IN, xid,
                    _PACKET_IN.pack(OFP_NO_BUFFER, len(data), OFPR_NO_MATCH, table_id, cookie)
                    + _match(oxms) + b"\0\0" + data)


# --- decode ---------------------------------------------------------------------


class Reader:
    """Cuts a TCP byte stream into OpenFlow messages: `feed(bytes)` yields
    (type, xid, message) for every complete message, keeping the rest."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[tuple]:
        buf = self._buffer + data if self._buffer else data
        at, end = 0, len(buf)
        unpack = HEADER.unpack_from
        while end - at >= 8:
            _, msg_type, length, xid = unpack(buf, at)
            if length < 8:
                raise ValueError(f"OpenFlow message of length {length} at byte {at}")
            if end - at < length:
                break
            yield msg_type, xid, buf[at:at + length]
            at += length
        self._buffer = buf[at:]


def multipart_type(msg: bytes) -> int:
    return _U16.unpack_from(msg, 8)[0]


def role_request(msg: bytes) -> tuple:
    """(role, generation_id) of a role request."""
    return _ROLE.unpack_from(msg, 8)


def bundle_ctrl(msg: bytes) -> Optional[tuple]:
    """(bundle_id, type, flags) of an ONF bundle control message; None for any
    other experimenter message (a bundle add, say)."""
    experimenter, exp_type = _EXPERIMENTER.unpack_from(msg, 8)
    if experimenter != ONF_EXPERIMENTER_ID or exp_type != ONF_ET_BUNDLE_CONTROL:
        return None
    return _BUNDLE_CTRL.unpack_from(msg, 16)


def flow_mod_key(msg: bytes) -> Optional[tuple]:
    """(ipv4_src as int, tcp_src or udp_src) of a FlowMod's match; None if its
    match has no IPv4 source or no source port (a table-miss flow, say)."""
    match_len = _U16.unpack_from(msg, _FLOW_MOD_MATCH + 2)[0]
    at, end = _FLOW_MOD_MATCH + 4, _FLOW_MOD_MATCH + match_len
    src = sport = None
    while at + 4 <= end:
        header = _OXM.unpack_from(msg, at)[0]
        field, length = (header >> 9) & 0x7F, header & 0xFF
        if field == OXM_IPV4_SRC:
            src = _U32.unpack_from(msg, at + 4)[0]
        elif field == OXM_TCP_SRC or field == OXM_UDP_SRC:
            sport = _U16.unpack_from(msg, at + 4)[0]
        at += 4 + length
    if src is None or sport is None:
        return None
    return src, sport


def packet_out_key(msg: bytes) -> Optional[tuple]:
    """(IPv4 source, source port) of the frame a PacketOut carries; None if it
    carries none long enough."""
    actions_len = _PACKET_OUT.unpack_from(msg, 8)[2]
    data = 8 + _PACKET_OUT.size + actions_len
    if len(msg) < data + _FRAME_SPORT + 2:
        return None
    return _U32.unpack_from(msg, data + _FRAME_SRC)[0], _U16.unpack_from(msg, data + _FRAME_SPORT)[0]
