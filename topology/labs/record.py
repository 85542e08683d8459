"""A world's record: what it made, on disk, and what can be done by it alone.

Owns the record's shape (`record_of`: every namespace, process, Open vSwitch
directory, WireGuard control socket and controller a `World` made, a JSON
document), writing and reading it (`STATE_ROOT/<name>.json`, the world's logs in
`STATE_ROOT/<name>/`), and what another process can do with only the record:
tear down exactly what it names (`destroy`) and say what still runs (`status`).

    record_of(world) -> dict; write_record / load_record(name)   STATE_ROOT/<name>.json
    destroy(record)                                             remove what a record names
    status(record) -> [Part]                                    what runs, and whether alive

pyroute2 is used here: never import this into the controller process.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass
from typing import Optional

from pyroute2 import netns

from controller.process import SYNC_LINE
from topology.labs.wireguard import control_socket
from topology.system import process_alive, process_cmdline, stop_process, wait_until

STATE_ROOT = "/run/socketnet/labs"


@dataclass(frozen=True)
class Part:
    """One line of `status`: what, its detail (pid, netns), whether it is alive."""
    kind: str
    name: str
    detail: str
    alive: bool


def record_file(state_root: str, name: str) -> str:
    return os.path.join(state_root, f"{name}.json")


def record_of(world) -> dict:
    """The record of `world` (a `topology.labs.world.World`) as it stands: what
    `destroy` and `status` read, and `socketnet lab` prints."""
    processes = []
    for ctl in world.controllers.values():
        if ctl.pid is not None:
            processes.append({"what": f"socketnet controller ({ctl.label})",
                              "pid": ctl.pid, "marker": ctl.marker, "group": False})
    for label, ns, proc in world.servers:
        processes.append({"what": label, "pid": proc.pid, "marker": "socat",
                          "group": True, "netns": ns})
    sockets = []
    tunnels = []
    if world.netmaker is not None:
        tunnels.append(("Netmaker", list(world.netmaker.control), world.netmaker.pids))
    if world.warp_link is not None:
        tunnels.append(("WARP", list(world.warp_link.control.values()),
                        {world.warp_link.control[side]: pid
                         for side, pid in world.warp_link.pids.items()}))
    for what, controls, pids in tunnels:
        for control, pid in pids.items():
            processes.append({"what": f"wireguard-go {control} ({what})", "pid": pid,
                              "marker": control, "group": False})
        if pids:  # wireguard-go's; kernel interfaces have none
            sockets += [control_socket(c) for c in controls]
    ovs = []
    namespaces = []
    for label, lab in (("host", world.lab), ("node2", world.node2)):
        if lab is None:
            continue
        namespaces += lab.namespaces
        for ns, pid in lab.processes:
            processes.append({"what": f"{label} lab process", "pid": pid,
                              "marker": "", "group": True, "netns": ns})
        if lab.ovs.dir is not None:
            ovs.append({"node": label, "dir": lab.ovs.dir, "netns": lab.ovs.netns,
                        "db": f"unix:{lab.ovs.db_sock}"})
            for what, pid in lab.ovs.pids.items():
                relay = what.startswith("relay-")
                processes.append({"what": f"{what} ({label})", "pid": pid,
                                  "marker": "socat" if relay else lab.ovs.dir,
                                  "group": relay})
    namespaces += world.own_namespaces
    return {
        "name": world.name, "config": world.config, "dir": world.dir,
        "namespaces": namespaces, "processes": processes, "ovs": ovs,
        "wireguard_sockets": sockets,
        "controllers": {k: {"pid": c.pid, "target": c.target, "log": c.log,
                            "config": c.config, "rest": f"{c.rest_url}/v1",
                            "metrics": c.metrics_url, "token_file": c.token_file,
                            "ovs_ctl": c.ovs_ctl,
                            "bridges": [b.name for b in (world.host if k == "host"
                                                         else world.node2_host).bridges]}
                        for k, c in world.controllers.items()},
        "wireguard": {
            "netmaker": ({"controls": world.netmaker.control,
                          "members": [m.label for m in world.netmaker.members],
                          "public": world.netmaker.public} if world.netmaker else None),
            "warp": ({"controls": world.warp_link.control, "public": world.warp_link.public}
                     if world.warp_link else None)},
        "addresses": world.addresses,
    }


def write_record(path: str, record: dict) -> None:
    """`record` to `path`, whole or not at all (a reader never sees half of it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)


