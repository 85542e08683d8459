"""The kernel-datapath VM lab, host side: build, boot, run commands in, power off.

This machine's kernel has neither openvswitch nor wireguard; Debian's does. A VM
boots Debian 12's own kernel under QEMU (software emulation, `-accel tcg`: no usable
KVM here) on a root that `build.sh` made from Debian's packages, and the labs and
tests run inside it on Open vSwitch's kernel datapath with kernel WireGuard
(`SOCKETNET_LAB_DATAPATH=system`).

    VM(name).up() / .down(), or `with`     boot (building what is missing), power off
    vm.run(argv, input=, timeout=, env=)   a command in the guest -> CompletedProcess
    vm.suite(pytest_args) -> exit status   the test suite in the guest, output streamed
    vm.stream(argv) -> exit status         any command so (the benches)

What a VM is made of, and where:
- the cache (`build.sh`; /var/cache/socketnet/vmlab, or $SOCKETNET_VM_CACHE): the
  kernel, the root and the initramfs, shared by every run, never written by one (the
  guest mounts the root read-only, under a tmpfs overlay);
- the run's directory, /run/socketnet/vmlab/<name> (mode 0700): the agent's token,
  QEMU's pidfile, the guest's console and logs, the suite's output; shared with the
  guest as /vm. `down()` removes it, and stops QEMU by the PID it wrote there.
- the checkout, shared read-only as /src: the guest runs this very code.

The guest reaches nothing but the host's loopback (QEMU's user network, 10.0.2.2; it
has no default route) and the host reaches the guest only through the agent's port,
forwarded from 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from controller.process import free_port
from topology.system import process_alive, process_cmdline, wait_until

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]
RUN_ROOT = "/run/socketnet/vmlab"
AGENT_PORT = 7000  # in the guest
BOOT_TIMEOUT = 180.0
GUEST_PYTHONPATH = "/src:/opt/socketnet/site"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}")


class VMError(RuntimeError):
    """The VM could not be built, booted or reached; the message says which, with the
    guest's own output where there is some."""


