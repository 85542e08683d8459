"""socketnet's nftables tables, `inet socketnet` and `arp socketnet`, as one script.

Owns `nft_script`: forward policy drop for what touches socketnet's interfaces with
an allow-list (W1 to the xray client's services only, W5 both ways, privacy ->
warp, established replies), MSS clamp, SNAT out of warp to the WARP address, an
input rule dropping packets for a local address of another interface (Linux's weak
host model), the host's IP stack kept off the switch ports, and Netmaker ingress
policed: new flows before the mesh adapter (`limits.ingress_rate`,
`ingress_per_source`: known sources in a lane of their own) and WireGuard
datagrams per peer before they are decrypted (`limits.ingress_peer_rate`), when
the Netmaker uplink is routed through the adapter. The script replaces both
tables in one transaction; the digest of their content rides in the first rule's
comment (`NFT_DIGEST_PREFIX`), which is how a host that has them is left alone.

    nft_script(host, warp_address) -> (script, digest)
    rule_count(script)                 the rules it holds, as `read_state` counts them
"""
from __future__ import annotations

import hashlib

from netaddr import IPSet

from topology.host.routing import routed_uplinks
from topology.model import Host

DEFAULT_WARP_ADDRESS = "172.16.0.2"
NFT_TABLES = (("inet", "socketnet"), ("arp", "socketnet"))
NFT_DIGEST_PREFIX = "socketnet plan "


def _names(items) -> str:
    items = list(dict.fromkeys(items))
    if len(items) == 1:
        return f'"{items[0]}"'
    return "{ " + ", ".join(f'"{i}"' for i in items) + " }"


def _nets(nets) -> str:
    cidrs = [str(c) for c in IPSet(nets).iter_cidrs()]
    if len(cidrs) == 1:
        return cidrs[0].removesuffix("/32")
    return "{ " + ", ".join(cidrs) + " }"


def nft_script(host: Host, warp_address: str = DEFAULT_WARP_ADDRESS) -> tuple:
    """(script, digest): the tables `inet socketnet` and `arp socketnet`, replaced
    atomically. The digest of their content rides in the first rule's comment, so a
    host that has exactly these tables is left alone.

    Besides the routed glue's filter, both tables keep the host's own IP stack off
    the bridges' switch ports (containers' veths, the inter-bridge link): with the
    userspace datapath those are ordinary kernel interfaces too, and the host would
    answer ARP for its gateway addresses on them and route what arrives there,
    past the bridge (measured in the lab). With the kernel datapath the rules never
    match: an enslaved port's packets never reach the IP stack."""
    nm, wp = routed_uplinks(host)
    ours = [i for p in (nm, wp) if p is not None for i in (p.interface, p.name)]
    switch_ports = [p.name for b in host.bridges for p in b.ports if not p.adapter]
    pre, forward, inp, post, arp = [], [], [], [], []
    if switch_ports:
        not_ours = ('comment "a switch port: the bridge\'s, never the host\'s IP stack '
                    '(userspace datapath)"')
        pre.append(f"iifname {_names(switch_ports)} drop {not_ours}")
        arp.append(f"iifname {_names(switch_ports)} drop {not_ours}")
    if ours:
        forward.append(f"iifname != {_names(ours)} oifname != {_names(ours)} accept "
                       'comment "not socketnet\'s interfaces"')
        forward.append('tcp flags syn tcp option maxseg size set rt mtu '
                       'comment "MSS clamp: the WireGuard uplinks have a small MTU"')
        forward.append('ct state established,related accept comment "replies"')
        inp.append(f"iifname {_names(ours)} fib daddr . iif type != "
                   "{ local, broadcast, multicast } drop "
                   'comment "no weak host: only the incoming interface\'s own addresses"')
    objects, policing = [], []
    if nm is not None:
        objects, policing = _ingress_policing(host)
        peer_objects, peer_rule = _peer_policing(host)
        objects += peer_objects
        pre += peer_rule
        if policing:
            # Past the replies rule: new connections, and what conntrack calls
            # invalid (a bad checksum, out of window) that W1 would still let in.
            forward.append(f'iifname "{nm.interface}" oifname "{nm.name}" '
                           'jump netmaker_new comment "police Netmaker ingress that is '
                           'no known connection"')
        xray = host.xray_client.container
        for service in xray.services:
            forward.append(
                f'iifname "{nm.interface}" oifname "{nm.name}" '
                f"ip saddr {_nets(host.netmaker_ranges)} ip daddr {xray.address} "
                f"{service.protocol} dport {service.port} accept "
                f'comment "W1: Netmaker to the xray client\'s {service.name}"')
        forward.append(f'iifname "{nm.name}" oifname "{nm.interface}" '
                       f"ip saddr {_nets(host.management_subnet.iter_cidrs())} "
                       f"ip daddr {_nets(host.netmaker_side.iter_cidrs())} accept "
                       'comment "W5: management to Netmaker"')
        forward.append(f'iifname "{nm.interface}" oifname "{nm.name}" '
                       f"ip saddr {_nets(host.netmaker_side.iter_cidrs())} "
                       f"ip daddr {_nets(host.management_subnet.iter_cidrs())} accept "
                       'comment "W5: Netmaker to management"')
    if wp is not None:
        blocked = host.privacy_exit_blocked
        forward.append(f'iifname "{wp.name}" oifname "{wp.interface}" '
                       f"ip saddr {_nets(host.privacy_subnet.iter_cidrs())} "
                       f"ip daddr != {_nets(blocked.iter_cidrs())} accept "
                       'comment "W2, W4: privacy to WARP"')
        post.append(f'oifname "{wp.interface}" snat ip to {warp_address} '
                    'comment "WARP accepts only its own address"')

    def chain(cname, hook_line, rules):
        if not rules:
            return []
        return chain_body(cname, [hook_line, *rules])

    def chain_body(cname, lines):
        if not lines:
            return []
        return [f"\tchain {cname} {{", *(f"\t\t{r}" for r in lines), "\t}"]

    inet = [*(objects if ours else []),
            *chain("prerouting", "type filter hook prerouting priority raw; policy accept;",
                   pre)]
    if ours:  # the forward policy is imposed only where something is routed
        inet += [*chain("forward", "type filter hook forward priority filter; policy drop;",
                        forward),
                 *chain_body("netmaker_new", policing),
                 *chain("input", "type filter hook input priority filter; policy accept;",
                        inp),
                 *chain("postrouting",
                        "type nat hook postrouting priority srcnat; policy accept;", post)]
    tables = {NFT_TABLES[0]: inet,
              NFT_TABLES[1]: chain("input", "type filter hook input priority filter; "
                                            "policy accept;", arp)}
    text = "".join("\n".join([f"table {f} {n} {{", *lines, "}"]) + "\n"
                   for (f, n), lines in tables.items())
    digest = hashlib.sha256(text.encode()).hexdigest()[:16] if 'comment "' in text else None
    text = text.replace('comment "', f'comment "{NFT_DIGEST_PREFIX}{digest}: ', 1)
    reset = "".join(f"table {f} {n} {{}}\ndelete table {f} {n}\n" for f, n in NFT_TABLES)
    return reset + text, digest


