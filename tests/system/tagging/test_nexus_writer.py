"""The production data path: scans saved by blisswriter's external NexusWriter (a Tango device
server following the session's scans through Redis, ``testbed/nexus_writer.py``), each file read
back with h5py once the writer says SUCCEEDED, as a beamline's files are.

On a stack where no released blisswriter provides an external writer (BLISS 2.4 today), every
test here skips with the exact reason (``external_writer_unavailable_reason``), so the day a
release fixes it the skip says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import h5py
import pytest

from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION
from bliss_sampletrack.testbed.nexus_writer import (
    NexusWriterBed,
    external_writer_unavailable_reason,
    writer_for_session,
)
from bliss_sampletrack.testing import last_scan_info
from bliss_sampletrack.tracker.controller import SampleTracker

pytestmark = pytest.mark.bliss
pytest_plugins = ["changer_fixtures"]  # the tracker fixture


@pytest.fixture(scope="module")
def nexus_writer(
    beacon: BeaconServer, bliss_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NexusWriterBed]:
    reason = external_writer_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with writer_for_session(beacon.host, DEMO_SESSION, tmp_path_factory.mktemp("nexus_writer")) as bed:
        yield bed


@pytest.fixture
def nexus(scan_saving: Any, nexus_writer: NexusWriterBed) -> Iterator[NexusWriterBed]:
    """The basic scan saving with the NexusWriter; put back to the in-process writer after."""
    scan_saving.writer = "nexus"  # kept in Redis: put back for the other tests
    try:
        yield nexus_writer
    finally:
        scan_saving.writer = "hdf5"


def written(bed: NexusWriterBed, scan: Any) -> dict[str, Any]:
    """``/<n>.1/sample`` of the writer's file, once the writer has finished that scan."""
    info = scan.scan_info
    bed.wait_scan_written(info["filename"], info["scan_nb"], scan_name=scan.identifier)
    with h5py.File(info["filename"], "r", locking=False) as h5:  # never in the writer's way
        entry = h5[f"{info['scan_nb']}.1"]
        assert entry["writer/status"][()].decode() == "SUCCEEDED"
        group = entry["sample"]
        values = {k: (v[()].decode() if isinstance(v[()], bytes) else v[()]) for k, v in group.items()}
        values.update({f"@{k}": (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()})
        return values


def test_the_writers_file_carries_the_tag_mounted_and_empty(
    tracker: SampleTracker, bliss_session: Any, beacon: BeaconServer, nexus: NexusWriterBed
) -> None:
    from bliss.common.scans import loopscan

    diode = bliss_session.env_dict["diode"]
    tracker.mount("LYS-0001")
    scan = loopscan(3, 0.01, diode)
    in_file = written(nexus, scan)
    assert in_file["@NX_class"] == "NXsample" and in_file["@tracker"] == "tracker"
    assert (in_file["state"], in_file["barcode"], in_file["name"]) == ("MOUNTED", "LYS-0001", "lysozyme_1")
    assert in_file["mount_event_id"] == str(tracker.snapshot.mount_event_id)
    assert last_scan_info(beacon.redis_data_url)["sample"]["barcode"] == "LYS-0001"  # Redis agrees

    tracker.unmount()
    scan = loopscan(2, 0.01, diode)
    in_file = written(nexus, scan)
    assert in_file["state"] == "EMPTY" and in_file["reason"] == "no sample mounted"
    assert "barcode" not in in_file and "name" not in in_file


def test_a_change_during_a_scan_is_flagged_in_the_writers_file(
    tracker: SampleTracker, bliss_session: Any, nexus: NexusWriterBed
) -> None:
    from bliss.common.scans import loopscan

    tracker.mount("LYS-0001")
    running = gevent.spawn(loopscan, 20, 0.02, bliss_session.env_dict["diode"])
    gevent.sleep(0.15)
    tracker.mount("LYS-0002")
    scan = running.get(timeout=30)
    in_file = written(nexus, scan)
    assert in_file["barcode"] == "LYS-0001" and bool(in_file["@changed_during_scan"]) is True
    assert in_file["end_barcode"] == "LYS-0002" and in_file["end_name"] == "lysozyme_2"


def test_unknown_and_conflict_reach_the_writers_file_with_their_reason(
    tracker: SampleTracker, bliss_session: Any, nexus: NexusWriterBed
) -> None:
    from bliss.common.scans import loopscan

    tracker.mount("LYS-0001")
    tracker.set_conflict("the robot reports another pin than the tracker")
    scan = loopscan(2, 0.01, bliss_session.env_dict["diode"])
    in_file = written(nexus, scan)
    assert in_file["state"] == "CONFLICT" and "another pin" in in_file["reason"]
    assert "barcode" not in in_file  # a doubtful sample is never written as the sample


def test_esrf_policy_dataset_fields_reach_the_writers_file(
    bliss_session: Any, esrf: Any, nexus_writer: NexusWriterBed
) -> None:
    """Under the ESRF data policy with the production writer: ``sample/name`` is ICAT's
    Sample_name (the tracker's), and with nothing mounted it says so."""
    from bliss.common.scans import loopscan
    from changer_fixtures import make_tracker

    from bliss_sampletrack.tagging import data_policy
    from bliss_sampletrack.testing import clear_tracker_keys

    esrf.writer = "nexus"  # the policy's scan saving: put back by the esrf fixture
    clear_tracker_keys()
    tracker = make_tracker()
    try:
        diode = bliss_session.env_dict["diode"]
        tracker.mount("LYS-0001")
        scan = loopscan(2, 0.01, diode)
        in_file = written(nexus_writer, scan)
        assert in_file["name"] == "lysozyme_1" and in_file["barcode"] == "LYS-0001"
        fields = data_policy.snapshot_fields(scan.scan_info)
        assert fields["Sample_name"] == "lysozyme_1"
        supported = data_policy.supported_sample_fields(bliss_session)
        assert ("SampleTrackingParcel_name" in fields) is ("SampleTrackingParcel_name" in supported)
        assert scan.scan_info["sample"]["parcel_name"] == "Dewar A"  # in the tag whatever ICAT knows

        tracker.unmount()
        scan = loopscan(2, 0.01, diode)
        in_file = written(nexus_writer, scan)
        assert in_file["name"] == "no sample mounted" and in_file["state"] == "EMPTY"
    finally:
        tracker.close()
