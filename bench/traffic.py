"""The real-Open-vSwitch bench's traffic actor: one process, started inside the
lab's host netns (`ip netns exec NS python -m bench.traffic ...`), that sends the
first packets of new 5-tuples into a bridge port with AF_PACKET (bench/frames.py)
and sees each one come out at the other end:

- `--receive-netns NS --receive-ifname IF`: an AF_PACKET capture on IF in another
  netns (the socket is opened there with setns(2), then used from here), so a
  packet counts when it was delivered: packet-in, decision, packet-out, forwarded;
- `--sink-port P`: a do-nothing OpenFlow controller on 127.0.0.1:P (handshake and
  echo replies, answers nothing); a packet counts when its packet-in arrives.
  What Open vSwitch can send when the controller costs nothing: its own upcall
  and packet-in ceiling;
- `--sink-port P --answer CONFIG --receive-netns NS`: the sink answers each
  packet-in with socketnet's decision (its pure core, struct-packed; no os-ken),
  and a packet counts when delivered: Open vSwitch's ceiling for whole setups
  with a controller that costs next to nothing. `--decisions`: `timed` (the
  default: a FlowMod with socketnet's idle and hard timeouts, then a PacketOut),
  `untimed` (the same FlowMod without timeouts: what they cost Open vSwitch) or
  `conntrack` (no FlowMod: one PacketOut that commits the connection in the
  connection tracker's zone CT_ZONE with its class in ct_mark, then resubmits it to
  the classify table, where static flows carry each mark; `conntrack_flows`).

Two modes: `window` keeps W packets in flight (sent, not yet seen; after 0.5 s
unseen a packet is lost and replaced): the rate a path sustains, closed loop,
without the overload that makes Open vSwitch drop packet-ins; `rate` sends at a
fixed offered rate, open loop: first-packet latency at that rate.

Protocol on stdin/stdout: "ready" (and with a sink "connected" once Open vSwitch
is), then a line on stdin starts the run, then one JSON line with the result.
Times are CLOCK_MONOTONIC, one clock for both ends.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import select
import socket
import struct
import sys
import time

from bench import frames
from bench import openflow as of

ETH_P_ALL = 0x0003
CLONE_NEWNET = 0x40000000
LOST_AFTER_NS = 500_000_000
WARMUP = 0.5


def _in_netns(ns: str, make):
    """make() called inside network namespace `ns`; this thread comes back after."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            return make()
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def _capture(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 25)
    return sock


class _Capture:
    """Bench frames seen on an interface: seq numbers."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)

    def seen(self) -> list:
        out = []
        while True:
            try:
                frame = self.sock.recv(2048)
            except BlockingIOError:
                return out
            stamp = frames.read_stamp(frame)
            if stamp is not None:
                out.append(stamp[0])


class _Sink:
    """A controller that answers nothing: the seq numbers of the packet-ins it gets.
    With `config`, a minimal controller instead: each packet-in is answered with
    socketnet's own decision (controller.classifier's pure core, packed by
    controller.fastpath), with no os-ken and no bookkeeping around it."""

    def __init__(self, port: int, config: str = None, timeout: float = 20.0,
                 decisions: str = "timed"):
        self.decide = _minimal_controller(config, decisions) if config else None
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(4)
        self.timeout = timeout
        self.reader = of.Reader()
        self.sock = None

    def accept(self) -> None:
        self.server.settimeout(self.timeout)
        self.sock, _ = self.server.accept()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(of.hello(1) + of.HEADER.pack(of.OFP_VERSION, of.OFPT_FEATURES_REQUEST,
                                                       8, 2))
        self.sock.setblocking(False)

    def seen(self) -> list:
        out = []
        while True:
            try:
                data = self.sock.recv(1 << 18)
            except BlockingIOError:
                return out
            if not data:
                raise ConnectionError("the switch closed the sink's connection")
            for msg_type, xid, msg in self.reader.feed(data):
                if msg_type == of.OFPT_PACKET_IN:
                    match_len = struct.unpack_from("!H", msg, 26)[0]
                    data = msg[24 + (match_len + 7) // 8 * 8 + 2:]
                    if self.decide is not None:
                        in_port = struct.unpack_from("!I", msg, 32)[0]
                        self._send(self.decide(data, in_port))
                        continue  # counted when delivered, not here
                    stamp = frames.read_stamp(data)
                    if stamp is not None:
                        out.append(stamp[0])
                elif msg_type == of.OFPT_ECHO_REQUEST:
                    self._send(of.echo_reply(xid, msg[8:]))

    def _send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)


def _minimal_controller(config: str, decisions: str = "timed"):
    """data, in_port -> what the minimal controller answers (see `--decisions`):
    the FlowMod + PacketOut socketnet's classifier app sends, that FlowMod without
    timeouts, or one PacketOut committing the connection with its class's mark."""
    from controller import fastpath
    from controller.classifier import Classifier, decision_flow, parse_ipv4
    from topology.config import load_host

    host = load_host(config)
    classifier, classification = Classifier(host), host.classification
    xids = iter(range(1, 1 << 32))
    if decisions == "conntrack":
        templates = {cls: _ct_packet_out(mark) for cls, mark in _marks().items()}

        def commit(data: bytes, in_port: int) -> bytes:
            head = templates[classifier.decide(parse_ipv4(data)).cls]
            out = bytearray(head)
            struct.pack_into("!HI", out, 2, len(head) + len(data), next(xids))
            struct.pack_into("!I", out, 12, in_port)
            return bytes(out) + data
        return commit

    def decide(data: bytes, in_port: int) -> bytes:
        flow5 = parse_ipv4(data)
        flow = decision_flow(flow5, classifier.decide(flow5), classification)
        if decisions == "untimed":
            flow = dataclasses.replace(flow, idle_timeout=0, hard_timeout=0)
        return (fastpath.pack_flow_mod(next(xids), flow)
                + fastpath.pack_packet_out(next(xids), in_port, data))
    return decide


