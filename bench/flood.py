"""A flood of Netmaker sources, with and without each of socketnet's two defences.

    sudo .venv/bin/python -m bench.flood [--seconds 20] [--tries 12] [--compare policing|share]

Runs the same flood twice, each in a fresh world of the seed (topology/labs/world.py).
`--compare policing` (the default): first with host apply's `netmaker_new` chain
emptied (ingress_rate and ingress_per_source 0: what a host without the policing
has), then with the config's policing. `--compare share`: policing on both
times, first with the decisions of sources that are not known as good as
uncapped (cached_unknown 10,000,000), then with the seed's cached_unknown: run it
longer than cached_unknown / packet_in_rate seconds (--seconds 60 --tries 110). Each run: the relay sends TCP SYNs from random sources of its
clients' range and random ports to the xray client, unthrottled (one core of
Python, then real WireGuard, decide the rate); after 3 s the droplet, a known
source, opens a connection to the xray client every half second (each given 1 s);
REST health is asked all along. Reported per run, and as ratios: how many of the
droplet's connections made it within 1 s and how long they took, REST health
p50/p99, what the host received on nm-privacy, what its policing dropped, what
was dropped at the mesh adapter's queue into ovs-vswitchd (the kernel's tx drops
on the adapter), the controller's decisions and the packet-in meter's drops.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Optional

import yaml

from bench import stats
from topology.model import Role

SEED = Path(__file__).resolve().parents[1] / "topology" / "seed.yaml"
# WireGuard datagrams a second one Netmaker peer may send (limits.ingress_peer_rate)
# in this lab: below what the host's wireguard-go decrypts in all, about 25,000 a
# second on 2 cores, so that the relay's flood leaves room for the droplet.
LAB_PEER_RATE = 8_000

# TCP SYNs from random sources of NET/BITS and random ports to DST:PORT, sent
# through the routes of the netns it runs in, for SECONDS, unthrottled; prints
# how many the kernel took. Checksums are right: conntrack must see real SYNs.
FLOOD = textwrap.dedent("""
    import random, socket, struct, sys, time
    net, bits, dst, port, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
        int(sys.argv[4]), float(sys.argv[5])
    base = struct.unpack("!I", socket.inet_aton(net))[0]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst_ip = socket.inet_aton(dst)
    def checksum(b, n):
        t = sum(struct.unpack(f"!{n}H", b))
        t = (t & 0xFFFF) + (t >> 16)
        return ~((t & 0xFFFF) + (t >> 16)) & 0xFFFF
    sent, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        for _ in range(200):
            src = struct.pack("!I", base + random.randrange(1, (1 << bits) - 1))
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, src, dst_ip)
            ip = ip[:10] + struct.pack("!H", checksum(ip, 10)) + ip[12:]
            tcp = struct.pack("!HHIIBBHHH", random.randrange(1024, 65535), port, 1, 0, 0x50,
                              0x02, 64240, 0, 0)
            pseudo = src + dst_ip + struct.pack("!HH", 6, 20)
            tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp, 16)) + tcp[18:]
            try:
                s.sendto(ip + tcp, (dst, 0))
                sent += 1
            except OSError:  # the tunnel's queue is full: the lab's ceiling
                pass
    print(sent)
""")

# One TCP connection to ADDRESS:PORT within TIMEOUT s; prints the seconds it took.
CONNECT = textwrap.dedent("""
    import socket, sys, time
    started = time.monotonic()
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(f"{time.monotonic() - started:.4f}")
""")


def flood(world, seconds: float) -> subprocess.Popen:
    """The flood from the world's relay to the xray client's first service."""
    xray = world.host.xray_client.container
    return subprocess.Popen(
        ["ip", "netns", "exec", world.ns("relay"), sys.executable, "-c", FLOOD,
         str(world.clients.network), str(32 - world.clients.prefixlen), str(xray.address),
         str(xray.services[0].port), str(seconds)], stdout=subprocess.PIPE, text=True)


def connect(world, where: str, timeout: float) -> Optional[float]:
    """Seconds a connection from `where` to the xray client's service took, or None."""
    xray = world.host.xray_client.container
    proc = world.exec(where, "python3", "-c", CONNECT, str(xray.address),
                      str(xray.services[0].port), str(timeout), timeout=timeout + 5)
    return float(proc.stdout.split()[0]) if proc.returncode == 0 else None


