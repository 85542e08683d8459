"""Hostile config files of up to 1 MB, and how long `check` takes on each.

    python -m bench.hostile_config            every file, 3 runs each, in this process

Each file is made here (`FILES`: name -> text): nested aliases ("billion
laughs"), a megabyte of aliases to one anchor, a megabyte of anchors, deep
sequences, mappings and JSON, a mapping of 80,000 keys, one huge string. Each is
checked with topology.config.check_file, as `socketnet check` and a reload do,
and timed against the seed's config checked in the same run (the ratio), with the
process's peak RSS growth. Target: every file answered in under 1 s and 100 MB.
tests/unit/topology/test_config_fuzz.py checks that each is refused, with a short
error, within the memory bound.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

MB = 1_000_000
SEED = Path(__file__).resolve().parents[1] / "examples" / "seed.yaml"
TARGET_SECONDS = 1.0
TARGET_MB = 100


def _laughs(levels: int, width: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _aliases() -> str:
    head = "a: &a [x, y, z]\nb:\n"
    return head + "  - *a\n" * ((MB - len(head)) // 8)


def _files() -> dict:
    half = MB // 2 - 1
    return {
        "laughs.yaml": _laughs(9, 9),
        "aliases.yaml": _aliases(),
        "anchors.yaml": "".join(f"k{i}: &a{i} {i}\n" for i in range(MB // 22)),
        "deep-sequence.yaml": "[" * half + "]" * half,
        "deep-mapping.yaml": "{a: " * ((MB - 1) // 5) + "1" + "}" * ((MB - 1) // 5),
        "deep.json": '{"a":' * (MB // 6) + "1" + "}" * (MB // 6),
        "wide.yaml": "".join(f"k{i}: {i}\n" for i in range(MB // 14)),
        "string.yaml": "netmaker: " + "x" * (MB - 20) + "\n",
    }


FILES = _files()


def write(directory: Path) -> dict:
    """name -> path of each file, written into `directory` (each at most 1 MB)."""
    out = {}
    for name, text in FILES.items():
        path = directory / name
        path.write_text(text)
        assert path.stat().st_size <= MB, (name, path.stat().st_size)
        out[name] = path
    return out


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path: Path, runs: int) -> tuple:
    """(best seconds of `runs`, peak RSS growth in MB, the first error's text)."""
    from topology.config import check_file
    before = _peak_kib()
    best, first = float("inf"), ""
    for _ in range(runs):
        started = time.perf_counter()
        result = check_file(str(path))
        best = min(best, time.perf_counter() - started)
        first = str(result.errors[0]) if result.errors else "accepted"
    return best, (_peak_kib() - before) / 1024, first


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    base, _, _ = measure(SEED, args.runs)
    print(f"{'file':<20} {'bytes':>9} {'seconds':>8} {'x seed':>7} {'MB':>6}  result  error")
    print(f"{'seed.yaml':<20} {SEED.stat().st_size:>9,} {base:>8.3f} {1:>7.1f} {'':>6}")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write(Path(tmp)).items():
            seconds, grown, error = measure(path, args.runs)
            ok = seconds < TARGET_SECONDS and grown < TARGET_MB
            failed += not ok
            print(f"{name:<20} {path.stat().st_size:>9,} {seconds:>8.3f} {seconds / base:>7.1f} "
                  f"{grown:>6.1f}  {'PASS' if ok else 'FAIL':<6}  {error[len(str(path)) + 2:][:70]}")
    print(f"target: each under {TARGET_SECONDS:g} s and {TARGET_MB} MB; the peak RSS grows "
          "only with the largest so far (files in the order above)")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
