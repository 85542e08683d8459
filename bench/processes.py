"""The controllers under test as child processes: socketnet (`socketnet run`) and the
baseline (bench/baseline.py), each optionally inside a network namespace.

Both are `controller.process.ControllerProcess`es (log kept, waits on what the
child prints) with the command line chosen here. Inside the lab's Open vSwitch
netns a controller listens on that netns's own 127.0.0.1, as on a real host: no
relay between the switch and it. `pid` is the controller's own process (for
VmRSS and py-spy): `ip netns exec` execs it.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from typing import Optional

from bench import stats
from controller.process import ControllerProcess, free_port, run_argv

SOCKETNET_READY = "socketnet listening"
BASELINE_READY = "baseline listening"


class Child(ControllerProcess):
    def __init__(self, command: list, ready: str, port: int):
        super().__init__(config="", port=port)
        self.command = command
        self.ready = ready

    def start(self, timeout: float = 20.0) -> "Child":
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(self.ready, timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        """VmRSS of the controller process, KiB."""
        return stats.rss_kib(self.pid)


def _netns(netns: Optional[str]) -> list:
    return ["ip", "netns", "exec", netns] if netns else []


def socketnet(config: str, netns: Optional[str] = None, port: Optional[int] = None) -> Child:
    """`socketnet run -c CONFIG` on 127.0.0.1:PORT (of `netns`, if given). Its
    metrics and REST listeners get free ports, so it never meets another one."""
    port = port or free_port()
    command = [*_netns(netns), *run_argv(config, port,
                                         "--metrics-listen", f"127.0.0.1:{free_port()}",
                                         "--rest-listen", f"127.0.0.1:{free_port()}",
                                         "--log-level", "info")]
    return Child(command, SOCKETNET_READY, port)


def baseline(netns: Optional[str] = None, port: Optional[int] = None) -> Child:
    port = port or free_port()
    command = [*_netns(netns), sys.executable, "-m", "bench.baseline",
               "--listen", f"127.0.0.1:{port}"]
    return Child(command, BASELINE_READY, port)
