"""A synthetic OpenFlow 1.3 switch: the mesh bridge without Open vSwitch, to load a
controller with packet-ins as fast as it can answer them.

`SyntheticSwitch(address, host).connect()` says HELLO, answers FEATURES_REQUEST
with a datapath id and every port-desc request with the mesh bridge's ports (its
LOCAL port named after the bridge, then the config's ports numbered from 1, as the
lab and `socketnet flows` number them), so socketnet recognises it as the mesh;
it answers flow-stats and meter-config requests (empty: it holds nothing), barriers,
echoes and bundle control (open, commit, discard) as Open vSwitch would. Once the
controller has been quiet for a moment (its pipeline sync done) it is `ready`.

Then it plays table 1's miss: PACKET_IN messages (table 1, the classify miss's
cookie, match in_port = the Netmaker adapter with the Netmaker zone's metadata),
each carrying the TCP SYN of a new 5-tuple from a Netmaker peer to the xray
client's service (bench/frames.py). It counts the answers: the first FlowMod whose
match names the flow's source and source port, or PacketOut carrying its frame
(socketnet answers with one PacketOut that commits the connection).

    throughput(seconds, window)  `window` packet-ins outstanding, each answer sends
                                 the next: answers/s and latency under load
    rate(per_second, seconds)    open loop at a fixed offered rate: latency p50/p99
    drive(count, window)         exactly `count` new flows (for the RSS bench)

Latency is packet-in written -> its answer read, on one clock in one process.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from bench import frames, stats
from bench import openflow as of
from controller.pipeline import CLASSIFY, Purpose, Zone
from topology.model import Host, Role

DPID = 0x534E_0000_0000_0001
MAX_READ = 1 << 18
# Messages that want no answer: hello, echo reply, set-config, packet-out,
# flow-mod, meter-mod (29), and experimenter messages other than bundle control.
_ONE_WAY = {of.OFPT_HELLO, of.OFPT_ECHO_REPLY, 9, of.OFPT_PACKET_OUT, of.OFPT_FLOW_MOD, 29,
            of.OFPT_EXPERIMENTER}


@dataclass
class Result:
    """What one run measured: answers (FlowMod received for a flow), PacketOuts,
    the seconds measured, and every answer's latency in seconds."""
    sent: int = 0
    answered: int = 0
    packet_outs: int = 0
    seconds: float = 0.0
    latencies: list = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in seconds (nearest rank); nan if none."""
        return stats.percentile(self.latencies, p, stats.NAN)


def mesh_ports(host: Host) -> list:
    """The mesh bridge's ports as a switch reports them: LOCAL (named after the
    bridge) and the config's ports from 1, with made-up MACs."""
    ports = [of.Port(of.OFPP_LOCAL, host.mesh.name, "02:fe:00:00:00:fe")]
    ports += [of.Port(n, p.name, f"02:fe:00:00:00:{n:02x}")
              for n, p in enumerate(host.mesh.ports, start=1)]
    return ports


