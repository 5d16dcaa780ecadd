"""What an inventory writes back (tracker/writeback.py ``plan``), without BLISS or Redis: reads
written out by hand, the previous inventory and the mounts as the tracker keeps them, every
expected record named by the test's own layout (which parcel was here, which pin was read where).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bliss_sampletrack.changers.inventory import PinRead, PuckReads
from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.delivery.writeback import Kind, Place, WriteBack
from bliss_sampletrack.tracker.writeback import Plan, plan

CHANGER = "sc"
BEAMLINE = "id30a1"
TRACKER = "tracker"
T_PREV = datetime(2026, 12, 3, 8, 0, 0, tzinfo=UTC)  # the previous inventory finished
T_NOW = datetime(2026, 12, 3, 9, 14, 7, tzinfo=UTC)  # this inventory finished

# what the registry says of each barcode: parcel A, B (B-1, B-2), C (C-1: never loaded
# here), M (M-1: only ever mounted), N (no name)
PARCELS = {
    "A": ("P-A", "parcel-a"),
    "B": ("P-B", "parcel-b"),
    "C": ("P-C", "parcel-c"),
    "M": ("P-M", "parcel-m"),
    "N": ("P-N", None),
}
SAMPLES = {
    code: Sample(
        barcode=code, name=code.lower(), parcel_id=PARCELS[code[0]][0], parcel_name=PARCELS[code[0]][1]
    )
    for code in ("A-1", "A-2", "B-1", "B-2", "C-1", "M-1", "N-1")
}


def resolve(code: str) -> Sample | None:
    return SAMPLES.get(code)


def puck(rows: Iterable[PinRead], finished: datetime = T_NOW) -> PuckReads:
    return PuckReads(CHANGER, finished - timedelta(seconds=40), finished, "bcr", {1: "PUCK-1"}, list(rows))


def previous(rows: Iterable[PinRead], finished: datetime = T_PREV) -> dict[str, Any]:
    """The changer's previous inventory as the log keeps it (Inventory.to_dict: the reads spread)."""
    return {"tracker": TRACKER, **puck(rows, finished).to_dict(), "findings": [], "writeback": []}


def empty(*addresses: str) -> list[PinRead]:
    return [PinRead(a, False) for a in addresses]


def mount(code: str, at: datetime, changer: str = CHANGER, status: Status = Status.SUCCESS) -> Event:
    sample = Sample(
        barcode=code,
        parcel_id=SAMPLES[code].parcel_id,
        parcel_name=SAMPLES[code].parcel_name,
        changer_name=changer,
        changer_position="1:03",
    )
    message = "gripper lost the pin" if status is Status.ERROR else ""
    return Event.mounted(
        sample,
        beamline=BEAMLINE,
        session="mx",
        source=Source.SAMPLE_CHANGER,
        occurred_at=at,
        status=status,
        message=message,
    )


def run(
    reads: PuckReads,
    *,
    before: Mapping[str, Any] | None = None,
    history: Iterable[Event] = (),
    items: Iterable[Any] = (),
    marks: Mapping[str, str] | None = None,
    kinds: Iterable[Kind] = tuple(Kind),
    resolver: Any = resolve,
) -> Plan:
    return plan(
        reads,
        beamline=BEAMLINE,
        tracker=TRACKER,
        previous=before,
        history=list(history),
        resolve=resolver,
        items=list(items),
        marks=marks or {},
        kinds=kinds,
    )


def emptied(result: Plan) -> list[str]:
    return [r.parcel_id for r in result.records if r.kind is Kind.PARCEL_EMPTIED]


# -- a parcel emptied --------------------------------------------------------------------------------


def test_a_parcel_read_before_and_not_now_is_emptied_once() -> None:
    before = previous(
        [PinRead("1:01", True, "A-1"), PinRead("1:02", True, "A-2"), PinRead("1:03", True, "B-1")]
    )
    now = puck([*empty("1:01", "1:02"), PinRead("1:03", True, "B-1")])  # parcel B still here
    result = run(now, before=before)
    assert len(result.records) == 1
    record = result.records[0]
    assert record.kind is Kind.PARCEL_EMPTIED
    assert (record.parcel_id, record.parcel_name) == ("P-A", "parcel-a")
    assert (record.beamline, record.tracker, record.changer) == (BEAMLINE, TRACKER, CHANGER)
    assert record.inventory_at == T_NOW
    assert (record.item_id, record.found, record.declared) == (None, None, None)
    assert result.marks == {"parcel:P-A": T_NOW.isoformat()}
    assert len(result.notes) == 1 and "parcel-a" in result.notes[0] and "parcel-b" not in result.notes[0]


