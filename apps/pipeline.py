"""The os-ken app that holds the mesh and vmbr0 pipelines on their switches.

A thin shell around the pure core: it turns os-ken's events into calls on
controller/sync.py and controller/role.py and carries out what they return over
the switch's connection (its Channel, apps/channel.py, which apps/connection.py
opens and tells it of), the messages built and read by controller/ofmsg.py. On
every connect, on every port change of a known bridge, on a config reload and on
a change of role it runs one sync (`controller.sync.sync`: ports, role, meters,
flows, one atomic bundle, a barrier). A reconnect with an unchanged config and
ports sends no flow-mod at all.

A standby instance (socketnet.openflow.role) probes its primary's OpenFlow
address and tells the RolePolicy what it found.
"""
from __future__ import annotations

import socket

from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.channel import ChannelError, Channels
from apps.connection import EventConnected, EventDisconnected
from controller import ofmsg, sync
from controller.role import PROBE_SECONDS, Claim, RolePolicy
from controller.switches import Runtime


class EventPipelineSynced(event.EventBase):
    """A bridge's pipeline is in sync; `reactive` are the decision flows it holds."""

    def __init__(self, dpid: int, bridge: str, reactive: list):
        super().__init__()
        self.dpid, self.bridge, self.reactive = dpid, bridge, reactive


class PipelineApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime, "channels": Channels}
    _EVENTS = [EventPipelineSynced]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.channels: Channels = kwargs["channels"]
        self._wanted = {}    # dpid -> the connection a sync is wanted on (the newest)
        self._syncing = set()
        self.runtime.on_host_change(self._on_host_change)
        settings = self.runtime.host.settings
        self.roles = RolePolicy(settings.role, settings.peer)
        self._watcher = hub.spawn(self._watch_peer) if self.roles.standby else None

    def close(self):
        if self._watcher is not None:
            hub.kill(self._watcher)

    def _on_host_change(self, host):
        """A reloaded config: sync every known bridge (a diff, as on reconnect)."""
        self._sync_all()

    # --- connection lifecycle ---------------------------------------------

    @set_ev_cls(EventConnected)
    def _on_connected(self, ev):
        dp = ev.datapath
        sync.connected(self.runtime.switch(dp.id), dp.address)
        self._request_sync(dp)

    @set_ev_cls(EventDisconnected)
    def _on_disconnected(self, ev):
        sync.disconnected(self.runtime.switch(ev.datapath.id))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _on_port_status(self, ev):
        dp = ev.msg.datapath
        if sync.port_changed(self.runtime.switch(dp.id), *ofmsg.port_status(ev.msg)):
            self._request_sync(dp)

    # --- sync ----------------------------------------------------------------

    def _request_sync(self, dp):
        """Run a sync now, or once more after the one in progress, on the newest
        connection asked for: a switch that reconnected during a sync is synced
        on its new connection, not on the one that went."""
        self._wanted[dp.id] = dp
        if dp.id in self._syncing:
            return
        self._syncing.add(dp.id)
        hub.spawn(self._sync_loop, dp.id)

    def _sync_loop(self, dpid):
        try:
            while (dp := self._wanted.pop(dpid, None)) is not None:
                self._sync(dp)
        finally:
            self._syncing.discard(dpid)

    def _sync_all(self):
        for channel in self.channels.values():
            self._request_sync(channel.dp)

    def _sync(self, dp):
        channel = self.channels.current(dp)
        if channel is None:  # gone, or replaced by a newer connection
            return
        outcome = sync.drive(sync.sync(self.runtime.host, self.runtime.switch(dp.id), self.roles),
                             lambda step: self._carry_out(channel, step))
        if isinstance(outcome, sync.Synced):
            self.send_event_to_observers(
                EventPipelineSynced(dp.id, outcome.bridge, list(outcome.reactive)))

    @classmethod
    def _carry_out(cls, channel, step):
        """Do one step of a sync on the switch: its answer, as values; a refusal or
        no answer raised as sync.Refused."""
        try:
            return cls._step(channel, step)
        except ChannelError as exc:
            raise sync.Refused(str(exc), ofmsg.stale_role(exc.error)) from None

    @staticmethod
    def _step(channel, step):
        dp = channel.dp
        if isinstance(step, sync.ReadPorts):
            return ofmsg.ports(channel.request(ofmsg.port_desc_request(dp), "port-desc"))
        if isinstance(step, sync.ReadMeters):
            return ofmsg.meter_configs(channel.request(ofmsg.meter_config_request(dp),
                                                       "meter-config"))
        if isinstance(step, sync.ReadFlows):
            return ofmsg.switch_flows(channel.request(ofmsg.flow_stats_request(dp),
                                                      "flow-stats"))
        if isinstance(step, Claim):
            channel.request(ofmsg.role_request(dp, step), "role")
        elif isinstance(step, sync.WriteMeters):
            channel.send_checked([ofmsg.meter_mod(dp, command, meter)
                                  for command, meter in step.changes], step.describe)
        elif isinstance(step, sync.ApplyBundle):
            channel.apply_bundle(ofmsg.flow_changes(dp, step.unreadable, step.delete, step.add),
                                 step.describe)
        elif isinstance(step, sync.Barrier):
            channel.barrier()
        else:
            raise TypeError(f"not a sync step: {step!r}")
        return None

    # --- a standby watches its primary ---------------------------------------

    def _watch_peer(self):
        """Probe the primary's OpenFlow address; re-sync every switch (claiming
        the new role) whenever the RolePolicy changes it."""
        while True:
            hub.sleep(PROBE_SECONDS)
            try:
                with socket.create_connection(self.roles.peer, timeout=PROBE_SECONDS):
                    alive = True
            except OSError:
                alive = False
            if self.roles.probed(alive):
                self._sync_all()
