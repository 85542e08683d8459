"""The flow-debug REST API over real HTTP, against `socketnet run` attached to real
Open vSwitch: what it reports matches what the switch holds, cache deletes reach
the switch, traces and the audit read the live tables, a bad reload changes
nothing, Ryu's ofctl_rest paths answer in Ryu's format, and schemathesis finds no
5xx and no response off the OpenAPI document.

One lab and one controller for the module (a lab is the slow part)."""
import json
import re

import pytest
import requests
import yaml

from controller.process import ControllerProcess, free_port
from topology.system import wait_until

from tests.conftest import module
from tests.integration.conftest import SEED_YAML, unique_lab_name

TOKEN = "rest-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def live(seed_host, integration_prerequisites, tmp_path_factory):
    """(lab, controller, API base URL); the controller runs a copy of the seed's
    config (`controller.config`), which reload tests may break and restore."""
    from topology.labs.lab import Lab
    lab = Lab(seed_host, unique_lab_name()).up()
    # Where this lab's ovs-vswitchd listens, as the config says it (rest.ovs_ctl).
    data = yaml.safe_load(SEED_YAML.read_text())
    data["socketnet"]["rest"] = {"ovs_ctl": lab.ovs.vswitchd_ctl}
    config = tmp_path_factory.mktemp("rest") / "host.yaml"
    config.write_text(yaml.safe_dump(data))
    port = free_port()
    mp = pytest.MonkeyPatch()
    # The child inherits the token, and no other way to find ovs-vswitchd.
    mp.setenv("SOCKETNET_TOKEN", TOKEN)
    mp.delenv("OVS_RUNDIR", raising=False)
    mp.delenv("SOCKETNET_OVS_CTL", raising=False)
    ctl = None
    try:
        ctl = ControllerProcess(str(config), extra_args=("--rest-listen", f"127.0.0.1:{port}"))
        ctl.start()  # assigned first: a start that times out is still stopped below
        mp.undo()
        ctl.wait_for("REST API listening", 10)
        lab.attach(ctl.target)
        ctl.wait_synced(["mesh", "vmbr0"])
        yield lab, ctl, f"http://127.0.0.1:{port}"
    finally:
        mp.undo()
        if ctl is not None:
            ctl.stop()
        lab.down()


def get(base, path, **kw):
    kw.setdefault("headers", AUTH)
    return requests.get(base + path, timeout=30, **kw)


def test_health_ready_and_switches(live):
    lab, ctl, base = live
    assert requests.get(base + "/v1/health", timeout=5).json()["status"] == "ok"
    ready = wait_until(lambda: get(base, "/v1/ready").status_code == 200, 10, "readiness")
    assert ready
    switches = get(base, "/v1/switches").json()
    assert {s["bridge"]: s["connected"] for s in switches} == {"mesh": True, "vmbr0": True}


def test_reads_without_the_token_are_401(live):
    _, _, base = live
    r = requests.get(base + "/v1/switches", timeout=5)
    assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization"


def test_flows_are_what_the_switch_holds_with_counters(live):
    lab, _, base = live
    for bridge in ("mesh", "vmbr0"):
        doc = get(base, f"/v1/switches/{bridge}/flows").json()
        assert len(doc["flows"]) == len(lab.ovs.dump_flows(bridge))
        assert all("n_packets=" in f["ofctl"] for f in doc["flows"])
    text = get(base, "/v1/switches/vmbr0/flows", params={"format": "ofctl", "table": 0}).text
    assert text.splitlines() and all("table=0" in line for line in text.splitlines())
    drops = get(base, "/v1/switches/mesh/flows", params={"purpose": "drop"}).json()["flows"]
    assert {f["table"] for f in drops} == {0, 1, 2, 3}  # every table ends in a drop


def test_ports_carry_roles_and_counters(live):
    _, _, base = live
    doc = get(base, "/v1/switches/mesh/ports").json()
    roles = {p["name"]: p["role"] for p in doc["ports"]}
    assert roles["veth200"] == "management" and roles["to-privacy"] == "inter-bridge"
    assert all(isinstance(p["counters"]["rx_packets"], int) for p in doc["ports"])


