"""One sample's story (``tracker.where("LYS-0042")``): every mount and unmount of it that the
tracker's history keeps, with source, changer position, status and who; the scans taken while it
was mounted; and where each event stands with each delivery client.

Sources of truth, all in the beacon Redis: the tracker's history (the events, newest first,
``history_size`` of them), the scan log (:mod:`~bliss_sampletrack.tracker.views.scanlog`) and the
outbox (each client's cursor, its pending entries, its dead letters). Nothing is taken from the
tracker object's memory, so another session's tracker tells the same story.

Matching: the text is compared with each event's barcode and sample name, exactly; when nothing
matches exactly, ignoring case. The view says which rule matched, so a scientist who typed
``lys-0001`` learns that the barcode is ``LYS-0001``.

A "read" has no event of its own: a mount recorded from a barcode read has source
``barcode_reader`` (the same code read again is no new mount, see ``tracker/state.py``).

Delivery states, per client:

- ``waiting``: in the outbox after the client's cursor (not yet accepted by its service);
- ``delivered``: at or before the cursor (accepted), or no longer in the outbox (trimmed once
  every client had finished with it);
- ``dead letter``: the service refused it; its answer is shown
  (``tracker.retry_dead_letters()`` after a fix);
- ``not checked``: more than :data:`PENDING_READ_LIMIT` events wait for that client, and this
  one is not among the first that many (the view reads no further).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import StrEnum
from typing import Any, Protocol

from bliss_sampletrack.core import Event, EventType
from bliss_sampletrack.tracker.views.scanlog import ScanLog, ScanRecord
from bliss_sampletrack.tracker.views.text import Row, local_time, table

log = logging.getLogger(__name__)

#: the most pending entries read per client to tell "waiting" from "delivered"
PENDING_READ_LIMIT = 100_000


class DeliveryState(StrEnum):
    WAITING = "waiting"
    DELIVERED = "delivered"
    DEAD = "dead letter"
    UNCHECKED = "not checked"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one event stands with one client; ``answer``: a dead letter's answer."""

    client: str
    state: DeliveryState
    answer: str = ""

    def text(self) -> str:
        return f"{self.client} {self.state}" + (f" ({self.answer})" if self.answer else "")


@dataclass(frozen=True, slots=True)
class Chapter:
    """One event of the story, its deliveries and, for a mount, the scans taken meanwhile."""

    event: Event
    deliveries: tuple[Delivery, ...] = ()
    scans: tuple[ScanRecord, ...] = ()
    current: bool = False  # the mount the tracker holds now


@dataclass(frozen=True, slots=True)
class Story:
    tracker: str
    query: str
    matched: str  # how the query matched ("" when nothing did)
    chapters: tuple[Chapter, ...]  # oldest first
    searched: int  # events searched (what the history keeps)
    history_size: int
    clients: tuple[str, ...]
    scans_per_mount: int
    registry: str | None = None  # an unmatched query: what the registries say of it
    notes: tuple[str, ...] = field(default=())  # e.g. a scan log that could not be read


# -- gathering -------------------------------------------------------------------------------------
def read_history(redis: Any, key: str) -> list[Event]:
    """The tracker's whole history (``key``: the store's list), newest first, for a view.

    Parsed as trusted: the store wrote each entry from a valid Event (the contract is checked
    when an Event is made), and re-checking it costs ten times as much (about 0.3 s per 1000
    events against 0.03 s), at every ``where`` and every changer ``__info__``. An entry that
    cannot be read is left out and logged."""
    events = []
    for raw in redis.lrange(key, 0, -1):
        try:
            events.append(Event.from_dict(json.loads(raw), trusted=True))
        except (ValueError, KeyError, TypeError) as exc:  # not written by this package: skipped, said
            log.warning("history %s: unreadable entry %.80r left out of the view: %s", key, raw, exc)
    return events


class OutboxReading(Protocol):
    """What the view reads of the outbox (``delivery.outbox.RedisStreamOutbox``)."""

    def pending(self, client: str | None = None) -> int: ...

    def next_entries(self, client: str, count: int) -> list[Any]: ...

    def dead_letters(self, client: str) -> list[Any]: ...


