"""The puck inventory in a real BLISS session: a simulated changer with seeded faults, the demo's
simulated Keyence reader ``bcr`` on its gripper, a real ``SampleTracker`` with a manifest. The
expected findings come from the simulator's seeded contents (``seeded_faults``), never from the
inventory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from changer_fixtures import make_tracker, reading_changer

from bliss_sampletrack.changers.link import link_changer
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.errors import MountRefusedError
from bliss_sampletrack.testing import clear_tracker_keys
from bliss_sampletrack.tracker.controller import SampleTracker
from bliss_sampletrack.tracker.inventory import Kind

pytestmark = pytest.mark.bliss
pytest_plugins = ["changer_fixtures"]

# pucks 1 and 2 (containers PUCK-A, PUCK-B): 10 declared pins each, faults seeded among them;
# puck 3 (PUCK-C): one pin no registry knows; PUCK-B position 16: declared, no pin
CONTENTS = {f"{p}:{i:02d}": f"S-{p}{i:02d}" for p in (1, 2) for i in range(1, 11)} | {"3:01": "X-0001"}
FAULTS = {"seed": 22, "missing": 1, "swapped": 1, "duplicated": 1, "unreadable": 1, "pucks": [1, 2]}
CONTAINERS = {1: "PUCK-A", 2: "PUCK-B", 3: "PUCK-C"}


@pytest.fixture
def inv_tracker(bliss_session: Any, scan_saving: Any, tmp_path: Path) -> Iterator[SampleTracker]:
    rows = ["barcode,name,container_name,container_position"]
    for address, code in CONTENTS.items():
        puck, position = address.split(":")
        if code.startswith("S-"):
            rows.append(f"{code},sample_{code[2:]},{CONTAINERS[int(puck)]},{int(position)}")
    rows.append("S-0216,declared_only,PUCK-B,16")
    path = tmp_path / "shipment.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    clear_tracker_keys()
    tracker = make_tracker(manifest=str(path), manual_policy="refuse")
    tracker.reader.remove()  # type: ignore[union-attr]
    yield tracker
    tracker.close()


@pytest.fixture
def inv(bliss_session: Any) -> Iterator[SimulatedChanger]:
    with reading_changer("inv", pucks=3, contents=CONTENTS, containers=CONTAINERS, faults=FAULTS) as changer:
        yield changer


def expected_findings(changer: SimulatedChanger) -> set[tuple[Kind, tuple[str, ...], str | None]]:
    """From the simulator's ground truth: its configured contents and seeded faults."""
    faulty: set[str] = set()
    found: set[tuple[Kind, tuple[str, ...], str | None]] = set()
    for fault in changer.seeded_faults:
        faulty.update(fault.addresses)
        if fault.kind == "missing":
            found.add((Kind.MISSING, fault.addresses, fault.barcodes[0]))
        elif fault.kind == "swapped":
            found.add((Kind.SWAPPED, fault.addresses, None))
        elif fault.kind == "duplicated":
            copy, original = fault.addresses
            found.add((Kind.DUPLICATED, tuple(sorted(fault.addresses)), fault.barcodes[1]))
            found.add((Kind.MISSING, (copy,), fault.barcodes[0]))  # its own label is gone
        elif fault.kind == "unreadable":
            found.add((Kind.NO_READ, fault.addresses, None))
    for address, code in CONTENTS.items():
        if address not in faulty:
            found.add((Kind.PRESENT if code.startswith("S-") else Kind.UNEXPECTED, (address,), code))
    found.add((Kind.MISSING, ("2:16",), "S-0216"))
    return found


def test_inventory_reports_each_seeded_fault(
    inv_tracker: SampleTracker, inv: SimulatedChanger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sorted(f.kind for f in inv.seeded_faults) == ["duplicated", "missing", "swapped", "unreadable"]
    link = link_changer(inv_tracker, inv, name="inv_link")
    try:
        report = inv.inventory()
    finally:
        link.close()
    assert "inventory [" in capsys.readouterr().out  # the progress bar
    got = {(f.kind, f.addresses, None if f.kind is Kind.SWAPPED else f.barcode) for f in report.findings}
    assert got == expected_findings(inv)
    assert len(report.reads.reads) == 48  # every position of 3 pucks
    # kept in Redis with its time, summarised in the changer's __info__ (through the tracker)
    last = inv_tracker.last_inventory(inv)
    assert last is not None and last.findings == report.findings and last.taken_at == report.taken_at
    assert f"  inventory : {report.summary()}" in _info_linked(inv_tracker, inv)
    assert json.loads(report.to_json(tmp_path / "i.json").read_text())["changer"] == "inv"
    assert "swapped" in report.text()


def test_manual_mount_of_a_pin_the_inventory_read_in_a_puck_follows_the_policy(
    inv_tracker: SampleTracker, inv: SimulatedChanger
) -> None:
    inv.mislabel("3:01", "NEW-0001")  # the bookkeeping still says X-0001 there
    link = link_changer(inv_tracker, inv, name="inv_link")
    try:
        report = inv.inventory()
        assert (Kind.UNEXPECTED, ("3:01",)) in {(f.kind, f.addresses) for f in report.findings}
        inv.set_presence(True)  # a hand puts a pin on the goniometer: the sensor agrees with the mount
        with pytest.raises(MountRefusedError, match=r"last inventory of changer 'inv' .* NEW-0001 .* 3:01"):
            inv_tracker.mount("NEW-0001")  # manual_policy: refuse
        inv_tracker.mount("NEW-0001", force=True)
        assert "last inventory" in inv_tracker.store.history(1)[0].message
    finally:
        link.close()


def _info_linked(tracker: SampleTracker, changer: SimulatedChanger) -> str:
    link = link_changer(tracker, changer, name="inv_link2", sync=False)
    try:
        return changer.__info__()
    finally:
        link.close()
