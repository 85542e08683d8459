"""The product's isolation audit (controller/audit.py), run on the test suite's table
simulator: silent on the compiled pipeline, loud on broken ones, with the rule."""
from types import SimpleNamespace

import pytest

from controller.audit import Matrix, audit
from controller.flow import Apply, Flow, Output

from tests.isolation.decisions import decisions
from tests.isolation.fake_switch import OFPP_NORMAL, HostSwitches, switch_macs
from tests.isolation.packets import LOCAL

_TYPES = {"tcp": (0x0800, 6), "udp": (0x0800, 17), "icmp": (0x0800, 1), "arp": (0x0806, None)}
_INTS = {"arp_op", "icmp_type", "icmp_code", "tcp_src", "tcp_dst", "udp_src", "udp_dst"}


def headers_of(flow: str) -> dict:
    """An ofproto/trace flow string as the simulator's header dict."""
    h = {}
    for token in flow.split(","):
        key, eq, value = token.partition("=")
        if not eq:
            dl_type, proto = _TYPES[key]
            h["dl_type"] = dl_type
            if proto is not None:
                h["nw_proto"] = proto
            continue
        if key in ("tcp_src", "udp_src"):
            key = "tp_src"
        elif key in ("tcp_dst", "udp_dst"):
            key = "tp_dst"
        h[key] = int(value) if key in _INTS or key in ("tp_src", "tp_dst") else value
    return h


def simulated(switches: HostSwitches, host):
    """audit's `trace` over the simulator; LOCAL exits named after the bridge, as
    ofproto/trace's port names have it."""
    def trace(bridge, flow):
        result = switches.trace(bridge, headers_of(flow))
        return SimpleNamespace(exits=[SimpleNamespace(bridge=e.bridge,
                                                      port=e.bridge if e.port == LOCAL
                                                      else e.port)
                                      for e in result.egress])
    return trace


@pytest.fixture
def macs(seed_host):
    return switch_macs(seed_host)


def test_the_compiled_pipeline_passes_the_audit(seed_host, macs):
    switches = HostSwitches.compile(seed_host, macs)
    for zone, headers, mark in decisions(seed_host, macs, privacy=True):
        switches.commit(zone, headers, mark)
    result = audit(seed_host, macs, simulated(switches, seed_host))
    assert result["packets"] > 500
    assert result["ok"], result["violations"][:5]


def test_a_normal_flow_on_vmbr0_is_caught_as_n2_and_n6(seed_host, macs):
    normal = Flow(0, 65000, (), (Apply((Output(OFPP_NORMAL),)),), 0)
    switches = HostSwitches.compile(seed_host, macs, extra_flows={"vmbr0": [normal]})
    result = audit(seed_host, macs, simulated(switches, seed_host))
    assert {"N2", "N5", "N6", "N9"} <= set(result["rules"])


def test_the_seeds_mesh_to_privacy_flow_is_caught_as_n4(seed_host, macs):
    mesh = seed_host.mesh
    numbers = {p.name: i for i, p in enumerate(mesh.ports, start=1)}
    seed = Flow(0, 65000, (("in_port", numbers["mesh-gw"]),),
                (Apply((Output(numbers["to-privacy"]),)),), 0)
    switches = HostSwitches.compile(seed_host, macs, extra_flows={"mesh": [seed]})
    result = audit(seed_host, macs, simulated(switches, seed_host))
    assert "N4" in result["rules"]


def test_a_flow_that_lets_a_forged_source_across_is_caught_as_n8(seed_host, macs):
    """MCP's port claiming the xray client's address, sent across by a flow behind
    socketnet's back: only forged packets take it, so only N8 can see it."""
    mesh = seed_host.mesh
    numbers = {p.name: i for i, p in enumerate(mesh.ports, start=1)}
    forged = Flow(0, 65000, (("in_port", numbers["veth200"]), ("eth_type", 0x0800),
                             ("ipv4_src", "10.0.0.102")),
                  (Apply((Output(numbers["to-privacy"]),)),), 0)
    switches = HostSwitches.compile(seed_host, macs, extra_flows={"mesh": [forged]})
    result = audit(seed_host, macs, simulated(switches, seed_host))
    assert result["rules"] == ["N8"], result["violations"][:3]
    assert all(v["in_port"] == "veth200" and "nw_src=10.0.0.102" in v["flow"]
               and "(N1)" in v["why"] for v in result["violations"])


def test_every_container_and_uplink_claims_every_other_containers_address(seed_host, macs):
    matrix = Matrix(seed_host, macs)
    claims = {(s.port, s.address) for s in matrix.forgers(matrix.senders())}
    containers = set(matrix.owners)
    assert containers == {"10.1.0.200", "10.1.0.201", "10.0.0.100", "10.0.0.102"}
    for port, own in (("veth200", "10.1.0.200"), ("veth201", "10.1.0.201"),
                      ("veth100", "10.0.0.100"), ("veth102", "10.0.0.102"),
                      ("mesh-gw", None), ("vmbr0-gw", None)):
        assert {a for p, a in claims if p == port} == containers - {own}, port
    assert not any(port in ("to-privacy", "from-mesh") for port, _ in claims)


def test_a_forged_packet_is_judged_as_what_it_claims_to_be_too(seed_host, macs):
    """MCP claiming the xray client's address may not reach op-dbus-api, which MCP
    itself may (W5) but the xray client may not (N5); Netmaker ingress claiming
    a container's address may go nowhere at all."""
    matrix = Matrix(seed_host, macs)
    forged = {(p.in_port, p.name): p for p in matrix.probes() if "forged" in p.name}
    as_xray = next(p for (port, name), p in forged.items()
                   if port == "veth200" and name.startswith("tcp 10.0.0.102:")
                   and "-> 10.1.0.201:" in name)
    assert as_xray.forbidden[("mesh", "veth201")][0] == "N8"
    assert "as the xray it claims to be" in as_xray.forbidden[("mesh", "veth201")][1]
    honest = next(p for p in matrix.probes() if p.in_port == "veth200"
                  and p.name.startswith("tcp 10.1.0.200:") and "-> 10.1.0.201:" in p.name)
    assert ("mesh", "veth201") not in honest.forbidden
    from_netmaker = next(p for (port, _), p in forged.items() if port == "mesh-gw")
    assert set(from_netmaker.forbidden) == set(matrix.points)


def test_each_origin_forbids_what_the_promise_says(seed_host, macs):
    matrix = Matrix(seed_host, macs)
    probes = {(p.bridge, p.in_port): p for p in matrix.probes()
              if not p.name.endswith("forged source")}
    management = probes[("mesh", "veth200")].forbidden
    assert management[("vmbr0", "veth102")][0] == "N1"
    warp = probes[("vmbr0", "vmbr0-gw")].forbidden
    assert ("vmbr0", "veth100") not in warp and warp[("mesh", "veth200")][0] == "N2"
    assert all(p.forbidden[("mesh", "mesh")][0] == "N9" for p in probes.values())
