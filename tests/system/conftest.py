"""The system tier's test bed as pytest fixtures (BLISS is imported here, first).

- ``beacon``: one real ``beacon-server`` (with its two Redis) per test run, on free loopback ports,
  from the demo beamline's config tree copied into a temporary folder; stopped at the end.
- ``bliss_session``: the real BLISS session ``demo_session`` (mockup motor, simulation counters).
- ``scan_saving``: a fresh saving path for each test, scan numbers restarting at 1.
- ``add_yaml``: write beacon YAML into the running beacon's configuration (as a scientist adding
  an object would) and reload the config; removed at teardown.
- ``http_server``: a contract-shaped HTTP service on loopback that records requests and answers
  from a script (``tests/helpers/recorder.py``); yields ``(base_url, recorder)``.
- ``outbox``: an empty outbox (Redis stream) of a beamline of the test's own, in the test bed's
  Redis; its keys are deleted at teardown.
- ``service``, ``proxy``, ``token``: one real tracking service (SQLite) per test module, a
  :class:`~bliss_sampletrack.testbed.faults.service.FaultyProxy` in front of it per test (torn
  down once it holds no request), and a write token for the test's ``outbox`` beamline. A module
  that needs another service defines its own ``service``.
- ``esrf``: the session under the ESRF data policy (headless: no ICAT, in-process HDF5 writer) in
  proposal ``PROPOSAL`` (``tests/helpers/esrf_policy.py``) and a collection of the test's own; put
  back to the basic scan saving at teardown. All tests share one proposal: on BLISS 2.0.3 leaving
  a proposal that has saved datasets waits 10 s for ICAT confirmations.

Tests that use them are marked ``bliss`` (``-m "not bliss"`` leaves the test bed out).
"""

from __future__ import annotations

import re
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bliss_sampletrack.testbed.session import import_bliss

# BLISS first (gevent monkey-patching; and the 2.4 compatibility layer before that), see session.py
import_bliss()

from esrf_policy import PROPOSAL, policy_roots  # noqa: E402
from recorder import Recorder  # noqa: E402
from service_fixtures import Service, issue_token, start_service  # noqa: E402

from bliss_sampletrack.tagging import data_policy  # noqa: E402
from bliss_sampletrack.testbed.beacon import BeaconServer, running_beacon  # noqa: E402
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION  # noqa: E402
from bliss_sampletrack.testbed.faults.service import FaultyProxy  # noqa: E402
from bliss_sampletrack.testbed.session import open_session  # noqa: E402
from bliss_sampletrack.testing import wait_for  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # any test that uses the test bed is a real-BLISS test, whether or not it says so
    for item in items:
        if {"beacon", "bliss_session", "scan_saving", "esrf", "outbox"} & set(
            getattr(item, "fixturenames", ())
        ):
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


@pytest.fixture(scope="session")
def policy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("esrf_data")


@pytest.fixture
def esrf(bliss_session: Any, policy_root: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session under the ESRF policy, in proposal PROPOSAL and a collection of this test's own."""
    collection = re.sub(r"\W", "_", request.node.name)[:40]
    with data_policy.policy_enabled(
        bliss_session, beamline="demo", **policy_roots(policy_root)
    ) as scan_saving:
        scan_saving.newproposal(PROPOSAL)
        scan_saving.newcollection(collection)
        yield scan_saving


@pytest.fixture
def add_yaml(beacon: BeaconServer, bliss_session: Any) -> Iterator[Callable[[str], Any]]:
    from bliss.config.static import get_config

    written: list[Path] = []

    def add(text: str) -> Any:
        path = beacon.db_path / "tests" / f"{uuid.uuid4().hex[:8]}.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
        written.append(path)
        config = get_config()
        config.reload()
        return config

    yield add
    for path in written:
        path.unlink()
    get_config().reload()


@pytest.fixture
def http_server() -> Iterator[tuple[str, Recorder]]:
    from gevent.pywsgi import WSGIServer

    recorder = Recorder()
    server = WSGIServer(("127.0.0.1", 0), recorder, log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/api/v1", recorder
    server.stop()


@pytest.fixture
def outbox(beacon: BeaconServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    import redis

    from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

    client = redis.Redis.from_url(beacon.redis_url)
    box = RedisStreamOutbox(client, f"t{abs(hash(request.node.nodeid)) % 10**8}")
    yield box
    for key in client.scan_iter(f"{box.key}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """One real tracking service (SQLite) for the module; each test writes its own beamline."""
    folder = tmp_path_factory.mktemp("service")
    db_url = f"sqlite:///{folder / 'tracking.db'}"
    issue_token(db_url, ["unused"])  # creates and migrates the database
    svc = start_service(db_url, folder)
    try:
        yield svc, db_url
    finally:
        svc.stop()


@pytest.fixture
def proxy(service: tuple[Service, str]) -> Iterator[FaultyProxy]:
    with FaultyProxy(service[0].base_url) as front:
        yield front
        wait_for(lambda: front.stats.in_flight == 0, 10, "requests the proxy still holds")


@pytest.fixture
def token(service: tuple[Service, str], outbox: Any, request: pytest.FixtureRequest) -> str:
    return issue_token(service[1], [outbox.beamline], label=request.node.name[:60])
