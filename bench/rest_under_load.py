"""Is the REST API responsive while the controller is busy with packet-ins?

    sudo python -m bench.rest_under_load [--seconds 5] [--window 512] [--json]

Runs `socketnet run` (the seed's config with the classifier's caps raised, as
bench/classifier.py does; REST on a free port) with the synthetic
mesh switch of bench/synthetic.py attached, then measures, each for `--seconds`:

  1. REST latency idle: a client asking in a loop, one request at a time;
  2. packet-in throughput alone (closed loop, `--window` outstanding);
  3. both at once: REST latency under that load, and the throughput left.

The requests: GET /v1/health (no switch involved), GET /v1/switches (shared
state), GET /v1/switches/mesh/flows?table=0 (a flow-stats round trip to the
switch, through the same connection the packet-ins use) and POST /v1/classify.
Latency is measured in the bench process, request written -> answer read.
The synthetic switch is not metered: this is more packet-in load than a real
mesh bridge lets through (its meter caps it at packet_in_rate).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import multiprocessing
import queue
import time

import requests

from bench.classifier import bench_config
from bench.stats import NAN, percentile
from bench.synthetic import SyntheticSwitch
from controller.process import ControllerProcess, free_port
from topology.config import load_host

TOKEN = "bench-token"
REQUESTS = (
    ("GET", "/v1/health", None),
    ("GET", "/v1/switches", None),
    ("GET", "/v1/switches/mesh/flows?table=0", None),
    ("POST", "/v1/classify", {"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "tcp",
                              "dport": 8080}),
)


def _ask(base, stopping, results):
    """The poller's loop, in a process of its own (so the bench's GIL does not slow
    the synthetic switch): ask the API until `stopping`, put the latencies."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    latencies = {path: [] for _, path, _ in REQUESTS}
    failures = []
    while not stopping.is_set():
        for method, path, body in REQUESTS:
            started = time.perf_counter()
            try:
                r = session.request(method, base + path, json=body, timeout=10)
                if r.status_code != 200:
                    failures.append(f"{path}: {r.status_code}")
            except requests.RequestException as exc:
                failures.append(f"{path}: {exc}")
                continue
            latencies[path].append(time.perf_counter() - started)
    results.put((latencies, failures))


class Poller:
    """Asks the API in a loop, from a child process, until stopped."""

    def __init__(self, base):
        ctx = multiprocessing.get_context("fork")
        self.stopping = ctx.Event()
        self.results = ctx.Queue()
        self.process = ctx.Process(target=_ask, args=(base, self.stopping, self.results),
                                   daemon=True)
        self.latencies, self.failures = {}, []

    def start(self):
        self.process.start()

    def stop(self, switch):
        """Stop asking; keep the switch answering until the last request is back
        (a flow-stats request needs the switch's reply)."""
        self.stopping.set()
        while True:
            try:
                self.latencies, self.failures = self.results.get_nowait()
                break
            except queue.Empty:
                switch.throughput(0.05, window=0, warmup=0)
        self.process.join()

    def summary(self) -> dict:
        return {path: {"requests": len(v), "p50_ms": round(percentile(v, 50, NAN) * 1000, 2),
                       "p99_ms": round(percentile(v, 99, NAN) * 1000, 2),
                       "max_ms": round(max(v) * 1000, 2) if v else None}
                for path, v in self.latencies.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    # The classifier's caps raised as bench/classifier.py does: the synthetic switch
    # never expires a decision, and the default cap (100,000) would be reached.
    workdir = tempfile.TemporaryDirectory()
    config = bench_config(workdir.name)
    host = load_host(config)
    rest_port = free_port()
    os.environ["SOCKETNET_TOKEN"] = TOKEN
    ctl = ControllerProcess(config,
                            extra_args=("--rest-listen", f"127.0.0.1:{rest_port}"))
    base = f"http://127.0.0.1:{rest_port}"
    results = {"seconds": args.seconds, "window": args.window}
    try:
        ctl.start()
        switch = SyntheticSwitch(("127.0.0.1", ctl.port), host).connect()
        # Idle: the switch only answers the controller (window 0: no packet-ins).
        poller = Poller(base)
        poller.start()
        switch.throughput(args.seconds, window=0, warmup=0)
        poller.stop(switch)
        results["idle"] = poller.summary()

        alone = switch.throughput(args.seconds, args.window)
        results["packet_ins_alone_per_s"] = round(alone.per_second)

        poller = Poller(base)
        poller.start()
        loaded = switch.throughput(args.seconds, args.window)
        poller.stop(switch)
        results["under_load"] = poller.summary()
        results["packet_ins_with_rest_per_s"] = round(loaded.per_second)
        results["packet_in_p99_ms_with_rest"] = round(loaded.percentile(99) * 1000, 2)
        results["failures"] = poller.failures[:10]
        switch.close()
    finally:
        ctl.stop()
        workdir.cleanup()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"packet-ins answered/s: {results['packet_ins_alone_per_s']} alone, "
          f"{results['packet_ins_with_rest_per_s']} with the REST client asking "
          f"(window {args.window}, {args.seconds:g} s each)")
    print(f"{'request':<40} {'idle p50/p99 ms':>18} {'loaded p50/p99/max ms':>26} {'n':>6}")
    for _, path, _ in REQUESTS:
        idle, busy = results["idle"][path], results["under_load"][path]
        print(f"{path:<40} {idle['p50_ms']:>8}/{idle['p99_ms']:<9} "
              f"{busy['p50_ms']:>8}/{busy['p99_ms']}/{busy['max_ms']:<8} {busy['requests']:>6}")
    if results["failures"]:
        print("failures:", *results["failures"], sep="\n  ")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
