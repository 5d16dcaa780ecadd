"""Annotating and verifying BLISS HDF5 files from the tracker's history (``sampletrack annotate``)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import h5py
import pytest

from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.contract import format_timestamp
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.tagging.annotate import (
    Action,
    AnnotateError,
    FileLockedError,
    ScanNotFoundError,
    annotate_file,
    load_events_json,
    load_events_redis,
    snapshot_at,
)
from bliss_sampletrack.tagging.annotate_cli import main
from bliss_sampletrack.tagging.scan_tag import sample_tag
from bliss_sampletrack.testing import as_text
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.state import EventContext, Snapshot, TrackerState
from bliss_sampletrack.tracker.store import RedisTrackerStore

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WHERE: dict[str, Any] = {"beamline": "id00", "session": "demo_session", "source": Source.BARCODE_READER}
LYSO = Sample(barcode="LYS-0001", name="lysozyme_1", container_name="puck3")
THAU = Sample(barcode="THA-0002", name="thaumatin_2")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(minutes: float, offset_hours: int = 0) -> bytes:
    """A BLISS ``start_time``: ISO 8601 with a time zone, as bytes."""
    from datetime import timezone

    return at(minutes).astimezone(timezone(timedelta(hours=offset_hours))).isoformat().encode()


@pytest.fixture
def history() -> list[Event]:
    """LYSO mounted 10:10, unmounted 10:20; THAU mounted 10:30."""
    mounted = Event.mounted(LYSO, occurred_at=at(10), **WHERE)
    return [
        mounted,
        Event.unmounted(LYSO, occurred_at=at(20), mount_event_id=mounted.event_id, **WHERE),
        Event.mounted(THAU, occurred_at=at(30), **WHERE),
    ]


def write_scan(h5: h5py.File, number: int, start_time: bytes | str | None, status: str = "SUCCEEDED") -> None:
    """A scan entry as BLISS's writer lays it out (the parts that matter here)."""
    entry = h5.create_group(f"{number}.1")
    entry.attrs["NX_class"] = "NXentry"
    if start_time is not None:
        entry["start_time"] = start_time
    entry["end_time"] = b"2026-03-01T11:00:00+00:00"
    entry["title"] = f"loopscan {number} 0.1".encode()
    entry.create_group("measurement")["diode"] = [1.0, 2.0, 3.0]
    entry.create_group("writer")["status"] = status


def write_sample(h5: h5py.File, number: int, values: Mapping[str, str]) -> None:
    group = h5.create_group(f"{number}.1/sample")
    group.attrs["NX_class"] = "NXsample"
    for key, value in values.items():
        if key.startswith("@"):
            group.attrs[key[1:]] = value
        else:
            group[key] = value


@pytest.fixture
def h5file(tmp_path: Path, history: list[Event]) -> Path:
    """Scans 1.1 at 10:05 (before the history), 2.1 at 10:15 (LYSO), 3.1 at 10:25 (EMPTY).

    3.1 already has a sample group, as the live tracker wrote it (EMPTY).
    """
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as h5:
        write_scan(h5, 1, iso(5))
        write_scan(h5, 2, iso(15, offset_hours=2))  # same instant, in CEST
        write_scan(h5, 3, iso(25))
        write_sample(h5, 3, {"@tracker": "tracker", "state": "EMPTY", "reason": "no sample mounted"})
    return path


def read_sample(path: Path, number: int, group: str = "sample") -> dict[str, Any] | None:
    with h5py.File(path, "r") as h5:
        node = h5.get(f"{number}.1/{group}")
        if node is None:
            return None
        values = {key: as_text(node[key][()]) for key in node}
        values.update({f"@{key}": as_text(value) for key, value in node.attrs.items()})
        return values


def groups_of(path: Path, number: int) -> list[str]:
    with h5py.File(path, "r") as h5:
        return sorted(h5[f"{number}.1"])


# --- snapshot_at -------------------------------------------------------------------------------


