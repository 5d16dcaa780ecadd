"""Persistence of a tracker in Redis: its snapshot, a bounded history, and the outbox hand-off.

One Redis transaction (MULTI/EXEC) writes the new snapshot, appends the events to the history
(trimmed to ``history_size``) and hands them to the outbox
(:class:`~bliss_sampletrack.delivery.outbox.RedisStreamOutbox`). So after a crash the three agree:
either the change and its events are all recorded, or none of it is.

Keys (``prefix`` is ``sampletrack:<tracker name>``): ``<prefix>:state`` (JSON snapshot),
``<prefix>:history`` (list of contract events, newest first). In a BLISS session the client is
the beacon's Redis (``bliss.config.conductor.client.get_redis_proxy()``), where BLISS keeps its
own settings; unit tests use fakeredis.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from bliss_sampletrack.core import Event
from bliss_sampletrack.errors import SampleTrackError
from bliss_sampletrack.tracker.state import Snapshot

log = logging.getLogger(__name__)


class OutboxSeam(Protocol):
    """Where events go to be delivered (made durable and delivered by the delivery part)."""

    def add(self, pipeline: Any, events: list[Event]) -> None:
        """Queue ``events`` within the caller's Redis transaction ``pipeline``."""
        ...

    def pending(self) -> int: ...


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
        raw = self.redis.get(self.state_key)
        if raw is None:
            return None
        try:
            return Snapshot.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            # never guess: the caller starts UNKNOWN and says why
            raise SampleTrackError(
                f"the persisted state in Redis key {self.state_key!r} is unreadable ({exc}); "
                "the tracker starts UNKNOWN: mount or unmount to set it"
            ) from exc

    def commit(self, snapshot: Snapshot, events: list[Event]) -> None:
        """Atomically persist ``snapshot``, append ``events`` to the history and the outbox."""
        pipeline = self.redis.pipeline(transaction=True)
        pipeline.set(self.state_key, json.dumps(snapshot.to_dict()))
        if events:
            pipeline.lpush(self.history_key, *(event.to_json() for event in events))
            pipeline.ltrim(self.history_key, 0, self.history_size - 1)
            self.outbox.add(pipeline, events)
        pipeline.execute()

    def history(self, count: int = 20) -> list[Event]:
        """The last ``count`` events, newest first."""
        return [Event.from_json(raw) for raw in self.redis.lrange(self.history_key, 0, count - 1)]
