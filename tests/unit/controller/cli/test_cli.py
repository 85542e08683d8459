"""The command line: exit codes and what it prints, without starting a controller."""
import pytest
import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from controller.cli.main import main

SEED = str(Path(__file__).parents[4] / "examples" / "seed.yaml")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_check_accepts_the_seed_and_warns_about_its_literal_flows():
    result = run("check", SEED)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "warning:" in result.output and "(N6)" in result.output


def test_check_exits_2_naming_file_field_and_value(tmp_path):
    data = yaml.safe_load(Path(SEED).read_text())
    data["lxc"]["containers"][0]["properties"]["ipv4_address"] = "10.0.0.300/24"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = run("check", str(bad))
    assert result.exit_code == 2
    assert str(bad) in result.output
    assert "lxc.containers[0].properties.ipv4_address" in result.output
    assert "10.0.0.300/24" in result.output


def test_topology_json_lists_every_port_with_role_and_kind():
    result = run("topology", "-c", SEED, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    roles = {(b["name"], p["name"]): (p["role"], p["kind"])
             for b in doc["bridges"] for p in b["ports"]}
    assert roles[("mesh", "mesh-gw")] == ("netmaker-uplink", "l3")
    assert roles[("vmbr0", "veth102")] == ("xray-client", "l2")
    assert roles[("vmbr0", "from-mesh")] == ("inter-bridge", "l2")
    assert len(roles) == 8


def test_run_refuses_a_listen_address_without_port_naming_the_option():
    result = run("run", "-c", SEED, "--ofp-listen", "127.0.0.1")
    assert result.exit_code == 2
    assert "--ofp-listen" in result.output


def test_flows_prints_ofctl_lines_for_one_bridge():
    result = run("flows", "-c", SEED, "--bridge", "vmbr0")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("#")]
    assert lines and all(" actions=" in line for line in lines)
    assert not any("mesh-gw" in line for line in lines)


def test_version_says_the_installed_version():
    from importlib import metadata
    from click.testing import CliRunner
    from controller.cli.main import main
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"socketnet {metadata.version('socketnet')}"


@pytest.mark.parametrize("given", ["http://127.0.0.1:9641", "http://127.0.0.1:9641/",
                                   "http://127.0.0.1:9641/v1", "http://127.0.0.1:9641/v1/"])
def test_the_api_address_is_taken_with_or_without_v1_as_the_log_prints_it(given):
    from controller.api.client import ApiClient
    assert ApiClient(given).base == "http://127.0.0.1:9641"


NOWHERE = "http://127.0.0.1:9"  # discard: nothing listens there


@pytest.mark.parametrize("args, code", [
    (["audit"], 3),  # could not audit
    (["switches"], 1),
    (["cache"], 1),
    (["classify", "--src", "10.101.0.5", "--dst", "10.0.0.102", "--proto", "icmp"], 1),
])
def test_json_errors_are_json_with_the_same_exit_code(args, code):
    plain = CliRunner().invoke(main, [*args, "--api", NOWHERE])
    as_json = CliRunner().invoke(main, [*args, "--api", NOWHERE, "--json"])
    assert plain.exit_code == as_json.exit_code == code, (plain.output, as_json.output)
    doc = json.loads(as_json.stdout)
    assert "cannot reach the socketnet API" in doc["error"]["message"]


def _offline(*args):
    from tests.conftest import SEED_YAML
    return CliRunner().invoke(main, ["flows", "-c", str(SEED_YAML), *args])


def test_offline_flows_take_every_filter_the_api_takes():
    every = json.loads(_offline("--json").stdout)
    assert set(every) == {"mesh", "vmbr0"}
    table1 = json.loads(_offline("--bridge", "mesh", "--table", "1", "--json").stdout)
    assert table1["mesh"] and {f["table"] for f in table1["mesh"]} == {1}
    privacy = json.loads(_offline("--class", "privacy", "--json").stdout)
    assert privacy["mesh"] and all(f["class"] == "privacy" for fs in privacy.values()
                                   for f in fs)
    drops = json.loads(_offline("--purpose", "drop", "--json").stdout)
    assert all(f["purpose"] == "drop" for fs in drops.values() for f in fs)
    port = json.loads(_offline("--bridge", "mesh", "--port", "veth200", "--json").stdout)
    assert port["mesh"] and all("veth200" in f["ofctl"] for f in port["mesh"])
    text = _offline("--bridge", "vmbr0", "--table", "0").output.splitlines()
    assert text[0] == "# vmbr0" and all("table=0" in line for line in text[1:])


@pytest.mark.parametrize("args, option", [
    (["--bridge", "nosuch"], "bridge"), (["--table", "9"], "table"),
    (["--bridge", "mesh", "--port", "veth100"], "port"), (["--port", "nosuch"], "port")])
def test_offline_flows_refuse_what_is_not_there_with_exit_2(args, option):
    plain, as_json = _offline(*args), _offline(*args, "--json")
    assert plain.exit_code == as_json.exit_code == 2
    assert f"--{option}" in plain.output
    assert json.loads(as_json.stdout)["error"]["field"] == option
