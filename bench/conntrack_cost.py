"""What the connection tracker costs established traffic on the W1 path.

`sudo .venv/bin/python -m bench.conntrack_cost [--megabytes N] [--round-trips N]
[--rounds N]`: in a lab of the seed's bridges (userspace Open vSwitch, socketnet
attached), a Netmaker peer (the lab host's netns, as in the classification tests)
talks TCP to the xray client's service over W1 and W3:

- throughput: N MB sent, timed until the server says it has them all;
- round trip: N one-byte request/answer exchanges on an open connection (p50, p99).

Each round runs both, once through socketnet's pipeline (every packet through the
tracker: mesh table 1, vmbr0's zone, W3's replies both ways), once for a connection
whose packets skip it: flows of the bench's own (cookie 0, which socketnet's
reconciler never touches), above socketnet's, do for that one 5-tuple what the
tracked flows do, without the tracker. Same lab, same run; the ratios are what
to read.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

from controller.compiler import SwitchPort, compile_bridge
from controller.flow import CT, ETH_TYPE_IP, IPPROTO_TCP, Apply, Flow
from controller.pipeline import Mark
from topology.labs.lab import HOST, Lab
from topology.model import Role

PEER = "10.101.0.5"
PRIORITY_ABOVE = 1000

SERVER = textwrap.dedent("""
    import socket, sys, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
    print("listening", flush=True)
    def serve(c):
        kind = c.recv(1)
        if kind == b"T":
            total = 0
            while True:
                data = c.recv(1 << 16)
                if not data:
                    break
                total += len(data)
            c.sendall(str(total).encode())
        else:
            while True:
                data = c.recv(1)
                if not data:
                    break
                c.sendall(data)
        c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys, time
    src, dst, port, sport, megabytes, trips = sys.argv[1:7]
    def connect(sport):
        c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind((src, int(sport))); c.settimeout(20); c.connect((dst, int(port)))
        return c
    c = connect(sport)
    c.sendall(b"T")
    block, size = b"x" * (1 << 16), int(float(megabytes) * (1 << 20))
    started = time.perf_counter()
    sent = 0
    while sent < size:
        c.sendall(block); sent += len(block)
    c.shutdown(socket.SHUT_WR)
    got = int(c.recv(64))
    seconds = time.perf_counter() - started
    c.close()
    c = connect(int(sport) + 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"R")
    rtts = []
    for _ in range(int(trips)):
        t = time.perf_counter(); c.sendall(b"."); c.recv(1); rtts.append(time.perf_counter() - t)
    c.close()
    rtts.sort()
    print(json.dumps({"mbit_s": got * 8 / seconds / 1e6, "received": got, "sent": sent,
                      "rtt_p50_ms": rtts[len(rtts) // 2] * 1e3,
                      "rtt_p99_ms": rtts[int(len(rtts) * 0.99)] * 1e3}))
""")


def untracked_copies(host, bridge: str, live: dict, forward: tuple) -> list:
    """For one connection (`forward`: src, sport, dst, dport), the flows that carry
    it as socketnet's tracked flows do, without the tracker: each flow of a
    tracked state that sends the packet somewhere, its match without ct_* and
    with the connection's 5-tuple (reversed for a reply state), its actions
    without ct. Only the privacy class's: the connection is W1's.""" 
    src, sport, dst, dport = forward
    out = []
    for f in compile_bridge(host, bridge, live):
        match = f.match_dict
        if "ct_zone" not in match or not f.instructions:
            continue
        if match.get("ct_mark", int(Mark.PRIVACY)) != int(Mark.PRIVACY):
            continue  # another class's path: not this connection's
        reply = "ct_state" in match and match["ct_state"][0] & 0x08  # +rpl
        a, ap, b, bp = (dst, dport, src, sport) if reply else (src, sport, dst, dport)
        fields = {k: v for k, v in match.items() if not k.startswith("ct_")}
        fields.update(eth_type=ETH_TYPE_IP, ip_proto=IPPROTO_TCP, ipv4_src=a, ipv4_dst=b,
                      tcp_src=ap, tcp_dst=bp)
        fields.pop("udp_src", None), fields.pop("udp_dst", None)
        instructions = []
        for ins in f.instructions:
            if isinstance(ins, Apply):
                ins = Apply(tuple(x for x in ins.actions if not isinstance(x, CT)))
            instructions.append(ins)
        out.append(Flow.make(f.table, f.priority + PRIORITY_ABOVE, fields, instructions, 0))
    return sorted(set(out))  # one per Netmaker range would be the same flow


def _live(lab, bridge: str) -> dict:
    return {name: SwitchPort(number, name, lab.ovs.vsctl(
        "get", "Interface", name, "mac_in_use").strip().strip('"'))
        for name, number in lab.port_numbers(bridge).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.conntrack_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="examples/seed.yaml")
    parser.add_argument("--megabytes", type=float, default=64.0)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    from controller.process import ControllerProcess
    from topology.config import load_host

    host = load_host(args.config)
    xray = host.xray_client.container
    service = xray.services[0].port
    uplink = host.mesh.one(Role.NETMAKER_UPLINK).name
    lab = Lab(host, f"ctcost{__import__('os').getpid()}")
    ctl = None
    procs = []
    results = {"tracked": [], "untracked": []}
    try:
        lab.up()
        ctl = ControllerProcess(args.config).start()
        lab.attach(ctl.target)
        ctl.wait_synced([b.name for b in host.bridges])
        lab.exec(HOST, "ip", "addr", "add", f"{PEER}/32", "dev", uplink, check=True)
        lab.exec(HOST, "ip", "route", "add", f"{xray.address}/32", "dev", uplink, check=True)
        lab.exec(HOST, "sysctl", "-qw", f"net.ipv4.conf.{uplink}.arp_announce=2", check=True)
        server = lab.popen(xray.id, "python3", "-c", SERVER, str(xray.address), str(service),
                           stdout=subprocess.PIPE, text=True)
        procs.append(server)
        assert server.stdout.readline().strip() == "listening"
        for r in range(args.rounds):
            for kind in ("tracked", "untracked"):
                sport = 46000 + r * 10 + (4 if kind == "untracked" else 0)
                if kind == "untracked":
                    for bridge in (b.name for b in host.bridges):
                        live = _live(lab, bridge)
                        names = {sp.number: name for name, sp in live.items()}
                        lines = [f.ofctl(names) for port in (sport, sport + 1)
                                 for f in untracked_copies(host, bridge, live,
                                                           (PEER, port, str(xray.address),
                                                            service))]
                        lab.ovs.add_flows(bridge, lines)
                out = lab.exec(HOST, "python3", "-c", CLIENT, PEER, str(xray.address),
                               str(service), str(sport), str(args.megabytes),
                               str(args.round_trips), check=True, timeout=300).stdout
                results[kind].append(json.loads(out.strip().splitlines()[-1]))
                print(f"round {r + 1} {kind}: {results[kind][-1]}", file=sys.stderr)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if ctl is not None:
            ctl.stop()
        lab.down()
    summary = {}
    for key in ("mbit_s", "rtt_p50_ms", "rtt_p99_ms"):
        t = sorted(x[key] for x in results["tracked"])[len(results["tracked"]) // 2]
        u = sorted(x[key] for x in results["untracked"])[len(results["untracked"]) // 2]
        summary[key] = {"tracked": round(t, 3), "untracked": round(u, 3),
                        "tracked/untracked": round(t / u, 3) if u else None}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
