"""Reading a host's config: one YAML or JSON file becomes a `topology.model.Host`.

This module owns the config file: reading it, validating every field, and
deriving the bridges, their ports and the ports' roles. What the flows are is
not its business (see the pipeline compiler); what the seed's own flow lines
mean is `topology.seedflows`.

Modules: `keys` (every socketnet: key, declared once), `reader` (the data
walked field by field, issues collected), `issues`, `seed` (the seed's
sections), `socketnet` (the socketnet: section), `assemble` (the host built
and checked across sections).

API
---
    load_host(path) -> Host               the host, or ConfigError with every issue
    check_file(path) -> CheckResult       (host or None, errors, warnings)
    check(path) -> list[ConfigIssue]      just the errors
    ConfigIssue(file, path, value, message)
        one problem at one field; str() reads
        "seed.yaml: lxc.containers[2].properties.ipv4_address = '10.0.0.300/24': not ..."
        `value` is ABSENT when the field is missing or the problem is the whole file.
    ConfigError(ValueError)               .issues; str() is one issue per line
    derived_mac(IPAddress) -> str         the MAC of a container that names none
    SEED_CONFIG                           the seed's host (topology/seed.yaml, shipped
                                          with the package): the labs' and demo's default

All errors of a file are collected in one pass. Warnings are only computed for
a file without errors: one per seed flow, saying what socketnet does instead
(`topology.seedflows.assess`).

The file
--------
The shape is the seed's `services.op-dbus.stateConfig`, so that
`builtins.toJSON` of it loads as it is (`.json` is read as JSON, anything else
as YAML), plus a `socketnet:` section. Inside the sections socketnet reads,
unknown keys are errors; `null` is the same as leaving a key out. What
socketnet reads:

    netmaker.interface, .bridge         the netmaker uplink and the mesh bridge
                                        (.mode, .network, .server: ignored)
    wireguard.<x>.interface, .enabled, .post_up
                                        a tunnel whose post_up runs
                                        `ovs-vsctl [opts] add-port BRIDGE IFACE` is
                                        the warp uplink and BRIDGE the privacy
                                        bridge; one on no bridge, or disabled, is
                                        not managed (Host.ignored)
                                        (.pre_down, .listen_port, .ip_pool,
                                        .auto_provision: ignored)
    networking.veth_pairs.<x>.peer1/peer2.name, .bridge
                                        the inter-bridge link (exactly one pair,
                                        one end on each bridge)
    openflow.bridges.<bridge>.flows     exactly the mesh and privacy bridges; the
                                        flows are parsed and checked, never installed
    lxc.containers[].id, .veth, .bridge, .properties.name, .ipv4_address
                    (addr/prefix), .gateway, .hwaddr, .services[].name/.protocol/.port
                                        (.running, .properties.template: ignored)
    systemd, packagekit                 accepted, ignored

Port roles: the netmaker interface is the netmaker uplink; the warp tunnel the
warp uplink; the veth pair ends are the inter-bridge link; a container on the
mesh bridge is management, on the privacy bridge it is the xray client if it
offers services and a privacy container otherwise. Exactly one netmaker uplink,
warp uplink, inter-bridge link and xray client. Uplinks are l3
(WireGuard) unless told otherwise and reach their bridge through an adapter
port whose address is the gateway of the bridge's containers. A container's MAC
is `properties.hwaddr`, else 02:00 followed by its IPv4 address's four bytes.
A bridge's ports are in the order uplink, inter-bridge, containers as listed.

The socketnet section
---------------------
Every key is optional; the notes after the list say more.

    openflow.listen: "HOST:PORT" or "[IPv6]:PORT"; default 127.0.0.1:6653
        where the bridges' OpenFlow connections are accepted
    openflow.echo_interval: seconds, > 0; default 2
        seconds between echo requests to a bridge
    openflow.echo_misses: integer, 1..1000; default 3
        unanswered echo requests after which a bridge counts as gone
    openflow.role: primary or standby; default primary
        primary claims the master role; a standby only while its peer is gone
    openflow.peer: "HOST:PORT" or "[IPv6]:PORT"; default none
        the primary's OpenFlow address (a standby's, required)
    reconcile_timeout: seconds, > 0; default 10
        seconds to bring a bridge's flows to the desired state
    netmaker_ranges: list of IPv4 networks; default 10.101.0.0/16, 100.64.0.0/10
        where Netmaker peers live
    nodes[].name: string, required; default no nodes
        another socketnet host, one entry per node
    nodes[].subnets: list of IPv4 networks, required
        the subnets behind it, reached over Netmaker
    privacy.blocked_destinations: list of IPv4 networks; default private and reserved ranges
        where privacy traffic may never go through warp
    ports.<iface>.kind: l2 or l3; default l3
        an uplink's layer: l3 (WireGuard) reaches its bridge through an adapter
    ports.<iface>.adapter: interface name; default <bridge>-gw
        the adapter's name (l3 only)
    ports.<iface>.address: addr/prefix; default the containers' gateway/prefix
        the adapter's address (l3 only)
    ports.<iface>.mac: MAC address; default learned from the switch
        the adapter's MAC (l3) or the far end's (l2)
    ports.<iface>.bridge: interface name; default the bridge post_up adds it to
        the bridge a wireguard interface is on, without a post_up
    containers."<id>".role: management, privacy-container or xray-client; default from its bridge and services
        the container's role
    containers."<id>".mac: MAC address; default hwaddr, or 02:00+IPv4 bytes
        the container's MAC
    metrics.listen: "HOST:PORT" or "[IPv6]:PORT"; default 127.0.0.1:9640
        where Prometheus scrapes /metrics
    metrics.stats_interval: seconds, > 0; default 10
        seconds between flow, port and table stats polls
    rest.listen: "HOST:PORT" or "[IPv6]:PORT"; default 127.0.0.1:9641
        where the flow-debug API answers
    rest.token_env: environment variable name; default SOCKETNET_TOKEN
        the environment variable holding the bearer token
    rest.token_file: path; default none
        a file holding the token (its first line), before token_env
    rest.open_reads: true or false; default false
        reading endpoints answer without the token
    rest.ovs_ctl: path; default found in $OVS_RUNDIR
        ovs-vswitchd's control socket, for trace and audit

- openflow.role, peer: two socketnet instances for one host, both set as the
  bridges' controllers. The primary claims the OpenFlow master role; a standby
  stays slave (it writes nothing) and claims master, with a newer generation id,
  only while the primary's OpenFlow address (peer) does not answer.
- ports.<iface>: an uplink, by its seed interface name (netmaker.interface or
  a wireguard interface). An l3 uplink reaches its bridge through the adapter
  port; the adapter's address must be the containers' gateway if they name one,
  and must be given if none does. `mac` is the adapter's (l3) or the far end's
  (l2). `bridge` enslaves a wireguard interface without a post_up.
- rest: the flow-debug API. Every endpoint needs `Authorization: Bearer TOKEN`
  (the token from token_file, else from the environment variable token_env);
  with open_reads, reading endpoints need none. No token configured: only the
  open endpoints answer. ovs_ctl: where trace and audit reach ovs-vswitchd
  (else $SOCKETNET_OVS_CTL, else ovs-vswitchd.ctl or ovs-vswitchd.<pid>.ctl in
  $OVS_RUNDIR, default /var/run/openvswitch).

The management and privacy subnets may not overlap each other, the Netmaker
ranges or the nodes' subnets.

socketnet.classification
------------------------
How the mesh bridge decides Netmaker ingress: every such packet passes the
connection tracker in socketnet's zone (`conntrack_zone`). A connection with a
decision carries it as its ct_mark, and static flows send it on its class's
path; the first packet of a connection without one goes to socketnet, which
decides privacy, management or drop (`controller.classifier`) and commits the
connection with that class. Every key is optional.

    default: privacy, management or drop; default drop
        the class when no rule and no service decides
    idle_timeout: seconds, 1..65535; default 60
        how long an idle connection keeps its decision
    conntrack_zone: zone, 1..65534; default 21326
        the mesh's conntrack zone; vmbr0 uses the next
    seed_services: true or false; default true
        the seed's services decide after the rules
    rules[].name: string, required
        unique; the decisions it makes carry it
    rules[].class: privacy, management or drop, required
        what the rule decides
    rules[].src: list of IPv4 addresses or networks; default any
        sources it matches
    rules[].dst: list of IPv4 addresses or networks; default any
        destinations it matches
    rules[].protocol: tcp, udp, icmp or any; default any
        the protocol it matches
    rules[].src_ports: list of ports and "low-high" ranges (tcp, udp); default any
        source ports it matches
    rules[].dst_ports: list of ports and "low-high" ranges (tcp, udp); default any
        destination ports it matches
    limits.cached_total: integer, 1..10000000; default 100000
        the zone's connection limit
    limits.cached_per_source: integer, 1..10000000; default 1000
        decisions one source holds at a time, at most cached_total
    limits.cached_unknown: integer, 1..10000000; default 20000 (at most cached_total)
        decisions all unknown sources hold together, at most cached_total
    limits.packet_in_rate: packets/s, 1..10000000; default 1000
        the meter in front of the controller
    limits.packet_in_burst: packets, 0..10000000; default 200
        what the meter lets through above the rate
    limits.over_limit.action: drop; default drop
        what a source over its share gets
    limits.over_limit.seconds: seconds, 1..65535; default 30
        for how long, in the switch
    limits.ingress_rate: new flows/s, 0..10000000; default 2000
        new Netmaker-ingress flows, in nftables (0: off)
    limits.ingress_per_source: new flows/s, 0..10000000; default 200
        new flows one unknown source may open (0: off)
    limits.ingress_peer_rate: datagrams/s, 0..100000000; default 100000
        WireGuard datagrams one Netmaker peer may send (0: off)
    limits.ingress_wireguard_port: UDP port, 1..65535; default 51821
        the Netmaker uplink's WireGuard port

- The first rule that matches decides; then, with seed_services, the seed's own
  services: a service of the xray client is privacy, a service of a management
  container is management; then `default`.
- idle_timeout: how long a connection with no packets keeps its decision: the
  zone's timeout policy (`socketnet host apply`) for TCP established and every
  UDP and ICMP state. The connection tracker has no absolute lifetime, so the
  keys `hard_timeout` and `granularity` (one decision per host pair) of earlier
  versions are read, warned about and have no effect; so is `limits.queue`:
  packet-ins are decided as they are read, and those not read yet wait in Open
  vSwitch's queue for the controller, behind the packet-in meter.
- conntrack_zone: the mesh's zone; vmbr0 uses the next one. Pick others if
  something else on the host uses these zones.
- A privacy rule's dst must lie within the xray client's address (W1), a
  management rule's within the management subnet (W5). Whatever a rule says,
  socketnet decides privacy only for a Netmaker source reaching an xray client
  service, and management only for a management container's address; anything
  else is dropped as unroutable.
- Rule names "default", "unroutable" and "service:..." are socketnet's own.
- limits: cached_total is the zone's connection limit, set in the datapath;
  cached_per_source caps the decisions one source holds at a time, and a
  source over it is dropped in the switch for over_limit.seconds.
  cached_unknown caps the decisions of sources that are not known (other
  nodes, sources of privacy and management rules): a flood of random sources
  fills that share and no more, and known sources go on being decided. The
  controller enforces both shares before it commits, counting a decision as
  held for idle_timeout (it does not see connections end). packet_in_rate and
  packet_in_burst are the meter in front of the controller.
- ingress_rate and ingress_per_source police new Netmaker-ingress flows in the
  host's nftables (`socketnet host apply`; run it again after changing them or
  the known sources), before they reach the mesh adapter: known sources (other
  nodes, sources of privacy and management rules) get ingress_rate of their own;
  every other source at most ingress_per_source, and all of them together
  ingress_rate. A flood is cut there, where it is cheap, and cannot fill the
  switch's receive queue, where a known source's first packet would be lost with
  it.
- ingress_peer_rate: WireGuard datagrams a second that one Netmaker peer (by
  its endpoint address and port) may send to the uplink's UDP port
  (ingress_wireguard_port, Netmaker's 51821), dropped in nftables before
  WireGuard decrypts them: one flooding peer cannot fill the WireGuard
  receiver's queue, where every other peer's packets would be lost with its
  own. Set it below what the host's WireGuard decrypts in all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from topology.config.assemble import build_host, derived_mac, flow_warnings
from topology.config.issues import ABSENT, ConfigError, ConfigIssue
from topology.config.reader import At, Reader, kind_of
from topology.config.seed import read_seed
from topology.document import load as _load
from topology.model import Host

__all__ = ("ABSENT", "CheckResult", "ConfigError", "ConfigIssue", "SEED_CONFIG", "check",
           "check_file", "derived_mac", "load_host")

SEED_CONFIG = str(Path(__file__).resolve().parents[1] / "seed.yaml")


@dataclass(frozen=True)
class CheckResult:
    host: Optional[Host]  # None when there are errors
    errors: list
    warnings: list  # of ConfigIssue: retired keys; seed flows socketnet does not install as written


def load_host(path) -> Host:
    """The host described by the config file at `path`; ConfigError if it has errors."""
    result = check_file(path)
    if result.errors:
        raise ConfigError(result.errors)
    return result.host


def check(path) -> list:
    """Every error in the config file at `path` (empty when it is good)."""
    return check_file(path).errors


def check_file(path) -> CheckResult:
    """Read, validate and build the host; report errors and warnings."""
    file = str(path)
    data, problem = _load(file)
    if problem:
        return CheckResult(None, [ConfigIssue(file, "", ABSENT, problem)], [])
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"the top is {kind_of(data)}"
        return CheckResult(None, [ConfigIssue(
            file, "", ABSENT, f"{what}; expected the stateConfig mapping")], [])
    reader = Reader(file)
    host = build_host(reader, read_seed(reader, At("", data)), file)
    if reader.issues:
        return CheckResult(None, reader.issues, [])
    return CheckResult(host, [], reader.warnings + flow_warnings(file, host))