def build(python: str = sys.executable) -> dict:
    """Run build.sh (a no-op when the cache is complete): {"kernel_version", "kernel",
    "initrd", "root", "packages"}."""
    proc = subprocess.run(["bash", str(HERE / "build.sh"), python], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise VMError(f"building the VM lab failed:\n{proc.stderr.strip()}")
    sys.stderr.write(proc.stderr)
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    missing = {"kernel_version", "kernel", "initrd", "root", "packages"} - set(found)
    if missing:
        raise VMError(f"build.sh printed no {', '.join(sorted(missing))}:\n{proc.stdout}")
    return found


class VM:
    """One booted guest, named `name` (unique among the VMs running on the machine:
    it names the run's directory)."""

    def __init__(self, name: str, memory_mb: int = 3072, cpus: int = 2, init: str = "tini"):
        if not _NAME.fullmatch(name):
            raise VMError(f"VM name {name!r}: up to 31 letters, digits, '-', '_', '.'")
        self.name = name
        self.memory_mb = memory_mb
        self.cpus = cpus
        if init not in ("tini", "systemd"):
            raise VMError(f"VM init {init!r}: tini or systemd")
        self.init = init
        self.dir = os.path.join(RUN_ROOT, name)
        self.port: Optional[int] = None
        self.token = ""
        self.image: dict = {}
        self.proc: Optional[subprocess.Popen] = None
        self.boot_seconds: Optional[float] = None
        self._qemu_pid: Optional[int] = None

    def __enter__(self) -> "VM":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- lifecycle -------------------------------------------------------------------

    def up(self) -> "VM":
        if os.path.exists(self.dir):
            raise VMError(f"{self.dir} exists: a VM named {self.name!r} runs, or a stale "
                          f"one (remove the directory once its QEMU is gone)")
        self.image = build()
        os.makedirs(RUN_ROOT, exist_ok=True)
        os.mkdir(self.dir, 0o700)
        try:
            self._boot()
        except BaseException:
            self.down()
            raise
        return self

    def _boot(self) -> None:
        self.token = secrets.token_hex(16)
        with open(os.path.join(self.dir, "token"), "w") as f:
            f.write(self.token + "\n")
        self.port = free_port()
        started = time.monotonic()
        with open(os.path.join(self.dir, "qemu.log"), "ab") as log:
            self.proc = subprocess.Popen(self._qemu_argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)

        def agent_answers():
            if self.proc.poll() is not None:
                raise VMError(f"QEMU exited {self.proc.returncode} while booting\n"
                              f"{self.output()}")
            try:
                return self.run(["true"], timeout=5).returncode == 0
            except OSError:
                return False
        try:
            wait_until(agent_answers, BOOT_TIMEOUT, f"VM {self.name}'s agent", interval=0.5)
        except TimeoutError as e:
            raise VMError(f"{e}\n{self.output()}") from None
        self.boot_seconds = time.monotonic() - started

    def _qemu_argv(self) -> list:
        img = self.image

        def share(path, tag, readonly=True):
            return ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none"
                    + (",readonly=on" if readonly else "")]
        return [
            "qemu-system-x86_64", "-name", f"socketnet-{self.name}",
            "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(self.cpus),
            "-m", str(self.memory_mb), "-display", "none", "-no-reboot", "-monitor", "none",
            "-kernel", img["kernel"], "-initrd", img["initrd"],
            "-append", "console=ttyS0 panic=-1 quiet"
                       + (" vmlab.init=systemd net.ifnames=0" if self.init == "systemd"
                          else ""),
            *share(img["root"], "root"), *share(SRC, "src"), *share(self.dir, "run", False),
            "-nic", f"user,model=virtio-net-pci,"
                    f"hostfwd=tcp:127.0.0.1:{self.port}-:{AGENT_PORT}",
            "-serial", f"file:{self.dir}/console.log",
            "-pidfile", f"{self.dir}/qemu.pid",
        ]

    def down(self) -> None:
        """Power the guest off (QEMU exits), stop QEMU by its PID if it does not, remove
        the run's directory. Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._request({"poweroff": True}, timeout=5)
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                if self.dir in process_cmdline(self.proc.pid):
                    self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._qemu_pid = self.proc.pid
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list:
        """What of this VM is still there after `down()` (nothing, normally)."""
        left = [self.dir] if os.path.exists(self.dir) else []
        pid = self._qemu_pid
        if pid is not None and process_alive(pid) and self.dir in process_cmdline(pid):
            left.append(f"QEMU (pid {pid})")
        return left

    # -- the agent -----------------------------------------------------------------

    def _request(self, req: dict, timeout: Optional[float]) -> dict:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.settimeout(None if timeout is None else timeout + 10)
            f = s.makefile("rwb")
            f.write(f"{self.token}\n{json.dumps(req)}\n".encode())
            f.flush()
            line = f.readline()
        if not line:
            raise ConnectionError(f"VM {self.name}'s agent closed the connection")
        return json.loads(line)

    def run(self, argv: Sequence[str], input: Optional[str] = None,
            timeout: Optional[float] = 60.0, env: Optional[dict] = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """`argv` in the guest (from /src, as root), like subprocess.run(text=True)."""
        reply = self._request({"argv": list(argv), "input": input, "timeout": timeout,
                               "env": dict(env or {})}, timeout)
        proc = subprocess.CompletedProcess(list(argv), reply["rc"], reply["stdout"],
                                           reply["stderr"])
        if reply.get("timeout"):
            raise subprocess.TimeoutExpired(list(argv), timeout, reply["stdout"],
                                            reply["stderr"])
        if check and proc.returncode != 0:
            raise VMError(f"in VM {self.name}: {' '.join(argv)} exited {proc.returncode}: "
                          f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # -- what it says ----------------------------------------------------------------

    def output(self, lines: int = 40) -> str:
        """The tail of the guest's console and of its init's log."""
        parts = []
        for name in ("console.log", "guest.log", "qemu.log"):
            try:
                text = Path(self.dir, name).read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                tail = "\n".join(text.splitlines()[-lines:])
                parts.append(f"--- {name} (tail) ---\n{tail}")
        return "\n".join(parts) or "(the guest printed nothing)"

    def suite(self, pytest_args: Sequence[str], timeout: float = 1200.0, out=sys.stdout) -> int:
        """The test suite in the guest with the labs on the kernel datapath; its
        output, then what the tests reported (`report`), streamed to `out`; its exit
        status."""
        report = Path(self.dir, "report.txt")
        rc = self.stream(["python3", "-m", "pytest", "-p", "no:cacheprovider", *pytest_args],
                         timeout, out, {"SOCKETNET_LAB_REPORT": "/vm/report.txt"})
        if report.exists():
            out.write(report.read_text())
        return rc

    def stream(self, argv: Sequence[str], timeout: float = 1200.0, out=sys.stdout,
               env: Optional[dict] = None) -> int:
        """`argv` in the guest with socketnet's Python path and the labs on the kernel
        datapath, its output streamed to `out` as it comes; its exit status."""
        log = os.path.join(self.dir, "stream.log")
        open(log, "w").close()
        env = {"PYTHONPATH": GUEST_PYTHONPATH, "PYTHONDONTWRITEBYTECODE": "1",
               "SOCKETNET_LAB_DATAPATH": "system", "CI": os.environ.get("CI", ""),
               **(env or {})}
        shell = "exec " + " ".join(_quote(a) for a in argv) + " >/vm/stream.log 2>&1"
        done = threading.Event()
        result: dict = {}

        def wait():
            try:
                result["proc"] = self.run(["sh", "-c", shell], timeout=timeout, env=env)
            except BaseException as e:  # handed to the caller below
                result["error"] = e
            finally:
                done.set()
        threading.Thread(target=wait, daemon=True).start()
        with open(log, errors="replace") as f:
            while True:
                finished = done.wait(0.5)
                chunk = f.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                if finished:
                    break
        if "error" in result:
            raise VMError(f"{argv[0]} in VM {self.name} did not finish: {result['error']}\n"
                          f"{self.output()}")
        return result["proc"].returncode


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"