def match_events(events: Sequence[Event], query: str) -> tuple[list[Event], str]:
    """The events whose barcode or sample name is ``query`` (exactly; else ignoring case), in
    their order, and how they matched (``""``: none did)."""
    text = query.strip()
    for fold, how in ((lambda s: s, "exactly"), (str.casefold, "ignoring case")):
        key = fold(text)
        by_code = [e for e in events if e.sample.barcode is not None and fold(e.sample.barcode) == key]
        by_name = [e for e in events if e.sample.name is not None and fold(e.sample.name) == key]
        if not by_code and not by_name:
            continue
        wanted = {id(e) for e in by_code + by_name}
        what = "barcode or name" if by_code and by_name else "barcode" if by_code else "sample name"
        return [e for e in events if id(e) in wanted], f"{what} {text!r}, {how}"
    return [], ""


def _dead_letter_id(letter: Any) -> uuid.UUID | None:
    if letter.event is not None:
        return letter.event.event_id
    payload = letter.payload
    if isinstance(payload, Mapping):  # an entry unreadable as an Event: its id may still be there
        try:
            return uuid.UUID(str(payload.get("event_id")))
        except ValueError:
            return None
    return None


def delivery_states(
    outbox: OutboxReading,
    clients: Sequence[str],
    event_ids: Iterable[uuid.UUID],
    limit: int = PENDING_READ_LIMIT,
) -> dict[uuid.UUID, tuple[Delivery, ...]]:
    """Each event's :class:`Delivery` per client, read from the outbox (see the module)."""
    wanted = list(event_ids)
    states: dict[uuid.UUID, list[Delivery]] = {event_id: [] for event_id in wanted}
    for client in clients:
        pending = outbox.pending(client)
        entries = outbox.next_entries(client, min(pending, limit)) if pending else []
        waiting = {entry.event.event_id for entry in entries if entry.event is not None}
        complete = pending <= limit
        dead: dict[uuid.UUID, str] = {}
        for letter in outbox.dead_letters(client):
            letter_id = _dead_letter_id(letter)
            if letter_id is not None:
                dead[letter_id] = letter.answer
        for event_id in wanted:
            if event_id in dead:
                states[event_id].append(Delivery(client, DeliveryState.DEAD, dead[event_id]))
            elif event_id in waiting:
                states[event_id].append(Delivery(client, DeliveryState.WAITING))
            elif complete:
                states[event_id].append(Delivery(client, DeliveryState.DELIVERED))
            else:
                states[event_id].append(Delivery(client, DeliveryState.UNCHECKED))
    return {event_id: tuple(found) for event_id, found in states.items()}


# -- rendering -------------------------------------------------------------------------------------
def _who(event: Event) -> str:
    who = f"{event.session}@{event.producer.host}"
    return f"{who} ({event.proposal})" if event.proposal else who


def _position(event: Event) -> str:
    where = " ".join(p for p in (event.sample.changer_name, event.sample.changer_position) if p)
    return where or "-"


def _scan_line(scan: ScanRecord, tz: tzinfo | None) -> str:
    number = f"#{scan.number}" if scan.number is not None else "#?"
    parts = [number, scan.title or scan.name or "(no title)"]
    if scan.started_at is not None:
        parts.append(f"at {local_time(scan.started_at, tz)}")
    if scan.filename:
        parts.append(f"file {scan.filename}")
    if scan.dataset:
        parts.append(f"dataset {scan.dataset}")
    if scan.state != "MOUNTED":  # the scan's own tag doubts its sample: say so, with why
        parts.append(f"[tagged {scan.state}" + (f": {scan.reason}]" if scan.reason else "]"))
    return "  ".join(parts)