def test_ryu_ofctl_rest_paths_answer_in_ryus_format(live):
    lab, _, base = live
    dpids = get(base, "/stats/switches").json()
    assert len(dpids) == 2 and all(isinstance(d, int) for d in dpids)
    mesh = next(s["dpid_int"] for s in get(base, "/v1/switches").json() if s["bridge"] == "mesh")
    flows = get(base, f"/stats/flow/{mesh}").json()[str(mesh)]
    assert len(flows) == len(lab.ovs.dump_flows("mesh"))
    entry = flows[0]
    assert {"priority", "cookie", "table_id", "match", "actions", "packet_count",
            "byte_count", "duration_sec"} <= set(entry)
    actions = [a for f in flows for a in f["actions"]]
    assert "GOTO_TABLE:2" in actions and any(a.startswith("OUTPUT:") for a in actions)
    assert any("dl_type" in f["match"] for f in flows)
    aggregate = get(base, f"/stats/aggregateflow/{mesh}").json()[str(mesh)]
    assert aggregate[0]["flow_count"] == len(flows)
    desc = get(base, f"/stats/desc/{mesh}").json()[str(mesh)]
    assert desc["hw_desc"] == "Open vSwitch" and desc["mfr_desc"] == "Nicira, Inc."
    names = {p["name"] for p in get(base, f"/stats/portdesc/{mesh}").json()[str(mesh)]}
    assert {"veth200", "mesh"} <= names
    assert get(base, f"/stats/port/{mesh}").json()[str(mesh)]
    assert get(base, f"/stats/table/{mesh}").json()[str(mesh)]
    assert get(base, "/stats/flow/12345").status_code == 404


def commit(lab, src, sport, dst, dport, mark):
    """A connection in the mesh's zone, as the controller's packet-out commits it."""
    zone = lab.host.classification.conntrack_zone
    packet_out(lab, src, sport, dst, dport,
               f"ct(commit,zone={zone},exec(set_field:{mark}->ct_mark))")


def packet_out(lab, src, sport, dst, dport, actions, src_mac="02:00:00:00:00:01",
               dst_mac="02:00:00:00:00:02"):
    """A TCP SYN src:sport -> dst:dport put into mesh as if it came in by mesh-gw,
    with `actions` (TABLE: through the pipeline, as a Netmaker peer's would)."""
    from bench import frames
    frame = frames.syn_frame(0, src_mac, dst_mac, dst, dport)
    # the frame's own source and port, then its checksum
    frame[26:30] = bytes(int(x) for x in src.split("."))
    frame[34:36] = sport.to_bytes(2, "big")
    frame[24:26] = b"\0\0"
    header = bytes(frame[14:34])
    total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    frame[24:26] = (~total & 0xFFFF).to_bytes(2, "big")
    frames.stamp(frame, 0, 1)
    lab.ovs.ofctl("packet-out", "mesh", f"in_port=mesh-gw packet={bytes(frame).hex()} "
                  f"actions={actions}")


