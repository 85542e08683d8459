"""Walking a config file's data field by field: `At` is a value with the path
that leads to it, `Reader` checks one value at a time against what it should
be and collects a `ConfigIssue` naming the path for each that is not, so one
pass reports every problem."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from netaddr import EUI, AddrFormatError, IPAddress, IPNetwork, IPSet, mac_unix_expanded

from topology.config.issues import ABSENT, ConfigIssue

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class At:
    """A value in the file and the field path that leads to it."""
    path: str
    value: Any

    def __getitem__(self, key: str) -> "At":
        """The value under `key` of this mapping; ABSENT if there is none (or null)."""
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return At(self.key_path(key), ABSENT if value is None else value)

    def key_path(self, key) -> str:
        part = str(key)
        part = part if _PLAIN_KEY.match(part) else json.dumps(part)
        return f"{self.path}.{part}" if self.path else part

    def index(self, i: int) -> "At":
        return At(f"{self.path}[{i}]", self.value[i])

    @property
    def present(self) -> bool:
        return self.value is not ABSENT


def kind_of(value) -> str:
    for python_type, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                              (str, "a string"), (list, "a list"), (dict, "a mapping")):
        if isinstance(value, python_type):
            return name
    return "null" if value is None else type(value).__name__


class Reader:
    """Reads one file's data field by field. A value that is not what it should
    be becomes a ConfigIssue naming its field path, and the read returns None,
    so the caller carries on with the rest. An absent field reads as None
    without an issue: tables say which fields are required."""

    def __init__(self, file: str):
        self.file = file
        self.issues: list = []
        self.warnings: list = []

    def error(self, at: At, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, at.path, at.value, message))

    def warn(self, at: At, message: str) -> None:
        """Not an error: the file loads, and `check` says this."""
        self.warnings.append(ConfigIssue(self.file, at.path, at.value, message))

    def lacking(self, at: At, message: str) -> None:
        """An error about what a section lacks, rather than about its value."""
        self.issues.append(ConfigIssue(self.file, at.path, ABSENT, message))

    def table(self, at: At, keys, required=()) -> bool:
        """Whether `at` is a mapping; reports keys not in `keys` and missing `required` ones."""
        if not at.present:
            return False
        if not isinstance(at.value, dict):
            self.error(at, f"expected a mapping, got {kind_of(at.value)}")
            return False
        for key, value in at.value.items():
            if key not in keys:
                where = at.path or "the top level"
                self.error(At(at.key_path(key), value),
                           f"unknown key; {where} takes {', '.join(sorted(keys))}")
        for key in required:
            if not at[key].present:
                self.error(at[key], "required, but missing")
        return True

    def named(self, at: At) -> Iterator:
        """(name, value) for each entry of a mapping whose keys are names."""
        if not at.present:
            return
        if not isinstance(at.value, dict):
            self.error(at, f"expected a mapping of names, got {kind_of(at.value)}")
            return
        for key, value in at.value.items():
            yield str(key), At(at.key_path(key), ABSENT if value is None else value)

    def sequence(self, at: At) -> Iterator:
        if not at.present:
            return
        if not isinstance(at.value, list):
            self.error(at, f"expected a list, got {kind_of(at.value)}")
            return
        for i in range(len(at.value)):
            yield at.index(i)

    def text(self, at: At) -> Optional[str]:
        if not at.present:
            return None
        if not isinstance(at.value, str) or not at.value.strip():
            self.error(at, f"expected a non-empty string, got {kind_of(at.value)}")
            return None
        return at.value

    def identifier(self, at: At) -> Optional[str]:
        """A container id: a string, or an integer as YAML reads an unquoted one."""
        if isinstance(at.value, int) and not isinstance(at.value, bool):
            return str(at.value)
        return self.text(at)

    def flag(self, at: At) -> Optional[bool]:
        if not at.present:
            return None
        if not isinstance(at.value, bool):
            self.error(at, f"expected true or false, got {kind_of(at.value)}")
            return None
        return at.value

    def integer(self, at: At, low: int, high: int) -> Optional[int]:
        if not at.present:
            return None
        if not isinstance(at.value, int) or isinstance(at.value, bool):
            self.error(at, f"expected an integer, got {kind_of(at.value)}")
            return None
        if not low <= at.value <= high:
            self.error(at, f"not in {low}..{high}")
            return None
        return at.value

    def seconds(self, at: At) -> Optional[float]:
        if not at.present:
            return None
        if not isinstance(at.value, (int, float)) or isinstance(at.value, bool):
            self.error(at, f"expected a number of seconds, got {kind_of(at.value)}")
            return None
        if at.value <= 0:
            self.error(at, "must be more than 0")
            return None
        return float(at.value)

    def port_number(self, at: At) -> Optional[int]:
        return self.integer(at, 1, 65535)

    def choice(self, at: At, options) -> Optional[str]:
        value = self.text(at)
        if value is not None and value not in options:
            self.error(at, f"must be one of {', '.join(options)}")
            return None
        return value

    def ifname(self, at: At) -> Optional[str]:
        """A Linux interface name: 1 to 15 characters, no '/', ':' or whitespace."""
        name = self.text(at)
        if name is None:
            return None
        if len(name) > 15 or name in (".", "..") or re.search(r"[/:\s]", name):
            self.error(at, "not a valid interface name (1 to 15 characters, no '/', ':' "
                           "or whitespace)")
            return None
        return name

    def ipv4_address(self, at: At) -> Optional[IPAddress]:
        text = self.text(at)
        if text is None:
            return None
        try:
            return IPAddress(text, 4)
        except (AddrFormatError, ValueError):
            self.error(at, "not an IPv4 address")
            return None

    def ipv4_interface(self, at: At) -> Optional[IPNetwork]:
        """An address with its prefix, "10.0.0.100/24"."""
        return self._prefixed(at, "not an IPv4 interface address (addr/prefix)")

    def ipv4_network(self, at: At) -> Optional[IPNetwork]:
        """A network, "10.0.0.0/24": no host bits set."""
        network = self._prefixed(at, "not an IPv4 network (addr/prefix)")
        if network is not None and network.ip != network.network:
            self.error(at, f"host bits are set; the network is {network.cidr}")
            return None
        return network

    def _prefixed(self, at: At, message: str) -> Optional[IPNetwork]:
        text = self.text(at)
        if text is None:
            return None
        address, slash, prefix = text.partition("/")
        try:
            if not (slash and prefix.isdigit() and 0 <= int(prefix) <= 32):
                raise ValueError(prefix)
            return IPNetwork(f"{IPAddress(address, 4)}/{int(prefix)}")
        except (AddrFormatError, ValueError):
            self.error(at, message)
            return None

    def address_set(self, at: At) -> Optional[IPSet]:
        """A non-empty list of IPv4 addresses and networks, as one IPSet."""
        items = list(self.sequence(at))
        if at.present and isinstance(at.value, list) and not items:
            self.error(at, "an empty list matches nothing; leave the key out to match any")
            return None
        nets = []
        for item in items:
            if isinstance(item.value, str) and "/" in item.value:
                nets.append(self.ipv4_network(item))
            else:
                address = self.ipv4_address(item)
                nets.append(IPNetwork(f"{address}/32") if address is not None else None)
        if not nets or None in nets:
            return None
        return IPSet(nets)

    def port_ranges(self, at: At) -> Optional[tuple]:
        """A non-empty list of ports and "low-high" ranges, as (low, high) pairs."""
        items = list(self.sequence(at))
        if at.present and isinstance(at.value, list) and not items:
            self.error(at, "an empty list matches nothing; leave the key out to match any")
            return None
        ranges = []
        for item in items:
            value = item.value
            if isinstance(value, int) and not isinstance(value, bool):
                low = high = value
            elif isinstance(value, str) and re.fullmatch(r"\d+(-\d+)?", value.strip()):
                low, _, high = value.strip().partition("-")
                low, high = int(low), int(high or low)
            else:
                self.error(item, 'expected a port or a range "low-high"')
                ranges.append(None)
                continue
            if not 1 <= low <= high <= 65535:
                self.error(item, "not a port range within 1..65535 with low <= high")
                ranges.append(None)
                continue
            ranges.append((low, high))
        if not ranges or None in ranges:
            return None
        return tuple(ranges)

    def mac(self, at: At) -> Optional[str]:
        """A unicast MAC address, as "02:00:0a:01:00:c8"."""
        if not at.present:
            return None
        if isinstance(at.value, int) and not isinstance(at.value, bool):
            self.error(at, "expected a MAC address, got an integer: YAML reads an unquoted MAC "
                           "of digits and colons as a base-60 number; quote it")
            return None
        text = self.text(at)
        if text is None:
            return None
        try:
            mac = EUI(text, version=48, dialect=mac_unix_expanded)
        except (AddrFormatError, ValueError, TypeError):
            self.error(at, "not a MAC address")
            return None
        if mac.words[0] & 1:
            self.error(at, "a multicast MAC address cannot be a port's")
            return None
        return str(mac)

    def listen(self, at: At) -> Optional[tuple]:
        """"HOST:PORT" (or "[IPv6]:PORT") as (host, port)."""
        text = self.text(at)
        if text is None:
            return None
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host, version = host[1:-1], 6
        else:
            version = 4
        try:
            IPAddress(host, version)
            if not (sep and port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(port)
        except (AddrFormatError, ValueError):
            self.error(at, "not HOST:PORT (an IPv4 address, or [IPv6], and a port 1..65535)")
            return None
        return host, int(port)

