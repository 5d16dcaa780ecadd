"""The durable outbox: a Redis stream of contract events per beamline, read by delivery clients.

Layout (``base`` = ``sampletrack:outbox:<beamline>``):

- ``<base>``: a Redis STREAM; each entry has one field ``event`` (the contract event's JSON). The
  tracker appends with XADD inside the same MULTI/EXEC as its state change, so an event exists
  exactly when the change does; stream IDs give the delivery order.
- ``<base>:cursor:<client>``: the last stream ID that client has finished with (delivered or
  dead-lettered). Each client has its own cursor: fan-out to several services, each with its
  own progress.
- ``<base>:dead:<client>``: a list of dead letters, JSON ``{"entry", "event", "answer", "at"}``.
- ``<base>:last_error:<client>``: the client's last delivery error (text), cleared on success.
- ``<base>:clients``: the set of clients ever registered; entries every one of them has finished
  with are trimmed from the stream.
- ``<base>:lock:<client>`` (and ``...:fence``): the lease of the deliverer that may move that
  client's cursor (lease.py). A deliverer passes its lease to :meth:`RedisStreamOutbox.finish`,
  ``dead_letter`` and ``set_error``, which then write only while the lease is still its own.

The same class holds the beamline's *write-back* outbox (``sampletrack:writeback:<beamline>``,
writeback.py): ``key`` and ``record`` (the type of what the ``event`` field holds: an
:class:`~bliss_sampletrack.core.Event`, or a write-back record) are its parameters.

Durability relies on the beacon Redis' persistence: with BLISS's default RDB snapshots
(``save 900 1`` ...), a Redis crash can lose the changes of the last minutes (state, history and
outbox alike, consistently). With ``appendonly yes`` and ``appendfsync everysec`` it loses at most
about one second; ``appendfsync always`` loses nothing that was acknowledged. A lost outbox entry
is lost together with the state change it recorded (one transaction), never one without the other.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bliss_sampletrack.core import Event
from bliss_sampletrack.errors import DeliveryLeaseLost, SampleTrackError

log = logging.getLogger(__name__)

START = "0-0"

# the fenced cursor writes: KEYS[1] is the deliverer's lease, ARGV[1] the value it holds
# (lease.py); anything else in Redis means another deliverer took over: write nothing
_FINISH = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
redis.call('del', KEYS[3])
return 1
"""
_DEAD_LETTER = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('rpush', KEYS[2], ARGV[2])
redis.call('set', KEYS[3], ARGV[3])
return 1
"""
_SET_ERROR = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
return 1
"""


class Record(Protocol):
    """What an outbox entry holds: an Event, or a write-back record (anything with these)."""

    @property
    def event_id(self) -> Any: ...

    def to_json(self) -> str: ...


class RecordType(Protocol):
    def from_dict(self, data: Any, *, trusted: bool = False) -> Any: ...


