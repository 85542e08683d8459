"""The bench's baseline: a plain os-ken learning switch, shaped like Ryu's
`simple_switch_13.py`, doing per packet-in what a per-flow os-ken app does.

One class; a features handler that installs the table-miss flow (to the
controller); a packet-in handler that parses the frame with `os_ken.lib.packet`,
learns the source MAC's port, picks the output (the learned port of the
destination MAC, or FLOOD), installs a flow built from os-ken objects and sends
the packet with a PacketOut.

Two deliberate differences from simple_switch_13, so that it does the same work
per new flow as socketnet's classifier: the flow matches the 5-tuple (in_port,
eth_type, ip_proto, IPv4 addresses, TCP/UDP ports: 7 fields) rather than the MAC
pair, so every new 5-tuple is a flow setup and not only the first of a MAC pair;
and it is installed even when the output is FLOOD; a frame that is not IPv4 gets
the MAC pair of its own ethertype. It answers any packet-in.
`bench/baseline.py` runs it under socketnet's runner conditions.
"""
from __future__ import annotations

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, ether_types, ipv4, packet, tcp, udp
from os_ken.ofproto import ofproto_v1_3


class SimpleSwitch13(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mac_to_port = {}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        datapath = ev.msg.datapath
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        match = parser.OFPMatch()
        actions = [parser.OFPActionOutput(ofproto.OFPP_CONTROLLER, ofproto.OFPCML_NO_BUFFER)]
        self.add_flow(datapath, 0, match, actions)

    def add_flow(self, datapath, priority, match, actions, idle_timeout=0):
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        inst = [parser.OFPInstructionActions(ofproto.OFPIT_APPLY_ACTIONS, actions)]
        datapath.send_msg(parser.OFPFlowMod(datapath=datapath, priority=priority, match=match,
                                            instructions=inst, idle_timeout=idle_timeout))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in_handler(self, ev):
        msg = ev.msg
        datapath = msg.datapath
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        in_port = msg.match["in_port"]

        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        dpid = datapath.id
        self.mac_to_port.setdefault(dpid, {})
        self.mac_to_port[dpid][eth.src] = in_port
        out_port = self.mac_to_port[dpid].get(eth.dst, ofproto.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]

        ip = pkt.get_protocol(ipv4.ipv4)
        if ip is not None:
            fields = dict(in_port=in_port, eth_type=ether_types.ETH_TYPE_IP,
                          ip_proto=ip.proto, ipv4_src=ip.src, ipv4_dst=ip.dst)
            l4 = pkt.get_protocol(tcp.tcp) or pkt.get_protocol(udp.udp)
            if isinstance(l4, tcp.tcp):
                fields.update(tcp_src=l4.src_port, tcp_dst=l4.dst_port)
            elif isinstance(l4, udp.udp):
                fields.update(udp_src=l4.src_port, udp_dst=l4.dst_port)
            match = parser.OFPMatch(**fields)
        else:
            # The MAC pair, for this ethertype only: an ARP must not make a flow
            # that forwards the pair's IPv4 without asking.
            match = parser.OFPMatch(in_port=in_port, eth_type=eth.ethertype, eth_dst=eth.dst,
                                    eth_src=eth.src)
        self.add_flow(datapath, 1, match, actions, idle_timeout=60)

        out = parser.OFPPacketOut(datapath=datapath, buffer_id=ofproto.OFP_NO_BUFFER,
                                  in_port=in_port, actions=actions, data=msg.data)
        datapath.send_msg(out)
