"""Events serialise exactly to the contract's schema, and invalid ones are refused by field."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bliss_sampletrack.core import Event, EventType, Sample, Source, Status
from bliss_sampletrack.core.contract import event_schema
from bliss_sampletrack.errors import InvalidEventError, InvalidSampleError, SampleTrackError

SHARED_SCHEMA = Path(__file__).resolve().parents[4] / "shared" / "contract" / "event.schema.json"


def contract_schema() -> dict[str, Any]:
    """The shared contract's schema when it is beside the checkout, else the package's copy."""
    if SHARED_SCHEMA.is_file():
        return json.loads(SHARED_SCHEMA.read_text())
    return event_schema()


def schema_errors(data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(contract_schema(), format_checker=jsonschema.FormatChecker())
    return [e.message for e in validator.iter_errors(data)]


@pytest.mark.skipif(not SHARED_SCHEMA.is_file(), reason="../shared/contract is not beside this checkout")
def test_package_schema_is_identical_to_the_shared_contract() -> None:
    packaged = Path(__file__).resolve().parents[3] / "bliss_sampletrack" / "schema" / "event.schema.json"
    assert packaged.read_bytes() == SHARED_SCHEMA.read_bytes()


def a_sample() -> Sample:
    return Sample(
        barcode="LYS-0042",
        name="lysozyme_1",
        sample_id="1234567",
        parcel_id="p-77",
        parcel_name="Box A",
        container_id="c-3",
        container_name="puck3",
        container_position="5",
        changer_name="flex",
        changer_position="3:05",
    )


def a_mount(**overrides: Any) -> Event:
    values: dict[str, Any] = dict(
        beamline="id23-1", session="mx_session", source=Source.SAMPLE_CHANGER, proposal="mx2532"
    )
    values.update(overrides)
    return Event.mounted(a_sample(), **values)


def test_mounted_event_has_every_contract_field_and_validates() -> None:
    event = a_mount()
    data = event.to_dict()
    assert list(data) == contract_schema()["required"]
    assert schema_errors(data) == []
    assert data["type"] == "mounted"
    assert data["sample"]["barcode"] == "LYS-0042"
    assert data["sample_changer"] == {"name": "flex", "position": "3:05"}
    assert data["mount_event_id"] is None
    assert data["producer"]["software"] == "bliss-sampletrack"
    uuid.UUID(data["event_id"])


def test_timestamps_are_utc_with_microseconds() -> None:
    moment = datetime(2026, 11, 24, 19, 30, 1, 5, tzinfo=timezone(timedelta(hours=1)))
    data = a_mount(occurred_at=moment).to_dict()
    assert data["occurred_at"] == "2026-11-24T18:30:01.000005Z"


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="occurred_at.*no time zone"):
        a_mount(occurred_at=datetime(2026, 11, 24, 18, 30))


def test_unmount_refers_to_its_mount_and_round_trips_through_json() -> None:
    mount = a_mount()
    unmount = Event.unmounted(
        a_sample(),
        beamline="id23-1",
        session="mx_session",
        source="sample_changer",
        mount_event_id=mount.event_id,
        status="ERROR",
        message="gripper lost the pin",
    )
    assert unmount.type is EventType.UNMOUNTED and unmount.status is Status.ERROR
    data = json.loads(unmount.to_json())
    assert schema_errors(data) == []
    assert data["mount_event_id"] == str(mount.event_id)
    assert Event.from_json(unmount.to_json()) == unmount


def test_sample_without_changer_gives_null_sample_changer() -> None:
    event = Event.mounted(Sample(name="by hand"), beamline="bm29", session="s", source="manual")
    data = event.to_dict()
    assert data["sample_changer"] is None
    assert data["sample"]["barcode"] is None
    assert schema_errors(data) == []


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(a_mount().to_dict())
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


# (field path, bad value, whether the JSON schema alone also refuses it; None: depends on whether
# jsonschema has its optional date-time checker)
REJECTIONS = [
    ("event_id", "not-a-uuid", True),
    ("type", "loaded", True),
    ("occurred_at", "2026-11-24 18:30:00", True),
    ("occurred_at", "2026-13-24T18:30:00.000000Z", None),  # pattern-valid, not a date
    ("beamline", "ID23-1", True),
    ("session", "", True),
    ("proposal", 2532, True),
    ("sample.barcode", " LYS", True),
    ("sample.barcode", "x" * 65, True),
    ("sample.barcode", "NOREAD", False),  # a no-read: the contract says 422, the pattern allows it
    ("sample.name", "", True),
    ("sample.colour", "red", True),
    ("sample_changer.name", "", True),
    ("source", "robot", True),
    ("status", "OK", True),
    ("message", "x" * 2001, True),
    ("mount_event_id", str(uuid.uuid4()), False),  # a mount never ends a mount
    ("producer.host", KeyError, True),
    ("status", KeyError, True),
    ("extra", 1, True),
]


@pytest.mark.parametrize(("path", "value", "schema_refuses"), REJECTIONS)
def test_invalid_events_are_refused_naming_the_field(
    path: str, value: Any, schema_refuses: bool | None
) -> None:
    data = _with(path, value)
    if schema_refuses is not None:
        assert bool(schema_errors(data)) is schema_refuses
    with pytest.raises(InvalidEventError) as info:
        Event.from_dict(data)
    assert path in info.value.fields, info.value.fields
    assert path in str(info.value)


def test_sample_needs_barcode_or_name_in_both_schema_and_code() -> None:
    data = _with("sample.barcode", None)
    data["sample"]["name"] = None
    assert schema_errors(data)
    with pytest.raises(InvalidEventError) as info:
        Event.from_dict(data)
    assert info.value.fields == {"sample": "needs a barcode or a name (at least one non-null)"}
    with pytest.raises(InvalidSampleError, match="barcode or a name"):
        Sample()


def test_error_event_must_say_why() -> None:
    with pytest.raises(InvalidEventError, match="message"):
        a_mount(status=Status.ERROR, message="")


def test_every_bad_field_is_named_at_once() -> None:
    data = _with("beamline", "BAD BEAMLINE")
    data["type"] = "x"
    data["sample"]["barcode"] = "ERROR"
    with pytest.raises(InvalidEventError) as info:
        Event.from_dict(data)
    assert {"beamline", "type", "sample.barcode"} <= set(info.value.fields)


def test_garbage_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEventError, match="not JSON"):
        Event.from_json("{not json")
    with pytest.raises(InvalidEventError):
        Event.from_dict([])  # type: ignore[arg-type]


printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20)
barcodes = st.from_regex(r"\A[!-~]([ -~]{0,62}[!-~])?\Z")
optional = st.none() | printable


@st.composite
def samples(draw: st.DrawFn) -> Sample:
    changer = draw(st.none() | printable)
    return Sample(
        barcode=draw(st.none() | barcodes.filter(lambda b: b.strip().upper() not in {"ERROR", "NOREAD"})),
        name=draw(printable),
        sample_id=draw(optional),
        parcel_id=draw(optional),
        container_position=draw(optional),
        changer_name=changer,
        changer_position=draw(optional) if changer else None,
    )


@settings(max_examples=150, deadline=None)
@given(
    samples(),
    st.sampled_from(list(EventType)),
    st.sampled_from(list(Source)),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_any_valid_event_matches_the_schema_and_round_trips(
    sample: Sample, kind: EventType, source: Source, moment: datetime
) -> None:
    event = Event(type=kind, sample=sample, beamline="bm07", session="s", source=source, occurred_at=moment)
    data = json.loads(event.to_json())
    assert schema_errors(data) == []
    assert Event.from_dict(data) == event


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(list(a_mount().to_dict())), st.none() | st.text(max_size=5) | st.integers()
    )
)
def test_arbitrary_dicts_never_crash_the_parser(patch: dict[str, Any]) -> None:
    data = {**a_mount().to_dict(), **patch}
    try:
        event = Event.from_dict(data)
    except SampleTrackError as exc:
        assert str(exc)
    else:
        assert schema_errors(event.to_dict()) == []