def test_before_the_history_is_unknown_with_an_explicit_reason(history: list[Event]) -> None:
    snapshot = snapshot_at(history, at(5), "tracker")
    assert snapshot.state is TrackerState.UNKNOWN and snapshot.sample is None
    assert "history incomplete" in snapshot.reason and "does not reach back" in snapshot.reason
    assert format_timestamp(at(10)) in snapshot.reason  # the oldest event's time
    assert format_timestamp(at(5)) in snapshot.reason
    tag = sample_tag(snapshot, "tracker")
    assert tag["state"] == "UNKNOWN" and "name" not in tag and "barcode" not in tag


def test_no_history_at_all_is_unknown() -> None:
    snapshot = snapshot_at([], at(5), "tracker")
    assert snapshot.state is TrackerState.UNKNOWN and "no recorded events" in snapshot.reason


def test_between_mount_and_unmount_the_sample_is_mounted(history: list[Event]) -> None:
    for moment in (at(10), at(15), at(19.99)):  # at the mount's instant too
        snapshot = snapshot_at(history, moment, "tracker")
        assert snapshot.state is TrackerState.MOUNTED and snapshot.sample == LYSO
        assert snapshot.mount_event_id == history[0].event_id and snapshot.since == at(10)
        assert snapshot.source is Source.BARCODE_READER


def test_after_an_unmount_empty_then_the_next_mount(history: list[Event]) -> None:
    assert snapshot_at(history, at(20), "tracker").state is TrackerState.EMPTY
    assert snapshot_at(history, at(25), "tracker").sample is None
    late = snapshot_at(list(reversed(history)), at(90), "tracker")  # any order in, sorted by time
    assert late.state is TrackerState.MOUNTED and late.sample == THAU


def test_error_mount_is_a_conflict_with_its_message() -> None:
    error = {"status": Status.ERROR, "message": "gripper says empty"}
    events = [Event.mounted(LYSO, occurred_at=at(10), **error, **WHERE)]
    snapshot = snapshot_at(events, at(11), "tracker")
    assert snapshot.state is TrackerState.CONFLICT and snapshot.reason == "gripper says empty"
    tag = sample_tag(snapshot, "tracker")
    assert tag["state"] == "CONFLICT" and tag["reason"] == "gripper says empty"
    assert "name" not in tag and tag["last_known_name"] == "lysozyme_1"


def test_events_of_the_same_instant_keep_their_order() -> None:
    first = Event.mounted(LYSO, occurred_at=at(10), **WHERE)
    swap = [
        Event.unmounted(LYSO, occurred_at=at(20), mount_event_id=first.event_id, **WHERE),
        Event.mounted(THAU, occurred_at=at(20), **WHERE),
    ]
    snapshot = snapshot_at([first, *swap], at(20), "tracker")
    assert snapshot.state is TrackerState.MOUNTED and snapshot.sample == THAU


def test_an_unobserved_unmount_makes_the_mount_before_it_unknown() -> None:
    mounted = Event.mounted(LYSO, occurred_at=at(10), **WHERE)
    doubtful = Event.unmounted(
        LYSO,
        occurred_at=at(40),
        status=Status.ERROR,
        message="unmount not observed: the tracker was UNKNOWN (reader offline)",
        mount_event_id=mounted.event_id,
        **WHERE,
    )
    snapshot = snapshot_at([mounted, doubtful], at(30), "tracker")
    assert snapshot.state is TrackerState.UNKNOWN and "not observed" in snapshot.reason
    tag = sample_tag(snapshot, "tracker")
    assert "name" not in tag and tag["last_known_barcode"] == "LYS-0001"
    assert snapshot_at([mounted, doubtful], at(41), "tracker").state is TrackerState.EMPTY


