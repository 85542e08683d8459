"""topology.config.keys: every socketnet: key is declared once, and the reader,
the docs and the defaults follow the declaration: each declared key is read and
bounded at its path, the key tables of the README and of topology.config's
docstring are the declaration's, and a key's default is its model field's."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import topology.config as config
from topology.config import check_file, keys
from topology.config.reader import At
from topology.model import Settings

ROOT = Path(__file__).resolve().parents[4]
SEED = yaml.safe_load((ROOT / "examples" / "seed.yaml").read_text())


def _uplink(seed: dict) -> str:
    """The seed's netmaker interface: an uplink ports.<iface> may name."""
    return seed["netmaker"]["interface"]


def _container(seed: dict) -> str:
    return str(seed["lxc"]["containers"][0]["id"])


def _concrete(path: str, seed: dict) -> str:
    """The key's path as an issue names it, with entries chosen: socketnet.nodes[0].name."""
    name = At("", None).key_path(_container(seed))  # quoted unless a plain key
    path = path.replace("<iface>", _uplink(seed)).replace('"<id>"', name)
    return "socketnet." + path.replace("[]", "[0]")


def _with(seed: dict, path: str, value) -> dict:
    """The seed with socketnet.PATH set to `value`, and whatever entry it is in
    made complete (a node has a name and subnets, a rule a name and class)."""
    data = copy.deepcopy(seed)
    node = data.setdefault("socketnet", {})
    parts = path.replace("<iface>", _uplink(seed)).replace('"<id>"', _container(seed)).split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part.endswith("[]"):
            entry = {"nodes": {"name": "n", "subnets": ["10.250.0.0/24"]},
                     "rules": {"name": "r", "class": "drop"}}[part[:-2]]
            node[part[:-2]] = [dict(entry)]
            node = node[part[:-2]][0]
        elif last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
    return data


def _check(tmp_path, data: dict):
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump(data))
    return check_file(str(path))


def test_the_readmes_table_and_the_docstrings_list_are_the_declarations():
    readme = (ROOT / "README.md").read_text()
    for section in ("", "classification"):
        assert keys.markdown_table(section) in readme
        assert keys.listing(section) in config.__doc__


def test_the_tables_hold_every_key_but_the_retired():
    rows = keys.markdown_table() + keys.markdown_table("classification")
    for k in keys.KEYS:
        listed = f"| `{k.path.removeprefix('classification.')}` |" in rows
        assert listed != bool(k.retired), k.path


@pytest.mark.parametrize("key", [k for k in keys.KEYS if not k.retired], ids=lambda k: k.path)
def test_a_wrong_value_is_refused_at_the_keys_own_path(tmp_path, key):
    result = _check(tmp_path, _with(SEED, key.path, {"not": "a value"}))
    at = [i for i in result.errors if i.path == _concrete(key.path, SEED)]
    assert at, [str(i) for i in result.errors]
    assert not any(i.message.startswith("unknown key") for i in result.errors)


@pytest.mark.parametrize("key", [k for k in keys.KEYS if k.retired], ids=lambda k: k.path)
def test_a_retired_key_is_warned_about_and_loads(tmp_path, key):
    result = _check(tmp_path, _with(SEED, key.path, "anything"))
    assert result.errors == []
    assert [w.message for w in result.warnings
            if w.path == _concrete(key.path, SEED)] == [key.retired]


def _bounded():
    for k in keys.KEYS:
        if k.value.bounds:
            yield pytest.param(k, *k.value.bounds, id=k.path)


@pytest.mark.parametrize("key,low,high", list(_bounded()))
def test_an_integer_key_takes_its_declared_bounds_and_nothing_beyond(tmp_path, key, low, high):
    for value in (low - 1, high + 1):
        result = _check(tmp_path, _with(SEED, key.path, value))
        assert [i.message for i in result.errors if i.path == _concrete(key.path, SEED)] == [
            f"not in {low}..{high}"], value
    result = _check(tmp_path, _with(SEED, key.path, low))
    assert not [i for i in result.errors if i.path == _concrete(key.path, SEED)]


def test_a_keys_default_is_its_model_fields():
    assert keys.key("openflow.listen").default_words() == (
        f"{Settings.ofp_listen_host}:{Settings.ofp_listen_port}")
    assert keys.key("openflow.echo_interval").default_words() == "2"
    assert keys.key("openflow.peer").default_words() == "none"
    assert keys.key("rest.open_reads").default_words() == "false"


def test_a_file_without_the_section_gets_every_models_default(tmp_path):
    data = copy.deepcopy(SEED)
    data.pop("socketnet", None)
    host = _check(tmp_path, data).host
    assert host.settings == Settings()


def test_the_mappings_take_the_declared_keys():
    assert set(keys.under("openflow")) == {"listen", "echo_interval", "echo_misses", "role",
                                            "peer"}
    assert "rules" in keys.under("classification")
    assert "over_limit" in keys.under("classification.limits")
    assert keys.required("classification.rules[]") == ("name", "class")
