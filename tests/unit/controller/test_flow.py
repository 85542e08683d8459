"""Flow values: canonical matches, ordering of instructions, ovs-ofctl rendering."""
import pytest

from controller.flow import (ETH_TYPE_ARP, ETH_TYPE_IP, IPPROTO_TCP, Apply, Flow, FlowError,
                             Goto, Output, SetField, WriteMetadata)


def test_masks_that_cover_the_whole_field_become_exact_matches():
    a = Flow.make(2, 10, {"ipv4_dst": ("10.0.0.102", "255.255.255.255")})
    b = Flow.make(2, 10, {"ipv4_dst": "10.0.0.102"})
    assert a == b and hash(a) == hash(b)


def test_prefixes_compare_equal_whatever_their_spelling():
    a = Flow.make(2, 10, {"ipv4_dst": ("10.101.0.0", "255.255.0.0")})
    b = Flow.make(2, 10, {"ipv4_dst": "10.101.7.9/16"})
    assert a == b
    assert a.match_dict["ipv4_dst"] == "10.101.0.0/16"


def test_instructions_are_kept_in_openflow_execution_order():
    f = Flow.make(0, 1, {}, [Goto(2), WriteMetadata(1)])
    assert [type(i) for i in f.instructions] == [WriteMetadata, Goto]


def test_unknown_match_field_is_refused_with_its_name():
    with pytest.raises(FlowError, match="vlan_vid"):
        Flow.make(0, 1, {"vlan_vid": 5})


def test_non_contiguous_mask_is_refused():
    with pytest.raises(FlowError, match="non-contiguous"):
        Flow.make(0, 1, {"ipv4_src": ("10.0.0.0", "255.0.255.0")})


def test_ofctl_line_reads_like_ovs_dump_flows():
    f = Flow.make(2, 200, {"metadata": 3, "eth_type": ETH_TYPE_IP, "ip_proto": IPPROTO_TCP,
                           "eth_dst": "02:00:0A:00:00:66", "ipv4_dst": "10.0.0.102",
                           "tcp_dst": 8080},
                  [Apply((SetField("eth_src", "02:00:00:00:00:01"), Output(4)))],
                  cookie=0x534E000000000021)
    assert f.ofctl({4: "veth102"}) == (
        "cookie=0x534e000000000021, table=2, priority=200,tcp,metadata=0x3,"
        "dl_dst=02:00:0a:00:00:66,nw_dst=10.0.0.102,tp_dst=8080 "
        "actions=set_field:02:00:00:00:00:01->eth_src,output:veth102")


def test_flow_without_instructions_prints_as_drop():
    f = Flow.make(0, 0, {"eth_type": ETH_TYPE_ARP})
    assert f.ofctl().endswith("priority=0,arp actions=drop")
