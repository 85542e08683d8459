"""This machine, as labs, tests and host provisioning use it: finding a binary,
waiting on a condition, a command in a network namespace, a process by its PID
(alive, its command line, stopped only if it is still the one started), and
whether a process's namespace has a socket listening.

No Open vSwitch here (`topology/labs/ovs.py`), nothing socketnet-specific: the
shared ground under the host's provisioning and the labs.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from typing import Callable, Optional, Sequence

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class ProcessError(RuntimeError):
    """A process would not stop; the message names its PID and what it was."""


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.01):
    """Poll `predicate` until it returns something truthy and return that; raise
    TimeoutError naming `what` after `timeout` seconds. The only way this package
    waits: on a condition, never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def binary(name: str) -> Optional[str]:
    """Path of an executable, looking in the sbin directories too (a non-login root
    shell may not have them on PATH)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


def in_netns(ns: str, cmd: Sequence[str]) -> list:
    """`ip netns exec NS CMD`, with CMD's program found in the sbin dirs too."""
    return [binary("ip") or "ip", "netns", "exec", ns, binary(cmd[0]) or cmd[0], *cmd[1:]]


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def process_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def stop_process(pid: int, marker: str, timeout: float = 5.0, group: bool = False) -> None:
    """Stop a process this package started: SIGTERM, wait, SIGKILL. `marker` must
    appear in its command line, so a recycled PID is never signalled. With `group`,
    signal the process group it leads (a forking relay and its children)."""
    if not process_alive(pid) or marker not in process_cmdline(pid):
        return
    send = os.killpg if group else os.kill
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            send(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not process_alive(pid), timeout, f"pid {pid} to exit")
            return
        except TimeoutError:
            continue
    raise ProcessError(f"pid {pid} ({marker}) survived SIGKILL")


# --------------------------------------------------------------------------- trace


def listening_tcp(pid: int, port: int, address: str = "127.0.0.1") -> bool:
    """A TCP socket listens on address:port in the network namespace of `pid`."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return any(cols[1] == want and cols[3] == "0A"
                       for cols in (line.split() for line in f.readlines()[1:]))
    except OSError:
        return False


def listening_unix(pid: int, path: str) -> bool:
    """A unix socket listens on PATH (flags __SO_ACCEPTCON)."""
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            return any(line.split()[-1] == path and line.split()[3] == "00010000"
                       for line in f.readlines()[1:] if len(line.split()) >= 8)
    except OSError:
        return False
