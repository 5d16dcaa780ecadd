"""What an inventory writes back to the facility's sample tracking (the records: delivery/writeback.py).

Two findings, each at most once per fact (a Redis hash of what was queued, ``marks``):

- **a parcel emptied**: the inventory read none of the parcel's samples (the mounted pin counts,
  as the changer lists it), while some were here before: read by the previous inventory of the
  same changer, or mounted from it since the parcel was last found emptied. Never while any pin
  of the inventory gave no code: that pin could be one of its samples (the inventory says so).
  A parcel that was never seen here (not yet loaded) is never "emptied".
- **an item moved**: a barcode read once, at a place (puck location, position) other than the one
  its ICAT+ item declares. Only for items of an ICAT+ registry (:class:`ItemSource`), whose
  declared place is known; a barcode read at two places (duplicated) is for a person to check.

Pure logic (:func:`plan`) apart from :func:`keep`, which the tracker calls to keep an inventory
and queue its write-backs in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from bliss_sampletrack.changers.inventory import InventoryLog, PuckReads
from bliss_sampletrack.core import Event, EventType, Sample, Status
from bliss_sampletrack.core.address import parse_address
from bliss_sampletrack.delivery.icatplus_json import as_position
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.delivery.writeback import Kind, Place, WriteBack
from bliss_sampletrack.tracker.inventory import Inventory

log = logging.getLogger(__name__)


@runtime_checkable
class ItemSource(Protocol):
    """A registry that knows ICAT+ items (the ICAT+ parcel registry)."""

    def item_of(self, barcode: str) -> Mapping[str, Any] | None:
        """The item of ``barcode`` (flattened: ``item_id``, ``item_name``, ``parcel_id``,
        ``parcel_name``, ``changer_location``, ``container_position``, ``investigation_id``),
        or None when not exactly one item has it."""
        ...


@dataclass
class Plan:
    """The records an inventory queues, the marks they set, and what the inventory says of them."""

    records: list[WriteBack] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _number(value: Any) -> int | None:
    """A puck location or position as a number (None: none, or not a number), read as the parcel
    registry and the write-back client read them (icatplus_json.as_position)."""
    text = as_position(value)
    return int(text) if text is not None and text.isdigit() else None


def plan(
    reads: PuckReads,
    *,
    beamline: str,
    tracker: str,
    previous: Mapping[str, Any] | None,
    history: Iterable[Event],
    resolve: Callable[[str], Sample | None],
    items: Iterable[ItemSource],
    marks: Mapping[str, str],
    kinds: Iterable[Kind] = tuple(Kind),
) -> Plan:
    """The write-backs of the inventory ``reads`` (see the module). ``previous``: the changer's
    previous inventory record; ``history``: the tracker's events (any order); ``marks``: what was
    queued before (``parcel:<id>`` -> the inventory time, ``item:<id>`` -> ``location:position``);
    ``kinds``: what some client writes back (the others are not even looked for)."""
    result = Plan()
    wanted = set(kinds)
    if Kind.PARCEL_EMPTIED in wanted:
        _emptied(result, reads, beamline, tracker, previous, history, resolve, marks)
    if Kind.ITEM_MOVED in wanted:
        _moved(result, reads, beamline, tracker, list(items), marks)
    return result


def _parcel(sample: Sample | None) -> tuple[str, str | None] | None:
    return None if sample is None or not sample.parcel_id else (sample.parcel_id, sample.parcel_name)


def _emptied(
    result: Plan,
    reads: PuckReads,
    beamline: str,
    tracker: str,
    previous: Mapping[str, Any] | None,
    history: Iterable[Event],
    resolve: Callable[[str], Sample | None],
    marks: Mapping[str, str],
) -> None:
    here: dict[str, tuple[str | None, datetime]] = {}  # parcel -> (name, when last seen here)

    def seen(sample: Sample | None, when: datetime) -> None:
        parcel = _parcel(sample)
        if parcel is not None and (parcel[0] not in here or here[parcel[0]][1] < when):
            here[parcel[0]] = (parcel[1], when)

    if previous is not None:
        when = datetime.fromisoformat(previous["finished_at"])
        for read in previous.get("reads", []):
            code = read.get("listed") if read.get("on_goniometer") else read.get("code")
            if code:
                seen(resolve(code), when)
    for event in history:
        if (
            event.type is EventType.MOUNTED
            and event.status is Status.SUCCESS
            and event.sample.changer_name == reads.changer
        ):
            seen(event.sample, event.occurred_at)
    now: set[str] = set()
    for read in reads.reads:
        code = read.listed if read.on_goniometer else read.code
        parcel = _parcel(resolve(code)) if code else None
        if parcel is not None:
            now.add(parcel[0])
    gone = {
        parcel: (name, when)
        for parcel, (name, when) in here.items()
        if parcel not in now and not _marked_after(marks.get(f"parcel:{parcel}"), when)
    }
    if not gone:
        return
    unread = [r.address for r in reads.reads if r.no_read]
    if unread:
        names = ", ".join(name or parcel for parcel, (name, _) in sorted(gone.items()))
        result.notes.append(
            f"parcel(s) {names}: none of their samples read, but not reported emptied: "
            f"{len(unread)} pin(s) gave no code ({', '.join(unread[:4])}{'...' if len(unread) > 4 else ''})"
        )
        return
    for parcel, (name, _) in sorted(gone.items()):
        result.records.append(
            WriteBack(
                Kind.PARCEL_EMPTIED,
                beamline,
                tracker,
                reads.changer,
                reads.finished_at,
                parcel,
                name,
                detail="none of its samples read in the changer's pucks",
            )
        )
        result.marks[f"parcel:{parcel}"] = reads.finished_at.isoformat()
        result.notes.append(f"parcel {name or parcel}: none of its samples left: queued as emptied")


def _marked_after(mark: str | None, when: datetime) -> bool:
    return mark is not None and datetime.fromisoformat(mark) >= when


def _moved(
    result: Plan,
    reads: PuckReads,
    beamline: str,
    tracker: str,
    sources: list[ItemSource],
    marks: Mapping[str, str],
) -> None:
    if not sources:
        return
    counts: dict[str, int] = {}
    for read in reads.reads:
        if read.code and not read.on_goniometer:
            counts[read.code] = counts.get(read.code, 0) + 1
    for read in reads.reads:
        address = parse_address(read.address)
        if not read.code or read.on_goniometer or counts[read.code] > 1 or address is None:
            continue
        item = next((found for s in sources if (found := s.item_of(read.code)) is not None), None)
        if item is None or not item.get("item_id") or not item.get("parcel_id"):
            continue
        declared = Place(_number(item.get("changer_location")), item.get("container_position"))
        if declared.location is None or _number(declared.position) is None:
            continue  # the item declares no place: nothing to correct
        found = Place(address[0], str(address[1]))
        if (declared.location, _number(declared.position)) == (found.location, address[1]):
            continue
        mark = f"{found.location}:{found.position}"
        if marks.get(f"item:{item['item_id']}") == mark:
            continue  # queued before (the registry's cache may not show the correction yet)
        result.records.append(
            WriteBack(
                Kind.ITEM_MOVED,
                beamline,
                tracker,
                reads.changer,
                reads.finished_at,
                str(item["parcel_id"]),
                item.get("parcel_name"),
                investigation_id=item.get("investigation_id"),
                item_id=str(item["item_id"]),
                item_name=item.get("item_name"),
                barcode=read.code,
                declared=declared,
                found=found,
                detail=f"read at {read.address}",
            )
        )
        result.marks[f"item:{item['item_id']}"] = mark
        result.notes.append(
            f"{item.get('item_name') or read.code} read at {read.address}, ICAT+ declares "
            f"{declared.text()}: correction queued"
        )


def marks_key(tracker: str) -> str:
    return f"sampletrack:{tracker}:writeback:marks"


def keep(
    inventory: Inventory,
    inventories: InventoryLog,
    *,
    outbox: RedisStreamOutbox,
    kinds: Iterable[Kind],
    beamline: str,
    history: Iterable[Event],
    resolve: Callable[[str], Sample | None],
    registries: Iterable[Any],
) -> Inventory:
    """Keep ``inventory`` (its log in Redis) with the write-backs it finds for the clients that
    write ``kinds`` back, in one transaction; returns it with what was queued, or why not."""
    wanted = frozenset(kinds)
    if not wanted:
        inventories.save(inventory.to_dict())
        return inventory
    redis = outbox.redis
    key = marks_key(inventory.tracker)
    marks = {_text(k): _text(v) for k, v in (redis.hgetall(key) or {}).items()}
    found = plan(
        inventory.reads,
        beamline=beamline,
        tracker=inventory.tracker,
        previous=inventories.last(),
        history=history,
        resolve=resolve,
        items=[r for r in registries if isinstance(r, ItemSource)],
        marks=marks,
        kinds=wanted,
    )
    notes = found.notes or ["nothing to write back"]
    kept = replace(inventory, writeback=notes)

    def queue(pipeline: Any) -> None:
        outbox.add(pipeline, found.records)  # type: ignore[arg-type]
        if found.marks:
            pipeline.hset(key, mapping=found.marks)

    inventories.save(kept.to_dict(), also=queue)
    for record in found.records:
        log.info("tracker %r: write-back queued: %s %s", inventory.tracker, record.kind, record.label)
    return kept


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
