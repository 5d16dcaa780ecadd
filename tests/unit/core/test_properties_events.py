"""Property-based tests of event parsing against the contract, on arbitrary JSON-ish input.

The oracle is the contract itself: ``shared/contract/event.schema.json`` checked with
``jsonschema`` directly (not through the package), with the JSON Schema meaning of ``pattern``
(ECMA-262: ``$`` is the end of the text; Python's ``re.search`` also lets ``$`` match before a
final newline, so the oracle checks patterns with ``fullmatch``), plus the contract's written
rules that a schema cannot say (tracking-api.md / core/contract.py): a real UTC instant, no
reader no-read string as a barcode, ``mount_event_id`` only on unmounts, an ``ERROR`` event says
why.

What they prove, for any input:
- ``Event.from_dict`` accepts exactly the events the oracle accepts; for those, ``to_dict`` gives
  the input back (UUIDs in their canonical lower case) and the JSON round trip is the identity;
- anything else raises ``InvalidEventError`` (never another exception) whose ``fields`` name
  every top-level field the oracle finds wrong;
- ``Event.from_json`` on arbitrary text or bytes gives an event or ``InvalidEventError``.

A failure prints the falsifying example (hypothesis); run again with it to reproduce.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bliss_sampletrack.core import Event, Sample
from bliss_sampletrack.core.barcode import is_no_read
from bliss_sampletrack.core.contract import event_schema
from bliss_sampletrack.errors import InvalidBarcodeError, InvalidEventError, InvalidSampleError
from bliss_sampletrack.testbed.events import make_event

BOUNDED = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHARED_SCHEMA = Path(__file__).resolve().parents[4] / "shared" / "contract" / "event.schema.json"
SCHEMA = json.loads(SHARED_SCHEMA.read_text()) if SHARED_SCHEMA.is_file() else event_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
NO_READS = {"ERROR", "NOREAD"}


# --- the oracle ---------------------------------------------------------------------------------
def _patterns(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    found = [(path, schema["pattern"])] if "pattern" in schema else []
    for name, sub in schema.get("properties", {}).items():
        found += _patterns(sub, (*path, name))
    return found


PATTERNS = _patterns(SCHEMA)


def _at(data: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def oracle(data: Any) -> set[str]:
    """The top-level fields of ``data`` that break the contract (empty: a valid event)."""
    bad: set[str] = set()
    for error in VALIDATOR.iter_errors(data):
        if error.validator == "required" and not error.absolute_path:
            bad |= {name for name in SCHEMA["required"] if name not in data}
        elif error.validator == "additionalProperties" and not error.absolute_path:
            bad |= set(data) - set(SCHEMA["properties"])
        elif error.absolute_path:
            bad.add(str(error.absolute_path[0]))
        else:
            bad.add("(event)")
    if not isinstance(data, dict):
        return bad or {"(event)"}
    for path, pattern in PATTERNS:  # ECMA-262: "$" is the end of the text
        value = _at(data, path)
        if isinstance(value, str) and not re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value):
            bad.add(path[0])
    stamp = data.get("occurred_at")
    if isinstance(stamp, str):
        try:
            datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            bad.add("occurred_at")
    barcode = _at(data, ("sample", "barcode"))
    if isinstance(barcode, str) and barcode.strip().upper() in NO_READS:
        bad.add("sample")
    if data.get("type") == "mounted" and data.get("mount_event_id") is not None:
        bad.add("mount_event_id")
    if data.get("status") == "ERROR" and data.get("message") == "":
        bad.add("message")
    return bad


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its UUIDs in canonical (lower-case) text: the contract's UUIDs are
    case-insensitive (RFC 4122), and an Event holds them as ``uuid.UUID``."""
    out = copy.deepcopy(data)
    for key in ("event_id", "mount_event_id"):
        if isinstance(out.get(key), str):
            out[key] = str(uuid.UUID(out[key]))
    return out


# --- strategies -------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
uuids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
near_text = st.sampled_from(["", " ", "\n", "id23-1\n", "ERROR", " NOREAD", "noread", "x" * 65, "é", "ID23"])
stamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")
    ),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\n?\Z"),
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": uuids,
    "type": st.sampled_from(["mounted", "unmounted", "MOUNTED", ""]),
    "occurred_at": stamps,
    "beamline": st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,31}\n?\Z") | near_text,
    "session": st.text(max_size=70) | near_text,
    "proposal": st.none() | st.text(max_size=70),
    "source": st.sampled_from(["barcode_reader", "sample_changer", "manual", "robot"]),
    "status": st.sampled_from(["SUCCESS", "ERROR", "success"]),
    "message": st.text(max_size=12),
    "mount_event_id": st.none() | uuids,
}
SAMPLE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "barcode": st.none() | st.from_regex(r"\A[!-~]([ -~]{0,62}[!-~])?\n?\Z") | near_text,
    "name": st.none() | st.text(max_size=10) | near_text,
    "container_position": st.none() | st.text(max_size=40),
}


