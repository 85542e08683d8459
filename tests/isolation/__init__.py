"""The isolation promise (the README's, W1-W6 and N1-N9), checked on flow tables.

    packets.py      the packet classes: what a sender on each port could put on the wire
    oracle.py       the promise as code: for a packet, the forbidden and required egress
    fake_switch.py  an OpenFlow 1.3 interpreter of socketnet Flow values, both bridges
                    and the inter-bridge link between them

The unit test (tests/unit/test_isolation_tables.py) runs every packet through
the compiler's flows with fake_switch; the integration test runs the same
packets through real Open vSwitch with ofproto/trace. Both judge with the oracle,
which is written from the promise and never from the compiler's flows.
"""
