"""Persistence of a tracker in Redis: its snapshot, a bounded history, the outbox hand-off, and
the owner key that keeps a tracker to one writing BLISS session.

One Redis transaction (MULTI/EXEC) writes the new snapshot, appends the events to the history
(trimmed to ``history_size``) and hands them to the outbox
(:class:`~bliss_sampletrack.delivery.outbox.RedisStreamOutbox`). So after a crash the three agree:
either the change and its events are all recorded, or none of it is.

A tracker's commit is also conditional (WATCH on the owner key and the state key): it is applied
only while this process holds the owner key and while the state in Redis is still the one the
change was computed from. A session paused past its lease, or a second session by mistake,
cannot overwrite what the owner wrote. A commit that would write the very state Redis holds, with
no event, writes nothing (it only reads both keys to check them).

What a crash costs (the tracker writes nothing else that must agree with these keys):

- BLISS session killed (kill -9, host crash) before EXEC: the change is not recorded at all (no
  state, no history entry, no outbox event); after EXEC: all of it is. The restarted tracker
  restores exactly the last committed snapshot; there is no half-written state to repair. A
  change that was done on the beamline but not yet committed must be recorded again by hand (or
  by the changer/reader) after the restart. The ESRF data-policy dataset fields are set after the
  commit: a crash in between leaves the change recorded but the dataset fields of the old sample
  until the next change.
- redis-server killed (kill -9, OOM killer) with ``appendonly yes`` / ``appendfsync everysec``:
  nothing acknowledged is lost (Redis writes the AOF before it answers), except, when the disk was
  so slow that the previous background fsync was still running, up to 2 s of transactions.
- Host crash or power cut with ``appendfsync everysec``: the last second of transactions (2 s in
  the worst case) may be lost; with ``appendfsync always``: nothing acknowledged. Whole
  transactions only: Redis discards an incomplete MULTI/EXEC at the end of the AOF when it loads
  it, so state, history and outbox are lost together, never one without the others.
- Without AOF (BLISS's default RDB snapshots ``save 900 1`` ...), the last minutes of changes.

Keys (``prefix`` is ``sampletrack:<tracker name>``): ``<prefix>:state`` (JSON snapshot),
``<prefix>:history`` (list of contract events, newest first), ``<prefix>:owner`` (JSON holder,
with a TTL). In a BLISS session the client is the beacon's Redis
(``bliss.config.conductor.client.get_redis_proxy()``), where BLISS keeps its own settings; unit
tests use fakeredis.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from redis.exceptions import WatchError

from bliss_sampletrack.core import Event
from bliss_sampletrack.errors import OwnershipLostError, SampleTrackError, StaleStateError, TrackerOwnedError
from bliss_sampletrack.tracker.state import Snapshot

log = logging.getLogger(__name__)

#: seconds an owner key lives without renewal: how long a killed session blocks the next one
OWNER_TTL_S = 10.0
#: attempts at a WATCHed transaction whose keys keep changing (e.g. the owner's own renewal)
WATCH_ATTEMPTS = 8
#: one random token per process: every tracker object of this process shares the ownership
PROCESS_TOKEN: Final = secrets.token_hex(8)


class OutboxSeam(Protocol):
    """Where events go to be delivered (made durable and delivered by the delivery part)."""

    def add(self, pipeline: Any, events: list[Event]) -> None:
        """Queue ``events`` within the caller's Redis transaction ``pipeline``."""
        ...

    def pending(self) -> int: ...


