"""One private Open vSwitch: an ovsdb-server and, in a network namespace of its own, an
ovs-vswitchd, on the userspace (netdev) datapath or the kernel's (system).

Owns starting and stopping such an instance, the ovs-vsctl / ovs-ofctl / ovs-appctl
commands run against it, and `trace`: what the installed flow tables would do with a
packet, asked through ovs-vswitchd's control socket without sending one.
`topology/lab.py` builds a host's bridges on top of it.

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

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from pyroute2 import IPRoute, netns

SCHEMA_DIRS = ("/usr/share/openvswitch", "/usr/local/share/openvswitch")
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
DATAPATH_ENV = "SOCKETNET_LAB_DATAPATH"
DATAPATHS = ("netdev", "system")
REQUIRED_BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
                     "ovs-ofctl", "ovs-appctl", "ip")

# ofproto/trace output, as printed by Open vSwitch 3.1.
_FLOW_LINE = "Flow: "
_FINAL_FLOW_LINE = "Final flow: "
_ACTIONS_LINE = "Datapath actions: "
# `dpif/show`: "    veth200 3/2: (system)" = name, OpenFlow port / datapath port.
_DPIF_PORT = re.compile(r"^\s{4}(\S+) (\d+)/(\d+):")
_DPIF_BRIDGE = re.compile(r"^\s{2}(\S+):$")


class OvsError(RuntimeError):
    """An Open vSwitch command or daemon failed; the message names the instance,
    the command and what it printed."""


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


def schema_path() -> Optional[str]:
    for d in (os.environ.get("OVS_PKGDATADIR"), *SCHEMA_DIRS):
        if d and os.path.exists(os.path.join(d, "vswitch.ovsschema")):
            return os.path.join(d, "vswitch.ovsschema")
    return None


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
    raise OvsError(f"pid {pid} ({marker}) survived SIGKILL")


# --------------------------------------------------------------------------- trace


_L4 = {"tcp": "tcp", "tcp6": "tcp", "udp": "udp", "udp6": "udp", "sctp": "sctp",
       "sctp6": "sctp"}


def parse_flow(text: str) -> dict:
    """A flow in ovs-ofctl syntax ("tcp,in_port=3,nw_src=10.0.0.1") as a dict in
    order; bare keywords (protocols such as `tcp`, `eth`) map to None.

    ofproto/trace prints L4 ports as `tp_src`/`tp_dst`, but when parsing, OVS reads
    `tp_src` as `tcp_src` ("prerequisites not met" on a udp flow): they are renamed
    `tcp_*`/`udp_*`/`sctp_*` after the flow's protocol, so the dict reads back;
    likewise ICMPv6's `icmp_type`/`icmp_code` become `icmpv6_*`."""
    fields = {}
    for token in text.strip().split(","):
        if not token:
            continue
        key, sep, value = token.partition("=")
        fields[key] = value if sep else None
    l4 = next((_L4[k] for k in fields if k in _L4), None)
    if l4 and ("tp_src" in fields or "tp_dst" in fields):
        fields = {(f"{l4}_{k[3:]}" if k in ("tp_src", "tp_dst") else k): v
                  for k, v in fields.items()}
    if "icmp6" in fields:
        # Printed as icmp_type/icmp_code, read back only as icmpv6_*; and both
        # nd_sll and nd_tll are printed, but each is read back only for its
        # neighbour discovery message (135 solicitation, 136 advertisement).
        fields = {_ICMP6.get(k, k): v for k, v in fields.items()}
        keep = _ND_FIELDS.get(fields.get("icmpv6_type"), ())
        fields = {k: v for k, v in fields.items() if not k.startswith("nd_") or k in keep}
    return fields


_ICMP6 = {"icmp_type": "icmpv6_type", "icmp_code": "icmpv6_code"}
_ND_FIELDS = {"135": ("nd_target", "nd_sll"), "136": ("nd_target", "nd_tll")}


def format_flow(fields: Mapping[str, Optional[str]]) -> str:
    return ",".join(k if v is None else f"{k}={v}" for k, v in fields.items())


