"""topology.host.cli: `socketnet host apply`, the parts that need no root."""
from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from topology.host.cli import host

SEED = str(Path(__file__).resolve().parents[4] / "examples" / "seed.yaml")


def run(*args):
    return CliRunner().invoke(host, list(args))


def test_dry_run_from_scratch_prints_the_whole_plan_as_a_script():
    result = run("apply", "-c", SEED, "--dry-run", "--from-scratch", "--datapath-type", "netdev")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("# nftables")
    assert "nft -f - <<'EOF'\n" in out and "\nEOF\n" in out
    assert ("ovs-vsctl -- add-br mesh -- set Bridge mesh datapath_type=netdev fail_mode=secure "
            "protocols=OpenFlow13 other-config:disable-in-band=true") in out
    assert "ip rule add priority 5301 iif nm-privacy lookup 5301" in out
    assert out.rstrip().endswith("sysctl -w net.ipv4.ip_forward=1")
    # a fresh host has no uplinks yet: said on stderr, with the fix
    assert "warning: warp0:" in result.stderr and "fix:" in result.stderr


def test_warp_address_and_controller_reach_the_plan():
    result = run("apply", "-c", SEED, "--dry-run", "--from-scratch",
                 "--warp-address", "172.16.0.9", "--controller", "ssl:127.0.0.1:6654")
    assert result.exit_code == 0, result.output
    assert "snat ip to 172.16.0.9" in result.stdout
    assert 'target="ssl:127.0.0.1:6654"' in result.stdout
    assert "datapath_type=system" in result.stdout


def test_from_scratch_needs_dry_run():
    result = run("apply", "-c", SEED, "--from-scratch")
    assert result.exit_code == 2
    assert "--from-scratch only with --dry-run" in result.output


def test_an_invalid_config_exits_2_naming_the_field(tmp_path):
    data = yaml.safe_load(Path(SEED).read_text())
    data["lxc"]["containers"][0]["properties"]["ipv4_address"] = "10.0.0.300/24"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = run("apply", "-c", str(bad), "--dry-run", "--from-scratch")
    assert result.exit_code == 2
    assert "lxc.containers[0].properties.ipv4_address" in result.output


def test_datapath_type_is_system_or_netdev():
    result = run("apply", "-c", SEED, "--dry-run", "--from-scratch", "--datapath-type", "dpdk")
    assert result.exit_code == 2
