"""Sample changers in a real BLISS session: the demo beamline's simulated changer ``sc`` (with the
simulated Keyence reader ``bcr`` on its gripper), linked to a real ``SampleTracker``."""

from __future__ import annotations

from typing import Any

import gevent
import h5py
import pytest
from changer_fixtures import HypotheticalRobot, robot_changer

from bliss_sampletrack.changers.errors import ChangerError, ChangerTimeout, MountFailedError
from bliss_sampletrack.changers.link import ChangerLink, link_changer
from bliss_sampletrack.changers.macros import mounting, tracked_mount, tracked_unmount
from bliss_sampletrack.changers.robot_actions import ActionType, robot_actions
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.core import EventType, Source, Status
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testing import summary
from bliss_sampletrack.tracker.controller import SampleTracker
from bliss_sampletrack.tracker.state import TrackerState

pytestmark = pytest.mark.bliss
pytest_plugins = ["changer_fixtures"]


def test_mount_and_unmount_are_recorded_with_robot_actions(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    mounted = sc.mount("1:01")
    assert mounted.barcode == "LYS-0001" and sc.sample_present is True
    assert tracker.state is TrackerState.MOUNTED and tracker.snapshot.source is Source.SAMPLE_CHANGER
    sample = tracker.sample
    assert sample is not None and (sample.name, sample.container_name) == ("lysozyme_1", "puck3")  # manifest
    assert (sample.changer_name, sample.changer_position) == ("sc", "1:01")
    sc.unmount()
    assert tracker.state is TrackerState.EMPTY and sc.mounted is None
    events = tracker.outbox.peek(10)
    assert summary(events) == [("mounted", "LYS-0001", "SUCCESS"), ("unmounted", "LYS-0001", "SUCCESS")]
    assert all(e.source is Source.SAMPLE_CHANGER for e in events)
    assert events[0].to_dict()["sample_changer"] == {"name": "sc", "position": "1:01"}
    assert events[1].mount_event_id == events[0].event_id
    load, unload = reversed(robot_actions(tracker, 10))
    assert (load.action_type, load.status, load.barcode, load.address, load.sample_name) == (
        ActionType.LOAD,
        Status.SUCCESS,
        "LYS-0001",
        "1:01",
        "lysozyme_1",
    )
    assert unload.action_type is ActionType.UNLOAD and unload.status is Status.SUCCESS
    assert load.start < load.end <= unload.start < unload.end
    assert load.duration >= 0.02  # the simulated load time, plus the gripper's read
    from bliss.config.conductor.client import get_redis_proxy

    assert get_redis_proxy().llen("sampletrack:tracker:robot_actions") == 2
    assert "LOAD   SUCCESS" in link.__info__()


def test_chained_loads_unmount_the_previous_pin_first(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    sc.mount("1:01")
    sc.mount("THA-0003")  # by barcode, while 1:01 is mounted
    assert tracker.sample is not None and tracker.sample.changer_position == "2:01"
    events = tracker.outbox.peek(10)
    assert summary(events) == [
        ("mounted", "LYS-0001", "SUCCESS"),
        ("unmounted", "LYS-0001", "SUCCESS"),
        ("mounted", "THA-0003", "SUCCESS"),
    ]
    assert events[1].mount_event_id == events[0].event_id
    assert [a.action_type for a in reversed(link.robot_actions(10))] == [
        ActionType.LOAD,
        ActionType.UNLOAD,
        ActionType.LOAD,
    ]


def test_a_dropped_pin_is_an_error_and_never_mounted(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    sc.mount("1:01")
    sc.fail_next("dropped_pin")
    with pytest.raises(MountFailedError, match="load of 1:02 failed: the pin was dropped midway"):
        sc.mount("1:02")
    assert tracker.state is TrackerState.CONFLICT and tracker.sample is None
    assert "load of 1:02 (LYS-0002) by changer 'sc' failed: the pin was dropped" in tracker.snapshot.reason
    failed = tracker.outbox.peek(10)[-1]
    assert (failed.type, failed.sample.barcode, failed.status) == (
        EventType.MOUNTED,
        "LYS-0002",
        Status.ERROR,
    )
    assert "the presence sensor detects no pin" in failed.message
    action = robot_actions(tracker, 1)[0]
    assert (action.action_type, action.status, action.address) == (ActionType.LOAD, Status.ERROR, "1:02")
    with pytest.raises(ChangerError, match="recover"):
        sc.mount("2:01")


def test_a_timeout_is_an_error(tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink) -> None:
    sc.fail_next("timeout")
    with gevent.Timeout(10):
        with pytest.raises(ChangerTimeout, match="timed out after 0.2 s"):
            sc.mount("1:01", timeout=0.2)
    assert tracker.state is TrackerState.CONFLICT
    assert "load of 1:01 (LYS-0001) by changer 'sc' failed: timed out after 0.2 s" in (
        robot_actions(tracker, 1)[0].message
    )


def test_a_barcode_mismatch_is_a_conflict_naming_both_codes(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    sc.mislabel("1:01", "THA-0003")  # the pin carries another label than the contents say
    sc.mount("1:01")  # the robot itself succeeds
    assert tracker.state is TrackerState.CONFLICT
    event = tracker.outbox.peek(10)[-1]
    assert event.type is EventType.MOUNTED and event.status is Status.ERROR
    assert "reader 'bcr' read THA-0003 but the changer expects LYS-0001" in event.message
    assert tracker.snapshot.reason == event.message
    assert robot_actions(tracker, 1)[0].status is Status.ERROR
    assert tracker.reader.last_read.barcode == "THA-0003"  # type: ignore[union-attr]  # read for real


def test_presence_sensor_mismatches(tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink) -> None:
    sc.fail_next("no_pin_detected")
    sc.mount("1:01")  # reported done, no pin on the goniometer
    assert tracker.state is TrackerState.CONFLICT
    assert "reports 1:01 (LYS-0001) mounted but its presence sensor detects no pin" in (
        tracker.outbox.peek(10)[-1].message
    )
    sc.reset()
    tracker.unmount()
    count = len(tracker.outbox.peek(20))
    sc.set_presence(True)  # a pin appears that nobody mounted: no event, a conflict
    assert tracker.state is TrackerState.CONFLICT and "nobody mounted" in tracker.snapshot.reason
    assert len(tracker.outbox.peek(20)) == count
    sc.set_presence(False)
    sc.mount("1:02")
    sc.fail_next("pin_stays")
    sc.unmount()
    assert tracker.state is TrackerState.CONFLICT and "still detects a pin" in tracker.snapshot.reason
    assert tracker.outbox.peek(20)[-1].type is EventType.UNMOUNTED


def test_manual_mount_while_the_changer_is_present(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    sc.mount("1:01")
    sc.unmount()
    link.manual_mount("LYS-0002")
    sc.set_presence(True)  # the scientist's pin: the changer's empty gripper is no conflict
    assert tracker.state is TrackerState.MOUNTED and tracker.snapshot.source is Source.MANUAL
    assert tracker.sample is not None and tracker.sample.changer_name is None
    with pytest.raises(ChangerError, match="did not mount"):
        sc.mount("2:01")
    link.manual_unmount()
    sc.set_presence(False)
    assert tracker.state is TrackerState.EMPTY
    sc.mount("2:01")
    assert [e.source for e in tracker.outbox.peek(10)] == [
        Source.SAMPLE_CHANGER,
        Source.SAMPLE_CHANGER,
        Source.MANUAL,
        Source.MANUAL,
        Source.SAMPLE_CHANGER,
    ]


def test_pins_without_barcode_and_unknown_barcodes(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink
) -> None:
    sc.mount("3:07")  # no barcode in the contents, no label: the reader answers a no-read
    assert tracker.state is TrackerState.UNKNOWN and tracker.outbox.peek(10) == []
    assert "3:07, a pin with no barcode or name" in tracker.snapshot.reason
    assert "no-read" in robot_actions(tracker, 1)[0].message
    sc.mount("2:05")  # a barcode no manifest knows: accepted (unknown_barcode: accept)
    assert tracker.sample is not None and (tracker.sample.barcode, tracker.sample.name) == ("UNK-0042", None)


def test_a_loopscan_after_a_changer_mount_carries_the_changer(
    tracker: SampleTracker, sc: SimulatedChanger, link: ChangerLink, bliss_session: Any, beacon: BeaconServer
) -> None:
    from bliss.common.scans import loopscan
    from blissdata.redis_engine.store import DataStore

    sc.mount("1:02")
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"], save=True)
    tag = scan.scan_info["sample"]
    assert (tag["barcode"], tag["changer_name"], tag["changer_position"]) == ("LYS-0002", "sc", "1:02")
    assert tag["source"] == "sample_changer"
    store = DataStore(beacon.redis_data_url)
    _, key = store.get_last_scan()
    assert dict(store.load_scan(key).info)["sample"]["changer_position"] == "1:02"
    with h5py.File(scan.scan_info["filename"], "r", locking=False) as h5:
        group = h5[f"{scan.scan_info['scan_nb']}.1/sample"]
        assert group["changer_name"][()].decode() == "sc" and group["changer_position"][()].decode() == "1:02"


def test_macros_record_success_and_failure(tracker: SampleTracker) -> None:
    with mounting(tracker, "LYS-0001", changer="flex", address="3:05"):
        gevent.sleep(0.01)  # the robot moving
    assert tracker.sample is not None and tracker.sample.changer_position == "3:05"

    @tracked_mount(tracker, changer="flex", address="where")
    def load_here(barcode: str, where: str) -> None:
        raise RuntimeError("gripper jammed")

    with pytest.raises(RuntimeError, match="gripper jammed"):
        load_here("THA-0003", "4:01")
    assert tracker.state is TrackerState.CONFLICT and tracker.sample is None
    events = tracker.outbox.peek(10)
    assert summary(events) == [
        ("mounted", "LYS-0001", "SUCCESS"),
        ("unmounted", "LYS-0001", "ERROR"),
        ("mounted", "THA-0003", "ERROR"),
    ]
    assert "mount at 4:01 failed in a macro: RuntimeError: gripper jammed" in events[-1].message

    @tracked_unmount(tracker, changer="flex")
    def unload() -> None:
        gevent.sleep(0.01)

    unload()
    assert tracker.state is TrackerState.EMPTY
    assert [(a.action_type, a.status, a.by) for a in reversed(robot_actions(tracker, 10))][-3:] == [
        (ActionType.LOAD, Status.SUCCESS, "macro"),
        (ActionType.LOAD, Status.ERROR, "macro"),
        (ActionType.UNLOAD, Status.SUCCESS, "macro"),
    ]


def test_generic_adapter_over_a_robot_object(tracker: SampleTracker) -> None:
    robot = HypotheticalRobot()
    changer = robot_changer(robot, poll_period=0.02, presence_settle=0.05)
    link = link_changer(tracker, changer, reader=tracker.reader)
    try:
        tracker.reader.present("LYS-0001")  # type: ignore[union-attr]  # a reader at the goniometer
        changer.mount("1:01")  # the robot knows no barcode: the link's reader identifies the pin
        assert tracker.sample is not None and tracker.sample.barcode == "LYS-0001"
        assert tracker.sample.changer_position == "1:01"
        tracker.reader.present("THA-0003")  # type: ignore[union-attr]
        robot.loaded = "2:01"  # the robot's own GUI swaps pins: seen by polling
        with gevent.Timeout(5):
            while tracker.sample is None or tracker.sample.barcode != "THA-0003":
                gevent.sleep(0.02)
        changer.unmount()
        assert tracker.state is TrackerState.EMPTY
        assert summary(tracker.outbox.peek(10)) == [
            ("mounted", "LYS-0001", "SUCCESS"),
            ("unmounted", "LYS-0001", "SUCCESS"),
            ("mounted", "THA-0003", "SUCCESS"),
            ("unmounted", "THA-0003", "SUCCESS"),
        ]
    finally:
        link.close()
        tracker.reader.remove()  # type: ignore[union-attr]
    assert "BlissObjectChanger 'robot_sc'" in changer.__info__()
