"""The SampleTracker in a real BLISS session: mounts, scan tags in Redis and HDF5, restart, policy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gevent
import h5py
import pytest
from changer_fixtures import make_tracker

from bliss_sampletrack.core import Event, EventType, Source, Status
from bliss_sampletrack.errors import MountRefusedError, NoReadError, ScanRefusedError
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testing import clear_tracker_keys, icat_fields_as_set, last_scan_info
from bliss_sampletrack.tracker.controller import SampleTracker
from bliss_sampletrack.tracker.state import TrackerState

pytestmark = pytest.mark.bliss
pytest_plugins = ["changer_fixtures"]  # the tracker fixture


def nxsample(filename: str, scan_nb: int) -> dict[str, Any]:
    with h5py.File(filename, "r", locking=False) as h5:
        group = h5[f"{scan_nb}.1/sample"]
        values = {k: (v[()].decode() if isinstance(v[()], bytes) else v[()]) for k, v in group.items()}
        values.update({f"@{k}": (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()})
        return values


def test_mount_by_reader_tags_loopscan_ascan_and_sct(
    tracker: SampleTracker, bliss_session: Any, beacon: BeaconServer
) -> None:
    from bliss.common.scans import ascan, loopscan, sct

    tracker.reader.present("LYS-0001")  # type: ignore[union-attr]
    sample = tracker.read_barcode()
    assert sample.name == "lysozyme_1" and sample.parcel_name == "Dewar A"  # from the manifest on beacon
    assert tracker.state is TrackerState.MOUNTED
    diode, roby = bliss_session.env_dict["diode"], bliss_session.env_dict["roby"]
    scans = [loopscan(3, 0.01, diode), ascan(roby, 0, 1, 3, 0.01, diode), sct(0.01, diode)]
    mount_event_id = str(tracker.snapshot.mount_event_id)
    for scan in scans:
        tag = scan.scan_info["sample"]
        assert (tag["state"], tag["barcode"], tag["name"]) == ("MOUNTED", "LYS-0001", "lysozyme_1")
        assert tag["mount_event_id"] == mount_event_id and tag["@changed_during_scan"] is False
        in_file = nxsample(scan.scan_info["filename"], scan.scan_info["scan_nb"])
        assert in_file["@NX_class"] == "NXsample" and in_file["@tracker"] == "tracker"
        assert (in_file["barcode"], in_file["container_name"], in_file["source"]) == (
            "LYS-0001",
            "puck3",
            "barcode_reader",
        )
    from_redis = last_scan_info(beacon.redis_data_url)["sample"]
    assert from_redis["barcode"] == "LYS-0001" and from_redis["sample_id"] == "100001"


def test_unmount_gives_an_explicit_no_sample_tag(
    tracker: SampleTracker, bliss_session: Any, beacon: BeaconServer
) -> None:
    from bliss.common.scans import loopscan

    tracker.mount("LYS-0002")
    tracker.unmount()
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
    tag = last_scan_info(beacon.redis_data_url)["sample"]
    assert tag["state"] == "EMPTY" and tag["reason"] == "no sample mounted"
    assert "barcode" not in tag and "name" not in tag
    in_file = nxsample(scan.scan_info["filename"], scan.scan_info["scan_nb"])
    assert in_file["state"] == "EMPTY" and "barcode" not in in_file


def test_events_reach_the_outbox_in_order_and_validate(tracker: SampleTracker) -> None:
    tracker.mount("LYS-0001")
    tracker.mount("LYS-0001")  # the same code again: one mount
    tracker.mount("THA-0003")
    tracker.unmount()
    events = tracker.outbox.peek(10)
    assert [(e.type, e.sample.barcode) for e in events] == [
        (EventType.MOUNTED, "LYS-0001"),
        (EventType.UNMOUNTED, "LYS-0001"),
        (EventType.MOUNTED, "THA-0003"),
        (EventType.UNMOUNTED, "THA-0003"),
    ]
    assert all(
        e.beamline == "id00" and e.session == "demo_session" and e.source is Source.MANUAL for e in events
    )
    assert events[1].mount_event_id == events[0].event_id
    assert [Event.from_json(e.to_json()) for e in events] == events
    assert "THA-0003" in tracker.history_text()


def test_no_read_mounts_nothing(tracker: SampleTracker) -> None:
    tracker.mount("LYS-0001")
    with pytest.raises(NoReadError, match="nothing was recorded as mounted"):
        tracker.read_barcode()
    assert tracker.sample is not None and tracker.sample.barcode == "LYS-0001"
    with pytest.raises(NoReadError):
        tracker.mount("NOREAD")


def test_unknown_barcode_policy(tracker: SampleTracker) -> None:
    sample = tracker.mount("UNLISTED-1")
    assert sample.name is None and "recorded as is" in tracker.warnings[-1]
    strict = make_tracker(unknown_barcode="refuse", tag_scans=False)
    try:
        with pytest.raises(MountRefusedError, match="UNLISTED-2.*add it to the manifest"):
            strict.mount("UNLISTED-2")
    finally:
        strict.close()


def test_state_is_restored_after_a_session_restart(
    tracker: SampleTracker, beacon: BeaconServer, tmp_path: Path
) -> None:
    """Another process (a new BLISS session) mounts; a tracker created afterwards finds it."""
    script = tmp_path / "other_session.py"
    script.write_text(
        textwrap.dedent(
            """
            from bliss_sampletrack.testbed.session import import_bliss
            import_bliss()
            from bliss.config.static import get_config
            from bliss import current_session
            session = get_config().get("demo_session")
            session.setup()
            tracker = get_config().get("tracker")
            tracker.mount("THA-0003")
            session.close()
            """
        )
    )
    env = {**os.environ, "BEACON_HOST": beacon.host}
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tracker.close()
    restored = make_tracker()
    try:
        assert restored.state is TrackerState.MOUNTED
        assert restored.sample is not None and restored.sample.name == "thaumatin_3"
        assert "THA-0003" in restored.__info__()
    finally:
        restored.close()


def test_first_start_is_unknown_and_says_so(tracker: SampleTracker, bliss_session: Any) -> None:
    from bliss.common.scans import loopscan

    assert tracker.state is TrackerState.UNKNOWN
    tag = loopscan(1, 0.01, bliss_session.env_dict["diode"]).scan_info["sample"]
    assert tag["state"] == "UNKNOWN" and "nothing to trust" in tag["reason"]


def test_scan_policy_refuses_with_the_reason(bliss_session: Any, scan_saving: Any) -> None:
    from bliss.common.scans import loopscan

    clear_tracker_keys()
    strict = make_tracker(scan_policy="refuse_without_sample")
    try:
        strict.unmount()
        with pytest.raises(
            ScanRefusedError, match=r"no sample is known to be mounted \(state EMPTY.*mount\('BARCODE'\)"
        ):
            loopscan(2, 0.01, bliss_session.env_dict["diode"])
        strict.mount("LYS-0001")
        assert loopscan(2, 0.01, bliss_session.env_dict["diode"]).scan_info["sample"]["barcode"] == "LYS-0001"
        strict.set_conflict("reader reads THA-0003 while the changer says LYS-0001")
        with pytest.raises(ScanRefusedError, match="CONFLICT.*reader reads THA-0003"):
            loopscan(2, 0.01, bliss_session.env_dict["diode"])
    finally:
        strict.close()
    loopscan(1, 0.01, bliss_session.env_dict["diode"])  # policy gone with the tracker


def test_sample_change_during_a_scan_is_flagged(
    tracker: SampleTracker, bliss_session: Any, beacon: BeaconServer
) -> None:
    from bliss.common.scans import loopscan

    tracker.mount("LYS-0001")
    running = gevent.spawn(loopscan, 20, 0.02, bliss_session.env_dict["diode"])
    gevent.sleep(0.15)
    tracker.mount("LYS-0002")
    scan = running.get(timeout=30)
    tag = scan.scan_info["sample"]
    assert tag["barcode"] == "LYS-0001" and tag["@changed_during_scan"] is True
    assert tag["end_barcode"] == "LYS-0002"
    assert last_scan_info(beacon.redis_data_url)["sample"]["@changed_during_scan"] is True
    in_file = nxsample(scan.scan_info["filename"], scan.scan_info["scan_nb"])
    assert in_file["end_name"] == "lysozyme_2" and bool(in_file["@changed_during_scan"]) is True


def test_a_failing_tag_is_recorded_in_the_tag(tracker: SampleTracker, bliss_session: Any) -> None:
    from bliss.common.scans import loopscan

    def broken(start: bool = True) -> dict[str, Any]:
        raise RuntimeError("simulated bug")

    tracker._tagger.make_tag = broken  # type: ignore[union-attr]
    tag = loopscan(1, 0.01, bliss_session.env_dict["diode"]).scan_info["sample"]
    assert tag["state"] == "ERROR" and "simulated bug" in tag["reason"]
    assert tracker._tagger.failures == 2  # type: ignore[union-attr]  # START and END


def test_shell_commands_are_typechecked(tracker: SampleTracker) -> None:
    with pytest.raises(TypeError):
        tracker.mount(42)  # type: ignore[arg-type]
    with pytest.raises(MountRefusedError, match="needs a barcode or a name"):
        tracker.mount()


def test_info_shows_state_reader_registry_and_history(tracker: SampleTracker) -> None:
    tracker.mount("LYS-0001")
    info = tracker.__info__()
    for text in (
        "MOUNTED",
        "lysozyme_1 (LYS-0001)",
        "reader    : bcr",
        "beacon:sampletrack/samples.csv (3 samples)",
        "1 event(s) kept in the outbox",
    ):
        assert text in info, info


def test_error_mount_status_is_recorded(tracker: SampleTracker) -> None:
    from bliss_sampletrack.core import Sample

    events = tracker.record_mount(
        Sample(barcode="THA-0003"), Source.SAMPLE_CHANGER, status=Status.ERROR, message="pin dropped"
    )
    assert events[-1].status is Status.ERROR and tracker.state is TrackerState.CONFLICT


def test_continuous_reader_mounts_and_goes_unknown_when_the_reader_drops(
    bliss_session: Any, scan_saving: Any
) -> None:
    clear_tracker_keys()
    follower = make_tracker(reader_mode="continuous", tag_scans=False)
    simulator = follower.reader.simulator  # type: ignore[union-attr]
    try:
        follower.reader.connect()  # type: ignore[union-attr]
        gevent.sleep(0.1)
        simulator.push("LYS-0002")
        with gevent.Timeout(5):
            while follower.state is not TrackerState.MOUNTED:
                gevent.sleep(0.02)
        assert follower.sample.name == "lysozyme_2"  # type: ignore[union-attr]
        assert follower.snapshot.source is Source.BARCODE_READER
        simulator.push("LYS-0002")  # the same code again: no new event
        simulator.send(b"ERROR\r")  # a continuous no-read: nothing in view, not an unmount
        gevent.sleep(0.2)
        assert follower.state is TrackerState.MOUNTED
        assert len(follower.outbox.peek(10)) == 1
        simulator.disconnect()
        with gevent.Timeout(5):
            while follower.state is not TrackerState.UNKNOWN:
                gevent.sleep(0.02)
        assert "went offline while lysozyme_2 (LYS-0002) was mounted" in follower.snapshot.reason
    finally:
        follower.close()


def test_esrf_policy_icat_fields_follow_mounts(bliss_session: Any, esrf: Any, beacon: BeaconServer) -> None:
    """Under the ESRF data policy: fields set on mount, a new dataset per sample, cleared on unmount."""
    from bliss.common.scans import loopscan

    from bliss_sampletrack.tagging import data_policy

    clear_tracker_keys()
    tracker = make_tracker()
    try:
        first_dataset = data_policy.dataset_name(bliss_session)
        tracker.mount("LYS-0001")
        scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
        snapshot = data_policy.snapshot_fields(last_scan_info(beacon.redis_data_url))
        assert snapshot["Sample_name"] == "lysozyme_1"
        expected = {"SampleTrackingParcel_name": "Dewar A", "SampleTrackingContainer_position": "1"}
        in_snapshot = {key: snapshot[key] for key in expected if key in snapshot}
        assert in_snapshot == icat_fields_as_set(bliss_session, expected)
        assert scan.scan_info["sample"]["parcel_name"] == "Dewar A"  # in the tag whatever ICAT knows
        assert scan.scan_info["sample"]["name"] == "lysozyme_1"
        assert tracker.outbox.peek(1)[0].proposal == "st0001"  # the event knows the proposal
        # the dataset open at the mount was still empty: BLISS reuses an empty dataset
        mounted_dataset = data_policy.dataset_name(bliss_session)
        assert mounted_dataset == first_dataset

        tracker.mount("THA-0003")
        # the dataset is switched by the next scan, in its own greenlet: never under a starting scan
        assert data_policy.dataset_name(bliss_session) == mounted_dataset
        scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
        assert data_policy.dataset_name(bliss_session) != mounted_dataset  # ICAT fields freeze per dataset
        assert data_policy.snapshot_fields(scan.scan_info)["Sample_name"] == "thaumatin_3"

        tracker.unmount()
        scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
        fields = data_policy.snapshot_fields(scan.scan_info)
        assert "SampleTrackingParcel_name" not in fields and "SampleChanger_name" not in fields
        assert fields["Sample_name"] == "no sample mounted"  # not the collection's name
        assert scan.scan_info["sample"]["state"] == "EMPTY"
        in_file = nxsample(scan.scan_info["filename"], scan.scan_info["scan_nb"])
        assert in_file["name"] == "no sample mounted" and in_file["state"] == "EMPTY"
    finally:
        tracker.close()


def test_repeated_codes_write_nothing_to_redis(
    bliss_session: Any, scan_saving: Any, beacon: BeaconServer
) -> None:
    """A reader in continuous mode sees the mounted sample's code again and again: no change, so
    no Redis write at all (counted with Redis keyspace notifications on the tracker's keys)."""
    import redis as redis_py

    clear_tracker_keys()
    client = redis_py.Redis.from_url(beacon.redis_url, socket_timeout=10)
    previous = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    client.config_set("notify-keyspace-events", "KA")
    pubsub = client.pubsub()
    pubsub.psubscribe("__keyspace@*__:sampletrack:tracker:*", "__keyspace@*__:sampletrack:outbox:id00")
    follower = make_tracker(
        reader_mode="continuous", tag_scans=False, deliver_in_session=False, owner_ttl=600
    )
    simulator = follower.reader.simulator  # type: ignore[union-attr]
    try:
        follower.reader.connect()  # type: ignore[union-attr]
        gevent.sleep(0.1)
        simulator.push("LYS-0002")
        with gevent.Timeout(10):
            while follower.state is not TrackerState.MOUNTED:
                gevent.sleep(0.02)
        for _ in range(5):
            simulator.push("LYS-0002")  # the same code, read again and again
        gevent.sleep(0.3)
        for _ in range(3):
            follower.mount("LYS-0002")  # and by hand
        simulator.push("THA-0003")  # a real change, after the repeats in the reader's order
        with gevent.Timeout(10):
            while follower.sample is None or follower.sample.barcode != "THA-0003":
                gevent.sleep(0.02)
        writes: list[tuple[str, str]] = []
        with gevent.Timeout(10):
            while sum(1 for key, op in writes if key.endswith(":state") and op == "set") < 2:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    writes.append((message["channel"].decode(), message["data"].decode()))
        while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
            writes.append((message["channel"].decode(), message["data"].decode()))
        state_writes = [op for key, op in writes if key.endswith(":tracker:state")]
        assert state_writes == ["set", "set"], writes  # LYS-0002 mounted, then THA-0003
        assert [op for key, op in writes if key.endswith(":outbox:id00")] == ["xadd"] * 3, writes  # 1 + 2
        assert [e.sample.barcode for e in follower.store.history(10)] == ["THA-0003", "LYS-0002", "LYS-0002"]
    finally:
        follower.close()
        pubsub.close()
        client.config_set("notify-keyspace-events", previous)
        client.close()


def test_a_closed_reader_stops_continuous_tracking_with_a_warning(
    bliss_session: Any, scan_saving: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clear_tracker_keys()
    follower = make_tracker(reader_mode="continuous", tag_scans=False, deliver_in_session=False)
    reader = follower.reader
    simulator = reader.simulator  # type: ignore[union-attr]
    try:
        reader.connect()  # type: ignore[union-attr]
        with gevent.Timeout(10):  # the follower is following (else it would reopen the reader)
            while not reader._subscribers:  # type: ignore[union-attr]
                gevent.sleep(0.02)
        with caplog.at_level(logging.WARNING, logger="bliss_sampletrack.tracker.controller"):
            reader.close()  # type: ignore[union-attr]  # by the user (also stops the simulator)
            with gevent.Timeout(10):
                while follower._follower is not None:
                    gevent.sleep(0.05)
        [record] = [r for r in caplog.records if "was closed" in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert "tracker 'tracker'" in record.getMessage() and "reader 'bcr' was closed" in record.getMessage()
        assert "call tracker.activate() to follow it again" in record.getMessage()
        assert "continuous tracking stopped" in follower.__info__()
        simulator.power_on()  # the reader is back
        follower.activate()  # as the warning says: follows (and reconnects) the reader again
        with gevent.Timeout(10):
            while reader.state != "connected":  # type: ignore[union-attr]
                gevent.sleep(0.05)
        gevent.sleep(0.1)
        simulator.push("LYS-0001")
        with gevent.Timeout(10):
            while follower.state is not TrackerState.MOUNTED:
                gevent.sleep(0.02)
        assert follower.snapshot.source is Source.BARCODE_READER
    finally:
        follower.close()
        simulator.power_on()


def test_a_tracker_outside_any_session_records_with_no_session(beacon: BeaconServer, tmp_path: Path) -> None:
    """A script (no BLISS session) mounts: ``bliss.current_session`` is a proxy to nothing there."""
    script = tmp_path / "no_session.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            from bliss_sampletrack.testbed.session import import_bliss
            import_bliss()
            from bliss.config.static import get_config
            from bliss_sampletrack.tracker.controller import SampleTracker
            node = get_config().get_config("tracker")
            config = {key: node.get(key) for key in node.keys() if key != "reader"}
            config.update(tag_scans=False, deliver_in_session=False)
            tracker = SampleTracker("nosession_tracker", config)
            tracker.mount("LYS-0001")
            [event] = tracker.store.history(5)
            answer = {"session": event.session, "proposal": event.proposal, "owner": tracker.owner()}
            print(json.dumps(answer))
            tracker.close()
            """
        )
    )
    clear_tracker_keys("nosession_tracker")
    env = {**os.environ, "BEACON_HOST": beacon.host}
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["session"] == "(no session)" and answer["proposal"] is None
    assert answer["owner"].startswith("this session (session '(no session)'")
    clear_tracker_keys("nosession_tracker")


def test_the_configuration_example_builds(
    add_yaml: Any, bliss_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config_examples/tracker/sample_tracker.yml, as written (ICAT+ pointed at a closed loopback port)."""
    from bliss_sampletrack.tagging import data_policy
    from bliss_sampletrack.tracker.icatplus import IcatPlusRegistry
    from bliss_sampletrack.tracker.registry import ManifestRegistry

    example = Path(__file__).resolve().parents[3] / "config_examples" / "tracker" / "sample_tracker.yml"
    text = example.read_text()
    assert "https://icatplus.esrf.fr" in text and "- name: tracker\n" in text
    text = text.replace("https://icatplus.esrf.fr", "http://127.0.0.1:9").replace(
        "- name: tracker\n", "- name: example_tracker\n"
    )
    monkeypatch.setenv("ICATPLUS_SESSION_ID", "example-session")
    monkeypatch.setenv("ICATPLUS_API_KEY", "example-key")
    assert not data_policy.policy_active(bliss_session)  # so no proposal: ICAT+ is not asked
    clear_tracker_keys("example_tracker")
    tracker = add_yaml(text).get("example_tracker")
    try:
        manifest, icat = tracker.registry.registries
        assert isinstance(manifest, ManifestRegistry) and isinstance(icat, IcatPlusRegistry)
        assert icat.cache_ttl == 600 and tracker._lease.ttl == 10
        assert tracker.resolve("LYS-0001").name == "lysozyme_1"
    finally:
        tracker.close()
