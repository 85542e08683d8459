"""The os-ken app that holds the mesh and vmbr0 pipelines on their switches.

A thin shell around the pure core. On every connect and on every port change of
a known bridge it runs one `sync`: read the ports, compile the desired flows
(controller.compiler), read the switch's flows, plan the difference
(controller.reconcile) and apply it in one atomic bundle. A reconnect with an
unchanged config and ports sends no flow-mod at all.

Bridges are told apart by the name of their LOCAL port, which Open vSwitch gives
the bridge's name. A bridge the config does not name is reported and left alone.
"""
from __future__ import annotations

import logging
import socket
import time

from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                       set_ev_cls)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.channel import ChannelError, Channels
from controller import ofmsg
from controller.compiler import SwitchPort, compile_bridge, packet_in_meters
from controller.flow import FlowError
from controller.pipeline import COOKIE_MASK, COOKIE_PREFIX, owns, purpose_of
from controller.reconcile import REACTIVE, plan
from controller.switches import Runtime

LOG = logging.getLogger("socketnet.pipeline")

PEER_PROBE_SECONDS = 0.5
PEER_MISSES = 2

_REPLIES = [ofp_event.EventOFPPortDescStatsReply, ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPBarrierReply, ofp_event.EventONFBundleCtrlMsg,
            ofp_event.EventOFPMeterConfigStatsReply, ofp_event.EventOFPRoleReply,
            ofp_event.EventOFPErrorMsg]


def _port(desc) -> SwitchPort:
    name = desc.name.decode("utf-8", "replace") if isinstance(desc.name, bytes) else desc.name
    return SwitchPort(desc.port_no, name.rstrip("\0"), desc.hw_addr.lower())


class EventPipelineSynced(event.EventBase):
    """A bridge's pipeline is in sync; `reactive` are the decision flows it holds."""

    def __init__(self, dpid: int, bridge: str, reactive: list):
        super().__init__()
        self.dpid, self.bridge, self.reactive = dpid, bridge, reactive


class PipelineApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime}
    _EVENTS = [EventPipelineSynced]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.channels = Channels()
        self._dirty = {}     # dpid -> another sync is wanted after the running one
        self._syncing = set()
        self.runtime.on_host_change(self._on_host_change)
        settings = self.runtime.host.settings
        # OpenFlow roles: the primary is master; a standby is slave until its
        # peer (the primary) stops answering, then master with a newer generation.
        self.active = settings.role == "primary"
        self.generation = 0  # the last generation id claimed
        self._watcher = None
        if settings.role == "standby":
            self._watcher = hub.spawn(self._watch_peer, settings.peer)

    def close(self):
        if self._watcher is not None:
            hub.kill(self._watcher)

    def _on_host_change(self, host):
        """A reloaded config: sync every known bridge (a diff, as on reconnect)."""
        self._sync_all()

    # --- connection lifecycle ---------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev):
        dp = ev.msg.datapath
        state = self.runtime.switch(dp.id)
        state.connected = True
        state.connects += 1
        self.channels.open(dp, self.runtime.host.settings.reconcile_timeout)
        LOG.info("datapath %016x connected from %s (connect #%d)", dp.id, dp.address,
                 state.connects)
        self._request_sync(dp)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _on_dead(self, ev):
        dp = ev.datapath
        if not self.channels.close(dp):
            return  # unknown, or a late DEAD of a connection since replaced
        state = self.runtime.switch(dp.id)
        state.connected = False
        LOG.warning("datapath %016x (%s) disconnected; its flows stay (fail_mode=secure)",
                    dp.id, state.bridge or "unknown bridge")

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _on_port_status(self, ev):
        msg = ev.msg
        dp = msg.datapath
        state = self.runtime.switch(dp.id)
        if state.bridge is None:
            return
        port = _port(msg.desc)
        reason = {ofp.OFPPR_ADD: "added", ofp.OFPPR_DELETE: "deleted",
                  ofp.OFPPR_MODIFY: "modified"}.get(msg.reason, str(msg.reason))
        LOG.info("%s: port %s (%d) %s", state.bridge, port.name, port.number, reason)
        if msg.reason == ofp.OFPPR_DELETE:
            state.ports.pop(port.name, None)
        else:
            state.ports[port.name] = port
        self._request_sync(dp)

    @set_ev_cls(_REPLIES, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_reply(self, ev):
        if isinstance(ev.msg, ev.msg.datapath.ofproto_parser.OFPErrorMsg):
            LOG.debug("error from %016x xid %d", ev.msg.datapath.id, ev.msg.xid)
        self.channels.deliver(ev.msg)

    # --- sync ----------------------------------------------------------------

    def _request_sync(self, dp):
        """Run a sync now, or once more after the one in progress."""
        if dp.id in self._syncing:
            self._dirty[dp.id] = True
            return
        self._syncing.add(dp.id)
        hub.spawn(self._sync_loop, dp)

    def _sync_loop(self, dp):
        try:
            while True:
                self._dirty[dp.id] = False
                self._sync(dp)
                if not self._dirty.get(dp.id):
                    return
        finally:
            self._syncing.discard(dp.id)

    def _sync(self, dp):
        channel = self.channels.get(dp.id)
        if channel is None or channel.dp is not dp:
            return
        state = self.runtime.switch(dp.id)
        host = self.runtime.host
        parser = dp.ofproto_parser
        started = time.monotonic()
        try:
            if state.bridge is None or not state.ports:
                replies = channel.request(parser.OFPPortDescStatsRequest(dp, 0), "port-desc")
                ports = [_port(d) for r in replies for d in r.body]
                local = [p.name for p in ports if p.number == ofp.OFPP_LOCAL]
                bridge = local[0] if local else "?"
                if bridge not in {b.name for b in host.bridges}:
                    LOG.warning("datapath %016x is bridge %r, which the config does not name; "
                                "left untouched", dp.id, bridge)
                    return
                state.bridge = bridge
                state.ports = {p.name: p for p in ports}
                self._report_ports(state)

            if not self._claim_role(channel, state):
                return
            desired = compile_bridge(host, state.bridge, state.ports)
            if state.bridge == host.mesh.name:
                self._ensure_meters(channel)
            installed, foreign, alien = self._read_flows(channel)
            todo = plan(desired, installed, foreign)
            if not todo.empty or alien:
                messages = ([ofmsg.delete_stat(dp, stat) for stat in alien]
                            + [ofmsg.flow_mod(dp, f, ofmsg.DELETE_STRICT) for f in todo.delete]
                            + [ofmsg.flow_mod(dp, f, ofmsg.ADD) for f in todo.add])
                names = state.port_names()
                if LOG.isEnabledFor(logging.DEBUG):  # tens of thousands of decisions held
                    for f in todo.delete:
                        LOG.debug("%s: delete %s", state.bridge, f.ofctl(names))
                    held = {f.key: f for f in installed}
                    for f in todo.add:
                        if f.key in held:
                            LOG.debug("%s: replace %s", state.bridge, held[f.key].ofctl(names))
                        LOG.debug("%s: add %s", state.bridge, f.ofctl(names))
                changed = todo.delete + todo.add

                def describe(i):  # only asked for a message the switch refused
                    if i < len(alien):
                        return f"{state.bridge}: unreadable flow in table {alien[i].table_id}"
                    return f"{state.bridge}: {changed[i - len(alien)].ofctl(names)}"
                state.flow_mods += len(messages)
                channel.apply_bundle(messages, describe)
            channel.barrier()
            state.desired, state.last_plan = desired, todo
            state.last_sync, state.last_error = time.time(), ""
            state.sync_seconds.observe(time.monotonic() - started)
            LOG.info("%s: pipeline in sync (%s) in %.1f ms", state.bridge, todo.summary(),
                     (time.monotonic() - started) * 1000)
            reactive = [f for f in installed if purpose_of(f.cookie) in REACTIVE]
            self.send_event_to_observers(EventPipelineSynced(dp.id, state.bridge, reactive))
        except ChannelError as exc:
            state.last_error = str(exc)
            state.sync_failures += 1
            LOG.error("%s: sync failed: %s", state.bridge or f"{dp.id:016x}", exc)

    # --- roles: a primary and a standby --------------------------------------

    def _claim_role(self, channel, state) -> bool:
        """Tell the switch this instance's role; whether it may write.

        Every claim carries the newest generation id this instance can give (the
        time in ms): a claim the switch finds stale, because the other instance's
        claim overtook it, is made again once with a newer one."""
        dp = channel.dp
        role = ofp.OFPCR_ROLE_MASTER if self.active else ofp.OFPCR_ROLE_SLAVE
        for attempt in (1, 2):
            self.generation = max(self.generation + 1, time.time_ns() // 1_000_000)
            try:
                channel.request(dp.ofproto_parser.OFPRoleRequest(dp, role, self.generation),
                                "role")
                break
            except ChannelError as exc:
                stale = exc.error is not None and \
                    (exc.error.type, exc.error.code) == (ofp.OFPET_ROLE_REQUEST_FAILED,
                                                         ofp.OFPRRFC_STALE)
                if attempt == 2 or not stale:
                    raise
        if not self.active:
            LOG.info("%s: standby (OpenFlow slave): writes nothing", state.bridge)
        return self.active

    def _watch_peer(self, peer):
        """Standby: take over while the primary's OpenFlow address does not
        answer (two probes in a row), step back when it answers again."""
        misses = 0
        while True:
            hub.sleep(PEER_PROBE_SECONDS)
            try:
                with socket.create_connection(peer, timeout=PEER_PROBE_SECONDS):
                    alive = True
            except OSError:
                alive = False
            misses = 0 if alive else misses + 1
            if not self.active and misses >= PEER_MISSES:
                self.active = True
                LOG.warning("primary %s:%d does not answer: taking over as master", *peer)
                self._sync_all()
            elif self.active and alive:
                self.active = False
                LOG.warning("primary %s:%d answers again: back to standby", *peer)
                self._sync_all()

    def _sync_all(self):
        for channel in self.channels.values():
            self._request_sync(channel.dp)

    def _read_flows(self, channel):
        """The switch's socketnet flows: readable ones; ones whose instructions
        socketnet cannot read (as Flows without them); raw entries of which even
        the match is unreadable (to be deleted)."""
        dp = channel.dp
        parser = dp.ofproto_parser
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         COOKIE_PREFIX, COOKIE_MASK, parser.OFPMatch())
        installed, foreign, alien = [], [], []
        for reply in channel.request(req, "flow-stats"):
            for stat in reply.body:
                if not owns(stat.cookie):
                    continue
                try:
                    installed.append(ofmsg.from_stats(stat))
                except FlowError as exc:
                    LOG.debug("unreadable flow in table %d: %s", stat.table_id, exc)
                    try:
                        foreign.append(ofmsg.from_stats(stat, instructions=False))
                    except FlowError:
                        alien.append(stat)
        return installed, foreign, alien

    def _ensure_meters(self, channel):
        """The packet-in meters of table 1 (compiler.packet_in_meters), as the
        config's limits say: added if missing, modified if different, left alone
        otherwise."""
        dp = channel.dp
        parser = dp.ofproto_parser
        flags = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
        want = {mid: (flags, rate, burst)
                for mid, (rate, burst) in packet_in_meters(self.runtime.host).items()}
        have = {}
        for reply in channel.request(parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL),
                                     "meter-config"):
            for cfg in reply.body:
                if cfg.bands:
                    have[cfg.meter_id] = (cfg.flags, cfg.bands[0].rate, cfg.bands[0].burst_size)
        mods = []
        for mid, (flags_, rate, burst) in sorted(want.items()):
            if have.get(mid) == want[mid]:
                continue
            command = ofp.OFPMC_ADD if mid not in have else ofp.OFPMC_MODIFY
            band = parser.OFPMeterBandDrop(rate=rate, burst_size=burst)
            mods.append(parser.OFPMeterMod(dp, command, flags_, mid, [band]))
            LOG.info("packet-in meter %d: %d packets/s, burst %d", mid, rate, burst)
        if mods:
            channel.send_checked(mods, lambda i: f"packet-in meter {mods[i].meter_id}")

    def _report_ports(self, state):
        bridge = self.runtime.host.bridge(state.bridge)
        configured = {p.name for p in bridge.ports}
        present = set(state.ports) - {state.bridge}
        missing = sorted(configured - present)
        extra = sorted(present - configured)
        LOG.info("%s: %d configured ports present%s%s", state.bridge,
                 len(configured & present),
                 f"; not on the switch yet: {', '.join(missing)}" if missing else "",
                 f"; not in the config (traffic dropped): {', '.join(extra)}" if extra else "")
