"""The seed's whole world on one machine, in network namespaces: what `socketnet lab`,
`socketnet demo` and the end-to-end tests run.

Owns building the world around a host config, recording every namespace, process
and directory it made (`World.record`, a JSON document), tearing down exactly that
(`destroy(record)`, also from another process), and observing it (port and exit
counters, the VPS's connection log). The parts, all in namespaces named
`sn-<name>-*`, never in the machine's own:

- **the host** (`topology.lab.Lab`): its Open vSwitch in `sn-<name>-ovs` (the host's
  netns: the adapters live there), both bridges, containers 100, 102, 200, 201 as
  namespaces with the config's addresses; made to match the config by **host
  apply** (`topology.host.plan` + `topology.host_apply.apply`, the code of
  `socketnet host apply`: controller target, policy routing, nftables, SNAT), with
  socketnet (`socketnet run`, a detached child process) attached;
- **services**, real TCP listeners (socat): the xray client is a relay on its
  service port (10.0.0.102:8080) to the VPS's xray server through WARP; every other
  service of a container (MCP, op-dbus API, tcp 9573) and the gateway (tcp 3128)
  answer with who they are and whom they hear, then echo;
- **Netmaker** (`topology.wireguard.WireGuardMesh`): nm-privacy on the host, a
  peer each on the DO droplet (`sn-<name>-drop`, 10.101.0.5: the external user
  enters there), node2, the VPS (10.101.0.10), and a relay (`sn-<name>-ext`,
  10.101.0.20: a Netmaker ext-client gateway whose peers own the upper half of
  the first Netmaker range, 10.101.128.0/17: where a flood of many Netmaker
  sources can come from, as WireGuard accepts only a peer's own addresses);
- **node2** (the config's first `socketnet.nodes` entry): a Lab of its own
  (`sn-<name>-n2-*`, its own Open vSwitch), its own config generated from the
  seed's shape (`node2_config`), its own socketnet, host apply, and a vector-DB
  container (tcp 6333) on its mesh bridge;
- **WARP** (`topology.wireguard.WireGuardLink`): warp0 on the host to the WARP exit
  (`sn-<name>-warp`), which accepts only 172.16.0.2 and masquerades to its internet
  address 203.0.113.1, in front of **the VPS** (`sn-<name>-vps`, 203.0.113.10, TEST-NET-3):
  its xray server (tcp 443) logs the source of every connection, so a test can see
  where a session came from.

    World(config, name).up() / .down(), or `with`     in-process (tests, demo)
    World.record -> dict; save()/load_record(name)    /run/socketnet/labs/<name>.json
    destroy(record)                                   remove what a record names
    status(record) -> [Part]                          what runs, and whether alive

pyroute2 is used here: never import this into the controller process.
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import yaml
from netaddr import IPNetwork
from pyroute2 import IPRoute, netns

from controller.process import SYNC_LINE, ControllerProcess
from topology.config import SEED_CONFIG, load_host
from topology.host import plan
from topology.host_apply import HostSystem, apply, read_state
from topology.lab import HOST, Lab
from topology.model import Host, Role
from topology.ovs import lab_datapath
from topology.system import (in_netns, listening_tcp, process_alive, process_cmdline, stop_process,
                             wait_until)
from topology.wireguard import MeshMember, WgEnd, WireGuardLink, WireGuardMesh, control_socket

STATE_ROOT = "/run/socketnet/labs"

# The world outside the host. Only ever inside the world's own namespaces.
WARP_ADDRESS = "172.16.0.2"     # what WARP accepts from the host (host apply SNATs to it)
WARP_END = "172.16.0.1"         # the WARP exit's tunnel address
WARP_EXIT = "203.0.113.1"       # the WARP exit's internet address: what the VPS sees
VPS = "203.0.113.10"            # the VPS, on the internet (TEST-NET-3)
VPS_PORT = 443                  # its xray server
GATEWAY_PORT = 3128             # the gateway container's listener (the seed names none)
VECTOR_DB_PORT = 6333
NETMAKER_HOSTS = {"host": 1, "node2": 2, "droplet": 5, "vps": 10, "relay": 20}  # index in the range
LISTEN_TIMEOUT = 10.0
SYNC_TIMEOUT = 30.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}")


class WorldError(RuntimeError):
    """The world could not be built, found or removed; the message says which part."""


# --------------------------------------------------------------------------- controller


class Controller(ControllerProcess):
    """A world's controller, named by its node: a ControllerProcess with a log file
    (it outlives the command that started it), made ready to debug (`debuggable`)."""

    def __init__(self, label: str, config: str, log: str, port: Optional[int] = None):
        super().__init__(config, port, log=log)
        self.label = label
        # Ready to debug: where ovs-vswitchd's control socket will be (a link the
        # world makes once its Open vSwitch runs) and the REST token, in the
        # environment the controller reads them from (unless its config names them).
        self.token_file: Optional[str] = None
        self.ovs_ctl: Optional[str] = None

    def debuggable(self, directory: str, settings) -> None:
        """Give the controller a REST token of its own (or the one its config
        names) and ovs-vswitchd's control socket at `directory`/ovs-LABEL.ctl."""
        self.ovs_ctl = settings.rest_ovs_ctl or os.path.join(directory, f"ovs-{self.label}.ctl")
        self.env["SOCKETNET_OVS_CTL"] = self.ovs_ctl
        if settings.rest_token_file:
            self.token_file = settings.rest_token_file
            return
        self.token_file = os.path.join(directory, f"rest-token-{self.label}")
        token = secrets.token_urlsafe(24)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        self.env[settings.rest_token_env] = token

    def wait_synced(self, bridges: Sequence[str], timeout: float = SYNC_TIMEOUT,
                    after: int = 0) -> dict:
        return super().wait_synced(bridges, timeout, after)


