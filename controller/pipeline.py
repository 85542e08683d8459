"""The pipeline's shape: its four tables, the zones a packet is tagged with, the cookies.

Both bridges use the same table numbers, so a flow dump reads the same way on
either:

    table 0  admit     who sent this? port security: in_port + MAC + IPv4/ARP source
                       must be the port's own; tags IPv4 with the sender's zone
                       (metadata) and sends ARP to table 3. Everything else drops.
    table 1  classify  mesh only: Netmaker ingress, privacy or management? It passes
                       the connection tracker; a connection's class is its ct_mark
    table 2  forward   where may it go? (zone, destination) -> one output port
    table 3  arp       ARP, directed to the one port that owns the target address
                       (or answered by the switch); never flooded.

Every table ends in a priority-0 drop flow with the `drop` cookie, so the
isolation drops are counted. Each table declares the match fields its flows may
use; `check_flow` enforces it, as Faucet's valve_table does.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.flow import Flow, FlowError


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    match_fields: frozenset
    doc: str


_L3 = {"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst",
       "udp_src", "udp_dst", "icmpv4_type", "icmpv4_code"}

ADMIT = Table(0, "admit", frozenset({"in_port", "eth_src", "eth_dst", "eth_type", "ipv4_src",
                                     "arp_spa", "arp_sha"}),
              "port security: the sender must be the port's own host")
_CT = {"ct_state", "ct_zone", "ct_mark"}
CLASSIFY = Table(1, "classify", frozenset({"metadata"} | _L3 | _CT),
                 "Netmaker ingress: privacy or management")
FORWARD = Table(2, "forward", frozenset({"metadata", "eth_dst"} | _L3 | _CT),
                "zone and destination to one output port")
ARP = Table(3, "arp", frozenset({"in_port", "eth_type", "arp_op", "arp_tpa"}),
            "ARP directed to the owner of the target address")
TABLES = (ADMIT, CLASSIFY, FORWARD, ARP)
TABLE_BY_ID = {t.id: t for t in TABLES}


class Zone(enum.IntEnum):
    """Who a packet speaks for, written to metadata by table 0 or 1.

    Table 2 matches on the zone, so each zone's reach is listed in one place.
    """
    MANAGEMENT = 1       # a management container, or Netmaker ingress classified management
    NETMAKER = 2         # Netmaker ingress not yet classified (mesh)
    PRIVACY_INGRESS = 3  # Netmaker ingress classified privacy (mesh), or arriving from mesh (vmbr0)
    XRAY_REPLY = 4         # the xray client's replies arriving from vmbr0 (mesh)
    XRAY_CLIENT = 5        # the xray client (vmbr0)
    PRIVACY_CONTAINER = 6  # another privacy container (vmbr0)
    WARP = 7             # arriving from the warp uplink (vmbr0)


class Mark(enum.IntEnum):
    """The ct_mark of a connection in socketnet's conntrack zone on the mesh.

    The class marks are set only by the controller's packet-out that answers a
    packet-in (controller.classifier); OUTBOUND only by the static flow that
    commits a connection a management container opens over Netmaker, and it is
    honoured on Netmaker ingress only in the reply direction."""
    UNDECIDED = 0   # no decision yet: table 1 sends it to the controller
    PRIVACY = 1     # Netmaker ingress classified privacy (W1; W3 is its reply direction)
    MANAGEMENT = 2  # Netmaker ingress classified management (W5)
    DROP = 3        # Netmaker ingress classified drop: repeats are dropped in the switch
    OUTBOUND = 4    # a management container's own connection over Netmaker (W5)


# The meters that cap packet-ins from table 1's miss (mesh): one for the sources
# the config names (other nodes, sources of privacy and management rules), one for
# everybody else, so that a flood from unknown sources cannot starve known ones.
PACKET_IN_METER = 1
KNOWN_SOURCES_METER = 2

# Cookies: the high 32 bits say "socketnet", the low bits the purpose. Flows
# whose cookie lacks the prefix are not socketnet's and are never touched.
COOKIE_PREFIX = 0x534E0000_00000000
COOKIE_MASK = 0xFFFFFFFF_00000000


class Purpose(enum.IntEnum):
    ADMIT = 0x01          # table 0: a port's own sender, let in
    DROP = 0x02           # every table's last flow: isolation drops
    FORGED = 0x03         # table 0: forged sources, dropped explicitly
    CLASSIFY = 0x10       # table 1: proactive classification
    CLASSIFIED = 0x11     # table 1: a connection's class, by its ct_mark (one flow per class)
    BLOCKED = 0x12        # table 1: reactive, a source over its cap, dropped for a while
    CONNTRACK = 0x13      # tables 1, 2: into the connection tracker, back with its state
    INVALID = 0x14        # tables 1, 2: invalid connection state (+inv), dropped
    REPLY = 0x15          # table 1: replies to a management container's own connections
    MANAGEMENT = 0x20     # table 2: management forwarding (W5)
    PRIVACY = 0x21        # table 2: across the inter-bridge link (W1, W3)
    WARP = 0x22           # table 2: privacy containers to and from warp (W2, W4)
    ARP = 0x30            # table 3: directed ARP (W6)
    ARP_RESPONDER = 0x31  # table 3: the switch answers ARP itself

    @property
    def cookie(self) -> int:
        return COOKIE_PREFIX | self.value

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


def owns(cookie: int) -> bool:
    return cookie & COOKIE_MASK == COOKIE_PREFIX


def purpose_of(cookie: int) -> Purpose | None:
    if not owns(cookie):
        return None
    try:
        return Purpose(cookie & ~COOKIE_MASK)
    except ValueError:
        return None


def check_flow(flow: Flow) -> Flow:
    """Reject a flow that does not fit its table's declared match fields."""
    table = TABLE_BY_ID.get(flow.table)
    if table is None:
        raise FlowError(f"table {flow.table} is not in the pipeline: {flow}")
    extra = set(flow.match_dict) - table.match_fields
    if extra:
        raise FlowError(f"table {table.name} does not match on {sorted(extra)}: {flow}")
    if not owns(flow.cookie):
        raise FlowError(f"cookie {flow.cookie:#x} is not socketnet's: {flow}")
    return flow
