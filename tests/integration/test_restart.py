"""A controller restart (SIGTERM, then kill -9) loses nothing: established privacy
and management traffic keeps flowing the whole time, and the controller that comes
back changes nothing that did not change."""
import signal
import subprocess

import pytest

from topology.labs.lab import HOST

from controller.pipeline import Mark
from topology.system import wait_until

from tests.integration.test_classification import (DROPLET, XRAY, XRAY_PORT, connections,
                                                   netmaker_side, tcp_counters)

# A privacy stream: the droplet sends to the xray client for as long as it runs,
# reading back what the server echoes; it prints the bytes that made the round trip.
STREAM = """
import socket, sys, time
c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5,
                             source_address=(sys.argv[1], 0))
chunk, total, until = b"x" * 1000, 0, time.monotonic() + float(sys.argv[4])
while time.monotonic() < until:
    c.sendall(chunk)
    got = 0
    while got < len(chunk):
        got += len(c.recv(len(chunk) - got))
    total += got
    time.sleep(0.005)
print(total)
"""

ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
print("listening", flush=True)
def echo(c):
    while True:
        data = c.recv(65536)
        if not data:
            return
        c.sendall(data)
while True:
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

SECONDS = 6


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_established_flows_keep_forwarding_without_loss_across_a_restart(lab, controller, how):
    ctl = controller()
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])
    netmaker_side(lab, DROPLET)
    server = lab.popen("102", "python3", "-c", ECHO, XRAY, str(XRAY_PORT),
                       stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening"
    api = str(lab.host.mesh.port("veth201").container.address)
    lab.exec("200", "ping", "-c", "1", "-W", "2", api, check=True)  # ARP resolved first
    before = tcp_counters(lab)

    privacy = lab.popen(HOST, "python3", "-c", STREAM, DROPLET, XRAY, str(XRAY_PORT),
                        str(SECONDS), stdout=subprocess.PIPE, text=True)
    pings = int(SECONDS / 0.02)
    management = lab.popen("200", "ping", "-q", "-i", "0.02", "-c", str(pings), "-W", "1", api,
                           stdout=subprocess.PIPE, text=True)
    # Restart only once the stream is established: its decision is in the tracker.
    wait_until(lambda: any(c.dst == XRAY and c.mark == Mark.PRIVACY for c in connections(lab)),
               10, "the privacy stream's connection, decided")
    ctl.stop(how)
    ctl2 = controller(port=ctl.port)
    counts = ctl2.wait_synced(["mesh", "vmbr0"], timeout=30)

    out, _ = privacy.communicate(timeout=SECONDS + 20)
    assert privacy.returncode == 0 and int(out) > 0, out
    summary, _ = management.communicate(timeout=SECONDS + 20)
    assert f"{pings} packets transmitted, {pings} received" in summary, summary
    # Nothing lost: every segment sent again had arrived (the receiver said so
    # with a D-SACK). A slow machine's stall can fire a retransmission timer
    # with nothing lost; a segment the switch dropped is not reported back.
    after = tcp_counters(lab)
    again, duplicates = (after[k] - before[k] for k in ("RetransSegs", "TCPDSACKRecv"))
    assert again <= duplicates, f"{again} segment(s) sent again, {duplicates} reported " \
                                f"as duplicates"
    assert all(c["add"] == 0 and c["delete"] == 0 for c in counts.values()), counts
