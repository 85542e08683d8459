"""Real WireGuard between two network namespaces, for labs: wireguard-go and wg.

Owns making one WireGuard tunnel (two interfaces, one per namespace, over an
underlay veth between the namespaces) and removing it again, by name and PID.

    WireGuardLink(tag, a, b, mtu=1280).up() / .down(), or `with`:
        a, b: WgEnd(netns, name, address, allowed_ips, underlay, port)

Why two names per interface: wireguard-go's control socket is
`/var/run/wireguard/<interface>.sock`, one directory for every network namespace,
so two labs that both want a `warp0` would collide (FIELD-NOTES). Each interface is
therefore born with a name unique on the machine (`swg<hash of tag><a|b>`, which
names its control socket for its whole life: `wg show swg...a`), configured, then
renamed inside its namespace to the name the config knows (`warp0`, `nm-privacy`).
wireguard-go keeps serving a renamed interface.

The result is layer 3 exactly like the real thing: ARPHRD_NONE, no hardware
address (`topology.kind` says l3), MTU 1280 as WARP and Netmaker use.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from typing import Optional, Sequence

from pyroute2 import IPRoute

from topology.ovs import binary, stop_process, wait_until

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


class WireGuardLink:
    """A WireGuard tunnel between `a.netns` and `b.netns`; see the module doc.
    `tag` must be unique among tunnels on the machine (a lab name and a word)."""

    def __init__(self, tag: str, a: WgEnd, b: WgEnd, mtu: int = 1280):
        self.tag = tag
        self.a, self.b = a, b
        self.mtu = mtu
        self.control = {"a": control_name(tag, "a"), "b": control_name(tag, "b")}
        self.underlay = {"a": f"{self.control['a']}u", "b": f"{self.control['b']}u"}
        self._procs: dict = {}  # side -> Popen of wireguard-go
        self._made_underlay = False

    def __enter__(self) -> "WireGuardLink":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    @property
    def pids(self) -> dict:
        return {side: p.pid for side, p in self._procs.items()}

    def up(self) -> "WireGuardLink":
        missing = [b for b in ("wireguard-go", "wg", "ip") if binary(b) is None]
        if missing:
            raise WireGuardError(f"WireGuard tunnel {self.tag}: missing {', '.join(missing)} "
                                 "(install wireguard-go wireguard-tools iproute2)")
        try:
            self._make_underlay()
            keys = {side: _run(None, "wg", "genkey") for side in "ab"}
            public = {side: _run(None, "wg", "pubkey", input=keys[side] + "\n")
                      for side in "ab"}
            for side, end in (("a", self.a), ("b", self.b)):
                self._start(side, end)
            for side, end, other, peer in (("a", self.a, "b", self.b),
                                           ("b", self.b, "a", self.a)):
                self._configure(side, end, keys[side], public[other], peer)
        except BaseException:
            self.down()
            raise
        return self

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
        name = self.control[side]
        if os.path.exists(control_socket(name)):
            raise WireGuardError(f"{control_socket(name)} exists: another tunnel tagged "
                                 f"{self.tag!r} runs, or a stale one")
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        self._procs[side] = subprocess.Popen(
            [binary("ip") or "ip", "netns", "exec", end.netns, binary("wireguard-go"), "-f", name],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        proc = self._procs[side]

        def ready():
            if proc.poll() is not None:
                raise WireGuardError(f"wireguard-go {name} in {end.netns} exited "
                                     f"{proc.returncode}: {proc.stderr.read().decode().strip()}")
            return os.path.exists(control_socket(name))
        wait_until(ready, 5, f"wireguard-go {name} in {end.netns} to listen")

    def _configure(self, side: str, end: WgEnd, key: str, peer_public: str,
                   peer: WgEnd) -> None:
        name = self.control[side]
        _run(end.netns, "wg", "set", name, "private-key", "/dev/stdin",
             "listen-port", str(end.port), "peer", peer_public,
             "allowed-ips", ",".join(end.allowed_ips),
             "endpoint", f"{peer.underlay.split('/')[0]}:{peer.port}", input=key + "\n")
        with IPRoute(netns=end.netns) as ipr:
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, ifname=end.name, mtu=self.mtu)
            address, prefix = end.address.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
            ipr.link("set", index=index, state="up")
            for route in end.routes:
                ipr.route("add", dst=route, oif=index)

    def down(self) -> None:
        """Stop the wireguard-go processes this tunnel started (by PID), remove their
        control sockets and the underlay. Idempotent."""
        for side, proc in list(self._procs.items()):
            if proc.poll() is None:
                stop_process(proc.pid, self.control[side])
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
            try:
                os.unlink(control_socket(self.control[side]))
            except FileNotFoundError:
                pass
            del self._procs[side]
        if self._made_underlay:
            try:
                with IPRoute(netns=self.a.netns) as ipr:
                    index = ipr.link_lookup(ifname=self.underlay["a"])
                    if index:
                        ipr.link("del", index=index[0])  # its peer goes with it
            except Exception:  # the namespace itself is gone: so is the veth
                pass
            self._made_underlay = False

    def handshake(self, side: str = "a") -> bool:
        """Whether this end has completed a handshake with its peer."""
        end = self.a if side == "a" else self.b
        out = _run(end.netns, "wg", "show", self.control[side], "latest-handshakes")
        return any(line.split()[-1] != "0" for line in out.splitlines() if line.strip())


__all__ = ["WgEnd", "WireGuardLink", "WireGuardError", "control_name", "control_socket"]
