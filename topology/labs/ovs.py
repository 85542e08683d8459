"""One private Open vSwitch: an ovsdb-server and, in a network namespace of its own, an
ovs-vswitchd, on the userspace (netdev) datapath or the kernel's (system).

Owns starting and stopping such an instance, the ovs-vsctl / ovs-ofctl / ovs-appctl
commands run against it, and `trace`: what the installed flow tables would do with a
packet, asked through ovs-vswitchd's control socket without sending one (read by
`controller/ovs_text.py`).
`topology/labs/lab.py` builds a host's bridges on top of it.

Which datapath: `lab_datapath()`, from $SOCKETNET_LAB_DATAPATH (netdev unless it
says system). This machine's kernel has no openvswitch module, so the labs run
netdev here; the VM lab (`topology/vmlab`) boots Debian's kernel and runs the same
labs and tests with system. The kernel datapath is per network namespace too
(`ovs-system` of the instance's netns), so instances stay apart either way.

Why a netns per instance: a netdev ovs-vswitchd creates a tap named `ovs-netdev`
(and one tap per bridge and internal port), so only one can run per network
namespace (a second fails creating its tap devices). Everything else an instance makes (database, sockets,
pidfiles, logs) lives in one temporary directory, so two instances never meet.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Iterable, Mapping, Optional

from pyroute2 import IPRoute, netns

from controller.ovs_text import (DPIF_BRIDGE, DPIF_PORT, TracePath, TraceResult, follow_links,
                                 parse_trace)
from topology.system import (binary, listening_tcp, listening_unix, process_alive,
                             stop_process, wait_until)

SCHEMA_DIRS = ("/usr/share/openvswitch", "/usr/local/share/openvswitch")
DATAPATH_ENV = "SOCKETNET_LAB_DATAPATH"
DATAPATHS = ("netdev", "system")
REQUIRED_BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
                     "ovs-ofctl", "ovs-appctl", "ip")


class OvsError(RuntimeError):
    """An Open vSwitch command or daemon failed; the message names the instance,
    the command and what it printed."""


def schema_path() -> Optional[str]:
    for d in (os.environ.get("OVS_PKGDATADIR"), *SCHEMA_DIRS):
        if d and os.path.exists(os.path.join(d, "vswitch.ovsschema")):
            return os.path.join(d, "vswitch.ovsschema")
    return None


def lab_datapath() -> str:
    """The datapath labs build their bridges on: $SOCKETNET_LAB_DATAPATH, netdev by
    default (a wrong value is an error naming it, never a silent default)."""
    value = os.environ.get(DATAPATH_ENV, "netdev")
    if value not in DATAPATHS:
        raise ValueError(f"${DATAPATH_ENV}={value!r}: one of {', '.join(DATAPATHS)}")
    return value


def lab_wireguard() -> str:
    """The WireGuard labs make (`topology.labs.wireguard` kind): the kernel's where the
    datapath is the kernel's (the VM lab), wireguard-go otherwise."""
    return "kernel" if lab_datapath() == "system" else "go"


