"""The routed glue: socketnet's own routing tables and the `ip rule`s into them.

Owns the numbers socketnet takes (`RoutingIds`), which uplinks are routed (a
WireGuard uplink reached through its adapter, not enslaved on a bridge), the
tables and rules the config wants, and the route and rule actions that turn what
the host has into them. One table per incoming interface, each ending in
`prohibit`, with an `ip rule iif IF lookup T` and behind it `ip rule iif IF
prohibit` (a table that loses its routes, warp0 gone, never falls through to the
main table):

    iif <netmaker uplink>   the xray client /32 and the management subnet -> mesh adapter
    iif <mesh adapter>      the Netmaker ranges and nodes' subnets -> netmaker uplink
    iif <privacy adapter>   blocked ranges and the host's subnets prohibited,
                            default -> warp uplink
    iif <warp uplink>       the privacy subnet -> privacy adapter

Routes are added to a table after its `prohibit`, rules after their table, so
every step fails closed. An uplink that is down gets its table with nothing but
the `prohibit` (the plan says so in a finding).

    routing_actions(host, state, ids) -> [Action]
"""
from __future__ import annotations

from dataclasses import dataclass

from netaddr import IPNetwork

from topology.host.actions import AddRoute, AddRule, DelRoute, DelRule, ReplaceRoute
from topology.host.state import HostState, Route, Rule
from topology.model import Host, Role

@dataclass(frozen=True)
class RoutingIds:
    """The routing tables and rule priorities socketnet owns: `base`+1..+4, in the
    order netmaker uplink, mesh adapter, privacy adapter, warp uplink. A table's
    lookup rule has the table's number as priority (below main's 32766); its
    prohibit rule, right behind it, that number + 10."""
    base: int = 5300

    @property
    def tables(self) -> tuple:
        return tuple(self.base + i for i in range(1, 5))

    @property
    def prohibit_priorities(self) -> tuple:
        return tuple(t + 10 for t in self.tables)

    def netmaker_in(self) -> int:
        return self.base + 1

    def mesh_adapter_in(self) -> int:
        return self.base + 2

    def privacy_adapter_in(self) -> int:
        return self.base + 3

    def warp_in(self) -> int:
        return self.base + 4



def uplinks(host: Host) -> tuple:
    """(netmaker uplink port, warp uplink port), either None if the config has none."""
    def one(bridge, role):
        ports = bridge.with_role(role)
        return ports[0] if ports else None
    return one(host.mesh, Role.NETMAKER_UPLINK), one(host.privacy_bridge, Role.WARP_UPLINK)


def routed_uplinks(host: Host) -> tuple:
    """The same, each None unless it is routed: reached through an adapter."""
    return tuple(p if p is not None and p.adapter else None for p in uplinks(host))


def routing_actions(host: Host, state: HostState, ids: RoutingIds) -> list:
    """The route and rule actions that make socketnet's tables and rules in
    `state` what the config wants; rules into its tables the config has not go."""
    wanted_routes, wanted_rules = _desired(host, state, ids)
    actions = []
    current = set(state.routes)
    ours = set(ids.tables)
    for table in ids.tables:
        routes = sorted((r for r in wanted_routes if r.table == table), key=_route_order)
        have = [r for r in state.routes if r.table == table]
        stale = [r for r in have if r not in routes]
        replaced = set()
        for route in routes:  # prohibits first: the table fails closed at every step
            if route in current:
                continue
            clash = [r for r in stale if r.dst == route.dst]  # the kernel's key
            if clash:
                replaced.update(clash)
                actions.append(ReplaceRoute(route, why=f"table {table}: {_route_why(route)} "
                                                       f"(was {' '.join(clash[0].spec()[:-2])})"))
            else:
                actions.append(AddRoute(route, why=f"table {table}: {_route_why(route)}"))
        for route in sorted(stale, key=_route_order):
            if route not in replaced:
                actions.append(DelRoute(route, why=f"table {table}: not in the config"))
    for rule in state.rules:
        if (rule.table in ours or (rule.table is None and rule.priority
                                   in ids.prohibit_priorities)) \
                and rule not in wanted_rules:
            actions.append(DelRule(rule, why="a rule into socketnet's tables the config has not"))
    for rule in wanted_rules:
        if rule not in state.rules:
            actions.append(AddRule(rule, why=f"what enters from {rule.iif} uses table {rule.table}"
                                   if rule.table is not None else
                                   f"what enters from {rule.iif} and table {rule.priority - 10} "
                                   "does not route is prohibited, never the main table's"))
    return actions


def _desired(host: Host, state: HostState, ids: RoutingIds) -> tuple:
    """(routes, rules) the config wants, for the uplinks as they are in `state`."""
    routes, rules = [], []

    def table(number, iif, entries):
        routes.append(Route(number, IPNetwork("0.0.0.0/0"), "prohibit"))
        routes.extend(entries)
        rules.append(Rule(number, iif, number))
        rules.append(Rule(number + 10, iif))  # if the table loses a route (warp0 gone)

    nm, warp = routed_uplinks(host)
    if nm is not None:
        to_mesh = [IPNetwork(f"{host.xray_client.container.address}/32"),
                   *host.management_subnet.iter_cidrs()]
        table(ids.netmaker_in(), nm.interface,
              [Route(ids.netmaker_in(), net, dev=nm.name) for net in to_mesh])
        table(ids.mesh_adapter_in(), nm.name,
              [Route(ids.mesh_adapter_in(), net, dev=nm.interface)
               for net in host.netmaker_side.iter_cidrs()] if state.is_up(nm.interface) else [])
    if warp is not None:
        blocked = host.privacy_exit_blocked
        warp_up = state.is_up(warp.interface)
        entries = [Route(ids.privacy_adapter_in(), net, "prohibit")
                   for net in blocked.iter_cidrs()]
        if warp_up:
            entries.append(Route(ids.privacy_adapter_in(), IPNetwork("0.0.0.0/0"),
                                 dev=warp.interface))
        table(ids.privacy_adapter_in(), warp.name, [])
        if warp_up:  # the default via warp replaces the catch-all prohibit
            routes.remove(Route(ids.privacy_adapter_in(), IPNetwork("0.0.0.0/0"), "prohibit"))
        routes.extend(entries)
        table(ids.warp_in(), warp.interface,
              [Route(ids.warp_in(), net, dev=warp.name)
               for net in host.privacy_subnet.iter_cidrs()])
    return routes, rules


def _route_order(route: Route) -> tuple:
    """Prohibits first, widest first; then the routes that let traffic through."""
    return (route.type != "prohibit", route.dst.prefixlen, int(route.dst.network),
            route.dev or "")


def _route_why(route: Route) -> str:
    if route.type == "prohibit":
        return f"nothing to {route.dst}" if route.dst.prefixlen else "everything else prohibited"
    return f"{route.dst} via {route.dev}"
