"""Config loading never crashes and never hangs, whatever the file holds: any value
at any field of the seed, and any bytes, give a Host or issues naming the file."""
import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from topology.config import check_file

SEED = yaml.safe_load((Path(__file__).parents[3] / "examples" / "seed.yaml").read_text())


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


PATHS = [p for p in _paths(SEED) if p]

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=True), st.text(max_size=40),
                     st.sampled_from(["10.0.0.300/24", "::1", "02:00:00:00:00", "mesh",
                                      "vmbr0", "veth102", "0.0.0.0/0", "-1", "65536"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(path=st.sampled_from(PATHS), value=_values)
def test_any_value_at_any_field_gives_a_host_or_issues(tmp_path_factory, path, value):
    data = copy.deepcopy(SEED)
    _set(data, path, value)
    file = tmp_path_factory.mktemp("fuzz") / "host.yaml"
    file.write_text(yaml.safe_dump(data))
    result = check_file(str(file))
    assert (result.host is None) == bool(result.errors)
    assert all(issue.file == str(file) for issue in result.errors)


@settings(max_examples=150, deadline=2000, derandomize=True)
@given(content=st.binary(max_size=400))
def test_any_bytes_give_issues_naming_the_file(tmp_path_factory, content):
    file = tmp_path_factory.mktemp("fuzz") / "host.yaml"
    file.write_bytes(content)
    result = check_file(str(file))
    assert result.errors and result.host is None
    assert all(issue.file == str(file) for issue in result.errors)