def test_a_parcel_with_one_sample_still_read_is_not_emptied() -> None:
    before = previous([PinRead("1:01", True, "A-1"), PinRead("1:02", True, "A-2")])
    result = run(puck([PinRead("1:01", False), PinRead("1:02", True, "A-2")]), before=before)
    assert result == Plan()


def test_a_parcel_whose_last_sample_is_on_the_goniometer_is_not_emptied() -> None:
    before = previous([PinRead("1:01", True, "A-1"), PinRead("1:02", True, "A-2")])
    # A-1 gone, A-2 mounted: not read, the changer lists it
    now = puck([PinRead("1:01", False), PinRead("1:02", False, listed="A-2", on_goniometer=True)])
    assert run(now, before=before) == Plan()


def test_a_pin_listed_on_the_goniometer_by_the_previous_inventory_is_evidence() -> None:
    before = previous([PinRead("1:01", False), PinRead("1:02", False, listed="A-2", on_goniometer=True)])
    result = run(puck(empty("1:01", "1:02")), before=before)
    assert emptied(result) == ["P-A"]


def test_a_parcel_never_seen_here_is_never_emptied() -> None:
    before = previous([PinRead("1:01", True, "B-1")])  # parcel C was never read nor mounted
    now = puck([PinRead("1:01", True, "B-1"), *empty("1:02", "1:03")])
    assert run(now, before=before, history=[mount("B-1", T_PREV - timedelta(hours=1))]) == Plan()
    assert run(puck(empty("1:01")), before=None) == Plan()  # no previous inventory, no mount


def test_a_parcel_mounted_from_this_changer_and_now_gone_is_emptied() -> None:
    result = run(puck(empty("1:01", "1:02")), before=None, history=[mount("M-1", T_PREV)])
    assert [(r.kind, r.parcel_id, r.parcel_name) for r in result.records] == [
        (Kind.PARCEL_EMPTIED, "P-M", "parcel-m")
    ]
    assert result.marks == {"parcel:P-M": T_NOW.isoformat()}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(mount("M-1", T_PREV, changer="other-sc"), id="mounted-from-another-changer"),
        pytest.param(mount("M-1", T_PREV, status=Status.ERROR), id="failed-mount"),
    ],
)
def test_mounts_that_are_no_evidence(event: Event) -> None:
    assert run(puck(empty("1:01", "1:02")), before=None, history=[event]) == Plan()


def test_an_unmount_is_no_evidence_of_a_mount() -> None:
    sample = Sample(barcode="M-1", parcel_id="P-M", changer_name=CHANGER, changer_position="1:03")
    event = Event.unmounted(
        sample, beamline=BEAMLINE, session="mx", source=Source.SAMPLE_CHANGER, occurred_at=T_PREV
    )
    assert run(puck(empty("1:01")), before=None, history=[event]) == Plan()


def test_each_parcel_gone_is_its_own_record() -> None:
    before = previous(
        [PinRead("1:01", True, "A-1"), PinRead("1:02", True, "B-2"), PinRead("1:03", True, "N-1")]
    )
    result = run(puck(empty("1:01", "1:02", "1:03")), before=before, history=[mount("M-1", T_PREV)])
    assert sorted(emptied(result)) == ["P-A", "P-B", "P-M", "P-N"]
    assert len(result.records) == 4  # each once
    assert set(result.marks) == {"parcel:P-A", "parcel:P-B", "parcel:P-M", "parcel:P-N"}
    assert set(result.marks.values()) == {T_NOW.isoformat()}


def test_a_mark_newer_than_the_evidence_suppresses_it() -> None:
    before = previous([PinRead("1:01", True, "A-1")])
    marks = {"parcel:P-A": (T_PREV + timedelta(minutes=10)).isoformat()}  # queued after that inventory
    assert run(puck(empty("1:01")), before=before, marks=marks) == Plan()
    # an older mark does not: the parcel was read again since
    older = {"parcel:P-A": (T_PREV - timedelta(days=1)).isoformat()}
    assert emptied(run(puck(empty("1:01")), before=before, marks=older)) == ["P-A"]


