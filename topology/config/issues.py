"""A config file's problems: one `ConfigIssue` per field, all of them in one
`ConfigError`; `ABSENT` for a field that is missing."""
from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # ConfigIssue.value of a missing field or a whole-file problem


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, at one field."""
    file: str
    path: str  # "lxc.containers[2].properties.ipv4_address"; "" for the whole file
    value: Any = field(hash=False)  # the offending value as the file has it, or ABSENT
    message: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        if self.value is ABSENT:
            return f"{where}: {self.message}"
        value = _REPR.repr(self.value)  # bounded: never the whole of a big value
        if len(value) > _LONGEST_VALUE:
            value = value[:_LONGEST_VALUE - 3] + "..."
        return f"{where} = {value}: {self.message}"


_LONGEST_VALUE = 60  # a mapping or list given where a scalar belongs can be long
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 80, 80


class ConfigError(ValueError):
    """A config file socketnet cannot run from; `.issues` says everything wrong with it."""

    def __init__(self, issues: list):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

