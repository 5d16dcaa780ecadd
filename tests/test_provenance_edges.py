"""Provenance at the edges, in a real BLISS session: every scan carries the pin the simulated changer
has on the goniometer when it starts (or an explicit doubt), and a change during it is flagged.

Ground truth is the simulated hardware (its events and ``sc.mounted``), never the tracker. Each
test is a cause of a wrong tag found by seeded schedules (issue 16): an interruption right after
the hardware step, a scan a few ms after a load, a change during a scan that starts and ends in
the same state, a pin moved by hand, a manual mount that contradicts the changer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest

from bliss_sampletrack.changers.link import ChangerLink, link_changer
from bliss_sampletrack.changers.protocol import ChangerEvent, ChangerEventKind
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.core import EventType
from bliss_sampletrack.tracker.controller import SampleTracker
from bliss_sampletrack.tracker.state import TrackerState

pytestmark = pytest.mark.bliss
pytest_plugins = ["changer_fixtures"]

DOUBT = ("UNKNOWN", "CONFLICT")


@pytest.fixture
def on_event(sc: SimulatedChanger) -> Iterator[Callable[[Callable[[ChangerEvent], None]], None]]:
    """Subscribe a callback to the changer (before the test links it: it runs before the link's)."""
    added: list[Callable[[ChangerEvent], None]] = []

    def subscribe(callback: Callable[[ChangerEvent], None]) -> None:
        sc.subscribe(callback)
        added.append(callback)

    yield subscribe
    for callback in added:
        sc.unsubscribe(callback)


@pytest.fixture
def late_link(tracker: SampleTracker, sc: SimulatedChanger) -> Iterator[Callable[[], ChangerLink]]:
    links: list[ChangerLink] = []

    def make() -> ChangerLink:
        links.append(link_changer(tracker, sc, name="sc_link"))
        return links[-1]

    yield make
    for link in links:
        link.close()


def loopscan(session: Any, points: int = 2, count_time: float = 0.001) -> Any:
    from bliss.common.scans import loopscan as bliss_loopscan

    return bliss_loopscan(points, count_time, session.env_dict["diode"])


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.002, 0.004])
def test_ctrl_c_right_after_a_load_still_records_the_load(
    tracker: SampleTracker, sc: SimulatedChanger, on_event: Any, late_link: Any, delay: float
) -> None:
    me = gevent.getcurrent()
    timers: list[Any] = []

    def ctrl_c_after_load(event: ChangerEvent) -> None:
        if event.kind is ChangerEventKind.LOADED:  # what BLISS's Ctrl-C does: throw into the greenlet
            timer = gevent.get_hub().loop.timer(delay)
            timer.start(me.throw, KeyboardInterrupt)
            timers.append(timer)

    on_event(ctrl_c_after_load)  # called before the link's callback: the throw lands while it records
    late_link()
    try:
        sc.mount("1:01")
        gevent.sleep(delay + 0.05)  # a late throw lands here instead
    except KeyboardInterrupt:
        pass
    finally:
        for timer in timers:
            timer.close()
    assert sc.mounted is not None and sc.mounted.address == "1:01"  # the hardware moved
    snap = tracker.snapshot
    assert snap.state is TrackerState.MOUNTED, snap
    assert snap.sample is not None and snap.sample.changer_position == "1:01"
    assert [(e.type, e.sample.barcode) for e in tracker.outbox.peek(10)] == [(EventType.MOUNTED, "LYS-0001")]


