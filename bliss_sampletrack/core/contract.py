"""Validation of event dicts against the tracking contract (``event.schema.json``, version 1).

The package carries its own copy of the contract's schema (users install the plugin without the
shared contract folder); a test keeps it identical to ``../shared/contract/event.schema.json``.

The JSON schema is checked with ``jsonschema``, plus the contract rules a schema cannot say or
that ``jsonschema`` does not check without optional packages:
- ``occurred_at`` is a real UTC instant (the pattern alone accepts month 13);
- a ``pattern`` matches the whole text, as JSON Schema (ECMA-262) means it: ``jsonschema`` uses
  Python's ``re.search``, whose ``$`` also matches before a final newline (``"id23-1\\n"``);
- a no-read string (``ERROR``, ``NOREAD``) is never a barcode;
- ``mount_event_id`` only on ``unmounted`` events; an ``ERROR`` event says why.
"""

from __future__ import annotations

import json
import re
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


@cache
def _patterns() -> tuple[tuple[tuple[str, ...], re.Pattern[str]], ...]:
    """(path, compiled pattern) of every string property with a ``pattern`` in the schema."""

    def walk(schema: dict[str, Any], path: tuple[str, ...]) -> list[tuple[tuple[str, ...], re.Pattern[str]]]:
        found = [(path, re.compile(schema["pattern"]))] if "pattern" in schema else []
        for name, sub in schema.get("properties", {}).items():
            found += walk(sub, (*path, name))
        return found

    return tuple(walk(event_schema(), ()))


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, as the contract wants; naive datetimes refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"timestamp {moment.isoformat()} has no time zone; use datetime.now(UTC) or an aware datetime"
        )
    utc = moment.astimezone(UTC)
    # the year by hand: strftime's %Y does not pad years before 1000 to four digits on Linux
    return f"{utc.year:04d}-" + utc.strftime(TIMESTAMP_FORMAT.removeprefix("%Y-"))


def now_text() -> str:
    """Now, as :func:`format_timestamp` writes it."""
    return format_timestamp(datetime.now(UTC))


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
    try:
        return _contract_errors(data)
    except RecursionError:  # jsonschema's messages hold the repr() of the bad value
        return {"(event)": "nested too deeply to be an event"}


def _contract_errors(data: Any) -> dict[str, str]:
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
    for path, pattern in _patterns():
        value: Any = data
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        where = ".".join(path)
        if isinstance(value, str) and where not in errors and not pattern.fullmatch(value):
            problem = f"{value[:80]!r} does not match {pattern.pattern!r}"
            if path[-1] == "barcode":
                problem = (
                    f"{value[:80]!r} is not a barcode: printable ASCII, 1 to 64 characters, "
                    "no leading or trailing space"
                )
            errors[where] = problem
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
