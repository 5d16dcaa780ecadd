"""The demo beamline's simulated changer ``sc`` (with the simulated Keyence reader ``bcr`` on its
gripper), a real ``SampleTracker`` and their ``ChangerLink``, for tests in a real BLISS session
(``pytest_plugins = ["changer_fixtures"]``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bliss_sampletrack.changers.link import ChangerLink, link_changer
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.tracker.controller import SampleTracker


def clear_tracker_keys(name: str = "tracker") -> None:
    from bliss.config.conductor.client import get_redis_proxy

    redis = get_redis_proxy()
    for pattern in (f"sampletrack:{name}:*", "sampletrack:outbox:*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


@pytest.fixture
def tracker(bliss_session: Any, scan_saving: Any) -> Iterator[SampleTracker]:
    from bliss.config.static import get_config

    clear_tracker_keys()
    tracker = SampleTracker("tracker", get_config().get_config("tracker"))
    tracker.reader.remove()  # type: ignore[union-attr]
    yield tracker
    tracker.close()


@pytest.fixture
def sc(bliss_session: Any) -> Iterator[SimulatedChanger]:
    """The demo beamline's changer (one instance per session: reset for each test, and faster)."""
    from bliss.config.static import get_config

    changer = get_config().get("sc")
    changer.reset()
    timing = changer.load_time, changer.unload_time
    changer.load_time = changer.unload_time = 0.02
    yield changer
    changer.load_time, changer.unload_time = timing
    changer.reset()


@pytest.fixture
def link(tracker: SampleTracker, sc: SimulatedChanger) -> Iterator[ChangerLink]:
    link = link_changer(tracker, sc, name="sc_link")
    yield link
    link.close()
