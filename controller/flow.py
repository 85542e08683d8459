"""Flows as data: the immutable value every other part of socketnet passes around.

A `Flow` is what one OpenFlow 1.3 flow entry says (table, priority, match,
instructions, cookie, timeouts), with the match held as OXM field names and
values in os-ken's user form. Flows compare by value, hash, sort, and print as
ovs-ofctl lines (`Flow.ofctl()`), in the field order `ovs-ofctl dump-flows` uses,
so a human can put one next to a switch dump.

Nothing here knows about bridges, roles or os-ken: see `pipeline.py` for the
tables, `compiler.py` for which flows a bridge needs and `ofmsg.py` for the
encoding to OpenFlow messages.
"""
from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Iterable, Mapping, Optional, Union

OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPCML_NO_BUFFER = 0xFFFF

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# The match fields socketnet uses, in the order ovs-ofctl prints them, with
# their ovs-ofctl names. A field outside this table cannot appear in a Flow.
_OFCTL_FIELD = {
    "metadata": "metadata",
    "in_port": "in_port",
    "eth_src": "dl_src",
    "eth_dst": "dl_dst",
    "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst",
    "arp_spa": "arp_spa",
    "arp_tpa": "arp_tpa",
    "arp_op": "arp_op",
    "arp_sha": "arp_sha",
    "arp_tha": "arp_tha",
    "icmpv4_type": "icmp_type",
    "icmpv4_code": "icmp_code",
    "tcp_src": "tp_src",
    "tcp_dst": "tp_dst",
    "udp_src": "tp_src",
    "udp_dst": "tp_dst",
    "ct_state": "ct_state",
    "ct_zone": "ct_zone",
    "ct_mark": "ct_mark",
}
MATCH_FIELDS = frozenset(_OFCTL_FIELD) | {"eth_type", "ip_proto"}
_FIELD_ORDER = {name: i for i, name in enumerate(_OFCTL_FIELD)}

_PROTO_SHORTHAND = {
    (ETH_TYPE_IP, None): "ip",
    (ETH_TYPE_ARP, None): "arp",
    (ETH_TYPE_IPV6, None): "ipv6",
    (ETH_TYPE_IP, IPPROTO_TCP): "tcp",
    (ETH_TYPE_IP, IPPROTO_UDP): "udp",
    (ETH_TYPE_IP, IPPROTO_ICMP): "icmp",
}

# Set-field targets and their ovs-ofctl names.
_OFCTL_SET_FIELD = {
    "eth_src": "eth_src",
    "eth_dst": "eth_dst",
    "arp_op": "arp_op",
    "arp_sha": "arp_sha",
    "arp_spa": "arp_spa",
    "arp_tha": "arp_tha",
    "arp_tpa": "arp_tpa",
}
# Register moves (ARP responder), as NXM names.
_OFCTL_MOVE = {
    "eth_src": "NXM_OF_ETH_SRC[]",
    "eth_dst": "NXM_OF_ETH_DST[]",
    "arp_sha": "NXM_NX_ARP_SHA[]",
    "arp_tha": "NXM_NX_ARP_THA[]",
    "arp_spa": "NXM_OF_ARP_SPA[]",
    "arp_tpa": "NXM_OF_ARP_TPA[]",
}

MatchValue = Union[int, str, tuple]

# The connection tracker's state bits (ct_state), as Open vSwitch names them.
CT_STATE_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10,
                 "trk": 0x20, "snat": 0x40, "dnat": 0x80}
_CT_FLAG = re.compile(r"([+-])([a-z]+)")


def ct_state(text: str) -> tuple:
    """`"+trk-inv"` as the (value, mask) pair a ct_state match holds; FlowError if
    a flag is not one of CT_STATE_BITS or the text is not flags."""
    value = mask = 0
    if _CT_FLAG.sub("", text):
        raise FlowError(f"ct_state {text!r} is not a list of +flag and -flag")
    for sign, name in _CT_FLAG.findall(text):
        bit = CT_STATE_BITS.get(name)
        if bit is None:
            raise FlowError(f"ct_state flag {name!r} is not one of {sorted(CT_STATE_BITS)}")
        mask |= bit
        if sign == "+":
            value |= bit
    return (value, mask)


def ct_state_text(value: int, mask: int) -> str:
    """The (value, mask) of a ct_state match as ovs-ofctl writes it: +trk-inv."""
    return "".join(("+" if value & bit else "-") + name
                   for name, bit in sorted(CT_STATE_BITS.items(), key=lambda kv: kv[1])
                   if mask & bit)


class FlowError(ValueError):
    """A flow value that OpenFlow 1.3 (or socketnet's subset of it) cannot express."""


# --- actions (inside apply-actions) --------------------------------------