# --------------------------------------------------------------------------- node2


def node2_config(seed_doc: dict, host: Host, subnet: IPNetwork) -> dict:
    """Node2's config, in the seed's shape: the same bridges, uplinks and inter-bridge
    link; on its mesh a vector-DB container in `subnet` (gateway .1, itself .30,
    tcp 6333); on its privacy bridge an xray client in the next /24 (the config needs
    one); `socketnet.nodes` lists this host's management subnet; no classification
    rules naming this host's addresses, no seed flows."""
    doc = copy.deepcopy(seed_doc)
    mesh, privacy = host.mesh.name, host.privacy.name
    privacy_net = IPNetwork(f"{subnet.next().network}/24")
    doc["openflow"] = {"bridges": {mesh: {"flows": []}, privacy: {"flows": []}}}
    doc["lxc"] = {"containers": [
        {"id": "300", "veth": "veth300", "bridge": mesh, "running": True,
         "properties": {"name": "vector-db", "ipv4_address": f"{subnet[30]}/{subnet.prefixlen}",
                        "gateway": str(subnet[1]),
                        "services": [{"name": "vector-db", "protocol": "tcp",
                                      "port": VECTOR_DB_PORT}]}},
        {"id": "302", "veth": "veth302", "bridge": privacy, "running": True,
         "properties": {"name": "xray-client", "ipv4_address": f"{privacy_net[102]}/24",
                        "gateway": str(privacy_net[1]),
                        "services": [{"name": "xray-client", "protocol": "tcp",
                                      "port": 8080}]}},
    ]}
    sn = doc.setdefault("socketnet", {}) or {}
    doc["socketnet"] = sn
    sn["nodes"] = [{"name": "seed", "subnets": [str(c) for c in
                                                host.management_subnet.iter_cidrs()]}]
    classification = sn.get("classification")
    if isinstance(classification, dict):
        classification["rules"] = []
    for key in ("metrics", "rest"):  # the world gives each controller its own ports
        sn.pop(key, None)
    return doc


