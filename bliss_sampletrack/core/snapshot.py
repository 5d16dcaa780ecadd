"""The tracker's state as every layer sees it: the state, its snapshot, where events happen, and a
doubt about a snapshot. Pure data (no I/O, no BLISS): the state machine that changes it lives in
:mod:`bliss_sampletrack.tracker.state`; tagging, changers and delivery read it from here.

States:
- ``EMPTY``: nothing on the sample position.
- ``MOUNTED``: ``sample`` is on it, since the event ``mount_event_id``.
- ``UNKNOWN``: nothing to trust (first start, or the reader that identified the sample went
  offline). ``sample`` keeps the last sample believed mounted, if any.
- ``CONFLICT``: two sources disagree; ``reason`` says how. ``sample`` is the one recorded before.

``seq`` numbers the changes (see the state machine).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bliss_sampletrack.core.contract import format_timestamp, parse_timestamp
from bliss_sampletrack.core.event import Source
from bliss_sampletrack.core.sample import REGISTRY_NOTE_MAX, Sample

log = logging.getLogger(__name__)


class TrackerState(StrEnum):
    EMPTY = "EMPTY"
    MOUNTED = "MOUNTED"
    UNKNOWN = "UNKNOWN"
    CONFLICT = "CONFLICT"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The tracker's state at one moment (persisted as JSON)."""

    state: TrackerState
    since: datetime
    sample: Sample | None = None
    source: Source | None = None
    mount_event_id: uuid.UUID | None = None
    reason: str = ""
    seq: int = 0  # the number of the change that made this snapshot (0: none recorded yet)

    @classmethod
    def initial(cls, reason: str = "no recorded state: nothing to trust yet") -> Snapshot:
        return cls(TrackerState.UNKNOWN, datetime.now(UTC), reason=reason)

    def same_sample(self, sample: Sample) -> bool:
        current = self.sample
        if current is None:
            return False
        if current.barcode is not None or sample.barcode is not None:
            return current.barcode == sample.barcode
        return current.name == sample.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "since": format_timestamp(self.since),
            "sample": None if self.sample is None else self.sample.to_dict(),
            "source": None if self.source is None else str(self.source),
            "mount_event_id": None if self.mount_event_id is None else str(self.mount_event_id),
            "reason": self.reason,
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """The snapshot of :meth:`to_dict`, also as written by an older or newer version of the
        plugin (see :func:`_snapshot_sample`); unknown top-level keys are ignored."""
        return cls(
            state=TrackerState(data["state"]),
            since=parse_timestamp(data["since"]),
            sample=None if data.get("sample") is None else _snapshot_sample(data["sample"]),
            source=None if data.get("source") is None else Source(data["source"]),
            mount_event_id=None if data.get("mount_event_id") is None else uuid.UUID(data["mount_event_id"]),
            reason=data.get("reason", ""),
            seq=_seq(data.get("seq", 0)),
        )


def _seq(value: Any) -> int:
    """A persisted sequence number (older versions wrote none: 0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"the snapshot's seq must be an integer >= 0, got {value!r}")
    return value


_SAMPLE_FIELDS = frozenset(f.name for f in fields(Sample))


def _snapshot_sample(data: Mapping[str, Any]) -> Sample:
    """The sample of a persisted snapshot. Another version of the plugin may share the beacon
    Redis (a second BLISS host not yet upgraded, or a downgrade): fields it added that this one
    does not know are dropped, and a longer ``registry_note`` is cut, so that the tracker keeps
    the mounted sample instead of restarting UNKNOWN. Every version knows the identifying
    fields (barcode, name...), which are still validated."""
    if not isinstance(data, Mapping):
        raise TypeError(f"the snapshot's sample must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _SAMPLE_FIELDS, key=str)
    if unknown:
        log.debug("snapshot sample fields %s are unknown to this version: ignored", unknown)
    values = {key: value for key, value in data.items() if key in _SAMPLE_FIELDS}
    note = values.get("registry_note")
    if isinstance(note, str) and len(note) > REGISTRY_NOTE_MAX:
        values["registry_note"] = note[: REGISTRY_NOTE_MAX - 3] + "..."
    return Sample(**values)


@dataclass(frozen=True, slots=True)
class EventContext:
    """Where events happen: filled into every event."""

    beamline: str
    session: str
    proposal: str | None = None


@dataclass(frozen=True, slots=True)
class Doubt:
    """Why a snapshot may not be what is on the goniometer now.

    ``state``: UNKNOWN (the hardware is between two states, e.g. a robot moving) or CONFLICT (the
    hardware contradicts the snapshot). ``reconcile``: the tracker's own state should be brought
    in line (a contradiction that is not a move in progress)."""

    state: TrackerState
    reason: str
    reconcile: bool = False


@runtime_checkable
class Witness(Protocol):
    """A cheap, hub-friendly view of the hardware that can contradict the tracker."""

    name: str

    def doubt(self, snapshot: Snapshot) -> Doubt | None:
        """Why ``snapshot`` may not be the hardware's state now, or None when they agree."""
        ...

    def reconcile(self) -> object:
        """Bring the tracker in line with the hardware (called in a greenlet of its own)."""
        ...

    def judge_manual(self, sample: Sample | None) -> tuple[str | None, str]:
        """A manual mount of ``sample`` (None: unmount) against the hardware: ``(problem,
        support)``, the contradiction if any, else what confirms it ("" if nothing does)."""
        ...
