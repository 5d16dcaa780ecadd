"""The demo's scripted sequence, run in the real BLISS session ``sampletrack_demo``.

Under the ESRF data policy: three samples mounted in turn by the simulated changer (whose
gripper reader reads each pin), scans on each, a no-read, an unknown barcode, a failed mount
(a dropped pin) and an outage of the tracking service, whose events are delivered once it is
back; last, a puck inventory after the pucks were tampered with by hand (a pin taken out, a pin
relabelled with another sample's barcode). Every step is printed as it happens and recorded for
the summary, with what the sequence did to the simulated pucks: the inventory's ground truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bliss_sampletrack.errors import NoReadError, SampleTrackError

log = logging.getLogger(__name__)

PROPOSAL = "mx0001"
BEAMLINE = "id00"
COLLECTION = "sampletrack_demo"


@dataclass
class ScanRecord:
    step: str
    scan_nb: int
    title: str
    filename: str
    tag: dict[str, Any]  # scan_info["sample"] as the session saw it
    writer_wait_s: float | None = None  # the external writer: seconds until its file was complete


#: the last step's tampering with the pucks, by hand: the pin taken out of its puck (the shipment
#: declares LYS-0002 there: the inventory must find it missing) ...
REMOVED_PIN = "1:02"
#: ... and (position, label): that pin now carries the label of the pin at 1:01 (LYS-0001: the
#: inventory must find one barcode at two positions)
RELABELLED_PIN = ("2:05", "LYS-0001")


@dataclass
class InventoryRecord:
    """The last step: what the sequence did to the simulated pucks (the ground truth) and the
    inventory that followed, as it was kept in Redis."""

    removed: dict[str, str | None]  # address -> the barcode the changer lists there (pin taken out)
    relabelled: dict[str, str]  # address -> the label the pin there now carries
    physical: dict[str, str | None]  # sc.physical() at the inventory: position -> label (None: none)
    table: str  # the inventory's table, as printed
    kept: dict[str, Any] | None  # tracker.last_inventory(sc), read back from Redis (to_dict())


@dataclass
class DemoLog:
    scans: list[ScanRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inventory: InventoryRecord | None = None


def save_as_demo(session: Any, data_root: Path, writer: str) -> None:
    """The demo's scan saving: the ESRF data policy, headless, with every root (inhouse, visitor,
    tmp) under ``data_root``, proposal :data:`PROPOSAL`, collection :data:`COLLECTION`, saved by
    ``writer`` ("nexus" or "hdf5"). An earlier run's datasets in ``data_root`` stay: BLISS skips
    every dataset name whose folder exists."""
    from bliss_sampletrack.tagging import data_policy

    data_policy.enable_policy(
        session,
        beamline=BEAMLINE,
        writer=writer,
        inhouse_data_root=data_root / "inhouse",
        visitor_data_root=data_root / "visitor",
        tmp_data_root=data_root / "tmp",
    )
    session.scan_saving.newproposal(PROPOSAL)
    session.scan_saving.newcollection(COLLECTION)


def save_shell_scans(session: Any, data_root: str, writer: str) -> None:
    """:func:`save_as_demo` for the demo's BLISS shell, called by the demo's copy of the session's
    setup file (``sampletrack demo --shell``; BLISS's default would be ``/tmp/scans``); says where."""
    save_as_demo(session, Path(data_root), writer)
    # the dataset's folder, not SCAN_SAVING.filename: that one creates BLISS's writer object, whose
    # first import (blisswriter's publish module imports bliss.physics: 1.4-2.3 s measured on
    # BLISS 2.0.3) blocks this process; the first scan pays it anyway
    print(
        f"scans are saved under {data_root} (ESRF data policy: proposal {PROPOSAL}, collection "
        f"{COLLECTION}, writer {writer!r}); this dataset's folder: {session.scan_saving.root_path}"
    )


def run_sequence(
    session: Any,
    data_root: Path,
    stop_service: Callable[[], None],
    start_service: Callable[[], None],
    progress: Callable[[str], None],
    *,
    writer: str = "hdf5",
    written: Callable[[Any], float] | None = None,
) -> DemoLog:
    """The sequence, saving with ``writer`` ("nexus": blisswriter's external NexusWriter, then
    ``written(scan)`` waits for each scan's file to be complete and returns the seconds waited;
    "hdf5": BLISS's in-process writer)."""
    from bliss.common.scans import ascan, loopscan

    env = session.env_dict
    sc, tracker, bcr, diode, roby = env["sc"], env["tracker"], env["bcr"], env["diode"], env["roby"]
    record = DemoLog()

    def scans(step: str, *runs: Callable[[], Any]) -> None:
        for run in runs:
            scan = run()
            info = scan.scan_info
            waited = written(scan) if written is not None else None
            record.scans.append(
                ScanRecord(
                    step, info["scan_nb"], info["title"], info["filename"], dict(info["sample"]), waited
                )
            )
            tag = info["sample"]
            shown = tag.get("name") or tag.get("barcode") or f"{tag['state']}: {tag.get('reason', '')}"
            progress(f"  scan {info['scan_nb']} {info['title']!r}: sample {shown}")

    def note(text: str) -> None:
        record.notes.append(text)
        progress(f"  {text}")

    progress(f"ESRF data policy: proposal {PROPOSAL}, beamline {BEAMLINE}, writer {writer!r}")
    save_as_demo(session, data_root, writer)

    progress("1. the changer mounts puck 1 position 01; its gripper reader reads the pin")
    sc.mount("1:01")
    scans("LYS-0001", lambda: loopscan(5, 0.01, diode), lambda: ascan(roby, 0, 1, 5, 0.01, diode))

    progress("2. the changer mounts 1:02 (the previous sample is unmounted first)")
    sc.mount("1:02")
    scans("LYS-0002", lambda: loopscan(5, 0.01, diode), lambda: loopscan(3, 0.02, diode))

    progress("3. a no-read: nothing in front of the reader, the tracker is asked to read")
    bcr.remove()
    try:
        tracker.read_barcode()
    except NoReadError as exc:
        note(f"no-read refused, nothing recorded: {exc}")

    progress("4. an unknown barcode: the pin at 2:05 is in no manifest (accepted with a warning)")
    sc.mount("2:05")
    note(f"warning: {tracker.warnings[-1]}" if tracker.warnings else "no warning recorded")
    scans("UNK-0042", lambda: loopscan(3, 0.01, diode))

    progress("5. a failed mount: the gripper drops the pin of 3:16")
    sc.fail_next("dropped_pin")
    try:
        sc.mount("3:16")
    except SampleTrackError as exc:
        note(f"mount failed as expected: {exc}")
    note(f"tracker state after the failure: {tracker.state}")
    sc.recover()

    progress("6. the tracking service goes down; the next mount and scans go on regardless")
    stop_service()
    sc.mount("2:01")
    scans("THA-0003", lambda: loopscan(5, 0.01, diode), lambda: ascan(roby, 1, 0, 4, 0.01, diode))
    pending = tracker.outbox.pending("service")
    note(f"while the service is down: {pending} event(s) pending in the outbox")
    progress("   the service comes back: the outbox is delivered")
    start_service()
    tracker.drain(60)

    progress("7. the changer unmounts: the next scan says explicitly that no sample is mounted")
    sc.unmount()
    scans("none", lambda: loopscan(2, 0.01, diode))
    tracker.drain(30)

    address, label = RELABELLED_PIN
    progress(
        f"8. a puck inventory: by hand, the pin of {REMOVED_PIN} is taken out and the pin of {address} "
        f"relabelled {label}; the gripper's reader reads every pin of the loaded pucks"
    )
    listed = {p.address: p.barcode for p in sc.contents()}
    sc.remove_pin(REMOVED_PIN)
    sc.mislabel(address, label)
    physical = sc.physical()  # the simulation's truth, as the inventory will find the pucks
    report = sc.inventory()
    table = report.text()
    for line in table.splitlines():
        progress(f"  {line}")
    kept = tracker.last_inventory(sc)
    record.inventory = InventoryRecord(
        removed={REMOVED_PIN: listed.get(REMOVED_PIN)},
        relabelled={address: label},
        physical=physical,
        table=table,
        kept=kept.to_dict() if kept is not None else None,
    )
    note(f"inventory: {report.summary()}")
    return record
