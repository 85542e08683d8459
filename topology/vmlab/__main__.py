"""`python -m topology.vmlab test [PYTEST ARGS]`: the kernel-datapath suite in a VM.

Builds what is missing (see build.sh), boots the guest, prints the kernel it runs,
runs the suite there (KERNEL_SUITE unless test paths are given) with the labs on Open
vSwitch's kernel datapath and kernel WireGuard, powers the guest off and removes the
run's directory, and exits with the suite's status. `./dev test-kernel` calls it.
"""
from __future__ import annotations

import os
import sys
import time

from topology.vmlab.vm import VM, VMError

# The end-to-end proof, on the kernel datapath: the labs themselves, WireGuard, the
# whole world (W1-W6, every N-rule with real packets, also with the controller
# killed), the ofproto/trace matrix on the live tables, controller and ovs-vswitchd
# restarts, the packet-in meter and classification, host apply and its idempotence.
KERNEL_SUITE = (
    "tests/integration/test_lab.py",
    "tests/integration/test_wireguard.py",
    "tests/integration/test_world.py",
    "tests/integration/test_isolation_trace.py",
    "tests/integration/test_restart.py",
    "tests/integration/test_vswitchd_restart.py",
    "tests/integration/test_classification.py",
    "tests/integration/test_host_apply.py",
    "tests/integration/test_seed_host_routed.py",
)


def main(argv: list) -> int:
    if not argv or argv[0] != "test":
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    args = argv[1:]
    if not any(not a.startswith("-") for a in args):
        args = ["-q", *args, *KERNEL_SUITE]
    started = time.monotonic()
    try:
        with VM(f"k{os.getpid()}") as vm:
            print(f"== VM lab: {vm.image['kernel_version']}, booted in "
                  f"{vm.boot_seconds:.0f} s (QEMU, software emulation)", flush=True)
            rc = vm.suite(args)
            if rc != 0:
                print(vm.output(), file=sys.stderr)
    except VMError as e:
        print(f"VM lab: {e}", file=sys.stderr)
        return 1
    print(f"== VM lab: suite exited {rc} after {time.monotonic() - started:.0f} s in all",
          flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
