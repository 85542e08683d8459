"""The REST API without a switch: routing, access, validation, answers, and the
OpenAPI document fuzzed by schemathesis against a fake backend."""
import io
import json

import pytest

from controller.api.app import Api
from controller.api.routes import ROUTES, ApiError, openapi
from controller.api.views import FlowStat
from controller.compiler import SwitchPort, compile_bridge
from controller.conntrack import Connection
from controller.switches import Runtime

from tests.conftest import module

TOKEN = "s3cret-token"
MESH_DPID, VMBR0_DPID = 0x1, 0x2


def ports_of(bridge, base):
    ports = {p.name: SwitchPort(i, p.name, p.mac or f"02:ff:00:00:{base:02x}:{i:02x}")
             for i, p in enumerate(bridge.ports, start=1)}
    ports[bridge.name] = SwitchPort(0xFFFFFFFE, bridge.name, f"02:ff:00:00:{base:02x}:fe")
    return ports


class FakeBackend:
    """Holds each bridge's compiled flows, and the mesh zone's connections, as a
    switch and its connection tracker would."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.tables = {}
        self.deleted = []
        self.traced = []
        self.unreachable = False
        host = runtime.host
        for dpid, state in runtime.switches.items():
            self.tables[dpid] = list(compile_bridge(host, state.bridge, state.ports))
        self.held = [
            Connection("tcp", "10.101.0.5", "10.0.0.102", 40000, 8080, mark=1,
                       state="ESTABLISHED", timeout=59),
            Connection("icmp", "10.101.0.6", "10.1.0.200", icmp_id=7, mark=2, timeout=20),
            Connection("udp", "10.101.0.7", "10.0.0.100", 5, 53, mark=3, timeout=30),
            Connection("udp", "10.1.0.200", "10.101.0.9", 5353, 53, mark=4, timeout=30),
        ]
        self.flushed = []
        self.zones = []

    def flow_stats(self, dpid):
        return [FlowStat(f, f.table, f.priority, f.cookie, 3, 300, 1.5)
                for f in self.tables[dpid]]

    def port_stats(self, dpid):
        return {p.number: {"rx_packets": 1, "tx_packets": 2}
                for p in self.runtime.switches[dpid].ports.values()}

    def ryu(self, what, dpid, argument=None):
        self.ryu_asked = (what, dpid, argument)
        if what == "switches":
            return sorted(self.runtime.switches)
        return {str(dpid): []}

    def connections(self, zone):
        if self.unreachable:
            raise ApiError(503, "cannot read the connection tracker: no control socket")
        self.zones.append(zone)
        return list(self.held)

    def delete_connection(self, zone, connection):
        self.deleted.append((zone, connection.id))
        self.held = [c for c in self.held if c.id != connection.id]

    def flush_connections(self, dpid, zone):
        self.flushed.append((dpid, zone))
        self.held = []

    def trace(self, bridge, flow, ct_next=None, ct_mark=None):
        if self.unreachable:
            raise ApiError(503, "cannot trace: no ovs-vswitchd control socket")
        self.traced.append((bridge, flow))
        return {"hops": [], "exits": [], "controller": [], "drop": True}

    def audit(self):
        return {"ok": True, "packets": 0, "violations": []}


@pytest.fixture
def runtime(seed_host, monkeypatch):
    monkeypatch.setenv("SOCKETNET_TOKEN", TOKEN)
    rt = Runtime()
    rt.host = seed_host
    rt.config_path = seed_host.source
    for dpid, bridge, base in ((MESH_DPID, seed_host.mesh, 1), (VMBR0_DPID, seed_host.privacy_bridge, 2)):
        state = rt.switch(dpid)
        state.bridge, state.ports, state.connected = bridge.name, ports_of(bridge, base), True
        state.connects, state.last_sync = 1, 1.0
    return rt


@pytest.fixture
def api(runtime):
    backend = FakeBackend(runtime)
    app = Api(runtime, backend)
    app.fake = backend
    return app


def call(app, method, path, body=None, token=TOKEN, query="", raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)}
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    payload = b"".join(app(environ, start_response))
    ctype = seen["headers"]["Content-Type"]
    doc = json.loads(payload) if ctype.startswith("application/json") else payload.decode()
    return seen["status"], doc


# --- access -------------------------------------------------------------------------


def test_health_and_openapi_answer_without_a_token(api):
    assert call(api, "GET", "/v1/health", token=None)[0] == 200
    status, doc = call(api, "GET", "/v1/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "/stats/flow/{dpid}" in doc["paths"] and "/v1/trace" in doc["paths"]


def test_reads_need_the_token_unless_opened_by_config(api, runtime, seed_host):
    import dataclasses
    status, doc = call(api, "GET", "/v1/switches", token=None)
    assert status == 401 and doc["error"]["field"] == "Authorization"
    assert call(api, "GET", "/v1/switches", token="wrong")[0] == 401
    runtime.host = dataclasses.replace(seed_host, settings=dataclasses.replace(
        seed_host.settings, rest_open_reads=True))
    assert call(api, "GET", "/v1/switches", token=None)[0] == 200
    assert call(api, "DELETE", "/v1/cache", token=None)[0] == 401


def test_writes_are_closed_when_no_token_is_configured(api, monkeypatch):
    monkeypatch.delenv("SOCKETNET_TOKEN")
    status, doc = call(api, "POST", "/v1/reload", {})
    assert status == 403 and "no REST token" in doc["error"]["message"]


def test_the_token_file_wins_over_the_environment(api, runtime, seed_host, tmp_path):
    import dataclasses
    path = tmp_path / "token"
    path.write_text("from-file\n")
    runtime.host = dataclasses.replace(seed_host, settings=dataclasses.replace(
        seed_host.settings, rest_token_file=str(path)))
    assert call(api, "GET", "/v1/switches", token="from-file")[0] == 200
    assert call(api, "GET", "/v1/switches", token=TOKEN)[0] == 401


# --- switches, flows, ports -----------------------------------------------------------


def test_switches_list_connection_state(api):
    status, doc = call(api, "GET", "/v1/switches")
    assert status == 200
    assert [(s["bridge"], s["connected"], s["dpid"]) for s in doc] == [
        ("mesh", True, "0000000000000001"), ("vmbr0", True, "0000000000000002")]


def test_a_switch_is_found_by_bridge_name_or_dpid_and_404_otherwise(api):
    assert call(api, "GET", "/v1/switches/vmbr0")[1]["dpid_int"] == 2
    assert call(api, "GET", "/v1/switches/0x2")[1]["bridge"] == "vmbr0"
    assert call(api, "GET", "/v1/switches/0000000000000002")[1]["bridge"] == "vmbr0"
    status, doc = call(api, "GET", "/v1/switches/nope")
    assert status == 404 and doc["error"]["field"] == "switch"
    assert call(api, "GET", "/v1/switches/99")[0] == 404


def test_flows_filter_by_table_purpose_port_and_class(api):
    status, doc = call(api, "GET", "/v1/switches/mesh/flows", query="table=1&purpose=classified")
    assert status == 200 and len(doc["flows"]) == 3
    assert {f["class"] for f in doc["flows"]} == {"privacy", "management", "drop"}
    assert all(f["packets"] == 3 and "n_packets=3" in f["ofctl"] for f in doc["flows"])
    privacy = call(api, "GET", "/v1/switches/mesh/flows", query="class=privacy")[1]["flows"]
    assert privacy and all(f["class"] == "privacy" for f in privacy)
    by_port = call(api, "GET", "/v1/switches/mesh/flows", query="port=veth200")[1]["flows"]
    assert by_port and all("veth200" in f["ofctl"] for f in by_port)


def test_flows_as_ofctl_lines(api):
    status, text = call(api, "GET", "/v1/switches/vmbr0/flows", query="format=ofctl&table=0")
    assert status == 200
    lines = text.splitlines()
    assert lines and all(" actions=" in line and "table=0" in line for line in lines)


@pytest.mark.parametrize("query, field", [
    ("table=x", "table"), ("table=255", "table"), ("purpose=nope", "purpose"),
    ("class=bogus", "class"), ("port=veth999", "port"), ("format=xml", "format"),
    ("colour=red", "colour")])
def test_bad_flow_filters_are_400_naming_the_field(api, query, field):
    status, doc = call(api, "GET", "/v1/switches/mesh/flows", query=query)
    assert status == 400 and doc["error"]["field"] == field


def test_ports_have_roles_and_counters(api):
    status, doc = call(api, "GET", "/v1/switches/vmbr0/ports")
    assert status == 200
    roles = {p["name"]: p["role"] for p in doc["ports"]}
    assert roles["veth102"] == "xray-client" and roles["vmbr0"] == "local"
    assert all(p["counters"]["tx_packets"] == 2 for p in doc["ports"])


def test_a_disconnected_switch_answers_503(api, runtime):
    runtime.switches[VMBR0_DPID].connected = False
    assert call(api, "GET", "/v1/switches/0x2/flows")[0] == 503


# --- the cache ----------------------------------------------------------------------------


def test_cache_lists_the_zones_connections_with_filters(api, runtime):
    status, doc = call(api, "GET", "/v1/cache")
    zone = runtime.host.classification.conntrack_zone
    assert status == 200 and doc["count"] == 4 and doc["zone"] == zone
    assert api.fake.zones == [zone]
    ids = [e["id"] for e in doc["entries"]]
    assert "tcp-10.101.0.5-40000-10.0.0.102-8080" in ids and "icmp-10.101.0.6-10.1.0.200-7" in ids
    privacy = call(api, "GET", "/v1/cache", query="class=privacy")[1]["entries"]
    assert [(e["dst"], e["state"], e["timeout"]) for e in privacy] == [
        ("10.0.0.102", "ESTABLISHED", 59)]
    replies = call(api, "GET", "/v1/cache", query="class=reply")[1]["entries"]
    assert [e["src"] for e in replies] == ["10.1.0.200"]  # a management container's own
    assert call(api, "GET", "/v1/cache", query="src=10.101.0.6")[1]["count"] == 1
    assert call(api, "GET", "/v1/cache", query="limit=1")[1]["entries"][0]["id"] == sorted(ids)[0]
    assert call(api, "GET", "/v1/cache", query="src=10.101.0.600")[0] == 400


def test_without_the_control_socket_the_listing_is_503(api):
    api.fake.unreachable = True
    status, doc = call(api, "GET", "/v1/cache")
    assert status == 503 and "connection tracker" in doc["error"]["message"]


def test_deleting_one_entry_deletes_its_connection(api, runtime):
    status, doc = call(api, "DELETE", "/v1/cache/tcp-10.101.0.5-40000-10.0.0.102-8080")
    assert status == 200 and doc["deleted"] == "tcp-10.101.0.5-40000-10.0.0.102-8080"
    assert api.fake.deleted == [(runtime.host.classification.conntrack_zone,
                                 "tcp-10.101.0.5-40000-10.0.0.102-8080")]
    assert call(api, "DELETE", "/v1/cache/tcp-10.101.0.5-40000-10.0.0.102-8080")[0] == 404


@pytest.mark.parametrize("entry", ["not-an-entry-at-all", "10.9.9.9-10.9.9.8",
                                   "tcp-10.101.0.5-x-10.0.0.102-8080",
                                   "tcp-10.101.0.5-1-10.0.0.102-70000", "icmp-10.101.0.6-1.2.3"])
def test_a_malformed_entry_is_400_naming_it(api, entry):
    status, doc = call(api, "DELETE", f"/v1/cache/{entry}")
    assert status == 400 and doc["error"]["field"] == "entry"
    assert entry in doc["error"]["message"]


def test_an_unknown_entry_is_404(api):
    assert call(api, "DELETE", "/v1/cache/udp-10.9.9.9-1-10.9.9.8-2")[0] == 404


def test_flush_empties_the_zone_by_openflow_and_says_how_many(api, runtime):
    status, doc = call(api, "DELETE", "/v1/cache")
    assert status == 200 and doc["deleted"] == 4
    assert api.fake.flushed == [(MESH_DPID, runtime.host.classification.conntrack_zone)]
    assert call(api, "GET", "/v1/cache")[1]["count"] == 0


# --- dry runs ---------------------------------------------------------------------------


def test_classify_says_privacy_for_the_xray_service(api):
    status, doc = call(api, "POST", "/v1/classify", {"src": "10.101.0.5", "dst": "10.0.0.102",
                                                      "proto": "tcp", "dport": 8080})
    assert status == 200 and doc["class"] == "privacy"
    assert doc["rule"] and doc["mark"] == 1 and doc["commit"].startswith("ct(commit,")


@pytest.mark.parametrize("body, field", [
    ({"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "tcp"}, "dport"),
    ({"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "icmp", "dport": 1}, "dport"),
    ({"src": "x", "dst": "10.0.0.102", "proto": "tcp", "dport": 1}, "src"),
    ({"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "sctp", "dport": 1}, "proto"),
    ({"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "tcp", "dport": 70000}, "dport"),
    ({"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "tcp", "dport": True}, "dport"),
    ({"dst": "10.0.0.102", "proto": "tcp", "dport": 1}, "src"),
    ({"src": "10.101.0.5", "dst": "10.0.0.102", "proto": "tcp", "dport": 1, "x": 1}, "x"),
])
def test_bad_classify_input_is_400_naming_the_field(api, body, field):
    status, doc = call(api, "POST", "/v1/classify", body)
    assert status == 400 and doc["error"]["field"] == field, doc


def test_a_body_that_is_not_a_json_object_is_400(api):
    assert call(api, "POST", "/v1/classify", raw=b"{nope")[1]["error"]["field"] == "body"
    assert call(api, "POST", "/v1/classify", raw=b"[1]")[1]["error"]["field"] == "body"


def test_trace_fills_in_the_senders_macs(api, seed_host):
    status, doc = call(api, "POST", "/v1/trace", {"bridge": "mesh", "in_port": "veth200",
                                                  "dst": "10.101.0.5", "proto": "udp",
                                                  "dport": 53})
    assert status == 200
    (bridge, flow), = api.fake.traced
    c = seed_host.mesh.port("veth200").container
    assert bridge == "mesh" and f"dl_src={c.mac}" in flow and "nw_src=10.1.0.200" in flow
    assert "udp_dst=53" in flow


def test_trace_refuses_unknown_ports_and_reports_an_unreachable_vswitchd(api):
    status, doc = call(api, "POST", "/v1/trace", {"bridge": "mesh", "in_port": "veth102",
                                                  "dst": "10.0.0.1"})
    assert status == 400 and doc["error"]["field"] == "in_port"
    api.fake.unreachable = True
    status, doc = call(api, "POST", "/v1/trace", {"bridge": "mesh", "in_port": "veth200",
                                                  "dst": "10.101.0.5"})
    assert status == 503 and "control socket" in doc["error"]["message"]


# --- config ---------------------------------------------------------------------------------


def test_config_is_redacted(api):
    status, doc = call(api, "GET", "/v1/config")
    assert status == 200 and doc["settings"]["rest_token"] == "<redacted>"
    assert TOKEN not in json.dumps(doc)


def test_a_bad_reload_is_400_with_the_issues_and_keeps_the_running_config(api, runtime,
                                                                           seed_host, tmp_path):
    import dataclasses
    config = tmp_path / "host.yaml"
    config.write_text("netmaker: 3\n")
    runtime.host = before = dataclasses.replace(seed_host, source=str(config))
    runtime.config_path = str(config)
    status, doc = call(api, "POST", "/v1/reload", {})
    assert status == 400 and doc["error"]["issues"] and doc["error"]["field"] == "config"
    assert all(i["file"] == str(config) for i in doc["error"]["issues"])
    assert runtime.host is before and runtime.config_error


def test_reload_takes_no_path_from_the_client(api):
    status, doc = call(api, "POST", "/v1/reload", {"path": "/etc/passwd"})
    assert status == 400 and doc["error"]["field"] == "path"


def test_a_good_reload_replaces_the_host(api, runtime):
    seen = []
    runtime.on_host_change(seen.append)
    status, doc = call(api, "POST", "/v1/reload", {})
    assert status == 200 and len(seen) == 1 and seen[0].source == doc["reloaded"]


def test_readiness_follows_the_bridges(api, runtime):
    assert call(api, "GET", "/v1/ready", token=None)[0] == 200
    runtime.switches[MESH_DPID].last_error = "boom"
    status, doc = call(api, "GET", "/v1/ready", token=None)
    assert status == 503 and "boom" in doc["bridges"]["mesh"]


# --- Ryu ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body, asked", [
    ("POST", "/stats/flow/1", {"table_id": 1, "match": {"in_port": 3}},
     ("flow", 1, {"table_id": 1, "match": {"in_port": 3}})),
    ("POST", "/stats/aggregateflow/1", {"cookie": 5, "cookie_mask": 255},
     ("aggregateflow", 1, {"cookie": 5, "cookie_mask": 255})),
    ("GET", "/stats/port/1/3", None, ("port", 1, 3)),
    ("GET", "/stats/meter/1", None, ("meter", 1, None)),
    ("GET", "/stats/meterconfig/1", None, ("meterconfig", 1, None)),
    ("GET", "/stats/meterfeatures/1", None, ("meterfeatures", 1, None)),
    ("GET", "/stats/tablefeatures/1", None, ("tablefeatures", 1, None)),
])
def test_ryus_filtered_and_other_reads_reach_ofctl_with_their_argument(api, method, path,
                                                                        body, asked):
    status, doc = call(api, method, path, body)
    assert status == 200 and doc == {"1": []}
    assert api.fake.ryu_asked == asked


def test_a_ryu_filter_with_an_unknown_key_is_400_and_a_write_path_404_naming_the_reads(api):
    status, doc = call(api, "POST", "/stats/flow/1", {"tableid": 1})
    assert status == 400 and "tableid" in doc["error"]["message"]
    status, doc = call(api, "POST", "/stats/flowentry/add", {"dpid": 1})
    assert status == 404 and "offers the reads" in doc["error"]["message"]
    assert "meterconfig" in doc["error"]["message"]


def test_ryu_paths_answer_and_unknown_dpids_are_404(api):
    assert call(api, "GET", "/stats/switches")[1] == [1, 2]
    assert call(api, "GET", "/stats/flow/1")[1] == {"1": []}
    assert call(api, "GET", "/stats/flow/7")[0] == 404
    assert call(api, "GET", "/stats/desc/abc")[0] == 404


def test_unknown_paths_are_404_and_wrong_methods_405(api):
    assert call(api, "GET", "/v2/nothing")[0] == 404
    assert call(api, "PUT", "/v1/switches")[0] == 405


def test_every_route_is_in_the_openapi_document():
    doc = openapi()
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path]


# --- property-based: the OpenAPI document against the app ------------------------------------

from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_schema():
    """The document as the app serves it, the app behind it (schemathesis calls it
    through WSGI), over a fake backend with both bridges connected."""
    from topology.config import load_host
    from tests.conftest import SEED_YAML
    mp = pytest.MonkeyPatch()
    mp.setenv("SOCKETNET_TOKEN", TOKEN)
    rt = Runtime()
    rt.host = load_host(str(SEED_YAML))
    rt.config_path = str(SEED_YAML)
    for dpid, bridge, base in ((MESH_DPID, rt.host.mesh, 1), (VMBR0_DPID, rt.host.privacy_bridge, 2)):
        state = rt.switch(dpid)
        state.bridge, state.ports, state.connected = bridge.name, ports_of(bridge, base), True
        state.last_sync = 1.0
    yield module("schemathesis").openapi.from_wsgi("/v1/openapi.json", Api(rt, FakeBackend(rt)))
    mp.undo()


def _operations():
    return [(r.method, r.path) for r in ROUTES]


@pytest.mark.parametrize("method, path", _operations(), ids=[f"{m} {p}" for m, p in _operations()])
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(fuzz_schema, method,
                                                                           path):
    """Hypothesis-generated requests from the OpenAPI document, positive and
    negative, each checked: no 5xx, a documented status, the documented content
    type and a body that fits the documented schema. (schemathesis' pytest plugin
    does not run under pytest 9, so its strategies are driven directly.)"""
    from hypothesis import given
    from schemathesis import GenerationMode
    from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                     response_schema_conformance, status_code_conformance)
    operation = fuzz_schema[path][method]

    strategy = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)

    @given(strategy)
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                               checks=[not_a_server_error, status_code_conformance,
                                       content_type_conformance, response_schema_conformance])

    run()


# --- the CLI's side -------------------------------------------------------------------------


def test_cli_says_when_the_api_cannot_be_reached():
    from click.testing import CliRunner
    from controller.cli.main import main
    from controller.process import free_port
    result = CliRunner().invoke(main, ["switches", "--api", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "cannot reach the socketnet API" in result.output


def test_cli_prints_click_completion_scripts():
    from click.testing import CliRunner
    from controller.cli.main import main
    result = CliRunner().invoke(main, ["completion", "bash"])
    assert result.exit_code == 0 and "_SOCKETNET_COMPLETE" in result.output
