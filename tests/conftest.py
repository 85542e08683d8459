"""What every test directory shares: the seed host (examples/seed.yaml).

    seed_host      fixture: examples/seed.yaml through topology.config.load_host
    seed_ingress   a test argument: the test runs once per ingress point of the
                   seed host, (bridge, port name) for every port of both bridges
                   and each bridge's LOCAL port, ids like "mesh/veth200"

tests/integration/conftest.py builds its own `seed_host` for its labs; this one
serves the unit tests. The isolation helpers under tests/isolation/ are imported
as `tests.isolation...`, so the repository root goes on sys.path here.
"""
from __future__ import annotations

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


@pytest.fixture(scope="session")
def seed_host() -> Host:
    return load_host(str(SEED_YAML))


def pytest_generate_tests(metafunc):
    if "seed_ingress" in metafunc.fixturenames:
        points = ingress_points(load_host(str(SEED_YAML)))
        metafunc.parametrize("seed_ingress", points, ids=[f"{b}/{p}" for b, p in points])
