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
- `--sink-port P --answer CONFIG --receive-netns NS`: a minimal controller instead
  (socketnet's pure core, struct-packed answers, no os-ken, no bookkeeping), on
  socketnet's installed pipeline; a packet counts when delivered. `--decisions`:
  `conntrack` answers exactly as socketnet does (`commit_answer`: one PacketOut
  that commits the connection to the mesh's zone with its class's mark, then
  sends it through the tables; no FlowMod); `timed` as the classifier did before
  its decisions moved into the connection tracker (`timed_answer`: a FlowMod of
  its own table-1 flow, above socketnet's, with idle and hard timeouts, then a
  PacketOut); `untimed` the same flow without timeouts (what the timeouts cost
  Open vSwitch);
- `--serve --sink-port P --answer CONFIG`: the same minimal controller alone, in a
  process of its own (no traffic): beside a sender that captures with
  `--receive-netns`, the same three processes on the same cores as socketnet's
  run (ovs-vswitchd, the controller, the traffic), where the in-process minimal
  shares the traffic's process and saves a hop.

Three modes: `window` keeps W packets in flight (sent, not yet seen; after 0.5 s
unseen a packet is lost and replaced): the rate a path sustains, closed loop,
without the overload that makes Open vSwitch drop packet-ins; `rate` sends at a
fixed offered rate, open loop: first-packet latency at that rate; `fill` sends
exactly `--count` flows with W in flight and ends once they are all seen or lost
(to fill the conntrack zone with live decisions before a measured run).

Protocol on stdin/stdout: "ready" (and with a sink "connected" once Open vSwitch
is), then a line on stdin starts the run, then one JSON line with the result.
Times are CLOCK_MONOTONIC, one clock for both ends.
"""
from __future__ import annotations

import argparse
import ctypes
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
    With `config`, a minimal controller instead: each packet-in is answered as
    `--decisions` says (`_minimal_controller`), with no os-ken and no bookkeeping
    around it."""

    def __init__(self, port: int, config: str = None, timeout: float = 20.0,
                 decisions: str = "conntrack"):
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
            answers = []
            for msg_type, xid, msg in self.reader.feed(data):
                if msg_type == of.OFPT_PACKET_IN:
                    match_len = struct.unpack_from("!H", msg, 26)[0]
                    frame = msg[24 + (match_len + 7) // 8 * 8 + 2:]
                    if self.decide is not None:
                        in_port = struct.unpack_from("!I", msg, 32)[0]  # the match's first OXM
                        answers.append(self.decide(frame, in_port))
                        continue  # counted when delivered, not here
                    stamp = frames.read_stamp(frame)
                    if stamp is not None:
                        out.append(stamp[0])
                elif msg_type == of.OFPT_ECHO_REQUEST:
                    answers.append(of.echo_reply(xid, msg[8:]))
            if answers:
                self._send(b"".join(answers))

    def _send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)


# --- the minimal controller's answers -------------------------------------------

# The timed design's own table-1 flow: above every flow of socketnet's classify
# table (the highest is the +inv drop, 400), so a decided packet takes it before
# the connection tracker; the timeouts of that design's defaults; a cookie that
# is not socketnet's ("BENCH"), so socketnet would never take it for its own.
TIMED_PRIORITY = 500
TIMED_IDLE_TIMEOUT = 60
TIMED_HARD_TIMEOUT = 3600
BENCH_COOKIE = 0x42454E43_48000000


def timed_flow(flow5, cls, idle_timeout: int = TIMED_IDLE_TIMEOUT,
               hard_timeout: int = TIMED_HARD_TIMEOUT):
    """The table-1 flow that caches the class `cls` of the connection `flow5`
    (controller.classifier.Flow5): Netmaker ingress (metadata), IPv4, the
    protocol, both addresses and (TCP, UDP) both ports; its instructions are the
    class's path (controller.compiler.CLASS_PATHS: privacy is write_metadata of
    PRIVACY_INGRESS, then the forward table; drop is none). It reports its removal,
    as that design's decision flows did."""
    from controller.classifier import MARKS, address_text
    from controller.compiler import CLASS_PATHS
    from controller.flow import ETH_TYPE_IP, IPPROTO_TCP, IPPROTO_UDP, Flow
    from controller.pipeline import CLASSIFY, Zone

    match = {"metadata": int(Zone.NETMAKER), "eth_type": ETH_TYPE_IP, "ip_proto": flow5.proto,
             "ipv4_src": address_text(flow5.src), "ipv4_dst": address_text(flow5.dst)}
    if flow5.proto == IPPROTO_TCP:
        match.update(tcp_src=flow5.sport, tcp_dst=flow5.dport)
    elif flow5.proto == IPPROTO_UDP:
        match.update(udp_src=flow5.sport, udp_dst=flow5.dport)
    # The values are canonical already (integers, dotted quads): what Flow.make
    # would make of them, without its normalising, once per packet-in.
    return Flow(CLASSIFY.id, TIMED_PRIORITY, tuple(sorted(match.items())),
                CLASS_PATHS[MARKS[cls]][1], BENCH_COOKIE, idle_timeout=idle_timeout,
                hard_timeout=hard_timeout, send_flow_removed=True)


def timed_answer(xid: int, in_port: int, data: bytes, flow) -> bytes:
    """The timed design's answer to a packet-in: the FlowMod of `flow` (xid), then
    the packet itself back through the tables from table 0 (xid + 1), where the
    new flow now takes it."""
    from controller import fastpath
    return (fastpath.pack_flow_mod(xid, flow)
            + fastpath.pack_packet_out((xid + 1) & 0xFFFFFFFF, in_port, data))


def commit_answer(xid: int, in_port: int, data: bytes, cls, zone: int) -> bytes:
    """socketnet's answer to a packet-in decided `cls`: one PacketOut committing the
    connection to `zone` with the class's mark (controller.classifier.MARKS) and,
    unless the class is drop, sending the packet on through the tables."""
    from controller import fastpath
    from controller.classifier import MARKS
    from topology.model import TrafficClass
    return fastpath.pack_commit(xid, in_port, data, zone, int(MARKS[cls]),
                                send_on=cls is not TrafficClass.DROP)


def _minimal_controller(config: str, decisions: str = "conntrack"):
    """data, in_port -> what the minimal controller answers (see `--decisions`);
    nothing for a frame socketnet could not parse either."""
    from controller.classifier import Classifier, parse_ipv4
    from controller.compiler import conntrack_zone
    from topology.config import load_host

    host = load_host(config)
    decide = Classifier(host).decide
    zone = conntrack_zone(host, host.mesh)
    xids = iter(range(1, 1 << 32, 2))  # the timed answer takes xid and xid + 1

    if decisions == "conntrack":
        def answer(data: bytes, in_port: int) -> bytes:
            flow5 = parse_ipv4(data)
            if flow5 is None:
                return b""
            return commit_answer(next(xids), in_port, data, decide(flow5).cls, zone)
        return answer

    if decisions == "timed":
        timeouts = (TIMED_IDLE_TIMEOUT, TIMED_HARD_TIMEOUT)
    elif decisions == "untimed":
        timeouts = (0, 0)
    else:
        raise ValueError(f"decisions {decisions!r}: conntrack, timed or untimed")

    def answer(data: bytes, in_port: int) -> bytes:
        flow5 = parse_ipv4(data)
        if flow5 is None:
            return b""
        return timed_answer(next(xids), in_port, data,
                            timed_flow(flow5, decide(flow5).cls, *timeouts))
    return answer


def run(ifname, src_mac, dst_mac, dst_ip, dport, mode, window, rate, seconds, first,
        receive_netns=None, receive_ifname=None, sink_port=None, answer=None,
        decisions="conntrack", count=None) -> dict:
    if mode == "rate":
        count = int(rate * seconds)
    elif mode == "window" or count is None:
        count = 1 << 40
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
    keep_latencies = mode != "fill"  # a fill's are not wanted, and would be many
    while True:
        now = now_ns()
        if mode == "fill" and sent >= count and stop_sending > now:
            stop_sending = now  # all sent: what is in flight arrives or is lost
        if now >= stop_sending:
            if mode == "window" or not pending or now > stop_sending + 1_000_000_000:
                break
            due = 0
        elif mode != "rate":
            due = min(window - len(pending), count - sent)
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
            if sent_at >= measure_from and keep_latencies:
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


def serve(sink_port: int, answer: str, decisions: str) -> int:
    """The minimal controller in its own process: "ready" once listening,
    "connected" once Open vSwitch is, then it answers until the switch closes the
    connection or the process is killed."""
    sink = _Sink(sink_port, answer, decisions=decisions)
    print("ready", flush=True)
    sink.accept()
    print("connected", flush=True)
    fileno = sink.sock.fileno()
    try:
        while True:
            select.select([fileno], [], [])
            sink.seen()
    except ConnectionError:
        return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--serve" in argv:
        serving = argparse.ArgumentParser(prog="bench.traffic --serve")
        serving.add_argument("--serve", action="store_true")
        serving.add_argument("--sink-port", type=int, required=True)
        serving.add_argument("--answer", metavar="CONFIG", required=True)
        serving.add_argument("--decisions", choices=("conntrack", "timed", "untimed"),
                             default="conntrack")
        args = serving.parse_args(argv)
        return serve(args.sink_port, args.answer, args.decisions)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--src-mac", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--dst-ip", required=True)
    parser.add_argument("--dport", type=int, required=True)
    parser.add_argument("--mode", choices=("window", "rate", "fill"), required=True)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, required=True,
                        help="the run's length (fill: the longest it may take)")
    parser.add_argument("--count", type=int, help="fill: how many flows")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--receive-netns")
    parser.add_argument("--receive-ifname", default="eth0")
    parser.add_argument("--sink-port", type=int)
    parser.add_argument("--answer", metavar="CONFIG",
                        help="the sink answers as socketnet's core would, for this config "
                             "(needs --receive-netns: delivered packets count)")
    parser.add_argument("--decisions", choices=("conntrack", "timed", "untimed"),
                        default="conntrack",
                        help="with --answer: how the sink answers (see the module doc)")
    args = parser.parse_args(argv)
    if not args.receive_netns and not (args.sink_port and not args.answer):
        parser.error("--receive-netns, or --sink-port without --answer")
    if args.decisions != "conntrack" and not args.answer:
        parser.error("--decisions: only with --answer")
    if (args.mode == "fill") != (args.count is not None):
        parser.error("--count goes with --mode fill, and fill needs it")
    print(json.dumps(run(**vars(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