class SyntheticSwitch:
    def __init__(self, address: tuple, host: Host, dpid: int = DPID, first_flow: int = 0):
        self.address = address
        self.ports = mesh_ports(host)
        uplink = host.mesh.one(Role.NETMAKER_UPLINK).name
        self.in_port = next(p for p in self.ports if p.name == uplink)
        xray = host.xray_client.container
        self.frame_args = (self.in_port.mac, xray.mac, str(xray.address), xray.services[0].port)
        self.dpid = dpid
        self.next_flow = first_flow
        self.sock = None
        self.reader = of.Reader()
        self.port_descs = 0
        self.unanswered = {}  # message type -> how many this switch could not answer
        self.last_control = 0.0
        self._pending = {}  # flow key -> time its packet-in was written
        self._xid = 0

    # --- connection -------------------------------------------------------------

    def connect(self, settle: float = 0.5, timeout: float = 20.0) -> "SyntheticSwitch":
        """Connect, answer the handshake and the pipeline sync, and return once the
        controller has sent nothing but echoes for `settle` seconds."""
        deadline = time.monotonic() + timeout
        while True:  # the controller logs "listening" a moment before it is
            try:
                self.sock = socket.create_connection(self.address, timeout=timeout)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(of.hello())
        self.last_control = time.monotonic()
        while True:
            now = time.monotonic()
            if self.port_descs and now - self.last_control >= settle:
                return self
            if now > deadline:
                raise TimeoutError(f"controller at {self.address} did not finish its sync "
                                   f"in {timeout}s (port-desc requests: {self.port_descs})")
            self._pump(timeout=0.05)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # --- what the controller sends ----------------------------------------------

    def _pump(self, timeout: float, result: Result = None) -> int:
        """Read what has arrived (waiting up to `timeout`), answer control messages,
        book answers to `result`; how many flows were answered."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(MAX_READ)
        except (socket.timeout, BlockingIOError):
            return 0
        if not data:
            raise ConnectionError("controller closed the connection")
        now = time.perf_counter()
        answered = 0
        replies = []
        pending = self._pending
        for msg_type, xid, msg in self.reader.feed(data):
            if msg_type in (of.OFPT_FLOW_MOD, of.OFPT_PACKET_OUT):
                # The first FlowMod (a flow per decision) or PacketOut (a commit to
                # the connection tracker) that names a flow answers it.
                packet_out = msg_type == of.OFPT_PACKET_OUT
                if packet_out and result is not None:
                    result.packet_outs += 1
                key = of.packet_out_key(msg) if packet_out else of.flow_mod_key(msg)
                sent = pending.pop(key, None)
                if sent is not None:
                    answered += 1
                    if result is not None:
                        result.answered += 1
                        result.latencies.append(now - sent)
                elif not packet_out:
                    self.last_control = time.monotonic()
            else:
                reply = self._control(msg_type, xid, msg)
                if reply:
                    replies.append(reply)
        if replies:
            self.sock.sendall(b"".join(replies))
        return answered

    def _control(self, msg_type: int, xid: int, msg: bytes):
        if msg_type == of.OFPT_ECHO_REQUEST:
            return of.echo_reply(xid, msg[8:])
        self.last_control = time.monotonic()
        if msg_type == of.OFPT_FEATURES_REQUEST:
            return of.features_reply(xid, self.dpid)
        if msg_type == of.OFPT_MULTIPART_REQUEST:
            kind = of.multipart_type(msg)
            if kind == of.OFPMP_PORT_DESC:
                self.port_descs += 1
                return of.port_desc_reply(xid, self.ports)
            return of.empty_multipart_reply(xid, kind)
        if msg_type == of.OFPT_BARRIER_REQUEST:
            return of.barrier_reply(xid)
        if msg_type == of.OFPT_ROLE_REQUEST:
            return of.role_reply(xid, *of.role_request(msg))
        if msg_type == of.OFPT_EXPERIMENTER:
            ctrl = of.bundle_ctrl(msg)
            if ctrl is not None:
                bundle_id, request_type, _flags = ctrl
                return of.bundle_ctrl_reply(xid, bundle_id, request_type)
        if msg_type not in _ONE_WAY:
            self.unanswered[msg_type] = self.unanswered.get(msg_type, 0) + 1
        return None

    # --- what it sends ------------------------------------------------------------

    def _packet_ins(self, count: int) -> bytes:
        """The next `count` flows' packet-ins; their send time is booked by the caller."""
        out = []
        for _ in range(count):
            i = self.next_flow
            self.next_flow += 1
            self._xid = (self._xid + 1) & 0xFFFFFFFF
            out.append(of.packet_in(self._xid, CLASSIFY.id, Purpose.CLASSIFY.cookie,
                                    self.in_port.number, frames.syn_frame(i, *self.frame_args),
                                    metadata=int(Zone.NETMAKER)))
        return b"".join(out)

    def _send(self, count: int, result: Result) -> None:
        first = self.next_flow
        data = self._packet_ins(count)
        now = time.perf_counter()
        for i in range(first, first + count):
            self._pending[frames.flow_source(i)] = now
        self.sock.sendall(data)
        result.sent += count

    def throughput(self, seconds: float, window: int = 512, warmup: float = 0.5) -> Result:
        """Keep `window` packet-ins outstanding for `warmup` + `seconds`; measure the
        last `seconds`."""
        self._pending.clear()
        result = Result()
        self._send(window, result)
        measuring = time.perf_counter() + warmup
        end = measuring + seconds
        measured = None
        while True:
            now = time.perf_counter()
            if measured is None and now >= measuring:
                measured = Result(sent=result.sent)
                result = measured
            if now >= end:
                break
            answered = self._pump(0.2, result)
            if answered:
                self._send(answered, result)
        result.seconds = time.perf_counter() - measuring
        self._drain()
        return result

    def drive(self, count: int, window: int = 512, timeout: float = 120.0) -> Result:
        """Exactly `count` new flows, `window` outstanding, until all are answered."""
        self._pending.clear()
        result = Result()
        self._send(min(window, count), result)
        start = time.perf_counter()
        while result.answered < count:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{result.answered} of {count} flows answered in {timeout}s")
            answered = self._pump(0.5, result)
            more = min(answered, count - result.sent)
            if more > 0:
                self._send(more, result)
        result.seconds = time.perf_counter() - start
        return result

    def rate(self, per_second: float, seconds: float) -> Result:
        """Open loop: flow n's packet-in is due at n / per_second; whatever is due
        is written at once. Answers still missing `seconds` + 1 s later are lost."""
        self._pending.clear()
        result = Result()
        start = time.perf_counter()
        total = int(per_second * seconds)
        while result.sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * per_second) + 1) - result.sent
            if due > 0:
                self._send(due, result)
            next_due = start + (result.sent) / per_second
            self._pump(max(0.0, next_due - time.perf_counter()), result)
        result.seconds = time.perf_counter() - start
        deadline = time.perf_counter() + 1.0
        while self._pending and time.perf_counter() < deadline:
            self._pump(0.05, result)
        return result

    def _drain(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Read and drop the answers still in flight, until `quiet` with none."""
        deadline = time.perf_counter() + timeout
        last = time.perf_counter()
        while self._pending and time.perf_counter() < deadline:
            if self._pump(0.05):
                last = time.perf_counter()
            elif time.perf_counter() - last > quiet:
                break
        self._pending.clear()