class Fence(Protocol):
    """What a fenced write needs of a lease (:class:`~bliss_sampletrack.delivery.lease.DeliveryLease`)."""

    key: str
    value: str | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One outbox entry: its stream ID and the event (None, with ``error``, when unreadable)."""

    id: str
    event: Any  # an Event (or the outbox's record type); None when unreadable
    raw: bytes = b""
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event set aside with the service's answer. ``event`` is None when the outbox entry was
    unreadable; ``payload`` is what was stored either way."""

    entry: str
    event: Any  # an Event (or the outbox's record type), None when unreadable
    answer: str
    at: str
    payload: Any = None

    @classmethod
    def from_record(cls, raw: bytes | str, kind: RecordType = Event) -> DeadLetter:
        record = json.loads(raw)
        payload = record["event"]
        try:
            event = kind.from_dict(payload) if isinstance(payload, dict) else None
        except (SampleTrackError, ValueError, KeyError, TypeError):  # kept as its payload, unreadable
            event = None
        return cls(record["entry"], event, record["answer"], record["at"], payload)

    def to_record(self) -> str:
        return json.dumps({"entry": self.entry, "event": self.payload, "answer": self.answer, "at": self.at})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamOutbox:
    """The outbox of one beamline. ``redis`` is any redis-py client (the beacon's, or fakeredis)."""

    def __init__(
        self, redis: Any, beamline: str, *, key: str | None = None, record: RecordType = Event
    ) -> None:
        self.redis = redis
        self.beamline = beamline
        self.key = key or f"sampletrack:outbox:{beamline}"
        self.record = record

    # -- writing (the tracker) ---------------------------------------------------------------------
    def add(self, pipeline: Any, events: list[Record]) -> None:
        """Queue ``events`` in the caller's MULTI/EXEC ``pipeline`` (the tracker's state change)."""
        for event in events:
            pipeline.xadd(self.key, {"event": event.to_json()})

    # -- reading (the deliverers) ------------------------------------------------------------------
    def register(self, client: str) -> None:
        """Make ``client`` a reader of this outbox. A new client starts at the oldest entry still
        in the stream: events recorded before any client existed are delivered too (nothing is
        trimmed while no client is registered)."""
        self.redis.sadd(f"{self.key}:clients", client)

    def clients(self) -> list[str]:
        return sorted(_text(c) for c in self.redis.smembers(f"{self.key}:clients"))

    def cursor(self, client: str) -> str:
        value = self.redis.get(self._cursor_key(client))
        return START if value is None else _text(value)

    def next_entries(self, client: str, count: int) -> list[Entry]:
        """Up to ``count`` entries after the client's cursor, oldest first."""
        raw = self.redis.xrange(self.key, min=f"({self.cursor(client)}", max="+", count=count)
        return [self._entry(_text(entry_id), fields) for entry_id, fields in raw]

    def _entry(self, entry_id: str, fields: dict[bytes, bytes]) -> Entry:
        raw = fields.get(b"event", b"")
        try:
            # written by this package from a valid Event: parsed without re-checking the contract
            return Entry(entry_id, self.record.from_dict(json.loads(raw), trusted=True), raw)
        except (ValueError, KeyError, TypeError) as exc:
            return Entry(
                entry_id, None, raw, f"unreadable outbox entry {entry_id}: {type(exc).__name__}: {exc}"
            )

    def wait(self, client: str, timeout: float) -> bool:
        """Block (cooperatively under gevent) until an entry after the cursor exists, or timeout."""
        answer = self.redis.xread({self.key: self.cursor(client)}, count=1, block=max(1, int(timeout * 1000)))
        return bool(answer)

    def finish(self, client: str, entry_id: str, lease: Fence | None = None) -> None:
        """The client is done with every entry up to ``entry_id`` (delivered or dead-lettered).

        With ``lease``: only while that lease is still held (else :class:`DeliveryLeaseLost`)."""
        if lease is not None:
            keys = [self._cursor_key(client), f"{self.key}:last_error:{client}"]
            self._fenced(lease, _FINISH, keys, [entry_id], f"move {client!r}'s cursor to {entry_id}")
            return
        self.redis.set(self._cursor_key(client), entry_id)
        self.redis.delete(f"{self.key}:last_error:{client}")

    def dead_letter(self, client: str, entry: Entry, answer: str, lease: Fence | None = None) -> None:
        """Set an event aside with the service's answer, and move past it (one transaction).

        An unreadable entry (``entry.event`` None) is kept as its raw text, for a human to look at.
        With ``lease``: only while that lease is still held (else :class:`DeliveryLeaseLost`)."""
        payload = (
            json.loads(entry.event.to_json())
            if entry.event is not None
            else entry.raw.decode("utf-8", "replace")
        )
        record = {"entry": entry.id, "event": payload, "answer": answer, "at": datetime.now(UTC).isoformat()}
        if lease is not None:
            keys = [f"{self.key}:dead:{client}", self._cursor_key(client)]
            self._fenced(lease, _DEAD_LETTER, keys, [json.dumps(record), entry.id], f"dead-letter {entry.id}")
        else:
            pipeline = self.redis.pipeline(transaction=True)
            pipeline.rpush(f"{self.key}:dead:{client}", json.dumps(record))
            pipeline.set(self._cursor_key(client), entry.id)
            pipeline.execute()
        log.error(
            "outbox %s: %s dead-lettered for %r: %s",
            self.beamline,
            f"event {entry.event.event_id}" if entry.event is not None else f"unreadable entry {entry.id}",
            client,
            answer,
        )

    def set_error(self, client: str, message: str, lease: Fence | None = None) -> None:
        if lease is not None:
            keys = [f"{self.key}:last_error:{client}"]
            self._fenced(lease, _SET_ERROR, keys, [message], f"record {client!r}'s last error")
            return
        self.redis.set(f"{self.key}:last_error:{client}", message)

    def _fenced(self, lease: Fence, script: str, keys: list[str], args: list[str], what: str) -> None:
        """Run ``script`` (KEYS[1] = the lease, ARGV[1] = its value) only while ``lease`` holds."""
        value = lease.value
        if value is None or not self.redis.eval(script, 1 + len(keys), lease.key, *keys, value, *args):
            holder = self.redis.get(lease.key)
            raise DeliveryLeaseLost(
                f"outbox {self.beamline}: refused to {what}: the lease {lease.key!r} is now held by "
                f"{_text(holder) if holder is not None else 'nobody'}, not by {value or 'this deliverer'}"
            )

    def last_error(self, client: str) -> str | None:
        value = self.redis.get(f"{self.key}:last_error:{client}")
        return None if value is None else _text(value)

    def dead_letters(self, client: str) -> list[DeadLetter]:
        raw = self.redis.lrange(f"{self.key}:dead:{client}", 0, -1)
        return [DeadLetter.from_record(item, self.record) for item in raw]

    def take_dead_letters(self, client: str) -> list[DeadLetter]:
        """Remove and return the client's dead letters (to retry them after a fix)."""
        pipeline = self.redis.pipeline(transaction=True)
        pipeline.lrange(f"{self.key}:dead:{client}", 0, -1)
        pipeline.delete(f"{self.key}:dead:{client}")
        raw, _ = pipeline.execute()
        return [DeadLetter.from_record(item, self.record) for item in raw]

    def return_dead_letters(self, client: str, letters: list[DeadLetter]) -> None:
        if letters:
            self.redis.rpush(f"{self.key}:dead:{client}", *(letter.to_record() for letter in letters))

    # -- status ------------------------------------------------------------------------------------
    def pending(self, client: str | None = None) -> int:
        """Entries the client (default: the slowest client, or all entries if none) has not finished."""
        cursor = self.cursor(client) if client else self._min_cursor()
        return len(self.redis.xrange(self.key, min=f"({cursor}", max="+"))

    def oldest_pending_age(self, client: str | None = None) -> float | None:
        """Seconds since the oldest unfinished entry was added, or None when nothing is pending."""
        cursor = self.cursor(client) if client else self._min_cursor()
        first = self.redis.xrange(self.key, min=f"({cursor}", max="+", count=1)
        if not first:
            return None
        return max(0.0, time.time() - _id_key(_text(first[0][0]))[0] / 1000.0)

    def peek(self, count: int = 100) -> list[Any]:
        """The first ``count`` events still in the stream, oldest first (whatever their delivery)."""
        entries = self.redis.xrange(self.key, count=count)
        return [self.record.from_dict(json.loads(fields[b"event"])) for _, fields in entries]

    def pending_before(self, client: str, entry_id: str) -> int:
        """Entries not newer than ``entry_id`` (a stream ID, of this stream or another of the same
        Redis: IDs are its clock) that ``client`` has not finished, at most one counted.

        Inclusive: each stream numbers its own IDs, so an entry of another stream added in the same
        millisecond (even before, in one transaction) has the very same ID: it counts as before."""
        return len(self.redis.xrange(self.key, min=f"({self.cursor(client)}", max=entry_id, count=1))

    def trim(self) -> None:
        """Drop entries every registered client has finished with."""
        clients = self.clients()
        if clients:
            self.redis.xtrim(self.key, minid=self._min_cursor(), approximate=False)

    def _min_cursor(self) -> str:
        clients = self.clients()
        if not clients:
            return START
        return min((self.cursor(c) for c in clients), key=_id_key)

    def _cursor_key(self, client: str) -> str:
        return f"{self.key}:cursor:{client}"
