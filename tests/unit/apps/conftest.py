"""What the tests of the os-ken shell share: a switch connection without a switch.

    connect(dpid)   fixture: a factory of Connections, each standing for one os-ken
                    Datapath (one TCP connection of a switch): OpenFlow 1.3's
                    parser, an xid sequence of its own and a `state`. What is sent
                    is kept in `sent`, and handed to `answer(msg)` when a test sets
                    it (the switch's side, answering at once); `reply(msg, cls,
                    **fields)` builds an os-ken reply of class `cls` to msg.
"""
from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser


class Connection:
    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, dpid: int, port: int = 40000, xid: int = 1000):
        self.id = dpid
        self.address = ("192.0.2.1", port)
        self.xid = xid
        self.is_active = True
        self.state = "main"
        self.sent = []
        self.answer = None

    def set_xid(self, msg):
        self.xid = (self.xid + 1) & ofp.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg) -> bool:
        self.sent.append(msg)
        if self.answer is not None:
            self.answer(msg)
        return True

    def reply(self, msg, cls, **fields):
        reply = cls(self, **fields)
        reply.xid = msg.xid
        return reply

    def __repr__(self):
        return f"Connection({self.id:#x} from port {self.address[1]})"


@pytest.fixture
def connect():
    return Connection
