"""The README and every command's --help say only what exists.

Each `socketnet` command line the README shows (in code blocks and inline code)
is resolved through the real click command tree, with each option it uses; each
`socketnet:` config key it names is given to the real config reader, which must
not call it unknown; each metric it names must be one apps/metrics.py exports;
each repository path it names must exist; the cookie purposes and table names it
lists are the pipeline's; the service unit runs the config path it documents.
"""
from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from controller.cli.main import main
from controller.pipeline import TABLES, Purpose
from tests.unit.test_monitoring_files import exported_names

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = {"README.md": README, "bench/README.md": (ROOT / "bench" / "README.md").read_text()}


def _code(text: str) -> list:
    """Every code block's lines and every inline code span."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return [line for block in blocks for line in block.splitlines()] + spans


# Where a command line starts: at the line's (or span's) start, after a prompt,
# sudo, a path to the executable, `eval "$(`, or a shell separator.
_COMMAND = re.compile(r"(?:^|^\$ |\bsudo |[;|&] |\$\()\s*(?:[\w./-]*/)?socketnet"
                      r"((?:\s+[^\s#;&|<>)`]+)+)")


def _command_lines() -> list:
    """Each `socketnet ...` command line shown in the READMEs, from `socketnet` up
    to a comment, a pipe, `;`, `&&` or a shell redirection."""
    out = []
    for doc, text in DOCS.items():
        for line in _code(text):
            line = re.split(r"\s#\s|^#", line, maxsplit=1)[0]
            for m in _COMMAND.finditer(line.strip()):
                words = m.group(1).split()
                if words and (words[0].startswith("-") or re.match(r"[a-z][a-z-]*$", words[0])):
                    out.append((doc, "socketnet" + m.group(1)))
    return out


def _options(command: click.Command) -> set:
    return {opt for p in command.params for opt in p.opts + p.secondary_opts}


def _resolve(line: str):
    """The (command path, problems) of a documented command line."""
    try:
        words = shlex.split(line)[1:]
    except ValueError:
        words = line.split()[1:]
    command, path, problems = main, ["socketnet"], []
    known = _options(main)
    expect_value = False
    for word in words:
        if word in ("...", "[ARGS]"):
            continue
        if word.startswith("-") and not re.match(r"-\d", word):
            name = word.split("=", 1)[0]
            if name not in known | {"--help", "-h"}:
                problems.append(f"{' '.join(path)}: no option {name}")
            param = next((p for p in command.params if name in p.opts + p.secondary_opts),
                         None)
            expect_value = param is not None and not getattr(param, "is_flag", False) \
                and "=" not in word and not getattr(param, "count", False)
            continue
        if expect_value:
            expect_value = False
            continue
        if isinstance(command, click.Group):
            alternatives = word.split("|")
            if all(re.match(r"[a-z][a-z0-9-]*$", w) for w in alternatives):
                missing = [w for w in alternatives if w not in command.commands]
                if missing:
                    problems.append(f"{' '.join(path)}: no command {', '.join(missing)}")
                    return path, problems
                command = command.commands[alternatives[0]]
                path.append(alternatives[0])
                known |= _options(command)
                continue
        # an argument of the command
    return path, problems


COMMAND_LINES = _command_lines()


def test_the_readmes_show_commands():
    assert len(COMMAND_LINES) > 40
    paths = {" ".join(_resolve(line)[0]) for _, line in COMMAND_LINES}
    assert {"socketnet trace", "socketnet lab up", "socketnet host apply", "socketnet audit",
            "socketnet check"} <= paths


@pytest.mark.parametrize("doc,line", COMMAND_LINES, ids=[line[:60] for _, line in COMMAND_LINES])
def test_every_documented_command_and_option_exists(doc, line):
    _, problems = _resolve(line)
    assert not problems, f"{doc}: {line}"


def _commands(group=main, path=("socketnet",)):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_option_a_help_text_names_is_an_option_of_that_command_or_its_parents():
    for path, command in _commands():
        known, group = set(_options(main)), main
        for name in path[1:]:
            group = group.commands[name] if isinstance(group, click.Group) else group
            known |= _options(group)
        ctx = click.Context(command, info_name=" ".join(path))
        text = command.get_help(ctx)
        # An option of another command is named with that command ("socketnet X --y").
        text = re.sub(r"socketnet [a-z][a-z -]*?--[a-z-]+", "", text)
        text = re.sub(r"[\w-]+'s --[a-z-]+", "", text)  # another program's ("ovs-vsctl's --db")
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))
        assert named <= known | {"--help"}, (" ".join(path), sorted(named - known))


def _expand(name: str) -> list:
    """`socketnet_port_{packets,bytes}_total` -> both names."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def test_every_documented_metric_is_exported():
    exported = exported_names() | {"python_info"}
    exported |= {n[:-len("_bucket")] for n in exported if n.endswith("_bucket")}  # histograms
    names = {n for text in DOCS.values()
             for m in re.findall(r"\b(socketnet_[a-z_]+(?:\{[a-z,]+\}[a-z_]*)*[a-z])", text)
             for n in _expand(m)}
    assert len(names) > 20
    missing = sorted(n for n in names if n not in exported)
    assert not missing


