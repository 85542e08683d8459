"""Which layer an interface is, as the kernel says: `Kind.L2` (Ethernet) or `Kind.L3`.

Owns the one rule, and reading it from the kernel two ways:

    link_kind(arp_type, address) -> Kind   the rule (pure)
    detect_kind(name, sysfs=SYSFS) -> Kind or None
                                           from /sys/class/net/NAME (None: no such
                                           interface); `sysfs` is a parameter so tests
                                           give a fake directory
    netlink_kind(msg) -> Kind              from a pyroute2 link message (what host
                                           apply uses: sysfs shows the netns that
                                           mounted it, netlink the one it asks)

The rule: ARP hardware type 65534 (ARPHRD_NONE: WireGuard, tun) or no hardware
address at all is l3; anything else is l2. OVS cannot switch an l3 interface
(the userspace datapath reads its raw IP as Ethernet; no datapath sends Ethernet
to it): it must reach its bridge through an adapter port, never be enslaved. The config can force a kind
(`socketnet.ports.<iface>.kind`); this says what the kernel has.
"""
from __future__ import annotations

import os
from typing import Optional

from topology.model import Kind

SYSFS = "/sys/class/net"
ARPHRD_NONE = 65534


def link_kind(arp_type: Optional[int], address: Optional[str]) -> Kind:
    """l3 when the ARP hardware type is ARPHRD_NONE or there is no hardware address."""
    if arp_type == ARPHRD_NONE or not (address or "").strip():
        return Kind.L3
    return Kind.L2


def detect_kind(name: str, sysfs: str = SYSFS) -> Optional[Kind]:
    """The kind of interface `name` from sysfs (`type`, `addr_len`, `address`), or
    None when it does not exist there."""
    base = os.path.join(sysfs, name)
    if "/" in name or name in ("", ".", "..") or not os.path.isdir(base):
        return None
    arp_type = _read(base, "type")
    addr_len = _read(base, "addr_len")
    address = _read(base, "address")
    if addr_len is not None and addr_len.strip() == "0":
        address = ""
    return link_kind(int(arp_type) if arp_type and arp_type.strip().isdigit() else None,
                     address)


def netlink_kind(msg) -> Kind:
    """The kind of a pyroute2 link message (RTM_NEWLINK): `ifi_type` and IFLA_ADDRESS."""
    return link_kind(msg.get("ifi_type"), msg.get_attr("IFLA_ADDRESS"))


def _read(base: str, attribute: str) -> Optional[str]:
    try:
        with open(os.path.join(base, attribute)) as f:
            return f.read().strip()
    except OSError:  # a missing attribute, or one the driver refuses to read
        return None
