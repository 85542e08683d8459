"""The host plan's actions: each one change to the host, each printing as its command.

Owns `Action` and its kinds: `Vsctl` (ovs-vsctl), `AddVeth`, `LinkUp`, `AddAddress`,
`AddRoute`, `DelRoute`, `ReplaceRoute`, `AddRule`, `DelRule` (ip), `Sysctl` and
`LoadNft` (nftables, one transaction). `str(action)` is the exact command, so a plan
reads, and runs, as a shell script; `topology.host.apply` carries each out (netlink
for links, addresses, routes and rules). An action's `why` is printed above it and
is not part of what it is: two actions that do the same compare equal.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from netaddr import IPNetwork

from topology.host.state import Route, Rule


@dataclass(frozen=True)
class Action:
    """One change to the host. `str()` is the exact command it corresponds to;
    `why` is printed above it in a script and not part of its identity."""
    why: str = field(default="", compare=False, kw_only=True)

    def argv(self) -> list:
        raise NotImplementedError

    def __str__(self) -> str:
        return shlex.join(self.argv())


@dataclass(frozen=True)
class Vsctl(Action):
    args: tuple

    def argv(self) -> list:
        return ["ovs-vsctl", *self.args]


@dataclass(frozen=True)
class AddVeth(Action):
    name: str
    peer: str

    def argv(self) -> list:
        return ["ip", "link", "add", self.name, "type", "veth", "peer", "name", self.peer]


@dataclass(frozen=True)
class LinkUp(Action):
    name: str

    def argv(self) -> list:
        return ["ip", "link", "set", "dev", self.name, "up"]


@dataclass(frozen=True)
class AddAddress(Action):
    dev: str
    address: IPNetwork

    def argv(self) -> list:
        return ["ip", "address", "add", str(self.address), "dev", self.dev]


@dataclass(frozen=True)
class AddRoute(Action):
    route: Route

    def argv(self) -> list:
        return ["ip", "route", "add", *self.route.spec()]


@dataclass(frozen=True)
class DelRoute(Action):
    route: Route

    def argv(self) -> list:
        return ["ip", "route", "del", *self.route.spec()]


@dataclass(frozen=True)
class ReplaceRoute(Action):
    route: Route

    def argv(self) -> list:
        return ["ip", "route", "replace", *self.route.spec()]


@dataclass(frozen=True)
class AddRule(Action):
    rule: Rule

    def argv(self) -> list:
        return ["ip", "rule", "add", *self.rule.spec()]


@dataclass(frozen=True)
class DelRule(Action):
    rule: Rule

    def argv(self) -> list:
        return ["ip", "rule", "del", *self.rule.spec()]


@dataclass(frozen=True)
class Sysctl(Action):
    key: str  # dotted, "net.ipv4.ip_forward"; interface names in it may hold dashes
    value: str

    def argv(self) -> list:
        return ["sysctl", "-w", f"{self.key}={self.value}"]


@dataclass(frozen=True)
class LoadNft(Action):
    """Replace the table atomically: `table X {}` makes sure it exists, so the
    `delete` always succeeds, and all three happen in one nft transaction."""
    script: str

    def argv(self) -> list:
        return ["nft", "-f", "-"]

    def __str__(self) -> str:
        return f"nft -f - <<'EOF'\n{self.script}EOF"

