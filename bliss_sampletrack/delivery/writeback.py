"""Write-backs: what an inventory found that the facility's sample tracking (ICAT+) should know.

An inventory (tracker/inventory.py) can find two things ICAT+ does not know yet:

- :attr:`Kind.PARCEL_EMPTIED`: none of a parcel's samples is left in the changer (some were there
  before: read by the previous inventory, or mounted since);
- :attr:`Kind.ITEM_MOVED`: a sample read at another changer location or container position than
  its ICAT+ item declares.

Each is a :class:`WriteBack` record, queued in the *write-back outbox* of the beamline (a Redis
stream ``sampletrack:writeback:<beamline>``, the same :class:`~bliss_sampletrack.delivery.outbox.
RedisStreamOutbox` as the events', with its own cursors, leases and dead letters), in the same
transaction as the inventory that found it. A client that writes back (the ICAT+ client,
``IcatPlusClient.writeback()``) reads it with the same delivery loop: in order, retried, dead-
lettered on a refusal, fenced by a lease. A record is a fact, not a request: what is written for
it (which status, whether items are corrected at all) is the client's configuration when it is
delivered. A record nobody writes back is trimmed like a delivered event.

Order with the events: a write-back is sent only once the same client has finished every event
queued before it (stream IDs are Redis times: comparable across the two streams), so a parcel's
``BEAMLINE`` status on a mount never lands after the status of an inventory taken later.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bliss_sampletrack.errors import SampleTrackError

#: the write-back outbox of a beamline (a stream, as the event outbox ``sampletrack:outbox:<bl>``)
KEY_PREFIX = "sampletrack:writeback"


def outbox_key(beamline: str) -> str:
    return f"{KEY_PREFIX}:{beamline}"


class Kind(StrEnum):
    PARCEL_EMPTIED = "parcel_emptied"
    ITEM_MOVED = "item_moved"


@dataclass(frozen=True, slots=True)
class Place:
    """A place in the changer: ``location`` (the puck's, ICAT+'s ``sampleChangerLocation``) and
    ``position`` in the puck (``sampleContainerPosition``). None: not known."""

    location: int | None
    position: str | None

    def text(self) -> str:
        return place_text(self.location, self.position)


def place_text(location: int | str | None, position: str | None) -> str:
    """``location 3, position 5`` (``?`` for what is not known; ``no place`` for neither)."""
    if location is None and position is None:
        return "no place"
    return f"location {'?' if location is None else location}, position {position or '?'}"


@dataclass(frozen=True, slots=True)
class WriteBack:
    """One finding of one inventory, to be written back. ``event_id`` names it (the delivery loop's
    and the dead letters' word for a record's id); ``item_*``, ``declared`` and ``found`` only for
    :attr:`Kind.ITEM_MOVED`."""

    kind: Kind
    beamline: str
    tracker: str
    changer: str
    inventory_at: datetime
    parcel_id: str
    parcel_name: str | None = None
    investigation_id: str | None = None  # the ICAT investigation of the parcel, when the registry knows
    item_id: str | None = None
    item_name: str | None = None
    barcode: str | None = None
    declared: Place | None = None
    found: Place | None = None
    detail: str = ""
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if not self.parcel_id:
            raise SampleTrackError(f"write-back {self.kind}: a parcel id is needed")
        if self.kind is Kind.ITEM_MOVED and (not self.item_id or self.found is None):
            raise SampleTrackError(f"write-back {self.kind}: an item id and where it was found are needed")

    @property
    def label(self) -> str:
        """What it is about, for messages: the parcel, or the item and its barcode."""
        parcel = self.parcel_name or self.parcel_id
        if self.kind is Kind.PARCEL_EMPTIED:
            return f"parcel {parcel}"
        code = f" ({self.barcode})" if self.barcode and self.barcode != self.item_name else ""
        return f"item {self.item_name or self.item_id}{code} of parcel {parcel}"

    def to_dict(self) -> dict[str, Any]:
        def place(value: Place | None) -> dict[str, Any] | None:
            return None if value is None else {"location": value.location, "position": value.position}

        return {
            "kind": str(self.kind),
            "event_id": str(self.event_id),
            "created_at": self.created_at.isoformat(),
            "beamline": self.beamline,
            "tracker": self.tracker,
            "changer": self.changer,
            "inventory_at": self.inventory_at.isoformat(),
            "parcel_id": self.parcel_id,
            "parcel_name": self.parcel_name,
            "investigation_id": self.investigation_id,
            "item_id": self.item_id,
            "item_name": self.item_name,
            "barcode": self.barcode,
            "declared": place(self.declared),
            "found": place(self.found),
            "detail": self.detail,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, trusted: bool = False) -> WriteBack:
        """``trusted`` is accepted for the outbox's sake (an Event's keyword); every record is read
        the same way: a malformed one raises ValueError/KeyError/TypeError, which the outbox turns
        into a dead letter (an unreadable entry), never an error that would stop the queue."""
        del trusted

        def place(value: Any) -> Place | None:
            if value is None:
                return None
            if not isinstance(value, Mapping):
                raise TypeError(f"a place is a mapping (location, position), got {value!r}")
            location = value.get("location")
            return Place(None if location is None else int(location), value.get("position"))

        try:
            return cls._read(data, place)
        except SampleTrackError as exc:  # a record the constructor refuses: unreadable, as above
            raise ValueError(str(exc)) from None

    @classmethod
    def _read(cls, data: Mapping[str, Any], place: Any) -> WriteBack:
        return cls(
            kind=Kind(data["kind"]),
            beamline=data["beamline"],
            tracker=data["tracker"],
            changer=data["changer"],
            inventory_at=datetime.fromisoformat(data["inventory_at"]),
            parcel_id=data["parcel_id"],
            parcel_name=data.get("parcel_name"),
            investigation_id=data.get("investigation_id"),
            item_id=data.get("item_id"),
            item_name=data.get("item_name"),
            barcode=data.get("barcode"),
            declared=place(data.get("declared")),
            found=place(data.get("found")),
            detail=data.get("detail", ""),
            event_id=uuid.UUID(data["event_id"]),
            created_at=datetime.fromisoformat(data["created_at"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> WriteBack:
        return cls.from_dict(json.loads(text))