# --decisions conntrack: the zone, and a ct_mark per class (0: no decision yet).
CT_ZONE = 7
CT_MARKS = {}  # TrafficClass -> mark, filled on first use (imports the core)


def _marks() -> dict:
    if not CT_MARKS:
        from controller.classifier import TrafficClass
        CT_MARKS.update({TrafficClass.PRIVACY: 1, TrafficClass.MANAGEMENT: 2,
                         TrafficClass.DROP: 3})
    return CT_MARKS


def _ct_packet_out(mark: int) -> bytes:
    """A PacketOut (xid, length and in_port to be patched, the frame to be appended)
    whose one action is ct(commit, zone=CT_ZONE, table=classify,
    exec(set_field:MARK->ct_mark)). Encoded once, by os-ken."""
    from os_ken.ofproto import nicira_ext, ofproto_v1_3, ofproto_v1_3_parser as parser

    from controller.pipeline import CLASSIFY

    class _Datapath:
        ofproto, ofproto_parser = ofproto_v1_3, parser

    ct = parser.NXActionCT(flags=nicira_ext.NX_CT_F_COMMIT, zone_src="",
                           zone_ofs_nbits=CT_ZONE, recirc_table=CLASSIFY.id, alg=0,
                           actions=[parser.OFPActionSetField(ct_mark=mark)])
    msg = parser.OFPPacketOut(_Datapath(), buffer_id=ofproto_v1_3.OFP_NO_BUFFER, in_port=1,
                              actions=[ct], data=b"")
    msg.serialize()
    return bytes(msg.buf)


def conntrack_flows(config: str) -> list:
    """The static flows `--decisions conntrack` needs on mesh, as ovs-ofctl lines:
    in the classify table, untracked IPv4 passes the connection tracker (zone
    CT_ZONE) and comes back to the table; a tracked packet whose connection has a
    mark takes its class's path (the instructions of socketnet's decision flows);
    one without falls through to socketnet's own miss (the meter, the controller).
    Invalid connection state is dropped."""
    from controller.classifier import Decision, Flow5, decision_flow
    from controller.pipeline import CLASSIFY
    from topology.config import load_host

    classification = load_host(config).classification
    table, priority = CLASSIFY.id, 60000
    flows = [f"table={table},priority={priority},ip,ct_state=-trk,"
             f"actions=ct(table={table},zone={CT_ZONE})",
             f"table={table},priority={priority},ip,ct_state=+trk+inv,actions=drop"]
    for cls, mark in _marks().items():
        line = decision_flow(Flow5(1, 2, 6, 3, 4), Decision(cls, "bench"), classification).ofctl()
        actions = line.split("actions=", 1)[1] if "actions=" in line else "drop"
        flows.append(f"table={table},priority={priority - 1},ip,ct_state=+trk,"
                     f"ct_mark={mark},actions={actions}")
    return flows