def test_replay_agrees_with_the_state_machine() -> None:
    ctx = EventContext("id00", "demo_session")
    current, events, expected = Snapshot(TrackerState.EMPTY, at(0)), [], []
    steps = [("mount", LYSO), ("mount", THAU), ("unmount", None), ("mount", LYSO), ("error", THAU)]
    for minute, (kind, sample) in enumerate(steps, start=1):
        if kind == "unmount":
            change = machine.unmount(current, Source.MANUAL, ctx, at=at(minute))
        else:
            status = Status.ERROR if kind == "error" else Status.SUCCESS
            assert sample is not None
            change = machine.mount(
                current, sample, Source.MANUAL, ctx, at=at(minute), status=status, message="x"
            )
        current = change.snapshot
        events += change.events
        expected.append((minute, current))
    for minute, live in expected:
        replayed = snapshot_at(events, at(minute + 0.5), "tracker")
        assert (replayed.state, replayed.sample, replayed.mount_event_id) == (
            live.state,
            live.sample,
            live.mount_event_id,
        )


def test_a_naive_moment_is_refused(history: list[Event]) -> None:
    with pytest.raises(ValueError, match="time zone"):
        snapshot_at(history, datetime(2026, 3, 1, 10, 15), "tracker")


# --- annotate_file: write mode -----------------------------------------------------------------


def test_write_mode_tags_untagged_scans_and_keeps_agreeing_ones(h5file: Path, history: list[Event]) -> None:
    results = annotate_file(h5file, history, "tracker")
    assert [(r.scan, r.action) for r in results] == [
        (1, Action.WRITTEN),
        (2, Action.WRITTEN),
        (3, Action.KEPT),
    ]
    assert results[1].start_time == at(15)
    before = read_sample(h5file, 1)
    assert before is not None and before["@NX_class"] == "NXsample" and before["state"] == "UNKNOWN"
    assert "does not reach back" in before["reason"] and "name" not in before
    assert before["annotated"].startswith("by sampletrack annotate at 20")
    mounted = read_sample(h5file, 2)
    assert mounted is not None
    assert (mounted["state"], mounted["name"], mounted["barcode"], mounted["container_name"]) == (
        "MOUNTED",
        "lysozyme_1",
        "LYS-0001",
        "puck3",
    )
    assert mounted["mount_event_id"] == str(history[0].event_id) and mounted["@tracker"] == "tracker"
    assert mounted["@state_since"] == format_timestamp(at(10))
    assert read_sample(h5file, 3) == {
        "@tracker": "tracker",
        "state": "EMPTY",
        "reason": "no sample mounted",
        "@NX_class": "NXsample",
    }  # untouched
    assert groups_of(h5file, 2) == ["end_time", "measurement", "sample", "start_time", "title", "writer"]


def test_a_second_run_keeps_everything(h5file: Path, history: list[Event]) -> None:
    annotate_file(h5file, history, "tracker")
    marker = read_sample(h5file, 2)
    again = annotate_file(h5file, history, "tracker", [2, 1])
    assert [(r.scan, r.action) for r in again] == [(2, Action.KEPT), (1, Action.KEPT)]
    assert read_sample(h5file, 2) == marker


def test_a_disagreeing_tag_is_a_mismatch_left_alone(h5file: Path, history: list[Event]) -> None:
    with h5py.File(h5file, "r+") as h5:
        write_sample(h5, 2, {"state": "MOUNTED", "name": "insulin_9", "barcode": "INS-0009"})
    (result,) = annotate_file(h5file, history, "tracker", [2])
    assert result.action is Action.MISMATCH
    assert "name: file 'insulin_9', history 'lysozyme_1'" in result.details
    assert "barcode: file 'INS-0009'" in result.details and "mount_event_id: file (absent)" in result.details
    assert "state" not in result.details.split(";")[0]  # the same state is no difference
    assert read_sample(h5file, 2) == {
        "state": "MOUNTED",
        "name": "insulin_9",
        "barcode": "INS-0009",
        "@NX_class": "NXsample",
    }


