"""The OpenFlow channel over TLS with mutual authentication: a switch whose
certificate the controller's CA signed is served; one signed by another CA is
refused and gets no flows."""
import subprocess

import pytest

from tests.integration.conftest import require
from topology.system import wait_until


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def ca(dirname, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=dirname)


def signed(dirname, name, by):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=dirname)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{by}.pem", "-CAkey", f"{by}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", cwd=dirname)


@pytest.fixture
def pki(tmp_path):
    require("openssl")
    for name in ("ca", "rogue-ca"):
        ca(tmp_path, name)
    signed(tmp_path, "controller", "ca")
    signed(tmp_path, "switch", "ca")
    signed(tmp_path, "rogue-switch", "rogue-ca")
    return tmp_path


def tls_controller(controller, pki):
    return controller(extra_args=("--tls-key", str(pki / "controller.key"),
                                  "--tls-cert", str(pki / "controller.pem"),
                                  "--tls-ca", str(pki / "ca.pem")))


def test_a_switch_with_a_certificate_of_our_ca_gets_its_pipelines_over_tls(lab, controller, pki):
    ctl = tls_controller(controller, pki)
    assert "on ssl:127.0.0.1" in ctl.log_tail()
    # The switch trusts the controller's CA and presents its own certificate.
    lab.ovs.vsctl("set-ssl", str(pki / "switch.key"), str(pki / "switch.pem"), str(pki / "ca.pem"))
    lab.attach(f"ssl:127.0.0.1:{ctl.port}")
    ctl.wait_synced(["mesh", "vmbr0"], timeout=30)
    assert len(lab.ovs.dump_flows("mesh", stats=False)) > 10


def test_a_switch_whose_certificate_another_ca_signed_is_refused(lab, controller, pki):
    ctl = tls_controller(controller, pki)
    lab.ovs.vsctl("set-ssl", str(pki / "rogue-switch.key"), str(pki / "rogue-switch.pem"),
                  str(pki / "ca.pem"))
    lab.attach(f"ssl:127.0.0.1:{ctl.port}")
    # The switch keeps trying; wait until the controller has turned it away.
    wait_until(lambda: "alert unknown ca" in lab.ovs.log_tail(lines=400), 20,
               "the controller to refuse the switch's certificate")
    assert not any("connected from" in line for line in ctl.lines)
    assert lab.ovs.dump_flows("mesh", stats=False) == []