@dataclass(frozen=True, order=True)
class Output:
    port: int

    def ofctl(self, names: Mapping[int, str]) -> str:
        if self.port == OFPP_IN_PORT:
            return "IN_PORT"
        if self.port == OFPP_TABLE:
            return "TABLE"
        if self.port == OFPP_LOCAL:
            return "LOCAL"
        return f"output:{names.get(self.port, self.port)}"


@dataclass(frozen=True, order=True)
class SetField:
    field: str
    value: Union[int, str]

    def __post_init__(self):
        if self.field not in _OFCTL_SET_FIELD:
            raise FlowError(f"set_field on {self.field!r} is not supported")

    def ofctl(self, names: Mapping[int, str]) -> str:
        return f"set_field:{self.value}->{_OFCTL_SET_FIELD[self.field]}"


@dataclass(frozen=True, order=True)
class Move:
    """Copy one whole field into another (Nicira/OF1.5 copy-field)."""
    src: str
    dst: str

    def __post_init__(self):
        for name in (self.src, self.dst):
            if name not in _OFCTL_MOVE:
                raise FlowError(f"move of {name!r} is not supported")

    def ofctl(self, names: Mapping[int, str]) -> str:
        return f"move:{_OFCTL_MOVE[self.src]}->{_OFCTL_MOVE[self.dst]}"


@dataclass(frozen=True, order=True)
class Controller:
    max_len: int = OFPCML_NO_BUFFER

    def ofctl(self, names: Mapping[int, str]) -> str:
        return f"CONTROLLER:{self.max_len}"


@dataclass(frozen=True, order=True)
class CT:
    """Pass the packet through the connection tracker (Nicira's ct action).

    `zone`: the tracker's zone. `table`: continue in this table with the
    connection's state (ct_state, ct_mark) known; without it the packet goes on
    here, untracked. `commit`: remember the connection; `mark`: with commit, the
    ct_mark it is given (exec(set_field:MARK->ct_mark))."""
    zone: int
    table: Optional[int] = None
    commit: bool = False
    mark: Optional[int] = None

    def __post_init__(self):
        if not 0 <= self.zone <= 0xFFFF:
            raise FlowError(f"conntrack zone {self.zone} is not within 0..65535")
        if self.mark is not None and not self.commit:
            raise FlowError("a ct_mark is set only on commit")
        if self.mark is not None and not 0 <= self.mark <= 0xFFFFFFFF:
            raise FlowError(f"ct_mark {self.mark} is not a 32-bit value")
        if self.table is not None and not 0 <= self.table < 0xFF:
            raise FlowError(f"ct table {self.table} is not within 0..254")

    def ofctl(self, names: Mapping[int, str]) -> str:
        args = ["commit"] if self.commit else []
        if self.table is not None:
            args.append(f"table={self.table}")
        args.append(f"zone={self.zone}")
        if self.mark is not None:
            args.append(f"exec(set_field:{self.mark:#x}->ct_mark)")
        return f"ct({','.join(args)})"


Action = Union[Output, SetField, Move, Controller, CT]


# --- instructions ----------------------------------------------------------


@dataclass(frozen=True, order=True)
class Meter:
    meter_id: int

    def ofctl(self, names):
        return f"meter:{self.meter_id}"


@dataclass(frozen=True, order=True)
class Apply:
    actions: tuple

    def ofctl(self, names):
        return ",".join(a.ofctl(names) for a in self.actions)


@dataclass(frozen=True, order=True)
class WriteMetadata:
    value: int
    mask: int = 0xFFFFFFFFFFFFFFFF

    def ofctl(self, names):
        if self.mask == 0xFFFFFFFFFFFFFFFF:
            return f"write_metadata:{self.value:#x}"
        return f"write_metadata:{self.value:#x}/{self.mask:#x}"


@dataclass(frozen=True, order=True)
class Goto:
    table: int

    def ofctl(self, names):
        return f"goto_table:{self.table}"


Instruction = Union[Meter, Apply, WriteMetadata, Goto]
# OpenFlow 1.3 section 5.9: the order instructions are executed in.
_INSTRUCTION_RANK = {Meter: 0, Apply: 1, WriteMetadata: 2, Goto: 3}


# --- the flow --------------------------------------------------------------


