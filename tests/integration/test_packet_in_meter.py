"""The packet-in meter holds on the switch's own datapath: a burst of new Netmaker
flows far above `limits.packet_in_rate` reaches socketnet only at the meter's rate,
the rest is dropped by Open vSwitch before it costs the controller anything. Runs on
the userspace datapath here and on the kernel's in the VM lab, whose meters are the
kernel module's."""
import textwrap
import time

import yaml

from controller.pipeline import PACKET_IN_METER
from topology.labs.lab import HOST
from topology.system import wait_until

from tests.integration.conftest import SEED_YAML
from tests.integration.test_classification import OTHER_PEER, XRAY, netmaker_side

RATE, BURST, FLOWS = 50, 10, 1500

# One UDP datagram from each of FLOWS source ports: FLOWS new flows, each a table-1
# miss; prints how long sending took.
SEND = textwrap.dedent("""
    import socket, sys, time
    source, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = time.monotonic()
    for port in range(20000, 20000 + count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, port))
        s.sendto(b"new flow", (target, 9999))
        s.close()
    print(f"{time.monotonic() - started:.3f}")
""")


def meter_stats(lab, meter: int) -> tuple:
    """(packets that entered the meter, packets its band dropped)."""
    text = lab.ovs.ofctl("meter-stats", "mesh", f"meter={meter}")
    stats = text.split(f"meter:{meter}", 1)[1]
    entered = int(stats.split("packet_in_count:", 1)[1].split()[0])
    dropped = int(stats.split("0: packet_count:", 1)[1].split()[0])
    return entered, dropped


def test_new_flows_above_the_rate_reach_the_controller_only_at_the_meters_rate(
        lab, controller, tmp_path):
    doc = yaml.safe_load(SEED_YAML.read_text())
    doc["socketnet"]["classification"]["limits"].update(packet_in_rate=RATE,
                                                        packet_in_burst=BURST)
    config = tmp_path / "metered.yaml"
    config.write_text(yaml.safe_dump(doc))
    ctl = controller(str(config))
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])
    netmaker_side(lab, OTHER_PEER)  # a source no rule names: the packet-in meter's lane
    before = meter_stats(lab, PACKET_IN_METER)

    started = time.monotonic()
    sent = lab.exec(HOST, "python3", "-c", SEND, OTHER_PEER, XRAY, str(FLOWS), check=True,
                    timeout=120)
    reads = [meter_stats(lab, PACKET_IN_METER)]

    def settled():  # the last of the burst has reached the meter
        reads.append(meter_stats(lab, PACKET_IN_METER))
        return reads[-1] == reads[-2]
    wait_until(settled, 10, "the packet-in meter's counters to settle", interval=0.1)
    entered, dropped = (now - then for now, then in zip(reads[-1], before))
    elapsed = time.monotonic() - started

    assert float(sent.stdout) < FLOWS / RATE / 2, "the burst was not above the rate"
    # A token bucket: at most the rate for the time it ran, plus the burst (and one
    # second of slack for the rounding of both).
    allowed = RATE * (elapsed + 1) + BURST
    # Most of the burst reached the meter as table-1 misses (the userspace datapath
    # may lose some at the adapter's queue), far more than it may let through.
    assert entered >= FLOWS // 2 and entered > 2 * allowed, (entered, dropped, elapsed)
    assert 0 < entered - dropped <= allowed, (entered, dropped, elapsed)
