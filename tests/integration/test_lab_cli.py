"""`socketnet lab up|status|down` as separate processes: two labs side by side, the
record naming exactly what each made, `status` noticing a part gone, and `down`
leaving nothing behind (no namespace, process, WireGuard socket or Open vSwitch
directory of that lab, and the other lab untouched)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from pyroute2 import netns

from topology.labs.record import group_members
from topology.system import process_alive, process_cmdline

from tests.integration.conftest import SEED_YAML, WIREGUARD, require, unique_lab_name


def socketnet(*args, timeout=120):
    return subprocess.run([sys.executable, "-c", "from controller.cli.main import main; main()",
                           *args], capture_output=True, text=True, timeout=timeout)


def leftovers(record) -> list:
    found = [ns for ns in netns.listnetns() if ns in record["namespaces"]]
    found += [p["what"] for p in record["processes"]
              if process_alive(p["pid"]) and p["marker"] in process_cmdline(p["pid"])]
    found += [f"{p['what']} (group {p['pid']})" for p in record["processes"]
              if p.get("group") and group_members(p["pid"])]
    found += [f"controller {label}" for label, c in record.get("controllers", {}).items()
              if c["pid"] and process_alive(c["pid"])]
    found += [s for s in record["wireguard_sockets"] if os.path.exists(s)]
    found += [o["dir"] for o in record["ovs"] if os.path.exists(o["dir"])]
    return found


@pytest.fixture
def labs(tmp_path):
    require(*WIREGUARD, "nft", "sysctl")
    names = [unique_lab_name(), unique_lab_name()]
    yield str(tmp_path / "labs"), names
    for name in names:  # whatever a failed test left
        socketnet("lab", "down", "--name", name, "--state-dir", str(tmp_path / "labs"))


def test_two_labs_side_by_side_and_down_removes_exactly_what_up_recorded(labs):
    state, (a, b) = labs
    up_out = {}
    for name in (a, b):
        up = socketnet("lab", "up", "-c", str(SEED_YAML), "--name", name, "--state-dir", state)
        assert up.returncode == 0, up.stderr + up.stdout
        assert f"lab {name!r} up" in up.stdout
        up_out[name] = up.stdout
    records = {}
    for name in (a, b):
        with open(os.path.join(state, f"{name}.json")) as f:
            records[name] = json.load(f)
        st = socketnet("lab", "status", "--name", name, "--state-dir", state)
        assert st.returncode == 0, st.stdout + st.stderr
        assert "GONE" not in st.stdout and "controller host" in st.stdout
        assert "in sync: mesh, vmbr0" in st.stdout
    assert not set(records[a]["namespaces"]) & set(records[b]["namespaces"])

    # Ready to debug: the record says where each controller listens and how to
    # authenticate, and the API commands find the lab by its name, trace and
    # audit included (the controller reaches the lab's ovs-vswitchd).
    ctl = records[a]["controllers"]["host"]
    assert ctl["rest"].endswith("/v1") and ctl["metrics"].endswith("/metrics")
    assert os.stat(ctl["token_file"]).st_mode & 0o777 == 0o600
    assert ctl["rest"] in up_out[a] and ctl["token_file"] in up_out[a]
    lab_args = ("--lab", a, "--lab-state-dir", state)
    switches = socketnet(*lab_args, "switches", "--json")
    assert switches.returncode == 0, switches.stderr
    assert {s["bridge"] for s in json.loads(switches.stdout) if s["connected"]} == {
        "mesh", "vmbr0"}
    audit = socketnet(*lab_args, "audit")
    assert audit.returncode == 0 and "no violation" in audit.stdout, audit.stdout + audit.stderr
    nosuch = socketnet("--lab", "no-such-lab", "--lab-state-dir", state, "switches")
    assert nosuch.returncode == 2 and "no-such-lab" in nosuch.stderr

    # b carries a user's session while a runs beside it
    session = subprocess.run(["ip", "netns", "exec", f"sn-{b}-drop", "socat", "-T5", "-",
                              "TCP:10.0.0.102:8080,connect-timeout=5"],
                             input="hello\n", capture_output=True, text=True, timeout=20)
    assert "saw 203.0.113.1" in session.stdout, session.stderr

    # a part of a dies: status says so
    vps = next(p for p in records[a]["processes"] if p["what"].startswith("VPS"))
    assert vps["marker"] in process_cmdline(vps["pid"])  # ours, not a reused pid
    os.killpg(vps["pid"], signal.SIGKILL)
    st = socketnet("lab", "status", "--name", a, "--state-dir", state)
    assert st.returncode == 3 and "GONE process    VPS" in st.stdout, st.stdout

    down = socketnet("lab", "down", "--name", a, "--state-dir", state)
    assert down.returncode == 0 and f"lab {a!r} removed" in down.stdout, down.stderr
    assert leftovers(records[a]) == []
    assert not os.path.exists(os.path.join(state, f"{a}.json"))
    assert socketnet("lab", "status", "--name", a, "--state-dir", state).returncode == 1
    assert socketnet("lab", "status", "--name", b, "--state-dir", state).returncode == 0

    down = socketnet("lab", "down", "--name", b, "--state-dir", state)
    assert down.returncode == 0
    assert leftovers(records[b]) == []
    assert not os.path.exists(state)  # the last lab's record gone: nothing behind
    again = socketnet("lab", "down", "--name", b, "--state-dir", state)
    assert again.returncode == 0 and "nothing to remove" in again.stdout