def load_record(name: str, state_root: str = STATE_ROOT) -> Optional[dict]:
    try:
        with open(record_file(state_root, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def remove_state(state_root: str, name: str) -> None:
    """World `name`'s directory and record under `state_root`, and `state_root`
    itself once no other world is recorded there."""
    shutil.rmtree(os.path.join(state_root, name), ignore_errors=True)
    for path in (record_file(state_root, name), record_file(state_root, name) + ".tmp"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(state_root)  # only when no other lab is recorded there
    except OSError:
        pass


def _alive(entry: dict) -> bool:
    return process_alive(entry["pid"]) and entry.get("marker", "") in \
        process_cmdline(entry["pid"])


def destroy(record: dict) -> list:
    """Remove exactly what `record` names: its processes (by PID, each checked
    against its command line so a recycled PID is never signalled), WireGuard
    control sockets, Open vSwitch directories, namespaces, and the state. Returns
    what it removed, one line each. Idempotent."""
    removed = []
    signalled = []  # process groups signalled: down returns once every member is gone
    for entry in record.get("processes", []):
        if _alive(entry):
            if entry.get("marker"):
                stop_process(entry["pid"], entry["marker"], group=entry.get("group", False))
                if entry.get("group"):
                    signalled.append(entry["pid"])
            else:  # a lab process without a marker: its netns must still match
                ns = entry.get("netns")
                if ns and _netns_of(entry["pid"]) == _netns_inode(ns):
                    try:
                        os.killpg(entry["pid"], signal.SIGKILL)
                        signalled.append(entry["pid"])
                    except ProcessLookupError:
                        pass
            removed.append(f"process {entry['pid']} ({entry['what']})")
    for pgid in signalled:
        for pid in group_members(pgid):
            try:
                os.kill(pid, signal.SIGKILL)  # a member the group's signal left behind
            except ProcessLookupError:
                pass
        wait_until(lambda g=pgid: not group_members(g), 10,
                   f"the processes of group {pgid} to exit")
    for path in record.get("wireguard_sockets", []):
        try:
            os.unlink(path)
            removed.append(f"socket {path}")
        except FileNotFoundError:
            pass
    for ovs in record.get("ovs", []):
        if os.path.isdir(ovs["dir"]):
            shutil.rmtree(ovs["dir"], ignore_errors=True)
            removed.append(f"directory {ovs['dir']}")
    existing = set(netns.listnetns())
    for ns in reversed(record.get("namespaces", [])):
        if ns in existing:
            netns.remove(ns)
            removed.append(f"netns {ns}")
    state_root = os.path.dirname(record["dir"])
    remove_state(state_root, record["name"])
    return removed


def group_members(pgid: int) -> list:
    """The live processes of process group `pgid` (zombies are gone enough)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _netns_inode(ns: str) -> Optional[int]:
    try:
        return os.stat(os.path.join("/run/netns", ns)).st_ino
    except OSError:
        return None


def _netns_of(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def status(record: dict) -> list:
    """[Part]: every namespace, process and controller of the record, alive or not."""
    parts = []
    existing = set(netns.listnetns())
    for ns in record.get("namespaces", []):
        parts.append(Part("netns", ns, "", ns in existing))
    for entry in record.get("processes", []):
        parts.append(Part("process", entry["what"], f"pid {entry['pid']}", _alive(entry)))
    for ovs in record.get("ovs", []):
        parts.append(Part("ovs", ovs["node"], f"{ovs['dir']} (ovs-vsctl --db={ovs['db']})",
                          os.path.exists(ovs["db"].removeprefix("unix:"))))
    for label, ctl in record.get("controllers", {}).items():
        try:
            with open(ctl["log"], errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        synced = {m["bridge"] for m in SYNC_LINE.finditer(text)}
        alive = ctl["pid"] is not None and process_alive(ctl["pid"])
        parts.append(Part("controller", label,
                          f"{ctl['target']}, pid {ctl['pid']}, in sync: "
                          f"{', '.join(b for b in ctl['bridges'] if b in synced) or 'none'}",
                          alive and set(ctl["bridges"]) <= synced))
    return parts


__all__ = ["STATE_ROOT", "Part", "record_file", "record_of", "write_record", "load_record",
           "remove_state", "destroy", "group_members", "status"]
