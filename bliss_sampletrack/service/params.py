"""Parsing of query and path parameters (``GET /events`` and the path variables).

Everything is checked before any database access, and every problem is a ``422`` naming the
parameter. Decisions:
- unknown query parameters are refused (a typo such as ``barcode=`` for ``sample=`` would
  otherwise silently return every event), and so is a parameter given twice;
- ``since``/``until`` accept any RFC 3339 timestamp with an offset (``Z`` or ``+01:00``;
  fractions beyond microseconds are truncated); a ``+`` must be sent as ``%2B`` in a URL;
- ``limit`` is 1..1000 (default 100): above 1000 is a ``422``, not silently capped;
- the cursor is opaque: the position ``(occurred_at, arrival)`` of the last event returned, so
  a page never repeats or skips an event that was stored before the first page was read. An
  event stored later with an older ``occurred_at`` than the cursor is not seen by that walk.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.errors import InvalidBarcodeError
from bliss_sampletrack.service.auth import BEAMLINE_PATTERN
from bliss_sampletrack.service.events import to_micros
from bliss_sampletrack.service.problems import ApiError, invalid_request

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
LIST_PARAMETERS = ("beamline", "sample", "since", "until", "limit", "cursor")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,32})?([Zz]|[+-]\d{2}:\d{2})$")
_CURSOR = re.compile(r"^v1:(-?\d{1,20}):(\d{1,20})$")
_INT64 = 1 << 63


@dataclass(frozen=True, slots=True)
class ListParameters:
    beamline: str | None
    sample: str | None
    since_us: int | None
    until_us: int | None
    limit: int
    after: tuple[int, int] | None


def check_beamline(value: str, name: str = "beamline") -> str:
    if not BEAMLINE_PATTERN.fullmatch(value):
        raise invalid_request(
            f"{name} {value[:40]!r} is not a beamline name",
            {name: "must match ^[a-z0-9][a-z0-9_.-]{0,31}$ (lower case, e.g. id23-1)"},
        )
    return value


def check_barcode(value: str, name: str) -> str:
    """A contract barcode; a no-read string (``ERROR``, ``NOREAD``) or malformed text is a 422."""
    try:
        return validate_barcode(value)
    except InvalidBarcodeError as exc:
        raise invalid_request(f"{name} is not a barcode", {name: str(exc)}) from None


def parse_rfc3339(value: str, name: str) -> int:
    """Microseconds since the epoch of an RFC 3339 timestamp with an offset."""
    problem = "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T18:30:00.000000Z"
    if " " in value:
        problem += " (a '+' in a URL must be written %2B)"
    if not _RFC3339.fullmatch(value):
        raise invalid_request(f"{name} is not a timestamp", {name: problem})
    text = value.upper()
    date, _, rest = text.partition("T")
    match = re.match(r"^([\d:]+)(\.\d+)?(.*)$", rest)
    assert match is not None  # guaranteed by _RFC3339
    clock, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # "." and at most 6 digits
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{fraction}{'+00:00' if offset == 'Z' else offset}")
    except ValueError:
        raise invalid_request(f"{name} is not a valid date and time", {name: problem}) from None
    return to_micros(moment)


def encode_cursor(occurred_us: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{occurred_us}:{seq}".encode()).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[int, int]:
    bad = invalid_request(
        "cursor is not valid", {"cursor": "pass the next_cursor of a previous answer unchanged"}
    )
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise bad
    occurred_us, seq = int(match.group(1)), int(match.group(2))
    if not (-_INT64 <= occurred_us < _INT64 and seq < _INT64):
        raise bad
    return occurred_us, seq


def _single(args: Mapping[str, list[str]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid_request(f"{name} given {len(values)} times", {name: "give it at most once"})
    return values[0]


def parse_list_parameters(args: Mapping[str, list[str]]) -> ListParameters:
    """``GET /events`` parameters (``args``: name -> every value given)."""
    problems: dict[str, str] = {}
    unknown = sorted(set(args) - set(LIST_PARAMETERS))
    for name in unknown:
        problems[name[:64]] = f"unknown parameter; known: {', '.join(LIST_PARAMETERS)}"
    values: dict[str, object] = {}
    checks = {
        "beamline": check_beamline,
        "sample": lambda v: check_barcode(v, "sample"),
        "since": lambda v: parse_rfc3339(v, "since"),
        "until": lambda v: parse_rfc3339(v, "until"),
        "limit": _parse_limit,
        "cursor": decode_cursor,
    }
    for name, check in checks.items():
        try:
            raw = _single(args, name)
            values[name] = None if raw is None else check(raw)
        except ApiError as exc:
            problems.update(exc.fields)
    if problems:
        raise invalid_request("invalid query parameter(s): " + ", ".join(sorted(problems)), problems)
    limit = values["limit"]
    return ListParameters(
        beamline=values["beamline"],  # type: ignore[arg-type]
        sample=values["sample"],  # type: ignore[arg-type]
        since_us=values["since"],  # type: ignore[arg-type]
        until_us=values["until"],  # type: ignore[arg-type]
        limit=DEFAULT_LIMIT if limit is None else limit,  # type: ignore[arg-type]
        after=values["cursor"],  # type: ignore[arg-type]
    )


def _parse_limit(value: str) -> int:
    problem = f"must be an integer from 1 to {MAX_LIMIT}"
    if not re.fullmatch(r"\d{1,7}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise invalid_request("limit is out of range", {"limit": problem})
    return int(value)
