"""The test bed as pytest fixtures.

- ``beacon``: one real ``beacon-server`` (with its two Redis) per test run, on free loopback ports,
  from the demo beamline's config tree copied into a temporary folder; stopped at the end.
- ``bliss_session``: the real BLISS session ``demo_session`` (mockup motor, simulation counters).
- ``scan_saving``: a fresh saving path for each test, scan numbers restarting at 1.

Tests that use them are marked ``bliss`` (stage 2 of tools/test.sh runs only those on BLISS 2.4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bliss_sampletrack.testbed.session import import_bliss

# BLISS first (gevent monkey-patching; and the 2.4 compatibility layer before that), see session.py
import_bliss()

from bliss_sampletrack.testbed.beacon import BeaconServer, running_beacon  # noqa: E402
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION  # noqa: E402
from bliss_sampletrack.testbed.session import open_session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # any test that uses the test bed is a real-BLISS test, whether or not it says so
    for item in items:
        if {"beacon", "bliss_session", "scan_saving"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.bliss)


@pytest.fixture(scope="session")
def beacon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeaconServer]:
    with running_beacon(tmp_path_factory.mktemp("beacon")) as server:
        yield server


@pytest.fixture(scope="session")
def bliss_session(beacon: BeaconServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = open_session(beacon, DEMO_SESSION, tmp_path_factory.mktemp("data"))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def scan_saving(bliss_session: Any, tmp_path: Path) -> Any:
    """The session's SCAN_SAVING, pointed at a folder of this test's own."""
    scan_saving = bliss_session.scan_saving
    scan_saving.base_path = str(tmp_path / "data")
    # BLISS 2.0 numbers scans per saving path; BLISS 2.4 without a data policy keeps one counter
    # per session and resets it only on request
    reset = getattr(scan_saving, "reset_scan_number", None)
    if reset is not None:
        reset()
    return scan_saving
