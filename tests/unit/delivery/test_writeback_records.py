"""Write-back records (delivery/writeback.py) and the pure parts of their ICAT+ client
(delivery/icatplus_writeback.py: whether ICAT+ still says what the inventory compared with, and
the corrected item it is sent), without a server: every expected value written out by hand."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from bliss_sampletrack.delivery.icatplus_writeback import IcatPlusWriteBack, same_place
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.delivery.writeback import Kind, Place, WriteBack, outbox_key
from bliss_sampletrack.errors import SampleTrackError

T0 = datetime(2026, 12, 3, 9, 14, 7, 250000, tzinfo=UTC)
CREATED = datetime(2026, 12, 3, 9, 14, 9, tzinfo=UTC)
EVENT_ID = uuid.UUID("0b5e8a52-5d0c-4a52-9d7e-3f2f4c1a9b01")


def emptied_record() -> WriteBack:
    return WriteBack(
        Kind.PARCEL_EMPTIED,
        "id30a1",
        "tracker",
        "sc",
        T0,
        "64f0c2a9e4b0aa11bb22cc33",
        "Dewar-MX2532",
        investigation_id="1234567",
        detail="none of its samples read in the changer's pucks",
        event_id=EVENT_ID,
        created_at=CREATED,
    )


def moved_record(**changes: Any) -> WriteBack:
    values: dict[str, Any] = {
        "kind": Kind.ITEM_MOVED,
        "beamline": "id30a1",
        "tracker": "tracker",
        "changer": "sc",
        "inventory_at": T0,
        "parcel_id": "64f0c2a9e4b0aa11bb22cc33",
        "parcel_name": "Dewar-MX2532",
        "investigation_id": "1234567",
        "item_id": "6500aa11bb22cc33dd44ee55",
        "item_name": "lysozyme-1",
        "barcode": "LYS-0001",
        "declared": Place(1, "2"),
        "found": Place(3, "5"),
        "detail": "read at 3:05",
        **changes,
    }
    return WriteBack(**values)


# -- the record ------------------------------------------------------------------------------------


@pytest.mark.parametrize("record", [emptied_record(), moved_record()], ids=["parcel_emptied", "item_moved"])
def test_json_round_trip_keeps_every_field(record: WriteBack) -> None:
    text = record.to_json()
    json.loads(text)  # plain JSON
    again = WriteBack.from_json(text)
    for f in dataclasses.fields(WriteBack):
        assert getattr(again, f.name) == getattr(record, f.name), f.name
    assert again.kind is record.kind and isinstance(again.event_id, uuid.UUID)
    assert WriteBack.from_json(text.encode()) == record  # bytes, as Redis gives them


def test_round_trip_of_a_record_made_now() -> None:
    record = moved_record(declared=None, item_name=None, barcode=None)  # defaults: a new id, now
    assert WriteBack.from_dict(record.to_dict()) == record
    assert record.event_id != moved_record().event_id


def test_the_stored_form_names_its_places() -> None:
    data = moved_record().to_dict()
    assert data["kind"] == "item_moved"
    assert data["declared"] == {"location": 1, "position": "2"}
    assert data["found"] == {"location": 3, "position": "5"}
    assert data["inventory_at"] == T0.isoformat()
    assert emptied_record().to_dict()["found"] is None


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"item_id": None}, id="no-item-id"),
        pytest.param({"item_id": ""}, id="empty-item-id"),
        pytest.param({"found": None}, id="not-found-anywhere"),
    ],
)
def test_an_item_moved_needs_its_item_and_where_it_was_found(changes: dict[str, Any]) -> None:
    with pytest.raises(SampleTrackError):
        moved_record(**changes)


def test_every_record_needs_a_parcel() -> None:
    with pytest.raises(SampleTrackError):
        WriteBack(Kind.PARCEL_EMPTIED, "id30a1", "tracker", "sc", T0, "")


def test_a_parcel_emptied_needs_no_item() -> None:
    record = emptied_record()
    assert (record.item_id, record.found) == (None, None)


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


GOOD = moved_record().to_dict()
UNREADABLE = [
    pytest.param(_without(GOOD, "kind"), id="no-kind"),
    pytest.param({**GOOD, "kind": "parcel_lost"}, id="unknown-kind"),
    pytest.param(_without(GOOD, "changer"), id="no-changer"),
    pytest.param(_without(GOOD, "parcel_id"), id="no-parcel"),
    pytest.param({**GOOD, "inventory_at": None}, id="no-time"),
    pytest.param({**GOOD, "inventory_at": "yesterday"}, id="not-a-time"),
    pytest.param({**GOOD, "event_id": "not-a-uuid"}, id="not-a-uuid"),
    pytest.param({**GOOD, "found": {"location": "three", "position": "5"}}, id="location-not-a-number"),
    pytest.param([GOOD], id="a-list"),
    pytest.param(None, id="null"),
    pytest.param(
        {**GOOD, "item_id": None},
        id="item-moved-without-item",
    ),
    pytest.param(
        {**GOOD, "parcel_id": ""},
        id="empty-parcel",
    ),
    pytest.param(
        {**GOOD, "declared": "1:02"},
        id="place-not-an-object",
    ),
]


@pytest.mark.parametrize("data", UNREADABLE)
def test_an_unreadable_record_raises_what_the_outbox_sets_aside(data: Any) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        WriteBack.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({**GOOD, "kind": "parcel_lost"}, id="unknown-kind"),
        pytest.param(
            {**GOOD, "item_id": None},
            id="item-moved-without-item",
        ),
    ],
)
def test_an_unreadable_stored_record_is_an_unreadable_entry(data: dict[str, Any]) -> None:
    """What the delivery loop reads: a corrupt entry is an Entry without a record (dead-lettered
    by the loop), and the good entry after it is still read."""
    redis = fakeredis.FakeRedis()
    outbox = RedisStreamOutbox(redis, "id30a1", key=outbox_key("id30a1"), record=WriteBack)
    redis.xadd(outbox.key, {"event": json.dumps(data)})
    redis.xadd(outbox.key, {"event": emptied_record().to_json()})
    entries = outbox.next_entries("icat", 2)
    assert [e.event for e in entries] == [None, emptied_record()]
    assert "unreadable" in entries[0].error


def test_labels() -> None:
    assert emptied_record().label == "parcel Dewar-MX2532"
    assert dataclasses.replace(emptied_record(), parcel_name=None).label == "parcel 64f0c2a9e4b0aa11bb22cc33"
    assert moved_record().label == "item lysozyme-1 (LYS-0001) of parcel Dewar-MX2532"
    assert moved_record(item_name="LYS-0001").label == "item LYS-0001 of parcel Dewar-MX2532"
    assert moved_record(item_name=None, barcode=None).label == (
        "item 6500aa11bb22cc33dd44ee55 of parcel Dewar-MX2532"
    )


def test_place_texts() -> None:
    assert Place(1, "2").text() == "location 1, position 2"
    assert Place(None, "2").text() == "location ?, position 2"
    assert Place(3, None).text() == "location 3, position ?"
    assert Place(None, None).text() == "no place"


# -- same_place ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "holder", "place", "expected"),
    [
        pytest.param(
            {"sampleChangerLocation": 1, "sampleContainerPosition": "2"},
            None,
            Place(1, "2"),
            True,
            id="number",
        ),
        pytest.param(
            {"sampleChangerLocation": "1", "sampleContainerPosition": "2"},
            None,
            Place(1, "2"),
            True,
            id="text",
        ),
        pytest.param(
            {"sampleContainerPosition": "2"},
            {"sampleChangerLocation": 1},
            Place(1, "2"),
            True,
            id="container",
        ),
        pytest.param(
            {"sampleChangerLocation": None, "sampleContainerPosition": "2"},
            {"sampleChangerLocation": "1"},
            Place(1, "2"),
            True,
            id="container-text",
        ),
        pytest.param(
            {"sampleContainerPosition": "2"},
            {"sampleChangerLocation": 4},
            Place(1, "2"),
            False,
            id="container-elsewhere",
        ),
        pytest.param(
            {"sampleChangerLocation": 4, "sampleContainerPosition": "2"},
            {"sampleChangerLocation": 1},
            Place(1, "2"),
            False,
            id="its-own-location-first",
        ),
        pytest.param(
            {"sampleChangerLocation": 1, "sampleContainerPosition": "05"},
            None,
            Place(1, "5"),
            True,
            id="05-vs-5",
        ),
        pytest.param(
            {"sampleChangerLocation": 1, "sampleContainerPosition": "5"},
            None,
            Place(1, "05"),
            True,
            id="5-vs-05",
        ),
        pytest.param(
            {"sampleChangerLocation": 1, "sampleContainerPosition": 5},
            None,
            Place(1, "5"),
            True,
            id="position-number",
        ),
        pytest.param(
            {"sampleChangerLocation": 1, "sampleContainerPosition": "3"},
            None,
            Place(1, "2"),
            False,
            id="other-position",
        ),
        pytest.param(
            {"sampleChangerLocation": 2, "sampleContainerPosition": "2"},
            None,
            Place(1, "2"),
            False,
            id="other-location",
        ),
        pytest.param({"sampleContainerPosition": "2"}, None, Place(1, "2"), False, id="no-location-at-all"),
        pytest.param(
            {"sampleChangerLocation": 1, "sampleContainerPosition": "2"}, None, None, False, id="no-place"
        ),
    ],
)
def test_same_place(
    item: dict[str, Any], holder: dict[str, Any] | None, place: Place | None, expected: bool
) -> None:
    assert same_place(item, holder, place) is expected


# -- the corrected item ----------------------------------------------------------------------------------

ICAT_ITEM = {
    "_id": "6500aa11bb22cc33dd44ee55",
    "name": "lysozyme-1",
    "type": "SAMPLE",
    "description": "hen egg white",
    "sampleId": 77001,
    "sampleChangerLocation": 1,
    "sampleContainerPosition": "2",
    "experimentPlan": [
        {"key": "exposureTime", "value": "0.04"},
        {"key": "workflowType", "value": "MXPressE"},
    ],
    "processingPlan": [{"key": "pipelines", "value": "autoPROC"}],
    "comments": "fragile\nkeep cold",
}
MARKER = f"[sampletrack {EVENT_ID}]"


def test_the_correction_keeps_the_item_and_moves_it() -> None:
    before = json.loads(json.dumps(ICAT_ITEM))
    body = IcatPlusWriteBack.corrected(ICAT_ITEM, moved_record(), MARKER, ICAT_ITEM["comments"])
    assert ICAT_ITEM == before  # the item as read is not changed
    assert "_id" not in body
    changed = {"_id", "sampleChangerLocation", "sampleContainerPosition", "comments"}
    assert {k: v for k, v in body.items() if k not in changed} == {
        k: v for k, v in ICAT_ITEM.items() if k not in changed
    }
    assert set(body) == set(ICAT_ITEM) - {"_id"}
    assert body["sampleChangerLocation"] == 3 and type(body["sampleChangerLocation"]) is int
    assert body["sampleContainerPosition"] == "5"
    lines = body["comments"].split("\n")
    assert lines[:2] == ["fragile", "keep cold"]  # kept, in order
    assert len(lines) == 3
    added = lines[2]
    assert MARKER in added
    assert Place(1, "2").text() in added.split("declared")[-1]  # the declared place kept
    assert Place(3, "5").text() in added and "LYS-0001" in added


def test_the_correction_starts_the_comments_when_there_were_none() -> None:
    item = {k: v for k, v in ICAT_ITEM.items() if k != "comments"}
    body = IcatPlusWriteBack.corrected(item, moved_record(), MARKER, "")
    assert "\n" not in body["comments"]
    assert body["comments"].startswith(MARKER)
    assert "location 1, position 2" in body["comments"]


def test_the_correction_says_when_nothing_was_declared() -> None:
    body = IcatPlusWriteBack.corrected(ICAT_ITEM, moved_record(declared=None), MARKER, "")
    assert body["comments"].endswith("declared: no place")


def test_icat_plus_client_accepts_the_corrected_item() -> None:
    models = pytest.importorskip("icat_plus_client.models")
    body = IcatPlusWriteBack.corrected(ICAT_ITEM, moved_record(), MARKER, ICAT_ITEM["comments"])
    item = models.Item.from_dict(body)
    assert item is not None
    assert (item.name, item.type, item.sample_id) == ("lysozyme-1", "SAMPLE", 77001)
    assert (item.sample_changer_location, item.sample_container_position) == (3, "5")
    assert item.comments == body["comments"]
    assert [p.key for p in item.experiment_plan] == ["exposureTime", "workflowType"]
    assert models.Item.from_dict(json.loads(json.dumps(body))) == item  # as sent: JSON
