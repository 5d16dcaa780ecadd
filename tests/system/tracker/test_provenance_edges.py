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
from bliss_sampletrack.testing import icat_fields_as_set
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


def test_sample_changes_never_break_a_scan_and_the_file_agrees_with_the_tag(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, bliss_session: Any, esrf: Any
) -> None:
    """Under the ESRF policy the dataset switches when the sample changes: scans started while the
    changer loads, unloads and exchanges never fail, and each one's ICAT fields, HDF5 file and tag
    name the same sample (or none)."""
    import h5py

    from bliss_sampletrack.tagging import data_policy

    moves = ["1:01", "2:01", None, "1:02", "1:01", None] * 3
    scans: list[Any] = []
    errors: list[str] = []

    def changer() -> None:
        for step, address in enumerate(moves):
            sc.mount(address) if address else sc.unmount()
            gevent.sleep(0.003 * (step % 4))

    def scanner(robot: gevent.Greenlet) -> None:
        while not robot.dead:
            try:
                scans.append(loopscan(bliss_session))
            except Exception as exc:  # noqa: BLE001 - the test counts every scan that raised
                errors.append(f"{type(exc).__name__}: {exc}")

    robot = gevent.spawn(changer)
    gevent.spawn(scanner, robot).get(timeout=120)
    robot.get()
    assert errors == [] and len(scans) >= 5
    for scan in scans:
        tag = scan.scan_info["sample"]
        icat = data_policy.snapshot_fields(scan.scan_info).get("Sample_name")
        with h5py.File(scan.scan_info["filename"], "r", locking=False) as h5:
            in_file = h5[f"{scan.scan_info['scan_nb']}.1/sample/name"][()].decode()
        if tag["state"] == "MOUNTED":
            assert icat == tag["name"] == in_file, (tag, icat, in_file)
        elif tag["state"] == "EMPTY":
            assert icat == "no sample mounted" == in_file, (tag, icat, in_file)
        else:
            assert tag["reason"], tag


# -- cause 4: manual input is checked against the hardware, not taken on trust ----------------------


def test_typed_text_that_is_no_barcode_is_refused_with_its_own_message(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    from bliss_sampletrack.errors import MountRefusedError, NoReadError

    with pytest.raises(MountRefusedError, match=r"'1:01' looks like a changer position.*force=True"):
        tracker.mount("1:01")
    with pytest.raises(NoReadError, match="never a sample's barcode") as no_read:
        tracker.mount("ERROR")
    assert "reader reported" not in str(no_read.value)
    assert tracker.outbox.peek(10) == [] and tracker.state is TrackerState.UNKNOWN


@pytest.mark.parametrize("policy", ["conflict", "refuse", "trust"])
def test_a_manual_mount_over_the_changers_pin_follows_the_policy(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, policy: str
) -> None:
    from bliss_sampletrack.core import Status
    from bliss_sampletrack.errors import MountRefusedError

    sc.mount("2:01")  # THA-0003, by the changer
    tracker.manual_policy = policy
    before = len(tracker.outbox.peek(10))
    if policy == "refuse":
        with pytest.raises(MountRefusedError, match=r"2:01 \(THA-0003\).*lysozyme_2.*force=True"):
            tracker.mount("LYS-0002")
        assert len(tracker.outbox.peek(10)) == before and tracker.sample.barcode == "THA-0003"  # type: ignore[union-attr]
        return
    tracker.mount("LYS-0002")
    mounted = tracker.outbox.peek(10)[-1]
    assert mounted.sample.barcode == "LYS-0002" and "2:01 (THA-0003)" in mounted.message
    if policy == "conflict":
        assert mounted.status is Status.ERROR and tracker.state is TrackerState.CONFLICT
    else:
        assert mounted.status is Status.SUCCESS and tracker.state is TrackerState.MOUNTED
        assert "trusted over the hardware" in mounted.message


def test_a_barcode_the_changer_holds_elsewhere_is_flagged(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    from bliss_sampletrack.core import Status

    tracker.unmount()
    sc.set_presence(True)  # a pin put on the goniometer by hand
    tracker.mount("LYS-0002")  # but the changer lists LYS-0002 in its puck at 1:02
    mounted = tracker.outbox.peek(10)[-1]
    assert mounted.status is Status.ERROR and "in its puck at 1:02" in mounted.message
    assert tracker.state is TrackerState.CONFLICT


def test_a_manual_unmount_confirmed_by_the_presence_sensor_is_a_success(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    from bliss_sampletrack.core import Status

    tracker.unmount()
    sc.set_presence(True)
    tracker.mount("UNK-9001")  # mounted by hand, on a pin the changer does not list
    assert tracker.state is TrackerState.MOUNTED
    sc.set_presence(False)  # taken off by hand: the sensor sees it go, the tracker doubts
    assert tracker.state is TrackerState.CONFLICT
    tracker.unmount()  # the operator confirms
    unmounted = tracker.outbox.peek(10)[-1]
    assert unmounted.type is EventType.UNMOUNTED and unmounted.sample.barcode == "UNK-9001"
    assert unmounted.status is Status.SUCCESS and "confirmed" in unmounted.message
    assert tracker.state is TrackerState.EMPTY


def test_a_manual_unmount_while_the_changer_has_its_pin_on_is_a_conflict(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    from bliss_sampletrack.core import Status

    sc.mount("1:01")
    tracker.unmount()
    unmounted = tracker.outbox.peek(10)[-1]
    assert unmounted.status is Status.ERROR and "1:01 (LYS-0001)" in unmounted.message
    assert tracker.state is TrackerState.CONFLICT


# -- data policy: new datasets keep the tracker's fields, two names are both recorded ---------------


def test_newsample_while_mounted_keeps_the_tracker_fields_and_records_both_names(
    tracker: SampleTracker, bliss_session: Any, esrf: Any
) -> None:
    import h5py

    from bliss_sampletrack.tagging import data_policy

    tracker.mount("LYS-0001")
    loopscan(bliss_session)
    esrf.newsample("my_crystal")  # the scientist names the sample otherwise: a new collection
    scan = loopscan(bliss_session)
    fields = data_policy.snapshot_fields(scan.scan_info)
    assert fields["Sample_name"] == "lysozyme_1"
    assert fields.get("SampleTrackingParcel_name") == icat_fields_as_set(
        bliss_session, {"SampleTrackingParcel_name": "Dewar A"}
    ).get("SampleTrackingParcel_name")
    tag = scan.scan_info["sample"]
    assert tag["collection_sample_name"] == "my_crystal" and "my_crystal" in tag["name_note"]
    with h5py.File(scan.scan_info["filename"], "r", locking=False) as h5:
        group = h5[f"{scan.scan_info['scan_nb']}.1/sample"]
        assert group["name"][()].decode() == "lysozyme_1"
        assert group["collection_sample_name"][()].decode() == "my_crystal"
    esrf.newdataset("mine")  # a dataset of the scientist's own: kept, and given the fields
    scan = loopscan(bliss_session)
    assert data_policy.dataset_name(bliss_session) == "mine"
    assert data_policy.snapshot_fields(scan.scan_info)["Sample_name"] == "lysozyme_1"
