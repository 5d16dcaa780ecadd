"""The scans taken during each mount, kept in Redis from the scan tag's path (``tracker.where``).

Nothing else records which scans ran while a sample was mounted: each scan carries its sample
(``scan_info["sample"]``), but nothing goes the other way, from a mount to its scans, and BLISS's
own scan records live in blissdata's Redis, which expires them. So at each scan's START, once its
tag is built, the tracker adds a small record (number, name, title, file, ESRF dataset, start
time, and the tag's state and reason: a doubtful scan says so) to the list of the mount the scan
was tagged with.

Keys: ``sampletrack:<tracker>:scans:<mount_event_id>``, a list of JSON records, newest first, at
most :data:`SCANS_PER_MOUNT` (the oldest are dropped: the view says so), expiring
:data:`SCANS_TTL_S` after the mount's last scan, so that keys do not pile up in the beacon Redis
over the years (the history keeps ``history_size`` events; their scans live as long).

Cost to a scan: building the record (dictionary reads) and spawning one greenlet. The write (one
pipelined LPUSH, LTRIM, EXPIRE) runs in that greenlet, bounded by :data:`WRITE_TIMEOUT_S`: a scan
never waits for Redis. A write that fails is logged and counted (:attr:`ScanLog.failures`); the
scan and its tag are not affected, only this list misses the scan.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import gevent
from redis.exceptions import RedisError

from bliss_sampletrack.tagging.metadata import ChangesFunction, ScanTagger, TagFunction

log = logging.getLogger(__name__)

#: scan records kept per mount (newest kept)
SCANS_PER_MOUNT = 200
#: a mount's scan list expires this long after its last scan (90 days)
SCANS_TTL_S = 90 * 24 * 3600
#: bound on one write (it runs in its own greenlet: the scan does not wait for it)
WRITE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """One scan, as its START saw it; unknown values are None."""

    number: int | None
    name: str | None  # BLISS's identifier, e.g. "12_loopscan"
    title: str | None  # e.g. "loopscan 5 0.1"
    filename: str | None
    dataset: str | None  # proposal/collection/dataset under the ESRF data policy
    started_at: datetime | None
    state: str  # the scan tag's state: MOUNTED, or the doubt (UNKNOWN, CONFLICT)
    reason: str | None = None  # why the tag doubts (None when MOUNTED)

    def to_json(self) -> str:
        data = asdict(self)
        data["started_at"] = None if self.started_at is None else self.started_at.isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ScanRecord:
        data = json.loads(raw)
        started = data.get("started_at")
        return cls(
            number=data.get("number"),
            name=data.get("name"),
            title=data.get("title"),
            filename=data.get("filename"),
            dataset=data.get("dataset"),
            started_at=None if started is None else datetime.fromisoformat(started),
            state=str(data.get("state", "?")),
            reason=data.get("reason"),
        )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def record_for(scan_info: Mapping[str, Any], tag: Mapping[str, Any], dataset: str | None) -> ScanRecord:
    """The record of a scan from its ``scan_info`` at START (BLISS has set ``scan_nb``, ``name``,
    ``filename`` and ``start_time`` by then) and the sample tag it was given."""
    number = scan_info.get("scan_nb")
    started = scan_info.get("start_time")
    try:
        started_at = datetime.fromisoformat(started) if isinstance(started, str) else None
    except ValueError:  # not BLISS's ISO 8601 text: the time is unknown, the scan still listed
        started_at = None
    return ScanRecord(
        number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        name=_text(scan_info.get("name")),
        title=_text(scan_info.get("title")),
        filename=_text(scan_info.get("filename")),
        dataset=dataset,
        started_at=started_at,
        state=str(tag.get("state", "?")),
        reason=_text(tag.get("reason")),
    )


class ScanLog:
    """The per-mount scan lists of one tracker in Redis (see the module)."""

    def __init__(
        self, redis: Any, tracker: str, *, per_mount: int = SCANS_PER_MOUNT, ttl_s: int = SCANS_TTL_S
    ) -> None:
        if per_mount < 1:
            raise ValueError(f"per_mount must be >= 1, got {per_mount}")
        self.redis = redis
        self.tracker = tracker
        self.per_mount = per_mount
        self.ttl_s = ttl_s
        self.failures = 0
        self.last_failure: str | None = None
        self._writes: list[gevent.Greenlet] = []

    def key(self, mount_event_id: str) -> str:
        return f"sampletrack:{self.tracker}:scans:{mount_event_id}"

    def add(self, mount_event_id: str, record: ScanRecord) -> None:
        """Append ``record`` to the mount's list, in a greenlet of its own (returns at once)."""
        self._writes = [g for g in self._writes if not g.dead]
        greenlet = gevent.spawn(self._write, mount_event_id, record.to_json())
        greenlet.name = f"sampletrack-{self.tracker}-scanlog"
        self._writes.append(greenlet)

    def _write(self, mount_event_id: str, data: str) -> None:
        key = self.key(mount_event_id)
        try:
            with gevent.Timeout(WRITE_TIMEOUT_S, TimeoutError):
                pipe = self.redis.pipeline(transaction=True)
                pipe.lpush(key, data)
                pipe.ltrim(key, 0, self.per_mount - 1)
                pipe.expire(key, self.ttl_s)
                pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:  # the scan goes on; this list misses it
            self.failures += 1
            self.last_failure = f"{type(exc).__name__}: {exc}"
            log.warning("tracker %r: scan not added to the list of mount %s: %s", self.tracker, key, exc)

    def flush(self, timeout: float = WRITE_TIMEOUT_S) -> None:
        """Wait (at most ``timeout`` s) for the writes under way: a view right after a scan lists it."""
        gevent.joinall(self._writes, timeout=timeout)

    def for_mounts(self, mount_event_ids: Iterable[str]) -> dict[str, list[ScanRecord]]:
        """The scans of each mount, oldest first (one pipelined read)."""
        ids = list(dict.fromkeys(mount_event_ids))
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for mount_event_id in ids:
            pipe.lrange(self.key(mount_event_id), 0, -1)
        answers = pipe.execute()
        scans: dict[str, list[ScanRecord]] = {}
        for mount_event_id, raw in zip(ids, answers, strict=True):
            records = []
            for item in reversed(raw):
                try:
                    records.append(ScanRecord.from_json(item))
                except (ValueError, TypeError, AttributeError) as exc:  # not written by this module
                    log.warning("tracker %r: unreadable scan record %r: %s", self.tracker, item, exc)
            scans[mount_event_id] = records
        return scans


#: called at each scan's START with the scan and its tag
StartHook = Callable[[Any, dict[str, Any]], None]


class LoggingTagger(ScanTagger):
    """The scan tagger, plus ``on_start(scan, tag)`` once per scan, at its START, after the tag
    is built (the scan log's record). The hook never makes the tag fail (see ``__call__``)."""

    def __init__(
        self,
        tracker: str,
        make_tag: TagFunction,
        changes: ChangesFunction | None = None,
        *,
        on_start: StartHook,
    ) -> None:
        super().__init__(tracker, make_tag, changes)
        self.on_start = on_start
        self.hook_failures = 0
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()

    def __call__(self, scan: Any) -> dict[str, Any]:
        tag = super().__call__(scan)
        if scan in self._seen:  # its END
            return tag
        self._seen.add(scan)
        try:
            self.on_start(scan, tag)
        # broad on purpose: an exception here would make BLISS drop the scan's whole sample tag
        # (it only logs a failing metadata callable); the failure is logged with its traceback
        # and counted, and costs only the scan's line in tracker.where()
        except Exception:
            self.hook_failures += 1
            log.exception("tracker %r: scan %r not added to the scan log", self.tracker, scan)
        return tag
