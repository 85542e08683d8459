"""topology.vmlab without a VM: the guest's agent on 127.0.0.1 (its token, its
commands and timeouts), the host's client against it, the choice of datapath the
labs read from the environment, and the kernel suite's list of modules."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.process import free_port
from topology.labs.ovs import DATAPATH_ENV, lab_datapath, lab_wireguard
from topology.system import wait_until
from topology.vmlab.__main__ import KERNEL_SUITE, NOT_ON_THE_KERNEL_DATAPATH, SYSTEMD_SUITE
from topology.vmlab.vm import VM, VMError

AGENT = Path(__file__).resolve().parents[4] / "topology" / "vmlab" / "agent.py"


@pytest.fixture
def agent(tmp_path):
    """The agent on 127.0.0.1, and a VM object that talks to it as to a guest's."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(AGENT), "--listen", f"127.0.0.1:{port}",
                             "--token-file", str(token)], stderr=subprocess.DEVNULL)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    try:
        wait_until(listening, 10, "the agent to listen")
        vm = VM("unit")
        vm.port, vm.token = port, "s3cret"
        yield vm
    finally:
        proc.kill()
        proc.wait()


def test_the_agent_runs_a_command_with_its_input_env_and_exit_status(agent):
    done = agent.run(["sh", "-c", 'read line; echo "$line $GREETING"; echo err >&2; exit 3'],
                     input="hello\n", env={"GREETING": "world"})
    assert (done.returncode, done.stdout, done.stderr) == (3, "hello world\n", "err\n")
    with pytest.raises(VMError, match="exited 3"):
        agent.run(["sh", "-c", "exit 3"], check=True)


def test_a_command_over_its_timeout_is_killed_and_reported(agent):
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        agent.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 10


def test_a_missing_program_is_exit_127_naming_it(agent):
    done = agent.run(["no-such-program-here"])
    assert done.returncode == 127 and "no-such-program-here" in done.stderr


def test_a_connection_without_the_token_runs_nothing(agent, tmp_path):
    marker = tmp_path / "ran"
    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as s:
        f = s.makefile("rwb")
        f.write(b'wrong\n{"argv": ["touch", "%s"]}\n' % str(marker).encode())
        f.flush()
        assert f.readline() == b""  # closed, unanswered
    assert not marker.exists()


def test_the_labs_datapath_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(DATAPATH_ENV, raising=False)
    assert (lab_datapath(), lab_wireguard()) == ("netdev", "go")
    monkeypatch.setenv(DATAPATH_ENV, "system")
    assert (lab_datapath(), lab_wireguard()) == ("system", "kernel")
    monkeypatch.setenv(DATAPATH_ENV, "dpdk")
    with pytest.raises(ValueError, match=r"SOCKETNET_LAB_DATAPATH='dpdk'"):
        lab_datapath()


def test_a_vm_name_that_could_escape_its_directory_is_refused():
    with pytest.raises(VMError, match="VM name"):
        VM("../etc")


def test_every_integration_module_runs_on_the_kernel_datapath_or_says_why_not():
    root = AGENT.parents[2]
    modules = {str(p.relative_to(root)) for p in (root / "tests" / "integration").glob("test_*.py")}
    suite = [m for half in KERNEL_SUITE for m in half] + list(SYSTEMD_SUITE)
    assert len(suite) == len(set(suite))
    assert set(suite).isdisjoint(NOT_ON_THE_KERNEL_DATAPATH)
    assert modules == set(suite) | set(NOT_ON_THE_KERNEL_DATAPATH)
    assert all(why.strip() for why in NOT_ON_THE_KERNEL_DATAPATH.values())
