"""The systemd unit in deploy/: valid for systemd, and sandboxed."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "deploy" / "socketnet.service"


@pytest.fixture
def analyzable(tmp_path):
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    # Verify the unit's own text; only the binary it starts is not installed here.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/socketnet", "/bin/true"))
    return unit


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
