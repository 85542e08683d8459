"""Config reload on SIGHUP: a valid change is applied as a diff; an invalid one is
refused with its reason and the running config and flows stay as they were."""
import signal

import pytest
import yaml

from tests.integration.conftest import SEED_YAML
from tests.integration.test_controller import durations


def write(path, data):
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def running(tmp_path, lab, controller):
    """(lab, controller, its config file, the config's data), attached and in sync."""
    config = tmp_path / "host.yaml"
    data = yaml.safe_load(SEED_YAML.read_text())
    write(config, data)
    ctl = controller(str(config))
    lab.attach(ctl.target)
    ctl.wait_synced(["mesh", "vmbr0"])
    return lab, ctl, config, data


def test_a_valid_change_is_applied_as_a_diff_leaving_unchanged_flows_untouched(running):
    lab, ctl, config, data = running
    before = {b: durations(lab, b) for b in ("mesh", "vmbr0")}

    data["socketnet"]["nodes"].append({"name": "node3", "subnets": ["10.3.0.0/24"]})
    write(config, data)
    mark = ctl.mark()
    ctl.proc.send_signal(signal.SIGHUP)
    ctl.wait_for("config reloaded", 10, after=mark)
    counts = ctl.wait_synced(["mesh", "vmbr0"], after=mark)
    assert counts["mesh"]["add"] >= 1 and counts["mesh"]["delete"] == 0, counts

    mesh_now = durations(lab, "mesh")
    added = [f for f in mesh_now if f not in before["mesh"]]
    assert added and all("10.3.0.0/24" in str(f) for f in added), added
    for flow, age in before["mesh"].items():
        if flow in mesh_now:
            assert mesh_now[flow] >= age, flow  # not re-added: older than before


def test_an_invalid_change_is_refused_with_its_reason_and_nothing_changes(running):
    lab, ctl, config, data = running
    flows = {b: lab.ovs.dump_flows(b, stats=False) for b in ("mesh", "vmbr0")}

    data["lxc"]["containers"][3]["properties"]["ipv4_address"] = "10.1.0.999/24"
    write(config, data)
    mark = ctl.mark()
    ctl.proc.send_signal(signal.SIGHUP)
    ctl.wait_for(r"config reload \(SIGHUP\) refused: \d+ issue\(s\) in .*; the running "
                 "config stays", 10, after=mark)
    refused = "\n".join(ctl.lines[mark:])
    assert "lxc.containers[3].properties.ipv4_address" in refused and "10.1.0.999/24" in refused
    assert {b: lab.ovs.dump_flows(b, stats=False) for b in ("mesh", "vmbr0")} == flows
    assert "pipeline in sync" not in refused
    assert ctl.proc.poll() is None