def test_force_replaces_and_keeps_the_old_group(h5file: Path, history: list[Event]) -> None:
    with h5py.File(h5file, "r+") as h5:
        write_sample(h5, 2, {"state": "MOUNTED", "name": "insulin_9"})
    (result,) = annotate_file(h5file, history, "tracker", [2], force=True)
    assert result.action is Action.WRITTEN and "replaced" in result.details
    new = read_sample(h5file, 2)
    assert new is not None and new["name"] == "lysozyme_1" and "annotated" in new
    (old_name,) = [name for name in groups_of(h5file, 2) if name.startswith("sample_replaced_")]
    assert old_name in result.details
    old = read_sample(h5file, 2, old_name)
    assert old == {"state": "MOUNTED", "name": "insulin_9", "@NX_class": "NXsample"}
    assert not any("incomplete" in name for name in groups_of(h5file, 2))  # no temporary group left


def test_force_twice_keeps_both_old_groups(h5file: Path, history: list[Event]) -> None:
    other = [Event.mounted(THAU, occurred_at=at(1), **WHERE)]
    annotate_file(h5file, other, "tracker", [3], force=True)  # EMPTY -> THAU
    annotate_file(h5file, history, "tracker", [3], force=True)  # THAU -> EMPTY, same second
    replaced = [name for name in groups_of(h5file, 3) if name.startswith("sample_replaced_")]
    assert len(replaced) == 2
    current = read_sample(h5file, 3)
    assert current is not None and current["state"] == "EMPTY"


# --- annotate_file: verify mode ----------------------------------------------------------------


def test_verify_reports_matches_and_missing_groups(h5file: Path, history: list[Event]) -> None:
    results = annotate_file(h5file, history, "tracker", verify=True)
    assert [r.action for r in results] == [Action.MISMATCH, Action.MISMATCH, Action.VERIFIED]
    assert results[0].details.startswith("no sample group; history: UNKNOWN")
    assert "MOUNTED lysozyme_1 (LYS-0001)" in results[1].details
    assert read_sample(h5file, 1) is None and read_sample(h5file, 2) is None  # nothing written
    annotate_file(h5file, history, "tracker")
    assert all(r.action is Action.VERIFIED for r in annotate_file(h5file, history, "tracker", verify=True))


def test_verify_names_the_fields_that_differ(h5file: Path, history: list[Event]) -> None:
    moved = [Event.mounted(THAU, occurred_at=at(21), **WHERE)]  # the history says THAU at 10:25
    (result,) = annotate_file(h5file, history[:2] + moved, "tracker", [3], verify=True)
    assert result.action is Action.MISMATCH
    fields = [part.split(":")[0].strip() for part in result.details.split(";")]
    assert fields == ["state", "barcode", "name", "mount_event_id"]
    assert "state: file 'EMPTY', history 'MOUNTED'" in result.details


def test_another_mount_of_the_same_sample_is_a_mismatch(h5file: Path, history: list[Event]) -> None:
    stale = {"state": "MOUNTED", "name": "lysozyme_1", "barcode": "LYS-0001"}
    stale["mount_event_id"] = str(uuid.uuid4())
    with h5py.File(h5file, "r+") as h5:
        write_sample(h5, 2, stale)
    (result,) = annotate_file(h5file, history, "tracker", [2], verify=True)
    assert result.action is Action.MISMATCH and result.details.startswith("mount_event_id: file '")


def test_verify_with_force_is_refused(h5file: Path, history: list[Event]) -> None:
    with pytest.raises(ValueError, match="verify never writes"):
        annotate_file(h5file, history, "tracker", verify=True, force=True)


# --- annotate_file: errors and skipped scans ---------------------------------------------------


def test_a_missing_scan_is_an_error_naming_file_and_scan(h5file: Path, history: list[Event]) -> None:
    with pytest.raises(ScanNotFoundError) as info:
        annotate_file(h5file, history, "tracker", [1, 99])
    assert str(h5file) in str(info.value) and "99.1" in str(info.value) and "1, 2, 3" in str(info.value)
    assert read_sample(h5file, 1) is None  # checked before writing anything


