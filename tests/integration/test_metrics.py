"""socketnet's /metrics scraped by a real Prometheus while the lab carries traffic.

One lab, one controller and one Prometheus (Debian's `prometheus`, on a free
loopback port with its own data directory, stopped by PID) serve the whole module;
the tests run in file order and the last one takes things down on purpose, to make
each alert's condition true. Prometheus scrapes every second and socketnet polls the
switches every second (`socketnet.metrics.stats_interval: 1`); decisions expire
after 5 s idle.

Traffic stays inside the lab's namespaces:
- W5, management: ping between the management containers 200 and 201;
- Netmaker ingress: the netmaker uplink's adapter (`mesh-gw`, a tap in the lab's
  OVS netns) gets a Netmaker address, 10.101.0.5/32, and a route to the xray client
  through it, so the "host" sends as a Netmaker peer would: UDP flows to container
  200 and to the xray client (whatever class the classifier gives them), TCP to the
  xray client's service 8080 (privacy);
- forged: the host's own 10.1.0.1 into the mesh (the admit table's `forged` drop);
- a burst of new UDP flows, past the packet-in meter (20/s, burst 10).

Tolerances are stated where counters are compared with what was sent: flow and
class counters of ICMP echo and UDP flows are exact (nothing else matches those
flows); port counters may see up to 4 more packets (ARP, which takes its own
table); a TCP exchange is 3 to 12 packets.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from controller.process import ControllerProcess, free_port
from tests.integration.conftest import SEED_YAML, require, unique_lab_name
from topology.system import wait_until

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
NETMAKER_PEER = "10.101.0.5"
MCP, OP_DBUS, XRAY = "10.1.0.200", "10.1.0.201", "10.0.0.102"
WAIT = 20.0
PORT_SLACK = 4


class Prometheus:
    """Debian's prometheus on 127.0.0.1:PORT with `config`, its data in `workdir`."""

    def __init__(self, config: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "w"))
        wait_until(self._ready, WAIT, "prometheus to be ready", interval=0.1)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list:
        """The instant vector (or scalar) `expr` gives now; [] if no data."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [data["result"]]
        return data["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def prometheus_config(workdir: Path, metrics_port: int) -> Path:
    """monitoring/prometheus.yml with socketnet on `metrics_port`, scraped every second,
    and monitoring/alerts.yml as its rules."""
    doc = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    doc["global"].update(scrape_interval="1s", evaluation_interval="1s")
    doc["rule_files"] = [str(MONITORING / "alerts.yml")]
    doc["scrape_configs"] = [j for j in doc["scrape_configs"] if j["job_name"] == "socketnet"]
    doc["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{metrics_port}"]
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def lab_config(workdir: Path) -> Path:
    doc = yaml.safe_load(SEED_YAML.read_text())
    doc["socketnet"]["metrics"] = {"stats_interval": 1}
    classification = doc["socketnet"]["classification"]
    classification["idle_timeout"] = 5
    classification["limits"].update(packet_in_rate=20, packet_in_burst=10)
    path = workdir / "host.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Monitored:
    def __init__(self, lab, ctl, prom, config: Path, metrics_url: str):
        self.lab, self.ctl, self.prom, self.config = lab, ctl, prom, config
        self.metrics_url = metrics_url

    def settled(self, since: float) -> None:
        """Wait until Prometheus holds values of a stats poll of both bridges that
        began at least 1.5 s after `since` (Open vSwitch hands its datapath's counts
        to the flows' counters within about a second)."""
        def fresh():
            result = self.prom.query("socketnet_stats_last_poll_timestamp_seconds")
            return len(result) == 2 and all(float(r["value"][1]) > since + 1.5 for r in result)
        wait_until(fresh, WAIT, "a stats poll after the traffic, scraped", interval=0.2)

    def wait_value(self, expr: str, at_least: float) -> float:
        def reached():
            result = self.prom.query(expr)
            return result and float(result[0]["value"][1]) >= at_least and result
        return float(wait_until(reached, WAIT, f"{expr} >= {at_least}",
                                interval=0.2)[0]["value"][1])

    def netmaker(self, *cmd) -> subprocess.CompletedProcess:
        """`cmd` on the host as the Netmaker peer NETMAKER_PEER (routes via mesh-gw)."""
        return self.lab.exec("host", *cmd, timeout=20)


@pytest.fixture(scope="module")
def monitored():
    require("prometheus", "promtool")
    from topology.config import load_host
    from topology.labs.lab import Lab

    workdir = Path(tempfile.mkdtemp(prefix="socketnet-metrics-"))
    config = lab_config(workdir)
    metrics_port = free_port()
    lab = Lab(load_host(str(config)), unique_lab_name())
    ctl = prom = None
    try:
        lab.up()
        ctl = ControllerProcess(str(config), extra_args=(
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
            "--rest-listen", f"127.0.0.1:{free_port()}")).start()
        lab.attach(ctl.target)
        ctl.wait_synced(["mesh", "vmbr0"])
        prom = Prometheus(prometheus_config(workdir, metrics_port), workdir)

        # The host as a Netmaker peer behind the netmaker uplink's adapter. The ARP
        # it sends must carry the adapter's own address (10.1.0.1), the only one
        # the admit table lets in from mesh-gw.
        lab.exec("host", "ip", "addr", "add", f"{NETMAKER_PEER}/32", "dev", "mesh-gw",
                 check=True)
        lab.exec("host", "sysctl", "-q", "-w", "net.ipv4.conf.mesh-gw.arp_announce=2",
                 check=True)
        lab.exec("host", "ip", "route", "add", f"{XRAY}/32", "dev", "mesh-gw", "src",
                 NETMAKER_PEER, check=True)
        lab.popen("102", "socat", f"TCP-LISTEN:8080,bind={XRAY},reuseaddr,fork",
                  "SYSTEM:echo privacy", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield Monitored(lab, ctl, prom, config, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        if prom is not None:
            prom.stop()
        if ctl is not None:
            ctl.stop()
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


def test_prometheus_scrapes_socketnet_and_loads_every_rule(monitored):
    prom = monitored.prom
    wait_until(lambda: prom.query('up{job="socketnet"} == 1'), WAIT, "a scrape", interval=0.2)
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in _alert_rules(None)}
    wait_until(lambda: all(r["health"] == "ok" for g in prom.api("rules")["groups"]
                           for r in g["rules"]), WAIT, "every rule evaluated", interval=0.2)


def test_the_exposition_follows_prometheus_naming_conventions(monitored):
    """`promtool check metrics`: _total counters, base units, no lint."""
    with urllib.request.urlopen(monitored.metrics_url, timeout=5) as r:
        text = r.read()
    assert b"socketnet_flow_packets_total" in text
    result = subprocess.run([shutil.which("promtool"), "check", "metrics"], input=text,
                            capture_output=True)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_counters_grow_by_the_management_traffic_sent(monitored):
    """20 echo requests of 100 bytes from 200 to 201, answered: the forward table's
    management flows count 40 packets of 142 bytes (exact), veth200 receives
    20 (+ARP, at most PORT_SLACK) and sends 20 (+ARP)."""
    m, prom = monitored, monitored.prom
    flows = 'sum(socketnet_flow_{}_total{{bridge="mesh",table="forward",purpose="management"}})'
    port = 'socketnet_port_packets_total{{bridge="mesh",port="veth200",direction="{}"}}'
    queries = {"packets": flows.format("packets"), "bytes": flows.format("bytes"),
               "rx": port.format("rx"), "tx": port.format("tx")}
    m.lab.exec("200", "ping", "-c1", "-W1", OP_DBUS)  # neighbours resolved: ARP out of the count
    m.settled(time.time())
    before = {k: prom.value(q) for k, q in queries.items()}

    done = m.lab.exec("200", "ping", "-c20", "-i0.05", "-s100", "-W1", OP_DBUS)
    assert "20 received" in done.stdout, done.stdout
    m.wait_value(queries["packets"], before["packets"] + 40)
    m.settled(time.time())
    grew = {k: prom.value(q) - before[k] for k, q in queries.items()}
    assert grew["packets"] == 40, grew
    assert grew["bytes"] == 40 * 142, grew
    assert 20 <= grew["rx"] <= 20 + PORT_SLACK, grew
    assert 20 <= grew["tx"] <= 20 + PORT_SLACK, grew


def _udp(dst: str, sport: int, count: int = 5) -> tuple:
    """A command sending `count` 100-byte datagrams (142-byte frames), 0.2 s apart,
    from NETMAKER_PEER:sport to dst:9999: one flow."""
    return (sys.executable, "-c",
            "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(('{NETMAKER_PEER}', {sport})); "
            f"[(s.sendto(b'x' * 100, ('{dst}', 9999)), time.sleep(0.2)) for _ in range({count})]")


def test_class_counters_keep_their_totals_after_the_decisions_expire(monitored):
    """Netmaker ingress decided reactively: two UDP flows of 5 datagrams, to
    container 200 and to the xray client, each counted in the class the classifier
    gives it (5 packets of 142 bytes; 4 for a drop, whose first packet was the
    packet-in), and one TCP exchange with the xray client's service (privacy,
    3 to 12 packets). The decisions expire after 5 s idle; the class counters stay
    where they were, as does the classify table's counter."""
    from controller.classifier import Classifier, Flow5
    from topology.config import load_host

    m, prom = monitored, monitored.prom
    cls = 'socketnet_class_{}_total{{bridge="mesh",class="{}"}}'
    classified = 'socketnet_flow_packets_total{bridge="mesh",table="classify",purpose="classified"}'
    classes = ("management", "drop", "privacy")
    flows = {(MCP, 41000), (XRAY, 41001)}
    expected = dict.fromkeys(classes, 0)
    classifier = Classifier(load_host(str(m.config)))
    for dst, sport in flows:
        decided = classifier.decide(Flow5.of(NETMAKER_PEER, dst, "udp", sport, 9999)).cls.value
        expected[decided] += 4 if decided == "drop" else 5
    m.settled(time.time())
    before = {(kind, c): prom.value(cls.format(kind, c))
              for kind in ("packets", "bytes") for c in classes}

    # All at once, so that every decision is still cached when counted live.
    started = [m.lab.popen("host", *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True) for cmd in (
        *(_udp(dst, sport) for dst, sport in flows),
        ("sh", "-c", f"socat -T3 - TCP:{XRAY}:8080,bind={NETMAKER_PEER},connect-timeout=3 "
                     "</dev/null"))]
    outputs = [p.communicate(timeout=10)[0] for p in started]
    assert outputs[-1].strip() == "privacy", outputs
    m.settled(time.time())
    live = {k: prom.value(cls.format(*k)) for k in before}
    live_classified = prom.value(classified)
    decisions = [f for f in m.lab.ovs.dump_flows("mesh", names=True, stats=True)
                 if "table=1," in f and "priority=200" in f]
    assert prom.value("socketnet_classifier_cached_decisions") >= 3, decisions

    wait_until(lambda: prom.query("socketnet_classifier_cached_decisions == 0"), WAIT,
               "the decisions to expire", interval=0.2)
    m.settled(time.time())
    after = {k: prom.value(cls.format(*k)) for k in before}
    assert after == live
    grew = {k: after[k] - before[k] for k in before}
    for c in ("management", "drop"):
        assert grew["packets", c] == expected[c], (c, grew, expected, decisions)
        assert grew["bytes", c] == expected[c] * 142, (c, grew, expected, decisions)
    assert 3 <= grew["packets", "privacy"] - expected["privacy"] <= 12, (grew, decisions)
    assert prom.value(classified) == live_classified
    # Never a reset, over the whole run: what a counter promises.
    for name in ("socketnet_class_packets_total", "socketnet_class_bytes_total",
                 "socketnet_flow_packets_total", "socketnet_flow_bytes_total"):
        assert prom.value(f"max(resets({name}[5m]))") == 0, name


def test_a_removed_port_leaves_no_stale_series(monitored):
    m, prom = monitored, monitored.prom
    series = 'socketnet_port_packets_total{bridge="mesh",port="veth201"}'
    assert prom.query(series)
    m.lab.remove_port("mesh", "veth201")
    wait_until(lambda: not prom.query(series), WAIT, "veth201's series to go", interval=0.2)
    assert prom.query('socketnet_port_packets_total{bridge="mesh",port="veth200"}')


def test_every_dashboard_panel_and_alert_rule_returns_data(monitored):
    """The panels' queries while all is well (after forged traffic and a burst of
    new flows past the packet-in meter); then each alert's expression with its
    condition made true: isolation drops and meter drops as they are, a refused
    config reload, vmbr0 disconnected, the controller stopped."""
    m, prom = monitored, monitored.prom
    # Forged: the host's own mesh address into the mesh, 500 packets in 2 s: more
    # than the alert's 1/s over its 5-minute window.
    m.lab.exec("host", "ping", "-c500", "-i0.004", "-W1", "-q", MCP)
    # 300 new flows in a burst: the meter passes 20/s (burst 10) to socketnet.
    burst = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             f"s.bind(('{NETMAKER_PEER}', 0)); "
             f"[s.sendto(b'x', ('{XRAY}', p)) for p in range(20000, 20300)]")
    m.netmaker(sys.executable, "-c", burst)
    m.wait_value('sum(socketnet_meter_dropped_packets_total{meter=~"packet-in.*"})', 100)
    m.wait_value('sum(socketnet_flow_packets_total{purpose="forged"})', 500)

    for dashboard, title, expr in _panel_exprs():
        query = _as_grafana_asks(expr)
        wait_until(lambda: prom.query(query), WAIT, f"{dashboard} / {title}: {query}",
                   interval=0.2)

    alerts = {r["alert"]: r["expr"] for r in _alert_rules()}
    provoke = {
        "SocketnetIsolationDropsRising": lambda: None,
        "SocketnetPacketInMeterDropping": lambda: None,
        "SocketnetReconcileFailing": lambda: _refuse_a_sync(m.lab, m.ctl),
        "SocketnetOpenFlowErrors": lambda: None,  # the refused sync's errors
        "SocketnetStatsPollFailing": lambda: _stall_vswitchd(m.lab, m.ctl),
        "SocketnetConfigReloadRefused": lambda: (
            m.config.write_text(m.config.read_text().replace("10.0.0.100/24", "10.0.0.300/24")),
            m.ctl.proc.send_signal(signal.SIGHUP)),
        "SocketnetDatapathDisconnected": lambda: m.lab.detach(["vmbr0"]),
        "SocketnetDown": lambda: m.ctl.stop(),
    }
    assert set(provoke) == set(alerts)
    for name, action in provoke.items():
        action()
        wait_until(lambda: prom.query(alerts[name]), WAIT, f"{name}: {alerts[name]}",
                   interval=0.2)


def _as_grafana_asks(expr: str) -> str:
    """A panel's query as Grafana sends it with the variables at "All"."""
    return (expr.replace("$__rate_interval", "1m").replace('"$instance"', '".*"')
            .replace('"$bridge"', '".*"').replace('"$host_watch"', '".*"'))


def _refuse_a_sync(lab, ctl) -> None:
    """Make Open vSwitch refuse socketnet's next sync of mesh: one of its table-2
    flows removed behind its back and the table limited to the flows left
    (Flow_Table flow_limit, overflow_policy=refuse); a port added starts a sync,
    which must add the flow back and is refused at the bundle's commit. Then the
    limit and the port go, and the sync that follows heals the table."""
    flows = [line for line in lab.ovs.ofctl("--no-stats", "dump-flows", "mesh",
                                            "table=2").splitlines() if "cookie=" in line]
    victim = next(line for line in flows if "priority=0" not in line)
    match = victim.split("cookie=", 1)[1].split(", ", 1)[1].split(" actions=", 1)[0]
    lab.ovs.ofctl("--strict", "del-flows", "mesh", match)
    lab.ovs.vsctl("--", "--id=@ft", "create", "Flow_Table", f"flow_limit={len(flows) - 1}",
                  "overflow_policy=refuse", "--", "set", "Bridge", "mesh", "flow_tables:2=@ft")
    port = f"sn{lab.name[-8:]}x"[:15]
    mark = ctl.mark()
    lab.ovs.vsctl("add-port", "mesh", port, "--", "set", "Interface", port, "type=internal")
    try:
        wait_until(lambda: any("sync failed" in line and "OFPFMFC_TABLE_FULL" in line
                               and match.split(",")[-1] in line
                               for line in ctl.lines[mark:]),
                   WAIT, "socketnet to log the refused flow")
    finally:
        lab.ovs.vsctl("clear", "Bridge", "mesh", "flow_tables", "--", "del-port", "mesh", port)
    wait_until(lambda: match in lab.ovs.ofctl("--no-stats", "dump-flows", "mesh", "table=2"),
               WAIT, "the next sync to put the flow back")


def _stall_vswitchd(lab, ctl) -> None:
    """ovs-vswitchd stopped (SIGSTOP) for longer than a stats request may wait for
    its reply (reconcile_timeout, 10 s): the poll in flight fails; then it goes on."""
    pid = lab.ovs.pids["ovs-vswitchd"]
    mark = ctl.mark()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: any("stats poll failed" in line for line in ctl.lines[mark:]),
                   WAIT, "a stats poll to fail")
    finally:
        os.kill(pid, signal.SIGCONT)

    def back() -> bool:
        """Every bridge whose connection dropped meanwhile is synced again."""
        lines = ctl.lines[mark:]
        bridges = [b.name for b in lab.host.bridges]
        dropped = {b for b in bridges if any(f"({b}) disconnected" in x for x in lines)}
        return all(any(f"{b}: pipeline in sync" in x for x in lines) for b in dropped)
    wait_until(back, WAIT, "the bridges back after ovs-vswitchd went on")


HOST_DASHBOARD = "socketnet-host.json"  # host watch's: tests/integration/test_healing.py


def _panel_exprs(host: bool = False) -> list:
    """The dashboards' queries of the controller's series, or (`host`) of host
    watch's: its own dashboard's and the health dashboard's host row."""
    out = []
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                watchers = (path.name == HOST_DASHBOARD or "socketnet_host_" in expr)
                if watchers == host:
                    out.append((path.name, panel["title"], expr))
    assert out
    return out


def _alert_rules(group: str = "socketnet") -> list:
    """The rules of one group (None: every group's)."""
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for g in doc["groups"] if group in (None, g["name"]) for rule in g["rules"]]
