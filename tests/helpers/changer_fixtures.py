"""The demo beamline's simulated changer ``sc`` (with the simulated Keyence reader ``bcr`` on its
gripper), a real ``SampleTracker`` and their ``ChangerLink``, for tests in a real BLISS session
(``pytest_plugins = ["changer_fixtures"]``); and what the tracker, changer and fault tests build
their own from: :func:`make_tracker`, :func:`reading_changer`, :class:`HypotheticalRobot` and
:func:`robot_changer`.

PYTEST_DONT_REWRITE: the modules import helpers from here before pytest registers it as a plugin,
and it holds no test assertions to rewrite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest

from bliss_sampletrack.changers.generic import BlissObjectChanger
from bliss_sampletrack.changers.link import ChangerLink, link_changer
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.testing import clear_tracker_keys
from bliss_sampletrack.tracker.controller import SampleTracker


def make_tracker(**overrides: Any) -> SampleTracker:
    """A tracker from the demo beamline's real config node, with optional key overrides."""
    from bliss.config.static import get_config

    node = get_config().get_config("tracker")
    config: Any = node
    if overrides:
        config = {key: node.get(key) for key in node.keys()}
        config.update(overrides)
    return SampleTracker("tracker", config)


@contextmanager
def reading_changer(name: str, **config: Any) -> Iterator[SimulatedChanger]:
    """A simulated changer ``name`` whose gripper reads its pins with the demo's reader ``bcr``
    (instant pin reads, fast loads: an inventory in a test), ``config`` added; the reader's
    subscription removed afterwards."""
    from bliss.config.static import get_config

    fast = {"pin_read_time": 0.0, "load_time": 0.02, "unload_time": 0.02}
    changer = SimulatedChanger(name, {**fast, **config, "reader": get_config().get("bcr")})
    try:
        yield changer
    finally:
        changer.reader.remove()


@pytest.fixture
def tracker(bliss_session: Any, scan_saving: Any) -> Iterator[SampleTracker]:
    clear_tracker_keys()
    tracker = make_tracker()
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


class HypotheticalRobot:
    """What a beamline's robot object might expose (see config_examples/changers/generic_robot.yml)."""

    name = "my_robot"

    def __init__(self) -> None:
        self.loaded = ""
        self.sample_detected = False

    def get_loaded_sample(self) -> str:
        return self.loaded

    def load_sample(self, address: str) -> None:
        gevent.sleep(0.02)
        self.loaded, self.sample_detected = address, True

    def unload_sample(self) -> None:
        gevent.sleep(0.02)
        self.loaded, self.sample_detected = "", False


def robot_changer(
    robot: HypotheticalRobot, *, poll_period: float, presence_settle: float
) -> BlissObjectChanger:
    """The generic adapter ``robot_sc`` over ``robot`` (its methods and attributes as configured)."""
    return BlissObjectChanger(
        "robot_sc",
        {
            "object": robot,
            "mounted_address": "get_loaded_sample",
            "presence": "sample_detected",
            "mount": "load_sample",
            "unmount": "unload_sample",
            "poll_period": poll_period,
            "presence_settle": presence_settle,
        },
    )
