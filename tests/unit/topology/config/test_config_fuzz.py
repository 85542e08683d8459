"""Config loading never crashes and never hangs, whatever the file holds: any value
at any field of the seed, and any bytes, give a Host or issues naming the file."""
import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from topology.config import check_file

SEED = yaml.safe_load((Path(__file__).parents[4] / "examples" / "seed.yaml").read_text())


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


def _laughs(levels: int, width: int) -> str:
    """A document of nested aliases: `width` ** `levels` strings in a few lines."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(levels=st.integers(1, 12), width=st.integers(1, 12))
def test_nested_aliases_are_refused_before_they_expand(tmp_path_factory, levels, width):
    """A few hundred bytes of nested aliases would expand to gigabytes: the file is
    refused, naming the limit, unless what it expands to stays within it."""
    from topology.document import MAX_VALUES
    path = tmp_path_factory.mktemp("laughs") / "config.yaml"
    path.write_text(_laughs(levels, width))
    result = check_file(path)
    expanded = sum(width ** i for i in range(1, levels + 1)) + levels * 2 + 1
    assert result.errors and result.host is None  # it is no config either way
    if expanded > MAX_VALUES * 1.5:
        (issue,) = result.errors
        assert "values once its aliases are followed" in issue.message, issue
    elif expanded < MAX_VALUES / 1.5:
        assert not any("values once its aliases" in i.message for i in result.errors)
    # an error never renders the expanded value
    assert all(len(str(i)) < 300 for i in result.errors), result.errors[:3]


def test_deep_nesting_is_refused_naming_the_depth(tmp_path):
    from topology.document import MAX_DEPTH
    path = tmp_path / "deep.yaml"
    path.write_text("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    (issue,) = check_file(path).errors
    assert f"nests deeper than {MAX_DEPTH} levels" in issue.message


def test_an_issue_with_a_huge_value_prints_only_its_beginning():
    from topology.config import ConfigIssue
    text = str(ConfigIssue("f.yaml", "lxc", [list(range(1000))] * 1000, "expected a mapping"))
    assert len(text) < 200 and text.endswith("expected a mapping")


# Every hostile file of bench/hostile_config.py (each at most 1 MB), checked in a
# fresh process: its peak RSS before and after, in KiB.
_CHECK_EACH = """
import json, resource, sys
from topology.config import check_file
check_file(sys.argv[1])  # the seed: what any check needs, imported and warmed
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
errors = {}
for path in sys.argv[2:]:
    result = check_file(path)
    errors[path] = [str(i) for i in result.errors[:3]] if result.host is None else None
print(json.dumps({"grown_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
                  "errors": errors}))
"""


def test_hostile_files_of_a_megabyte_are_refused_with_short_errors_in_bounded_memory(tmp_path):
    import json
    import subprocess
    import sys

    from bench import hostile_config

    files = hostile_config.write(tmp_path)
    seed = hostile_config.SEED
    out = subprocess.run([sys.executable, "-c", _CHECK_EACH, str(seed),
                          *map(str, files.values())], capture_output=True, text=True,
                         timeout=120, cwd=seed.parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    for name, path in files.items():
        errors = doc["errors"][str(path)]
        assert errors, f"{name} was accepted"
        assert all(len(e) < 300 for e in errors), (name, errors)
    assert doc["grown_kib"] < hostile_config.TARGET_MB * 1024, doc["grown_kib"]
