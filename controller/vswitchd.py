"""Asking the local ovs-vswitchd what its installed tables do with a packet.

The controller runs on the host next to Open vSwitch, so it can reach
ovs-vswitchd's unixctl control socket and run `ofproto/trace` (no packet is
sent) through the `ovs` package's JSON-RPC client (~0.1 ms a trace). A trace
stops at a veth; `trace_across` follows the packet over the inter-bridge link.

Where the socket is: the config's `socketnet.rest.ovs_ctl`, else
`$SOCKETNET_OVS_CTL` (the socket's path), else in
`$OVS_RUNDIR` (Open vSwitch's own variable; default /var/run/openvswitch):
`ovs-vswitchd.ctl`, or `ovs-vswitchd.<pid>.ctl` by `ovs-vswitchd.pid`. When it
cannot be reached, `VswitchdUnreachable` says why (the REST API answers 503).

Parsing the trace output is `controller.ovs_text.parse_trace`'s job (shared with the
labs); this module only owns the connection and the hop-following.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Callable, Mapping, Optional

from controller.ovs_text import DPIF_PORT, follow_links, parse_trace

DEFAULT_RUNDIR = "/var/run/openvswitch"


class VswitchdUnreachable(RuntimeError):
    """ovs-vswitchd's control socket cannot be found or does not answer."""


def locate(configured: Optional[str] = None) -> str:
    """The control socket's path; VswitchdUnreachable naming where it looked.
    `configured`: the config's socketnet.rest.ovs_ctl."""
    for name, explicit in (("socketnet.rest.ovs_ctl", configured),
                           ("SOCKETNET_OVS_CTL", os.environ.get("SOCKETNET_OVS_CTL"))):
        if explicit:
            if os.path.exists(explicit):
                return explicit
            raise VswitchdUnreachable(f"{name} = {explicit}: no such socket")
    rundir = os.environ.get("OVS_RUNDIR") or DEFAULT_RUNDIR
    plain = os.path.join(rundir, "ovs-vswitchd.ctl")
    if os.path.exists(plain):
        return plain
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        raise VswitchdUnreachable(f"no ovs-vswitchd control socket in {rundir} (set "
                                  "socketnet.rest.ovs_ctl, SOCKETNET_OVS_CTL or "
                                  "OVS_RUNDIR)") from None
    path = os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")
    if not os.path.exists(path):
        raise VswitchdUnreachable(f"{path} does not exist (is ovs-vswitchd running?)")
    return path


class Vswitchd:
    """One kept-open unixctl connection, reopened when it breaks. `configured`
    answers the configured socket path (None: look for it), asked at each
    (re)connect, so that a reload that changes it takes effect."""

    def __init__(self, configured: Callable[[], Optional[str]] = lambda: None):
        self._configured = configured
        self._wanted: Optional[str] = None
        self._client = None
        self._path: Optional[str] = None
        self._lock = threading.Lock()
        self._dp_names: Optional[dict] = None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def call(self, command: str, *args: str) -> str:
        with self._lock:
            for attempt in (1, 2):
                client = self._connect()
                error, err_text, result = client.transact(command, list(args))
                if not error:
                    break
                client.close()
                self._client = None
                if attempt == 2:
                    raise VswitchdUnreachable(f"{self._path}: {os.strerror(error)}")
        if err_text is not None:
            raise ValueError(err_text.strip())
        return result

    def _connect(self):
        if self._client is not None and self._wanted != self._configured():
            self._client.close()  # a reload named another socket: another switch
            self._client = None
            self._dp_names = None
        if self._client is None:
            self._wanted = self._configured()
            path = locate(self._wanted)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # `ovs` imports eventlet, which warns
                from ovs.unixctl.client import UnixctlClient
            error, client = UnixctlClient.create(path)
            if error:
                raise VswitchdUnreachable(f"cannot connect to {path}: {os.strerror(error)}")
            self._client, self._path = client, path
        return self._client

    # --- ports -------------------------------------------------------------------

    def dp_port_name(self, number: int) -> str:
        for attempt in (1, 2):
            if self._dp_names is None or attempt == 2:
                self._dp_names = self._read_dp_names()
            if number in self._dp_names:
                return self._dp_names[number]
        return f"<dp {number}>"

    def _read_dp_names(self) -> dict:
        names = {}
        for line in self.call("dpif/show").splitlines():
            m = DPIF_PORT.match(line)
            if m:
                names[int(m.group(3))] = m.group(1)
        return names

    # --- tracing -----------------------------------------------------------------

    def trace(self, bridge: str, flow: str, ct_next: Optional[str] = None):
        """`ofproto/trace BRIDGE FLOW [--ct-next FLAGS]`, parsed
        (controller.ovs_text.TraceResult). TraceError (a ValueError) when
        ovs-vswitchd refuses the flow."""
        text = self.call("ofproto/trace", bridge, flow, *(("--ct-next", ct_next) if ct_next
                                                          else ()))
        return parse_trace(bridge, flow, text, self.dp_port_name)

    def trace_across(self, bridge: str, flow: str, links: Mapping[tuple, tuple],
                     max_hops: int = 4, ct_next: Optional[str] = None,
                     ct_mark: Optional[int] = None):
        """Trace and follow the packet over `links` ((bridge, port) -> (bridge, port)
        at the veth's other end): a controller.ovs_text.TracePath. `ct_next`,
        `ct_mark`: the connection tracker's answer to assume (ofproto/trace asks none)."""
        return follow_links(lambda br, fl: self.trace(br, fl, ct_next), bridge, flow, links,
                            max_hops, ct_mark)