def render_story(story: Story, *, tz: tzinfo | None = None, ansi: bool = False) -> str:
    """The story as text; ``tz``: the zone of the times (default: this machine's)."""
    kept = f"the last {story.searched} event(s) kept (history_size {story.history_size})"
    if not story.chapters:
        lines = [
            f"tracker {story.tracker!r}: nothing recorded for {story.query!r}: no event in {kept} "
            "has it as barcode or sample name (compared exactly, then ignoring case)"
        ]
        if story.registry:
            lines.append(f"  registry  : {story.registry}")
        lines.extend(f"  note      : {note}" for note in story.notes)
        return "\n".join(lines)
    labels = list(dict.fromkeys(c.event.sample.label for c in story.chapters))
    mounts = sum(1 for c in story.chapters if c.event.type is EventType.MOUNTED)
    lines = [f"tracker {story.tracker!r}: the story of {', '.join(labels)}"]
    lines.append(f"  matched   : {story.matched}, in {kept}")
    lines.append(f"  events    : {len(story.chapters)} ({mounts} mount(s)), oldest first")
    current = next((c for c in story.chapters if c.current), None)
    if current is not None:
        lines.append(f"  now       : mounted since {local_time(current.event.occurred_at, tz)} (marked >)")
    else:
        lines.append("  now       : not mounted")
    lines.append(
        "  delivery  : "
        + (", ".join(story.clients) if story.clients else "no client configured")
        + " (waiting: in the outbox; delivered: accepted by the service; dead letter: refused)"
    )
    lines.extend(f"  note      : {note}" for note in story.notes)
    several = len(labels) > 1
    headers = ["when", "event", "status", "source", "position", "who"] + (["sample"] if several else [])
    rows = []
    for chapter in story.chapters:
        e = chapter.event
        cells = [
            local_time(e.occurred_at, tz),
            str(e.type),
            str(e.status),
            str(e.source),
            _position(e),
            _who(e),
        ]
        rows.append(Row(cells + ([e.sample.label] if several else []), marked=chapter.current))
    table_lines = table(headers, rows, ansi=ansi)
    lines.append("")
    lines.append(table_lines[0])
    for chapter, line in zip(story.chapters, table_lines[1:], strict=True):
        lines.append(line)
        details = []
        if chapter.event.message:
            details.append(f"note: {chapter.event.message}")
        if chapter.deliveries:
            details.append("delivery: " + "; ".join(d.text() for d in chapter.deliveries))
        if chapter.event.type is EventType.MOUNTED:
            if chapter.scans:
                kept_all = (
                    ""
                    if len(chapter.scans) < story.scans_per_mount
                    else (f", only the last {story.scans_per_mount} are kept")
                )
                details.append(f"scans while mounted ({len(chapter.scans)}{kept_all}):")
                details.extend(f"  {_scan_line(scan, tz)}" for scan in chapter.scans)
            else:
                details.append("scans while mounted: none recorded")
        lines.extend(f"      {detail}" for detail in details)
    return "\n".join(lines)


def chapters(
    events: Sequence[Event],
    deliveries: Mapping[uuid.UUID, tuple[Delivery, ...]],
    scans: Mapping[str, Sequence[ScanRecord]],
    current_mount: uuid.UUID | None,
) -> tuple[Chapter, ...]:
    """The chapters of ``events`` (oldest first) from what was gathered for them."""
    return tuple(
        Chapter(
            e,
            deliveries.get(e.event_id, ()),
            tuple(scans.get(str(e.event_id), ())) if e.type is EventType.MOUNTED else (),
            current=e.type is EventType.MOUNTED and e.event_id == current_mount,
        )
        for e in events
    )


def gather_story(
    query: str,
    *,
    tracker: str,
    history: Sequence[Event],
    history_size: int,
    outbox: OutboxReading,
    clients: Sequence[str],
    scan_log: ScanLog,
    current_mount: uuid.UUID | None,
    registry_says: Callable[[str], str | None],
    scans_note: str | None = None,
) -> Story:
    """Read what the story needs: ``history`` is the tracker's history as the store gives it
    (newest first); ``scan_log`` a :class:`~bliss_sampletrack.tracker.views.scanlog.ScanLog`;
    ``registry_says(query)`` what the registries know of an unmatched query (text or None);
    ``scans_note``: why the scan lists may be incomplete (e.g. this session tags no scans)."""
    found, matched = match_events(list(reversed(history)), query)
    if not found:
        return Story(
            tracker,
            query,
            "",
            (),
            len(history),
            history_size,
            tuple(clients),
            scan_log.per_mount,
            registry=registry_says(query),
        )
    scan_log.flush()  # a scan that just started is listed
    mounts = [str(e.event_id) for e in found if e.type is EventType.MOUNTED]
    scans = scan_log.for_mounts(mounts)
    deliveries = delivery_states(outbox, clients, [e.event_id for e in found])
    notes: tuple[str, ...] = () if scans_note is None else (scans_note,)
    if scan_log.failures:
        notes += (
            f"{scan_log.failures} scan(s) of this session could not be added to the scan log "
            f"(last: {scan_log.last_failure}): they are missing here, not from the data",
        )
    return Story(
        tracker,
        query,
        matched,
        chapters(found, deliveries, scans, current_mount),
        len(history),
        history_size,
        tuple(clients),
        scan_log.per_mount,
        notes=notes,
    )
