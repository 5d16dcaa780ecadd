"""Sample changers without BLISS: the protocol's helpers, the cross-checks that decide what a
changer event records, and the robot-action records (the simulated changer, the generic adapter
and the macros, which import BLISS: tests/system/changers/test_changers_logic.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bliss_sampletrack import testing
from bliss_sampletrack.changers.crosscheck import Bookkeeping, Record, decide, reconcile
from bliss_sampletrack.changers.protocol import (
    ChangerEvent,
    ChangerEventKind,
    format_address,
    parse_address,
    split_address,
)
from bliss_sampletrack.changers.robot_actions import ActionType, RobotAction, RobotActionLog, robot_actions
from bliss_sampletrack.core import Source, Status
from bliss_sampletrack.errors import SampleTrackError
from bliss_sampletrack.tracker.state import TrackerState

T0 = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def book(state: TrackerState = TrackerState.EMPTY, **values: Any) -> Bookkeeping:
    return Bookkeeping(tracker="tracker", link="sc_link", state=state, **values)


def event(kind: ChangerEventKind, **values: Any) -> ChangerEvent:
    values.setdefault("address", "1:01")
    return ChangerEvent(kind, "sc", T0, **values)


# -- the protocol's helpers -----------------------------------------------------------------------
def test_addresses() -> None:
    assert parse_address("3:05") == (3, 5) and parse_address(" 3 : 5 ") == (3, 5)
    assert parse_address("LYS-0001") is None and parse_address("3:") is None
    assert format_address(3, 5) == "3:05" and format_address(12, 16) == "12:16"
    assert split_address("3:05") == ("3", "5") and split_address("A1") == (None, None)


def test_event_pin_label() -> None:
    assert event(ChangerEventKind.LOADED, barcode="LYS-0001").pin == "1:01 (LYS-0001)"
    assert event(ChangerEventKind.LOADED).pin == "1:01"
    assert event(ChangerEventKind.LOADED, address=None).pin == "an unknown position"


# -- cross-checks ------------------------------------------------------------------------------------
def test_a_consistent_load_is_a_mount() -> None:
    d = decide(event(ChangerEventKind.LOADED, barcode="LYS-0001", read="LYS-0001", present=True), book())
    assert (d.record, d.status, d.barcode, d.address, d.action) == (
        Record.MOUNT,
        Status.SUCCESS,
        "LYS-0001",
        "1:01",
        ActionType.LOAD,
    )


def test_a_barcode_mismatch_is_an_error_mount_naming_both_codes() -> None:
    d = decide(
        event(ChangerEventKind.LOADED, barcode="LYS-0001", read="THA-0003", present=True),
        book(reader="bcr"),
    )
    assert (d.record, d.status, d.barcode) == (Record.MOUNT, Status.ERROR, "LYS-0001")
    assert "reader 'bcr' read THA-0003 but the changer expects LYS-0001" in d.message
    assert d.action_status is Status.ERROR and d.action_message == d.message


def test_a_load_with_no_pin_detected_is_an_error_mount() -> None:
    d = decide(event(ChangerEventKind.LOADED, barcode="LYS-0001", present=False), book())
    assert d.status is Status.ERROR and "presence sensor detects no pin" in d.message
    unchecked = decide(
        event(ChangerEventKind.LOADED, barcode="LYS-0001", present=False), book(check_presence=False)
    )
    assert unchecked.status is Status.SUCCESS


def test_a_load_of_another_position_than_requested_is_an_error() -> None:
    same = decide(event(ChangerEventKind.LOADED, barcode="X-1", requested="1:1"), book())
    assert same.status is Status.SUCCESS  # 1:1 is 1:01
    other = decide(event(ChangerEventKind.LOADED, barcode="X-1", requested="1:02"), book())
    assert other.status is Status.ERROR and "1:02 was requested" in other.message
    by_code = decide(event(ChangerEventKind.LOADED, barcode="X-1", requested="X-2"), book())
    assert by_code.status is Status.ERROR and "barcode X-2 was requested" in by_code.message


def test_the_code_read_identifies_a_pin_the_changer_has_no_barcode_for() -> None:
    d = decide(event(ChangerEventKind.LOADED, read="LYS-0002"), book())
    assert (d.record, d.status, d.barcode) == (Record.MOUNT, Status.SUCCESS, "LYS-0002")
    named = decide(event(ChangerEventKind.LOADED, name="crystal_7"), book())
    assert (named.record, named.barcode, named.name) == (Record.MOUNT, None, "crystal_7")


def test_a_pin_with_neither_barcode_nor_name_makes_the_tracker_unknown_not_a_placeholder() -> None:
    d = decide(event(ChangerEventKind.LOADED, read_error="no-read ('ERROR')", present=True), book())
    assert d.record is Record.UNKNOWN and d.barcode is None and d.name is None
    assert "1:01, a pin with no barcode or name" in d.message and "tracker.read_barcode()" in d.message
    assert d.action is ActionType.LOAD and d.action_status is Status.SUCCESS
    worse = decide(event(ChangerEventKind.LOADED, present=False), book())
    assert worse.record is Record.CONFLICT and "detects no pin" in worse.message


def test_failed_loads() -> None:
    d = decide(
        event(ChangerEventKind.LOAD_FAILED, barcode="LYS-0001", present=False, message="dropped"), book()
    )
    assert (d.record, d.status) == (Record.MOUNT, Status.ERROR)
    assert "load of 1:01 (LYS-0001) by changer 'sc' failed: dropped; the presence sensor detects no pin" in (
        d.message
    )
    unnamed = decide(event(ChangerEventKind.LOAD_FAILED, message="timeout"), book())
    assert unnamed.record is Record.CONFLICT and unnamed.action_status is Status.ERROR


def test_unloads() -> None:
    d = decide(
        event(ChangerEventKind.UNLOADED, barcode="LYS-0001", present=False), book(TrackerState.MOUNTED)
    )
    assert (d.record, d.conflict_after, d.action_status) == (Record.UNMOUNT, "", Status.SUCCESS)
    stays = decide(event(ChangerEventKind.UNLOADED, barcode="LYS-0001", present=True), book())
    assert stays.record is Record.UNMOUNT and "still detects a pin" in stays.conflict_after
    assert stays.action_status is Status.ERROR
    failed = decide(event(ChangerEventKind.UNLOAD_FAILED, message="gripper fault"), book())
    assert failed.record is Record.CONFLICT and "may still be on the goniometer" in failed.message


def test_presence_flaps() -> None:
    nobody = decide(event(ChangerEventKind.PRESENCE, address=None, present=True), book())
    assert nobody.record is Record.CONFLICT and "nobody mounted" in nobody.message
    assert "sc_link.manual_mount('BARCODE')" in nobody.message
    manual = book(TrackerState.MOUNTED, source=Source.MANUAL, manual=True)
    assert (
        decide(event(ChangerEventKind.PRESENCE, address=None, present=True), manual).record is Record.NOTHING
    )
    own = decide(event(ChangerEventKind.PRESENCE, present=True), book())
    assert own.record is Record.NOTHING  # the changer's own pin
    gone = decide(
        event(ChangerEventKind.PRESENCE, present=False),
        book(TrackerState.MOUNTED, sample_label="lysozyme_1 (LYS-0001)", source=Source.SAMPLE_CHANGER),
    )
    assert gone.record is Record.CONFLICT and "no longer detects a pin, but lysozyme_1" in gone.message
    assert decide(event(ChangerEventKind.PRESENCE, present=False), book()).record is Record.NOTHING
    off = book(check_presence=False)
    assert decide(event(ChangerEventKind.PRESENCE, address=None, present=True), off).record is Record.NOTHING


def test_offline_changer_makes_its_sample_unknown() -> None:
    mounted = book(TrackerState.MOUNTED, sample_label="A", source=Source.SAMPLE_CHANGER)
    d = decide(event(ChangerEventKind.OFFLINE, message="Tango timeout"), mounted)
    assert d.record is Record.UNKNOWN and "went offline while A was mounted: Tango timeout" in d.message
    by_hand = book(TrackerState.MOUNTED, sample_label="A", source=Source.MANUAL)
    assert decide(event(ChangerEventKind.OFFLINE), by_hand).record is Record.NOTHING


def test_reconcile_at_link_start() -> None:
    def rec(address: str | None, state: TrackerState, **kw: Any) -> Record:
        b = book(
            state, sample_label="A", source=kw.pop("source", Source.SAMPLE_CHANGER), **kw.pop("book", {})
        )
        return reconcile(
            address, kw.pop("barcode", "LYS-0001"), None, kw.pop("present", None), b, **kw
        ).record

    assert rec("1:01", TrackerState.UNKNOWN, changer="sc", same_sample=False) is Record.MOUNT
    assert rec("1:01", TrackerState.MOUNTED, changer="sc", same_sample=True) is Record.NOTHING
    # a change nobody recorded is recorded as such: an ERROR mount/unmount (and CONFLICT)
    assert rec("1:01", TrackerState.MOUNTED, changer="sc", same_sample=False) is Record.MOUNT
    assert rec("1:01", TrackerState.EMPTY, changer="sc", same_sample=False) is Record.MOUNT
    assert rec(None, TrackerState.MOUNTED, changer="sc", same_sample=False) is Record.UNMOUNT
    unobserved = reconcile(
        "1:01", "LYS-0001", None, None, book(TrackerState.EMPTY), changer="sc", same_sample=False
    )
    assert unobserved.status is Status.ERROR and "a load nobody recorded" in unobserved.message
    # no identity to record: CONFLICT only
    assert rec("1:01", TrackerState.EMPTY, barcode=None, changer="sc", same_sample=False) is Record.CONFLICT
    assert rec(None, TrackerState.EMPTY, changer="sc", same_sample=False) is Record.NOTHING
    assert rec(None, TrackerState.EMPTY, changer="sc", same_sample=False, present=True) is Record.CONFLICT
    assert rec("1:01", TrackerState.CONFLICT, changer="sc", same_sample=False) is Record.NOTHING
    assert rec("1:01", TrackerState.UNKNOWN, barcode=None, changer="sc", same_sample=False) is Record.UNKNOWN


# -- robot-action records ------------------------------------------------------------------------------
def test_robot_action_round_trip_and_ispyb_columns() -> None:
    action = RobotAction(
        ActionType.LOAD, T0, T0 + timedelta(seconds=42), Status.ERROR, "dropped", "LYS-0001", "3:05", "sc"
    )
    assert RobotAction.from_dict(action.to_dict()) == action and action.duration == 42
    ispyb = action.to_ispyb()
    assert (ispyb["actionType"], ispyb["status"], ispyb["dewarLocation"], ispyb["containerLocation"]) == (
        "LOAD",
        "ERROR",
        "3",
        "5",
    )
    assert ispyb["sampleBarcode"] == "LYS-0001" and ispyb["startTimestamp"].startswith("2026-11-24T18:00:00")
    assert "LOAD   ERROR" in action.line()


def test_robot_action_log_is_bounded_newest_first() -> None:
    tracker = testing.engine(beamline="id00", session="test")
    log = RobotActionLog.for_tracker(tracker, size=3)
    assert log.key == "sampletrack:tracker:robot_actions"
    for i in range(5):
        log.record(RobotAction(ActionType.LOAD, T0, T0, Status.SUCCESS, barcode=f"S-{i}"))
    assert [a.barcode for a in log.last(10)] == ["S-4", "S-3", "S-2"]
    assert [a.barcode for a in robot_actions(tracker, 2)] == ["S-4", "S-3"]
    tracker.store.redis.lpush(log.key, "not json")
    assert [a.barcode for a in log.last(2)] == ["S-4"]  # an unreadable record hides no other
    with pytest.raises(SampleTrackError, match="not a SampleTracker"):
        robot_actions(object(), 1)  # type: ignore[arg-type]
