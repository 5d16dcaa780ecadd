"""The tracker's pure logic: state machine, persistence (fakeredis), registries, scan tags."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest

from bliss_sampletrack.core import Event, EventType, Sample, Source, Status
from bliss_sampletrack.core.sample import CONTRACT_SAMPLE_FIELDS, REGISTRY_NOTE_MAX
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import (
    ConfigurationError,
    InvalidSampleError,
    SampleTrackError,
    TrackerOwnedError,
)
from bliss_sampletrack.tagging.icat_fields import ICAT_SAMPLE_FIELDS, icat_fields
from bliss_sampletrack.tagging.scan_tag import end_of_scan_tag, sample_tag
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.registry import ChainRegistry, ManifestRegistry
from bliss_sampletrack.tracker.state import EventContext, Snapshot, TrackerState
from bliss_sampletrack.tracker.store import (
    OwnershipLostError,
    RedisTrackerStore,
    StaleStateError,
    TrackerLease,
)

CTX = EventContext("id23-1", "mx", "mx2532")
A = Sample(barcode="LYS-1", name="lysozyme 1", changer_name="flex", changer_position="3:05")
B = Sample(barcode="THA-2", name="thaumatin 2")
T0 = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def mounted(sample: Sample = A) -> machine.Change:
    return machine.mount(Snapshot(TrackerState.EMPTY, T0), sample, Source.SAMPLE_CHANGER, CTX, at=T0)


def test_mount_from_empty_is_one_event() -> None:
    change = mounted()
    assert change.snapshot.state is TrackerState.MOUNTED and change.snapshot.sample == A
    [event] = change.events
    assert event.type is EventType.MOUNTED and event.proposal == "mx2532" and event.occurred_at == T0
    assert change.snapshot.mount_event_id == event.event_id


def test_same_barcode_twice_is_one_mount() -> None:
    first = mounted()
    again = machine.mount(first.snapshot, A, Source.BARCODE_READER, CTX)
    assert again.events == [] and again.snapshot is first.snapshot


def test_mount_over_a_mounted_sample_records_its_unmount_first() -> None:
    first = mounted()
    second = machine.mount(first.snapshot, B, Source.SAMPLE_CHANGER, CTX, at=T0 + timedelta(minutes=5))
    unmount, mount = second.events
    assert (unmount.type, unmount.sample, unmount.status) == (EventType.UNMOUNTED, A, Status.SUCCESS)
    assert unmount.mount_event_id == first.snapshot.mount_event_id
    assert "replaced by thaumatin 2" in unmount.message
    assert mount.type is EventType.MOUNTED and mount.sample == B


def test_unmount_then_unmount_again() -> None:
    first = mounted()
    change = machine.unmount(first.snapshot, Source.MANUAL, CTX)
    [event] = change.events
    assert event.type is EventType.UNMOUNTED and event.status is Status.SUCCESS
    assert change.snapshot.state is TrackerState.EMPTY and change.snapshot.sample is None
    assert machine.unmount(change.snapshot, Source.MANUAL, CTX).events == []


def test_leaving_unknown_records_a_doubtful_unmount() -> None:
    unknown = machine.degrade(mounted().snapshot, TrackerState.UNKNOWN, "reader offline").snapshot
    assert unknown.state is TrackerState.UNKNOWN and unknown.sample == A
    change = machine.mount(unknown, B, Source.MANUAL, CTX)
    unmount, mount = change.events
    assert unmount.status is Status.ERROR and "UNKNOWN (reader offline)" in unmount.message
    assert change.snapshot.state is TrackerState.MOUNTED and change.snapshot.sample == B


def test_error_mount_means_conflict() -> None:
    change = machine.mount(
        mounted().snapshot,
        B,
        Source.BARCODE_READER,
        CTX,
        status=Status.ERROR,
        message="reader reads THA-2, changer says LYS-1",
    )
    assert change.snapshot.state is TrackerState.CONFLICT
    assert change.snapshot.reason == "reader reads THA-2, changer says LYS-1"
    assert change.events[-1].status is Status.ERROR


def test_degrade_refuses_other_states() -> None:
    with pytest.raises(ValueError):
        machine.degrade(mounted().snapshot, TrackerState.MOUNTED, "x")


def test_snapshot_round_trips() -> None:
    snap = mounted().snapshot
    assert Snapshot.from_dict(snap.to_dict()) == snap


def test_registry_note_is_kept_in_the_snapshot_and_the_tag_never_in_events() -> None:
    noted = Sample(barcode="LYS-1", name="lysozyme 1", registry_note="from the ICAT+ cache, may be stale")
    assert noted == Sample(barcode="LYS-1", name="lysozyme 1")  # one sample, with or without a note
    change = mounted(noted)
    snap = change.snapshot
    restored = Snapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert restored.sample is not None and restored.sample.registry_note == noted.registry_note
    assert sample_tag(snap, "t")["registry_note"] == noted.registry_note
    assert "registry_note" not in sample_tag(mounted().snapshot, "t")  # no note, no key (HDF5: no null)
    [event] = change.events
    assert set(event.to_dict()["sample"]) == set(CONTRACT_SAMPLE_FIELDS)  # validated by the contract
    assert "may be stale" not in event.to_json()
    assert Event.from_json(event.to_json()) == event
    assert "may be stale" not in str(icat_fields(snap))
    Sample(barcode="X-1", registry_note="n" * REGISTRY_NOTE_MAX)
    with pytest.raises(InvalidSampleError, match="'registry_note' is 513 characters long; at most 512"):
        Sample(barcode="X-1", registry_note="n" * (REGISTRY_NOTE_MAX + 1))


def test_a_snapshot_of_an_older_or_newer_version_still_loads() -> None:
    """Two plugin versions may share the beacon Redis: a snapshot without the note (older), or
    with sample fields this version does not know (newer), restores the mounted sample."""
    current = mounted(Sample(barcode="LYS-1", name="lysozyme 1", registry_note="stale?")).snapshot.to_dict()
    older = json.loads(json.dumps(current))
    del older["sample"]["registry_note"]
    loaded = Snapshot.from_dict(older)
    assert loaded.state is TrackerState.MOUNTED and loaded.sample is not None
    assert (loaded.sample.barcode, loaded.sample.registry_note) == ("LYS-1", None)
    newer = json.loads(json.dumps(current))
    newer["sample"].update(colour="blue", registry_note="x" * 2000)
    newer["owner_hint"] = "a top-level key of a later version"
    loaded = Snapshot.from_dict(newer)
    assert loaded.sample is not None and loaded.sample.name == "lysozyme 1"
    assert loaded.sample.registry_note is not None and len(loaded.sample.registry_note) == REGISTRY_NOTE_MAX
    assert loaded.mount_event_id == uuid.UUID(current["mount_event_id"])
    redis = fakeredis.FakeRedis()  # through the store too: the tracker would not start UNKNOWN
    store = RedisTrackerStore(redis, "t", RedisStreamOutbox(redis, "id23-1"))
    redis.set(store.state_key, json.dumps(newer))
    assert store.load() == loaded
    bad = json.loads(json.dumps(current))
    bad["sample"]["barcode"] = "NOREAD"  # what identifies the sample is still validated
    redis.set(store.state_key, json.dumps(bad))
    with pytest.raises(SampleTrackError, match="unreadable"):
        store.load()


def test_a_commit_that_changes_nothing_writes_nothing_but_still_checks() -> None:
    redis = fakeredis.FakeRedis()
    outbox = RedisStreamOutbox(redis, "id23-1")
    store = RedisTrackerStore(redis, "t", outbox)
    lease = TrackerLease(redis, "t", "mx")
    assert lease.acquire()
    change = mounted()
    raw = store.commit(change.snapshot, change.events, lease=lease, expect=None, check_state=True)
    again = machine.mount(change.snapshot, A, Source.BARCODE_READER, CTX)  # the same code again
    assert again.events == []
    redis.pexpire(store.state_key, 600_000)  # any SET would clear this TTL: it shows a write
    assert store.commit(again.snapshot, [], lease=lease, expect=raw, check_state=True) == raw
    assert redis.pttl(store.state_key) > 0 and outbox.pending() == 1 and len(store.history()) == 1
    # not written, yet checked as a real commit is: another writer's state, or a lost owner key
    redis.set(store.state_key, raw.replace("MOUNTED", "EMPTY"))
    with pytest.raises(StaleStateError):
        store.commit(again.snapshot, [], lease=lease, expect=raw, check_state=True)
    redis.set(store.state_key, raw)
    redis.delete(lease.key)
    with pytest.raises(OwnershipLostError):
        store.commit(again.snapshot, [], lease=lease, expect=raw, check_state=True)
    redis.set(lease.key, '{"session": "other", "host": "h", "pid": 1, "token": "t0", "since": "s"}')
    with pytest.raises(TrackerOwnedError, match="session 'other' on host h"):
        store.commit(again.snapshot, [], lease=lease, expect=raw, check_state=True)


def test_store_commits_state_history_and_outbox_together() -> None:
    redis = fakeredis.FakeRedis()
    outbox = RedisStreamOutbox(redis, "id23-1")
    store = RedisTrackerStore(redis, "t", outbox, history_size=3)
    assert store.load() is None
    snap = Snapshot(TrackerState.EMPTY, T0)
    for i in range(5):
        change = machine.mount(
            snap, Sample(barcode=f"S-{i}"), Source.MANUAL, CTX, at=T0 + timedelta(seconds=i)
        )
        store.commit(change.snapshot, change.events)
        snap = change.snapshot
    assert store.load() == snap
    history = store.history(10)
    assert len(history) == 3  # bounded, newest first
    assert history[0].sample.barcode == "S-4" and history[0].type is EventType.MOUNTED
    assert outbox.pending() == 9  # 5 mounts + 4 unmounts, none trimmed: delivery owns them
    assert [e.type for e in outbox.peek(2)] == [EventType.MOUNTED, EventType.UNMOUNTED]


def test_unreadable_state_is_an_error_not_a_guess() -> None:
    redis = fakeredis.FakeRedis()
    store = RedisTrackerStore(redis, "t", RedisStreamOutbox(redis, "id23-1"))
    redis.set(store.state_key, b"{not json")
    with pytest.raises(SampleTrackError, match="unreadable"):
        store.load()


def test_manifests_csv_and_yaml_chain(tmp_path: Path) -> None:
    csv_file = tmp_path / "samples.csv"
    csv_file.write_text(
        "barcode,name,sample_id,container_name,container_position\nLYS-1,lyso,101,puck3,5\nTHA-2,,,,\n"
    )
    yaml_file = tmp_path / "more.yml"
    yaml_file.write_text("THA-2:\n  name: thaumatin\nGLU-3:\n  name: glucose\n  parcel_name: box A\n")
    chain = ChainRegistry([ManifestRegistry(csv_file), ManifestRegistry(yaml_file)])
    assert chain.resolve("LYS-1") == Sample(
        barcode="LYS-1", name="lyso", sample_id="101", container_name="puck3", container_position="5"
    )
    assert chain.resolve("THA-2") == Sample(barcode="THA-2")  # the CSV comes first
    assert chain.resolve("GLU-3").parcel_name == "box A"  # type: ignore[union-attr]
    assert chain.resolve("NOPE") is None
    assert "samples.csv (2 samples)" in chain.describe()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.csv", "code,name\nX,y\n", "'barcode' column"),
        ("dup.csv", "barcode\nX-1\nX-1\n", "line 3: barcode 'X-1' is listed twice"),
        ("noread.csv", "barcode\nNOREAD\n", "line 2: the reader reported a no-read"),
        ("field.yml", "- barcode: A\n  colour: red\n", "entry 1: unknown field 'colour'"),
        ("nobarcode.yml", "- name: x\n", "entry 1: the barcode is missing"),
        ("broken.yml", "- [unclosed\n", "not valid YAML"),
    ],
)
def test_manifest_errors_name_file_row_and_field(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        ManifestRegistry(path)
    assert message in str(info.value) and name in str(info.value)


def test_tag_of_a_mounted_sample() -> None:
    snap = mounted().snapshot
    tag = sample_tag(snap, "tracker")
    assert tag["@NX_class"] == "NXsample" and tag["state"] == "MOUNTED"
    assert (tag["name"], tag["barcode"], tag["changer_position"]) == ("lysozyme 1", "LYS-1", "3:05")
    assert tag["mount_event_id"] == str(snap.mount_event_id)
    assert "reason" not in tag and None not in tag.values()


def test_tag_without_a_sample_says_why_and_never_names_one() -> None:
    unknown = machine.degrade(mounted().snapshot, TrackerState.UNKNOWN, "reader offline").snapshot
    tag = sample_tag(unknown, "tracker")
    assert tag["state"] == "UNKNOWN" and tag["reason"] == "reader offline"
    assert "name" not in tag and "barcode" not in tag
    assert tag["last_known_barcode"] == "LYS-1"
    empty = sample_tag(Snapshot(TrackerState.EMPTY, T0), "tracker")
    assert empty["reason"] == "no sample mounted"


def test_change_during_a_scan_is_flagged() -> None:
    start = sample_tag(mounted().snapshot, "t")
    assert end_of_scan_tag(start, start)["@changed_during_scan"] is False
    end = sample_tag(machine.mount(mounted().snapshot, B, Source.MANUAL, CTX).snapshot, "t")
    tag = end_of_scan_tag(start, end)
    assert tag["@changed_during_scan"] is True and tag["name"] == "lysozyme 1"
    assert tag["end_name"] == "thaumatin 2" and "changed during the scan" in tag["change_note"]


def test_icat_fields_set_and_cleared() -> None:
    fields = icat_fields(mounted().snapshot)
    assert fields["Sample_name"] == "lysozyme 1" and fields["SampleChanger_position"] == "3:05"
    # EMPTY says so in Sample_name (else BLISS shows the collection's name); doubt clears them all
    assert icat_fields(Snapshot(TrackerState.EMPTY, T0)) == {
        **dict.fromkeys(ICAT_SAMPLE_FIELDS),
        "Sample_name": "no sample mounted",
    }
    for doubt in (TrackerState.UNKNOWN, TrackerState.CONFLICT):
        assert icat_fields(Snapshot(doubt, T0, Sample(barcode="X-9"))) == dict.fromkeys(ICAT_SAMPLE_FIELDS)
    nameless = machine.mount(
        Snapshot(TrackerState.EMPTY, T0), Sample(barcode="X-9"), Source.MANUAL, CTX
    ).snapshot
    assert icat_fields(nameless)["Sample_name"] == "X-9"


def test_events_of_a_session_validate() -> None:
    change = mounted()
    for event in change.events:
        assert Event.from_json(event.to_json()) == event
    assert isinstance(change.events[0].event_id, uuid.UUID)