def metric(url: str, name: str, **labels) -> float:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


# host apply's policing counters: new flows (known sources, one source, all), and
# one Netmaker peer's WireGuard datagrams
POLICING_COUNTERS = ("ingress_known_over", "ingress_source_over", "ingress_over",
                     "netmaker_peer_over")


def host_counters(world) -> dict:
    """The host's ingress policing counters (host apply's nftables), 0 if absent."""
    doc = json.loads(world.exec("host", "nft", "-j", "list", "counters", "table", "inet",
                                "socketnet", check=True).stdout)
    found = {item["counter"]["name"]: item["counter"]["packets"]
             for item in doc["nftables"] if "counter" in item}
    return {name: found.get(name, 0) for name in POLICING_COUNTERS}



def link_counters(world, where: str, name: str) -> dict:
    doc = json.loads(world.exec(where, "ip", "-s", "-j", "link", "show", name,
                                check=True).stdout)[0]["stats64"]
    return {"rx": doc["rx"]["packets"], "tx_dropped": doc["tx"]["dropped"]}


class HealthAsker:
    """GET /v1/health every 50 ms in a thread; the latencies, and failures."""

    def __init__(self, url: str):
        self.url, self.latencies, self.failures = url, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
                self.latencies.append(time.monotonic() - started)
            except OSError:
                self.failures += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def percentile(self, p: float) -> Optional[float]:
        return stats.percentile(self.latencies, p)


def policing(world, on: bool) -> None:
    """Load host apply's nftables for the world's host, its policing on or off."""
    from topology.host.nft import nft_script
    host = world.host
    if not on:
        limits = replace(host.classification.limits, ingress_rate=0, ingress_per_source=0,
                         ingress_peer_rate=0)
        host = replace(host, classification=replace(host.classification, limits=limits))
    world.exec("host", "nft", "-f", "-", input=nft_script(host, world.warp_address)[0],
               check=True)


def snapshot(world) -> dict:
    """The counters a run is judged by, now."""
    ctl = world.controllers["host"]
    uplink = world.host.mesh.one(Role.NETMAKER_UPLINK)
    return {"host": host_counters(world),
            "nm": link_counters(world, "host", uplink.interface),
            "adapter": link_counters(world, "host", uplink.name),
            "decisions": metric(ctl.metrics_url, "socketnet_classifier_decisions_total"),
            "meter": metric(ctl.metrics_url, "socketnet_meter_dropped_packets_total",
                            meter="packet-in"),
            "rss": stats.rss_kib(ctl.pid)}


