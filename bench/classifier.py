"""The classifier bench: socketnet's new-flow setups/s, first-packet latency and memory.

socketnet's packet-in path, measured against Open vSwitch's own ceilings and a
plain os-ken learning switch in the same run.

    sudo .venv/bin/python -m bench.classifier                  everything, a few minutes
    sudo .venv/bin/python -m bench.classifier --skip-synthetic  (a) only
    sudo .venv/bin/python -m bench.classifier --skip-ovs       (b) and (c) only
    sudo .venv/bin/python -m bench.classifier --profile DIR    and py-spy both controllers

(a) real Open vSwitch (bench/real_ovs.py), each phase in a fresh lab: socketnet;
    a minimal controller (socketnet's pure core, struct-packed, no os-ken) that
    answers exactly as socketnet does, through the connection tracker (inside the
    traffic process, and again in a process of its own, as socketnet is); the same
    controller answering with a timed table-1 flow per decision (the classifier's
    design before conntrack); Open vSwitch's packet-in ceiling (a do-nothing sink);
    the timed answers without timeouts; the baseline; and socketnet again with
    1,000 and 100,000 live decisions in its zone (setups/s, VmRSS). socketnet and
    both minimal controllers and the ceiling run --repeat times each, in turn;
    medians reported, and each round's ratios.
(b) synthetic switch (bench/synthetic.py), no Open vSwitch: throughput with many
    packet-ins outstanding, latency one at a time and at a fixed 5,000 new flows/s;
    socketnet, then the baseline (bench/simple_switch.py, bench/baseline.py).
(c) socketnet's VmRSS after 100,000 distinct flows through (b), in a fresh process.

socketnet runs the seed's config (examples/seed.yaml) with the classification
limits raised (cached_total, cached_per_source and cached_unknown 10,000,000, the
packet-in meter 10,000,000/s) so that neither a cap nor the meter shapes the
result; the baseline has no config. It prints one table; targets are reported as
PASS or FAIL, never asserted. Needs root (the labs); with --skip-ovs it runs
without.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import processes
from bench.synthetic import Result, SyntheticSwitch
from topology.config import load_host

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed.yaml"
LIMITS = {"cached_total": 10_000_000, "cached_per_source": 10_000_000,
          "cached_unknown": 10_000_000,
          "packet_in_rate": 10_000_000, "packet_in_burst": 100_000}
RSS_FLOWS = 100_000
FIXED_RATE = 5_000

LIVE_DECISIONS = (1_000, 100_000)

# Targets: reported pass/fail, never asserted.
# (a), real Open vSwitch: socketnet's setups/s against the packet-in ceiling, the
# timed design's minimal controller and the conntrack design's; its first-packet
# p99 at FIXED_RATE.
OVS_CEILING_SHARE = 0.25
TIMED_FACTOR = 3.0
CONNTRACK_SHARE = 0.90
OVS_P99_AT_FIXED_RATE = 2e-3
# (b) and (c), the synthetic switch; RSS also at 100,000 live decisions in (a).
BASELINE_FACTOR = 5.0
P99_AT_FIXED_RATE = 1e-3
RSS_LIMIT_MB = 150


def bench_config(directory: str) -> str:
    data = yaml.safe_load(SEED.read_text())
    data["socketnet"]["classification"]["limits"].update(LIMITS)
    path = os.path.join(directory, "bench.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


# --- (b) and (c): the synthetic switch ---------------------------------------------


def synthetic(which: str, config: str, host, seconds: float, profile_dir=None) -> dict:
    child = processes.socketnet(config) if which == "socketnet" else processes.baseline()
    child.start()
    spy = None
    try:
        switch = SyntheticSwitch(("127.0.0.1", child.port), host).connect()
        if which == "socketnet":
            child.wait_synced(["mesh"], timeout=10)
        out = {}
        if profile_dir:
            spy = _py_spy(child.pid, profile_dir, which, seconds + 0.5)
        out["throughput"] = switch.throughput(seconds, window=512)
        if spy is not None:
            spy.wait(timeout=30)
        out["one"] = switch.throughput(min(seconds, 2.0), window=1, warmup=0.2)
        out["fixed"] = switch.rate(FIXED_RATE, seconds)
        out["rss_kib"] = child.rss_kib()
        out["unanswered"] = dict(switch.unanswered)
        switch.close()
        return out
    finally:
        child.stop()


def rss_after(config: str, host, flows: int) -> dict:
    child = processes.socketnet(config).start()
    try:
        switch = SyntheticSwitch(("127.0.0.1", child.port), host).connect()
        child.wait_synced(["mesh"], timeout=10)
        before = child.rss_kib()
        result = switch.drive(flows)
        time.sleep(0.5)  # let the last answers' garbage go
        after = child.rss_kib()
        switch.close()
        return {"before_kib": before, "after_kib": after, "answered": result.answered,
                "seconds": result.seconds}
    finally:
        child.stop()


def _py_spy(pid: int, directory: str, name: str, seconds: float):
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        print(f"py-spy not found ({spy}): no profile", file=sys.stderr)
        return None
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, f"{name}.txt")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration",
                             str(int(math.ceil(seconds))), "--rate", "500", "--format", "raw",
                             "--output", out, "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- the table ----------------------------------------------------------------------


def _ms(seconds) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.2f}"


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _verdict(ok) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def table(rows: list) -> str:
    """rows: (measure, socketnet, baseline, ratio, target, verdict) as strings."""
    heads = ("measure", "socketnet", "baseline", "socketnet/baseline", "target", "result")
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, rows)])


def _share(a, b) -> str:
    return f"{a / b:.0%}" if a and b else "-"


def _median(values: list):
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def _synthetic_rows(b: dict, rss: dict) -> list:
    s, base = b["socketnet"], b["baseline"]
    rows = []
    st: Result = s["throughput"]
    bt: Result = base["throughput"]
    rows.append(("(b) setups/s, 512 outstanding", f"{st.per_second:,.0f}", f"{bt.per_second:,.0f}",
                 _ratio(st.per_second, bt.per_second), f">= {BASELINE_FACTOR:g}x baseline",
                 _verdict(st.per_second >= BASELINE_FACTOR * bt.per_second)))
    rows.append(("(b) latency p50/p99 ms, 512 outstanding",
                 f"{_ms(st.percentile(50))} / {_ms(st.percentile(99))}",
                 f"{_ms(bt.percentile(50))} / {_ms(bt.percentile(99))}", "", "", ""))
    so, bo = s["one"], base["one"]
    rows.append(("(b) latency p50/p99 ms, one at a time",
                 f"{_ms(so.percentile(50))} / {_ms(so.percentile(99))}",
                 f"{_ms(bo.percentile(50))} / {_ms(bo.percentile(99))}",
                 _ratio(bo.percentile(50), so.percentile(50)) + " faster p50", "", ""))
    sf, bf = s["fixed"], base["fixed"]
    rows.append((f"(b) latency p50/p99 ms at {FIXED_RATE:,}/s",
                 f"{_ms(sf.percentile(50))} / {_ms(sf.percentile(99))}",
                 f"{_ms(bf.percentile(50))} / {_ms(bf.percentile(99))}",
                 _ratio(bf.percentile(99), sf.percentile(99)) + " lower p99",
                 f"p99 <= {P99_AT_FIXED_RATE * 1e3:g} ms",
                 _verdict(sf.percentile(99) <= P99_AT_FIXED_RATE)))
    rows.append((f"(b) answered at {FIXED_RATE:,}/s",
                 f"{sf.answered:,}/{sf.sent:,}", f"{bf.answered:,}/{bf.sent:,}", "", "", ""))
    rows.append(("(b) PacketOuts per answer (throughput)",
                 f"{st.packet_outs / st.answered:.2f}" if st.answered else "-",
                 f"{bt.packet_outs / bt.answered:.2f}" if bt.answered else "-", "", "", ""))
    if rss:
        mb = rss["after_kib"] / 1024
        rows.append((f"(c) VmRSS MB, {rss['answered']:,} decisions cached",
                     f"{mb:.1f} (idle {rss['before_kib'] / 1024:.1f})", "", "",
                     f"<= {RSS_LIMIT_MB} MB", _verdict(mb <= RSS_LIMIT_MB)))
    rows.append(("(b) VmRSS MB after the (b) runs", f"{s['rss_kib'] / 1024:.1f}",
                 f"{base['rss_kib'] / 1024:.1f}", "", "", ""))
    return rows


def _ovs_rows(ovs: dict) -> list:
    so, ct, ti, ce, bo = (ovs[k] for k in ("socketnet", "conntrack", "timed", "ceiling",
                                             "baseline"))
    al = ovs.get("alone")
    rounds = ovs.get("rounds") or []
    rows = [("(a) OVS packet-ins/s to a do-nothing sink (ceiling)", f"{ce.per_second:,.0f}",
             "", "", "", "")]
    rows.append(("(a) OVS setups/s, minimal controller, timed flows", f"{ti.per_second:,.0f}",
                 "", "", "", ""))
    un = ovs.get("untimed")
    if un is not None:
        rows.append(("(a) same, flows without timeouts", f"{un.per_second:,.0f}", "",
                     _ratio(un.per_second, ti.per_second) + " timed", "", ""))
    rows.append(("(a) OVS setups/s, minimal controller, conntrack", f"{ct.per_second:,.0f}", "",
                 _ratio(ct.per_second, ti.per_second) + " timed",
                 f"({_share(ct.per_second, ce.per_second)} of the packet-in ceiling)", ""))
    if al is not None:
        rows.append(("(a) same, the minimal controller in its own process",
                     f"{al.per_second:,.0f}", "", _ratio(al.per_second, ct.per_second)
                     + " in-process", "", ""))
    rows.append((f"(a) OVS setups/s delivered, {so.window} in flight", f"{so.per_second:,.0f}",
                 f"{bo.per_second:,.0f}", _ratio(so.per_second, bo.per_second), "", ""))

    def against(other: str, what: str, target: float, fmt: str) -> None:
        """A row: socketnet's setups over `other`'s, the median of the rounds (and
        each round's), against `target`, written with `fmt`."""
        ratios = [r["socketnet"] / r[other] for r in rounds if r.get(other)]
        median = _median(ratios)
        shown = fmt.format(target) if fmt.endswith("%}") else f"{target:g}x"
        rows.append((f"(a) socketnet / {what} (median of rounds)",
                     fmt.format(median) if median is not None else "-", "",
                     "rounds: " + ", ".join(fmt.format(x) for x in ratios)
                     if len(ratios) > 1 else "",
                     f">= {shown}", _verdict(None if median is None else median >= target)))
    against("ceiling", "packet-in ceiling", OVS_CEILING_SHARE, "{:.0%}")
    against("timed", "timed minimal", TIMED_FACTOR, "{:.2f}x")
    against("conntrack", "conntrack minimal", CONNTRACK_SHARE, "{:.0%}")
    if al is not None:
        against("alone", "minimal in its own process", CONNTRACK_SHARE, "{:.0%}")

    # socketnet's first-packet latency: the medians of the rounds' p50 and p99; a
    # round that lost a first packet counts as over the target.
    timely = [r for r in rounds if r.get("p99") is not None]
    p50, p99 = (_median([r[k] for r in timely]) for k in ("p50", "p99"))
    over = [r for r in timely if not r["all_delivered"]]
    rows.append((f"(a) OVS first-packet p50/p99 ms at {FIXED_RATE:,}/s (median of rounds)",
                 f"{_ms(p50)} / {_ms(p99)}", f"{_ms(bo.p50)} / {_ms(bo.p99)}",
                 "rounds' p99: " + ", ".join(_ms(r["p99"]) for r in timely)
                 if len(timely) > 1 else "",
                 f"p99 <= {OVS_P99_AT_FIXED_RATE * 1e3:g} ms",
                 _verdict(None if p99 is None else
                          not over and p99 <= OVS_P99_AT_FIXED_RATE)))
    rows.append((f"(a) minimal's p50/p99 ms at {FIXED_RATE:,}/s: conntrack, timed",
                 f"{_ms(ct.p50)} / {_ms(ct.p99)}", "", "",
                 f"(timed: {_ms(ti.p50)} / {_ms(ti.p99)})", ""))
    rows.append((f"(a) OVS delivered at {FIXED_RATE:,}/s",
                 f"{so.latency_delivered:,}/{so.latency_sent:,}",
                 f"{bo.latency_delivered:,}/{bo.latency_sent:,}", "",
                 f"(conntrack: {ct.latency_delivered:,}/{ct.latency_sent:,}; "
                 f"timed: {ti.latency_delivered:,}/{ti.latency_sent:,})", ""))

    def cpu(phase):
        c = phase.cpu or {}
        return " / ".join(f"{100 * c[k]:.0f}" if k in c else "-"
                          for k in ("ovs-vswitchd", "controller", "traffic"))
    rows.append(("(a) % of a core: ovs-vswitchd / controller / traffic",
                 cpu(so), cpu(bo), "",
                 f"(conntrack: {cpu(ct)}; own process: {cpu(al) if al else '-'}; "
                 f"timed: {cpu(ti)}; sink: {cpu(ce)})", ""))

    live = ovs.get("live") or []
    first = live[0].after.per_second if live else 0.0
    for i, lv in enumerate(live):
        zone = f"{lv.in_zone:,}" if lv.in_zone is not None else "?"
        rows.append((f"(a) socketnet setups/s after {lv.decisions:,} live decisions",
                     f"{lv.after.per_second:,.0f}", "",
                     _ratio(lv.after.per_second, first) + f" of {live[0].decisions:,} live"
                     if i else "",
                     f"(fill {lv.filled:,}/{lv.decisions:,} at {lv.fill_per_second:,.0f}/s; "
                     f"{zone} in the zone)", ""))
    if live:
        big = max(live, key=lambda lv: lv.decisions)
        mb = big.rss_kib / 1024
        rows.append((f"(a) socketnet VmRSS MB at {big.decisions:,} live decisions",
                     f"{mb:.1f} (idle {big.idle_rss_kib / 1024:.1f})", "", "",
                     f"<= {RSS_LIMIT_MB} MB", _verdict(mb <= RSS_LIMIT_MB)))
    return rows


def report(b: dict, rss: dict, ovs: dict) -> str:
    rows = []
    if b:
        rows += _synthetic_rows(b, rss)
    if ovs:
        rows += _ovs_rows(ovs)
    return table(rows)


def _counts(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: numbers, comma-separated") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1 each")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="length of each measured run (default 3)")
    parser.add_argument("--ovs-window", type=int, default=128,
                        help="packets in flight in the OVS throughput runs (default 128)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of socketnet, both minimal controllers and the ceiling "
                             "on Open vSwitch, taken in turn; medians are reported (default 3)")
    parser.add_argument("--live", type=_counts, default=LIVE_DECISIONS, metavar="N[,N...]",
                        help="on Open vSwitch, socketnet's setups/s after N live decisions "
                             "(default 1000,100000; the largest N also gives VmRSS)")
    parser.add_argument("--skip-live", action="store_true", help="no live-decision runs")
    parser.add_argument("--skip-untimed", action="store_true",
                        help="no run of timed flows without their timeouts")
    parser.add_argument("--skip-ovs", action="store_true", help="no Open vSwitch part (a)")
    parser.add_argument("--skip-synthetic", action="store_true",
                        help="no synthetic-switch parts (b) and (c)")
    parser.add_argument("--skip-rss", action="store_true", help="no 100,000-decision RSS run (c)")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy (raw, collapsed stacks) of both controllers during (b) "
                             "throughput, into DIR")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: at least 1")
    if args.skip_ovs and args.skip_synthetic:
        parser.error("--skip-ovs and --skip-synthetic leave nothing to measure")
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    b, rss, ovs = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="snbench-") as tmp:
        config = bench_config(tmp)
        host = load_host(config)
        say = lambda text: print(f"[{time.monotonic() - started:5.1f}s] {text}",  # noqa: E731
                                 file=sys.stderr, flush=True)
        if not args.skip_synthetic:
            say("(b) synthetic switch -> socketnet")
            b = {"socketnet": synthetic("socketnet", config, host, args.seconds, args.profile)}
            say("(b) synthetic switch -> baseline")
            b["baseline"] = synthetic("baseline", config, host, args.seconds, args.profile)
            if not args.skip_rss:
                say(f"(c) {RSS_FLOWS:,} flows -> socketnet, VmRSS")
                rss = rss_after(config, host, RSS_FLOWS)
        if not args.skip_ovs:
            from bench.real_ovs import OvsBench
            say("(a) real Open vSwitch: socketnet, minimal controllers, ceiling, baseline, "
                "live decisions")
            ovs = OvsBench(host, config, f"bench{os.getpid()}", seconds=args.seconds,
                           window=args.ovs_window, latency_rate=FIXED_RATE,
                           latency_seconds=args.seconds, repeat=args.repeat,
                           live=() if args.skip_live else args.live,
                           untimed=not args.skip_untimed).run()
        say("done")
    print(report(b, rss, ovs))
    print(f"machine: {os.cpu_count()} cores; load average (1 min) {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after: the bench itself keeps about 2 cores busy, "
          "more than that is someone else's")
    unanswered = {k: v["unanswered"] for k, v in b.items() if v["unanswered"]}
    if unanswered:
        print(f"note: OpenFlow requests the synthetic switch did not answer: {unanswered}")
    if args.profile:
        from bench.profile import report as profile_report
        for name in ("socketnet", "baseline"):
            path = os.path.join(args.profile, f"{name}.txt")
            if os.path.exists(path):
                print(profile_report(path, top=12))
    print(f"bench took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