def test_a_killed_unmount_macro_still_records_the_unload(
    tracker: SampleTracker, sc: SimulatedChanger, on_event: Any, late_link: Any
) -> None:
    sc.mount("1:01")  # before the link: learnt from the changer when the link starts
    mover: list[gevent.Greenlet] = []

    def kill_after_unload(event: ChangerEvent) -> None:
        if event.kind is ChangerEventKind.UNLOADED:
            gevent.spawn(mover[0].kill, block=False)

    on_event(kill_after_unload)
    late_link()
    assert tracker.sample is not None and tracker.sample.barcode == "LYS-0001"
    mover.append(gevent.spawn(sc.unmount))
    mover[0].join(timeout=10)
    assert mover[0].dead and sc.mounted is None
    assert tracker.state is TrackerState.EMPTY


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01])
@pytest.mark.parametrize("exchange", [False, True], ids=["load", "exchange"])
@pytest.mark.parametrize("policy", [False, True], ids=["basic", "esrf"])
def test_a_scan_started_right_after_a_load_carries_the_new_pin(
    tracker: SampleTracker,
    sc: SimulatedChanger,
    on_event: Any,
    late_link: Any,
    bliss_session: Any,
    request: pytest.FixtureRequest,
    delay: float,
    exchange: bool,
    policy: bool,
) -> None:
    if policy:
        request.getfixturevalue("esrf")
    if exchange:
        sc.mount("1:02")
    scans: list[gevent.Greenlet] = []
    truth: list[str | None] = []

    def scan_after_load(event: ChangerEvent) -> None:
        if event.kind is ChangerEventKind.LOADED and not scans:
            truth.append(event.barcode)  # the hardware's report: ground truth
            scans.append(gevent.spawn_later(delay, loopscan, bliss_session))

    on_event(scan_after_load)
    late_link()
    sc.mount("1:01")
    tag = scans[0].get(timeout=30).scan_info["sample"]
    assert truth == ["LYS-0001"]
    assert tag["state"] == "MOUNTED" and tag["barcode"] == "LYS-0001", tag


@pytest.mark.parametrize("state", ["EMPTY", "UNKNOWN", "CONFLICT"])
def test_a_change_during_a_scan_that_ends_in_its_start_state_is_flagged(
    tracker: SampleTracker, bliss_session: Any, state: str
) -> None:
    def back_to_start() -> None:
        if state == "EMPTY":
            tracker.unmount()
        elif state == "UNKNOWN":
            tracker.set_unknown("nobody knows (test)")
        else:
            tracker.set_conflict("two sources disagree (test)")

    back_to_start()
    assert str(tracker.state) == state
    running = gevent.spawn(loopscan, bliss_session, 20, 0.02)
    with gevent.Timeout(10):
        while not len(tracker._tagger._starts):  # type: ignore[union-attr]  # until its START tag
            gevent.sleep(0.005)
    tracker.mount("LYS-0001")
    back_to_start()
    tag = running.get(timeout=30).scan_info["sample"]
    assert tag["state"] == state and tag.get("end_state") == state, tag
    assert tag["@changed_during_scan"] is True
    assert "MOUNTED lysozyme_1 (LYS-0001) (manual)" in tag["changes_during_scan"]


@pytest.mark.parametrize("present", [False, True], ids=["pin_taken_by_hand", "pin_put_by_hand"])
def test_a_pin_moved_by_hand_makes_the_next_scan_doubt_at_once(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, bliss_session: Any, present: bool
) -> None:
    if not present:
        sc.mount("1:01")
    scans: list[gevent.Greenlet] = []

    def scan_now(event: ChangerEvent) -> None:
        if event.kind is ChangerEventKind.PRESENCE:
            scans.append(gevent.spawn(loopscan, bliss_session))

    sc.subscribe(scan_now)
    try:
        sc.set_presence(present)
        tag = scans[0].get(timeout=30).scan_info["sample"]
    finally:
        sc.unsubscribe(scan_now)
    assert tracker.state is TrackerState.CONFLICT
    assert tag["state"] == "CONFLICT" and "presence sensor" in tag["reason"], tag


def test_a_manual_mount_over_the_changers_pin_is_never_tagged_as_the_sample(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, bliss_session: Any
) -> None:
    sc.mount("2:01")  # THA-0003 on the goniometer, by the changer
    tracker.mount("LYS-0002")  # the operator claims another sample
    tag = loopscan(bliss_session).scan_info["sample"]
    assert tag["state"] in DOUBT and "THA-0003" in tag["reason"] and "LYS-0002" in tag["reason"], tag
    assert tag.get("barcode") is None  # never named as the sample
    gevent.sleep(0.1)  # the link reconciles the tracker in the background
    assert tracker.state is TrackerState.CONFLICT


def test_the_witness_sees_a_move_going_on(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, bliss_session: Any
) -> None:
    tracker.unmount()  # EMPTY: what the old tag said while the robot carried the pin
    sc.load_time = 0.5
    mover = gevent.spawn(sc.mount, "1:01")
    gevent.sleep(0.1)  # the robot is moving
    tag = loopscan(bliss_session).scan_info["sample"]
    mover.get(timeout=10)
    assert tag["state"] == "UNKNOWN" and "moving" in tag["reason"], tag