def test_mounted_again_after_the_mark_is_emptied_again() -> None:
    marked = T_PREV
    marks = {"parcel:P-M": marked.isoformat()}
    first = mount("M-1", marked - timedelta(hours=2))
    again = mount("M-1", marked + timedelta(minutes=20))
    assert run(puck(empty("1:01")), history=[first], marks=marks) == Plan()
    result = run(puck(empty("1:01")), history=[again, first], marks=marks)  # any order
    assert emptied(result) == ["P-M"]
    assert result.marks == {"parcel:P-M": T_NOW.isoformat()}


def test_a_pin_with_no_code_stops_every_emptied_parcel_with_one_note() -> None:
    before = previous(
        [PinRead("1:01", True, "A-1"), PinRead("1:02", True, "B-1"), PinRead("1:03", True, "C-1")]
    )
    now = puck(
        [
            PinRead("1:01", False),
            PinRead("1:02", True, None, "no-read (ERROR)"),
            PinRead("1:03", True, "C-1"),
            PinRead("1:04", True, None, "timeout"),
        ]
    )
    result = run(now, before=before)
    assert result.records == [] and result.marks == {}
    assert len(result.notes) == 1
    note = result.notes[0]
    assert "parcel-a" in note and "parcel-b" in note and "parcel-c" not in note
    assert "1:02" in note and "1:04" in note and "1:01" not in note and "1:03" not in note


def test_a_no_read_alone_says_nothing_when_no_parcel_is_gone() -> None:
    before = previous([PinRead("1:01", True, "A-1")])
    result = run(puck([PinRead("1:01", True, "A-1"), PinRead("1:02", True, None, "no-read")]), before=before)
    assert result == Plan()


# -- an item moved -----------------------------------------------------------------------------------


def item(**changes: Any) -> dict[str, Any]:
    return {
        "item_id": "I-1",
        "item_name": "lysozyme-1",
        "parcel_id": "P-A",
        "parcel_name": "parcel-a",
        "changer_location": "1",
        "container_position": "2",
        "investigation_id": "inv-9",
        **changes,
    }


class FakeItems:
    """An ItemSource: the ICAT+ items by barcode; counts the questions."""

    def __init__(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        self.items = dict(items)
        self.asked: list[str] = []

    def item_of(self, barcode: str) -> Mapping[str, Any] | None:
        self.asked.append(barcode)
        return self.items.get(barcode)


def test_an_item_read_elsewhere_than_declared_is_one_correction() -> None:
    items = FakeItems({"LYS-1": item()})
    result = run(puck([PinRead("3:05", True, "LYS-1"), *empty("3:06")]), items=[items])
    assert len(result.records) == 1
    record = result.records[0]
    assert record.kind is Kind.ITEM_MOVED
    assert (record.item_id, record.item_name, record.barcode) == ("I-1", "lysozyme-1", "LYS-1")
    assert (record.parcel_id, record.parcel_name, record.investigation_id) == ("P-A", "parcel-a", "inv-9")
    assert record.declared == Place(1, "2")
    assert record.found == Place(3, "5")
    assert (record.changer, record.beamline, record.tracker, record.inventory_at) == (
        CHANGER,
        BEAMLINE,
        TRACKER,
        T_NOW,
    )
    assert result.marks == {"item:I-1": "3:5"}
    assert len(result.notes) == 1 and "3:05" in result.notes[0]
    # the record survives its trip through the outbox
    assert WriteBack.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("location", "position", "address"),
    [
        ("1", "2", "1:02"),
        ("1", "02", "1:2"),
        ("1", "05", "1:05"),
        ("1", "5", "1:05"),
        ("01", "5", "1:5"),
        (1, "5", "1:05"),
    ],
)
def test_an_item_read_at_its_declared_place_is_left_alone(location: Any, position: str, address: str) -> None:
    items = FakeItems({"LYS-1": item(changer_location=location, container_position=position)})
    assert run(puck([PinRead(address, True, "LYS-1")]), items=[items]) == Plan()