def _read_doc(path: str) -> dict:
    with open(path) as f:
        return json.load(f) if path.endswith(".json") else yaml.safe_load(f)


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Part:
    """One line of `status`: what, its detail (pid, netns), whether it is alive."""
    kind: str
    name: str
    detail: str
    alive: bool


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
        self._made_ns: list = []
        self._servers: list = []  # (label, netns, Popen)
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
        return os.path.join(self.state_root, f"{self.name}.json")

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
                yaml.safe_dump(node2_config(_read_doc(self.config), self.host, subnet), f,
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
            self._made_ns.append(ns)
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
        as on a real host; the lab on the userspace one (see topology.lab)."""
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
        warp = self.host.privacy.one(Role.WARP_UPLINK).interface
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
        for where, ifaces in _COUNTED.items():
            self._counters(where, "prerouting", [
                f"iifname {{ {ifaces} }} icmp type destination-unreachable return",
                f'iifname {{ {ifaces} }} meta nfproto ipv4 counter name "received"'])
        exits = []
        for suffix, state in (("", ""), ("_new", "ct state new ")):
            exits.append(f'oifname "{self._warp_interface}" {state}'
                         f'counter name "exit_warp{suffix}"')
            for i, member in enumerate(self.netmaker.members[1:], start=1):
                exits.append(f'oifname "{self._nm_interface}" ip daddr '
                             f'{{ {", ".join(member.owns)} }} {state}'
                             f'counter name "exit_nm_{i}{suffix}"')
        self._counters("host", "postrouting", exits)

    def _counters(self, where: str, hook: str, rules: list) -> None:
        """The world's own observation counters in `where` (table `inet world`, not
        host apply's): named counters, counted by `rules` at `hook`."""
        names = re.findall(r'counter name "(\w+)"', "\n".join(rules))
        lines = ["table inet world {", *(f"\tcounter {n} {{}}" for n in dict.fromkeys(names)),
                 f"\tchain {hook} {{",
                 f"\t\ttype filter hook {hook} priority raw; policy accept;",
                 *(f"\t\t{r}" for r in rules), "\t}", "}", ""]
        self.exec(where, "nft", "-f", "-", input="\n".join(lines), check=True)

    def _read_counters(self, where: str) -> dict:
        doc = json.loads(self.exec(where, "nft", "-j", "list", "counters", "table", "inet",
                                   "world", check=True).stdout)
        return {item["counter"]["name"]: item["counter"]["packets"]
                for item in doc["nftables"] if "counter" in item}

    @property
    def _warp_interface(self) -> str:
        return self.host.privacy.one(Role.WARP_UPLINK).interface

    @property
    def _nm_interface(self) -> str:
        return self.host.mesh.one(Role.NETMAKER_UPLINK).interface

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
        self._servers.append((label, ns, proc))
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
        log = os.path.join(self.dir, "vps-connections.log")
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
        for _, _, proc in self._servers:
            if proc.poll() is None:
                stop_process(proc.pid, "socat", group=True)
            proc.wait()
        self._servers.clear()
        record = self.record if os.path.isdir(self.dir) else None
        for part in (self.netmaker, self.warp_link, self.node2, self.lab):
            if part is not None:
                part.down()
        for ns in self._made_ns:
            if ns in netns.listnetns():
                netns.remove(ns)
        self._made_ns.clear()
        if record is not None:
            destroy(record)
        else:
            _remove_state(self.state_root, self.name)

    # -- the record ----------------------------------------------------------------

    @property
    def record(self) -> dict:
        processes = []
        for ctl in self.controllers.values():
            if ctl.pid is not None:
                processes.append({"what": f"socketnet controller ({ctl.label})",
                                  "pid": ctl.pid, "marker": ctl.marker, "group": False})
        for label, ns, proc in self._servers:
            processes.append({"what": label, "pid": proc.pid, "marker": "socat",
                              "group": True, "netns": ns})
        sockets = []
        tunnels = []
        if self.netmaker is not None:
            tunnels.append(("Netmaker", list(self.netmaker.control), self.netmaker.pids))
        if self.warp_link is not None:
            tunnels.append(("WARP", list(self.warp_link.control.values()),
                            {self.warp_link.control[side]: pid
                             for side, pid in self.warp_link.pids.items()}))
        for what, controls, pids in tunnels:
            for control, pid in pids.items():
                processes.append({"what": f"wireguard-go {control} ({what})", "pid": pid,
                                  "marker": control, "group": False})
            if pids:  # wireguard-go's; kernel interfaces have none
                sockets += [control_socket(c) for c in controls]
        ovs = []
        namespaces = []
        for label, lab in (("host", self.lab), ("node2", self.node2)):
            if lab is None:
                continue
            namespaces += lab.namespaces
            for ns, pid in lab.processes:
                processes.append({"what": f"{label} lab process", "pid": pid,
                                  "marker": "", "group": True, "netns": ns})
            if lab.ovs.dir is not None:
                ovs.append({"node": label, "dir": lab.ovs.dir, "netns": lab.ovs.netns,
                            "db": f"unix:{lab.ovs.db_sock}"})
                for what, pid in lab.ovs.pids.items():
                    relay = what.startswith("relay-")
                    processes.append({"what": f"{what} ({label})", "pid": pid,
                                      "marker": "socat" if relay else lab.ovs.dir,
                                      "group": relay})
        namespaces += self._made_ns
        return {
            "name": self.name, "config": self.config, "dir": self.dir,
            "namespaces": namespaces, "processes": processes, "ovs": ovs,
            "wireguard_sockets": sockets,
            "controllers": {k: {"pid": c.pid, "target": c.target, "log": c.log,
                                "config": c.config, "rest": f"{c.rest_url}/v1",
                                "metrics": c.metrics_url, "token_file": c.token_file,
                                "ovs_ctl": c.ovs_ctl,
                                "bridges": [b.name for b in (self.host if k == "host"
                                                             else self.node2_host).bridges]}
                            for k, c in self.controllers.items()},
            "wireguard": {
                "netmaker": ({"controls": self.netmaker.control,
                              "members": [m.label for m in self.netmaker.members],
                              "public": self.netmaker.public} if self.netmaker else None),
                "warp": ({"controls": self.warp_link.control, "public": self.warp_link.public}
                         if self.warp_link else None)},
            "addresses": {"vps": VPS, "vps_port": VPS_PORT, "warp_exit": WARP_EXIT,
                          "netmaker": self.nm_address},
        }

    def save(self) -> None:
        os.makedirs(self.state_root, exist_ok=True)
        tmp = self.record_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.record, f, indent=2)
        os.replace(tmp, self.record_path)

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

    # -- observing -----------------------------------------------------------------

    def port_counters(self) -> dict:
        """{(node, bridge, port): (rx packets, tx packets)} from the switches, LOCAL
        ports included."""
        counters = {}
        for label, lab in (("host", self.lab), ("node2", self.node2)):
            if lab is None:
                continue
            for bridge in lab.host.bridges:
                counters.update({(label, bridge.name, port): value for port, value in
                                 parse_dump_ports(lab.ovs.ofctl("dump-ports", "--names",
                                                                bridge.name)).items()})
        return counters

    def exit_counters(self, new: bool = False) -> dict:
        """IPv4 packets this host sent out of its WireGuard uplinks, per peer:
        {"warp0 -> WARP exit": n, "nm-privacy -> droplet": n, ...}; with `new`, only
        those that start a connection (conntrack state new: not replies, not a late
        retransmission of a finished session). Counted by the world's own nftables
        counters in the host's netns: WireGuard's keepalives and handshakes are not
        anyone's packets."""
        counted = self._read_counters("host")
        suffix = "_new" if new else ""
        out = {f"{self._warp_interface} -> WARP exit": counted[f"exit_warp{suffix}"]}
        for i, member in enumerate(self.netmaker.members[1:], start=1):
            out[f"{self._nm_interface} -> {member.label}"] = counted[f"exit_nm_{i}{suffix}"]
        return out

    def ip_received(self) -> dict:
        """{where: IPv4 packets its kernel received, ICMP destination-unreachable
        errors not counted} for every container (node2's as "node2:<id>"), and what
        the droplet, the WARP exit and the VPS received on their tunnels (and the
        VPS on the internet), not their underlays: ARP does not count, so a probe's
        target that stays at the same number got nothing (a prohibit route's error
        back to the probe's sender does not count either)."""
        places = [c.id for b in self.host.bridges for c in b.containers]
        if self.node2 is not None:
            places += [f"node2:{c.id}" for b in self.node2_host.bridges for c in b.containers]
        out = {}
        for where in _COUNTED:
            out[where] = self._read_counters(where)["received"]
        for where in places:
            snmp = self.exec(where, "cat", "/proc/net/snmp", check=True).stdout.splitlines()
            table = {}
            for head, values in zip(snmp[::2], snmp[1::2]):
                names, numbers = head.split()[1:], values.split()[1:]
                table[head.split(":")[0]] = dict(zip(names, map(int, numbers)))
            out[where] = table["Ip"]["InReceives"] - table["Icmp"]["InDestUnreachs"]
        return out

    def vps_connections(self) -> list:
        """[(source address, the VPS address it reached)] in the order they came."""
        try:
            with open(os.path.join(self.dir, "vps-connections.log")) as f:
                return [tuple(line.split()[:2]) for line in f if line.strip()]
        except FileNotFoundError:
            return []


