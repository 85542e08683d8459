"""Two socketnet instances for one host: the primary is the OpenFlow master and the
only one that writes; killing it makes the standby master within 3 s, with the
flows (and so every N-rule, proved on them by test_isolation_trace) unchanged."""
import time

import yaml

from tests.integration.conftest import SEED_YAML
from tests.integration.test_controller import switch_lines
from controller.process import free_port
from topology.system import wait_until


def configs(tmp_path):
    primary_port = free_port()
    data = yaml.safe_load(SEED_YAML.read_text())
    primary = tmp_path / "primary.yaml"
    primary.write_text(yaml.safe_dump(data))
    data["socketnet"]["openflow"].update(role="standby", peer=f"127.0.0.1:{primary_port}")
    standby = tmp_path / "standby.yaml"
    standby.write_text(yaml.safe_dump(data))
    return str(primary), primary_port, str(standby)


def test_only_the_master_writes_and_the_standby_takes_over_within_3s(tmp_path, lab, controller):
    primary_cfg, primary_port, standby_cfg = configs(tmp_path)
    primary = controller(primary_cfg, port=primary_port)
    standby = controller(standby_cfg)
    lab.attach([primary.target, standby.target])
    primary.wait_synced(["mesh", "vmbr0"])
    standby.wait_for(r"mesh: standby \(OpenFlow slave\): writes nothing", 20)
    standby.wait_for(r"vmbr0: standby \(OpenFlow slave\): writes nothing", 20)
    assert not any("pipeline in sync" in line for line in standby.lines)
    wait_until(lambda: roles(lab) == {(primary.target, "master"), (standby.target, "slave")},
               15, "the switch to record the roles")
    flows = {b: switch_lines(lab, b) for b in ("mesh", "vmbr0")}

    mark = standby.mark()
    primary.kill()
    killed = time.monotonic()
    standby.wait_for("taking over as master", 10, after=mark)
    counts = standby.wait_synced(["mesh", "vmbr0"], timeout=10, after=mark)
    took = time.monotonic() - killed
    assert took < 3.0, f"the standby took {took:.1f}s"
    assert all(c["add"] == 0 and c["delete"] == 0 for c in counts.values()), counts
    assert {b: switch_lines(lab, b) for b in ("mesh", "vmbr0")} == flows
    wait_until(lambda: (standby.target, "master") in roles(lab), 15,
               "the switch to record the standby as master")


def roles(lab) -> set:
    """(target, role) of the controllers Open vSwitch records (as it sees them)."""
    out = lab.ovs.vsctl("--format=csv", "--no-headings", "--columns=target,role", "list",
                        "Controller")
    return {tuple(field.strip('"') for field in line.split(",")) for line in out.splitlines()}


def test_a_standby_without_a_peer_is_refused(tmp_path):
    from topology.config import check_file
    data = yaml.safe_load(SEED_YAML.read_text())
    data["socketnet"]["openflow"]["role"] = "standby"
    path = tmp_path / "standby.yaml"
    path.write_text(yaml.safe_dump(data))
    errors = [str(e) for e in check_file(str(path)).errors]
    assert any("socketnet.openflow.role" in e and "peer" in e for e in errors), errors