def run(ifname, src_mac, dst_mac, dst_ip, dport, mode, window, rate, seconds, first,
        receive_netns=None, receive_ifname=None, sink_port=None, answer=None,
        decisions="timed") -> dict:
    count = int(rate * seconds) if mode == "rate" else 1 << 40
    make = frames.syn_frame  # ~2 us: built as sent
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind((ifname, 0))
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sink = _Sink(sink_port, answer, decisions=decisions) if sink_port else None
    if sink is None or answer:
        end = _Capture(_in_netns(receive_netns, lambda: _capture(receive_ifname)))
    print("ready", flush=True)
    if sink is not None:
        sink.accept()
        print("connected", flush=True)
        if not answer:
            end = sink
    sys.stdin.readline()
    end.seen()  # whatever came before the start

    pending = {}  # seq -> sent ns
    latencies, lost, errors, sent = [], 0, 0, 0
    delivered = 0
    now_ns, stamp, send, fileno = time.monotonic_ns, frames.stamp, tx.send, end.sock.fileno()
    start, cpu = now_ns(), time.process_time()
    measure_from = start + int(WARMUP * 1e9) if mode == "window" else start
    stop_sending = measure_from + int(seconds * 1e9)
    next_expiry = start
    while True:
        now = now_ns()
        if now >= stop_sending:
            if mode == "window" or not pending or now > stop_sending + 1_000_000_000:
                break
            due = 0
        elif mode == "window":
            due = window - len(pending)
        else:
            due = min(count, (now - start) * rate // 1_000_000_000 + 1) - sent
        for _ in range(max(0, due)):
            seq = first + sent
            frame = make(seq, src_mac, dst_mac, dst_ip, dport)
            t = now_ns()
            stamp(frame, seq, t)
            try:
                send(frame)
            except OSError:
                errors += 1
            pending[seq] = t
            sent += 1
        if mode == "rate" and sent < count:
            wait = max(0.0, (start + sent * 1e9 / rate - now_ns()) / 1e9)
        else:
            wait = 0.001
        if answer:
            select.select([fileno, sink.sock.fileno()], [], [], wait)
            sink.seen()
        else:
            select.select([fileno], [], [], wait)
        arrived = now_ns()
        for seq in end.seen():
            sent_at = pending.pop(seq, None)
            if sent_at is None:
                continue
            if sent_at >= measure_from:
                latencies.append((arrived - sent_at) / 1e9)
            if arrived >= measure_from:
                delivered += 1
        if arrived >= next_expiry:
            old = [s for s, t in pending.items() if arrived - t > LOST_AFTER_NS]
            for s in old:
                del pending[s]
            lost += len(old)
            next_expiry = arrived + 50_000_000
    measured = (min(now_ns(), stop_sending) - measure_from) / 1e9
    return {"sent": sent, "delivered": delivered, "seconds": measured, "lost": lost,
            "errors": errors, "in_flight": len(pending), "latencies": latencies,
            "cpu_seconds": time.process_time() - cpu, "wall_seconds": (now_ns() - start) / 1e9}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--src-mac", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dst-ip", required=True)
    parser.add_argument("--dport", type=int, required=True)
    parser.add_argument("--mode", choices=("window", "rate"), required=True)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--receive-netns")
    parser.add_argument("--receive-ifname", default="eth0")
    parser.add_argument("--sink-port", type=int)
    parser.add_argument("--answer", metavar="CONFIG",
                        help="the sink answers as socketnet's core would, for this config "
                             "(needs --receive-netns: delivered packets count)")
    parser.add_argument("--decisions", choices=("timed", "untimed", "conntrack"),
                        default="timed",
                        help="with --answer: how the sink answers (see the module doc)")
    args = parser.parse_args(argv)
    if not args.receive_netns and not (args.sink_port and not args.answer):
        parser.error("--receive-netns, or --sink-port without --answer")
    if args.decisions != "timed" and not args.answer:
        parser.error("--decisions: only with --answer")
    print(json.dumps(run(**vars(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
