"""What every test directory shares: the seed host (examples/seed.yaml).

    seed_host      fixture: examples/seed.yaml through topology.config.load_host
    seed_ingress   a test argument: the test runs once per ingress point of the
                   seed host, (bridge, port name) for every port of both bridges
                   and each bridge's LOCAL port, ids like "mesh/veth200"
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

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from topology.config import load_host  # noqa: E402
from topology.model import Host  # noqa: E402

from tests.isolation.packets import ingress_points  # noqa: E402


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


def pytest_generate_tests(metafunc):
    if "seed_ingress" in metafunc.fixturenames:
        points = ingress_points(load_host(str(SEED_YAML)))
        metafunc.parametrize("seed_ingress", points, ids=[f"{b}/{p}" for b, p in points])
