"""What each node of a world runs besides its lab: its socketnet, and for node2 the
config it is made from.

Owns `Controller`, a world's controller (a `controller.process.ControllerProcess`
named by its node, with a log file and made ready to debug: its own REST token and
ovs-vswitchd's control socket), and `node2_config`, node2's config generated from
the seed's shape with a vector-DB container (tcp `VECTOR_DB_PORT`) on its mesh.
The world (`topology/labs/world.py`) starts one Controller per node and writes
node2's config into its directory.
"""
from __future__ import annotations

import copy
import json
import os
import secrets
from typing import Optional, Sequence

import yaml
from netaddr import IPNetwork

from controller.process import ControllerProcess
from topology.model import Host

VECTOR_DB_PORT = 6333
SYNC_TIMEOUT = 30.0


class Controller(ControllerProcess):
    """A world's controller, named by its node: a ControllerProcess with a log file
    (it outlives the command that started it), made ready to debug (`debuggable`)."""

    def __init__(self, label: str, config: str, log: str, port: Optional[int] = None):
        super().__init__(config, port, log=log)
        self.label = label
        # Ready to debug: where ovs-vswitchd's control socket will be (a link the
        # world makes once its Open vSwitch runs) and the REST token, in the
        # environment the controller reads them from (unless its config names them).
        self.token_file: Optional[str] = None
        self.ovs_ctl: Optional[str] = None

    def debuggable(self, directory: str, settings) -> None:
        """Give the controller a REST token of its own (or the one its config
        names) and ovs-vswitchd's control socket at `directory`/ovs-LABEL.ctl."""
        self.ovs_ctl = settings.rest_ovs_ctl or os.path.join(directory, f"ovs-{self.label}.ctl")
        self.env["SOCKETNET_OVS_CTL"] = self.ovs_ctl
        if settings.rest_token_file:
            self.token_file = settings.rest_token_file
            return
        self.token_file = os.path.join(directory, f"rest-token-{self.label}")
        token = secrets.token_urlsafe(24)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        self.env[settings.rest_token_env] = token

    def wait_synced(self, bridges: Sequence[str], timeout: float = SYNC_TIMEOUT,
                    after: int = 0) -> dict:
        return super().wait_synced(bridges, timeout, after)


def node2_config(seed_doc: dict, host: Host, subnet: IPNetwork) -> dict:
    """Node2's config, in the seed's shape: the same bridges, uplinks and inter-bridge
    link; on its mesh a vector-DB container in `subnet` (gateway .1, itself .30,
    tcp 6333); on its privacy bridge an xray client in the next /24 (the config needs
    one); `socketnet.nodes` lists this host's management subnet; no classification
    rules naming this host's addresses, no seed flows."""
    doc = copy.deepcopy(seed_doc)
    mesh, privacy = host.mesh.name, host.privacy_bridge.name
    privacy_net = IPNetwork(f"{subnet.next().network}/24")
    doc["openflow"] = {"bridges": {mesh: {"flows": []}, privacy: {"flows": []}}}
    doc["lxc"] = {"containers": [
        {"id": "300", "veth": "veth300", "bridge": mesh, "running": True,
         "properties": {"name": "vector-db", "ipv4_address": f"{subnet[30]}/{subnet.prefixlen}",
                        "gateway": str(subnet[1]),
                        "services": [{"name": "vector-db", "protocol": "tcp",
                                      "port": VECTOR_DB_PORT}]}},
        {"id": "302", "veth": "veth302", "bridge": privacy, "running": True,
         "properties": {"name": "xray-client", "ipv4_address": f"{privacy_net[102]}/24",
                        "gateway": str(privacy_net[1]),
                        "services": [{"name": "xray-client", "protocol": "tcp",
                                      "port": 8080}]}},
    ]}
    sn = doc.setdefault("socketnet", {}) or {}
    doc["socketnet"] = sn
    sn["nodes"] = [{"name": "seed", "subnets": [str(c) for c in
                                                host.management_subnet.iter_cidrs()]}]
    classification = sn.get("classification")
    if isinstance(classification, dict):
        classification["rules"] = []
    for key in ("metrics", "rest"):  # the world gives each controller its own ports
        sn.pop(key, None)
    return doc


def read_doc(path: str) -> dict:
    """A config file as data (JSON or YAML), the seed's shape `node2_config` copies."""
    with open(path) as f:
        return json.load(f) if path.endswith(".json") else yaml.safe_load(f)


__all__ = ["Controller", "node2_config", "read_doc", "SYNC_TIMEOUT", "VECTOR_DB_PORT"]
