"""A config file read as data, safely: YAML or JSON, bounded before it is built.

A config is a few kilobytes; a hostile file must not make a reader (`socketnet
check`, or a running controller reloading) spend seconds or gigabytes on it. So
before any value is built:

- the file may be at most MAX_BYTES;
- a YAML file's events are counted as they stream from libyaml's parser (no tree
  is built, nothing recurses): a document nesting deeper than MAX_DEPTH, or
  standing for more than MAX_VALUES values once its aliases are followed (a
  few hundred bytes of nested aliases, "billion laughs", stand for billions), is
  refused at the event that crosses the bound;
- a JSON file's brackets are counted the same way (outside strings), as Python's
  json module recurses and a deep file would exhaust its stack.

Then the data is built, refusing a key given twice in one mapping (PyYAML would
keep the last one silently). `load(file)` gives (data, None) or (None, what is
wrong, with line and column where there is one).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MAX_BYTES = 4 << 20
MAX_VALUES = 20_000
MAX_DEPTH = 64

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where there is one


class _Refused(Exception):
    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.mark = problem, mark


def _where(mark) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _scan_yaml(text: str) -> None:
    """Raise _Refused at the first event that nests deeper than MAX_DEPTH or makes
    a document stand for more than MAX_VALUES values (aliases followed), or a
    yaml.YAMLError for text that is not YAML. Linear in the events."""
    sizes: dict = {}  # anchor -> the values it stands for
    stack: list = []  # [anchor, values so far] of each open collection
    documents = 0
    aliased = False

    def add(values: int, mark) -> None:
        nonlocal documents
        if stack:
            stack[-1][1] += values
            total = stack[-1][1]
        else:
            documents += values
            total = documents
        if total > MAX_VALUES:
            raise _Refused(f"it stands for more than {MAX_VALUES:,} values"
                           + (" once its aliases are followed" if aliased else ""), mark)

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _Refused(f"it nests deeper than {MAX_DEPTH} levels", event.start_mark)
            stack.append([event.anchor, 1])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, values = stack.pop()
            if anchor is not None:
                sizes[anchor] = values
            add(values, event.start_mark)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(1, event.start_mark)
        elif isinstance(event, yaml.AliasEvent):
            aliased = True
            add(sizes.get(event.anchor, 1), event.start_mark)


class _StrictLoader(_Loader):
    """The safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# A JSON string (escapes included), or a bracket outside one.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _scan_json(text: str) -> None:
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, m.start())
                column = m.start() - (text.rfind("\n", 0, m.start()) + 1)
                raise _Refused(f"it nests deeper than {MAX_DEPTH} levels",
                               yaml.Mark("", m.start(), line, column, None, None))
        elif c in "]}":
            depth -= 1


class _DuplicateJsonKey(ValueError):
    pass


def _json_object(pairs: list) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateJsonKey(f"duplicate key {key!r}")
        seen.add(key)
    return dict(pairs)


def load(file: str) -> tuple:
    """(data, None), or (None, what is wrong with the file)."""
    path = Path(file)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return None, f"{size:,} bytes: a config file may have at most {MAX_BYTES:,}"
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read: {getattr(e, 'strerror', None) or e}"
    kind = "JSON" if file.endswith(".json") else "YAML"
    try:
        if kind == "JSON":
            _scan_json(text)
            return json.loads(text, object_pairs_hook=_json_object), None
        _scan_yaml(text)
        return yaml.load(text, Loader=_StrictLoader), None
    except _Refused as e:
        return None, f"not accepted as {kind}: {e.problem}{_where(e.mark)}"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
    except _DuplicateJsonKey as e:
        return None, f"not valid JSON: {e}"
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return None, f"not valid YAML: {getattr(e, 'problem', None) or e}{_where(mark)}"
