"""Robot-action records, like ISPyB's ``RobotAction``: one per load or unload, kept in Redis.

Each load/unload (by a sample changer through the link, or by a macro through
:mod:`bliss_sampletrack.changers.macros`) leaves one :class:`RobotAction`: its type, start and end
time, status (``SUCCESS``/``ERROR``), a message, the pin's barcode and changer address. They are
kept next to the tracker's keys, in the Redis list ``sampletrack:<tracker>:robot_actions``
(newest first, bounded), so ``robot_actions(tracker, 20)`` shows the last ones in any session.

``status`` is the verdict of the tracking side: a load the robot reports as done but whose
cross-check failed (wrong barcode, no pin detected) is ``ERROR`` with the mismatch as message.

Caveats: the records are informative (for people and a later ISPyB upload, see
:meth:`RobotAction.to_ispyb`); the mount/unmount *events* of the contract are what the tracker
delivers. A record is written after the tracker's change, in its own Redis call: a crash
between the two loses the record, never the event.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from bliss_sampletrack.core import Status
from bliss_sampletrack.core.address import split_address
from bliss_sampletrack.core.contract import format_timestamp, parse_timestamp
from bliss_sampletrack.errors import SampleTrackError

log = logging.getLogger(__name__)

DEFAULT_SIZE = 1000


class ActionType(StrEnum):
    LOAD = "LOAD"
    UNLOAD = "UNLOAD"


@dataclass(frozen=True, slots=True)
class RobotAction:
    """One load or unload, as ISPyB's ``RobotAction`` records it (plus who did it)."""

    action_type: ActionType
    start: datetime
    end: datetime
    status: Status
    message: str = ""
    barcode: str | None = None
    address: str | None = None
    changer: str | None = None  # the changer's name, or None for a macro with no changer named
    sample_name: str | None = None
    by: str = "sample_changer"  # "sample_changer" (through a link), "macro", or "manual"

    @property
    def duration(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action_type": str(self.action_type),
            "start": format_timestamp(self.start),
            "end": format_timestamp(self.end),
            "status": str(self.status),
            "message": self.message,
            "barcode": self.barcode,
            "address": self.address,
            "changer": self.changer,
            "sample_name": self.sample_name,
            "by": self.by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobotAction:
        return cls(
            action_type=ActionType(data["action_type"]),
            start=parse_timestamp(data["start"]),
            end=parse_timestamp(data["end"]),
            status=Status(data["status"]),
            message=data.get("message", ""),
            barcode=data.get("barcode"),
            address=data.get("address"),
            changer=data.get("changer"),
            sample_name=data.get("sample_name"),
            by=data.get("by", "sample_changer"),
        )

    def to_ispyb(self) -> dict[str, Any]:
        """ISPyB ``RobotAction`` columns (``dewarLocation``/``containerLocation`` from ``P:S``)."""
        puck, position = split_address(self.address)
        return {
            "actionType": str(self.action_type),
            "startTimestamp": format_timestamp(self.start),
            "endTimestamp": format_timestamp(self.end),
            "status": str(self.status),
            "message": self.message[:255],  # ISPyB's column is a varchar(255)
            "sampleBarcode": self.barcode,
            "dewarLocation": puck,
            "containerLocation": position,
        }

    def line(self) -> str:
        what = " ".join(x for x in (self.address, self.barcode or self.sample_name) if x) or "-"
        note = f"  {self.message}" if self.message else ""
        return (
            f"{self.start.strftime('%Y-%m-%d %H:%M:%S')} {self.action_type:6} {self.status:7} "
            f"{self.duration:6.2f}s {self.changer or self.by:10} {what}{note}"
        )


class _HasRedis(Protocol):
    redis: Any
    prefix: str


class _Tracker(Protocol):
    name: str
    store: _HasRedis


class RobotActionLog:
    """The bounded Redis list of a tracker's robot actions (newest first)."""

    def __init__(self, redis: Any, tracker: str, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError(f"the robot-action log keeps at least 1 record, got size={size}")
        self.redis = redis
        self.tracker = tracker
        self.key = f"sampletrack:{tracker}:robot_actions"
        self.size = size

    @classmethod
    def for_tracker(cls, tracker: _Tracker, size: int = DEFAULT_SIZE) -> RobotActionLog:
        """The log next to ``tracker``'s keys, through its store's Redis client."""
        return cls(tracker.store.redis, tracker.name, size)

    def record(self, action: RobotAction) -> None:
        pipeline = self.redis.pipeline(transaction=True)
        pipeline.lpush(self.key, json.dumps(action.to_dict()))
        pipeline.ltrim(self.key, 0, self.size - 1)
        pipeline.execute()
        log.info("robot action: %s", action.line())

    def last(self, count: int = 10) -> list[RobotAction]:
        """The last ``count`` actions, newest first."""
        if count < 1:
            return []
        actions = []
        for raw in self.redis.lrange(self.key, 0, count - 1):
            try:
                actions.append(RobotAction.from_dict(json.loads(raw)))
            except (ValueError, KeyError, TypeError) as exc:
                # one unreadable record (a newer version's?) must not hide the others
                log.warning("robot-action record in %r unreadable (%s): %r", self.key, exc, raw)
        return actions

    def text(self, count: int = 10) -> str:
        actions = self.last(count)
        if not actions:
            return f"tracker {self.tracker!r}: no robot action recorded yet"
        header = f"{'start (UTC)':19} {'action':6} {'status':7} {'took':>7} {'by':10} pin"
        return "\n".join([header, *(a.line() for a in actions)])


def robot_actions(tracker: _Tracker, count: int = 10) -> list[RobotAction]:
    """The last ``count`` robot actions recorded for ``tracker``, newest first."""
    if not hasattr(tracker, "store"):
        raise SampleTrackError(f"{tracker!r} is not a SampleTracker (it has no Redis store)")
    return RobotActionLog.for_tracker(tracker).last(count)
