"""The world's generated node2 config (topology.labs.nodes.node2_config): the seed's
shape with node2's addresses, valid for socketnet, and this host as its node."""
from pathlib import Path

import yaml
from netaddr import IPNetwork

from topology.config import load_host
from topology.labs import cli as lab_cli
from topology.labs import nodes, observe, record, world
from topology.model import Role

SEED = Path(__file__).resolve().parents[4] / "examples" / "seed.yaml"


def test_node2_config_is_the_seeds_shape_with_node2s_addresses(tmp_path):
    host = load_host(SEED)
    node = host.nodes[0]
    doc = nodes.node2_config(yaml.safe_load(SEED.read_text()), host, node.subnets[0])
    path = tmp_path / "node2.yaml"
    path.write_text(yaml.safe_dump(doc))
    node2 = load_host(path)
    assert [b.name for b in node2.bridges] == [b.name for b in host.bridges]
    (vector_db,) = node2.mesh.containers
    assert vector_db.address in node.subnets[0] and vector_db.name == "vector-db"
    assert vector_db.services[0].port == nodes.VECTOR_DB_PORT
    assert node2.mesh.one(Role.NETMAKER_UPLINK).address == IPNetwork("10.2.0.1/24")
    assert node2.nodes[0].subnets == (IPNetwork("10.1.0.0/24"),)  # this host's management
    assert not node2.privacy_subnet & host.privacy_subnet


def test_the_lab_command_and_the_world_agree_on_where_records_live():
    assert lab_cli.STATE_ROOT == record.STATE_ROOT


def test_one_seed_config_every_default_names_it():
    from controller.cli import main as cli
    from topology import config
    assert lab_cli.SEED_CONFIG is world.SEED_CONFIG is cli.SEED_CONFIG is config.SEED_CONFIG
    example = Path(config.SEED_CONFIG).parents[1] / "examples" / "seed.yaml"
    assert Path(config.SEED_CONFIG).read_bytes() == example.read_bytes()  # the README's copy


def test_dump_ports_parse():
    text = ('OFPST_PORT reply (OF1.3) (xid=0x2): 2 ports\n'
            '  port  veth200: rx pkts=12, bytes=900, drop=0, errs=0, frame=0, over=0, crc=0\n'
            '           tx pkts=3, bytes=200, drop=0, errs=0, coll=0\n'
            '           duration=1.0s\n'
            '  port  "mesh-gw": rx pkts=1, bytes=9, drop=0, errs=0, frame=0, over=0, crc=0\n'
            '           tx pkts=4, bytes=9, drop=0, errs=0, coll=0\n')
    assert observe.parse_dump_ports(text) == {"veth200": (12, 3), "mesh-gw": (1, 4)}