# The droplet's, WARP exit's and VPS's interfaces whose IPv4 ingress `ip_received`
# counts (their underlay's WireGuard datagrams are not the traffic that matters).
_COUNTED = {"droplet": '"netmaker"', "warp": '"warp"', "vps": '"netmaker", "eth0"'}


def parse_dump_ports(text: str) -> dict:
    """`ovs-ofctl --names dump-ports` -> {port name: (rx packets, tx packets)}."""
    counters, port, rx = {}, None, None
    for line in text.splitlines():
        m = re.match(r'\s*port\s+"?([^":]+)"?:\s*rx pkts=(\d+)', line)
        if m:
            port, rx = m.group(1).strip(), int(m.group(2))
            continue
        m = re.match(r"\s*tx pkts=(\d+)", line)
        if m and port is not None:
            counters[port] = (rx, int(m.group(1)))
            port = None
    return counters


# --------------------------------------------------------------------------- by record


def load_record(name: str, state_root: str = STATE_ROOT) -> Optional[dict]:
    try:
        with open(os.path.join(state_root, f"{name}.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _remove_state(state_root: str, name: str) -> None:
    shutil.rmtree(os.path.join(state_root, name), ignore_errors=True)
    for path in (os.path.join(state_root, f"{name}.json"),
                 os.path.join(state_root, f"{name}.json.tmp")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(state_root)  # only when no other lab is recorded there
    except OSError:
        pass


def _alive(entry: dict) -> bool:
    return process_alive(entry["pid"]) and entry.get("marker", "") in \
        process_cmdline(entry["pid"])


def destroy(record: dict) -> list:
    """Remove exactly what `record` names: its processes (by PID, each checked
    against its command line so a recycled PID is never signalled), WireGuard
    control sockets, Open vSwitch directories, namespaces, and the state. Returns
    what it removed, one line each. Idempotent."""
    removed = []
    signalled = []  # process groups signalled: down returns once every member is gone
    for entry in record.get("processes", []):
        if _alive(entry):
            if entry.get("marker"):
                stop_process(entry["pid"], entry["marker"], group=entry.get("group", False))
                if entry.get("group"):
                    signalled.append(entry["pid"])
            else:  # a lab process without a marker: its netns must still match
                ns = entry.get("netns")
                if ns and _netns_of(entry["pid"]) == _netns_inode(ns):
                    try:
                        os.killpg(entry["pid"], signal.SIGKILL)
                        signalled.append(entry["pid"])
                    except ProcessLookupError:
                        pass
            removed.append(f"process {entry['pid']} ({entry['what']})")
    for pgid in signalled:
        for pid in group_members(pgid):
            try:
                os.kill(pid, signal.SIGKILL)  # a member the group's signal left behind
            except ProcessLookupError:
                pass
        wait_until(lambda g=pgid: not group_members(g), 10,
                   f"the processes of group {pgid} to exit")
    for path in record.get("wireguard_sockets", []):
        try:
            os.unlink(path)
            removed.append(f"socket {path}")
        except FileNotFoundError:
            pass
    for ovs in record.get("ovs", []):
        if os.path.isdir(ovs["dir"]):
            shutil.rmtree(ovs["dir"], ignore_errors=True)
            removed.append(f"directory {ovs['dir']}")
    existing = set(netns.listnetns())
    for ns in reversed(record.get("namespaces", [])):
        if ns in existing:
            netns.remove(ns)
            removed.append(f"netns {ns}")
    state_root = os.path.dirname(record["dir"])
    _remove_state(state_root, record["name"])
    return removed


def group_members(pgid: int) -> list:
    """The live processes of process group `pgid` (zombies are gone enough)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _netns_inode(ns: str) -> Optional[int]:
    try:
        return os.stat(os.path.join("/run/netns", ns)).st_ino
    except OSError:
        return None


def _netns_of(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def status(record: dict) -> list:
    """[Part]: every namespace, process and controller of the record, alive or not."""
    parts = []
    existing = set(netns.listnetns())
    for ns in record.get("namespaces", []):
        parts.append(Part("netns", ns, "", ns in existing))
    for entry in record.get("processes", []):
        parts.append(Part("process", entry["what"], f"pid {entry['pid']}", _alive(entry)))
    for ovs in record.get("ovs", []):
        parts.append(Part("ovs", ovs["node"], f"{ovs['dir']} (ovs-vsctl --db={ovs['db']})",
                          os.path.exists(ovs["db"].removeprefix("unix:"))))
    for label, ctl in record.get("controllers", {}).items():
        try:
            with open(ctl["log"], errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        synced = {m["bridge"] for m in SYNC_LINE.finditer(text)}
        alive = ctl["pid"] is not None and process_alive(ctl["pid"])
        parts.append(Part("controller", label,
                          f"{ctl['target']}, pid {ctl['pid']}, in sync: "
                          f"{', '.join(b for b in ctl['bridges'] if b in synced) or 'none'}",
                          alive and set(ctl["bridges"]) <= synced))
    return parts


__all__ = ["World", "WorldError", "Controller", "Part", "destroy", "status", "load_record",
           "group_members",
           "node2_config", "parse_dump_ports", "STATE_ROOT", "VPS", "VPS_PORT", "WARP_EXIT",
           "WARP_ADDRESS", "GATEWAY_PORT", "VECTOR_DB_PORT"]