# Fields that belong to one bridge's pipeline, not to the packet: they do not cross a
# veth. `as_ingress` drops them when the packet is traced again on the next bridge.
_PIPELINE_FIELDS = {"in_port", "recirc_id", "dp_hash", "skb_priority", "skb_mark",
                    "pkt_mark", "metadata", "actset_output", "packet_type", "conj_id",
                    "eth"}
_PIPELINE_PREFIXES = ("ct_", "reg", "xreg", "xxreg", "tun_", "tunnel")

# Datapath `set(...)` keys as ovs-ofctl flow fields.
_ODP_SET_FIELDS = {
    "eth": {"src": "dl_src", "dst": "dl_dst"},
    "ipv4": {"src": "nw_src", "dst": "nw_dst", "tos": "nw_tos", "ttl": "nw_ttl"},
    "tcp": {"src": "tcp_src", "dst": "tcp_dst"},
    "udp": {"src": "udp_src", "dst": "udp_dst"},
    "sctp": {"src": "sctp_src", "dst": "sctp_dst"},
    "arp": {"sip": "arp_spa", "tip": "arp_tpa", "op": "arp_op", "sha": "arp_sha",
            "tha": "arp_tha"},
}


@dataclass(frozen=True)
class Output:
    """The packet leaving `bridge` by `port` (a port NAME; the bridge's LOCAL port has
    the bridge's name), with its header fields as they are at that point."""
    bridge: str
    port: str
    flow: Mapping[str, Optional[str]] = field(hash=False)

    def as_ingress(self, in_port: str) -> str:
        """This packet as a flow string entering a bridge on `in_port`: for tracing
        the next hop after a veth (the inter-bridge link). Pipeline metadata
        (registers, conntrack state, recirculation) is dropped: it does not cross."""
        kept = {k: v for k, v in self.flow.items()
                if k not in _PIPELINE_FIELDS and not k.startswith(_PIPELINE_PREFIXES)}
        return format_flow({"in_port": in_port, **kept})


@dataclass(frozen=True)
class TraceStep:
    """One table lookup in a trace: the flow that matched, as ovs-vswitchd prints
    it (`match` None: no flow matched, the lookup missed), and what it did. `pass_`
    counts the recirculations before it (0: the packet as it arrived; each
    `ct(...,table=N)` resumes the pipeline in a new pass with the tracker's answer)."""
    pass_: int
    table: int
    match: Optional[str]
    priority: Optional[int] = None
    cookie: Optional[int] = None
    actions: tuple = ()  # of str, as ovs-vswitchd printed them

    @property
    def missed(self) -> bool:
        return self.match is None


# " 1. ip,metadata=0x2, priority 100, cookie 0x534e000000000013" or " 0. No match."
_STEP = re.compile(r"^(?P<indent> *)(?P<table>\d+)\. (?P<rest>.*)$")
_STEP_FLOW = re.compile(r"^(?P<match>.*?),? ?priority (?P<priority>\d+)"
                        r"(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?$")
_PASS_HEADER = re.compile(r"^recirc\(0x[0-9a-f]+\) - ")


def parse_steps(text: str) -> tuple:
    """The table lookups of an `ofproto/trace` output, in order (TraceStep each).
    An action line is one indented deeper than its step; lines starting "->" are
    ovs-vswitchd's comments, not actions."""
    steps, current, passes = [], None, 0
    for line in text.splitlines():
        if _PASS_HEADER.match(line):
            passes += 1
            current = None
            continue
        m = _STEP.match(line)
        if m and len(m.group("indent")) <= 8:
            rest = m.group("rest").strip()
            flow = _STEP_FLOW.match(rest)
            if flow:
                current = TraceStep(passes, int(m.group("table")), flow.group("match"),
                                    int(flow.group("priority")),
                                    int(flow.group("cookie"), 16) if flow.group("cookie")
                                    else 0)
            else:  # "No match." (and its variants)
                current = TraceStep(passes, int(m.group("table")), None)
            steps.append(current)
            continue
        action = line.strip()
        if current is None or not action or not line.startswith(" ") \
                or action.startswith(("->", ">>", "thaw", "Resuming")):
            if not line.startswith(" "):
                current = None  # "Final flow:", "bridge(...)", a blank line: the step is over
            continue
        steps[-1] = current = dataclasses.replace(current, actions=current.actions + (action,))
    return tuple(steps)


