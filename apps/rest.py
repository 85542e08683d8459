"""The os-ken app that serves the flow-debug REST API (controller/api/app.py).

A thin shell: it serves `controller.api.Api` with os-ken's eventlet WSGI server on
`socketnet.rest.listen` (127.0.0.1:9641 unless configured), and is the API's
backend on the switches: flow and port statistics over the switches' channels
(apps/channel.py), Ryu's ofctl_rest answers through os-ken's `ofctl_v1_3` (Ryu's
own code, so the format is Ryu's; apps/connection.py hands it its replies),
cached decisions deleted with DELETE_STRICT (the classifier's count follows from
the flow-removed), and traces and the isolation audit through ovs-vswitchd's
control socket (controller/vswitchd.py).
"""
from __future__ import annotations

import logging

from os_ken.base import app_manager
from os_ken.lib import hub, ofctl_v1_3
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.channel import Channel, ChannelError, Channels
from controller import audit as auditmod
from controller import conntrack
from controller import ofmsg
from controller.api.app import Api
from controller.api.routes import ApiError
from controller.api.views import FlowStat
from controller.flow import FlowError
from controller.switches import Runtime
from controller.explain import path_doc
from controller.vswitchd import VswitchdUnreachable


LOG = logging.getLogger("socketnet.rest")
ACCESS = logging.getLogger("socketnet.rest.access")

_RYU = {"desc": ofctl_v1_3.get_desc_stats, "flow": ofctl_v1_3.get_flow_stats,
        "aggregateflow": ofctl_v1_3.get_aggregate_flow_stats,
        "port": ofctl_v1_3.get_port_stats, "portdesc": ofctl_v1_3.get_port_desc,
        "table": ofctl_v1_3.get_table_stats, "tablefeatures": ofctl_v1_3.get_table_features,
        "meter": ofctl_v1_3.get_meter_stats, "meterconfig": ofctl_v1_3.get_meter_config,
        "meterfeatures": ofctl_v1_3.get_meter_features}


class _AccessLog:
    """eventlet.wsgi's access log, at debug level (os-ken's wrapper logs each request
    at info, which would flood the controller's log under a busy client)."""

    def write(self, message):
        ACCESS.debug(message.rstrip("\n"))


class _WSGIServer(hub.WSGIServer):
    def serve_forever(self):
        import eventlet.wsgi
        eventlet.wsgi.server(self.server, self.handle, _AccessLog())


class RestApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {"runtime": Runtime, "channels": Channels}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime: Runtime = kwargs["runtime"]
        self.channels: Channels = kwargs["channels"]
        self.vswitchd = self.runtime.vswitchd
        self.api = Api(self.runtime, self)
        settings = self.runtime.host.settings
        where = (settings.rest_listen_host, settings.rest_listen_port)
        self._server = None
        self._thread = None
        try:
            self._server = _WSGIServer(where, self.api)
        except OSError as exc:
            LOG.error("REST API cannot listen on %s:%d: %s", *where, exc)
            return
        self._thread = hub.spawn(self._server.serve_forever)
        LOG.info("REST API listening on http://%s:%d/v1 (OpenAPI: /v1/openapi.json)", *where)

    def close(self):
        if self._server is not None:
            self._server.server.close()
        if self._thread is not None:
            hub.kill(self._thread)
        self.vswitchd.close()

    # --- connections ----------------------------------------------------------------

    def _channel(self, dpid: int) -> Channel:
        channel = self.channels.get(dpid)
        if channel is None:
            raise ApiError(503, f"switch {dpid:016x} is not connected", "switch")
        return channel

    def _request(self, dpid: int, msg_of, what: str) -> list:
        channel = self._channel(dpid)
        try:
            return channel.request(msg_of(channel.dp), what)
        except ChannelError as exc:
            raise ApiError(503, f"switch {dpid:016x}: {exc}", "switch") from None

    # --- the API's backend ------------------------------------------------------------

    def flow_stats(self, dpid: int) -> list:
        out = []
        for reply in self._request(dpid, ofmsg.all_flows_request, "flow-stats"):
            for stat in reply.body:
                duration = stat.duration_sec + stat.duration_nsec / 1e9
                text = ""
                try:
                    flow = ofmsg.from_stats(stat)
                except FlowError:
                    flow = None
                    try:
                        bare = ofmsg.from_stats(stat, instructions=False)
                        text = bare.ofctl().replace("actions=drop", "actions=<not socketnet's>")
                    except FlowError:
                        text = (f"cookie={stat.cookie:#x}, table={stat.table_id}, "
                                f"priority={stat.priority},<unreadable match> "
                                "actions=<not socketnet's>")
                out.append(FlowStat(flow, stat.table_id, stat.priority, stat.cookie,
                                    stat.packet_count, stat.byte_count, round(duration, 3),
                                    text))
        return out

    def port_stats(self, dpid: int) -> dict:
        out = {}
        for reply in self._request(dpid, ofmsg.port_stats_request, "port-stats"):
            for s in reply.body:
                out[s.port_no] = {k: getattr(s, k) for k in (
                    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                    "tx_dropped", "rx_errors", "tx_errors")}
        return out

    def ryu(self, what: str, dpid, argument=None):
        if what == "switches":
            return sorted(d for d, c in self.channels.items() if c.dp.is_active)
        dp = self._channel(dpid).dp
        if argument is None:
            return _RYU[what](dp, self.channels.waiters)
        try:
            return _RYU[what](dp, self.channels.waiters, argument)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            # a match field or value os-ken's ofctl does not know, as Ryu answers it
            raise ApiError(400, f"Ryu filter refused: {exc!r}", "match") from None

    def connections(self, zone: int) -> list:
        """The connections of conntrack zone `zone` (controller.conntrack)."""
        try:
            text = self.vswitchd.call("dpctl/dump-conntrack", "-s", f"zone={zone}")
        except VswitchdUnreachable as exc:
            raise ApiError(503, f"cannot read the connection tracker: {exc}") from None
        except ValueError as exc:
            raise ApiError(503, f"ovs-vswitchd refused dump-conntrack: {exc}") from None
        return conntrack.parse_dump(text, zone)

    def delete_connection(self, zone: int, connection) -> None:
        try:
            self.vswitchd.call("dpctl/flush-conntrack", f"zone={zone}",
                               conntrack.flush_tuple(connection))
        except (VswitchdUnreachable, ValueError) as exc:
            raise ApiError(503, f"cannot delete {connection.id}: {exc}") from None
        LOG.info("REST: deleted connection %s from zone %d", connection.id, zone)

    def flush_connections(self, dpid: int, zone: int) -> None:
        """Every connection of `zone` gone, by OpenFlow (NXT_CT_FLUSH_ZONE)."""
        channel = self._channel(dpid)
        message = ofmsg.ct_flush_zone(channel.dp, zone)
        try:
            channel.send_checked([message], lambda i: f"flush conntrack zone {zone}")
        except ChannelError as exc:
            raise ApiError(503, str(exc), "switch") from None
        LOG.info("REST: flushed conntrack zone %d", zone)

    def _trace_across(self, bridge: str, flow: str, ct_next=None, ct_mark=None):
        return self.vswitchd.trace_across(bridge, flow, self.runtime.host.inter_bridge_links,
                                          ct_next=ct_next, ct_mark=ct_mark)

    def trace(self, bridge: str, flow: str, ct_next=None, ct_mark=None) -> dict:
        try:
            path = self._trace_across(bridge, flow, ct_next, ct_mark)
            return path_doc(path, {b.name: self.runtime.by_bridge(b.name)
                                   for b in self.runtime.host.bridges})
        except VswitchdUnreachable as exc:
            raise ApiError(503, f"cannot trace: {exc}") from None
        except ValueError as exc:
            raise ApiError(400, f"ovs-vswitchd refused the packet: {exc}", "body") from None

    def audit(self) -> dict:
        host = self.runtime.host
        macs = {}
        for bridge in host.bridges:
            state = self.runtime.by_bridge(bridge.name)
            if state is None:
                raise ApiError(503, f"bridge {bridge.name} is not connected: the audit "
                                    "needs both bridges' ports")
            macs.update({name: p.mac for name, p in state.ports.items()})
        try:
            self.vswitchd.call("version")
        except VswitchdUnreachable as exc:
            raise ApiError(503, f"cannot audit: {exc}") from None
        try:
            return auditmod.audit(host, macs, self._trace_across)
        except VswitchdUnreachable as exc:
            raise ApiError(503, f"cannot audit: {exc}") from None
