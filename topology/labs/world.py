"""The seed's whole world on one machine, in network namespaces: what `socketnet lab`,
`socketnet demo` and the end-to-end tests run.

Owns building the world around a host config, serving on it, and taking it down
again; its record (`topology/labs/record.py`) says what it made, so another process
can remove exactly that; what its parts saw (port and exit counters, the VPS's
connection log) is `topology/labs/observe.py`'s. The parts, all in namespaces named
`sn-<name>-*`, never in the machine's own:

- **the host** (`topology.labs.lab.Lab`): its Open vSwitch in `sn-<name>-ovs` (the
  host's netns: the adapters live there), both bridges, containers 100, 102, 200,
  201 as namespaces with the config's addresses; made to match the config by **host
  apply** (`topology.host.plan.plan` + `topology.host.apply.apply`, the code of
  `socketnet host apply`: controller target, policy routing, nftables, SNAT), with
  socketnet (`socketnet run`, a detached child process: `topology.labs.nodes`)
  attached;
- **services**, real TCP listeners (socat): the xray client is a relay on its
  service port (10.0.0.102:8080) to the VPS's xray server through WARP; every other
  service of a container (MCP, op-dbus API, tcp 9573) and the gateway (tcp 3128)
  answer with who they are and whom they hear, then echo;
- **Netmaker** (`topology.labs.wireguard.WireGuardMesh`): nm-privacy on the host, a
  peer each on the DO droplet (`sn-<name>-drop`, 10.101.0.5: the external user
  enters there), node2, the VPS (10.101.0.10), and a relay (`sn-<name>-ext`,
  10.101.0.20: a Netmaker ext-client gateway whose peers own the upper half of
  the first Netmaker range, 10.101.128.0/17: where a flood of many Netmaker
  sources can come from, as WireGuard accepts only a peer's own addresses);
- **node2** (the config's first `socketnet.nodes` entry): a Lab of its own
  (`sn-<name>-n2-*`, its own Open vSwitch), its own config generated from the
  seed's shape (`topology.labs.nodes.node2_config`), its own socketnet, host apply,
  and a vector-DB container (tcp 6333) on its mesh bridge;
- **WARP** (`topology.labs.wireguard.WireGuardLink`): warp0 on the host to the WARP
  exit (`sn-<name>-warp`), which accepts only 172.16.0.2 and masquerades to its
  internet address 203.0.113.1, in front of **the VPS** (`sn-<name>-vps`,
  203.0.113.10, TEST-NET-3): its xray server (tcp 443) logs the source of every
  connection, so a test can see where a session came from.

    World(config, name).up() / .down(), or `with`     in-process (tests, demo)
    World.record -> dict; save()                      STATE_ROOT/<name>.json

pyroute2 is used here: never import this into the controller process.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Optional

import yaml
from pyroute2 import IPRoute, netns

from topology.config import SEED_CONFIG, load_host
from topology.host.apply import HostSystem, apply, read_state
from topology.host.plan import plan
from topology.labs import observe
from topology.labs.lab import HOST, Lab
from topology.labs.nodes import SYNC_TIMEOUT, Controller, node2_config, read_doc
from topology.labs.ovs import lab_datapath
from topology.labs.record import (STATE_ROOT, destroy, record_file, record_of, remove_state,
                                  write_record)
from topology.labs.wireguard import MeshMember, WgEnd, WireGuardLink, WireGuardMesh
from topology.model import Host, Role
from topology.system import in_netns, listening_tcp, stop_process, wait_until

# The world outside the host. Only ever inside the world's own namespaces.
WARP_ADDRESS = "172.16.0.2"     # what WARP accepts from the host (host apply SNATs to it)
WARP_END = "172.16.0.1"         # the WARP exit's tunnel address
WARP_EXIT = "203.0.113.1"       # the WARP exit's internet address: what the VPS sees
VPS = "203.0.113.10"            # the VPS, on the internet (TEST-NET-3)
VPS_PORT = 443                  # its xray server
GATEWAY_PORT = 3128             # the gateway container's listener (the seed names none)
NETMAKER_HOSTS = {"host": 1, "node2": 2, "droplet": 5, "vps": 10, "relay": 20}  # index in the range
LISTEN_TIMEOUT = 10.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}")


class WorldError(RuntimeError):
    """The world could not be built, found or removed; the message says which part."""


class World:
    """The seed's world around the host of `config`, named `name` (unique on the
    machine); see the module doc. `up()` returns with everything listening and
    both controllers' pipelines in sync."""

    def __init__(self, config: str = SEED_CONFIG, name: str = "world",
                 state_root: str = STATE_ROOT, warp_address: str = WARP_ADDRESS):
        if not _NAME.fullmatch(name):
            raise WorldError(f"world name {name!r}: up to 31 letters, digits, '-', '_', '.'")
        self.config = str(Path(config).resolve())
        self.name = name
        self.state_root = state_root
        self.dir = os.path.join(state_root, name)
        self.warp_address = warp_address
        self.host = load_host(self.config)
        self.node = self.host.nodes[0] if self.host.nodes else None
        self.node2_host: Optional[Host] = None
        self.lab: Optional[Lab] = None
        self.node2: Optional[Lab] = None
        self.droplet = f"sn-{name}-drop"
        self.warp = f"sn-{name}-warp"
        self.vps = f"sn-{name}-vps"
        self.relay = f"sn-{name}-ext"
        self.controllers: dict = {}  # "host" / "node2" -> Controller
        self.netmaker: Optional[WireGuardMesh] = None
        self.warp_link: Optional[WireGuardLink] = None
        self.own_namespaces: list = []  # the droplet's, WARP's, VPS's, relay's
        self.servers: list = []  # (label, netns, Popen)
        self.findings: list = []  # (node, Finding) from host apply
        nm = self.host.netmaker_ranges[0]
        self.nm_address = {k: str(nm[i]) for k, i in NETMAKER_HOSTS.items()}
        self.nm_prefix = nm.prefixlen
        # The relay's clients: the upper half of the first Netmaker range (the
        # members' addresses are all in the lower half).
        self.clients = list(nm.subnet(nm.prefixlen + 1))[1]

    # -- names -------------------------------------------------------------------

    @property
    def record_path(self) -> str:
        return record_file(self.state_root, self.name)

    def ns(self, where: str) -> str:
        """A netns by role: "host", a host container id ("200"), "droplet", "warp",
        "vps", "node2" (node2's host) or "node2:<id>" (a node2 container)."""
        if where in ("droplet", "warp", "vps", "relay"):
            return {"droplet": self.droplet, "warp": self.warp, "vps": self.vps,
                    "relay": self.relay}[where]
        if where == "node2":
            return self.node2.ns(HOST)
        if where.startswith("node2:"):
            return self.node2.ns(where.split(":", 1)[1])
        return self.lab.ns(where)

    def exec(self, where: str, *cmd: str, timeout: float = 10.0, input: Optional[str] = None,
             check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run(in_netns(self.ns(where), cmd), capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise WorldError(f"world {self.name}: in {where}: {' '.join(cmd)} exited "
                             f"{proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def talk(self, where: str, address: str, port: int, text: str = "hello",
             timeout: float = 4.0) -> tuple:
        """A TCP conversation from `where`: connect, send `text`, read until the server
        closes. (reached, what came back)."""
        proc = self.exec(where, "socat", f"-T{timeout:g}", "-",
                         f"TCP:{address}:{port},connect-timeout={timeout:g}",
                         input=text + "\n", timeout=timeout * 2 + 5)
        return proc.returncode == 0 and bool(proc.stdout), proc.stdout

    def pings(self, where: str, address: str, count: int = 1) -> bool:
        return self.exec(where, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1",
                         address).returncode == 0

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "World":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> "World":
        if os.path.exists(self.record_path) or os.path.exists(self.dir):
            raise WorldError(f"a world named {self.name!r} exists ({self.record_path}); "
                             f"`socketnet lab down --name {self.name}` removes it")
        os.makedirs(self.dir)
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        started = time.monotonic()
        # The controllers first: importing os-ken takes the longest.
        ctl = Controller("host", self.config, os.path.join(self.dir, "controller-host.log"))
        ctl.debuggable(self.dir, self.host.settings)
        self.controllers["host"] = ctl.spawn()
        if self.node is not None:
            subnet = self.node.subnets[0]
            path = os.path.join(self.dir, "node2.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(node2_config(read_doc(self.config), self.host, subnet), f,
                               sort_keys=False)
            self.node2_host = load_host(path)
            ctl = Controller("node2", path, os.path.join(self.dir, "controller-node2.log"))
            ctl.debuggable(self.dir, self.node2_host.settings)
            self.controllers["node2"] = ctl.spawn()
        self.save()
        self.lab = Lab(self.host, self.name, bridges=self._bridges)
        self.lab.up()
        self._link_ovs_ctl("host", self.lab)
        self.save()
        if self.node2_host is not None:
            self.node2 = Lab(self.node2_host, f"{self.name}-n2", bridges=self._bridges)
            self.node2.up()
            self._link_ovs_ctl("node2", self.node2)
            self.save()
        for ns in (self.droplet, self.warp, self.vps, self.relay):
            if ns in netns.listnetns():
                raise WorldError(f"netns {ns} exists: a stale world named {self.name}?")
            netns.create(ns)
            self.own_namespaces.append(ns)
            with IPRoute(netns=ns) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        self.save()
        self._warp_and_vps()
        self.save()
        self._netmaker()
        self.save()
        for label, lab in (("host", self.lab), ("node2", self.node2)):
            if lab is None:
                continue
            ctl = self.controllers[label]
            lab.ovs.forward_loopback(ctl.port)
            ctl.wait_listening()
            self._host_apply(label, lab, ctl)
            if lab.bridges == "apply":
                lab.attach_containers()
        self.save()
        self._services()
        self.save()
        for label, lab in (("host", self.lab), ("node2", self.node2)):
            if lab is not None:
                self.controllers[label].wait_synced([b.name for b in lab.host.bridges])
                self._wait_container_flows(label, lab)
        self.up_seconds = time.monotonic() - started
        self.save()

    def _link_ovs_ctl(self, label: str, lab: Lab) -> None:
        """The controller's ovs-vswitchd control socket (trace, audit, conntrack) is
        a link in the world's directory to the lab's own."""
        link = self.controllers[label].ovs_ctl
        if link and link.startswith(self.dir) and not os.path.lexists(link):
            os.symlink(lab.ovs.vswitchd_ctl, link)

    @property
    def _bridges(self) -> str:
        """Who makes the bridges (`Lab` `bridges`): host apply on the kernel datapath,
        as on a real host; the lab on the userspace one (see topology.labs.lab)."""
        return "apply" if lab_datapath() == "system" else "lab"

    def _wait_container_flows(self, label: str, lab: Lab) -> None:
        """Every container's port has flows of socketnet's: the controller has synced
        since the last port came (host apply's bridges connect before the
        containers' ports are added)."""
        ports = [(b.name, p.name) for b in lab.host.bridges for p in b.ports
                 if p.container is not None]

        def flows_for_every_port():
            dumped = {b.name: "\n".join(lab.ovs.dump_flows(b.name)) for b in lab.host.bridges}
            return all(f"in_port={name}" in dumped[bridge] or f'in_port="{name}"' in
                       dumped[bridge] for bridge, name in ports)
        wait_until(flows_for_every_port, SYNC_TIMEOUT,
                   f"socketnet's flows for every container port of {label}")

    def _warp_and_vps(self) -> None:
        host_ns = self.lab.ns(HOST)
        warp = self.host.privacy_bridge.one(Role.WARP_UPLINK).interface
        self.warp_link = WireGuardLink(
            f"{self.name}-warp",
            WgEnd(host_ns, warp, f"{self.warp_address}/32", ("0.0.0.0/0",), "192.0.2.1/30",
                  2408),
            WgEnd(self.warp, "warp", f"{WARP_END}/32", (f"{self.warp_address}/32",),
                  "192.0.2.2/30", 2408, routes=(f"{self.warp_address}/32",)),
            log_dir=self.dir).up()
        with IPRoute(netns=self.warp) as ipr:
            ipr.link("add", ifname="internet", kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": self.vps})
            index = ipr.link_lookup(ifname="internet")[0]
            ipr.addr("add", index=index, address=WARP_EXIT, prefixlen=24)
            ipr.link("set", index=index, state="up")
        with IPRoute(netns=self.vps) as ipr:
            index = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=index, address=VPS, prefixlen=24)
            ipr.link("set", index=index, state="up")
        self.exec("warp", "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        self.exec("warp", "nft", "-f", "-", check=True, input=(
            "table ip warp {\n\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            '\t\toifname "internet" masquerade\n\t}\n}\n'))

    def _netmaker(self) -> None:
        host = self.host
        nm = self.host.mesh.one(Role.NETMAKER_UPLINK).interface
        a = self.nm_address
        p = self.nm_prefix
        host_owns = [f"{a['host']}/32", *(str(c) for c in host.management_subnet.iter_cidrs()),
                     *(str(c) for c in host.privacy_subnet.iter_cidrs())]
        members = [MeshMember(self.lab.ns(HOST), nm, f"{a['host']}/{p}", host_owns,
                              label="this host")]
        node2_routes = []
        if self.node2 is not None:
            n2 = self.node2_host
            node2_owns = [f"{a['node2']}/32",
                          *(str(c) for c in n2.management_subnet.iter_cidrs())]
            members.append(MeshMember(self.node2.ns(HOST),
                                      n2.mesh.one(Role.NETMAKER_UPLINK).interface,
                                      f"{a['node2']}/{p}", node2_owns, label="node2"))
            node2_routes = [str(c) for c in n2.management_subnet.iter_cidrs()]
        mgmt = [str(c) for c in host.management_subnet.iter_cidrs()]
        privacy = [str(c) for c in host.privacy_subnet.iter_cidrs()]
        members.append(MeshMember(self.droplet, "netmaker", f"{a['droplet']}/{p}",
                                  [f"{a['droplet']}/32"],
                                  routes=(*mgmt, *privacy, *node2_routes), label="droplet"))
        members.append(MeshMember(self.vps, "netmaker", f"{a['vps']}/{p}", [f"{a['vps']}/32"],
                                  routes=(*mgmt, *node2_routes), label="vps"))
        members.append(MeshMember(self.relay, "netmaker", f"{a['relay']}/{p}",
                                  [f"{a['relay']}/32", str(self.clients)],
                                  routes=(*mgmt, *privacy), label="relay"))
        self.netmaker = WireGuardMesh(f"{self.name}-nm", members, log_dir=self.dir).up()
        observe.install_counters(self)

    def _host_apply(self, label: str, lab: Lab, ctl: Controller) -> None:
        """`socketnet host apply` on the node's netns, with the lab's datapath: the
        bridges, their ports and the adapters (unless the lab made them, exactly as
        apply would), the controller target, the routed glue, the filter."""
        system = HostSystem(netns=lab.ns(HOST), vsctl=lab.ovs.vsctl)
        result = plan(lab.host, read_state(lab.host, system), datapath_type=lab.ovs.datapath,
                      warp_address=self.warp_address, controller=ctl.target)
        self.findings += [(label, f) for f in result.findings]
        if result.errors:
            raise WorldError(f"world {self.name}: host apply on {label} found errors:\n"
                             + "\n".join(map(str, result.errors)))
        apply(result, system)

    def _spawn(self, label: str, ns: str, *cmd: str) -> subprocess.Popen:
        log = open(os.path.join(self.dir, "servers.log"), "ab")
        try:
            proc = subprocess.Popen(in_netns(ns, cmd), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self.servers.append((label, ns, proc))
        return proc

    def _listener(self, label: str, ns: str, address: str, port: int, answer: str) -> tuple:
        """A socat TCP server that says `answer` (a shell line: $SOCAT_PEERADDR is the
        client) then echoes what it is sent."""
        proc = self._spawn(label, ns, "socat",
                           f"TCP-LISTEN:{port},bind={address},fork,reuseaddr",
                           f"SYSTEM:{answer}; cat")
        return proc, address, port

    def _services(self) -> None:
        waiting = []
        xray = self.host.xray_client.container
        for service in xray.services:
            waiting.append((self._spawn(
                f"xray client relay {xray.address}:{service.port} -> {VPS}:{VPS_PORT}",
                self.lab.ns(xray.id), "socat",
                f"TCP-LISTEN:{service.port},bind={xray.address},fork,reuseaddr",
                f"TCP:{VPS}:{VPS_PORT},connect-timeout=5"), str(xray.address), service.port))
        containers = [(self.lab, c, "") for b in self.host.bridges for c in b.containers
                      if c is not xray]
        if self.node2 is not None:
            containers += [(self.node2, c, "node2 ") for c in self.node2_host.mesh.containers]
        for lab, c, where in containers:
            ports = [(s.name, s.port) for s in c.services if s.protocol == "tcp"] \
                or [(c.name, GATEWAY_PORT)]
            for service, port in ports:
                waiting.append(self._listener(
                    f"{where}{c.name} {c.address}:{port}", lab.ns(c.id), str(c.address), port,
                    f'echo "{c.name} {c.address}:{port} hears $SOCAT_PEERADDR"'))
        log = os.path.join(self.dir, observe.VPS_LOG)
        open(log, "a").close()
        waiting.append(self._listener(
            f"VPS xray server *:{VPS_PORT}", self.vps, "0.0.0.0", VPS_PORT,
            f'echo "$SOCAT_PEERADDR $SOCAT_SOCKADDR" >> {log}; '
            f'echo "vps $SOCAT_SOCKADDR:{VPS_PORT} saw $SOCAT_PEERADDR"'))
        for proc, address, port in waiting:
            self._wait_listening(proc, address, port)

    def _wait_listening(self, proc: subprocess.Popen, address: str, port: int) -> None:
        def ready():
            if proc.poll() is not None:
                raise WorldError(f"server on {address}:{port} exited {proc.returncode}; "
                                 f"see {self.dir}/servers.log")
            return listening_tcp(proc.pid, port, address)
        wait_until(ready, LISTEN_TIMEOUT, f"a listener on {address}:{port}")

    def serve(self, where: str, address: str, port: int, name: str) -> None:
        """One more TCP server, in `where` (see `ns`) on `address`:`port`, that says
        "`name` <address>:<port> hears <client>" then echoes; it stops with the
        world. Returns once it listens."""
        proc, _, _ = self._listener(f"{name} {address}:{port}", self.ns(where), address,
                                    port, f'echo "{name} {address}:{port} hears $SOCAT_PEERADDR"')
        self._wait_listening(proc, address, port)

    def down(self) -> None:
        """Stop and remove everything this world made (live handles first, then what
        the record names), and the record. Idempotent."""
        for ctl in self.controllers.values():
            ctl.stop()
        for _, _, proc in self.servers:
            if proc.poll() is None:
                stop_process(proc.pid, "socat", group=True)
            proc.wait()
        self.servers.clear()
        record = self.record if os.path.isdir(self.dir) else None
        for part in (self.netmaker, self.warp_link, self.node2, self.lab):
            if part is not None:
                part.down()
        for ns in self.own_namespaces:
            if ns in netns.listnetns():
                netns.remove(ns)
        self.own_namespaces.clear()
        if record is not None:
            destroy(record)
        else:
            remove_state(self.state_root, self.name)

    # -- the record ----------------------------------------------------------------

    @property
    def record(self) -> dict:
        """What this world made, as it stands (see `topology.labs.record`)."""
        return record_of(self)

    @property
    def addresses(self) -> dict:
        """The world outside the host, as the record lists it."""
        return {"vps": VPS, "vps_port": VPS_PORT, "warp_exit": WARP_EXIT,
                "netmaker": self.nm_address}

    def save(self) -> None:
        write_record(self.record_path, self.record)

    # -- controllers -----------------------------------------------------------------

    def stop_controller(self, label: str = "host") -> None:
        self.controllers[label].stop()
        self.save()

    def start_controller(self, label: str = "host", timeout: float = 60.0) -> dict:
        """Start a stopped controller again (same port: the bridges reconnect to it)
        and wait (up to `timeout` s to listen) for its bridges' pipelines to be in
        sync."""
        ctl = self.controllers[label]
        after = ctl.mark()
        ctl.start(timeout)
        self.save()
        lab = self.lab if label == "host" else self.node2
        return ctl.wait_synced([b.name for b in lab.host.bridges], after=after)

    # -- observing (topology/labs/observe.py) ---------------------------------------

    def port_counters(self) -> dict:
        """{(node, bridge, port): (rx packets, tx packets)} from the switches."""
        return observe.port_counters(self)

    def exit_counters(self, new: bool = False) -> dict:
        """IPv4 packets this host sent out of its WireGuard uplinks, per peer."""
        return observe.exit_counters(self, new)

    def ip_received(self) -> dict:
        """{where: IPv4 packets its kernel received} for every container and far end."""
        return observe.ip_received(self)

    def vps_connections(self) -> list:
        """[(source address, the VPS address it reached)] in the order they came."""
        return observe.vps_connections(self)


__all__ = ["World", "WorldError", "VPS", "VPS_PORT", "WARP_EXIT", "WARP_END",
           "WARP_ADDRESS", "GATEWAY_PORT"]