@dataclass(frozen=True)
class TraceResult:
    """What `ofproto/trace` says one bridge does with a packet.

    `outputs` gathers the output actions of every pass (a `ct(...,table=N)` makes the
    trace recirculate: each pass has its own `Datapath actions:` line). `final_flow`
    is the last pass's `Final flow:` ("unchanged" resolved to that pass's `Flow:`).
    `drop` means the packet goes nowhere: no output port and no packet-in."""
    bridge: str
    flow: str
    text: str
    outputs: tuple = ()  # of Output
    controller: bool = False
    datapath_actions: tuple = ()  # of str, one per pass
    final_flow: Mapping[str, Optional[str]] = field(default_factory=dict, hash=False)
    steps: tuple = ()  # of TraceStep: every table lookup, every pass

    @property
    def ports(self) -> list:
        """Output port names, in datapath order."""
        return [o.port for o in self.outputs]

    @property
    def drop(self) -> bool:
        return not self.outputs and not self.controller

    def __str__(self) -> str:
        return (f"trace {self.bridge} {self.flow} -> "
                f"{' | '.join(self.datapath_actions) or '?'}")


def _split_top(text: str) -> list:
    """Split "a,b(c,d),e" on the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _inner(action: str) -> str:
    return action[action.index("(") + 1:action.rindex(")")]


def _apply_set(flow: dict, action: str) -> None:
    """Apply a datapath `set(eth(src=..,dst=..))` (or masked_set) to `flow`."""
    for header in _split_top(_inner(action)):
        if "(" not in header:
            continue
        names = _ODP_SET_FIELDS.get(header[:header.index("(")], {})
        for assignment in _split_top(_inner(header)):
            key, _, value = assignment.partition("=")
            if key in names:
                flow[names[key]] = value.split("/")[0]


def _walk_actions(actions: str, flow: dict, bridge: str, names: Callable[[int], str],
                  outputs: list) -> bool:
    """Follow one `Datapath actions:` list in order; append an Output per output
    action; return whether a packet-in (userspace(...controller(...))) occurs."""
    controller = False
    for action in _split_top(actions):
        if action.isdigit():
            outputs.append(Output(bridge, names(int(action)), dict(flow)))
        elif action.startswith(("set(", "masked_set(")):
            _apply_set(flow, action)
        elif action.startswith("clone("):
            controller |= _walk_actions(_inner(action), dict(flow), bridge, names, outputs)
        elif action.startswith("userspace(") and "controller" in action:
            controller = True  # userspace(pid=0,controller(reason=1,...))
        # drop, ct(), recirc(), meter(), push/pop_vlan...: no output of their own.
    return controller


def parse_trace(bridge: str, flow: str, text: str,
                names: Callable[[int], str]) -> TraceResult:
    """Parse `ofproto/trace` output; `names` maps a datapath port number to a name."""
    outputs, actions_lines = [], []
    controller = False
    pass_flow: dict = {}
    final: dict = {}
    for line in text.splitlines():
        if line.startswith(_FLOW_LINE):
            pass_flow = parse_flow(line[len(_FLOW_LINE):])
        elif line.startswith(_FINAL_FLOW_LINE):
            value = line[len(_FINAL_FLOW_LINE):].strip()
            final = dict(pass_flow) if value == "unchanged" else parse_flow(value)
        elif line.startswith(_ACTIONS_LINE):
            actions = line[len(_ACTIONS_LINE):].strip()
            actions_lines.append(actions)
            controller |= _walk_actions(actions, dict(pass_flow), bridge, names, outputs)
    if not actions_lines:
        raise OvsError(f"trace on {bridge} of {flow!r}: no 'Datapath actions:' in\n{text}")
    return TraceResult(bridge=bridge, flow=flow, text=text, outputs=tuple(outputs),
                       controller=controller, datapath_actions=tuple(actions_lines),
                       final_flow=final, steps=parse_steps(text))


@dataclass(frozen=True)
class TracePath:
    """A packet traced across bridges: one TraceResult per bridge it crossed.
    `exits` are the outputs that leave the traced topology (the followed link
    ports are not among them); `controller` names the bridges that punt it."""
    hops: tuple  # of TraceResult
    exits: tuple  # of Output
    controller: tuple  # of bridge names

    @property
    def ports(self) -> set:
        """{(bridge, port)} the packet finally leaves by."""
        return {(o.bridge, o.port) for o in self.exits}

    @property
    def drop(self) -> bool:
        return not self.exits and not self.controller

    def __str__(self) -> str:
        return " ; ".join(str(h) for h in self.hops)


def follow_links(trace: Callable[[str, str], TraceResult], bridge: str, flow: str,
                 links: Mapping[tuple, tuple], max_hops: int = 4,
                 ct_mark: Optional[int] = None) -> TracePath:
    """Trace a packet with `trace(bridge, flow)` and follow it over veths between
    bridges (a trace stops at a veth): `links` maps (bridge, port) to the (bridge,
    port) at the veth's other end; a packet leaving by a linked port is traced again
    entering the peer, with its modified header fields and no pipeline metadata.
    After `max_hops` traces, outputs to linked ports count as exits. `ct_mark`: the
    mark its connection has, given to the packet on every hop (with --ct-next it
    is what the tracker answers; it does not cross a veth by itself)."""
    hops, exits, controller = [], [], []
    marked = f",ct_mark={ct_mark}" if ct_mark else ""
    queue, seen = [(bridge, flow + marked)], set()
    while queue:
        br, fl = queue.pop(0)
        if (br, fl) in seen:
            continue
        seen.add((br, fl))
        result = trace(br, fl)
        hops.append(result)
        if result.controller:
            controller.append(br)
        for out in result.outputs:
            peer = links.get((br, out.port))
            if peer is not None and len(hops) < max_hops:
                queue.append((peer[0], out.as_ingress(peer[1]) + marked))
            else:
                exits.append(out)
    return TracePath(hops=tuple(hops), exits=tuple(exits), controller=tuple(controller))


# --------------------------------------------------------------------------- instance


def lab_datapath() -> str:
    """The datapath labs build their bridges on: $SOCKETNET_LAB_DATAPATH, netdev by
    default (a wrong value is an error naming it, never a silent default)."""
    value = os.environ.get(DATAPATH_ENV, "netdev")
    if value not in DATAPATHS:
        raise ValueError(f"${DATAPATH_ENV}={value!r}: one of {', '.join(DATAPATHS)}")
    return value


def lab_wireguard() -> str:
    """The WireGuard labs make (`topology.wireguard` kind): the kernel's where the
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
                if m := _DPIF_BRIDGE.match(line):
                    current = bridges.setdefault(m.group(1), {})
                elif (m := _DPIF_PORT.match(line)) and current is not None:
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
        wait_until(lambda: _listening_unix(outer.pid, sock) and listening_tcp(inner.pid, port)
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


def listening_tcp(pid: int, port: int, address: str = "127.0.0.1") -> bool:
    """A TCP socket listens on address:port in the network namespace of `pid`."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return any(cols[1] == want and cols[3] == "0A"
                       for cols in (line.split() for line in f.readlines()[1:]))
    except OSError:
        return False


def _listening_unix(pid: int, path: str) -> bool:
    """A unix socket listens on PATH (flags __SO_ACCEPTCON)."""
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            return any(line.split()[-1] == path and line.split()[3] == "00010000"
                       for line in f.readlines()[1:] if len(line.split()) >= 8)
    except OSError:
        return False
