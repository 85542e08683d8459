"""What every test directory shares: the seed host (examples/seed.yaml).

    seed_host      fixture: examples/seed.yaml through topology.config.load_host
    TOPOLOGIES     {name: config path} of the hosts the tests that must hold on
                   any config run on: the seed, and tests/topologies/other-host.yaml
                   (every name, address and number unlike the seed's)
    unavailable(reason)   skip the test for something missing here; under CI
                   (CI=true, as .ci/run sets it) fail it instead
    module(name)   import a Python package a test needs, or unavailable()

tests/integration/conftest.py builds its own `seed_host` for its labs; this one
serves the unit tests. The isolation helpers under tests/isolation/ are imported
as `tests.isolation...`, so the repository root goes on sys.path here.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_YAML = ROOT / "examples" / "seed.yaml"
OTHER_HOST_YAML = ROOT / "tests" / "topologies" / "other-host.yaml"
TOPOLOGIES = {"seed": SEED_YAML, "other-host": OTHER_HOST_YAML}

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from topology.config import load_host  # noqa: E402
from topology.model import Host  # noqa: E402


def unavailable(reason: str):
    """Something a test needs is missing: skip it, but under CI that is a failure
    (CI must run everything)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"python package {name} is missing (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def seed_host() -> Host:
    return load_host(str(SEED_YAML))

