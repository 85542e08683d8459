"""How long the pipeline takes to come back after ovs-vswitchd restarts.

    sudo .venv/bin/python -m bench.vswitchd_restart [--runs 5]

Builds the seed's lab, attaches socketnet, then restarts ovs-vswitchd RUNS times.
For each restart it reports the time from the switch's connection to socketnet's
barrier-confirmed sync (from socketnet's own log), and as the baseline, measured
in the same run on the same switch, how long `ovs-ofctl add-meter` and
`ovs-ofctl --bundle replace-flows` take to install the identical meter and flow set
from a file (Open vSwitch's own ceiling for an atomic install, with no controller
logic at all).
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from controller.compiler import packet_in_meters
from controller.process import ControllerProcess
from topology.config import load_host
from topology.labs.lab import Lab

SEED = str(Path(__file__).resolve().parents[1] / "topology" / "seed.yaml")
_SYNC_MS = re.compile(r"pipeline in sync \((\d+) to add.*\) in ([\d.]+) ms")
_STAMP = re.compile(r"^(\d+-\d+-\d+ \d+:\d+:\d+,\d+)")


def _stamp(line: str) -> float:
    day, clock = _STAMP.match(line).group(1).split(" ")
    hms, ms = clock.split(",")
    h, m, s = map(int, hms.split(":"))
    return h * 3600 + m * 60 + s + int(ms) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    host = load_host(SEED)
    ours, baseline, flows = [], [], 0
    with Lab(host, f"bench-{int(time.time()) % 100000}") as lab, ControllerProcess(SEED) as ctl:
        lab.attach(ctl.target)
        ctl.wait_synced(["mesh", "vmbr0"])
        for _ in range(args.runs):
            mark = ctl.mark()
            lab.ovs.restart_vswitchd()
            ctl.wait_synced(["mesh", "vmbr0"], timeout=30, after=mark)
            lines = ctl.lines[mark:]
            connected = [_stamp(l) for l in lines if "connected from" in l]
            synced = [_stamp(l) for l in lines if _SYNC_MS.search(l)]
            ours.append((max(synced) - min(connected)) * 1000)
            flows = sum(int(_SYNC_MS.search(l).group(1)) for l in lines if _SYNC_MS.search(l))
        # Baseline: the same flows, installed by ovs-ofctl in one bundle per bridge.
        dumps = {b.name: lab.ovs.dump_flows(b.name, names=False, stats=False)
                 for b in host.bridges}
        ctl.stop()
        for _ in range(args.runs):
            lab.ovs.restart_vswitchd()
            elapsed = 0.0
            for bridge, lines in dumps.items():
                with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as f:
                    f.write("\n".join(lines) + "\n")
                started = time.monotonic()
                if bridge == host.mesh.name:  # the packet-in meters table 1 refers to
                    for mid, (rate, burst) in packet_in_meters(host).items():
                        lab.ovs.ofctl("add-meter", bridge, f"meter={mid},pktps,burst,stats,"
                                      f"bands=type=drop,rate={rate},burst_size={burst}")
                lab.ovs.ofctl("--bundle", "replace-flows", bridge, f.name)
                elapsed += time.monotonic() - started
            baseline.append(elapsed * 1000)
    o, b = statistics.median(ours), statistics.median(baseline)
    print(f"flows restored per restart: {flows} (both bridges), runs: {args.runs}")
    print(f"{'':38}{'median ms':>10}{'min':>8}{'max':>8}")
    print(f"{'socketnet: connect -> barrier-confirmed':38}{o:10.1f}{min(ours):8.1f}{max(ours):8.1f}")
    print(f"{'ovs-ofctl --bundle replace-flows':38}{b:10.1f}{min(baseline):8.1f}{max(baseline):8.1f}")
    print(f"ratio socketnet / ovs-ofctl: {o / b:.2f}")


if __name__ == "__main__":
    main()
