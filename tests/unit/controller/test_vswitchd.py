"""Where trace and audit find ovs-vswitchd's control socket (controller.vswitchd.locate):
the config's rest.ovs_ctl, then $SOCKETNET_OVS_CTL, then $OVS_RUNDIR."""
from __future__ import annotations

import socket
import warnings

import pytest

from controller.vswitchd import VswitchdUnreachable, locate


@pytest.fixture
def sockets(tmp_path, monkeypatch):
    monkeypatch.delenv("SOCKETNET_OVS_CTL", raising=False)
    monkeypatch.delenv("OVS_RUNDIR", raising=False)
    made = {}
    for name in ("configured.ctl", "env.ctl", "ovs-vswitchd.41.ctl"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / name))
        made[name] = (s, str(tmp_path / name))
    yield {k: path for k, (_, path) in made.items()}
    for s, _ in made.values():
        s.close()


def test_the_config_comes_first(sockets, monkeypatch):
    monkeypatch.setenv("SOCKETNET_OVS_CTL", sockets["env.ctl"])
    assert locate(sockets["configured.ctl"]) == sockets["configured.ctl"]


def test_then_the_environment(sockets, monkeypatch):
    monkeypatch.setenv("SOCKETNET_OVS_CTL", sockets["env.ctl"])
    assert locate(None) == sockets["env.ctl"]


def test_then_the_pid_file_in_ovs_rundir(sockets, tmp_path, monkeypatch):
    (tmp_path / "ovs-vswitchd.pid").write_text("41\n")
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path))
    assert locate() == sockets["ovs-vswitchd.41.ctl"]


def test_a_configured_socket_that_is_missing_names_the_field(sockets, tmp_path, monkeypatch):
    monkeypatch.setenv("SOCKETNET_OVS_CTL", sockets["env.ctl"])  # not a fallback
    with pytest.raises(VswitchdUnreachable, match=r"socketnet\.rest\.ovs_ctl = .*/nope\.ctl: "
                                                  "no such socket"):
        locate(str(tmp_path / "nope.ctl"))


def test_nothing_found_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("SOCKETNET_OVS_CTL", raising=False)
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path))
    with pytest.raises(VswitchdUnreachable, match=str(tmp_path)):
        locate()


def test_a_reload_that_names_another_socket_reconnects_there(sockets, monkeypatch):
    from controller.vswitchd import Vswitchd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `ovs` imports eventlet, which warns
        from ovs.unixctl import client as unixctl

    class Client:
        def __init__(self, path):
            self.path, self.closed = path, False

        def close(self):
            self.closed = True

    monkeypatch.setattr(unixctl.UnixctlClient, "create",
                        staticmethod(lambda path: (0, Client(path))))
    configured = [sockets["configured.ctl"]]
    v = Vswitchd(lambda: configured[0])
    first = v._connect()
    v._dp_names = {1: "mesh-gw"}
    assert v._connect() is first and first.path == sockets["configured.ctl"]
    configured[0] = sockets["env.ctl"]
    second = v._connect()
    assert first.closed and second.path == sockets["env.ctl"] and v._dp_names is None
