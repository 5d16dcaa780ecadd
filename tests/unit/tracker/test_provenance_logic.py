"""Provenance rules without BLISS: sequence numbers, the scan tag's change detection, the witness's
cross-check, manual-input judgements, changes in flight and records an interruption cannot split."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import gevent
import pytest

from bliss_sampletrack.changers.crosscheck import hardware_doubt, manual_judgement
from bliss_sampletrack.changers.protocol import Mounted, Position
from bliss_sampletrack.core import Sample, Source, Status
from bliss_sampletrack.core.shield import RecordTimeout, complete
from bliss_sampletrack.errors import MountRefusedError, NoReadError
from bliss_sampletrack.tagging.scan_tag import end_of_scan_tag, sample_tag
from bliss_sampletrack.tracker import manual
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.settle import InFlight
from bliss_sampletrack.tracker.state import EventContext, Snapshot, TrackerState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CTX = EventContext("id00", "test")
LYS = Sample(barcode="LYS-0001", name="lyso", changer_name="sc", changer_position="1:01")


def test_every_change_gets_the_next_sequence_number_and_a_no_op_none() -> None:
    empty = Snapshot(TrackerState.EMPTY, T0, seq=4)
    mounted = machine.numbered(empty, machine.mount(empty, LYS, Source.SAMPLE_CHANGER, CTX))
    assert mounted.snapshot.seq == 5
    again = machine.numbered(mounted.snapshot, machine.mount(mounted.snapshot, LYS, Source.MANUAL, CTX))
    assert again.snapshot.seq == 5 and again.events == []
    doubt = machine.numbered(mounted.snapshot, machine.degrade(mounted.snapshot, TrackerState.UNKNOWN, "why"))
    assert doubt.snapshot.seq == 6
    same_doubt = machine.degrade(doubt.snapshot, TrackerState.UNKNOWN, "why")
    assert same_doubt.snapshot is doubt.snapshot  # the same reason again is no change
    assert Snapshot.from_dict(doubt.snapshot.to_dict()) == doubt.snapshot
    old = doubt.snapshot.to_dict()
    del old["seq"]  # written by an older version
    assert Snapshot.from_dict(old).seq == 0
    with pytest.raises(ValueError, match="seq"):
        Snapshot.from_dict({**doubt.snapshot.to_dict(), "seq": -1})


def test_a_change_that_comes_back_to_the_start_state_is_a_change() -> None:
    start = sample_tag(Snapshot(TrackerState.EMPTY, T0, seq=3), "t")
    end = sample_tag(Snapshot(TrackerState.EMPTY, T0, seq=5), "t")
    tag = end_of_scan_tag(start, end, ["#4 MOUNTED lyso", "#5 EMPTY"])
    assert tag["@changed_during_scan"] is True and tag["@end_seq"] == 5
    assert tag["changes_during_scan"] == "#4 MOUNTED lyso; #5 EMPTY"
    assert end_of_scan_tag(start, dict(start))["@changed_during_scan"] is False


@pytest.mark.parametrize(
    ("snapshot", "mounted", "present", "moving", "expect"),
    [
        (
            Snapshot(TrackerState.MOUNTED, T0, LYS, Source.SAMPLE_CHANGER),
            Mounted("1:01", "LYS-0001"),
            True,
            None,
            None,
        ),
        (Snapshot(TrackerState.EMPTY, T0), None, False, None, None),
        (Snapshot(TrackerState.EMPTY, T0), None, False, "load of 1:01", "UNKNOWN:moving"),
        (
            Snapshot(TrackerState.EMPTY, T0),
            Mounted("1:01", "LYS-0001"),
            True,
            None,
            "CONFLICT:1:01 (LYS-0001)",
        ),
        (
            Snapshot(TrackerState.MOUNTED, T0, LYS, Source.SAMPLE_CHANGER),
            None,
            False,
            None,
            "CONFLICT:nothing",
        ),
        (
            Snapshot(TrackerState.MOUNTED, T0, LYS, Source.SAMPLE_CHANGER),
            Mounted("2:01", "THA"),
            True,
            None,
            "CONFLICT:2:01",
        ),
        (
            Snapshot(TrackerState.MOUNTED, T0, Sample(barcode="X"), Source.MANUAL),
            None,
            False,
            None,
            "CONFLICT:no pin",
        ),
        (Snapshot(TrackerState.MOUNTED, T0, Sample(barcode="X"), Source.MANUAL), None, True, None, None),
        (Snapshot(TrackerState.EMPTY, T0), None, True, None, "CONFLICT:a pin"),
        (Snapshot(TrackerState.UNKNOWN, T0), Mounted("1:01"), True, None, None),  # already doubts
    ],
)
def test_the_witness_doubts_what_the_hardware_contradicts(
    snapshot: Snapshot, mounted: Mounted | None, present: bool, moving: str | None, expect: str | None
) -> None:
    doubt = hardware_doubt(snapshot, mounted, present, changer="sc", moving=moving)
    if expect is None:
        assert doubt is None
        return
    state, text = expect.split(":", 1)
    assert doubt is not None and str(doubt.state) == state and text in doubt.reason
    assert doubt.reconcile is (state == "CONFLICT")


def test_manual_judgements_name_both_sides() -> None:
    lys2 = Sample(barcode="LYS-0002", name="lyso2")
    judge = manual_judgement
    assert judge(lys2, Mounted("2:01", "THA"), True, [], changer="sc")[0] == (
        "changer 'sc' has 2:01 (THA) on the goniometer, not lyso2 (LYS-0002)"
    )
    assert judge(lys2, None, False, [], changer="sc")[0] is not None  # nothing there
    stored = [Position("1:02", "LYS-0002")]
    assert "in its puck at 1:02" in (judge(lys2, None, True, stored, changer="sc")[0] or "")
    assert judge(Sample(barcode="UNK"), None, True, stored, changer="sc") == (None, "")
    assert judge(None, Mounted("1:01", "LYS-0001"), True, [], changer="sc")[0] is not None
    assert judge(None, None, False, [], changer="sc") == (
        None,
        "the presence sensor of changer 'sc' detects no pin",
    )
    assert judge(None, None, None, [], changer="sc") == (None, "")


def test_manual_policy_verdicts() -> None:
    assert manual.verdict("t", "conflict", "mount of X", None) == manual.Verdict()
    conflict = manual.verdict("t", "conflict", "mount of X", "the changer has Y")
    assert conflict.status is Status.ERROR and "the changer has Y" in conflict.message
    trusted = manual.verdict("t", "trust", "mount of X", "the changer has Y")
    assert trusted.status is Status.SUCCESS and "the changer has Y" in trusted.message
    with pytest.raises(MountRefusedError, match="the changer has Y.*force=True"):
        manual.verdict("t", "refuse", "mount of X", "the changer has Y")
    assert (
        manual.verdict("t", "refuse", "mount of X", "the changer has Y", force=True).status is Status.SUCCESS
    )
    with pytest.raises(NoReadError, match="never a sample's barcode"):
        manual.check_code("t", "noread", force=True)  # a no-read cannot be forced
    with pytest.raises(MountRefusedError, match="changer position"):
        manual.check_code("t", "3:5")
    manual.check_code("t", "3:5", force=True)
    manual.check_code("t", "LYS-3:5")


def test_unmount_contradicted_or_confirmed() -> None:
    mounted = Snapshot(TrackerState.MOUNTED, T0, LYS, Source.MANUAL, uuid.uuid4())
    contradicted = machine.unmount(mounted, Source.MANUAL, CTX, status=Status.ERROR, message="pin still seen")
    assert (
        contradicted.snapshot.state is TrackerState.CONFLICT
        and contradicted.snapshot.reason == "pin still seen"
    )
    assert [e.status for e in contradicted.events] == [Status.ERROR]
    doubted = Snapshot(TrackerState.CONFLICT, T0, LYS, Source.MANUAL, uuid.uuid4(), reason="sensor: no pin")
    confirmed = machine.unmount(doubted, Source.MANUAL, CTX, confirmed="the sensor detects no pin")
    (event,) = confirmed.events
    assert event.status is Status.SUCCESS and "confirmed: the sensor detects no pin" in event.message
    assert machine.unmount(doubted, Source.MANUAL, CTX).events[0].status is Status.ERROR  # not observed


def test_a_scan_waits_for_a_change_in_flight() -> None:
    inflight = InFlight()
    assert inflight.settle(1.0) == []
    done: list[str] = []

    def record() -> None:
        with inflight.entered("load of 1:01"):
            gevent.sleep(0.05)
            done.append("recorded")

    gevent.spawn(record)
    gevent.sleep(0)
    assert inflight.pending() == ["load of 1:01"]
    assert inflight.settle(5.0) == [] and done == ["recorded"]
    gevent.spawn(record)
    gevent.sleep(0)
    assert inflight.settle(0.01) == ["load of 1:01"]  # bounded: still in flight after the wait


class Interrupted(BaseException):
    """Stands for Ctrl-C (gevent re-raises a KeyboardInterrupt of a greenlet in the main one)."""


def test_an_interruption_cannot_split_a_record() -> None:
    records: list[str] = []

    def record() -> str:
        gevent.sleep(0.05)  # Redis I/O
        records.append("done")
        return "recorded"

    def macro() -> None:
        complete("load", record)

    worker = gevent.spawn(macro)
    gevent.sleep(0.01)
    worker.kill(Interrupted, block=False)  # Ctrl-C in the middle of the record
    worker.join(timeout=5)
    assert records == ["done"] and isinstance(worker.exception, Interrupted)
    assert complete("load", lambda: "ok") == "ok"
    with pytest.raises(ZeroDivisionError):
        complete("load", lambda: 1 / 0)
    with pytest.raises(RecordTimeout):
        complete("load", lambda: gevent.sleep(1), timeout=0.01)


@pytest.mark.parametrize("state", [TrackerState.UNKNOWN, TrackerState.CONFLICT])
@pytest.mark.parametrize("present", [False, True])
def test_a_pin_moved_while_the_tracker_doubts_is_still_a_change(state: TrackerState, present: bool) -> None:
    from bliss_sampletrack.changers.crosscheck import Bookkeeping, Record, decide
    from bliss_sampletrack.changers.protocol import ChangerEvent, ChangerEventKind

    book = Bookkeeping("tracker", "sc_link", state, "xtal (no barcode)", Source.SAMPLE_CHANGER)
    event = ChangerEvent(ChangerEventKind.PRESENCE, "sc", T0, address="3:07", present=present)
    decision = decide(event, book)
    assert decision.record is Record(str(state).lower())
    assert ("detects a pin" if present else "detects no pin") in decision.message