def _ingress_policing(host: Host) -> tuple:
    """(objects, rules): the `netmaker_new` chain, which the forward chain jumps to
    for every packet from the Netmaker uplink to the mesh adapter that is not part
    of a known connection (new, or invalid to conntrack), and the named
    counters and the per-source set it uses (`limits.ingress_rate`,
    `ingress_per_source`; see topology.config). Known sources have a lane of their
    own; a source that is not known is limited alone, then with all the others.
    With the per-source set full (a flood of many sources), a new source is
    limited only with all the others."""
    limits = host.classification.limits
    rate, per_source = limits.ingress_rate, limits.ingress_per_source
    known = [str(c) for c in host.known_sources.iter_cidrs()]
    objects, rules = [], []
    if not (rate or per_source):
        return [], []

    def over(name, limit, burst, why):
        objects.append(f"\tcounter {name} {{}}")
        return (f"limit rate over {limit}/second burst {burst} packets "
                f'counter name "{name}" drop comment "{why}"')

    if known and rate:
        rules.append(f"ip saddr {_nets(known)} "
                     + over("ingress_known_over", rate, max(rate // 10, 1),
                            f"known sources: over {rate} new flows/s"))
    if known:
        rules.append(f"ip saddr {_nets(known)} return "
                     'comment "known sources: their own lane"')
    if per_source:
        objects.append("\tset ingress_sources {\n\t\ttype ipv4_addr; size 65535; "
                       "flags dynamic,timeout; timeout 60s;\n\t}")
        rules.append("update @ingress_sources { ip saddr "
                     + over("ingress_source_over", per_source, per_source,
                            f"one source: over {per_source} new flows/s")
                     .replace(" counter", " } counter", 1))
    if rate:
        rules.append(over("ingress_over", rate, max(rate // 10, 1),
                          f"all other sources: over {rate} new flows/s"))
    return objects, rules


def _peer_policing(host: Host) -> tuple:
    """(objects, rules) for the prerouting chain: WireGuard datagrams to the
    Netmaker uplink's port, per peer endpoint (IPv4 or IPv6), over
    `limits.ingress_peer_rate` a second are dropped before conntrack and before
    WireGuard decrypts them."""
    limits = host.classification.limits
    rate, port = limits.ingress_peer_rate, limits.ingress_wireguard_port
    if not rate:
        return [], []
    objects, rules = ["\tcounter netmaker_peer_over {}"], []
    for family, address, suffix in (("ip", "ipv4_addr", ""), ("ip6", "ipv6_addr", "6")):
        objects.append(f"\tset netmaker_peers{suffix} {{\n\t\ttype {address} . inet_service; "
                       "size 65535; flags dynamic,timeout; timeout 60s;\n\t}")
        rules.append(f"udp dport {port} fib daddr type local update @netmaker_peers{suffix} "
                     f"{{ {family} saddr . udp sport limit rate over {rate}/second burst "
                     f"{max(rate // 100, 10)} packets }} counter name \"netmaker_peer_over\" "
                     f'drop comment "one Netmaker peer ({family}): over {rate} WireGuard '
                     'datagrams/s"')
    return objects, rules


def rule_count(script: str) -> int:
    """The rules of a script: each carries a comment."""
    return sum(1 for line in script.splitlines() if 'comment "' in line)
