"""A host's two bridges built for real, in network namespaces: the lab that tests and
the demo run socketnet against.

Owns turning a `topology.model.Host` into running Open vSwitch bridges and the
things on their ports, and tearing them down again:

- one private Open vSwitch (`topology.labs.ovs.OvsInstance`) whose netns stands for
  the host: the adapter ports (OVS internal ports holding the containers' gateway
  addresses) appear there as taps, so `lab.exec("host", ...)` runs on "the host";
- both bridges, named as in the model, on the instance's datapath (`datapath_type`
  netdev, or system in the VM lab: `topology.labs.ovs.lab_datapath`),
  `fail_mode=secure`, OpenFlow 1.3 only, in-band control off; port numbers fixed
  with `ofport_request` (Bridge.ports order, from 1);
- a netns per container (`sn-<lab>-c<id>`) holding `eth0` with the container's MAC,
  address, default route via its gateway, and tx checksum offload off (measured:
  with it on, TCP through the netdev datapath silently dies);
- the inter-bridge link: a veth whose two ends, named as the two inter-bridge ports,
  both live in the OVS netns.

`bridges="apply"` leaves the bridges, their ports, the adapters and the inter-bridge
link to `socketnet host apply`, as on a real host, and makes only the containers;
`attach_containers()` then adds their ports, as LXC does when it starts them. (The
VM lab's worlds run so, on the kernel datapath. On the userspace datapath the lab
makes the switch ports itself: it must keep the host's IP stack off them, see
`_switch_ports_up`, which a real host's kernel datapath does not need.)

Every interface is created directly inside the namespace it lives in, so no name
ever appears in the machine's own netns and two labs with different names run side
by side. `down()` removes what `up()` made, by name and PID, and is idempotent.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Iterable, Optional, Sequence, Union

from pyroute2 import IPRoute, netns

from topology.model import Bridge, Container, Host, Port, Role
from controller.ovs_text import TracePath
from topology.labs.ovs import OvsInstance
from topology.system import in_netns, wait_until

HOST = "host"  # lab.exec / lab.ns name for the OVS netns, where the adapters live


class LabError(RuntimeError):
    """The lab could not build or change something; the message names the port."""


class Lab:
    """`with Lab(host, "demo") as lab: ...` builds `host`'s bridges; see the module doc.

    `name` must be unique among labs running at once on the machine: it names the
    network namespaces (`sn-<name>-ovs`, `sn-<name>-c<container id>`).
    """

    def __init__(self, host: Host, name: str, protocols: str = "OpenFlow13",
                 datapath: Optional[str] = None, bridges: str = "lab"):
        if bridges not in ("lab", "apply"):
            raise LabError(f"lab {name}: bridges {bridges!r}: 'lab' or 'apply'")
        self.host = host
        self.name = name
        self.protocols = protocols
        self.bridges = bridges
        self.ovs = OvsInstance(name, datapath)
        self._containers: dict = {}  # container id -> (netns name, OVS-side veth)
        self._processes: list = []  # (netns, Popen) started by popen(), ended at down()
        self._up = False

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> "Lab":
        if self._up:
            return self
        self._up = True
        try:
            self.ovs.start()
            for bridge in self.host.bridges:
                self._check_buildable(bridge)
            self._make_links()
            if self.bridges == "lab":
                self.ovs.vsctl(*self._bridge_commands())
                self._check_ports()
                self._configure_adapters()
                self._wait_links_up()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop the processes, Open vSwitch and remove the namespaces this lab made.
        Safe to call twice, and after a failed `up()`."""
        self._end_processes()
        self.ovs.stop()
        existing = set(netns.listnetns())
        for ns, _ in self._containers.values():
            if ns in existing:
                netns.remove(ns)
        self._containers.clear()
        self._up = False

    # -- naming --------------------------------------------------------------

    def ns(self, container_id: str) -> str:
        """The netns of a container (by its id, e.g. "200"), or of the host ("host")."""
        if container_id == HOST:
            return self.ovs.netns
        try:
            return self._containers[str(container_id)][0]
        except KeyError:
            raise LabError(f"lab {self.name}: no container {container_id!r} "
                           f"(have {sorted(self._containers)})") from None

    @property
    def namespaces(self) -> list:
        """Every netns this lab made, the host's first."""
        return [self.ovs.netns, *(ns for ns, _ in self._containers.values())]

    def _container_ns_name(self, container: Container) -> str:
        return f"sn-{self.name}-c{container.id}"

    # -- building ------------------------------------------------------------

    def _check_buildable(self, bridge: Bridge) -> None:
        for port in bridge.ports:
            if not (port.adapter or port.container or port.role is Role.INTER_BRIDGE):
                raise LabError(f"lab {self.name}: port {bridge.name}/{port.name} "
                               f"({port.role}, {port.kind}) has no lab equivalent yet: "
                               "the lab builds adapters, containers and the "
                               "inter-bridge link")

    def _make_links(self) -> None:
        with IPRoute(netns=self.ovs.netns) as ipr:
            made = set()
            for bridge in self.host.bridges:
                for port in bridge.ports:
                    if port.container is not None:
                        self._make_container(ipr, port.name, port.container)
                        made.add(port.name)
            for bridge in self.host.bridges if self.bridges == "lab" else ():
                for port in bridge.with_role(Role.INTER_BRIDGE):
                    if port.name in made:
                        continue
                    if not port.peer:
                        raise LabError(f"lab {self.name}: inter-bridge port "
                                       f"{bridge.name}/{port.name} has no peer")
                    ipr.link("add", ifname=port.name, kind="veth", peer=port.peer)
                    made.update((port.name, port.peer))
            self._switch_ports_up(ipr, sorted(made))

    def _switch_ports_up(self, ipr: IPRoute, names: Sequence[str]) -> None:
        """Bring up the bridge-side ends of veths with the host kernel's IP stack
        kept off them first: a switch port has no IP stack of its own. The
        userspace datapath reads them with packet sockets, so the kernel of the
        OVS netns (the host, with the adapters' addresses) sees their frames too.
        With IPv6 on it sends router solicitations and MLD reports straight out of
        them, past the bridge; with ARP on it answers a container asking for its
        gateway with the veth's own MAC (weak host model), and the container's
        traffic then bypasses the bridge into the host. Strict rp_filter drops
        what arrives on them anyway."""
        settings = []
        for n in names:
            settings += [f"net/ipv6/conf/{n}/disable_ipv6=1", f"net/ipv4/conf/{n}/arp_ignore=8",
                         f"net/ipv4/conf/{n}/arp_announce=2", f"net/ipv4/conf/{n}/rp_filter=1"]
        self.exec(HOST, "sysctl", "-q", "-w", *settings, check=True)
        for name in names:
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")

    def _make_container(self, ipr: IPRoute, veth: str, container: Container) -> None:
        """The container's netns with eth0, and its veth peer `veth` in the OVS netns
        (left down: see `_switch_ports_up`)."""
        ns = self._container_ns_name(container)
        if container.id in self._containers:
            raise LabError(f"lab {self.name}: container {container.id} already exists")
        if ns in netns.listnetns():
            raise LabError(f"netns {ns} already exists (a stale lab named {self.name}?)")
        netns.create(ns)
        self._containers[container.id] = (ns, veth)
        ipr.link("add", ifname=veth, kind="veth",
                 peer={"ifname": "eth0", "net_ns_fd": ns, "address": container.mac})
        with IPRoute(netns=ns) as cns:
            lo = cns.link_lookup(ifname="lo")[0]
            eth0 = cns.link_lookup(ifname="eth0")[0]
            cns.link("set", index=lo, state="up")
            cns.addr("add", index=eth0, address=str(container.address),
                     prefixlen=container.network.prefixlen)
            cns.link("set", index=eth0, state="up")
            if container.gateway is not None:
                cns.route("add", dst="0.0.0.0/0", gateway=str(container.gateway))
        self.exec(container.id, "ethtool", "-K", "eth0", "tx", "off", check=True)

    def _wait_links_up(self, container_ids: Optional[Iterable[str]] = None) -> None:
        """Wait until each container's eth0 and its veth peer report carrier (the
        kernel sets operstate asynchronously, a few ms after both ends are up)."""
        ids = list(self._containers) if container_ids is None else list(container_ids)
        with IPRoute(netns=self.ovs.netns) as ipr:
            veths = [self._containers[c][1] for c in ids]
            veths += [p.name for b in self.host.bridges for p in b.with_role(Role.INTER_BRIDGE)]
            wait_until(lambda: all(_operstate(ipr, v) == "UP" for v in veths), 5,
                       f"veths {veths} up in {self.ovs.netns}")
        for cid in ids:
            with IPRoute(netns=self.ns(cid)) as cns:
                wait_until(lambda: _operstate(cns, "eth0") == "UP", 5,
                           f"eth0 up in {self.ns(cid)}")

    def _port_commands(self, bridge: str, port: Port, ofport: int) -> list:
        cmd = ["--", "add-port", bridge, port.name,
               "--", "set", "Interface", port.name, f"ofport_request={ofport}"]
        if port.adapter:
            cmd.append("type=internal")
            if port.mac:
                cmd.append(f'mac="{port.mac}"')
        return cmd

    def _bridge_commands(self) -> list:
        cmd = []
        for bridge in self.host.bridges:
            cmd += ["--", "add-br", bridge.name,
                    "--", "set", "Bridge", bridge.name, f"datapath_type={self.ovs.datapath}",
                    "fail_mode=secure", f"protocols={self.protocols}",
                    "other-config:disable-in-band=true"]
            for number, port in enumerate(bridge.ports, start=1):
                cmd += self._port_commands(bridge.name, port, number)
        return cmd

    def attach_containers(self) -> None:
        """With `bridges="apply"`, once host apply has made the bridges: each
        container's port on its bridge, with the number it has in the config."""
        cmd = []
        for bridge in self.host.bridges:
            for number, port in enumerate(bridge.ports, start=1):
                if port.container is not None:
                    cmd += self._port_commands(bridge.name, port, number)
        if cmd:
            self.ovs.vsctl(*cmd)
        self._check_ports()
        self._wait_links_up()

    def _check_ports(self, names: Optional[Iterable[str]] = None) -> None:
        """Every (named) interface opened, with the number it asked for."""
        table = json.loads(self.ovs.vsctl("--format=json", "--data=json",
                                          "--columns=name,ofport,ofport_request,error",
                                          "list", "Interface"))
        for name, ofport, wanted, error in table["data"]:
            if names is not None and name not in names:
                continue
            error = None if error == ["set", []] else error
            wanted = None if wanted == ["set", []] else wanted
            if error or (wanted is not None and ofport != wanted):
                raise LabError(f"lab {self.name}: interface {name} got ofport {ofport} "
                               f"(asked {wanted or 'any'}): {error or 'no error given'}")

    def _configure_adapters(self) -> None:
        with IPRoute(netns=self.ovs.netns) as ipr:
            for bridge in self.host.bridges:
                for port in bridge.ports:
                    if port.adapter:
                        self._configure_adapter(ipr, port)

    def _configure_adapter(self, ipr: IPRoute, port: Port) -> None:
        """The adapter's tap (made by ovs-vswitchd in its netns): up, with its address."""
        index = ipr.link_lookup(ifname=port.name)
        if not index:
            raise LabError(f"lab {self.name}: adapter {port.name} has no tap in "
                           f"{self.ovs.netns}")
        if port.address is not None:
            ipr.addr("add", index=index[0], address=str(port.address.ip),
                     prefixlen=port.address.prefixlen)
        ipr.link("set", index=index[0], state="up")

    # -- controller ------------------------------------------------------------

    def attach(self, target: Union[str, Sequence[str]],
               inactivity_probe: Optional[int] = None,
               bridges: Optional[Sequence[str]] = None) -> None:
        """Point both bridges (or `bridges`) at controller `target`(s), out-of-band.

        A `tcp:`/`ssl:` target on 127.0.0.1 means the caller's loopback: a relay
        makes it reachable from the OVS netns (`OvsInstance.forward_loopback`).
        `inactivity_probe` is in ms (OVS default 5000). Going from 0 controllers to 1
        flushes the bridge's flows (measured). OVS retries a lost controller
        after 1, 2, 4, then every 8 s (Controller.max_backoff is not honoured by
        OVS 3.1, measured): wait up to ~10 s for a reconnect."""
        targets = [target] if isinstance(target, str) else list(target)
        for t in targets:
            proto, _, rest = t.partition(":")
            address, _, port = rest.rpartition(":")
            if proto in ("tcp", "ssl") and address.startswith("127."):
                if address != "127.0.0.1":
                    raise LabError(f"lab {self.name}: relay only 127.0.0.1, not {t}")
                self.ovs.forward_loopback(int(port))
        cmd = []
        for bridge in bridges or [b.name for b in self.host.bridges]:
            ids = []
            for i, t in enumerate(targets):
                ref = f"@c_{bridge.replace('-', '_')}_{i}"
                ids.append(ref)
                cmd += ["--", f"--id={ref}", "create", "Controller", f'target="{t}"',
                        "connection-mode=out-of-band"]
                if inactivity_probe is not None:
                    cmd.append(f"inactivity_probe={inactivity_probe}")
            cmd += ["--", "set", "Bridge", bridge, f"controller=[{','.join(ids)}]"]
        self.ovs.vsctl(*cmd)

    def detach(self, bridges: Optional[Sequence[str]] = None) -> None:
        """Remove the controllers of both bridges (or `bridges`); flushes their flows."""
        cmd = []
        for bridge in bridges or [b.name for b in self.host.bridges]:
            cmd += ["--", "del-controller", bridge]
        self.ovs.vsctl(*cmd)

    # -- running things --------------------------------------------------------

    def exec(self, where: str, *cmd: str, timeout: float = 10.0,
             check: bool = False) -> subprocess.CompletedProcess:
        """Run `cmd` in a container's netns (by id) or the host's ("host") and wait;
        text output captured. With `check`, a non-zero exit raises LabError."""
        ns = self.ns(where)
        proc = subprocess.run(in_netns(ns, cmd), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise LabError(f"lab {self.name}: in {ns}: {' '.join(cmd)} exited "
                           f"{proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def popen(self, where: str, *cmd: str, **kwargs) -> subprocess.Popen:
        """Start `cmd` in a netns and return at once (a server in a container, say).
        It leads a process group of its own (with what it forks), which the lab kills
        at `down()`, or when its container is removed. `ip netns exec` execs the
        command, so the Popen's pid is the command's."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        ns = self.ns(where)
        proc = subprocess.Popen(in_netns(ns, cmd), start_new_session=True, **kwargs)
        self._processes.append((ns, proc))
        return proc

    @property
    def processes(self) -> list:
        """(netns, pid) of every process popen() started that down() will end."""
        return [(ns, proc.pid) for ns, proc in self._processes]

    def _end_processes(self, ns: Optional[str] = None) -> None:
        """Kill the process groups popen() started (in netns `ns` only, if given)."""
        for entry in list(self._processes):
            where, proc = entry
            if ns is not None and where != ns:
                continue
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            self._processes.remove(entry)

    # -- ports -------------------------------------------------------------------

    def port_numbers(self, bridge: str) -> dict:
        """{port name: OpenFlow port number} of the bridge, as the switch has them
        (its LOCAL port excluded)."""
        return {name: ofport for name, (ofport, _) in self.ovs.dpif_ports()[bridge].items()
                if name != bridge}

    def add_container_port(self, container: Container, ofport: Optional[int] = None) -> int:
        """Start a container later: its netns, its veth `container.veth` on bridge
        `container.bridge` with port number `ofport` (default: one past the highest).
        Returns the port number."""
        numbers = self.port_numbers(container.bridge)
        if ofport is None:
            ofport = max(numbers.values(), default=0) + 1
        with IPRoute(netns=self.ovs.netns) as ipr:
            self._make_container(ipr, container.veth, container)
            self._switch_ports_up(ipr, [container.veth])
        self.ovs.vsctl("--", "add-port", container.bridge, container.veth,
                       "--", "set", "Interface", container.veth, f"ofport_request={ofport}")
        self._check_ports([container.veth])
        self._wait_links_up([container.id])
        return ofport

    def remove_port(self, bridge: str, name: str) -> None:
        """Take port `name` off `bridge`; a container port loses its container (netns
        and veth) too, as when the container stops."""
        self.ovs.vsctl("--", "del-port", bridge, name)
        for cid, (ns, veth) in list(self._containers.items()):
            if veth == name:
                self._end_processes(ns)  # a netns lives as long as a process in it
                netns.remove(ns)  # eth0 goes with it, and its veth peer with that
                del self._containers[cid]
                with IPRoute(netns=self.ovs.netns) as ipr:
                    wait_until(lambda: not ipr.link_lookup(ifname=name), 5,
                               f"veth {name} to vanish from {self.ovs.netns}")

    # -- asking the tables -------------------------------------------------------

    def trace(self, bridge: str, flow: str, ct_next: Optional[str] = None,
              ct_mark: Optional[int] = None) -> TracePath:
        """Trace a packet entering `bridge` (flow names its in_port) and follow it
        over the inter-bridge link to the other bridge; `ct_next` and `ct_mark`: the
        state and mark the connection tracker gives it (ofproto/trace asks none)."""
        return self.ovs.trace_across(bridge, flow, self.host.inter_bridge_links,
                                     ct_next=ct_next, ct_mark=ct_mark)


def _operstate(ipr: IPRoute, ifname: str) -> Optional[str]:
    index = ipr.link_lookup(ifname=ifname)
    return ipr.link("get", index=index[0])[0].get("operstate") if index else None