def test_a_duplicated_barcode_is_for_a_person_to_check() -> None:
    items = FakeItems({"LYS-1": item()})
    rows = [PinRead("3:05", True, "LYS-1"), PinRead("3:06", True, "LYS-1")]
    assert run(puck(rows), items=[items]) == Plan()


def test_the_mounted_pin_is_not_in_its_puck() -> None:
    items = FakeItems({"LYS-1": item()})
    rows = [PinRead("3:05", False, listed="LYS-1", on_goniometer=True)]
    assert run(puck(rows), items=[items]) == Plan()


@pytest.mark.parametrize(
    "declared",
    [
        pytest.param({"changer_location": None, "container_position": None}, id="no-place"),
        pytest.param({"changer_location": None, "container_position": "2"}, id="no-location"),
        pytest.param({"changer_location": "1", "container_position": None}, id="no-position"),
        pytest.param({"changer_location": "", "container_position": ""}, id="empty-texts"),
    ],
)
def test_an_item_that_declares_no_place_is_not_corrected(declared: dict[str, Any]) -> None:
    items = FakeItems({"LYS-1": item(**declared)})
    assert run(puck([PinRead("3:05", True, "LYS-1")]), items=[items]) == Plan()


def test_a_correction_queued_before_is_not_queued_again() -> None:
    items = FakeItems({"LYS-1": item()})
    rows = [PinRead("3:05", True, "LYS-1")]
    assert run(puck(rows), items=[items], marks={"item:I-1": "3:5"}) == Plan()
    moved_again = run(puck(rows), items=[items], marks={"item:I-1": "4:1"})  # queued for another place
    assert [(r.kind, r.found) for r in moved_again.records] == [(Kind.ITEM_MOVED, Place(3, "5"))]
    assert moved_again.marks == {"item:I-1": "3:5"}


def test_unknown_barcodes_and_no_reads_are_not_items() -> None:
    items = FakeItems({"LYS-1": item()})
    rows = [PinRead("3:01", True, "X-9"), PinRead("3:02", True, None, "no-read"), PinRead("3:03", False)]
    assert run(puck(rows), items=[items]).records == []


def test_the_first_source_that_knows_the_item_answers() -> None:
    nobody, knows = FakeItems({}), FakeItems({"LYS-1": item()})
    result = run(puck([PinRead("3:05", True, "LYS-1")]), items=[nobody, knows])
    assert [r.item_id for r in result.records] == ["I-1"]


# -- what is looked for ----------------------------------------------------------------------------------


def test_only_parcels_wanted_no_item_is_even_looked_for() -> None:
    items = FakeItems({"LYS-1": item()})
    before = previous([PinRead("1:01", True, "A-1")])
    now = puck([PinRead("1:01", False), PinRead("3:05", True, "LYS-1")])
    result = run(now, before=before, items=[items], kinds=[Kind.PARCEL_EMPTIED])
    assert [r.kind for r in result.records] == [Kind.PARCEL_EMPTIED]
    assert set(result.marks) == {"parcel:P-A"}
    assert items.asked == []
    # both wanted: both found (the layout does hold both)
    both = run(now, before=before, items=[items])
    assert sorted(r.kind for r in both.records) == sorted([Kind.PARCEL_EMPTIED, Kind.ITEM_MOVED])


def test_only_items_wanted_no_parcel_is_even_looked_for() -> None:
    asked: list[str] = []

    def counting(code: str) -> Sample | None:
        asked.append(code)
        return resolve(code)

    items = FakeItems({"LYS-1": item()})
    before = previous([PinRead("1:01", True, "A-1")])
    now = puck([PinRead("1:01", False), PinRead("3:05", True, "LYS-1")])
    result = run(
        now,
        before=before,
        history=[mount("M-1", T_PREV)],
        items=[items],
        kinds=[Kind.ITEM_MOVED],
        resolver=counting,
    )
    assert [r.kind for r in result.records] == [Kind.ITEM_MOVED]
    assert set(result.marks) == {"item:I-1"}
    assert asked == []


def test_nothing_wanted_nothing_found() -> None:
    items = FakeItems({"LYS-1": item()})
    before = previous([PinRead("1:01", True, "A-1")])
    now = puck([PinRead("1:01", False), PinRead("3:05", True, "LYS-1")])
    assert run(now, before=before, items=[items], kinds=[]) == Plan()
    assert items.asked == []
