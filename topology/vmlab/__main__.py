"""The VM lab: socketnet on Open vSwitch's kernel datapath and kernel WireGuard.

    python -m topology.vmlab test [PYTEST ARGS]    the kernel-datapath suite
    python -m topology.vmlab bench [BENCH ARGS]    bench.classifier in the guest

Each builds what is missing (see build.sh), boots guests of their own, prints the
kernel they run, runs the suite or the bench there with the labs on the kernel
datapath, powers the guests off, removes their run directories, and exits with the
status of what it ran. The suite (KERNEL_SUITE unless test paths are given) runs in
two guests at once, a half each (a guest keeps about one core busy: its test
process and controllers are mostly serial); each half's output is printed when it
ends. Then SYSTEMD_SUITE runs in a guest booted with systemd as PID 1 (test paths
from it given: that guest alone). `./dev test-kernel` and `./dev bench-kernel` call it.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import sys
import time

from topology.vmlab.vm import VM, VMError

# The end-to-end proof, on the kernel datapath: the labs themselves, WireGuard, the
# whole world (W1-W6, every N-rule with real packets, also with the controller
# killed), the ofproto/trace matrix on the live tables, controller and ovs-vswitchd
# restarts, the packet-in meter, classification with real TCP (also on a host
# unlike the seed), host apply and its idempotence; in two halves of about the
# same time (~300 s each, measured).
KERNEL_SUITE = (
    ("tests/integration/test_world.py",
     "tests/integration/test_restart.py",
     "tests/integration/test_lab.py",
     "tests/integration/test_other_host.py"),
    ("tests/integration/test_isolation_trace.py",
     "tests/integration/test_classification.py",
     "tests/integration/test_host_apply.py",
     "tests/integration/test_vswitchd_restart.py",
     "tests/integration/test_packet_in_meter.py",
     "tests/integration/test_wireguard.py"),
)
# socketnet's systemd units started by a real systemd: in a guest of its own, booted
# with systemd as PID 1, after the halves.
SYSTEMD_SUITE = ("tests/integration/test_units_systemd.py",)
# The integration modules that do not run there, each with its reason (printed by
# every run; a test fails when a module is in none of the lists).
NOT_ON_THE_KERNEL_DATAPATH = {
    "tests/integration/test_seed_host_routed.py":
        "the routed host with its uplinks and host apply, which test_world runs whole",
    "tests/integration/test_flood.py":
        "its 30 s flood measures the userspace datapath's and wireguard-go's queues; "
        "under emulation the guest's CPU is what would be flooded (the meter's own "
        "test runs)",
    "tests/integration/test_healing.py":
        "what differs with the datapath runs here in test_units_systemd: after a power "
        "cut the Netmaker interface and warp0 are made anew as kernel WireGuard "
        "interfaces and the kernel datapath's ports come back, healed by the shipped "
        "unit under systemd; the rest (each interface alone, 30 s away, a config reload, "
        "five boot orders, nothing else touched) is the watcher's logic, the same on "
        "either datapath, and would add ~9 min of emulated time",
    "tests/integration/test_other_world.py":
        "the world's wiring on a host unlike the seed; what the kernel datapath does "
        "on that host runs here in test_other_host (real packets) and test_isolation_trace "
        "(the live matrix), and the whole world on the kernel datapath in test_world",
    "tests/integration/test_lab_cli.py":
        "`socketnet lab` as separate processes, two worlds side by side: the command's "
        "process handling, whose world test_world runs on the kernel datapath",
    **{f"tests/integration/{module}.py":
       "the controller's side of OpenFlow, the same whatever datapath the switch has"
       for module in ("test_metrics", "test_rest", "test_tls", "test_standby", "test_reload",
                      "test_malformed_openflow", "test_controller")},
}
EMULATED = ("== EMULATED: the guest's CPU is QEMU's software emulation; absolute figures "
            "mean little, ratios within this run do")


_LIVE: list = []  # the VMs of this run, powered off on SIGTERM


def _stop(signum, frame):
    for vm in list(_LIVE):
        vm.down()
    sys.exit(128 + signum)


def _in_a_vm(name: str, what: str, args: list, out, cpus: int = 2, init: str = "tini") -> int:
    """Boot a guest (`init`: tini, or systemd as PID 1), run `what` there, power it
    off; its exit status (1 when the VM itself failed or left something behind)."""
    vm = VM(name, cpus=cpus, init=init)
    _LIVE.append(vm)
    try:
        with vm:
            print(f"== VM lab {name}: {vm.image['kernel_version']}, {init} as init, booted in "
                  f"{vm.boot_seconds:.0f} s (QEMU, software emulation); in the guest: "
                  f"{vm.image['packages']}", file=out, flush=True)
            if what == "test":
                rc = vm.suite(args, out=out)
            else:
                print(EMULATED, file=out, flush=True)
                rc = vm.stream(["python3", "-m", "bench.classifier", *args], out=out)
                print(EMULATED, file=out, flush=True)
            if rc != 0:
                print(vm.output(), file=out)
    except VMError as e:
        print(f"VM lab {name}: {e}", file=out)
        return 1
    left = vm.leftovers()
    if left:
        print(f"VM lab {name}: left behind: {', '.join(left)}", file=out)
        return 1
    print(f"== VM lab {name}: {what} exited {rc}; {vm.dir} removed, QEMU gone", file=out)
    return rc


def main(argv: list) -> int:
    if not argv or argv[0] not in ("test", "bench"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    what, args = argv[0], argv[1:]
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    if what == "bench" or any(not a.startswith("-") for a in args):
        systemd = any(a.split("::")[0] in SYSTEMD_SUITE for a in args)
        rc = _in_a_vm(f"k{os.getpid()}", what, args, sys.stdout,
                      init="systemd" if systemd else "tini")
    else:
        for module, why in NOT_ON_THE_KERNEL_DATAPATH.items():
            print(f"== not on the kernel datapath: {module}: {why}", flush=True)
        with concurrent.futures.ThreadPoolExecutor(len(KERNEL_SUITE)) as pool:
            runs = []
            for i, half in enumerate(KERNEL_SUITE):
                out = io.StringIO()
                # One vCPU each: two guests of two software-emulated vCPUs on two
                # cores stall each other (measured: slower than one guest, tests
                # timing out).
                runs.append((pool.submit(_in_a_vm, f"k{os.getpid()}{'ab'[i]}", what,
                                         ["-q", *args, *half], out, 1), out))
            codes = []
            for future, out in runs:
                codes.append(future.result())
                sys.stdout.write(out.getvalue())
                sys.stdout.flush()
        codes.append(_in_a_vm(f"k{os.getpid()}s", what, ["-q", *args, *SYSTEMD_SUITE],
                              sys.stdout, init="systemd"))
        rc = next((c for c in codes if c != 0), 0)
    print(f"== VM lab: {what} exited {rc} after {time.monotonic() - started:.0f} s in all",
          flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