def test_scans_without_a_usable_start_time_are_skipped(tmp_path: Path, history: list[Event]) -> None:
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as h5:
        write_scan(h5, 1, None)
        write_scan(h5, 2, "yesterday")
        write_scan(h5, 3, "2026-03-01T10:15:00")  # no time zone: no guess
        write_scan(h5, 4, iso(15), status="RUNNING")
        write_scan(h5, 5, "2026-03-01T10:15:00Z")  # str, Z
        h5.create_group("5.2")  # a subscan: not selected
    results = {r.scan: r for r in annotate_file(path, history, "tracker")}
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert [results[n].action for n in (1, 2, 3, 4)] == [Action.SKIPPED] * 4
    assert results[1].details == "no start_time dataset"
    assert "not an ISO 8601 time" in results[2].details and "no time zone" in results[3].details
    assert "RUNNING" in results[4].details
    assert results[5].action is Action.WRITTEN
    assert read_sample(path, 1) is None and read_sample(path, 4) is None
    written = read_sample(path, 5)
    assert written is not None and written["name"] == "lysozyme_1"


def test_a_missing_file_is_an_error(tmp_path: Path, history: list[Event]) -> None:
    with pytest.raises(AnnotateError, match="no such file"):
        annotate_file(tmp_path / "nope.h5", history, "tracker")


def test_a_file_that_is_not_hdf5_is_an_error(tmp_path: Path, history: list[Event]) -> None:
    path = tmp_path / "text.h5"
    path.write_text("hello")
    with pytest.raises(AnnotateError, match="cannot open .*text.h5 as an HDF5 file"):
        annotate_file(path, history, "tracker")


def test_events_of_several_beamlines_are_refused(h5file: Path, history: list[Event]) -> None:
    other = Event.mounted(THAU, occurred_at=at(1), **{**WHERE, "beamline": "id23-1"})
    with pytest.raises(AnnotateError, match="several beamlines"):
        annotate_file(h5file, [*history, other], "tracker")


