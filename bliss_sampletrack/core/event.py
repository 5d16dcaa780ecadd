"""The mount/unmount ``Event``: one record per change, serialised exactly to the contract.

An ``Event`` can only exist if it satisfies ``event.schema.json``: construction validates the
serialised form and raises :class:`~bliss_sampletrack.errors.InvalidEventError` naming each bad
field. ``to_dict()`` gives every contract field (unknown values ``null``), in the schema's order.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bliss_sampletrack import __version__
from bliss_sampletrack.core.contract import format_timestamp, parse_timestamp, validate_event_dict
from bliss_sampletrack.core.sample import Sample
from bliss_sampletrack.errors import InvalidEventError

SOFTWARE_NAME = "bliss-sampletrack"
# set while from_dict builds an Event from a dict it has already validated (or trusts): the
# contract check is the costly part of an Event (about 0.15 ms), so it runs once, not twice
_VALIDATED: ContextVar[bool] = ContextVar("_VALIDATED", default=False)


class EventType(StrEnum):
    MOUNTED = "mounted"
    UNMOUNTED = "unmounted"


class Source(StrEnum):
    BARCODE_READER = "barcode_reader"
    SAMPLE_CHANGER = "sample_changer"
    MANUAL = "manual"


class Status(StrEnum):
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"  # a failed or doubtful mount/unmount; ``message`` says why


@dataclass(frozen=True, slots=True)
class Producer:
    """Which software on which host made the event."""

    software: str
    version: str
    host: str

    @classmethod
    def here(cls) -> Producer:
        return cls(SOFTWARE_NAME, __version__, socket.gethostname())


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """A sample was mounted or unmounted (or an attempt failed: ``status=ERROR``).

    ``occurred_at`` is when the reader or changer reported it, not when it is sent; it must be
    timezone-aware. ``mount_event_id`` (unmounts only) is the ``event_id`` of the mount it ends.
    """

    type: EventType
    sample: Sample
    beamline: str
    session: str
    source: Source
    occurred_at: datetime = field(default_factory=_now)
    proposal: str | None = None
    status: Status = Status.SUCCESS
    message: str = ""
    mount_event_id: uuid.UUID | None = None
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    producer: Producer = field(default_factory=Producer.here)

    def __post_init__(self) -> None:
        # coerce plain strings to the enums so that Event(type="mounted", ...) works too
        for name, kind in (("type", EventType), ("source", Source), ("status", Status)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                try:
                    object.__setattr__(self, name, kind(value))
                except ValueError:
                    allowed = ", ".join(repr(k.value) for k in kind)
                    raise InvalidEventError({name: f"{value!r} is not one of {allowed}"}) from None
        if not isinstance(self.sample, Sample):
            raise InvalidEventError({"sample": f"must be a Sample, got {type(self.sample).__name__}"})
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise InvalidEventError(
                {"occurred_at": f"{self.occurred_at.isoformat()} has no time zone; use an aware datetime"}
            )
        if not _VALIDATED.get():
            validate_event_dict(self.to_dict())

    @classmethod
    def mounted(cls, sample: Sample, **kwargs: Any) -> Event:
        return cls(type=EventType.MOUNTED, sample=sample, **kwargs)

    @classmethod
    def unmounted(cls, sample: Sample, **kwargs: Any) -> Event:
        return cls(type=EventType.UNMOUNTED, sample=sample, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object (every field present, unknown values None)."""
        return {
            "event_id": str(self.event_id),
            "type": str(self.type),
            "occurred_at": format_timestamp(self.occurred_at),
            "beamline": self.beamline,
            "session": self.session,
            "proposal": self.proposal,
            "sample": self.sample.to_contract(),
            "sample_changer": self.sample.changer_to_contract(),
            "source": str(self.source),
            "status": str(self.status),
            "message": self.message,
            "mount_event_id": None if self.mount_event_id is None else str(self.mount_event_id),
            "producer": {
                "software": self.producer.software,
                "version": self.producer.version,
                "host": self.producer.host,
            },
        }

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict` (keys in contract order)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, trusted: bool = False) -> Event:
        """Parse a contract event; raises :class:`InvalidEventError` naming every bad field.

        ``trusted``: skip the contract check, for JSON this package wrote itself from a valid
        Event (the outbox); a malformed input then raises KeyError/ValueError/TypeError.
        """
        if not trusted:
            validate_event_dict(dict(data) if isinstance(data, Mapping) else data)
        token = _VALIDATED.set(True)
        try:
            return cls._build(data)
        finally:
            _VALIDATED.reset(token)

    @classmethod
    def _build(cls, data: Mapping[str, Any]) -> Event:
        producer = data["producer"]
        return cls(
            event_id=uuid.UUID(data["event_id"]),
            type=EventType(data["type"]),
            occurred_at=parse_timestamp(data["occurred_at"]),
            beamline=data["beamline"],
            session=data["session"],
            proposal=data["proposal"],
            sample=Sample.from_contract(data["sample"], data["sample_changer"]),
            source=Source(data["source"]),
            status=Status(data["status"]),
            message=data["message"],
            mount_event_id=None if data["mount_event_id"] is None else uuid.UUID(data["mount_event_id"]),
            producer=Producer(producer["software"], producer["version"], producer["host"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bytes not UTF-8, deep nesting
            problem = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise InvalidEventError({"(body)": f"not JSON: {problem}"[:300]}) from None
        return cls.from_dict(data)