_REPO_PATH = re.compile(r"(?<![\w./-])((?:controller|apps|topology|bench|tests|deploy|monitoring|"
                        r"examples)/[\w./*-]*[\w/*])")


def test_every_repository_path_the_docs_name_exists():
    named = {m for text in DOCS.values() for m in _REPO_PATH.findall(text)}
    assert len(named) > 30
    missing = sorted(p for p in named if not list(ROOT.glob(p.rstrip("/"))))
    assert not missing


def _documented_keys() -> set:
    """The socketnet: keys the README names: `socketnet.X.Y` anywhere, and the
    first column of its two key tables (the second's keys are classification's)."""
    keys = set(re.findall(r"`socketnet\.(?!py`)([a-z_][a-z_.]*[a-z_])", README))
    section = README.split("The `socketnet:` section", 1)[1].split("\n### ", 1)[0]
    tables = re.split(r"\nUnder `classification`", section)
    for prefix, table in zip(("", "classification."), tables):
        for row in re.findall(r"^\| `([^`|]+)` \|", table, flags=re.M):
            keys.add(prefix + row)
    return keys


def _place(data: dict, key: str, seed: dict) -> None:
    """Set socketnet.KEY in `data` to a placeholder, through lists and names."""
    container = next(iter(c for c in seed["lxc"]["containers"]))
    key = (key.replace("<iface>", "warp0")
           .replace('"<id>"', str(container["id"] if isinstance(container, dict) else container)))
    parts = key.replace("[]", ".[]").split(".")
    node = data.setdefault("socketnet", {})
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "*":
            return
        if part == "[]":
            continue
        nxt = parts[i + 1] if not last else None
        if last:
            node[part] = "__placeholder__"
        elif nxt == "[]":
            node[part] = [{}]
            node = node[part][0]
        else:
            value = node.get(part)
            if not isinstance(value, dict):
                value = node[part] = {}
            node = value


def test_every_documented_config_key_is_read_by_the_config(tmp_path):
    from topology.config import check_file
    seed = yaml.safe_load((ROOT / "examples" / "seed.yaml").read_text())
    keys = _documented_keys()
    assert {"rest.ovs_ctl", "openflow.listen", "metrics.stats_interval"} <= keys, keys
    unknown = []
    for key in sorted(keys):
        data = yaml.safe_load((ROOT / "examples" / "seed.yaml").read_text())
        _place(data, key, seed)
        path = tmp_path / "host.yaml"
        path.write_text(yaml.safe_dump(data))
        for issue in check_file(str(path)).errors:
            if issue.message.startswith("unknown key"):
                unknown.append((key, str(issue)))
    assert not unknown


def test_the_cookie_purposes_and_table_names_listed_are_the_pipelines():
    listed = re.search(r"\(`0x534e0000000000PP`: ([^)]*)\)", README).group(1)
    assert {p.strip() for p in listed.replace("\n", " ").split(",")} == {
        p.label for p in Purpose}
    rows = re.findall(r"^\| (\d) \| ([a-z]+) \|", README, flags=re.M)
    assert {(int(i), name) for i, name in rows} == {(t.id, t.name) for t in TABLES}


def test_the_service_unit_runs_the_config_path_the_readme_gives():
    unit = (ROOT / "deploy" / "socketnet.service").read_text()
    path = re.search(r"^ExecStart=\S+ run -c (\S+)", unit, flags=re.M).group(1)
    service = README.split("## Running as a service", 1)[1].split("\n## ", 1)[0]
    assert f"socketnet run -c\n{path}" in service or f"socketnet run -c {path}" in service
    check = re.search(r"^ExecStartPre=\S+ check (?:--quiet )?(\S+)", unit, flags=re.M).group(1)
    assert check == path


def test_the_words_table_names_what_the_code_has():
    from controller import compiler, pipeline
    from topology import model

    table = README.split("## Words", 1)[1].split("\n## ", 1)[0]
    column = [row.split(" | ")[-1] for row in table.splitlines() if row.startswith("| ")][1:]
    names = [n for cell in column for n in re.findall(r"`([A-Za-z_.]+)`", cell)]
    where = {"Host": model.Host, "Role": model.Role, "TrafficClass": model.TrafficClass,
             "Zone": pipeline.Zone, "Mark": pipeline.Mark, "Purpose": pipeline.Purpose,
             "compiler": compiler}
    missing = []
    for name in names:
        owner, _, attr = name.partition(".")
        if owner in where and attr:
            target = where[owner]
            fields = getattr(target, "__dataclass_fields__", {})
            if not (hasattr(target, attr) or attr in fields):
                missing.append(name)
    assert len(names) > 15
    assert not missing
    roles = re.findall(r"`([a-z-]+)`", table.split("| role |", 1)[1].split("\n", 1)[0])
    assert set(roles) == {r.value for r in model.Role}