@pytest.fixture
def held_open(h5file: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the file open read-write with locking, like the writer during a scan."""
    code = (
        "import h5py, sys; f = h5py.File(sys.argv[1], 'r+', locking=True); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(h5file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    try:
        yield process
    finally:
        process.communicate(timeout=30)  # closes stdin: it exits


def test_a_file_held_open_elsewhere_is_refused_but_can_be_verified(
    h5file: Path, history: list[Event], held_open: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    with pytest.raises(FileLockedError) as info:
        annotate_file(h5file, history, "tracker")
    assert str(h5file) in str(info.value) and "another program" in str(info.value)
    results = annotate_file(h5file, history, "tracker", verify=True)  # read without locking
    assert [r.action for r in results] == [Action.MISMATCH, Action.MISMATCH, Action.VERIFIED]


# --- loading the history -----------------------------------------------------------------------


def test_load_events_json_both_shapes(tmp_path: Path, history: list[Event]) -> None:
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([event.to_dict() for event in history]))
    as_answer = tmp_path / "answer.json"
    as_answer.write_text(json.dumps({"events": [event.to_dict() for event in history], "next_cursor": None}))
    assert load_events_json(as_list) == history
    assert load_events_json(as_answer) == history


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"items": []}', "neither a list of events"),
        ('{"events": [], "next_cursor": "abc"}', "one page of GET /events"),
        ('[{"type": "mounted"}]', "event #0"),
        ("[42]", "event #0 is not a JSON object"),
    ],
)
def test_load_events_json_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "events.json"
    path.write_text(content)
    with pytest.raises(AnnotateError, match=message) as info:
        load_events_json(path)
    assert str(path) in str(info.value)


def test_load_events_redis_reads_the_trackers_history_oldest_first(history: list[Event]) -> None:
    redis = fakeredis.FakeRedis()
    store = RedisTrackerStore(redis, "tracker", RedisStreamOutbox(redis, "id00"))
    snapshot = Snapshot(TrackerState.MOUNTED, at(30), THAU)
    store.commit(snapshot, history[:1])
    store.commit(snapshot, history[1:])  # lpush of two events at once: newest first in Redis
    assert load_events_redis(redis, "tracker") == history
    assert load_events_redis(redis, "other") == []
    redis.lpush("sampletrack:broken:history", b"{}")
    with pytest.raises(AnnotateError, match="'sampletrack:broken:history' item 0"):
        load_events_redis(redis, "broken")


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def events_json(tmp_path: Path, history: list[Event]) -> Path:
    path = tmp_path / "events.json"
    path.write_text(json.dumps({"events": [event.to_dict() for event in history], "next_cursor": None}))
    return path


def test_cli_writes_then_verifies(
    h5file: Path, events_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(h5file), "--events", str(events_json), "--scan", "2", "--scan", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2.1  2026-03-01T10:15:00.000000Z  written  MOUNTED lysozyme_1 (LYS-0001)")
    assert out[1].startswith("3.1  2026-03-01T10:25:00.000000Z  kept  EMPTY")
    assert out[2] == f"{h5file}: 2 scan(s) annotated: 1 written, 1 kept"
    written = read_sample(h5file, 2)
    assert written is not None and written["@tracker"] == "tracker"
    assert main([str(h5file), "--verify", "--events", str(events_json)]) == 1  # 1.1 has no group
    out = capsys.readouterr().out
    assert "1.1  2026-03-01T10:05:00.000000Z  mismatch  no sample group" in out
    assert "2 verified, 1 mismatch" in out
    assert main([str(h5file), "--events", str(events_json), "--tracker", "bl_tracker"]) == 0
    assert main([str(h5file), "--verify", "--events", str(events_json)]) == 0
    first = read_sample(h5file, 1)
    assert first is not None and first["@tracker"] == "bl_tracker"


def test_cli_mismatch_and_force(h5file: Path, events_json: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(h5file, "r+") as h5:
        del h5["3.1/sample"]
        write_sample(h5, 3, {"state": "MOUNTED", "name": "insulin_9"})
    assert main([str(h5file), "--events", str(events_json), "--scan", "3"]) == 1
    assert "mismatch  state: file 'MOUNTED', history 'EMPTY'" in capsys.readouterr().out
    assert main([str(h5file), "--events", str(events_json), "--scan", "3", "--force"]) == 0
    replaced = read_sample(h5file, 3)
    assert replaced is not None and replaced["state"] == "EMPTY"
    assert any(name.startswith("sample_replaced_") for name in groups_of(h5file, 3))


def test_cli_skipped_scan_exits_1(
    tmp_path: Path, events_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as h5:
        write_scan(h5, 1, None)
    assert main([str(path), "--events", str(events_json)]) == 1
    assert "1.1  -  skipped  no start_time dataset" in capsys.readouterr().out
    assert read_sample(path, 1) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the arguments --events --beacon is required"),
        (["--verify", "--force", "--events", "e.json"], "--verify never does"),
        (["--beacon", "localhost:25000"], "--beacon needs --tracker"),
        (["--beacon", "localhost", "--tracker", "t"], "expected HOST:PORT"),
        (["--events", "e.json", "--beacon", "localhost:1"], "not allowed with argument"),
        (["--events", "e.json", "--scan", "x"], "invalid int value"),
    ],
)
def test_cli_usage_errors_exit_2(
    h5file: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(h5file), *args]) == 2
    assert message in capsys.readouterr().err
    assert read_sample(h5file, 1) is None


def test_cli_errors_that_stop_the_run_exit_2(
    h5file: Path, events_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(h5file), "--events", str(events_json), "--scan", "7"]) == 2
    assert f"{h5file} has no scan 7.1" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main([str(h5file), "--events", str(empty)]) == 2
    assert "no events in" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.h5"), "--events", str(events_json)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert read_sample(h5file, 1) is None


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "sampletrack annotate" in capsys.readouterr().out
