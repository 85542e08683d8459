"""Real WireGuard between two network namespaces, for labs: wireguard-go and wg.

Owns making one WireGuard tunnel (two interfaces, one per namespace, over an
underlay veth between the namespaces), or a mesh of them (one interface per
namespace with every other member as a peer, as Netmaker builds), and removing
them again, by name and PID.

    WireGuardLink(tag, a, b, mtu=1280, log_dir=None).up() / .down(), or `with`:
        a, b: WgEnd(netns, name, address, allowed_ips, underlay, port)
    WireGuardMesh(tag, members, mtu=1280, log_dir=None).up() / .down():
        members: MeshMember(netns, name, address, owns, port, routes); each
        member's peers are all the others, each over an underlay veth of its own
        pair; a peer's allowed-ips are what that peer `owns`

`log_dir`: wireguard-go's stderr goes to `<log_dir>/<control name>.log` instead of
a pipe, so a tunnel outlives the process that made it (`socketnet lab up`).

Why two names per interface: wireguard-go's control socket is
`/var/run/wireguard/<interface>.sock`, one directory for every network namespace,
so two labs that both want a `warp0` would collide. Each interface is
therefore born with a name unique on the machine (`swg<hash of tag><a|b>`, which
names its control socket for its whole life: `wg show swg...a`), configured, then
renamed inside its namespace to the name the config knows (`warp0`, `nm-privacy`).
wireguard-go keeps serving a renamed interface.

`kind`: "go" (wireguard-go: where the labs run on the userspace datapath) or
"kernel" (`ip link add ... type wireguard`, what netclient and wg-quick make on a real
host; the VM lab's guest has the module); by default the labs' (`lab_wireguard`). The interface is configured with `wg` the
same way either way; a kernel interface has no process and no control socket, and
goes when it is deleted or its namespace is.

The result is layer 3 exactly like the real thing: ARPHRD_NONE, no hardware
address (`topology.kind` says l3), MTU 1280 as WARP and Netmaker use.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from pyroute2 import IPRoute

from topology.labs.ovs import lab_wireguard
from topology.system import binary, stop_process, wait_until

CONTROL_DIR = "/var/run/wireguard"


class WireGuardError(RuntimeError):
    """A WireGuard tunnel could not be made; the message names the interface."""


@dataclass(frozen=True)
class WgEnd:
    """One end: the interface `name` in `netns` with `address` (addr/prefix);
    `allowed_ips`, what it accepts from its peer and may send to it; the underlay
    address `underlay` (addr/prefix) on the veth, and the UDP `port` it listens on;
    `routes` (networks) it routes into the tunnel in the main table. A host end
    normally has none: like wg-quick's `Table = off`, its routing is policy's."""
    netns: str
    name: str
    address: str
    allowed_ips: Sequence[str]
    underlay: str
    port: int = 51820
    routes: Sequence[str] = ()


def control_name(tag: str, side: str) -> str:
    """A machine-unique interface name (<= 15 bytes) for `tag`'s end `side`."""
    digest = hashlib.blake2s(tag.encode(), digest_size=4).hexdigest()
    return f"swg{digest}{side}"


def _control(kind: str, tag: str, side: str, name: str) -> str:
    """The name `wg` addresses an interface by for its whole life: wireguard-go's is
    the machine-unique name it was born with (its control socket's); a kernel
    interface is per namespace, born with its config name and addressed by it."""
    return control_name(tag, side) if kind == "go" else name


def control_socket(name: str) -> str:
    return os.path.join(CONTROL_DIR, f"{name}.sock")


