"""Pure units of the tracking service: scopes, parameters, canonical events (tokens in a database:
tests/system/service/test_service_tokens.py)."""

from __future__ import annotations

import json

import pytest

from bliss_sampletrack.errors import InvalidEventError
from bliss_sampletrack.service import auth
from bliss_sampletrack.service.events import canonical_json, prepare_event
from bliss_sampletrack.service.openapi import to_openapi_schema
from bliss_sampletrack.service.params import (
    decode_cursor,
    encode_cursor,
    parse_list_parameters,
    parse_rfc3339,
)
from bliss_sampletrack.service.problems import ApiError
from bliss_sampletrack.service.storage import redact_url
from bliss_sampletrack.testbed.events import make_event


def test_scopes() -> None:
    writer = auth.Principal("a", frozenset({"id23-1"}), True)
    assert writer.can_write_to("id23-1") and not writer.can_write_to("id30")
    assert writer.can_read("id23-1") and not writer.can_read("id30")
    assert writer.read_scope == ("id23-1",)
    reader = auth.Principal("b", frozenset(), False)
    assert reader.can_read("anything") and not reader.can_write_to("anything")
    assert reader.read_scope is None
    narrow_reader = auth.Principal("c", frozenset({"id30"}), False)
    assert not narrow_reader.can_write_to("id30") and not narrow_reader.can_read("id23-1")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-11-24T18:30:00.000000Z", "2026-11-24T18:30:00.000000Z"),
        ("2026-11-24T18:30:00Z", "2026-11-24T18:30:00.000000Z"),
        ("2026-11-24t19:30:00.5+01:00", "2026-11-24T18:30:00.500000Z"),
        ("2026-11-24T18:30:00.1234567891Z", "2026-11-24T18:30:00.123456Z"),
    ],
)
def test_rfc3339(text: str, expected: str) -> None:
    assert parse_rfc3339(text, "since") == parse_rfc3339(expected, "since")


@pytest.mark.parametrize(
    "text", ["2026-11-24", "2026-11-24T18:30:00", "2026-02-30T00:00:00Z", "2026-11-24T24:00:00Z"]
)
def test_rfc3339_refused(text: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_rfc3339(text, "since")
    assert error.value.status == 422 and "since" in error.value.fields


def test_cursor_round_trip() -> None:
    cursor = encode_cursor(1_780_000_000_000_000, 4097)
    assert "=" not in cursor
    assert decode_cursor(cursor) == (1_780_000_000_000_000, 4097)
    for bad in ("", "x", encode_cursor(1, 2)[:-2], "djE6MTox" + "Cg", "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTo1"):
        with pytest.raises(ApiError):
            decode_cursor(bad)


def test_list_parameters_collect_every_problem() -> None:
    with pytest.raises(ApiError) as error:
        parse_list_parameters({"limit": ["0"], "since": ["x"], "other": ["1"]})
    assert set(error.value.fields) == {"limit", "since", "other"}
    params = parse_list_parameters({})
    assert params.limit == 100 and params.after is None and params.beamline is None


def test_canonical_json_is_the_contract_order() -> None:
    event = make_event()
    shuffled = json.loads(json.dumps(dict(sorted(event.items()))))
    shuffled["sample"] = dict(sorted(shuffled["sample"].items()))
    assert canonical_json(shuffled) == canonical_json(event)
    assert list(json.loads(canonical_json(shuffled))) == list(event)
    assert prepare_event(shuffled).body == json.dumps(event, separators=(",", ":"))
    unicode = make_event(message="cristal \u00e9 \ud800")  # a lone surrogate survives as an escape
    assert "\\ud800" in prepare_event(unicode).body


def test_prepare_event_uses_the_core_rules() -> None:
    with pytest.raises(InvalidEventError) as error:
        prepare_event(make_event(status="ERROR", message="", mount_event_id=None, type="mounted"))
    assert "message" in error.value.fields
    upper = make_event(event_id=make_event()["event_id"].upper())
    assert prepare_event(upper).event_id == upper["event_id"].lower()


def test_openapi_conversion() -> None:
    schema = {
        "$schema": "x",
        "type": "object",
        "properties": {"a": {"type": ["string", "null"], "maxLength": 3}},
    }
    assert to_openapi_schema(schema) == {
        "type": "object",
        "properties": {"a": {"type": "string", "nullable": True, "maxLength": 3}},
    }


def test_redact_url() -> None:
    assert redact_url("postgresql://user:secret@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"