def test_ryus_filtered_reads_answer_as_ryu_does(live):
    """The reads a Ryu user reaches for, in Ryu's format: flows filtered by table,
    by match and by cookie; one port; meters; table features; and a 404 naming the
    reads offered for what is not (ofctl_rest's writes)."""
    lab, _, base = live
    mesh = next(s["dpid_int"] for s in get(base, "/v1/switches").json() if s["bridge"] == "mesh")
    key = str(mesh)

    def post(what, body):
        r = requests.post(f"{base}/stats/{what}/{mesh}", json=body, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()[key]
    table1 = post("flow", {"table_id": 1})
    assert table1 and {f["table_id"] for f in table1} == {1}
    assert len(table1) == len([f for f in lab.ovs.dump_flows("mesh") if "table=1," in f])
    uplink = lab.port_numbers("mesh")["mesh-gw"]
    admitted = post("flow", {"table_id": 0, "match": {"in_port": uplink}})
    assert admitted and all(f["match"].get("in_port") == uplink for f in admitted)
    from controller.pipeline import Purpose
    drops = post("flow", {"cookie": Purpose.DROP.cookie, "cookie_mask": 0xFFFFFFFFFFFFFFFF})
    assert {f["table_id"] for f in drops} >= {0, 1, 2, 3} and all(
        f["cookie"] == Purpose.DROP.cookie for f in drops)
    (aggregate,) = post("aggregateflow", {"table_id": 1})
    assert aggregate["flow_count"] == len(table1)
    ports = get(base, f"/stats/port/{mesh}/{uplink}").json()[key]
    assert [p["port_no"] for p in ports] == [uplink]
    meters = get(base, f"/stats/meterconfig/{mesh}").json()[key]
    assert {m["meter_id"] for m in meters} == {1, 2}
    assert get(base, f"/stats/meter/{mesh}").json()[key]
    assert get(base, f"/stats/tablefeatures/{mesh}").status_code == 200
    r = requests.post(f"{base}/stats/flowentry/add", json={"dpid": mesh}, headers=AUTH,
                      timeout=10)
    assert r.status_code == 404 and "offers the reads" in r.json()["error"]["message"]


def test_cache_lists_deletes_and_flushes_the_zones_connections(live):
    lab, _, base = live
    for sport in (40001, 40002, 40003):
        commit(lab, "10.101.0.5", sport, "10.0.0.102", 8080, 1)

    def listed():
        return get(base, "/v1/cache").json()

    wait_until(lambda: listed()["count"] == 3, 10, "the 3 connections in the zone")
    doc = listed()
    assert {(e["class"], e["sport"]) for e in doc["entries"]} == {
        ("privacy", p) for p in (40001, 40002, 40003)}
    assert all(e["timeout"] is not None and e["state"] for e in doc["entries"]), doc
    first = doc["entries"][0]["id"]
    r = requests.delete(f"{base}/v1/cache/{first}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    assert first not in {e["id"] for e in listed()["entries"]} and listed()["count"] == 2
    assert requests.delete(f"{base}/v1/cache/{first}", headers=AUTH,
                           timeout=10).status_code == 404
    r = requests.delete(f"{base}/v1/cache", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json()["deleted"] == 2, r.text
    zone = lab.host.classification.conntrack_zone
    assert lab.ovs.appctl("dpctl/dump-conntrack", f"zone={zone}").strip() == ""


def test_trace_follows_the_packet_across_the_inter_bridge_link(live):
    lab, _, base = live
    # W1, its connection not decided: it stops at the controller, with the decision
    # it would get.
    src, sport = "10.101.0.5", 40000
    body = {"bridge": "mesh", "in_port": "mesh-gw", "proto": "tcp", "src": src,
            "sport": sport, "dst": "10.0.0.102", "dport": 8080,
            "eth_dst": lab.host.xray_client.container.mac}
    doc = requests.post(base + "/v1/trace", json=body, headers=AUTH, timeout=10).json()
    assert doc["controller"] == ["mesh"] and doc["exits"] == [], doc
    assert doc["decision"]["class"] == "privacy"
    # ... and as its connection will be once decided: it reaches the xray client.
    assert [h["bridge"] for h in doc["decided"]["hops"]] == ["mesh", "vmbr0"], doc
    assert [(e["bridge"], e["port"]) for e in doc["decided"]["exits"]] == [("vmbr0", "veth102")]
    # A management container to a Netmaker peer: out through the mesh adapter only.
    doc = requests.post(base + "/v1/trace", json={"bridge": "mesh", "in_port": "veth200",
                                                  "proto": "udp", "dst": "10.101.0.5",
                                                  "dport": 53}, headers=AUTH, timeout=10).json()
    assert [(e["bridge"], e["port"]) for e in doc["exits"]] == [("mesh", "mesh-gw")]


def _flow_head(line: str) -> set:
    """A flow line's cookie, table, priority and match, as a set of its fields
    (ovs-ofctl leaves out table=0 and quotes some port names)."""
    head = line.strip().replace('"', "").split(" actions=", 1)[0]
    fields = {f.strip() for f in head.split(",") if f.strip()}
    return fields if any(f.startswith("table=") for f in fields) else fields | {"table=0"}


def test_trace_explains_each_lookup_and_why_a_packet_was_dropped(live):
    lab, _, base = live
    # N-rule: a management container may not reach the xray client.
    doc = requests.post(base + "/v1/trace", json={"bridge": "mesh", "in_port": "veth200",
                                                  "dst": "10.0.0.102", "dport": 8080},
                        headers=AUTH, timeout=10).json()
    assert doc["verdict"] == "drop" and doc["exits"] == [], doc
    (hop,) = doc["hops"]
    admit, forward = hop["tables"]
    assert (admit["name"], admit["purpose"], forward["name"], forward["purpose"]) == (
        "admit", "admit", "forward", "drop")
    assert "in_port=veth200" in admit["match"] and "in_port=veth200" in admit["flow"]
    assert forward["priority"] == 0 and forward["flow"].endswith("priority=0 actions=drop")
    assert "table 2 (forward)" in doc["why"] and "zone: management" in doc["why"]
    # Each lookup's flow line is a flow the bridge holds: its cookie, table, priority
    # and match are one line of ovs-ofctl's own dump.
    dumped = [_flow_head(line) for line in
              lab.ovs.ofctl("--names", "--no-stats", "dump-flows", "mesh").splitlines()
              if "cookie=" in line]
    for step in hop["tables"]:
        assert _flow_head(step["flow"]) in dumped, step["flow"]
    # A forged source: dropped by the admit table, and said so.
    doc = requests.post(base + "/v1/trace", json={"bridge": "mesh", "in_port": "veth200",
                                                  "src": "10.1.0.9", "dst": "10.101.0.5",
                                                  "proto": "udp", "dport": 53},
                        headers=AUTH, timeout=10).json()
    assert doc["verdict"] == "drop" and "table 0 (admit)" in doc["why"], doc["why"]


def test_classify_dry_run(live):
    _, _, base = live
    r = requests.post(base + "/v1/classify", json={"src": "10.101.0.5", "dst": "10.0.0.102",
                                                   "proto": "tcp", "dport": 8080},
                      headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json()["class"] == "privacy"


def test_audit_finds_nothing_then_catches_a_flooding_flow_added_behind_socketnets_back(live):
    lab, _, base = live
    doc = get(base, "/v1/audit").json()
    assert doc["packets"] > 300
    assert doc["ok"], json.dumps(doc["violations"][:5] + doc["errors"][:5], indent=1)
    lab.ovs.ofctl("add-flow", "vmbr0", "table=0,priority=65000,actions=NORMAL")
    try:
        doc = get(base, "/v1/audit").json()
    finally:
        lab.ovs.ofctl("--strict", "del-flows", "vmbr0", "table=0,priority=65000")
    assert not doc["ok"] and {"N2", "N6"} <= set(doc["rules"]), doc["rules"]


def test_hostile_config_files_given_on_reload_change_nothing_and_stall_nothing(live, tmp_path):
    """Each hostile file of bench/hostile_config.py (nested aliases, a megabyte of
    aliases or anchors, deep nesting, ...) as the running controller's config, on
    reload by REST and by SIGHUP: refused, and meanwhile the API answers and new
    Netmaker connections are classified, one every 50 ms."""
    import signal
    import threading

    from bench import hostile_config
    lab, ctl, base = live
    zone = lab.host.classification.conntrack_zone
    mac = lab.ovs.vsctl("get", "Interface", "mesh-gw", "mac_in_use").strip().strip('"')
    xray = lab.host.xray_client.container
    stop, answers, sent = threading.Event(), [], []

    def keep_asking():
        sport = 41000
        while not stop.is_set():
            try:
                r = requests.get(base + "/v1/switches", headers=AUTH, timeout=5)
                answers.append(r.status_code)
            except requests.RequestException as exc:
                answers.append(repr(exc))
            packet_out(lab, "10.101.0.5", sport, str(xray.address), 8080, "TABLE",
                       src_mac=mac, dst_mac=xray.mac)
            sent.append(sport)
            sport += 1
            stop.wait(0.05)

    good = open(ctl.config).read()
    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    try:
        for name, path in hostile_config.write(tmp_path).items():
            with open(ctl.config, "w") as f:
                f.write(path.read_text())
            mark = ctl.mark()
            r = requests.post(base + "/v1/reload", json={}, headers=AUTH, timeout=10)
            assert r.status_code == 400, (name, r.text[:300])
            ctl.proc.send_signal(signal.SIGHUP)
            ctl.wait_for(r"config reload \(SIGHUP\) refused", 10, after=mark)
    finally:
        with open(ctl.config, "w") as f:
            f.write(good)
        count = len(sent)
        wait_until(lambda: len(sent) >= count + 3, 10, "three more connections sent")
        stop.set()
        asker.join(10)
    assert answers and all(a == 200 for a in answers), [a for a in answers if a != 200][:5]

    def decided() -> set:
        lines = lab.ovs.appctl("dpctl/dump-conntrack", f"zone={zone}").splitlines()
        return {int(m.group(1)) for m in (re.search(r"orig=\(src=10\.101\.0\.5,dst=[\d.]+,"
                                                     r"sport=(\d+)", x) for x in lines
                                           if "mark=1" in x) if m}
    wait_until(lambda: set(sent) <= decided(), 10, "every connection sent decided privacy")
    assert get(base, "/v1/config").json()["classification"]["conntrack_zone"] == zone


def test_a_bad_reload_is_400_and_the_controller_keeps_running(live):
    lab, ctl, base = live
    good = open(ctl.config).read()
    with open(ctl.config, "w") as f:
        f.write(good.replace("10.0.0.102/24", "10.0.0.300/24"))
    try:
        mark = ctl.mark()
        r = requests.post(base + "/v1/reload", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 400
        assert any("10.0.0.300/24" in i["text"] for i in r.json()["error"]["issues"])
        # Logged with every issue, as SIGHUP's are, and counted.
        ctl.wait_for(r"config reload \(REST\) refused: .*10\.0\.0\.300/24", 5, after=mark)
        ctl.wait_for(r"config reload \(REST\) refused: \d+ issue", 5, after=mark)
        result = cli(base, "reload")
        assert result.exit_code == 2 and "10.0.0.300/24" in result.output
    finally:
        with open(ctl.config, "w") as f:
            f.write(good)
    assert get(base, "/v1/ready").status_code == 200
    mark = ctl.mark()
    r = requests.post(base + "/v1/reload", json={}, headers=AUTH, timeout=10)
    assert r.status_code == 200
    assert ctl.wait_synced(["mesh", "vmbr0"], after=mark) == {
        "mesh": {"add": 0, "delete": 0, "unchanged": len(lab.ovs.dump_flows("mesh"))},
        "vmbr0": {"add": 0, "delete": 0, "unchanged": len(lab.ovs.dump_flows("vmbr0"))}}


def test_schemathesis_against_the_live_controller(live):
    """Generated requests (valid and invalid) for every operation of the served
    document: no 5xx, documented status codes, content types and bodies."""
    schemathesis = module("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                     response_schema_conformance, status_code_conformance)
    _, _, base = live
    schema = schemathesis.openapi.from_url(base + "/v1/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    for result in schema.get_all_operations():
        operation = result.ok()
        examples = 2 if operation.path == "/v1/audit" else 8
        strategy = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(strategy)
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=base, headers=AUTH, checks=checks, timeout=30)

        run()


# --- the CLI against the live API ---------------------------------------------------------


def cli(base, *args):
    from click.testing import CliRunner
    from controller.cli.main import main
    return CliRunner().invoke(main, [*args, "--api", base, "--token", TOKEN])


def test_cli_prints_tables_and_json_from_the_live_controller(live):
    lab, _, base = live
    result = cli(base, "switches")
    assert result.exit_code == 0, result.output
    assert "mesh" in result.output and "CONNECTED" in result.output
    result = cli(base, "flows", "--bridge", "vmbr0", "--table", "0")
    assert result.exit_code == 0 and "n_packets=" in result.output
    result = cli(base, "ports", "--json")
    assert json.loads(result.output)["mesh"]["ports"]
    result = cli(base, "trace", "--bridge", "mesh", "--in-port", "veth200", "--proto", "udp",
                 "--dst", "10.101.0.5", "--dport", "53")
    assert result.exit_code == 0 and "leaves by mesh/mesh-gw" in result.output, result.output
    assert "table 2 (forward) priority" in result.output and "purpose management" in result.output
    result = cli(base, "classify", "--src", "10.101.0.5", "--dst", "10.0.0.102",
                 "--proto", "tcp", "--dport", "8080", "--json")
    assert json.loads(result.output)["class"] == "privacy"
    result = cli(base, "audit")
    assert result.exit_code == 0 and "no violation" in result.output, result.output
    result = cli(base, "cache", "--json")
    assert json.loads(result.output)["count"] == 0


def test_no_request_made_the_controller_log_an_error(live):
    _, ctl, _ = live
    assert not [line for line in ctl.lines if "REST" in line and "failed" in line]
    assert not [line for line in ctl.lines if "Traceback" in line]


def test_requests_are_not_logged_at_info(live):
    _, ctl, base = live
    mark = ctl.mark()
    get(base, "/v1/health")
    get(base, "/v1/switches")
    requests.post(base + "/v1/reload", json={}, headers=AUTH, timeout=10)
    ctl.wait_for("config reloaded", 10, after=mark)  # logged after the requests above
    assert not [line for line in ctl.lines[mark:] if "GET /v1/" in line]