def _run(netns: Optional[str], *cmd: str, input: Optional[str] = None) -> str:
    argv = [binary(cmd[0]) or cmd[0], *cmd[1:]]
    if netns is not None:
        argv = [binary("ip") or "ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise WireGuardError(f"{' '.join(cmd)}{f' (in {netns})' if netns else ''} exited "
                             f"{proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _start_wireguard_go(name: str, netns: str, log_dir: Optional[str]) -> subprocess.Popen:
    """wireguard-go for interface `name` in `netns`, in a session of its own; returns
    once its control socket exists."""
    if os.path.exists(control_socket(name)):
        raise WireGuardError(f"{control_socket(name)} exists: another tunnel with this "
                             "tag runs, or a stale one")
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
    stderr = (open(os.path.join(log_dir, f"{name}.log"), "ab") if log_dir is not None
              else subprocess.PIPE)
    try:
        proc = subprocess.Popen(
            [binary("ip") or "ip", "netns", "exec", netns, binary("wireguard-go"), "-f", name],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True)
    finally:
        if log_dir is not None:
            stderr.close()

    def ready():
        if proc.poll() is not None:
            said = proc.stderr.read().decode().strip() if proc.stderr else \
                f"see {os.path.join(log_dir, name + '.log')}"
            raise WireGuardError(f"wireguard-go {name} in {netns} exited "
                                 f"{proc.returncode}: {said}")
        return os.path.exists(control_socket(name))
    wait_until(ready, 5, f"wireguard-go {name} in {netns} to listen")
    return proc


KINDS = ("go", "kernel")


def _check_kind(what: str, kind: str) -> None:
    if kind not in KINDS:
        raise WireGuardError(f"{what}: kind {kind!r}: one of {', '.join(KINDS)}")
    missing = [b for b in (("wireguard-go",) if kind == "go" else ()) + ("wg", "ip")
               if binary(b) is None]
    if missing:
        raise WireGuardError(f"{what}: missing {', '.join(missing)} "
                             "(install wireguard-go wireguard-tools iproute2)")


class _Interfaces:
    """The WireGuard interfaces a tunnel or mesh made, of one kind: started under
    their control name, stopped by PID (wireguard-go) or deleted by their final
    name (kernel)."""

    def __init__(self, kind: str, log_dir: Optional[str]):
        self.kind = kind
        self.log_dir = log_dir
        self.procs: dict = {}  # key -> Popen (wireguard-go)
        self.links: dict = {}  # key -> (netns, final name) (kernel)

    def start(self, key, control: str, netns: str, final: str) -> None:
        if self.kind == "go":
            self.procs[key] = _start_wireguard_go(control, netns, self.log_dir)
        else:
            _run(netns, "ip", "link", "add", control, "type", "wireguard")
            self.links[key] = (netns, final)

    def stop_one(self, key, control: str) -> None:
        """Take one interface away, as netclient or wg-quick do when they restart."""
        if key in self.procs:
            _stop_wireguard_go(control, self.procs.pop(key))
        if key in self.links:
            _del_link(*self.links.pop(key))

    def stop(self, controls: dict) -> None:
        for key, proc in list(self.procs.items()):
            _stop_wireguard_go(controls[key], proc)
            del self.procs[key]
        for key, (netns, name) in list(self.links.items()):
            _del_link(netns, name)
            del self.links[key]


def _stop_wireguard_go(name: str, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        stop_process(proc.pid, name)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    try:
        os.unlink(control_socket(name))
    except FileNotFoundError:
        pass


def _veth(a_ns: str, a_name: str, a_address: str, b_ns: str, b_name: str,
          b_address: str) -> None:
    """A veth from `a_ns` to `b_ns`, each end with its address (addr/prefix), up."""
    with IPRoute(netns=a_ns) as ipr:
        ipr.link("add", ifname=a_name, kind="veth",
                 peer={"ifname": b_name, "net_ns_fd": b_ns})
    for ns, name, address in ((a_ns, a_name, a_address), (b_ns, b_name, b_address)):
        with IPRoute(netns=ns) as ipr:
            index = ipr.link_lookup(ifname=name)[0]
            ip, prefix = address.split("/")
            ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
            ipr.link("set", index=index, state="up")


def _del_link(netns: str, name: str) -> None:
    try:
        with IPRoute(netns=netns) as ipr:
            index = ipr.link_lookup(ifname=name)
            if index:
                ipr.link("del", index=index[0])  # a veth's peer goes with it
    except Exception:  # the namespace itself is gone: so is the veth
        pass


def _greet(netns: str, name: str, peer_public: str) -> None:
    """Make the interface configured as `name` (its control name) start a
    handshake with the peer now: a persistent keepalive, turned on (WireGuard
    sends one at once) and off again."""
    for interval in ("25", "off"):
        _run(netns, "wg", "set", name, "peer", peer_public, "persistent-keepalive", interval)


def _name_and_address(netns: str, control: str, name: str, address: str, mtu: int,
                      routes: Sequence[str]) -> None:
    """Rename the configured interface to its config name, give it MTU and address,
    bring it up, route `routes` into it."""
    with IPRoute(netns=netns) as ipr:
        index = ipr.link_lookup(ifname=control)[0]
        ipr.link("set", index=index, ifname=name, mtu=mtu)
        ip, prefix = address.split("/")
        ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
        for route in routes:
            ipr.route("add", dst=route, oif=index)


class WireGuardLink:
    """A WireGuard tunnel between `a.netns` and `b.netns`; see the module doc.
    `tag` must be unique among tunnels on the machine (a lab name and a word)."""

    def __init__(self, tag: str, a: WgEnd, b: WgEnd, mtu: int = 1280,
                 log_dir: Optional[str] = None, kind: Optional[str] = None):
        self.tag = tag
        self.log_dir = log_dir
        self.a, self.b = a, b
        self.mtu = mtu
        self.kind = kind or lab_wireguard()
        self.control = {side: _control(self.kind, tag, side, end.name)
                        for side, end in (("a", a), ("b", b))}
        self.underlay = {side: f"{control_name(tag, side)}u" for side in "ab"}
        self._interfaces = _Interfaces(self.kind, log_dir)
        self._made_underlay = False
        self.public: dict = {}  # side -> public key, once up

    def __enter__(self) -> "WireGuardLink":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    @property
    def pids(self) -> dict:
        """{side: wireguard-go's PID} (none for kernel interfaces)."""
        return {side: p.pid for side, p in self._interfaces.procs.items()}

    def up(self) -> "WireGuardLink":
        _check_kind(f"WireGuard tunnel {self.tag}", self.kind)
        try:
            self._make_underlay()
            keys = self._keys = {side: _run(None, "wg", "genkey") for side in "ab"}
            public = {side: _run(None, "wg", "pubkey", input=keys[side] + "\n")
                      for side in "ab"}
            self.public = public
            for side, end in (("a", self.a), ("b", self.b)):
                self._start(side, end)
            for side, end, other, peer in (("a", self.a, "b", self.b),
                                           ("b", self.b, "a", self.a)):
                self._configure(side, end, keys[side], public[other], peer)
        except BaseException:
            self.down()
            raise
        return self

    def remove(self, side: str) -> None:
        """`side`'s interface gone (wg-quick down): its routes go with it."""
        self._interfaces.stop_one(side, self.control[side])

    def restore(self, side: str) -> None:
        """`side`'s interface made again with the same keys and peer (wg-quick up),
        greeting its peer at once as a restarted WARP client does."""
        end, other = (self.a, self.b) if side == "a" else (self.b, self.a)
        peer_public = self.public["b" if side == "a" else "a"]
        self._start(side, end)
        self._configure(side, end, self._keys[side], peer_public, other)
        _greet(end.netns, self.control[side], peer_public)

    def _make_underlay(self) -> None:
        with IPRoute(netns=self.a.netns) as ipr:
            ipr.link("add", ifname=self.underlay["a"], kind="veth",
                     peer={"ifname": self.underlay["b"], "net_ns_fd": self.b.netns})
            self._made_underlay = True
            index = ipr.link_lookup(ifname=self.underlay["a"])[0]
            address, prefix = self.a.underlay.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
            ipr.link("set", index=index, state="up")
        with IPRoute(netns=self.b.netns) as ipr:
            index = ipr.link_lookup(ifname=self.underlay["b"])[0]
            address, prefix = self.b.underlay.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
            ipr.link("set", index=index, state="up")

    def _start(self, side: str, end: WgEnd) -> None:
        self._interfaces.start(side, self.control[side], end.netns, end.name)

    def _configure(self, side: str, end: WgEnd, key: str, peer_public: str,
                   peer: WgEnd) -> None:
        name = self.control[side]
        _run(end.netns, "wg", "set", name, "private-key", "/dev/stdin",
             "listen-port", str(end.port), "peer", peer_public,
             "allowed-ips", ",".join(end.allowed_ips),
             "endpoint", f"{peer.underlay.split('/')[0]}:{peer.port}", input=key + "\n")
        _name_and_address(end.netns, name, end.name, end.address, self.mtu, end.routes)

    def down(self) -> None:
        """Stop the wireguard-go processes this tunnel started (by PID) and remove
        their control sockets, or delete its kernel interfaces; remove the underlay.
        Idempotent."""
        self._interfaces.stop(self.control)
        if self._made_underlay:
            _del_link(self.a.netns, self.underlay["a"])
            self._made_underlay = False

    def handshake(self, side: str = "a") -> bool:
        """Whether this end has completed a handshake with its peer."""
        end = self.a if side == "a" else self.b
        out = _run(end.netns, "wg", "show", self.control[side], "latest-handshakes")
        return any(line.split()[-1] != "0" for line in out.splitlines() if line.strip())


@dataclass(frozen=True)
class MeshMember:
    """One member of a WireGuard mesh: interface `name` in `netns` with `address`
    (addr/prefix), listening on UDP `port`. `owns` are the addresses and networks
    the other members send to it and accept from it (its own /32 and the subnets
    it is the gateway of, as Netmaker's egress ranges); `routes` the networks it
    routes into the tunnel in its main table (a socketnet host has none: policy
    routing does that)."""
    netns: str
    name: str
    address: str
    owns: Sequence[str]
    port: int = 51821
    routes: Sequence[str] = ()
    label: str = ""  # what to call it in counters ("droplet"); default its netns


class WireGuardMesh:
    """A full mesh of WireGuard peers, one interface per member (see the module
    doc). `tag` must be unique among tunnels on the machine. The underlay between
    members i < j is a veth `wgu<j>` (in i's netns, 198.18.<k/64>.<4k%256+1>/30) to
    `wgu<i>` (in j's, +2), k the pair's number: no underlay route is needed and no
    member reaches another except through the tunnel or its own pair's veth."""

    def __init__(self, tag: str, members: Sequence[MeshMember], mtu: int = 1280,
                 log_dir: Optional[str] = None, kind: Optional[str] = None):
        if len(members) > 10:
            raise WireGuardError(f"WireGuard mesh {tag}: at most 10 members")
        self.tag = tag
        self.members = tuple(members)
        self.mtu = mtu
        self.log_dir = log_dir
        self.kind = kind or lab_wireguard()
        self.control = [_control(self.kind, tag, str(i), m.name)
                        for i, m in enumerate(members)]
        self.public: list = []
        self._interfaces = _Interfaces(self.kind, log_dir)
        self._underlays: list = []  # (netns, veth) made, from the lower member's side

    @property
    def pids(self) -> dict:
        """{control name: wireguard-go's PID} (none for kernel interfaces)."""
        return {self.control[i]: p.pid for i, p in self._interfaces.procs.items()}

    def _pair_addresses(self, k: int) -> tuple:
        base = 4 * k
        net = f"198.18.{base // 256}"
        return f"{net}.{base % 256 + 1}/30", f"{net}.{base % 256 + 2}/30"

    def up(self) -> "WireGuardMesh":
        _check_kind(f"WireGuard mesh {self.tag}", self.kind)
        n = len(self.members)
        try:
            endpoints: dict = {}  # (i, j) -> the address i reaches j at
            k = 0
            for i in range(n):
                for j in range(i + 1, n):
                    a_addr, b_addr = self._pair_addresses(k)
                    k += 1
                    _veth(self.members[i].netns, f"wgu{j}", a_addr,
                          self.members[j].netns, f"wgu{i}", b_addr)
                    self._underlays.append((self.members[i].netns, f"wgu{j}"))
                    endpoints[(i, j)] = b_addr.split("/")[0]
                    endpoints[(j, i)] = a_addr.split("/")[0]
            self._keys = keys = [_run(None, "wg", "genkey") for _ in range(n)]
            self.public = [_run(None, "wg", "pubkey", input=key + "\n") for key in keys]
            self._endpoints = endpoints
            for i, member in enumerate(self.members):
                self._interfaces.start(i, self.control[i], member.netns, member.name)
            for i in range(n):
                self._configure(i)
        except BaseException:
            self.down()
            raise
        return self

    def _configure(self, i: int) -> None:
        member = self.members[i]
        args = ["wg", "set", self.control[i], "private-key", "/dev/stdin",
                "listen-port", str(member.port)]
        for j, peer in enumerate(self.members):
            if j != i:
                args += ["peer", self.public[j], "allowed-ips", ",".join(peer.owns),
                         "endpoint", f"{self._endpoints[(i, j)]}:{peer.port}"]
        _run(member.netns, *args, input=self._keys[i] + "\n")
        _name_and_address(member.netns, self.control[i], member.name, member.address,
                          self.mtu, member.routes)

    def remove(self, i: int) -> None:
        """Member `i`'s interface gone, as when netclient restarts: its routes go
        with it."""
        self._interfaces.stop_one(i, self.control[i])

    def restore(self, i: int) -> None:
        """Member `i`'s interface made again, same keys, peers and routes; it
        greets its peers at once (netclient keeps its peers alive, which makes a
        new interface start its handshakes when it comes up; without that a peer
        would keep sending into the old session until its own rekey, 15 s)."""
        member = self.members[i]
        self._interfaces.start(i, self.control[i], member.netns, member.name)
        self._configure(i)
        for j, public in enumerate(self.public):
            if j != i:
                _greet(member.netns, self.control[i], public)

    def add_owned(self, i: int, network: str) -> None:
        """Member `i` becomes the gateway of `network` as well, as when a Netmaker
        node is given a new egress range: every other member accepts it from and
        sends it to member `i` from now on (and after a `restore`)."""
        member = self.members[i]
        owns = (*member.owns, network)
        self.members = (*self.members[:i], replace(member, owns=owns),
                        *self.members[i + 1:])
        for j, peer in enumerate(self.members):
            if j != i:
                _run(peer.netns, "wg", "set", self.control[j], "peer", self.public[i],
                     "allowed-ips", ",".join(owns))

    def down(self) -> None:
        """Stop the wireguard-go processes (by PID) and remove their control sockets,
        or delete the kernel interfaces; remove the underlay veths. Idempotent."""
        self._interfaces.stop(dict(enumerate(self.control)))
        for netns, veth in self._underlays:
            _del_link(netns, veth)
        self._underlays.clear()

    def peer_label(self, public_key: str) -> str:
        for member, key in zip(self.members, self.public):
            if key == public_key:
                return member.label or member.netns
        return public_key[:8]


__all__ = ["KINDS", "MeshMember", "WgEnd", "WireGuardLink", "WireGuardMesh", "WireGuardError",
           "control_name", "control_socket"]
