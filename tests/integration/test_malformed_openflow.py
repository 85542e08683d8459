"""A peer speaking malformed OpenFlow loses its own connection and nothing else:
the controller keeps serving the real bridges."""
import socket
import struct

import pytest

OFP_VERSION = 4
HELLO = struct.pack("!BBHI", OFP_VERSION, 0, 8, 1)

GARBAGE = {
    "length shorter than a header": struct.pack("!BBHI", OFP_VERSION, 2, 4, 2) + b"\0" * 4,
    "unknown message type": struct.pack("!BBHI", OFP_VERSION, 200, 16, 3) + b"\xff" * 8,
    "truncated features reply": struct.pack("!BBHI", OFP_VERSION, 6, 12, 4) + b"\x01" * 4,
    "packet-in with a broken match": struct.pack("!BBHI", OFP_VERSION, 10, 40, 5)
    + struct.pack("!IHBBQ", 0xFFFFFFFF, 0, 0, 1, 0) + struct.pack("!HH", 1, 200) + b"\xee" * 12,
}


def closed_by_peer(sock, timeout=10.0) -> bool:
    """Whether the controller closes the connection (reading what it sends first)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("what", sorted(GARBAGE))
def test_a_peer_speaking_malformed_openflow_loses_only_its_own_connection(attached, what):
    lab, ctl = attached
    with socket.create_connection(("127.0.0.1", ctl.port), timeout=5) as peer:
        peer.sendall(HELLO + GARBAGE[what] + b"\x04" * 64)
        assert closed_by_peer(peer), f"the controller kept a peer that sent {what}"
    assert ctl.proc.poll() is None
    # The real bridges are still served: a port change is still followed.
    mark = ctl.mark()
    lab.remove_port("mesh", "veth201")
    ctl.wait_synced(["mesh"], after=mark)
