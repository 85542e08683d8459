"""The VM lab: socketnet on Open vSwitch's kernel datapath and kernel WireGuard.

    python -m topology.vmlab test [PYTEST ARGS]    the kernel-datapath suite
    python -m topology.vmlab bench [BENCH ARGS]    bench.classifier in the guest

Each builds what is missing (see build.sh), boots a guest of its own, prints the
kernel it runs, runs the suite (KERNEL_SUITE unless test paths are given) or the
bench there with the labs on the kernel datapath, powers the guest off, removes the
run's directory, and exits with the status of what it ran. `./dev test-kernel` and
`./dev bench-kernel` call it.
"""
from __future__ import annotations

import os
import sys
import time

from topology.vmlab.vm import VM, VMError

# The end-to-end proof, on the kernel datapath: the labs themselves, WireGuard, the
# whole world (W1-W6, every N-rule with real packets, also with the controller
# killed), the ofproto/trace matrix on the live tables, controller and ovs-vswitchd
# restarts, the packet-in meter, classification with real TCP, host apply and its
# idempotence. Not here, each for its reason:
# - test_seed_host_routed: the routed host with its uplinks and host apply, which
#   test_world runs whole (every probe of it and more);
# - test_flood: its 30 s flood through WireGuard measures the userspace datapath's
#   and wireguard-go's queues; under emulation the guest's CPU, not the design, is
#   what would be flooded (the meter's own test runs here);
# - test_metrics (a real Prometheus), test_rest, test_tls, test_standby,
#   test_reload, test_malformed_openflow, test_controller, test_lab_cli: the
#   controller's side of OpenFlow, the same whatever datapath the switch has.
KERNEL_SUITE = (
    "tests/integration/test_lab.py",
    "tests/integration/test_wireguard.py",
    "tests/integration/test_world.py",
    "tests/integration/test_isolation_trace.py",
    "tests/integration/test_restart.py",
    "tests/integration/test_vswitchd_restart.py",
    "tests/integration/test_packet_in_meter.py",
    "tests/integration/test_classification.py",
    "tests/integration/test_host_apply.py",
)
EMULATED = ("== EMULATED: the guest's CPU is QEMU's software emulation; absolute figures "
            "mean little, ratios within this run do")


def main(argv: list) -> int:
    if not argv or argv[0] not in ("test", "bench"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    what, args = argv[0], argv[1:]
    if what == "test" and not any(not a.startswith("-") for a in args):
        args = ["-q", *args, *KERNEL_SUITE]
    started = time.monotonic()
    try:
        with VM(f"k{os.getpid()}") as vm:
            print(f"== VM lab: {vm.image['kernel_version']}, booted in "
                  f"{vm.boot_seconds:.0f} s (QEMU, software emulation)", flush=True)
            if what == "test":
                rc = vm.suite(args)
            else:
                print(EMULATED, flush=True)
                rc = vm.stream(["python3", "-m", "bench.classifier", *args])
                print(EMULATED, flush=True)
            if rc != 0:
                print(vm.output(), file=sys.stderr)
    except VMError as e:
        print(f"VM lab: {e}", file=sys.stderr)
        return 1
    print(f"== VM lab: {what} exited {rc} after {time.monotonic() - started:.0f} s in all",
          flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
