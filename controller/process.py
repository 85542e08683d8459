"""The controller as a child process: the one class for the labs and worlds, the
tests and bench/.

`ControllerProcess(config, port).start()` runs `socketnet run` on
127.0.0.1:PORT, keeps its output (through a pipe, or appended to a log file
with the child in a session of its own so that it outlives its starter, as a
lab's controllers do), and lets the caller wait on what the controller itself
reports (listening, a bridge's pipeline in sync) rather than on time.
`topology.labs.nodes.Controller` adds a world's names, ports and debugging setup.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

# A sync line of the controller log: which bridge, and what was added, deleted, kept.
SYNC_LINE = re.compile(r"(?P<bridge>\S+): pipeline in sync \((?P<add>\d+) to add, "
                   r"(?P<delete>\d+) to delete, (?P<unchanged>\d+) unchanged\)")


def run_argv(config: str, port: int, *options: str) -> list:
    """`socketnet run -c CONFIG` on 127.0.0.1:PORT with `options`, through this
    interpreter (what tests, labs and benches start)."""
    return [sys.executable, "-c", "from controller.cli.main import main; main()", "run",
            "-c", config, "--ofp-listen", f"127.0.0.1:{port}", *options]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControllerProcess:
    """`socketnet run -c CONFIG` on 127.0.0.1:PORT as a child process, its output
    kept as `lines` (by a reader thread) and waited on.

    `log`: a file the output is appended to, and the child in a session of its
    own, so that it outlives the process that started it (a lab's controllers);
    None: a pipe (tests, benches). Its metrics and REST listeners go where
    `extra_args` says, else on free ports chosen at the first start and kept
    across restarts. `env`: added to its environment."""

    def __init__(self, config: str, port: Optional[int] = None, log_level: str = "info",
                 extra_args: tuple = (), log: Optional[str] = None):
        self.config = config
        self.port = port or free_port()
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self.log = log
        self.env: dict = {}
        self.proc: Optional[subprocess.Popen] = None
        self.lines: list = []
        self.listening: dict = {}  # --metrics-listen / --rest-listen -> HOST:PORT
        self._changed = threading.Condition()
        self._reader: Optional[threading.Thread] = None

    @property
    def target(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def marker(self) -> str:
        """What its command line holds and no other controller's does."""
        return f"--ofp-listen 127.0.0.1:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.listen_address('--metrics-listen')}/metrics"

    @property
    def rest_url(self) -> str:
        return f"http://{self.listen_address('--rest-listen')}"

    def listen_address(self, option: str) -> str:
        """HOST:PORT of `--metrics-listen` or `--rest-listen`."""
        if option not in self.listening:  # every listener on a port of its own
            if option in self.extra_args:
                self.listening[option] = self.extra_args[self.extra_args.index(option) + 1]
            else:
                self.listening[option] = f"127.0.0.1:{free_port()}"
        return self.listening[option]

    def spawn(self) -> "ControllerProcess":
        """Start it; `wait_listening` waits for it to listen."""
        listeners = []
        for option in ("--metrics-listen", "--rest-listen"):
            address = self.listen_address(option)
            if option not in self.extra_args:
                listeners += [option, address]
        cmd = run_argv(self.config, self.port, "--log-level", self.log_level, *listeners,
                       *self.extra_args)
        env = {**os.environ, **self.env}
        self._after = self.mark()
        if self.log is None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, bufsize=1, stdin=subprocess.DEVNULL,
                                         env=env)
            target = self._read
        else:  # from the checkout, whoever starts it and wherever
            offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env,
                                             start_new_session=True,
                                             cwd=str(Path(__file__).resolve().parents[1]))
            target = lambda: self._tail(offset)  # noqa: E731
        self._reader = threading.Thread(target=target, daemon=True)
        self._reader.start()
        return self

    # Bounds, not targets: a controller that starts is waited for only as long as
    # it takes. Generous, for a guest on software emulation sharing two cores.
    START_TIMEOUT = 60.0

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        self.wait_for("socketnet listening", timeout, self._after)

    def start(self, timeout: float = START_TIMEOUT) -> "ControllerProcess":
        self.spawn()
        self.wait_listening(timeout)
        return self

    def _add(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def _read(self):
        for line in self.proc.stdout:
            self._add(line.rstrip("\n"))
        with self._changed:
            self._changed.notify_all()

    def _tail(self, offset: int):
        """The log file from `offset` on, line by line, until the child has exited
        and everything it wrote is read."""
        proc, partial = self.proc, ""
        with open(self.log, errors="replace") as f:
            f.seek(offset)
            while True:
                done = proc.poll() is not None
                chunk = f.read()
                if chunk:
                    *complete, partial = (partial + chunk).split("\n")
                    for line in complete:
                        self._add(line)
                elif done:
                    break
                else:
                    time.sleep(0.05)
        if partial:
            self._add(partial)
        with self._changed:
            self._changed.notify_all()

    def _wait(self, answer, what: str, timeout: float):
        """Wait until `answer(lines)` returns something other than None."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = answer(self.lines)
                if result is not None:
                    return result
                if not self._reader.is_alive():
                    raise RuntimeError(f"controller exited ({self.proc.poll()}) before "
                                       f"{what}:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} from the controller in {timeout}s:\n"
                                       f"{self.log_tail()}")
                self._changed.wait(min(left, 0.5))

    def wait_for(self, pattern: str, timeout: float, after: int = 0) -> re.Match:
        """The first log line from index `after` on that matches `pattern`."""
        regex = re.compile(pattern)

        def first(lines):
            for line in lines[after:]:
                m = regex.search(line)
                if m:
                    return m
            return None
        return self._wait(first, repr(pattern), timeout)

    def wait_synced(self, bridges, timeout: float = START_TIMEOUT, after: int = 0) -> dict:
        """Wait until every bridge in `bridges` reported its pipeline in sync
        (from log line `after` on): {bridge: counts of its first sync since}, the
        one that answered what came before `after`, not a later one (a port's
        event, say) that found nothing left to do."""
        def synced(lines):
            found = {}
            for line in lines[after:]:
                m = SYNC_LINE.search(line)
                if m and m["bridge"] in bridges:
                    found.setdefault(m["bridge"],
                                     {k: int(m[k]) for k in ("add", "delete", "unchanged")})
            return found if set(found) >= set(bridges) else None
        return self._wait(synced, f"sync of {', '.join(bridges)}", timeout)

    def mark(self) -> int:
        """A log position: pass it as `after` to wait only for what comes next."""
        with self._changed:
            return len(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            if self._reader is not None:
                self._reader.join(5)  # the rest of what it printed

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
