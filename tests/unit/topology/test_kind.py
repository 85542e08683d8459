"""topology.kind: an interface's layer from the kernel, against a fake sysfs."""
from __future__ import annotations

import pytest

from topology.kind import ARPHRD_NONE, detect_kind, link_kind
from topology.model import Kind


def fake_interface(root, name, arp_type, addr_len, address):
    d = root / name
    d.mkdir()
    for attribute, value in (("type", arp_type), ("addr_len", addr_len),
                             ("address", address)):
        if value is not None:
            (d / attribute).write_text(f"{value}\n")


@pytest.mark.parametrize("name,arp_type,addr_len,address,kind", [
    ("warp0", ARPHRD_NONE, 0, "", Kind.L3),           # WireGuard
    ("nm-privacy", ARPHRD_NONE, 0, "", Kind.L3),
    ("tun0", ARPHRD_NONE, 0, None, Kind.L3),          # tun: no address file content
    ("odd0", 1, 0, "", Kind.L3),                      # no hardware address at all
    ("odd1", 1, None, None, Kind.L3),                 # no address attribute
    ("veth200", 1, 6, "02:00:0a:01:00:c8", Kind.L2),  # Ethernet
    ("mesh-gw", 1, 6, "aa:bb:cc:dd:ee:ff", Kind.L2),  # OVS internal port
    ("lo", 772, 6, "00:00:00:00:00:00", Kind.L2),     # has an address: not 65534
])
def test_detect_kind_from_sysfs(tmp_path, name, arp_type, addr_len, address, kind):
    fake_interface(tmp_path, name, arp_type, addr_len, address)
    assert detect_kind(name, sysfs=str(tmp_path)) is kind


def test_type_65534_is_l3_even_with_an_address(tmp_path):
    fake_interface(tmp_path, "weird0", ARPHRD_NONE, 6, "02:00:00:00:00:01")
    assert detect_kind("weird0", sysfs=str(tmp_path)) is Kind.L3


@pytest.mark.parametrize("name", ["absent0", "", "..", "a/b"])
def test_missing_interface_is_none(tmp_path, name):
    assert detect_kind(name, sysfs=str(tmp_path)) is None


def test_the_rule():
    assert link_kind(ARPHRD_NONE, None) is Kind.L3
    assert link_kind(1, None) is Kind.L3
    assert link_kind(1, "  ") is Kind.L3
    assert link_kind(1, "02:00:00:00:00:01") is Kind.L2
    assert link_kind(None, "02:00:00:00:00:01") is Kind.L2


def test_the_real_loopback_is_read():
    assert detect_kind("lo") is Kind.L2