def _text(value: Any) -> str | None:
    return None if value is None else value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who owns a tracker: stored as JSON in the owner key."""

    session: str
    host: str
    pid: int
    token: str
    since: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_raw(cls, raw: Any) -> Holder:
        text = _text(raw) or ""
        try:
            data = json.loads(text)
            return cls(
                str(data["session"]),
                str(data["host"]),
                int(data["pid"]),
                str(data["token"]),
                str(data["since"]),
            )
        except (ValueError, KeyError, TypeError):
            # written by someone else than this package: an owner all the same, never ours
            return cls(f"<unreadable owner {text[:60]!r}>", "?", 0, "", "")

    def describe(self) -> str:
        return f"session {self.session!r} on host {self.host} (pid {self.pid}, since {self.since})"


class TrackerLease:
    """The owner key of one tracker: taken with SET NX and a TTL, renewed, released, taken over.

    Every tracker object of one process presents the same token (:data:`PROCESS_TOKEN`), so a
    process re-takes its own key; another process gets :class:`TrackerOwnedError`."""

    def __init__(self, redis: Any, tracker: str, session: str, ttl: int | float = OWNER_TTL_S) -> None:
        if ttl <= 0:
            raise ValueError(f"owner TTL must be > 0 s, got {ttl!r}")
        self.redis = redis
        self.tracker = tracker
        self.key = f"sampletrack:{tracker}:owner"
        self.ttl = ttl
        self.holder = Holder(
            session, socket.gethostname(), os.getpid(), PROCESS_TOKEN, datetime.now(UTC).isoformat()
        )

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def mine(self, raw: Any) -> bool:
        return raw is not None and Holder.from_raw(raw).token == self.holder.token

    def current(self) -> Holder | None:
        raw = self.redis.get(self.key)
        return None if raw is None else Holder.from_raw(raw)

    def _value(self) -> str:
        """The key's value: this holder, since now."""
        return replace(self.holder, since=datetime.now(UTC).isoformat(timespec="seconds")).to_json()

    def owned_error(self, other: Holder) -> TrackerOwnedError:
        return TrackerOwnedError(
            f"tracker {self.tracker!r} is owned by {other.describe()}: only one BLISS session may "
            f"record its mounts. Close the tracker (or that session) there; if that session is known "
            f"to be dead, wait {self.ttl:g} s for its claim (Redis key {self.key!r}) to expire, or "
            f"call {self.tracker}.take_over() here",
            holder=other.describe(),
        )

    def check(self, raw: Any) -> None:
        """Raise unless ``raw`` (the owner key's value) is this process: for a WATCHed commit."""
        if raw is None:
            raise OwnershipLostError(f"owner key {self.key!r} of tracker {self.tracker!r} is gone")
        if not self.mine(raw):
            raise self.owned_error(Holder.from_raw(raw))

    def acquire(self) -> bool:
        """Take the key if free (True), or renew it if this process holds it (False); raise
        :class:`TrackerOwnedError` if another holds it."""
        for _ in range(WATCH_ATTEMPTS):
            if self.redis.set(self.key, self._value(), nx=True, px=self._ttl_ms):
                log.info("tracker %r: this session now owns it (%s)", self.tracker, self.key)
                return True
            raw = self.redis.get(self.key)
            if raw is None:
                continue  # expired between SET NX and GET: try again
            if not self.mine(raw):
                raise self.owned_error(Holder.from_raw(raw))
            if self.renew():
                return False
        raise SampleTrackError(
            f"tracker {self.tracker!r}: the owner key {self.key!r} changed {WATCH_ATTEMPTS} times "
            "while taking it; another session is fighting for it: close the other session"
        )

    def _if_mine(self, action: str) -> bool:
        """PEXPIRE ("renew") or DEL ("release") the key if this process holds it, atomically."""
        for _ in range(WATCH_ATTEMPTS):
            pipe = self.redis.pipeline(transaction=True)
            try:
                pipe.watch(self.key)
                if not self.mine(pipe.get(self.key)):
                    return False
                pipe.multi()
                if action == "renew":
                    pipe.pexpire(self.key, self._ttl_ms)
                else:
                    pipe.delete(self.key)
                pipe.execute()
                return True
            except WatchError:
                continue
            finally:
                pipe.reset()
        return False

    def renew(self) -> bool:
        """Extend the TTL if this process still holds the key; False when it lost it."""
        return self._if_mine("renew")

    def release(self) -> bool:
        """Delete the key if this process holds it (never another's)."""
        return self._if_mine("release")

    def take_over(self) -> Holder | None:
        """Make this process the owner whoever holds the key; returns the previous holder."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.key)
        pipe.set(self.key, self._value(), px=self._ttl_ms)
        previous, _ = pipe.execute()
        return None if previous is None else Holder.from_raw(previous)


class RedisTrackerStore:
    def __init__(self, redis: Any, tracker: str, outbox: OutboxSeam, history_size: int = 1000) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {history_size}")
        self.redis = redis
        self.prefix = f"sampletrack:{tracker}"
        self.outbox = outbox
        self.history_size = history_size

    @property
    def state_key(self) -> str:
        return f"{self.prefix}:state"

    @property
    def history_key(self) -> str:
        return f"{self.prefix}:history"

    def load(self) -> Snapshot | None:
        """The persisted snapshot, or None when this tracker has never recorded one."""
        return self.read()[1]

    def read(self) -> tuple[str | None, Snapshot | None]:
        """The state key's text (what :meth:`commit` expects next) and its snapshot."""
        raw = _text(self.redis.get(self.state_key))
        if raw is None:
            return None, None
        try:
            return raw, Snapshot.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            # never guess: the caller starts UNKNOWN and says why
            raise SampleTrackError(
                f"the persisted state in Redis key {self.state_key!r} is unreadable ({exc}); "
                "the tracker starts UNKNOWN: mount or unmount to set it"
            ) from exc

    def commit(
        self,
        snapshot: Snapshot,
        events: list[Event],
        *,
        lease: TrackerLease | None = None,
        expect: str | None = None,
        check_state: bool = False,
    ) -> str:
        """Atomically persist ``snapshot``, append ``events`` to the history and the outbox.

        With ``lease``, only while this process holds the owner key (else
        :class:`TrackerOwnedError` or :class:`OwnershipLostError`); with ``check_state``, only
        while the state key's text is ``expect`` (else :class:`StaleStateError`). Returns the
        state text written.

        A change that is no change (no event, and the very text ``expect`` already holds: a
        reader in continuous mode reading the same code again) writes nothing: the same checks
        are made by reading the two keys (one MGET), without a transaction."""
        data = json.dumps(snapshot.to_dict())
        if check_state and not events and data == expect:
            return self._unchanged(data, lease)
        watched = ([lease.key] if lease is not None else []) + ([self.state_key] if check_state else [])
        for _ in range(WATCH_ATTEMPTS):
            pipe = self.redis.pipeline(transaction=True)
            try:
                if watched:
                    pipe.watch(*watched)
                    if lease is not None:
                        lease.check(pipe.get(lease.key))
                    if check_state:
                        current = _text(pipe.get(self.state_key))
                        if current != expect:
                            raise StaleStateError(
                                f"the state in Redis key {self.state_key!r} changed under this tracker"
                            )
                    pipe.multi()
                pipe.set(self.state_key, data)
                if events:
                    pipe.lpush(self.history_key, *(event.to_json() for event in events))
                    pipe.ltrim(self.history_key, 0, self.history_size - 1)
                    self.outbox.add(pipe, events)
                pipe.execute()
                return data
            except WatchError:
                continue  # a watched key changed before EXEC: nothing written, check again
            finally:
                pipe.reset()
        raise SampleTrackError(
            f"tracker state {self.state_key!r}: its keys changed {WATCH_ATTEMPTS} times in a row while "
            "committing; nothing was recorded: another session writes this tracker, close it"
        )

    def _unchanged(self, data: str, lease: TrackerLease | None) -> str:
        """Check, without writing, that Redis still holds ``data`` (and the owner key is ours)."""
        current, *owner = self.redis.mget([self.state_key, *([lease.key] if lease is not None else [])])
        if lease is not None:
            lease.check(owner[0])
        if _text(current) != data:
            raise StaleStateError(f"the state in Redis key {self.state_key!r} changed under this tracker")
        return data

    def history(self, count: int = 20, *, trusted: bool = False) -> list[Event]:
        """The last ``count`` events, newest first. ``trusted``: parsed without the contract check
        (0.15 ms an event: the whole history of 1000 would hold the hub for 150 ms), for this
        package's own records read in bulk (the inventory's write-backs)."""
        raw = self.redis.lrange(self.history_key, 0, count - 1)
        if trusted:
            return [Event.from_dict(json.loads(item), trusted=True) for item in raw]
        return [Event.from_json(item) for item in raw]
