"""Where a controller's time goes: a py-spy recording (`--format raw`, collapsed
stacks: "frame;frame;...;leaf COUNT" per line) summed per function.

    python -m bench.profile FILE [--top N]

prints the functions with the largest share of samples, inclusive (on the stack)
and self (the leaf). `python -m bench.classifier --profile DIR` records one file
per controller into DIR while the synthetic switch loads it.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])  # the checkout: frames name files under it

# py-spy's frame: "function (file.py:line)"; the line is dropped so that a
# function's samples add up.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _function(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['name']} ({path})"


def summarise(path: str) -> tuple:
    """(total samples, Counter of inclusive samples, Counter of self samples)."""
    inclusive, own = collections.Counter(), collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_function(fr) for fr in stack.split(";")]
            for name in set(frames):
                inclusive[name] += n
            own[frames[-1]] += n
    return total, inclusive, own


def report(path: str, top: int = 15) -> str:
    total, inclusive, own = summarise(path)
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"  {title}:")
        for name, n in counter.most_common(top):
            lines.append(f"    {100 * n / total:5.1f}%  {name}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print(report(args.file, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
