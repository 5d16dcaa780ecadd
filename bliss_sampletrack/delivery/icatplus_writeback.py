"""Writing an inventory's findings back to ICAT+ (the write-back outbox's ICAT+ client).

Made by ``IcatPlusClient.writeback()`` when its configuration asks for it; delivered by the same
loop as the events (writeback.py: in order, after the events queued before, retried, dead-
lettered), with the ICAT+ client's URL, session id, TLS and redaction.

What is sent, per record (icat-plus-client 5.7.4 ``TrackingApi``)
-----------------------------------------------------------------
- A parcel emptied (none of its samples left in the changer), when ``parcel_status.status_emptied``
  is set: ``PUT .../investigation/id/{iid}/parcel/id/{pid}/parcel/status`` with ``{"status":
  <status_emptied>}`` (``..._parcel_status_put``, model ``ParcelStatus``), as on a mount.
- A sample found at another place than its item declares, when ``item_corrections: true``:
  1. ``GET /tracking/{session}/parcel?investigationId={iid}&parcelId={pid}`` (``..._parcel_get``):
     the item as ICAT+ has it *now*;
  2. ``PUT .../parcel/id/{pid}/item/{itemId}`` (``..._item_item_id_put``, model ``Item``): that
     item, every field kept, with ``sampleChangerLocation`` and ``sampleContainerPosition`` set
     to where the inventory read it and a line added to ``comments`` that keeps the declared
     values: ``[sampletrack <id>] inventory of changer sc (<time>) read LYS-0001 at location 3,
     position 5; declared: location 1, position 2``.

Never a silent overwrite: the PUT is made only while ICAT+ still says what the inventory compared
with (the item's location, or its container's, and position). If someone changed the item since,
or deleted it, the record is refused (a dead letter saying what ICAT+ says now) and nothing is
written. A retry after a lost answer finds its own line in ``comments`` and sends nothing again.

Caveats: ICAT+ has no conditional PUT, so an edit made between the GET and the PUT (a fraction of
a second) is overwritten; a record queued while ``item_corrections`` was off is delivered as
"nothing written" when it is still off (records are facts; the configuration at delivery
decides). The status names are ICAT+'s and were not confirmed here: see the README.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bliss_sampletrack.delivery.base import Result, RetryLater, Verdict, classify_2xx, send_each
from bliss_sampletrack.delivery.http_answers import retry_after
from bliss_sampletrack.delivery.icatplus_json import as_position, ident, items_with_holder
from bliss_sampletrack.delivery.writeback import Kind, Place, WriteBack, place_text

if TYPE_CHECKING:  # made by IcatPlusClient.writeback(), which imports this module
    from bliss_sampletrack.delivery.icatplus import IcatPlusClient

log = logging.getLogger(__name__)


def place_of(item: Mapping[str, Any], holder: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """Where ICAT+ puts an item: its location (else its container's) and its position, as text
    compared without leading zeros (as the parcel registry reads them)."""
    location = item.get("sampleChangerLocation")
    if location is None and holder is not None:
        location = holder.get("sampleChangerLocation")
    return as_position(location), as_position(item.get("sampleContainerPosition"))


def same_place(item: Mapping[str, Any], holder: Mapping[str, Any] | None, place: Place | None) -> bool:
    """ICAT+'s item (its location, else its container's) is at ``place``."""
    if place is None:
        return False
    return place_of(item, holder) == (as_position(place.location), as_position(place.position))


class IcatPlusWriteBack:
    """Delivers write-back records (writeback.py) to ICAT+ through an :class:`IcatPlusClient`."""

    max_batch = 1

    def __init__(self, client: IcatPlusClient) -> None:
        assert client.parcel_status is not None  # writeback() makes one only then
        self.client = client
        self.name = client.name
        self.parcel = client.parcel_status
        #: what this client writes back (the tracker queues only these)
        self.kinds = frozenset(
            ({Kind.PARCEL_EMPTIED} if self.parcel.status_emptied else set())
            | ({Kind.ITEM_MOVED} if client.item_corrections else set())
        )

    def describe(self) -> str:
        what = []
        if self.parcel.status_emptied:
            what.append(f"parcel status {self.parcel.status_emptied} when emptied")
        if self.client.item_corrections:
            what.append("item corrections")
        return f"{self.name}: ICAT+ write-back {self.client.url} ({', '.join(what)})"

    def send(self, records: list[WriteBack]) -> list[Result]:
        return send_each(records, self._send_one)

    def _send_one(self, record: WriteBack) -> Result:
        if record.kind is Kind.PARCEL_EMPTIED:
            return self._emptied(record)
        return self._moved(record)

    def _investigation(self, record: WriteBack) -> str:
        return record.investigation_id or self.parcel.investigation_id

    def _emptied(self, record: WriteBack) -> Result:
        status = self.parcel.status_emptied
        if not status:
            return Result(Verdict.DELIVERED, "no parcel_status.status_emptied configured: nothing written")
        path = self.client.tracking_path(self._investigation(record), record.parcel_id, "parcel/status")
        what = f"{record.label} status {status}"
        return self._verdict(record, self.client.request("PUT", path, {"status": status}, what=what), what)

    def _moved(self, record: WriteBack) -> Result:
        if not self.client.item_corrections:
            return Result(Verdict.DELIVERED, "item_corrections is off: nothing written")
        investigation = self._investigation(record)
        what = f"{record.label}: reading it"
        path = self.client.parcels_path()
        params = [("investigationId", investigation), ("parcelId", record.parcel_id)]
        response = self.client.request("GET", path, None, what=what, params=params)
        verdict = classify_2xx(response.status_code)
        if verdict is not Verdict.DELIVERED:
            return self._verdict(record, response, what)
        try:
            parcels = response.json()
        except ValueError:
            raise RetryLater(f"{what}: ICAT+ answered {response.status_code} with no JSON") from None
        found = self._find(parcels, record)
        if found is None:
            detail = (
                f"{record.label}: ICAT+ has no item {record.item_id} in parcel {record.parcel_id} of "
                f"investigation {investigation} any more: nothing written"
            )
            log.warning("%s: %s", self.name, detail)
            return Result(Verdict.REJECTED, detail)
        item, holder = found
        marker = f"[sampletrack {record.event_id}]"
        comments = str(item.get("comments") or "")
        if marker in comments:
            return Result(Verdict.DELIVERED, f"{record.label}: written before ({marker} in its comments)")
        if not same_place(item, holder, record.declared):
            now = place_text(*place_of(item, holder))
            declared = record.declared.text() if record.declared else "no place"
            found = record.found.text() if record.found else "?"
            detail = (
                f"{record.label}: ICAT+ now says {now}, not {declared} as when the inventory "
                f"compared: changed since; not overwritten with {found}"
            )
            log.warning("%s: %s", self.name, detail)
            return Result(Verdict.REJECTED, detail)
        body = self.corrected(item, record, marker, comments)
        path = self.client.tracking_path(investigation, record.parcel_id, f"item/{record.item_id}")
        what = f"{record.label} correction to {record.found.text()}"  # type: ignore[union-attr]
        return self._verdict(record, self.client.request("PUT", path, body, what=what), what)

    @staticmethod
    def _find(parcels: Any, record: WriteBack) -> tuple[Any, Any] | None:
        for parcel in parcels if isinstance(parcels, list) else []:
            if isinstance(parcel, Mapping) and ident(parcel) == record.parcel_id:
                for item, holder in items_with_holder(parcel):
                    if ident(item) == record.item_id:
                        return item, holder
        return None

    @staticmethod
    def corrected(item: Mapping[str, Any], record: WriteBack, marker: str, comments: str) -> dict[str, Any]:
        """The item as ICAT+ has it, at the place found, the declared place kept in ``comments``."""
        assert record.found is not None
        line = (
            f"{marker} inventory of changer {record.changer} "
            f"({record.inventory_at.isoformat(timespec='seconds')}, beamline {record.beamline}) read "
            f"{record.barcode or record.item_name} at {record.found.text()}; "
            f"declared: {record.declared.text() if record.declared else 'no place'}"
        )
        body = {key: value for key, value in item.items() if key != "_id"}
        body["sampleChangerLocation"] = record.found.location
        body["sampleContainerPosition"] = record.found.position
        body["comments"] = f"{comments}\n{line}" if comments else line
        return body

    def _verdict(self, record: WriteBack, response: Any, what: str) -> Result:
        verdict = classify_2xx(response.status_code)
        if verdict is Verdict.RETRY:
            raise RetryLater(f"{what}: {self.client.answer(response)}", retry_after(response))
        if verdict is Verdict.REJECTED:
            detail = f"{what} refused: {self.client.answer(response)}"
            log.warning("%s: write-back %s: %s", self.name, record.event_id, detail)
            return Result(Verdict.REJECTED, detail)
        return Result(Verdict.DELIVERED, f"{what}: {response.status_code}")