class OvsInstance:
    """A private Open vSwitch, usable as a context manager.

    `name` makes the netns (`sn-<name>-ovs`) and the temp dir unique; two instances
    with different names run side by side. `stop()` kills exactly the PIDs `start()`
    started (read from their pidfiles, checked against their command lines) and
    removes the netns and the directory it made. Bridges are the caller's business
    (`vsctl`); make them with `datapath_type=` this instance's `datapath`.
    """

    def __init__(self, name: str, datapath: Optional[str] = None):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"OvsInstance name {name!r}: use letters, digits, '-', '_', '.'")
        self.name = name
        self.datapath = datapath or lab_datapath()
        if self.datapath not in DATAPATHS:
            raise ValueError(f"OvsInstance datapath {self.datapath!r}: one of "
                             f"{', '.join(DATAPATHS)}")
        self.netns = f"sn-{name}-ovs"
        self.dir: Optional[str] = None
        self._pids: dict = {}  # daemon name -> pid
        self._relays: dict = {}  # port -> (inner Popen, outer Popen)
        self._netns_created = False
        self._client = None
        self._client_lock = threading.Lock()
        self._dpif_cache: Optional[dict] = None

    # -- paths ---------------------------------------------------------------

    def path(self, *parts: str) -> str:
        if self.dir is None:
            raise OvsError(f"OVS instance {self.name} is not started")
        return os.path.join(self.dir, *parts)

    @property
    def db_sock(self) -> str:
        return self.path("db.sock")

    @property
    def vswitchd_ctl(self) -> str:
        return self.path("ovs-vswitchd.ctl")

    def mgmt_sock(self, bridge: str) -> str:
        return self.path(f"{bridge}.mgmt")

    @property
    def env(self) -> dict:
        d = self.path()
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d,
                "OVS_SYSCONFDIR": d}

    @property
    def pids(self) -> dict:
        """{"ovsdb-server": pid, "ovs-vswitchd": pid, "relay-6653-in": pid, ...}: every
        process this instance started and will stop."""
        pids = dict(self._pids)
        for port, (inner, outer) in self._relays.items():
            pids[f"relay-{port}-in"] = inner.pid
            pids[f"relay-{port}-out"] = outer.pid
        return pids

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> "OvsInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "OvsInstance":
        if self.dir is not None:
            raise OvsError(f"OVS instance {self.name} already started")
        missing = [b for b in REQUIRED_BINARIES if binary(b) is None]
        schema = schema_path()
        if missing or schema is None:
            raise OvsError(f"cannot start Open vSwitch: missing {missing or ''}"
                           f"{'' if schema else ' vswitch.ovsschema'} "
                           "(install openvswitch-switch, iproute2, socat)")
        try:
            self.dir = tempfile.mkdtemp(prefix=f"sn-{self.name}-")
            if len(self.mgmt_sock("x" * 15)) > 100:  # sun_path is 108 bytes
                raise OvsError(f"temp dir {self.dir} too long for unix sockets")
            if self.netns in netns.listnetns():
                raise OvsError(f"netns {self.netns} already exists: another lab with "
                               f"the name {self.name!r} is running, or a stale one")
            netns.create(self.netns)
            self._netns_created = True
            with IPRoute(netns=self.netns) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

            self._run(["ovsdb-tool", "create", self.path("conf.db"), schema])
            self._start_ovsdb()
            self.vsctl("--no-wait", "init")
            self._start_vswitchd()
        except Exception as e:
            log = self.log_tail()
            self.stop()
            if log:
                raise OvsError(f"{e}\n--- ovs-vswitchd.log of {self.name} (tail) ---\n"
                               f"{log}") from e
            raise
        except BaseException:
            self.stop()
            raise
        return self

    def _start_ovsdb(self) -> None:
        # --detach returns once the daemon listens: no polling needed for it.
        self._run(["ovsdb-server", self.path("conf.db"),
                   f"--remote=punix:{self.db_sock}",
                   f"--pidfile={self.path('ovsdb-server.pid')}",
                   f"--unixctl={self.path('ovsdb-server.ctl')}",
                   f"--log-file={self.path('ovsdb-server.log')}",
                   "--detach", "--no-chdir", "-vconsole:off"])
        self._pids["ovsdb-server"] = self._read_pid("ovsdb-server")

    def _start_vswitchd(self) -> None:
        # ovs-vswitchd --detach returns after it has read its configuration.
        self._run(["ip", "netns", "exec", self.netns, binary("ovs-vswitchd"),
                   f"unix:{self.db_sock}",
                   f"--pidfile={self.path('ovs-vswitchd.pid')}",
                   f"--unixctl={self.vswitchd_ctl}",
                   f"--log-file={self.path('ovs-vswitchd.log')}",
                   "--detach", "--no-chdir", "-vconsole:off",
                   *(["--disable-system"] if self.datapath == "netdev" else [])])
        self._pids["ovs-vswitchd"] = self._read_pid("ovs-vswitchd")
        wait_until(lambda: self._unixctl_ok("version"), 10,
                   f"ovs-vswitchd of {self.name} to answer on {self.vswitchd_ctl}")

    def restart_vswitchd(self) -> None:
        """Stop ovs-vswitchd and start it again, as an upgrade or a crash would:
        every flow, group and meter is gone; the configuration in OVSDB stays."""
        self._forget_client()
        stop_process(self._pids.pop("ovs-vswitchd"), self.dir)
        self._dpif_cache = None
        self._start_vswitchd()

    def shut_down(self) -> None:
        """Both daemons stopped, the database kept (its file, the netns, the
        directory), as on a host that is off or whose Open vSwitch has not started
        yet: `boot` starts them again on it."""
        self._forget_client()
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            stop_process(self._pids.pop(daemon), self.dir)
        self._dpif_cache = None

    def boot(self) -> None:
        """ovsdb-server on the kept database, then ovs-vswitchd (after `shut_down`)."""
        self._start_ovsdb()
        self._start_vswitchd()

    def _forget_client(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def stop(self) -> None:
        """Stop what start() started and remove what it made. Idempotent."""
        self._forget_client()
        for port in list(self._relays):
            self._stop_relay(port)
        marker = self.dir or "\0"
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pid = self._pids.pop(daemon, None)
            if pid is not None:
                stop_process(pid, marker)
        if self._netns_created:
            if self.netns in netns.listnetns():
                netns.remove(self.netns)
            self._netns_created = False
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self._dpif_cache = None

    @property
    def running(self) -> bool:
        return bool(self._pids) and all(process_alive(p) for p in self._pids.values())

    def log_tail(self, daemon: str = "ovs-vswitchd", lines: int = 30) -> str:
        try:
            with open(self.path(f"{daemon}.log")) as f:
                return "".join(f.readlines()[-lines:])
        except (OSError, OvsError):
            return ""

    # -- commands ------------------------------------------------------------

    def _run(self, cmd: list, timeout: float = 15.0) -> str:
        exe = binary(cmd[0]) or cmd[0]
        try:
            proc = subprocess.run([exe, *cmd[1:]], env=self.env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise OvsError(f"[{self.name}] timed out after {timeout}s: {' '.join(cmd)}") from e
        if proc.returncode != 0:
            raise OvsError(f"[{self.name}] {' '.join(cmd)} exited {proc.returncode}:\n"
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def _read_pid(self, daemon: str) -> int:
        with open(self.path(f"{daemon}.pid")) as f:
            return int(f.read().strip())

    def vsctl(self, *args: str, timeout: float = 10.0) -> str:
        """ovs-vsctl against this instance's database. Without `--no-wait` it returns
        once ovs-vswitchd has applied the change (ports exist, taps are made)."""
        self._dpif_cache = None  # ports may change: re-read dpif/show on next use
        return self._run(["ovs-vsctl", f"--db=unix:{self.db_sock}",
                          f"--timeout={int(timeout)}", *args], timeout + 5).strip()

    def ofctl(self, *args: str) -> str:
        """ovs-ofctl ARGS, e.g. `ofctl("add-flow", "mesh", "priority=0,actions=drop")`.
        The switch argument (the one after the command) may be a bridge name: it is
        replaced by that bridge's mgmt socket in this instance's directory. Speaks
        OpenFlow 1.3 unless the args choose (`-O OpenFlow14`)."""
        args = list(args)
        positional = [i for i, a in enumerate(args) if not a.startswith("-")]
        if len(positional) >= 2 and os.path.exists(self.mgmt_sock(args[positional[1]])):
            args[positional[1]] = f"unix:{self.mgmt_sock(args[positional[1]])}"
        if not any(a == "-O" or a.startswith(("-O", "--protocols")) for a in args):
            args = ["-O", "OpenFlow13", *args]
        return self._run(["ovs-ofctl", *args])

    def add_flows(self, bridge: str, lines: Iterable[str]) -> None:
        """Add many flows (ovs-ofctl lines) to `bridge` in one ovs-ofctl call."""
        path = self.path(f"{bridge}.add-flows")
        with open(path, "w") as f:
            f.writelines(line + "\n" for line in lines)
        try:
            self.ofctl("add-flows", bridge, path)
        finally:
            os.unlink(path)

    def appctl(self, *args: str, target: str = "ovs-vswitchd") -> str:
        """ovs-appctl on ovs-vswitchd's (or ovsdb-server's) control socket."""
        return self._run(["ovs-appctl", "-t", self.path(f"{target}.ctl"), *args])

    def dump_flows(self, bridge: str, names: bool = True, stats: bool = False,
                   match: Optional[str] = None) -> list:
        """The bridge's flows as ovs-ofctl prints them, one stripped line each, the
        reply header removed. `match` ("table=1", "in_port=veth200") filters."""
        args = ["dump-flows", "--names" if names else "--no-names"]
        args += [] if stats else ["--no-stats"]
        out = self.ofctl(*args, bridge, *([match] if match else []))
        return [line.strip() for line in out.splitlines()
                if line.strip() and not line.lstrip().startswith(("OFPST_", "NXST_"))]

    # -- unixctl JSON-RPC: trace and dpif/show --------------------------------

    def unixctl(self, command: str, *args: str) -> str:
        """One ovs-vswitchd unixctl command through the `ovs` package's JSON-RPC
        client on a kept-open connection (~0.1-0.3 ms; ovs-appctl forks, ~3 ms)."""
        with self._client_lock:
            for attempt in (1, 2):
                client = self._connect()
                error, err_text, result = client.transact(command, list(args))
                if not error:
                    break
                client.close()  # daemon restarted or socket broke: reconnect once
                self._client = None
                if attempt == 2:
                    raise OvsError(f"[{self.name}] unixctl {command}: {os.strerror(error)}")
        if err_text is not None:
            raise OvsError(f"[{self.name}] {command} {' '.join(args)}: {err_text.strip()}")
        return result

    def _connect(self):
        if self._client is None:
            with warnings.catch_warnings():
                # `ovs` imports eventlet where installed, which announces its deprecation.
                warnings.simplefilter("ignore")
                from ovs.unixctl.client import UnixctlClient  # keeps `ovs` out of cold paths
            error, client = UnixctlClient.create(self.vswitchd_ctl)
            if error:
                raise OvsError(f"[{self.name}] cannot connect to {self.vswitchd_ctl}: "
                               f"{os.strerror(error)}")
            self._client = client
        return self._client

    def _unixctl_ok(self, command: str) -> bool:
        try:
            self.unixctl(command)
            return True
        except OvsError:
            return False

    def dpif_ports(self) -> dict:
        """{bridge: {port name: (ofport, datapath port)}} from `dpif/show`; cached
        until the next vsctl call (the only way ports change here) or
        `invalidate_ports()`."""
        if self._dpif_cache is None:
            bridges: dict = {}
            current = None
            for line in self.unixctl("dpif/show").splitlines():
                if m := DPIF_BRIDGE.match(line):
                    current = bridges.setdefault(m.group(1), {})
                elif (m := DPIF_PORT.match(line)) and current is not None:
                    current[m.group(1)] = (int(m.group(2)), int(m.group(3)))
            self._dpif_cache = bridges
        return self._dpif_cache

    def invalidate_ports(self) -> None:
        self._dpif_cache = None

    def _dp_port_name(self, number: int) -> str:
        for attempt in (1, 2):
            for ports in self.dpif_ports().values():
                for name, (_, dp) in ports.items():
                    if dp == number:
                        return name
            self.invalidate_ports()
        return f"<dp {number}>"

    def trace(self, bridge: str, flow: str, ct_next: Optional[str] = None) -> TraceResult:
        """`ofproto/trace BRIDGE FLOW` parsed: output port names, packet-in, drop,
        the final packet. `ct_next` ("trk,est") sets the conntrack state every
        recirculation resumes with (OVS's default: trk,new)."""
        args = [bridge, flow] + (["--ct-next", ct_next] if ct_next else [])
        text = self.unixctl("ofproto/trace", *args)
        return parse_trace(bridge, flow, text, self._dp_port_name)

    def trace_across(self, bridge: str, flow: str, links: Mapping[tuple, tuple],
                     ct_next: Optional[str] = None, max_hops: int = 4,
                     ct_mark: Optional[int] = None) -> TracePath:
        """Trace a packet and follow it over veths between bridges (a trace stops at
        a veth). `links` maps (bridge, port) to the (bridge, port) at the veth's
        other end; a packet leaving by a linked port is traced again entering the
        peer, with its modified header fields and no pipeline metadata. After
        `max_hops` traces, outputs to linked ports count as exits (no endless loop)."""
        return follow_links(lambda br, fl: self.trace(br, fl, ct_next=ct_next), bridge, flow,
                            links, max_hops, ct_mark)

    # -- reaching a controller outside the netns -------------------------------

    def forward_loopback(self, port: int, timeout: float = 5.0) -> None:
        """Make 127.0.0.1:PORT inside this instance's netns reach 127.0.0.1:PORT of the
        caller's netns, so a controller target `tcp:127.0.0.1:PORT` (or `ssl:`: the
        bytes pass through untouched) works although ovs-vswitchd runs in its own
        netns. Two socat relays joined by a unix socket in the instance's directory;
        a connection refused outside closes the one inside, as a direct one would."""
        if port in self._relays:
            return
        sock = self.path(f"relay-{port}.sock")
        outer = subprocess.Popen(
            [binary("socat"), f"UNIX-LISTEN:{sock},fork,unlink-early",
             f"TCP:127.0.0.1:{port},nodelay"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        inner = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, binary("socat"),
             f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay",
             f"UNIX-CONNECT:{sock}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self._relays[port] = (inner, outer)
        wait_until(lambda: listening_unix(outer.pid, sock) and listening_tcp(inner.pid, port)
                   or inner.poll() is not None or outer.poll() is not None,
                   timeout, f"loopback relay for port {port} in {self.netns}")
        if inner.poll() is not None or outer.poll() is not None:
            self._stop_relay(port)
            raise OvsError(f"[{self.name}] loopback relay for port {port} exited")

    def _stop_relay(self, port: int) -> None:
        for proc in self._relays.pop(port):
            # The socat process leads its own group; its per-connection children
            # are in it. `ip netns exec` execs socat, so the PID is socat's.
            stop_process(proc.pid, "socat", group=True)
            proc.wait()
