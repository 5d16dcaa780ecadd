"""The puck inventory's reconciliation, without BLISS: reads written out by hand (what a gripper
found at each position) against a manifest, every finding named by the test's own layout."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import gevent

from bliss_sampletrack.changers.inventory import InventoryLog, PinRead, PuckReads, read_pucks
from bliss_sampletrack.core import Sample
from bliss_sampletrack.tracker.inventory import (
    Inventory,
    Kind,
    declared_positions,
    inventory_of,
    placed_elsewhere,
    reconcile,
)
from bliss_sampletrack.tracker.registry import ManifestRegistry

T0 = datetime(2026, 12, 3, 9, 14, 7, tzinfo=UTC)
MANIFEST = """barcode,name,container_name,container_position
A-1,alpha,PUCK-A,1
A-2,beta,PUCK-A,2
A-3,gamma,PUCK-A,3
A-4,delta,PUCK-A,4
A-5,epsilon,PUCK-A,5
A-6,zeta,PUCK-A,6
A-7,eta,PUCK-A,7
A-8,theta,PUCK-A,8
FAR-1,far,PUCK-Z,3
LOOSE-1,loose,,
"""
# what the gripper found in puck 1 (PUCK-A), position by position: the layout the test asserts on
READS = [
    PinRead("1:01", True, "A-1", listed="A-1"),  # present
    PinRead("1:02", False, listed="A-2"),  # missing: the position is empty
    PinRead("1:03", True, "A-4", listed="A-3"),  # 1:03 and 1:04 swapped
    PinRead("1:04", True, "A-3", listed="A-4"),
    PinRead("1:05", True, "A-6", listed="A-5"),  # a copy of A-6's label: A-5 gone
    PinRead("1:06", True, "A-6", listed="A-6"),
    PinRead("1:07", True, None, "no-read (ERROR)", listed="A-7"),  # unreadable: A-7 not confirmed
    PinRead("1:08", False, listed="A-8", on_goniometer=True),  # mounted: the changer's record
    PinRead("1:09", True, "X-9", listed="X-9"),  # in no registry
    PinRead("1:10", True, "FAR-1"),  # declared in a container not loaded
    PinRead("1:11", True, "LOOSE-1"),  # known, with no position
    PinRead("1:12", False),  # empty, nothing declared: no finding
]


def reads(rows: list[PinRead] = READS) -> PuckReads:
    return PuckReads("sc", T0, T0 + timedelta(seconds=3), "bcr", {1: "PUCK-A"}, list(rows))


def manifest(tmp_path: Path) -> ManifestRegistry:
    path = tmp_path / "samples.csv"
    path.write_text(MANIFEST, encoding="utf-8")
    return ManifestRegistry(path)


def test_each_kind_of_finding_at_its_positions(tmp_path: Path) -> None:
    registry = manifest(tmp_path)
    inventory = inventory_of("tracker", reads(), [registry], registry.resolve)
    found = {(f.kind, f.addresses, f.barcode) for f in inventory.findings}
    assert found == {
        (Kind.PRESENT, ("1:01",), "A-1"),
        (Kind.MISSING, ("1:02",), "A-2"),
        (Kind.SWAPPED, ("1:03", "1:04"), "A-4"),
        (Kind.DUPLICATED, ("1:05", "1:06"), "A-6"),
        (Kind.MISSING, ("1:05",), "A-5"),  # its label was replaced by the copy
        (Kind.NO_READ, ("1:07",), None),
        (Kind.PRESENT, ("1:08",), "A-8"),
        (Kind.UNEXPECTED, ("1:09",), "X-9"),
        (Kind.MISPLACED, ("1:10",), "FAR-1"),
        (Kind.UNEXPECTED, ("1:11",), "LOOSE-1"),
    }
    by = {(f.kind, f.addresses): f for f in inventory.findings}
    assert by[(Kind.NO_READ, ("1:07",))].sample == "eta"  # named, neither confirmed nor missing
    assert "not confirmed" in by[(Kind.NO_READ, ("1:07",))].detail
    assert by[(Kind.MISSING, ("1:05",))].detail == "the position holds A-6"
    assert by[(Kind.MISSING, ("1:02",))].detail == "the position is empty"
    assert by[(Kind.MISPLACED, ("1:10",))].declared_at == "PUCK-Z position 3 (not loaded)"
    assert "goniometer" in by[(Kind.PRESENT, ("1:08",))].detail
    assert inventory.declared == 8
    counts = inventory.counts()
    assert (counts[Kind.MISSING], counts[Kind.NO_READ], counts[Kind.PRESENT]) == (2, 1, 2)


def test_a_no_read_is_never_a_sample() -> None:
    declared = {"1:01": Sample(barcode="ERROR-1", name="s")}
    rows = [PinRead("1:01", True, None, "no-read (ERROR)"), PinRead("1:02", True, None, "timeout")]
    findings = reconcile(reads(rows), declared, lambda code: None)
    assert [(f.kind, f.barcode) for f in findings] == [(Kind.NO_READ, None), (Kind.NO_READ, None)]


def test_a_misplaced_pin_whose_position_holds_an_unreadable_pin_is_not_a_swap() -> None:
    declared = {"1:01": Sample(barcode="A-1"), "1:02": Sample(barcode="A-2")}
    rows = [PinRead("1:01", True, None, "no-read"), PinRead("1:02", True, "A-1")]
    findings = reconcile(reads(rows), declared, lambda code: None)
    assert [(f.kind, f.addresses) for f in findings] == [
        (Kind.NO_READ, ("1:01",)),
        (Kind.MISSING, ("1:02",)),  # per position, problems in ORDER: missing first
        (Kind.MISPLACED, ("1:02",)),
    ]


def test_manifest_positions_follow_the_containers_loaded(tmp_path: Path) -> None:
    registry = manifest(tmp_path)
    positions = [f"2:{p:02d}" for p in range(1, 17)]
    declared = declared_positions([registry], {2: "PUCK-A"}, positions)
    assert {a: s.barcode for a, s in declared.items()} == {f"2:{i:02d}": f"A-{i}" for i in range(1, 9)}
    assert declared_positions([registry], {2: None}, positions) == {}  # the container is unknown


def test_exports_and_round_trip(tmp_path: Path) -> None:
    registry = manifest(tmp_path)
    inventory = inventory_of("tracker", reads(), [registry], registry.resolve)
    data = json.loads(inventory.to_json(tmp_path / "inv.json").read_text())
    assert data["finished_at"] == (T0 + timedelta(seconds=3)).isoformat() and data["counts"]["missing"] == 2
    with inventory.to_csv(tmp_path / "inv.csv").open(newline="") as written:
        rows = list(csv.DictReader(written))
    assert len(rows) == len(inventory.findings)
    assert {"kind": "swapped", "addresses": "1:03 1:04"}.items() <= rows[2].items()
    again = Inventory.from_dict(data)
    assert again.findings == inventory.findings and again.reads == inventory.reads
    text = inventory.text()
    assert "1:03, 1:04  swapped" in text and "2 missing" in inventory.summary()


def test_kept_in_redis_bounded_newest_first(tmp_path: Path) -> None:
    registry = manifest(tmp_path)
    store = InventoryLog(fakeredis.FakeRedis(), "tracker", "sc", keep=3)
    for i in range(5):
        rows = [PinRead("1:01", True, f"A-{i + 1}")]
        store.save(inventory_of("tracker", reads(rows), [registry], registry.resolve).to_dict())
    assert store.key == "sampletrack:tracker:inventory:sc"
    assert [h["reads"][0]["code"] for h in store.history()] == ["A-5", "A-4", "A-3"]
    last = store.last()
    assert placed_elsewhere(last, "A-5") is not None and "1:01" in placed_elsewhere(last, "A-5")  # type: ignore[operator]
    assert placed_elsewhere(last, "A-4") is None and placed_elsewhere(None, "A-5") is None


class FakeGripper:
    """A PinReading changer with an instant reader: the loop itself must yield between pins."""

    name = "fake"

    def __init__(self, pucks: int, positions: int) -> None:
        self.pucks, self.positions = pucks, positions
        self.busy = False

    def loaded_pucks(self) -> dict[int, str | None]:
        return dict.fromkeys(range(1, self.pucks + 1))

    def puck_positions(self, puck: int) -> list[str]:
        return [f"{puck}:{p:02d}" for p in range(1, self.positions + 1)]

    def holding(self, what: str):  # type: ignore[no-untyped-def]
        from contextlib import contextmanager

        @contextmanager
        def held():  # type: ignore[no-untyped-def]
            self.busy = True
            try:
                yield
            finally:
                self.busy = False

        return held()

    def read_pin(self, address: str) -> PinRead:
        return PinRead(address, True, f"C-{address.replace(':', '-')}")


def test_read_pucks_yields_between_pins_and_reports_progress() -> None:
    ticks: list[int] = []
    other = gevent.spawn(lambda: [ticks.append(i) or gevent.sleep(0) for i in range(1000)])
    progress: list[tuple[int, int]] = []
    changer = FakeGripper(10, 16)
    result = read_pucks(changer, progress=lambda done, total: progress.append((done, total)))
    other.kill()
    assert len(result.reads) == 160 and progress[-1] == (160, 160) and len(progress) == 160
    assert len(ticks) >= 100  # the other greenlet ran during the 160 instant reads
    assert not changer.busy
