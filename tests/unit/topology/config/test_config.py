"""topology.config: the seed loads as the host it describes; every bad config is
rejected with the file, the field path and the offending value."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from netaddr import IPAddress, IPNetwork, IPSet

from topology.config import (
    ABSENT, CheckResult, ConfigError, ConfigIssue, check, check_file, derived_mac, load_host,
)
from topology.model import (Classification, ClassificationLimits, ClassRule, Kind,
                            Role, Settings, TrafficClass)

SEED = Path(__file__).resolve().parents[4] / "examples" / "seed.yaml"

# Indexes of the seed's containers in lxc.containers.
GATEWAY, XRAY, MCP, API = 0, 1, 2, 3


@pytest.fixture
def seed() -> dict:
    return yaml.safe_load(SEED.read_text())


def write(tmp_path, data, name="host.yaml") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def errors(tmp_path, data) -> tuple:
    """(file, errors) of `data` written to a file."""
    path = write(tmp_path, data)
    return str(path), check(path)


def issue_at(issues, path) -> ConfigIssue:
    found = [i for i in issues if i.path == path]
    assert found, f"no issue at {path}; issues:\n" + "\n".join(map(str, issues))
    return found[0]


def assert_issue(file, issues, path, value, words):
    """An issue at `path` with `value`, whose message has `words`, and whose text
    names the file, the path and the value."""
    issue = issue_at(issues, path)
    assert issue.file == file
    assert issue.value == value
    assert words in issue.message, str(issue)
    text = str(issue)
    assert text.startswith(f"{file}: {path}")
    if value is not ABSENT:
        assert repr(value) in text
    return issue


def container(data, index) -> dict:
    return data["lxc"]["containers"][index]


# --- the seed ------------------------------------------------------------------


def test_seed_loads_with_its_ports_in_order():
    host = load_host(SEED)
    assert host.source == str(SEED)
    assert host.mesh.name == "mesh" and host.privacy_bridge.name == "vmbr0"
    assert [p.name for p in host.mesh.ports] == ["mesh-gw", "to-privacy", "veth200", "veth201"]
    assert [p.name for p in host.privacy_bridge.ports] == ["vmbr0-gw", "from-mesh", "veth100", "veth102"]


def test_seed_mesh_ports_have_their_roles():
    mesh = load_host(SEED).mesh
    uplink = mesh.port("mesh-gw")
    assert (uplink.role, uplink.kind, uplink.interface) == (Role.NETMAKER_UPLINK, Kind.L3,
                                                            "nm-privacy")
    assert uplink.adapter
    assert uplink.address == IPNetwork("10.1.0.1/24") and uplink.address.prefixlen == 24
    assert str(uplink.address) == "10.1.0.1/24"
    assert uplink.mac is None
    link = mesh.port("to-privacy")
    assert (link.role, link.kind, link.peer) == (Role.INTER_BRIDGE, Kind.L2, "from-mesh")
    assert [p.role for p in mesh.ports[2:]] == [Role.MANAGEMENT, Role.MANAGEMENT]


def test_seed_privacy_ports_have_their_roles():
    privacy = load_host(SEED).privacy_bridge
    uplink = privacy.port("vmbr0-gw")
    assert (uplink.role, uplink.kind, uplink.interface) == (Role.WARP_UPLINK, Kind.L3, "warp0")
    assert str(uplink.address) == "10.0.0.1/24"
    assert privacy.port("from-mesh").peer == "to-privacy"
    assert privacy.port("veth100").role is Role.PRIVACY_CONTAINER
    xray = privacy.port("veth102")
    assert xray.role is Role.XRAY_CLIENT
    assert [(s.name, s.protocol, s.port) for s in xray.container.services] == [
        ("xray-client", "tcp", 8080)]


def test_seed_containers_have_addresses_and_derived_macs():
    host = load_host(SEED)
    mcp = host.mesh.port("veth200").container
    assert (mcp.id, mcp.name, mcp.veth, mcp.bridge) == ("200", "mcp-server", "veth200", "mesh")
    assert mcp.address == IPAddress("10.1.0.200")
    assert str(mcp.network) == "10.1.0.200/24"
    assert mcp.gateway == IPAddress("10.1.0.1")
    assert mcp.mac == "02:00:0a:01:00:c8"
    assert host.xray_client.container.mac == "02:00:0a:00:00:66"
    assert [c.mac for c in host.privacy_bridge.containers] == ["02:00:0a:00:00:64", "02:00:0a:00:00:66"]


def test_seed_socketnet_section_and_unmanaged_tunnel():
    host = load_host(SEED)
    assert host.settings == Settings("127.0.0.1", 6653, 2.0, 3, 10.0)
    assert host.netmaker_ranges == (IPNetwork("10.101.0.0/16"), IPNetwork("100.64.0.0/10"))
    assert [(n.name, [str(s) for s in n.subnets]) for n in host.nodes] == [
        ("node2", ["10.2.0.0/24"])]
    assert "10.0.0.0/8" in [str(n) for n in host.privacy_blocked]
    assert host.ignored == (("wg0", "wireguard.vpn_server is on no bridge"),)
    assert str(host.management_subnet.iter_cidrs()[0]) == "10.1.0.0/24"
    assert str(host.privacy_subnet.iter_cidrs()[0]) == "10.0.0.0/24"


def test_seed_flows_are_parsed_onto_their_bridges():
    host = load_host(SEED)
    assert len(host.mesh.seed_flows) == 6 and len(host.privacy_bridge.seed_flows) == 5
    first = host.mesh.seed_flows[0]
    assert (first.bridge, first.priority, first.match, first.actions) == (
        "mesh", 100, {"in_port": "nm-privacy"}, ("output:to-privacy",))


def test_check_file_warns_once_per_seed_flow_and_has_no_errors():
    result = check_file(SEED)
    assert isinstance(result, CheckResult)
    assert result.errors == [] and result.host is not None
    assert [w.path for w in result.warnings] == (
        [f"openflow.bridges.mesh.flows[{i}]" for i in range(6)]
        + [f"openflow.bridges.vmbr0.flows[{i}]" for i in range(5)])
    assert result.warnings[0].value == "priority=100,in_port=nm-privacy,actions=output:to-privacy"
    assert "(N4)" in result.warnings[0].message


def test_json_of_the_seed_loads_as_the_same_host(tmp_path, seed):
    from_json = load_host(write(tmp_path, seed, "host.json"))
    assert replace(from_json, source=str(SEED)) == load_host(SEED)


def test_json_null_is_the_same_as_a_missing_key(tmp_path, seed):
    """builtins.toJSON writes unset options as null."""
    container(seed, MCP)["properties"]["hwaddr"] = None
    seed["netmaker"]["server"] = None
    host = load_host(write(tmp_path, seed, "host.json"))
    assert host.mesh.port("veth200").container.mac == "02:00:0a:01:00:c8"


def test_derived_mac_is_02_00_and_the_address_bytes():
    assert derived_mac(IPAddress("10.1.0.200")) == "02:00:0a:01:00:c8"


# --- the file --------------------------------------------------------------------


def test_missing_file_is_one_issue_naming_it(tmp_path):
    path = tmp_path / "nope.yaml"
    (issue,) = check(path)
    assert issue.file == str(path) and issue.path == "" and issue.value is ABSENT
    assert str(issue) == f"{path}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as raised:
        load_host(path)
    assert str(raised.value) == str(issue)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("name, text, words", [
    ("bad.yaml", "netmaker: [unclosed\n", "not valid YAML"),
    ("bad.yaml", "netmaker: {}\nnetmaker: {}\n", "duplicate key 'netmaker' (line 2"),
    ("bad.json", '{"netmaker": ', "not valid JSON"),
    ("bad.json", '{"lxc": {}, "lxc": {}}', "duplicate key 'lxc'"),
    ("empty.yaml", "", "the file is empty"),
    ("list.yaml", "- netmaker\n", "the top is a list"),
])
def test_unreadable_file_is_one_issue_naming_it(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    (issue,) = check(path)
    assert issue.file == str(path) and issue.path == ""
    assert words in str(issue) and str(issue).startswith(f"{path}: ")


# --- unknown keys ------------------------------------------------------------------


def _set(data, path, value):
    *parents, last = path
    for key in parents:
        data = data[key]
    data[last] = value


@pytest.mark.parametrize("keys, issue_path", [
    (("firewall",), "firewall"),
    (("netmaker", "mtu"), "netmaker.mtu"),
    (("networking", "bonds"), "networking.bonds"),
    (("networking", "veth_pairs", "mesh_to_privacy", "peer1", "mtu"),
     "networking.veth_pairs.mesh_to_privacy.peer1.mtu"),
    (("wireguard", "warp_tunnel", "mtu"), "wireguard.warp_tunnel.mtu"),
    (("openflow", "bridges", "mesh", "fail_mode"), "openflow.bridges.mesh.fail_mode"),
    (("lxc", "containers", XRAY, "mtu"), "lxc.containers[1].mtu"),
    (("lxc", "containers", XRAY, "properties", "mtu"), "lxc.containers[1].properties.mtu"),
    (("lxc", "containers", XRAY, "properties", "services", 0, "mtu"),
     "lxc.containers[1].properties.services[0].mtu"),
    (("socketnet", "grafana"), "socketnet.grafana"),
    (("socketnet", "openflow", "mtu"), "socketnet.openflow.mtu"),
    (("socketnet", "ports", "warp0", "mtu"), "socketnet.ports.warp0.mtu"),
])
def test_unknown_key_is_an_error(tmp_path, seed, keys, issue_path):
    _set(seed, keys, 1400)
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, issue_path, 1400, "unknown key")


def test_unknown_key_in_socketnet_containers_is_an_error(tmp_path, seed):
    seed["socketnet"]["containers"] = {"102": {"priority": 1}}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, 'socketnet.containers."102".priority', 1, "unknown key")


def test_seed_sections_socketnet_does_not_read_are_accepted(tmp_path, seed):
    seed["systemd"]["units"]["anything.service"] = {"whatever": [1, 2]}
    seed["packagekit"]["other"] = "thing"
    assert check(write(tmp_path, seed)) == []


@pytest.mark.parametrize("keys, path", [
    (("netmaker", "interface"), "netmaker.interface"),
    (("lxc", "containers", MCP, "properties", "name"), "lxc.containers[2].properties.name"),
    (("networking", "veth_pairs", "mesh_to_privacy", "peer2"),
     "networking.veth_pairs.mesh_to_privacy.peer2"),
])
def test_missing_required_key_is_an_error(tmp_path, seed, keys, path):
    *parents, last = keys
    parent = seed
    for key in parents:
        parent = parent[key]
    del parent[last]
    file, issues = errors(tmp_path, seed)
    assert str(assert_issue(file, issues, path, ABSENT, "required")) == (
        f"{file}: {path}: required, but missing")


# --- types and values -------------------------------------------------------------


@pytest.mark.parametrize("keys, value, issue_path, words", [
    (("lxc", "containers"), "veth100", "lxc.containers", "expected a list, got a string"),
    (("lxc", "containers", XRAY, "properties", "services"), {"name": "x"},
     "lxc.containers[1].properties.services", "expected a list, got a mapping"),
    (("netmaker", "interface"), 42, "netmaker.interface", "expected a non-empty string"),
    (("wireguard", "warp_tunnel", "enabled"), "yes", "wireguard.warp_tunnel.enabled",
     "expected true or false"),
    (("socketnet", "netmaker_ranges"), "10.101.0.0/16", "socketnet.netmaker_ranges",
     "expected a list"),
    (("socketnet", "openflow", "echo_misses"), "3", "socketnet.openflow.echo_misses",
     "expected an integer"),
    (("socketnet", "openflow", "echo_interval"), 0, "socketnet.openflow.echo_interval",
     "more than 0"),
    (("socketnet", "reconcile_timeout"), True, "socketnet.reconcile_timeout",
     "expected a number of seconds"),
    (("socketnet", "ports"), ["warp0"], "socketnet.ports", "expected a mapping"),
    (("openflow", "bridges", "mesh", "flows"), "priority=10,actions=drop",
     "openflow.bridges.mesh.flows", "expected a list"),
])
def test_wrong_type_is_an_error(tmp_path, seed, keys, value, issue_path, words):
    _set(seed, keys, value)
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, issue_path, value, words)


def test_bad_ipv4_interface_address_reads_as_documented(tmp_path, seed):
    container(seed, MCP)["properties"]["ipv4_address"] = "10.0.0.300/24"
    file, issues = errors(tmp_path, seed)
    assert [str(i) for i in issues] == [
        f"{file}: lxc.containers[2].properties.ipv4_address = '10.0.0.300/24': "
        f"not an IPv4 interface address (addr/prefix)"]


@pytest.mark.parametrize("keys, value, issue_path, words", [
    (("lxc", "containers", MCP, "properties", "ipv4_address"), "10.1.0.200",
     "lxc.containers[2].properties.ipv4_address", "not an IPv4 interface address"),
    (("lxc", "containers", MCP, "properties", "ipv4_address"), "10.1.0.200/33",
     "lxc.containers[2].properties.ipv4_address", "not an IPv4 interface address"),
    (("lxc", "containers", MCP, "properties", "ipv4_address"), "10.1.0.0/24",
     "lxc.containers[2].properties.ipv4_address", "network address"),
    (("lxc", "containers", MCP, "properties", "ipv4_address"), "10.1.0.255/24",
     "lxc.containers[2].properties.ipv4_address", "broadcast address"),
    (("lxc", "containers", MCP, "properties", "gateway"), "10.1.0.256",
     "lxc.containers[2].properties.gateway", "not an IPv4 address"),
    (("socketnet", "ports", "warp0", "address"), "10.0.0.1", "socketnet.ports.warp0.address",
     "not an IPv4 interface address"),
    (("socketnet", "netmaker_ranges", 0), "10.101.0.1/16", "socketnet.netmaker_ranges[0]",
     "host bits are set; the network is 10.101.0.0/16"),
    (("socketnet", "nodes", 0, "subnets", 0), "10.2.0.0", "socketnet.nodes[0].subnets[0]",
     "not an IPv4 network"),
])
def test_bad_ipv4_value_is_an_error(tmp_path, seed, keys, value, issue_path, words):
    _set(seed, keys, value)
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, issue_path, value, words)


def test_blocked_destinations_are_ipv4_networks(tmp_path, seed):
    seed["socketnet"]["privacy"] = {"blocked_destinations": ["0.0.0.0/8", "::/0"]}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.privacy.blocked_destinations[1]", "::/0",
                 "not an IPv4 network")


@pytest.mark.parametrize("value, words", [
    ("zz:00:00:00:00:01", "not a MAC address"),
    ("02:00:00:00:01", "not a MAC address"),
    ("01:00:5e:00:00:01", "multicast"),
])
def test_bad_mac_is_an_error(tmp_path, seed, value, words):
    container(seed, XRAY)["properties"]["hwaddr"] = value
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[1].properties.hwaddr", value, words)


def test_unquoted_digit_mac_read_by_yaml_as_a_number_is_explained(tmp_path):
    text = SEED.read_text().replace("        name: xray-client\n",
                        "        name: xray-client\n        hwaddr: 12:34:56:00:11:22\n")
    path = tmp_path / "host.yaml"
    path.write_text(text)
    issue = issue_at(check(path), "lxc.containers[1].properties.hwaddr")
    assert "quote it" in issue.message and isinstance(issue.value, int)


@pytest.mark.parametrize("keys, value, issue_path, words", [
    (("lxc", "containers", XRAY, "properties", "services", 0, "port"), 0,
     "lxc.containers[1].properties.services[0].port", "not in 1..65535"),
    (("lxc", "containers", XRAY, "properties", "services", 0, "port"), 70000,
     "lxc.containers[1].properties.services[0].port", "not in 1..65535"),
    (("lxc", "containers", XRAY, "properties", "services", 0, "port"), "8080",
     "lxc.containers[1].properties.services[0].port", "expected an integer"),
    (("lxc", "containers", XRAY, "properties", "services", 0, "protocol"), "sctp",
     "lxc.containers[1].properties.services[0].protocol", "must be one of tcp, udp"),
    (("socketnet", "openflow", "listen"), "127.0.0.1:66530", "socketnet.openflow.listen",
     "not HOST:PORT"),
    (("socketnet", "openflow", "listen"), "localhost:6653", "socketnet.openflow.listen",
     "not HOST:PORT"),
])
def test_bad_port_or_protocol_is_an_error(tmp_path, seed, keys, value, issue_path, words):
    _set(seed, keys, value)
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, issue_path, value, words)


@pytest.mark.parametrize("name", ["veth-much-too-long0", "veth/1", "veth 1", "veth:1"])
def test_bad_interface_name_is_an_error(tmp_path, seed, name):
    container(seed, API)["veth"] = name
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].veth", name, "not a valid interface name")


def test_listen_takes_ipv6_in_brackets(tmp_path, seed):
    seed["socketnet"]["openflow"]["listen"] = "[::1]:6654"
    settings = load_host(write(tmp_path, seed)).settings
    assert (settings.ofp_listen_host, settings.ofp_listen_port) == ("::1", 6654)


# --- one port, one bridge ------------------------------------------------------------


def test_container_veth_that_is_a_veth_pair_end_on_the_other_bridge_is_an_error(tmp_path, seed):
    container(seed, GATEWAY)["veth"] = "to-privacy"  # gateway is on vmbr0, to-privacy on mesh
    file, issues = errors(tmp_path, seed)
    issue = assert_issue(file, issues, "lxc.containers[0].veth", "to-privacy",
                         "already an end of a veth pair on mesh")
    assert "a port of one bridge only" in issue.message
    assert "networking.veth_pairs.mesh_to_privacy.peer1.name" in issue.message


def test_same_veth_on_two_containers_is_an_error(tmp_path, seed):
    container(seed, API)["veth"] = "veth200"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].veth", "veth200",
                 "already the veth of container 200 (lxc.containers[2].veth)")


def test_port_named_like_an_adapter_or_a_bridge_is_an_error(tmp_path, seed):
    container(seed, API)["veth"] = "mesh-gw"
    container(seed, MCP)["veth"] = "vmbr0"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].veth", "mesh-gw", "the adapter of nm-privacy")
    assert_issue(file, issues, "lxc.containers[2].veth", "vmbr0", "the privacy bridge")


def test_unmanaged_wireguard_interface_name_cannot_be_reused(tmp_path, seed):
    container(seed, API)["veth"] = "wg0"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].veth", "wg0",
                 "already the interface of wireguard.vpn_server")


# --- containers on bridges ---------------------------------------------------------


def test_container_without_a_bridge_is_an_error(tmp_path, seed):
    del container(seed, API)["bridge"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].bridge", ABSENT, "required, but missing")


def test_container_on_an_unknown_bridge_is_an_error(tmp_path, seed):
    container(seed, API)["bridge"] = "vmbr9"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].bridge", "vmbr9", "not a bridge of this host")


@pytest.mark.parametrize("field, value, issue_path, words", [
    ("id", "200", "lxc.containers[3].id", "id 200 is already that of lxc.containers[2].id"),
    ("name", "mcp-server", "lxc.containers[3].properties.name",
     "name mcp-server is already that of lxc.containers[2].properties.name"),
    ("ipv4_address", "10.1.0.200/24", "lxc.containers[3].properties.ipv4_address",
     "address 10.1.0.200 is already that of lxc.containers[2].properties.ipv4_address"),
    ("hwaddr", "02:00:0a:01:00:c8", "lxc.containers[3].properties.hwaddr",
     "MAC 02:00:0a:01:00:c8 is already that of lxc.containers[2].properties.ipv4_address"),
])
def test_duplicate_container_identity_is_an_error(tmp_path, seed, field, value, issue_path,
                                                  words):
    api = container(seed, API)
    (api if field == "id" else api["properties"])[field] = value
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, issue_path, value, words)
    assert len(issues) == 1


def test_container_with_the_adapter_address_is_an_error(tmp_path, seed):
    seed["socketnet"]["ports"]["nm-privacy"]["address"] = "10.1.0.201/24"
    for index in (MCP, API):
        container(seed, index)["properties"]["gateway"] = "10.1.0.201"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].properties.ipv4_address", "10.1.0.201/24",
                 "10.1.0.201 is the address of the adapter mesh-gw")


def test_gateway_outside_the_subnet_is_an_error(tmp_path, seed):
    container(seed, MCP)["properties"]["gateway"] = "10.9.0.1"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[2].properties.gateway", "10.9.0.1",
                 "not inside the container's subnet 10.1.0.0/24")


def test_containers_on_one_bridge_with_different_gateways_is_an_error(tmp_path, seed):
    container(seed, API)["properties"]["gateway"] = "10.1.0.2"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].properties.gateway", "10.1.0.2",
                 "share one gateway, and lxc.containers[2].properties.gateway is 10.1.0.1")


def test_containers_on_one_bridge_with_different_subnets_is_an_error(tmp_path, seed):
    container(seed, API)["properties"]["ipv4_address"] = "10.1.0.201/25"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[3].properties.ipv4_address", "10.1.0.201/25",
                 "subnet 10.1.0.128/25 differs from 10.1.0.0/24")


# --- subnets -----------------------------------------------------------------------


def _move_management(seed, prefix, gateway):
    for index, host in ((MCP, 200), (API, 201)):
        props = container(seed, index)["properties"]
        props["ipv4_address"] = f"{prefix}.{host}/24"
        props["gateway"] = gateway


def test_overlapping_privacy_and_management_subnets_is_an_error(tmp_path, seed):
    _move_management(seed, "10.0.0", "10.0.0.1")
    for index, host in ((MCP, 200), (API, 201)):
        container(seed, index)["properties"]["ipv4_address"] = f"10.0.0.{host}/16"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[0].properties.ipv4_address", "10.0.0.100/24",
                 "the privacy subnet 10.0.0.0/24 overlaps the management subnet 10.0.0.0/16 "
                 "(lxc.containers[2].properties.ipv4_address)")


def test_subnet_overlapping_a_netmaker_range_is_an_error(tmp_path, seed):
    _move_management(seed, "10.101.7", "10.101.7.1")
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[2].properties.ipv4_address", "10.101.7.200/24",
                 "the management subnet 10.101.7.0/24 overlaps the Netmaker range "
                 "10.101.0.0/16 (socketnet.netmaker_ranges[0])")


def test_subnet_overlapping_a_default_netmaker_range_is_an_error(tmp_path, seed):
    del seed["socketnet"]["netmaker_ranges"]
    _move_management(seed, "100.64.1", "100.64.1.1")
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[2].properties.ipv4_address", "100.64.1.200/24",
                 "overlaps the Netmaker range 100.64.0.0/10 (default")


def test_subnet_overlapping_a_node_subnet_is_an_error(tmp_path, seed):
    seed["socketnet"]["nodes"][0]["subnets"] = ["10.0.0.0/16"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[0].properties.ipv4_address", "10.0.0.100/24",
                 "the privacy subnet 10.0.0.0/24 overlaps node node2's subnet 10.0.0.0/16 "
                 "(socketnet.nodes[0].subnets[0])")


# --- roles -------------------------------------------------------------------------


def test_no_warp_uplink_is_an_error(tmp_path, seed):
    del seed["wireguard"]["warp_tunnel"]["post_up"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "wireguard", ABSENT, "no warp uplink")


def test_a_second_warp_uplink_is_an_error(tmp_path, seed):
    seed["wireguard"]["warp_two"] = {"interface": "warp1",
                                     "post_up": "ovs-vsctl add-port vmbr0 warp1"}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "wireguard.warp_two.interface", "warp1",
                 "a second warp uplink; the privacy bridge has exactly one")


def test_warp_uplink_on_the_mesh_bridge_is_an_error(tmp_path, seed):
    seed["wireguard"]["warp_tunnel"]["post_up"] = "ovs-vsctl add-port mesh warp0"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "wireguard.warp_tunnel.post_up", "ovs-vsctl add-port mesh warp0",
                 "the warp uplink is on mesh, the mesh bridge")


def test_no_netmaker_uplink_is_an_error(tmp_path, seed):
    del seed["netmaker"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "netmaker", ABSENT, "required, but missing")


def test_no_inter_bridge_link_is_an_error(tmp_path, seed):
    seed["networking"]["veth_pairs"] = {}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "networking.veth_pairs", ABSENT, "no inter-bridge link")


def test_inter_bridge_pair_on_one_bridge_is_an_error(tmp_path, seed):
    seed["networking"]["veth_pairs"]["mesh_to_privacy"]["peer2"]["bridge"] = "mesh"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "networking.veth_pairs.mesh_to_privacy.peer2.bridge", "mesh",
                 "both ends of the pair are on mesh")


def test_a_second_inter_bridge_link_is_an_error(tmp_path, seed):
    seed["networking"]["veth_pairs"]["again"] = {"peer1": {"name": "to-p2", "bridge": "mesh"},
                                                 "peer2": {"name": "from-m2", "bridge": "vmbr0"}}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "networking.veth_pairs.again.peer1.name", "to-p2",
                 "a second inter-bridge link; socketnet allows exactly one "
                 "(networking.veth_pairs.mesh_to_privacy)")


def test_veth_pair_end_on_a_third_bridge_is_an_error(tmp_path, seed):
    seed["networking"]["veth_pairs"]["mesh_to_privacy"]["peer2"]["bridge"] = "vmbr1"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "networking.veth_pairs.mesh_to_privacy.peer2.bridge", "vmbr1",
                 "not a bridge of this host")


def test_no_xray_client_is_an_error(tmp_path, seed):
    del container(seed, XRAY)["properties"]["services"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers", ABSENT, "no xray client")


def test_a_second_xray_client_is_an_error(tmp_path, seed):
    container(seed, GATEWAY)["properties"]["services"] = [
        {"name": "dns", "protocol": "udp", "port": 53}]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "lxc.containers[1].id", "102",
                 'a second xray client (the first is container 100); set '
                 'socketnet.containers."102".role: privacy-container')


def test_role_override_picks_the_xray_client(tmp_path, seed):
    container(seed, GATEWAY)["properties"]["services"] = [
        {"name": "dns", "protocol": "udp", "port": 53}]
    seed["socketnet"]["containers"] = {"100": {"role": "privacy-container"}}
    host = load_host(write(tmp_path, seed))
    assert host.xray_client.name == "veth102"
    assert host.privacy_bridge.port("veth100").role is Role.PRIVACY_CONTAINER


@pytest.mark.parametrize("old,new", [("privacy", Role.PRIVACY_CONTAINER),
                                     ("privacy-proxy", Role.XRAY_CLIENT)])
def test_a_roles_earlier_name_still_reads_as_its_new_one_with_a_warning(tmp_path, seed, old, new):
    container(seed, GATEWAY)["properties"]["services"] = [
        {"name": "dns", "protocol": "udp", "port": 53}]
    chosen = {"privacy": "100", "privacy-proxy": "102"}[old]
    other = {"100": "102", "102": "100"}[chosen]
    seed["socketnet"]["containers"] = {chosen: {"role": old}, other: {
        "role": "xray-client" if new is Role.PRIVACY_CONTAINER else "privacy-container"}}
    result = check_file(write(tmp_path, seed))
    assert result.errors == []
    veth = {"100": "veth100", "102": "veth102"}[chosen]
    assert result.host.privacy_bridge.port(veth).role is new
    assert [w.message for w in result.warnings if w.path.startswith("socketnet.containers")] == [
        f"renamed {new.value}; the old name still reads as it"]


def test_role_override_onto_the_wrong_bridge_is_an_error(tmp_path, seed):
    seed["socketnet"]["containers"] = {"200": {"role": "privacy-container"}}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, 'socketnet.containers."200".role', "privacy-container",
                 "container 200 is on mesh")


def test_options_for_an_unknown_container_is_an_error(tmp_path, seed):
    seed["socketnet"]["containers"] = {"999": {"mac": "02:00:00:00:00:09"}}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, 'socketnet.containers."999"', "999", "no container has this id")


def test_container_mac_comes_from_hwaddr_then_socketnet(tmp_path, seed):
    container(seed, MCP)["properties"]["hwaddr"] = "02:AA:00:00:00:01"
    container(seed, API)["properties"]["hwaddr"] = "02:aa:00:00:00:02"
    seed["socketnet"]["containers"] = {201: {"mac": "02:bb:00:00:00:02"}}
    mesh = load_host(write(tmp_path, seed)).mesh
    assert mesh.port("veth200").container.mac == "02:aa:00:00:00:01"
    assert mesh.port("veth201").container.mac == "02:bb:00:00:00:02"


def test_management_containers_may_be_none_when_the_adapter_has_an_address(tmp_path, seed):
    del seed["lxc"]["containers"][MCP:]
    seed["openflow"]["bridges"]["mesh"]["flows"] = []
    seed["socketnet"]["ports"]["nm-privacy"]["address"] = "10.1.0.1/24"
    host = load_host(write(tmp_path, seed))
    assert [p.name for p in host.mesh.ports] == ["mesh-gw", "to-privacy"]
    assert str(host.mesh.port("mesh-gw").address) == "10.1.0.1/24"


def test_adapter_without_an_address_is_an_error(tmp_path, seed):
    del seed["lxc"]["containers"][MCP:]
    seed["openflow"]["bridges"]["mesh"]["flows"] = []
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "netmaker.interface", "nm-privacy",
                 "no address for the adapter mesh-gw")


# --- uplinks -------------------------------------------------------------------------


@pytest.mark.parametrize("post_up", [
    "ovs-vsctl --may-exist add-port vmbr0 warp0",
    "ovs-vsctl add-port vmbr0 %i",
    "ip link set warp0 up && /usr/bin/ovs-vsctl --timeout 5 --may-exist add-port vmbr0 warp0 "
    "-- set interface warp0 type=system",
    "ovs-vsctl add-br vmbr0 -- add-port 'vmbr0' warp0; ip route add 1.1.1.1 dev warp0",
])
def test_post_up_forms_that_enslave_warp_on_vmbr0(tmp_path, seed, post_up):
    seed["wireguard"]["warp_tunnel"]["post_up"] = post_up
    assert load_host(write(tmp_path, seed)).privacy_bridge.port("vmbr0-gw").interface == "warp0"


def test_post_up_adding_another_interface_is_an_error(tmp_path, seed):
    seed["wireguard"]["warp_tunnel"]["post_up"] = "ovs-vsctl add-port vmbr0 wrap0"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "wireguard.warp_tunnel.post_up", "ovs-vsctl add-port vmbr0 wrap0",
                 "adds 'wrap0' to vmbr0, not this entry's interface 'warp0'")


def test_socketnet_can_name_the_warp_bridge_instead_of_post_up(tmp_path, seed):
    del seed["wireguard"]["warp_tunnel"]["post_up"]
    seed["socketnet"]["ports"]["warp0"]["bridge"] = "vmbr0"
    assert load_host(write(tmp_path, seed)).privacy_bridge.name == "vmbr0"


def test_socketnet_bridge_contradicting_post_up_is_an_error(tmp_path, seed):
    seed["socketnet"]["ports"]["warp0"]["bridge"] = "vmbr1"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.ports.warp0.bridge", "vmbr1",
                 "post_up adds warp0 to vmbr0")


def test_disabled_tunnel_is_ignored(tmp_path, seed):
    seed["wireguard"]["vpn_server"]["enabled"] = False
    host = load_host(write(tmp_path, seed))
    assert host.ignored == (("wg0", "wireguard.vpn_server is disabled"),)


def test_l2_netmaker_uplink_is_its_own_bridge_port(tmp_path, seed):
    seed["socketnet"]["ports"]["nm-privacy"] = {"kind": "l2", "mac": "02:00:00:00:0f:01"}
    port = load_host(write(tmp_path, seed)).mesh.ports[0]
    assert (port.name, port.interface, port.kind, port.address, port.mac, port.adapter) == (
        "nm-privacy", "nm-privacy", Kind.L2, None, "02:00:00:00:0f:01", False)


def test_l2_uplink_with_an_adapter_is_an_error(tmp_path, seed):
    seed["socketnet"]["ports"]["nm-privacy"]["kind"] = "l2"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.ports.nm-privacy.adapter", "mesh-gw",
                 "only an l3 uplink has an adapter")


def test_adapter_name_and_address_can_be_set(tmp_path, seed):
    seed["socketnet"]["ports"]["warp0"] = {"adapter": "warp-ad", "address": "10.0.0.1/24",
                                           "mac": "02:00:00:00:0f:02"}
    port = load_host(write(tmp_path, seed)).privacy_bridge.ports[0]
    assert (port.name, str(port.address), port.mac) == ("warp-ad", "10.0.0.1/24",
                                                        "02:00:00:00:0f:02")


def test_adapter_address_other_than_the_gateway_is_an_error(tmp_path, seed):
    seed["socketnet"]["ports"]["warp0"]["address"] = "10.0.0.254/24"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.ports.warp0.address", "10.0.0.254/24",
                 "use the gateway 10.0.0.1; the adapter is their gateway")


def test_adapter_named_as_its_interface_is_an_error(tmp_path, seed):
    seed["socketnet"]["ports"]["warp0"]["adapter"] = "warp0"
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.ports.warp0.adapter", "warp0", "a name of its own")


@pytest.mark.parametrize("name, words", [
    ("eth9", "not a port with options"),
    ("veth100", "not a port with options"),
    ("wg0", "not a port: wireguard.vpn_server is on no bridge"),
])
def test_socketnet_ports_naming_no_uplink_is_an_error(tmp_path, seed, name, words):
    seed["socketnet"]["ports"][name] = {"mac": "02:00:00:00:0f:03"}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, f"socketnet.ports.{name}", name, words)


# --- openflow.bridges --------------------------------------------------------------


def test_openflow_bridge_no_port_uses_is_an_error(tmp_path, seed):
    seed["openflow"]["bridges"]["vmbr1"] = {"flows": []}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "openflow.bridges.vmbr1", "vmbr1",
                 "no port of this host is on this bridge")


def test_openflow_bridge_in_use_but_missing_is_an_error(tmp_path, seed):
    del seed["openflow"]["bridges"]["vmbr0"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "openflow.bridges.vmbr0", ABSENT, "the privacy bridge")


def test_bad_seed_flow_names_bridge_index_and_text(tmp_path, seed):
    seed["openflow"]["bridges"]["mesh"]["flows"][3] = (
        "priority=90,in_port=nm-privacy,vlan_tci=1,actions=normal")
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "openflow.bridges.mesh.flows[3]",
                 "priority=90,in_port=nm-privacy,vlan_tci=1,actions=normal",
                 "unknown match field 'vlan_tci=1'")


def test_seed_flow_naming_a_port_of_the_other_bridge_is_an_error(tmp_path, seed):
    seed["openflow"]["bridges"]["mesh"]["flows"][1] = (
        "priority=90,in_port=veth200,actions=output:warp0")
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "openflow.bridges.mesh.flows[1]",
                 "priority=90,in_port=veth200,actions=output:warp0",
                 "output 'warp0' is not a port of mesh")


# --- all at once ------------------------------------------------------------------


def test_every_error_is_reported_in_one_pass(tmp_path, seed):
    container(seed, MCP)["properties"]["ipv4_address"] = "10.0.0.300/24"
    container(seed, XRAY)["properties"]["services"][0]["port"] = 0
    seed["netmaker"]["mtu"] = 1400
    seed["socketnet"]["ports"]["eth9"] = {}
    seed["openflow"]["bridges"]["vmbr0"]["flows"].append("priority=70000,actions=drop")
    path = write(tmp_path, seed)
    with pytest.raises(ConfigError) as raised:
        load_host(path)
    paths = [i.path for i in raised.value.issues]
    assert sorted(paths) == sorted([
        "lxc.containers[2].properties.ipv4_address",
        "lxc.containers[1].properties.services[0].port",
        "netmaker.mtu",
        "socketnet.ports.eth9",
        "openflow.bridges.vmbr0.flows[5]",
    ])
    assert str(raised.value).splitlines() == [str(i) for i in raised.value.issues]


def test_config_issue_reads_file_path_value_message():
    issue = ConfigIssue("examples/seed.yaml", "lxc.containers[2].properties.ipv4_address",
                        "10.0.0.300/24", "not an IPv4 interface address (addr/prefix)")
    assert str(issue) == ("examples/seed.yaml: lxc.containers[2].properties.ipv4_address = "
                          "'10.0.0.300/24': not an IPv4 interface address (addr/prefix)")



@pytest.mark.parametrize("section, value, words", [
    ("netmaker", 5, "expected a mapping, got an integer"),
    ("lxc", [], "expected a mapping, got a list"),
    ("wireguard", "warp0", "expected a mapping of names, got a string"),
])
def test_a_broken_section_is_one_error_not_a_cascade(tmp_path, seed, section, value, words):
    seed[section] = value
    file, issues = errors(tmp_path, seed)
    assert [i.path for i in issues] == [section]
    assert_issue(file, issues, section, value, words)


def test_a_long_offending_value_is_shortened_in_the_text(tmp_path, seed):
    seed["lxc"]["containers"][0]["veth"] = {"name": "veth100", "mtu": 1500, "more": "x" * 80}
    (issue,) = errors(tmp_path, seed)[1]
    assert issue.value == seed["lxc"]["containers"][0]["veth"]
    assert "...: expected a non-empty string, got a mapping" in str(issue)
    assert len(str(issue)) < len(issue.file) + 150


# --- socketnet.classification -----------------------------------------------------

RULES = ("socketnet", "classification", "rules")


def classification(data) -> dict:
    return data["socketnet"]["classification"]


def test_seed_classification_block_loads():
    c = load_host(SEED).classification
    assert (c.default, c.idle_timeout, c.conntrack_zone, c.seed_services) == (
        TrafficClass.DROP, 60, 21326, True)
    assert c.rules == (ClassRule("droplet-to-xray", TrafficClass.PRIVACY,
                                 IPSet(["10.101.0.5/32"]), IPSet(["10.0.0.102/32"]), "tcp",
                                 (), ((8080, 8080),)),)
    assert c.limits == ClassificationLimits()


def test_without_a_classification_block_the_defaults_apply(tmp_path, seed):
    del seed["socketnet"]["classification"]
    c = load_host(write(tmp_path, seed)).classification
    assert c == Classification()
    assert (c.default, c.idle_timeout, c.conntrack_zone, c.seed_services,
            c.rules) == (TrafficClass.DROP, 60, 21326, True, ())
    assert c.limits == ClassificationLimits(100000, 1000, 1000, 200, "drop", 30,
                                            2000, 200, 100000, 51821, 20000)


def test_every_classification_key_is_read(tmp_path, seed):
    classification(seed).update({
        "default": "management", "idle_timeout": 5, "conntrack_zone": 4000,
        "seed_services": False,
        "limits": {"cached_total": 10, "cached_per_source": 2, "packet_in_rate": 50,
                   "packet_in_burst": 0,
                   "over_limit": {"action": "drop", "seconds": 7},
                   "ingress_rate": 0, "ingress_per_source": 30,
                   "ingress_peer_rate": 5000, "ingress_wireguard_port": 51820}})
    classification(seed)["rules"] = [
        {"name": "mgmt", "class": "management", "dst": ["10.1.0.0/24"]},
        {"name": "quiet", "class": "drop", "src": ["10.101.0.7", "100.64.0.0/10"],
         "protocol": "udp", "src_ports": [53, "1024-2047"], "dst_ports": ["5000"]},
    ]
    c = load_host(write(tmp_path, seed)).classification
    assert (c.default, c.idle_timeout, c.conntrack_zone, c.seed_services) == (
        TrafficClass.MANAGEMENT, 5, 4000, False)
    assert c.limits == ClassificationLimits(10, 2, 50, 0, "drop", 7, 0, 30, 5000, 51820, 10)
    assert c.rules == (
        ClassRule("mgmt", TrafficClass.MANAGEMENT, None, IPSet(["10.1.0.0/24"])),
        ClassRule("quiet", TrafficClass.DROP, IPSet(["10.101.0.7/32", "100.64.0.0/10"]), None,
                  "udp", ((53, 53), (1024, 2047)), ((5000, 5000),)),
    )


@pytest.mark.parametrize("key, value, words", [
    ("granularity", "host-pair", "one per connection"),
    ("hard_timeout", 600, "no absolute lifetime"),
    ("limits.queue", 1024, "decided as they are read"),
])
def test_a_retired_key_loads_with_a_warning_that_says_it_has_no_effect(tmp_path, seed, key,
                                                                        value, words):
    """Decisions moved into the connection tracker, and packet-ins are decided as
    they are read: a config written for the earlier design still loads, and
    `check` tells its owner what became of the key."""
    *parents, name = key.split(".")
    section = classification(seed)
    for parent in parents:
        section = section.setdefault(parent, {})
    section[name] = value
    result = check_file(write(tmp_path, seed))
    assert result.errors == [] and result.host is not None
    (warning,) = [w for w in result.warnings if w.path == f"socketnet.classification.{key}"]
    assert warning.value == value
    assert "has no effect" in warning.message and words in warning.message


def test_a_rule_may_name_single_addresses_and_the_whole_management_subnet(tmp_path, seed):
    classification(seed)["rules"] = [
        {"name": "xray", "class": "privacy", "dst": ["10.0.0.102"]},
        {"name": "one", "class": "management", "dst": ["10.1.0.201", "10.1.0.200/31"]},
    ]
    assert check(write(tmp_path, seed)) == []


@pytest.mark.parametrize("keys, value, issue_path, words", [
    (("default",), "allow", "socketnet.classification.default",
     "must be one of privacy, management, drop"),
    (("conntrack_zone",), 0, "socketnet.classification.conntrack_zone", "not in 1..65534"),
    (("conntrack_zone",), 65535, "socketnet.classification.conntrack_zone",
     "not in 1..65534"),
    (("idle_timeout",), 0, "socketnet.classification.idle_timeout", "not in 1..65535"),
    (("idle_timeout",), 1.5, "socketnet.classification.idle_timeout", "expected an integer"),
    (("seed_services",), "yes", "socketnet.classification.seed_services",
     "expected true or false"),
    (("rules",), {"name": "x"}, "socketnet.classification.rules", "expected a list"),
    (("rules", 0), "droplet-to-xray", "socketnet.classification.rules[0]",
     "expected a mapping"),
    (("rules", 0, "class"), "allow", "socketnet.classification.rules[0].class",
     "must be one of privacy, management, drop"),
    (("rules", 0, "name"), "default", "socketnet.classification.rules[0].name", "reserved"),
    (("rules", 0, "name"), "service:mine", "socketnet.classification.rules[0].name",
     "reserved"),
    (("rules", 0, "protocol"), "sctp", "socketnet.classification.rules[0].protocol",
     "must be one of tcp, udp, icmp, any"),
    (("rules", 0, "src"), "10.101.0.5/32", "socketnet.classification.rules[0].src",
     "expected a list, got a string"),
    (("rules", 0, "src"), [], "socketnet.classification.rules[0].src",
     "an empty list matches nothing"),
    (("rules", 0, "src", 0), "10.101.0.5/16", "socketnet.classification.rules[0].src[0]",
     "host bits are set; the network is 10.101.0.0/16"),
    (("rules", 0, "src", 0), "10.101.0", "socketnet.classification.rules[0].src[0]",
     "not an IPv4 address"),
    (("rules", 0, "dst_ports"), [], "socketnet.classification.rules[0].dst_ports",
     "an empty list matches nothing"),
    (("rules", 0, "dst_ports", 0), "9000-8000", "socketnet.classification.rules[0].dst_ports[0]",
     "low <= high"),
    (("rules", 0, "dst_ports", 0), 0, "socketnet.classification.rules[0].dst_ports[0]",
     "within 1..65535"),
    (("rules", 0, "dst_ports", 0), "http", "socketnet.classification.rules[0].dst_ports[0]",
     'expected a port or a range "low-high"'),
    (("rules", 0, "dst_ports", 0), True, "socketnet.classification.rules[0].dst_ports[0]",
     'expected a port or a range "low-high"'),
    (("rules", 0, "action"), "accept", "socketnet.classification.rules[0].action",
     "unknown key"),
    (("limits", "cached_total"), 0, "socketnet.classification.limits.cached_total",
     "not in 1..10000000"),
    (("limits", "cached_per_source"), 100001,
     "socketnet.classification.limits.cached_per_source",
     "cached_per_source (100001) is more than cached_total (100000)"),
    (("limits", "over_limit", "action"), "reject",
     "socketnet.classification.limits.over_limit.action", "must be one of drop"),
    (("limits", "over_limit", "seconds"), 0,
     "socketnet.classification.limits.over_limit.seconds", "not in 1..65535"),
    (("limits", "cached_unknown"), 100001,
     "socketnet.classification.limits.cached_unknown",
     "cached_unknown (100001) is more than cached_total (100000)"),
    (("limits", "ingress_rate"), -1, "socketnet.classification.limits.ingress_rate",
     "not in 0..10000000"),
    (("limits", "ingress_wireguard_port"), 0,
     "socketnet.classification.limits.ingress_wireguard_port", "not in 1..65535"),
    (("limits", "ingress_peer_rate"), 100_000_001,
     "socketnet.classification.limits.ingress_peer_rate", "not in 0..100000000"),
    (("limits", "ingress_per_source"), "fast",
     "socketnet.classification.limits.ingress_per_source", "expected an integer"),
    (("limits", "burst"), 5, "socketnet.classification.limits.burst", "unknown key"),
    (("cache",), 5, "socketnet.classification.cache", "unknown key"),
])
def test_bad_classification_value_is_an_error(tmp_path, seed, keys, value, issue_path, words):
    _set(seed, ("socketnet", "classification") + keys, value)
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, issue_path, value, words)


def test_the_classification_section_must_be_a_mapping(tmp_path, seed):
    seed["socketnet"]["classification"] = ["drop"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.classification", ["drop"], "expected a mapping")


@pytest.mark.parametrize("key", ["name", "class"])
def test_a_rule_needs_a_name_and_a_class(tmp_path, seed, key):
    del classification(seed)["rules"][0][key]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, f"socketnet.classification.rules[0].{key}", ABSENT, "required")


def test_rule_names_are_unique(tmp_path, seed):
    rules = classification(seed)["rules"]
    rules.append(dict(rules[0]))
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.classification.rules[1].name", "droplet-to-xray",
                 "a second rule of that name")


@pytest.mark.parametrize("protocol", ["icmp", "any"])
@pytest.mark.parametrize("key", ["src_ports", "dst_ports"])
def test_ports_need_tcp_or_udp(tmp_path, seed, protocol, key):
    rule = classification(seed)["rules"][0]
    rule["protocol"] = protocol
    rule[key] = [8080]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, f"socketnet.classification.rules[0].{key}", [8080],
                 f"ports need protocol tcp or udp; this rule's is {protocol}")


def test_ports_without_a_protocol_are_an_error_too(tmp_path, seed):
    del classification(seed)["rules"][0]["protocol"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.classification.rules[0].dst_ports", [8080],
                 "ports need protocol tcp or udp; this rule's is any")


@pytest.mark.parametrize("dst", [["10.0.0.100/32"], ["10.0.0.0/24"], ["10.0.0.102", "8.8.8.8"]])
def test_a_privacy_rule_must_target_the_xray_client(tmp_path, seed, dst):
    classification(seed)["rules"][0]["dst"] = dst
    file, issues = errors(tmp_path, seed)
    issue = assert_issue(file, issues, "socketnet.classification.rules[0].dst", dst,
                         "privacy rules must target the xray client (W1)")
    assert "dst within 10.0.0.102/32" in issue.message


def test_a_privacy_rule_without_dst_is_an_error(tmp_path, seed):
    del classification(seed)["rules"][0]["dst"]
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.classification.rules[0].dst", ABSENT,
                 "privacy rules must target the xray client (W1)")


@pytest.mark.parametrize("dst", [None, ["10.1.1.0/24"], ["10.0.0.102"], ["10.1.0.0/23"]])
def test_a_management_rule_must_target_the_management_subnet(tmp_path, seed, dst):
    rule = {"name": "mgmt", "class": "management"}
    if dst is not None:
        rule["dst"] = dst
    classification(seed)["rules"].append(rule)
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.classification.rules[1].dst",
                 ABSENT if dst is None else dst,
                 "management rules must target the management subnet 10.1.0.0/24 (W5)")


def test_a_drop_rule_may_name_any_destination(tmp_path, seed):
    classification(seed)["rules"].append({"name": "quiet", "class": "drop"})
    classification(seed)["rules"].append({"name": "noisy", "class": "drop",
                                          "dst": ["0.0.0.0/0"], "protocol": "icmp"})
    assert check(write(tmp_path, seed)) == []


def test_classification_errors_come_with_the_files_other_errors(tmp_path, seed):
    seed["socketnet"]["openflow"]["listen"] = "nowhere"
    classification(seed)["rules"][0]["dst"] = ["10.0.0.100"]
    classification(seed)["idle_timeout"] = 0
    file, issues = errors(tmp_path, seed)
    assert sorted(i.path for i in issues) == [
        "socketnet.classification.idle_timeout",
        "socketnet.classification.rules[0].dst",
        "socketnet.openflow.listen",
    ]


def test_json_null_classification_keys_are_defaults(tmp_path, seed):
    classification(seed).update({"default": None, "limits": None, "rules": None})
    c = load_host(write(tmp_path, seed, "host.json")).classification
    assert (c.default, c.rules, c.limits) == (TrafficClass.DROP, (), ClassificationLimits())


def test_every_bad_address_and_port_of_a_rule_is_reported(tmp_path, seed):
    rule = classification(seed)["rules"][0]
    rule["src"] = ["10.101.0.x", "10.101.0.5/33"]
    rule["dst_ports"] = ["http", 0]
    file, issues = errors(tmp_path, seed)
    assert sorted(i.path for i in issues) == [
        f"socketnet.classification.rules[0].{key}" for key in
        ("dst_ports[0]", "dst_ports[1]", "src[0]", "src[1]")]


def test_metrics_and_rest_settings_are_read_and_checked(tmp_path, seed):
    seed["socketnet"]["metrics"] = {"listen": "127.0.0.1:19640", "stats_interval": 2}
    seed["socketnet"]["rest"] = {"listen": "0.0.0.0:19641", "open_reads": True,
                                 "token_file": "/etc/socketnet/token",
                                 "ovs_ctl": "/run/openvswitch/ovs-vswitchd.ctl"}
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump(seed))
    settings = load_host(str(path)).settings
    assert (settings.metrics_listen_host, settings.metrics_listen_port) == ("127.0.0.1", 19640)
    assert settings.stats_interval == 2
    assert (settings.rest_listen_host, settings.rest_listen_port) == ("0.0.0.0", 19641)
    assert settings.rest_open_reads is True
    assert settings.rest_token_file == "/etc/socketnet/token"
    assert settings.rest_ovs_ctl == "/run/openvswitch/ovs-vswitchd.ctl"
    seed["socketnet"]["rest"] = {"listen": "nowhere", "open_reads": "yes", "ovs_ctl": 7}
    file, issues = errors(tmp_path, seed)
    assert_issue(file, issues, "socketnet.rest.ovs_ctl", 7, "")
    assert_issue(file, issues, "socketnet.rest.listen", "nowhere", "")
    assert_issue(file, issues, "socketnet.rest.open_reads", "yes", "")
