"""From a received JSON value to a storable event, with the package's contract checks.

Validation is the domain core's (:func:`bliss_sampletrack.core.contract.contract_errors`): the
same rules as the plugin's, so a ``422`` names each bad field exactly as the plugin would.

The stored form is *canonical JSON*: the contract's keys in the schema's order, compact, ASCII
only (``\\uXXXX`` escapes). Two bodies are "identical" for idempotency when their canonical forms
are equal, i.e. equal as JSON values: key order and white space do not matter, but an
``event_id`` written in upper case differs from the same UUID in lower case (a ``409``), while
both are the same idempotency key.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from bliss_sampletrack.core.contract import contract_errors, event_schema, parse_timestamp
from bliss_sampletrack.errors import InvalidEventError
from bliss_sampletrack.service.storage import NewEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (moment - EPOCH) // _MICROSECOND


@cache
def _key_order() -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    properties = event_schema()["properties"]
    nested = {
        name: tuple(spec["properties"])
        for name, spec in properties.items()
        if isinstance(spec, dict) and "properties" in spec
    }
    return tuple(properties), nested


def canonical_json(event: dict[str, Any]) -> str:
    """The canonical text of a *valid* event (see the module docstring)."""
    top, nested = _key_order()
    ordered: dict[str, Any] = {}
    for key in top:
        value = event[key]
        if key in nested and isinstance(value, dict):
            value = {name: value[name] for name in nested[key]}
        ordered[key] = value
    return json.dumps(ordered, ensure_ascii=True, separators=(",", ":"))


def prepare_event(data: Any) -> NewEvent:
    """Validate ``data`` against the contract; raises :class:`InvalidEventError` naming each bad field."""
    try:
        errors = contract_errors(data)
    except RecursionError:
        raise InvalidEventError({"(event)": "nested too deeply to be an event"}) from None
    if errors:
        raise InvalidEventError(errors)
    sample = data["sample"]
    return NewEvent(
        event_id=str(uuid.UUID(data["event_id"])),
        beamline=data["beamline"],
        barcode=sample["barcode"],
        occurred_us=to_micros(parse_timestamp(data["occurred_at"])),
        type=data["type"],
        body=canonical_json(data),
    )


def differing_fields(stored: str, new: str) -> dict[str, str]:
    """Which fields of two canonical events differ (for a ``409``'s ``fields``)."""
    old_value, new_value = json.loads(stored), json.loads(new)
    fields: dict[str, str] = {}
    for key in old_value:
        a, b = old_value[key], new_value.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    fields[f"{key}.{sub}"] = "differs from the stored event with this event_id"
        elif a != b:
            fields[key] = "differs from the stored event with this event_id"
    return fields
