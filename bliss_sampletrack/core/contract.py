"""Validation of event dicts against the tracking contract (``event.schema.json``, version 1).

The package carries its own copy of the contract's schema (users install the plugin without the
shared contract folder); a test keeps it identical to ``../shared/contract/event.schema.json``.

The JSON schema is checked with ``jsonschema``, plus the contract rules a schema cannot say or
that ``jsonschema`` does not check without optional packages:
- ``occurred_at`` is a real UTC instant (the pattern alone accepts month 13);
- a no-read string (``ERROR``, ``NOREAD``) is never a barcode;
- ``mount_event_id`` only on ``unmounted`` events; an ``ERROR`` event says why.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from bliss_sampletrack.core.barcode import is_no_read
from bliss_sampletrack.errors import InvalidEventError

CONTRACT_VERSION = 1
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@cache
def event_schema() -> dict[str, Any]:
    """The contract's event JSON schema, as shipped in this package."""
    text = resources.files("bliss_sampletrack.schema").joinpath("event.schema.json").read_text()
    return dict(json.loads(text))


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(event_schema(), format_checker=FormatChecker())


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, as the contract wants; naive datetimes refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"timestamp {moment.isoformat()} has no time zone; use datetime.now(UTC) or an aware datetime"
        )
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp`; raises ValueError naming the expected shape."""
    try:
        return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise ValueError(
            f"{text!r} is not an RFC 3339 UTC timestamp like 2026-11-24T18:30:00.000000Z"
        ) from None


def _field_name(error: ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in str(error.message) else ""
        return f"{path}.{missing}" if path else missing
    return path or "(event)"


def _problem(error: ValidationError) -> str:
    if error.validator == "anyOf" and list(error.absolute_path) == ["sample"]:
        return "needs a barcode or a name (at least one non-null)"
    if error.validator == "pattern" and error.absolute_path and error.absolute_path[-1] == "barcode":
        return (
            f"{error.instance!r} is not a barcode: printable ASCII, 1 to 64 characters, "
            "no leading or trailing space"
        )
    return str(error.message)


def contract_errors(data: Any) -> dict[str, str]:
    """Every contract violation of ``data``, as ``{field path: problem}`` (empty when valid)."""
    errors: dict[str, str] = {}
    for error in sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # name each unexpected field rather than the object that holds it
            prefix = "".join(f"{p}." for p in error.absolute_path)
            for extra in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
                errors.setdefault(
                    f"{prefix}{extra}", "unexpected field: contract version 1 has no such field"
                )
            continue
        errors.setdefault(_field_name(error), _problem(error))
    if not isinstance(data, dict):
        return errors
    occurred_at = data.get("occurred_at")
    if isinstance(occurred_at, str) and "occurred_at" not in errors:
        try:
            parse_timestamp(occurred_at)
        except ValueError as exc:
            errors["occurred_at"] = str(exc)
    sample = data.get("sample")
    if isinstance(sample, dict):
        barcode = sample.get("barcode")
        if isinstance(barcode, str) and is_no_read(barcode):
            errors["sample.barcode"] = f"{barcode!r} is a reader no-read string, never a barcode"
    if data.get("type") == "mounted" and data.get("mount_event_id") is not None:
        errors.setdefault("mount_event_id", "only an 'unmounted' event refers to a mount; use null")
    if data.get("status") == "ERROR" and data.get("message") == "":
        errors.setdefault("message", "an ERROR event must say what went wrong")
    return errors


def validate_event_dict(data: Any) -> None:
    """Raise :class:`InvalidEventError` naming each bad field, or return when ``data`` is valid."""
    errors = contract_errors(data)
    if errors:
        raise InvalidEventError(errors)