def base_event() -> dict[str, Any]:
    return make_event(type="unmounted")


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with a few fields changed to plausible, near-miss or arbitrary values,
    some removed and some added."""
    data = base_event()
    for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=4, unique=True)):
        data[name] = (
            draw(FIELD_VALUES[name] | json_values) if draw(st.booleans()) else draw(FIELD_VALUES[name])
        )
    for name in draw(st.lists(st.sampled_from(sorted(SAMPLE_VALUES)), max_size=2, unique=True)):
        data["sample"][name] = draw(SAMPLE_VALUES[name])
    if draw(st.booleans()):
        data["sample_changer"] = draw(
            st.none()
            | st.fixed_dictionaries(
                {"name": st.text(max_size=5), "position": st.none() | st.text(max_size=5)}
            )
            | json_values
        )
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.sampled_from(["sample", "producer"]))] = draw(json_values)
    for name in (
        draw(st.lists(st.sampled_from(sorted(data)), max_size=2, unique=True))
        if draw(st.integers(0, 5)) == 0
        else []
    ):
        del data[name]
    if draw(st.integers(0, 7)) == 0:
        data[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return data


# --- properties --------------------------------------------------------------------------------------
def check(data: Any) -> None:
    bad = oracle(data)
    try:
        event = Event.from_dict(data)
    except InvalidEventError as exc:
        assert bad, f"refused a contract-valid event: {exc}"
        if "(event)" not in exc.fields:  # (the whole value is wrong: nothing more to name)
            for field in bad:  # each bad field is named, itself or one of its parts
                assert any(n == field or n.startswith(f"{field}.") for n in exc.fields), (field, exc.fields)
        assert str(exc).startswith("invalid sample-tracking event")
        return
    assert not bad, f"accepted an event that breaks the contract in {bad}: {data}"
    assert event.to_dict() == canonical(data)
    assert Event.from_json(event.to_json()) == event


@BOUNDED
@given(events())
def test_from_dict_accepts_exactly_the_contract_valid_events(data: dict[str, Any]) -> None:
    check(data)


@BOUNDED
@given(json_values)
def test_any_json_value_is_an_event_or_invalid_event_error(data: Any) -> None:
    check(data)


@BOUNDED
@given(st.text(max_size=60) | st.binary(max_size=60).map(bytes) | events().map(json.dumps))
def test_from_json_of_any_text_is_an_event_or_invalid_event_error(text: str | bytes) -> None:
    try:
        Event.from_json(text)
    except InvalidEventError as exc:
        assert exc.fields


@BOUNDED
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)))
@example(datetime(999, 1, 1, tzinfo=UTC))
def test_a_timestamp_of_any_year_is_written_as_the_contract_says(moment: datetime) -> None:
    data = {**base_event(), "occurred_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")}
    event = Event.from_dict(data)
    assert event.occurred_at == moment and event.to_dict() == data


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"message": ' + "[" * 100_000 + "]" * 100_000 + "}", "1e999999", '"\\ud800"'],
    ids=["open", "nested", "huge-number", "lone-surrogate"],
)
def test_pathological_json_is_an_invalid_event_error(text: str) -> None:
    with pytest.raises(InvalidEventError):
        Event.from_json(text)


def test_deeply_nested_values_are_an_invalid_event_error() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidEventError, match="nested too deeply"):
        Event.from_dict({**base_event(), "message": deep})


SAMPLE_KEYS = [
    "barcode", "name", "sample_id", "parcel_id", "parcel_name", "container_id", "container_name",
    "container_position", "changer_name", "changer_position", "colour",
]  # fmt: skip


@BOUNDED
@given(
    st.dictionaries(
        st.sampled_from(SAMPLE_KEYS),
        st.none() | st.text(max_size=70) | st.sampled_from(["ERROR", " noread", "", "BC-1"]) | json_values,
        max_size=6,
    ),
    st.lists(st.text(max_size=6), max_size=2),
)
def test_a_stored_sample_record_is_a_valid_sample_or_a_sample_error(
    data: dict[str, Any], no_read: list[str]
) -> None:
    # Sample.from_dict reads the tracker's records back from Redis; Sample.create takes a
    # reader's configured no-read strings too
    for build in (lambda: Sample.from_dict(data), lambda: Sample.create(no_read=no_read, **data)):
        try:
            sample = build()
        except (InvalidSampleError, InvalidBarcodeError) as exc:
            assert str(exc)
        except TypeError:  # Sample.create(**data) with a field it does not know: a caller's bug
            assert set(data) - set(SAMPLE_KEYS[:-1])
        else:
            assert sample.barcode is not None or sample.name is not None
            if sample.barcode is not None:
                assert not is_no_read(sample.barcode)
            assert Sample.from_dict(sample.to_dict()) == sample