def run(world, seconds: float, tries: int) -> dict:
    ctl = world.controllers["host"]
    before = snapshot(world)
    times = []
    with HealthAsker(f"{ctl.rest_url}/v1/health") as health:
        proc = flood(world, seconds)
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)  # pacing: the flood's first seconds, before the probes
            for _ in range(tries):
                if proc.poll() is not None:
                    break
                started = time.monotonic()
                times.append(connect(world, "droplet", 1.0))
                time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))  # pacing
            sent = int(proc.communicate(timeout=seconds + 30)[0])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = snapshot(world)
    made = [t for t in times if t is not None]
    return {
        "sent_per_s": sent / seconds,
        "received_per_s": (after["nm"]["rx"] - before["nm"]["rx"]) / seconds,
        "peer_policed": after["host"]["netmaker_peer_over"]
        - before["host"]["netmaker_peer_over"],
        "policed": sum(after["host"][k] - before["host"][k] for k in POLICING_COUNTERS[:3]),
        "adapter_dropped": after["adapter"]["tx_dropped"] - before["adapter"]["tx_dropped"],
        "decisions": after["decisions"] - before["decisions"],
        "meter_dropped": after["meter"] - before["meter"],
        "connected": len(made), "tries": len(times),
        "connect_p50": sorted(made)[len(made) // 2] if made else None,
        "connect_max": max(made) if made else None,
        "health_p50": health.percentile(50), "health_p99": health.percentile(99),
        "health_failures": health.failures,
        "rss_mb": (before["rss"] / 1024, after["rss"] / 1024),
    }


def _ms(value) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def report(without: tuple, with_: tuple) -> str:
    """The two runs side by side: (column name, run) each."""
    (off_label, off), (on_label, on) = without, with_
    def ratio(a, b):
        return "-" if not a or b is None else f"{b / a:.2f}x"
    rows = [
        ("flood offered by the relay, SYNs/s", f"{off['sent_per_s']:,.0f}",
         f"{on['sent_per_s']:,.0f}", ratio(off["sent_per_s"], on["sent_per_s"])),
        ("received on nm-privacy, packets/s", f"{off['received_per_s']:,.0f}",
         f"{on['received_per_s']:,.0f}", ratio(off["received_per_s"], on["received_per_s"])),
        ("WireGuard datagrams cut, the relay's peer", f"{off['peer_policed']:,}",
         f"{on['peer_policed']:,}", ""),
        ("new flows cut by the host's policing", f"{off['policed']:,}", f"{on['policed']:,}",
         ""),
        ("dropped at the mesh adapter's queue", f"{off['adapter_dropped']:,}",
         f"{on['adapter_dropped']:,}", ""),
        ("droplet connections made within 1 s", f"{off['connected']}/{off['tries']}",
         f"{on['connected']}/{on['tries']}", ""),
        ("droplet connect ms, p50 / max", f"{_ms(off['connect_p50'])} / {_ms(off['connect_max'])}",
         f"{_ms(on['connect_p50'])} / {_ms(on['connect_max'])}", ""),
        ("REST health ms, p50 / p99", f"{_ms(off['health_p50'])} / {_ms(off['health_p99'])}",
         f"{_ms(on['health_p50'])} / {_ms(on['health_p99'])}",
         ratio(off["health_p99"], on["health_p99"])),
        ("controller decisions", f"{off['decisions']:,.0f}", f"{on['decisions']:,.0f}",
         ratio(off["decisions"], on["decisions"])),
        ("packet-in meter drops", f"{off['meter_dropped']:,.0f}", f"{on['meter_dropped']:,.0f}",
         ""),
        ("controller VmRSS MB, before -> after",
         "{:.0f} -> {:.0f}".format(*off["rss_mb"]), "{:.0f} -> {:.0f}".format(*on["rss_mb"]), ""),
    ]
    head = ("measure", off_label, on_label, "ratio")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


# What a comparison varies: (column name, policing on, cached_unknown or None for
# the seed's) for the run without, then the run with.
COMPARISONS = {
    "policing": (("policing off", False, None), ("policing on", True, None)),
    "share": (("no share cap", True, 10_000_000), ("cached_unknown", True, None)),
}


def config_file(directory: str, cached_unknown: Optional[int]) -> str:
    data = yaml.safe_load(SEED.read_text())
    data["socketnet"]["metrics"] = {"stats_interval": 1}
    data["socketnet"]["classification"]["limits"]["ingress_peer_rate"] = LAB_PEER_RATE
    if cached_unknown is not None:
        limits = data["socketnet"]["classification"]["limits"]
        limits["cached_unknown"] = cached_unknown
        limits["cached_total"] = max(limits["cached_total"], cached_unknown)
    path = os.path.join(directory, f"seed-{cached_unknown}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of each flood (default 20)")
    parser.add_argument("--tries", type=int, default=12,
                        help="droplet connections per flood, one every 0.5 s (default 12)")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="policing",
                        help="policing: the host's ingress policing off, then on (default); "
                             "share: policing on, decisions of sources not known uncapped, "
                             "then capped at the seed's cached_unknown")
    args = parser.parse_args(argv)
    from topology.labs.world import World
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="snflood-") as tmp:
        for i, (label, on, cached_unknown) in enumerate(COMPARISONS[args.compare]):
            # each in a world of its own: nothing carried over
            with World(config_file(tmp, cached_unknown), f"flood{os.getpid()}{i}",
                       state_root=os.path.join(tmp, "labs")) as w:
                policing(w, on)
                print(f"[{time.monotonic() - started:5.1f}s] flood, {label}", file=sys.stderr,
                      flush=True)
                results.append((label, run(w, args.seconds, args.tries)))
    print(report(*results))
    print(f"machine: {os.cpu_count()} cores; bench took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
