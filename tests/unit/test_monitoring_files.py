"""monitoring/, docker-compose.yml and Dockerfile: valid, and wired to each other.

There is no Docker engine on these machines, so the compose file is checked as far
as that allows: parsed, every path it mounts or builds from present, the addresses
Prometheus scrapes and Grafana asks the same ones the others listen on, and
`docker compose config` / `docker-compose config` (no engine needed) when a
client with compose is installed. Prometheus' own `promtool` checks the scrape
config and the rules; every metric a dashboard or a rule names must be one
socketnet's collectors build. tests/integration/test_metrics.py runs them against a
live controller.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
PROVISIONING = MONITORING / "grafana" / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"
METRIC = re.compile(r"\b((?:socketnet|process)_[a-z_]+)\b")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dashboards() -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_exprs() -> list:
    """(dashboard file, panel title, expr) of every target of every panel."""
    out = []
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append((name, panel["title"], target["expr"]))
    return out


def alert_rules() -> list:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _families() -> list:
    """Every metric family socketnet serves, as its collectors build them: the
    controller's (controller/metric_families.py, for the seed's host with the
    mesh connected and the classifier's counts held) and `socketnet host
    watch`'s."""
    from controller import metric_families
    from controller.classifier import DecisionCache
    from controller.switches import Runtime
    from controller.telemetry import ClassifierCounts
    from topology.config import load_host
    from topology.host.watch import Metrics

    host = load_host(str(ROOT / "examples" / "seed.yaml"))
    runtime = Runtime()
    runtime.replace_host(host)
    switch = runtime.switch(1)
    switch.bridge, switch.connected = host.mesh.name, True
    runtime.classifier_counts = ClassifierCounts()
    runtime.decision_cache = DecisionCache(host.classification, host.known_sources)
    return (list(metric_families.families(runtime, {}, "test"))
            + list(Metrics().registry.collect()))


def exported_names() -> set:
    """Every sample name socketnet can expose: counters with _total,
    histograms with _bucket/_sum/_count, and the process collector's."""
    names = set()
    for family in _families():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names | {"process_cpu_seconds_total", "process_resident_memory_bytes"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} is not installed")
    return path


# --- compose ----------------------------------------------------------------


def test_compose_runs_socketnet_prometheus_and_grafana_on_the_hosts_network():
    services = compose()["services"]
    assert set(services) == {"socketnet", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("network_mode") == "host", name
        assert "ports" not in service, f"{name}: host network publishes nothing"


def test_compose_builds_socketnet_from_this_repository():
    service = compose()["services"]["socketnet"]
    assert service["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["socketnet"]' in dockerfile


def test_every_path_compose_mounts_from_the_repository_exists():
    volumes = compose().get("volumes", {})
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
            elif not source.startswith("/"):
                assert source in volumes, f"{name}: named volume {source} is not declared"


def _flag(command: list, name: str) -> str:
    for i, arg in enumerate(command):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name:
            return command[i + 1]
    raise KeyError(name)


def test_prometheus_scrapes_where_socketnet_listens_and_grafana_asks_prometheus():
    services = compose()["services"]
    metrics = _flag(services["socketnet"]["command"], "--metrics-listen")
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "socketnet"]
    assert job["static_configs"][0]["targets"] == [metrics]

    listen = _flag(services["prometheus"]["command"], "--web.listen-address")
    assert listen.startswith("127.0.0.1:")
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == f"http://{listen}"

    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert metrics.startswith("127.0.0.1:")


def test_prometheus_finds_its_rules_where_compose_mounts_them():
    services = compose()["services"]
    config = _flag(services["prometheus"]["command"], "--config.file")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    for rule_file in prometheus["rule_files"]:
        in_container = str(Path(config).parent / rule_file)
        assert in_container in mounts, rule_file
        assert (ROOT / mounts[in_container]).resolve() == (MONITORING / "alerts.yml").resolve()


def test_grafana_provisions_the_dashboards_directory_compose_mounts():
    service = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == PROVISIONING.resolve()
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "socketnet.yaml").read_text())
    (provider,) = providers["providers"]
    path = provider["options"]["path"]
    assert (ROOT / mounts[path]).resolve() == DASHBOARDS.resolve()
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DASHBOARDS / Path(home).relative_to(path)).is_file()


def test_docker_compose_config_accepts_the_file():
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    else:
        cmd = [need("docker-compose")]
    result = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# --- Prometheus -----------------------------------------------------------------


def test_promtool_accepts_the_scrape_config_and_its_rules():
    promtool = need("promtool")
    result = subprocess.run([promtool, "check", "config", str(MONITORING / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules():
    promtool = need("promtool")
    result = subprocess.run([promtool, "check", "rules", str(MONITORING / "alerts.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_the_issue_asks_for_are_there():
    names = {rule["alert"] for rule in alert_rules()}
    assert {"SocketnetDown", "SocketnetDatapathDisconnected", "SocketnetIsolationDropsRising",
            "SocketnetPacketInMeterDropping", "SocketnetReconcileFailing",
            "SocketnetOpenFlowErrors", "SocketnetStatsPollFailing"} <= names


def test_every_alert_keeps_each_hosts_series_apart():
    for rule in alert_rules():
        for by in re.findall(r"(?:sum|max|min|avg|count) by \(([^)]*)\)", rule["expr"]):
            assert "instance" in [x.strip() for x in by.split(",")], (rule["alert"], by)
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            assert "instance" not in static.get("labels", {}), job["job_name"]


# --- Grafana ----------------------------------------------------------------------


def test_dashboards_have_unique_uids_and_ask_the_datasource_their_variable_names():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    uid = datasources["datasources"][0]["uid"]
    seen = set()
    for name, dash in dashboards().items():
        assert dash["uid"] not in seen, name
        seen.add(dash["uid"])
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["datasource"]["current"]["value"] == uid  # the provisioned one
        for panel in dash["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", (name, panel["title"])


BRIDGE_LABELLED = re.compile(r"^socketnet_(datapath|reconcile|flow_mods|openflow_errors|flow_"
                             r"packets|flow_bytes|class_|table_|meter_|stats_|port_)")
SELECTOR = re.compile(r"\b(up|(?:socketnet|process)_[a-z_]+)(\{[^}]*\})?")


def test_every_query_is_filtered_by_the_instance_and_bridge_variables():
    for name, dash in dashboards().items():
        variables = {v["name"] for v in dash["templating"]["list"]}
        assert {"datasource", "instance", "bridge"} <= variables, name
        for v in dash["templating"]["list"]:
            if v["name"] in ("instance", "bridge", "host_watch"):
                assert v["includeAll"] and v["multi"] and v["allValue"] == ".*", (name, v)
    for name, title, expr in panel_exprs():
        for metric, selector in SELECTOR.findall(expr):
            # The controller's health dashboard shows the host watch's series too,
            # under a variable of their own (the watcher is another instance).
            host_row = metric.startswith("socketnet_host_") and name != "socketnet-host.json"
            wanted = 'instance=~"$host_watch"' if host_row else 'instance=~"$instance"'
            assert wanted in selector, (name, title, metric)
            if BRIDGE_LABELLED.match(metric):
                assert 'bridge=~"$bridge"' in selector, (name, title, metric)
        for by in re.findall(r"sum by \(([^)]*)\)", expr):
            assert "instance" in [x.strip() for x in by.split(",")], (name, title, by)


def test_panels_that_show_a_duration_distribution_read_its_histogram():
    histograms = {n[:-len("_bucket")] for n in exported_names() if n.endswith("_bucket")}
    assert {"socketnet_reconcile_duration_seconds",
            "socketnet_classification_duration_seconds"} <= histograms
    for name, title, expr in panel_exprs():
        for metric in METRIC.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            if base in histograms:
                # A quantile from the buckets, not a mean since the start.
                assert metric.endswith("_bucket") and "histogram_quantile" in expr, (
                    name, title, expr)


def test_dashboards_cover_what_the_issue_asks_for():
    exprs = " ".join(expr for _, _, expr in panel_exprs())
    for needed in ('purpose=~"privacy|management', "socketnet_port_bytes_total",
                   "socketnet_classifier_decisions_total", "socketnet_classifier_cached_decisions",
                   "socketnet_packet_ins_total", "socketnet_meter_dropped_packets_total",
                   'up{job="socketnet", instance=~"$instance"}', "socketnet_datapath_connects_total",
                   'purpose=~"drop|forged"'):
        assert needed in exprs, needed


def test_every_metric_a_dashboard_or_rule_names_is_exported():
    exported = exported_names()
    used = {(f"{name}: {title}", m) for name, title, expr in panel_exprs()
            for m in METRIC.findall(expr)}
    used |= {(rule["alert"], m) for rule in alert_rules() for m in METRIC.findall(rule["expr"])}
    missing = sorted((where, m) for where, m in used if m not in exported)
    assert not missing


def test_no_label_is_a_5_tuple_or_an_address():
    labels = set()
    for family in _families():
        labels.update(getattr(family, "_labelnames", ()))  # declared, with samples or not
        for sample in family.samples:
            labels.update(sample.labels)
    assert labels
    assert labels <= {"bridge", "table", "purpose", "class", "port", "role", "direction",
                      "meter", "reason", "origin", "type", "dpid", "result", "version",
                      "interface", "le"}