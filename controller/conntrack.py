"""The connections of socketnet's conntrack zone: read, named and removed one by one.

Decisions live in Open vSwitch's connection tracker (controller.classifier): a
connection of the mesh's zone carries its class as ct_mark. This module is the
pure part of showing and editing them; ovs-vswitchd's control socket does the
rest (`dpctl/dump-conntrack -s zone=Z`, `dpctl/flush-conntrack zone=Z TUPLE`).

    parse_dump(text, zone) -> [Connection]   the dump's lines of that zone
    Connection.id                            "tcp-SRC-SPORT-DST-DPORT", "udp-...",
                                             "icmp-SRC-DST-ID"; parse_id reads it back
    flush_tuple(id) -> str                   the dpctl/flush-conntrack tuple of one
    timeout_policy(classification) -> dict   the zone's timeouts (ovs-vsctl add-zone-tp)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from controller.classifier import CLASS_OF_MARK, PROTOCOL_NUMBERS, address_int
from controller.pipeline import Mark

_PROTOCOLS = ("tcp", "udp", "icmp")
_FIELD = re.compile(r"(\w+)=(\([^)]*\)|[^,]*)")


class ConntrackError(ValueError):
    """An entry id that names no connection socketnet could have committed."""


@dataclass(frozen=True)
class Connection:
    proto: str  # tcp, udp or icmp
    src: str  # the original direction: who opened it
    dst: str
    sport: int = 0  # tcp, udp
    dport: int = 0
    icmp_id: int = 0  # icmp
    mark: int = 0
    state: str = ""  # TCP's state as the tracker names it (ESTABLISHED, ...)
    timeout: Optional[int] = None  # seconds left, when the dump says

    @property
    def id(self) -> str:
        if self.proto == "icmp":
            return f"icmp-{self.src}-{self.dst}-{self.icmp_id}"
        return f"{self.proto}-{self.src}-{self.sport}-{self.dst}-{self.dport}"

    @property
    def cls(self) -> Optional[str]:
        """The traffic class its mark says, "reply" for a management container's
        own connection, None for no decision."""
        if self.mark == Mark.OUTBOUND:
            return "reply"
        cls = CLASS_OF_MARK.get(self.mark)
        return cls.value if cls is not None else None

    def doc(self) -> dict:
        doc = {"id": self.id, "proto": self.proto, "src": self.src, "dst": self.dst,
               "class": self.cls, "mark": self.mark, "state": self.state or None,
               "timeout": self.timeout}
        if self.proto == "icmp":
            doc["icmp_id"] = self.icmp_id
        else:
            doc["sport"], doc["dport"] = self.sport, self.dport
        return doc


def _fields(text: str) -> dict:
    return {key: value for key, value in _FIELD.findall(text)}


def parse_dump(text: str, zone: int) -> list:
    """The connections of `zone` in a `dpctl/dump-conntrack [-s]` output; lines of
    other zones, of IPv6 and of protocols socketnet never commits are left out."""
    out = []
    for line in text.splitlines():
        proto, _, rest = line.strip().partition(",")
        if proto not in _PROTOCOLS:
            continue
        fields = _fields(rest)
        if fields.get("zone") != str(zone):
            continue
        orig = _fields(fields.get("orig", "").strip("()"))
        try:
            address_int(orig.get("src", "")), address_int(orig.get("dst", ""))
            mark = int(fields.get("mark", "0"), 0)
            timeout = int(fields["timeout"]) if "timeout" in fields else None
            ports = ((int(orig["sport"]), int(orig["dport"])) if proto != "icmp" else (0, 0))
            icmp_id = int(orig.get("id", "0")) if proto == "icmp" else 0
        except (KeyError, ValueError):
            continue  # an IPv6 entry, or a line this parser does not know
        state = _fields(fields.get("protoinfo", "").strip("()")).get("state", "")
        out.append(Connection(proto, orig["src"], orig["dst"], ports[0], ports[1], icmp_id,
                              mark, state, timeout))
    return out


def parse_id(entry: str) -> Connection:
    """The connection an id names (without its mark and state); ConntrackError
    saying what is wrong with it."""
    parts = entry.split("-")
    try:
        if parts[0] == "icmp" and len(parts) == 4:
            address_int(parts[1]), address_int(parts[2])
            return Connection("icmp", parts[1], parts[2], icmp_id=_number(parts[3], 0xFFFF))
        if parts[0] in ("tcp", "udp") and len(parts) == 5:
            address_int(parts[1]), address_int(parts[3])
            return Connection(parts[0], parts[1], parts[3], _number(parts[2], 0xFFFF),
                              _number(parts[4], 0xFFFF))
    except ValueError as exc:
        raise ConntrackError(f"{entry!r}: {exc}") from None
    raise ConntrackError(f"{entry!r}: expected tcp-SRC-SPORT-DST-DPORT, udp-SRC-SPORT-DST-DPORT "
                         "or icmp-SRC-DST-ID")


def _number(text: str, top: int) -> int:
    if not text.isdigit() or int(text) > top:
        raise ValueError(f"{text!r} is not a number within 0..{top}")
    return int(text)


def flush_tuple(connection: Connection) -> str:
    """The ct-tuple `dpctl/flush-conntrack zone=Z TUPLE` removes `connection` by."""
    head = (f"ct_nw_src={connection.src},ct_nw_dst={connection.dst},"
            f"ct_nw_proto={PROTOCOL_NUMBERS[connection.proto]}")
    if connection.proto == "icmp":
        return f"{head},icmp_id={connection.icmp_id},icmp_type=8,icmp_code=0"
    return f"{head},ct_tp_src={connection.sport},ct_tp_dst={connection.dport}"


# The zone's timeouts (Open vSwitch's CT_Timeout_Policy keys) that idle_timeout
# sets: how long an established TCP connection, and any UDP or ICMP one, keeps its
# decision without a packet. TCP's opening and closing states keep the
# tracker's own, short timeouts.
IDLE_TIMEOUTS = ("tcp_established", "udp_first", "udp_single", "udp_multiple",
                 "icmp_first", "icmp_reply")


def timeout_policy(classification) -> dict:
    return {key: classification.idle_timeout for key in IDLE_TIMEOUTS}
