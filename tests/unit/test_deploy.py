"""The systemd unit in deploy/: valid for systemd, and sandboxed."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

UNIT = Path(__file__).parents[2] / "deploy" / "socketnet.service"
TRACE = Path(__file__).parents[2] / "deploy" / "socketnet.service.d" / "ovs-trace.conf"


@pytest.fixture
def analyzable(tmp_path):
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is missing (Debian package systemd)")
    # Verify the unit's own text; only the binary it starts is not installed here.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/socketnet", "/bin/true"))
    return unit


def test_the_trace_drop_in_runs_as_root_in_a_narrower_sandbox(analyzable):
    """With ovs-trace.conf socketnet runs as root (ovs-vswitchd's socket is root's)
    without capabilities, and without the rest of /run; read after the unit, as
    systemd reads a drop-in."""
    settings = [line for line in TRACE.read_text().splitlines()
                if line and not line.startswith("#")]
    assert settings[:3] == ["[Service]", "DynamicUser=no", "User=root"]
    # what root could reach that the dynamic user could not, taken away
    assert "TemporaryFileSystem=/run" in settings
    assert "BindReadOnlyPaths=/run/openvswitch" in settings
    assert "InaccessiblePaths=-/run/openvswitch/db.sock" in settings
    assert "InaccessiblePaths=-/etc/shadow -/etc/gshadow" in settings
    analyzable.write_text(analyzable.read_text() + "\n" + TRACE.read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(analyzable)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(analyzable)],
                            capture_output=True, text=True)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure and float(exposure.group(1)) <= 3.0, result.stdout
    assert "CapabilityBoundingSet=\n" in analyzable.read_text()


def test_the_unit_verifies(analyzable):
    result = subprocess.run(["systemd-analyze", "verify", str(analyzable)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_unit_is_sandboxed(analyzable):
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(analyzable)],
                            capture_output=True, text=True)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    assert float(exposure.group(1)) <= 2.0, result.stdout


def test_reload_is_sighup_and_start_checks_the_config_first():
    text = UNIT.read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert re.search(r"ExecStartPre=\S+ check .*/etc/socketnet/host.yaml", text)


HOST_UNIT = Path(__file__).parents[2] / "deploy" / "socketnet-host.service"


def test_the_host_watch_unit_verifies_is_sandboxed_and_watches_the_controllers_config(tmp_path):
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is missing (Debian package systemd)")
    unit = tmp_path / HOST_UNIT.name
    unit.write_text(HOST_UNIT.read_text().replace("/usr/local/bin/socketnet", "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure and float(exposure.group(1)) <= 3.5, result.stdout
    text = HOST_UNIT.read_text()
    config = re.search(r"^ExecStart=\S+ run -c (\S+)", UNIT.read_text(), flags=re.M).group(1)
    assert re.search(rf"^ExecStart=\S+ host watch -c {re.escape(config)}$", text, flags=re.M)
    assert "Restart=always" in text and "Requires=" not in text  # any boot order


def test_the_host_watch_units_command_is_the_clis():
    from click.testing import CliRunner
    from controller.cli.main import main
    argv = re.search(r"^ExecStart=\S+ (.+)$", HOST_UNIT.read_text(), flags=re.M).group(1).split()
    result = CliRunner().invoke(main, [*argv[:2], "--help"])
    assert result.exit_code == 0 and all(a in result.output for a in argv[2:3]), result.output
