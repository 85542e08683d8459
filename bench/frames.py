"""The bench's traffic: Ethernet/IPv4/TCP SYN frames, each the first packet of a
new 5-tuple, from a Netmaker peer to the xray client's service.

    flow_source(i) -> (source address as int, source port)   flow i's own 5-tuple
    syn_frame(i, ...) -> bytearray                            its first packet
    stamp(frame, seq, now_ns)                                 write seq and send time
    read_stamp(frame) -> (seq, sent_ns) | None                a bench frame's stamp

Flow i comes from 10.101.0.0/16 (the seed's quick-install Netmaker range): the
address cycles through the /16, the source port moves on every 65,536 flows, so
(source, port) is unique for 4 billion flows. The TCP payload carries a magic,
the flow's sequence number and its send time (CLOCK_MONOTONIC, ns), so a receiver
in another process measures first-packet latency. The TCP checksum is right
(`stamp` sets it): Open vSwitch's connection tracker marks a segment with a wrong
one invalid, and the conntrack phase must see a real SYN.
"""
from __future__ import annotations

import socket
import struct
from typing import Optional

NETMAKER_BASE = 0x0A650000  # 10.101.0.0
FIRST_PORT = 1024
MAGIC = b"SNB1"
_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_STAMP = struct.Struct("!4sQQ")
STAMP_AT = _ETH.size + _IPV4.size + _TCP.size
FRAME_LEN = STAMP_AT + _STAMP.size


def flow_source(i: int) -> tuple:
    return NETMAKER_BASE + (i & 0xFFFF), FIRST_PORT + (i >> 16) % (0x10000 - FIRST_PORT)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frame(i: int, src_mac: str, dst_mac: str, dst_ip: str, dport: int) -> bytearray:
    src, sport = flow_source(i)
    ip_src, ip_dst = struct.pack("!I", src), socket.inet_aton(dst_ip)
    total = _IPV4.size + _TCP.size + _STAMP.size
    ip = _IPV4.pack(0x45, 0, total, i & 0xFFFF, 0x4000, 64, socket.IPPROTO_TCP, 0, ip_src, ip_dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    tcp = _TCP.pack(sport, dport, i & 0xFFFFFFFF, 0, 5 << 4, 0x02, 64240, 0, 0)
    return bytearray(_ETH.pack(mac_bytes(dst_mac), mac_bytes(src_mac), 0x0800) + ip + tcp
                     + _STAMP.pack(MAGIC, i, 0))


_TCP_AT = _ETH.size + _IPV4.size
_TCP_LEN = _TCP.size + _STAMP.size
_SEGMENT = struct.Struct(f"!{_TCP_LEN // 2}H")
_ADDRESSES = struct.Struct("!4H")  # source and destination, in 16-bit words


def stamp(frame: bytearray, seq: int, now_ns: int) -> None:
    """Write seq and the send time into the payload, and the TCP checksum (over the
    pseudo-header and the segment) that goes with them."""
    _STAMP.pack_into(frame, STAMP_AT, MAGIC, seq, now_ns)
    struct.pack_into("!H", frame, _TCP_AT + 16, 0)
    total = (sum(_ADDRESSES.unpack_from(frame, _TCP_AT - 8)) + socket.IPPROTO_TCP + _TCP_LEN
             + sum(_SEGMENT.unpack_from(frame, _TCP_AT)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", frame, _TCP_AT + 16, ~total & 0xFFFF)


def read_stamp(frame: bytes) -> Optional[tuple]:
    if len(frame) < FRAME_LEN or frame[STAMP_AT:STAMP_AT + 4] != MAGIC:
        return None
    _, seq, sent = _STAMP.unpack_from(frame, STAMP_AT)
    return seq, sent