def _normalise_value(name: str, value) -> MatchValue:
    """One canonical form per match value, so that flows compare by meaning.

    Masks that cover the whole field become exact matches; IPv4 prefixes are
    written as "addr/len"; MAC addresses are lower case.
    """
    if isinstance(value, tuple):
        value, mask = value
    else:
        mask = None
    if name in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"):
        if isinstance(value, str) and "/" in value:
            value, mask = value.split("/", 1)
        if mask is not None:
            plen = _prefix_len(mask)
            if plen == 32:
                return str(value)
            return f"{_mask_address(value, plen)}/{plen}"
        return str(value)
    if name in ("eth_src", "eth_dst", "arp_sha", "arp_tha"):
        if mask is not None and str(mask).lower() != "ff:ff:ff:ff:ff:ff":
            return (str(value).lower(), str(mask).lower())
        return str(value).lower()
    if name == "metadata":
        if mask is not None and mask != 0xFFFFFFFFFFFFFFFF:
            return (int(value) & int(mask), int(mask))
        return int(value)
    if name == "ct_state":  # always (value, mask): a state match names the bits it tests
        if isinstance(value, str):
            if mask is not None:
                raise FlowError(f"ct_state {value!r} cannot take a mask")
            return ct_state(value)
        mask = 0xFFFFFFFF if mask is None else int(mask)
        return (int(value) & mask, mask)
    if name == "ct_mark":
        if mask is not None and mask != 0xFFFFFFFF:
            return (int(value) & int(mask), int(mask))
        return int(value)
    if mask is not None:
        raise FlowError(f"{name} cannot be masked")
    return int(value)


def _prefix_len(mask) -> int:
    if isinstance(mask, int) or (isinstance(mask, str) and mask.isdigit()):
        return int(mask)
    bits = 0
    for octet in str(mask).split("."):
        bits = (bits << 8) | int(octet)
    inverted = (~bits) & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise FlowError(f"non-contiguous IPv4 mask {mask}")
    return 32 - inverted.bit_length()


def _mask_address(addr: str, plen: int) -> str:
    bits = 0
    for octet in str(addr).split("."):
        bits = (bits << 8) | int(octet)
    bits &= (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


def make_match(fields: Mapping[str, MatchValue]) -> tuple:
    """A canonical, hashable match: sorted (field, value) pairs."""
    out = []
    for name, value in fields.items():
        if name not in MATCH_FIELDS:
            raise FlowError(f"match field {name!r} is not supported")
        out.append((name, _normalise_value(name, value)))
    return tuple(sorted(out))


@dataclass(frozen=True, order=True)
class Flow:
    table: int
    priority: int
    match: tuple
    instructions: tuple = ()
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    send_flow_removed: bool = False

    @classmethod
    def make(cls, table: int, priority: int, match: Mapping[str, MatchValue],
             instructions: Iterable = (), cookie: int = 0, **kw) -> "Flow":
        ins = tuple(sorted(instructions, key=lambda i: _INSTRUCTION_RANK[type(i)]))
        if len({type(i) for i in ins}) != len(ins):
            raise FlowError("an instruction type appears twice")
        return cls(table, priority, make_match(match), ins, cookie, **kw)

    @property
    def key(self) -> tuple:
        """What identifies a flow entry in a switch (OpenFlow 1.3 section 6.4)."""
        return (self.table, self.priority, self.match)

    @property
    def match_dict(self) -> dict:
        return dict(self.match)

    def ofctl(self, names: Mapping[int, str] | None = None) -> str:
        """The flow as an `ovs-ofctl -O OpenFlow13 add-flow` line.

        `names` maps port numbers to port names, as `ovs-ofctl --names` does.
        """
        names = names or {}
        head = []
        if self.cookie:
            head.append(f"cookie={self.cookie:#x}")
        head.append(f"table={self.table}")
        if self.idle_timeout:
            head.append(f"idle_timeout={self.idle_timeout}")
        if self.hard_timeout:
            head.append(f"hard_timeout={self.hard_timeout}")
        if self.send_flow_removed:
            head.append("send_flow_rem")
        match = self.match_dict
        body = [f"priority={self.priority}"]
        eth_type = match.pop("eth_type", None)
        ip_proto = match.pop("ip_proto", None)
        shorthand = _PROTO_SHORTHAND.get((eth_type, ip_proto))
        if shorthand:
            body.append(shorthand)
        else:
            if eth_type is not None:
                body.append(f"dl_type={eth_type:#06x}")
            if ip_proto is not None:
                body.append(f"nw_proto={ip_proto}")
        for name in sorted(match, key=_FIELD_ORDER.__getitem__):
            body.append(f"{_OFCTL_FIELD[name]}={_ofctl_value(name, match[name], names)}")
        actions = ",".join(text for text in (i.ofctl(names) for i in self.instructions) if text)
        return f"{', '.join(head)}, {','.join(body)} actions={actions or 'drop'}"

    def __str__(self) -> str:
        return self.ofctl()


def _ofctl_value(name: str, value, names: Mapping[int, str]) -> str:
    if name == "in_port":
        if value == OFPP_LOCAL:
            return "LOCAL"
        return str(names.get(value, value))
    if name in ("metadata", "ct_mark"):
        if isinstance(value, tuple):
            return f"{value[0]:#x}/{value[1]:#x}"
        return f"{value:#x}" if value else "0"  # as ovs-ofctl prints it
    if name == "ct_state":
        return ct_state_text(*value)
    if isinstance(value, tuple):
        return f"{value[0]}/{value[1]}"
    return str(value)
