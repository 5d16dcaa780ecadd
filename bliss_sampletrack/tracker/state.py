"""The tracker's state machine: what is mounted, and the contract events each change produces.

Pure logic (no I/O): :func:`transition` takes the current :class:`Snapshot` and a request and
returns the next snapshot plus the events to record, so every rule is testable in isolation.

The states and the snapshot are in :mod:`bliss_sampletrack.core.snapshot` (every layer reads
them; re-exported here).

Rules:
- Mounting while something is mounted first records the unmount of the previous sample.
- Mounting the sample that is already mounted (same barcode, or same name when neither has a
  barcode) is no change and produces no event: a reader reading the same code twice is one mount.
- Leaving UNKNOWN/CONFLICT by a mount or an unmount records the previous sample's unmount with
  ``status: ERROR``, because nobody saw it happen.
- Every committed change gets the next sequence number (``seq``, persisted with the state in the
  same transaction, see :func:`numbered`): a scan compares the numbers at its start and end, so a
  change during the scan is seen whatever the states were (EMPTY -> UNKNOWN -> EMPTY included).
  Entering UNKNOWN/CONFLICT for the reason the tracker is already in is no change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.snapshot import EventContext, Snapshot, TrackerState

__all__ = ["Change", "EventContext", "Snapshot", "TrackerState", "degrade", "mount", "numbered", "unmount"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """The outcome of a request: the next snapshot and the events recording it (maybe none)."""

    snapshot: Snapshot
    events: list[Event] = field(default_factory=list)


def numbered(before: Snapshot, change: Change) -> Change:
    """``change`` with the next sequence number, unless it changes nothing (no event, same snapshot)."""
    if not change.events and change.snapshot == before:
        return change
    return Change(replace(change.snapshot, seq=before.seq + 1), change.events)


def _unmount_previous(
    current: Snapshot,
    source: Source,
    ctx: EventContext,
    at: datetime,
    why: str | None,
    *,
    status: Status = Status.SUCCESS,
    confirmed: str = "",
) -> list[Event]:
    if current.sample is None or current.state is TrackerState.EMPTY:
        return []
    doubtful = current.state in (TrackerState.UNKNOWN, TrackerState.CONFLICT)
    message = why or ""
    if status is not Status.SUCCESS:
        doubtful = True  # the caller knows the unmount is contradicted: ``why`` says how
    elif doubtful and confirmed:
        doubtful = False  # e.g. the presence sensor saw the pin go: the unmount was observed
        message = f"{current.state} before" + (f" ({current.reason})" if current.reason else "")
        message += f"; confirmed: {confirmed}"
    elif doubtful:
        message = (
            f"unmount not observed: the tracker was {current.state}"
            + (f" ({current.reason})" if current.reason else "")
            + (f"; {why}" if why else "")
        )
    return [
        Event.unmounted(
            current.sample,
            beamline=ctx.beamline,
            session=ctx.session,
            proposal=ctx.proposal,
            source=source,
            occurred_at=at,
            status=Status.ERROR if doubtful else Status.SUCCESS,
            message=message,
            mount_event_id=current.mount_event_id,
        )
    ]


def mount(
    current: Snapshot,
    sample: Sample,
    source: Source,
    ctx: EventContext,
    *,
    at: datetime | None = None,
    status: Status = Status.SUCCESS,
    message: str = "",
) -> Change:
    """``sample`` is now mounted (as reported by ``source``)."""
    at = at or datetime.now(UTC)
    if current.state is TrackerState.MOUNTED and current.same_sample(sample) and status is Status.SUCCESS:
        return Change(current)  # the same code read again: one mount
    events = _unmount_previous(current, source, ctx, at, f"replaced by {sample.label}")
    mounted = Event.mounted(
        sample,
        beamline=ctx.beamline,
        session=ctx.session,
        proposal=ctx.proposal,
        source=source,
        occurred_at=at,
        status=status,
        message=message,
    )
    events.append(mounted)
    state = TrackerState.MOUNTED if status is Status.SUCCESS else TrackerState.CONFLICT
    snapshot = Snapshot(
        state, at, sample, source, mounted.event_id, "" if status is Status.SUCCESS else message
    )
    return Change(snapshot, events)


def unmount(
    current: Snapshot,
    source: Source,
    ctx: EventContext,
    *,
    at: datetime | None = None,
    status: Status = Status.SUCCESS,
    message: str = "",
    confirmed: str = "",
) -> Change:
    """The sample position is now empty. Unmounting when already EMPTY changes nothing.

    ``status`` ERROR: an unmount that the hardware contradicts (``message`` says how): the
    previous sample's unmount is recorded ERROR and the tracker goes CONFLICT, not EMPTY.
    ``confirmed``: what observed the removal (e.g. the presence sensor), so that leaving
    UNKNOWN/CONFLICT records a SUCCESS unmount saying so."""
    at = at or datetime.now(UTC)
    if status is not Status.SUCCESS:
        events = _unmount_previous(current, source, ctx, at, message, status=status)
        return Change(Snapshot(TrackerState.CONFLICT, at, current.sample, source, reason=message), events)
    if current.state is TrackerState.EMPTY:
        return Change(current)
    events = _unmount_previous(current, source, ctx, at, message or None, confirmed=confirmed)
    return Change(Snapshot(TrackerState.EMPTY, at, source=source), events)


def degrade(current: Snapshot, state: TrackerState, reason: str, *, at: datetime | None = None) -> Change:
    """Enter UNKNOWN or CONFLICT without a mount or unmount (no event: nothing moved)."""
    if state not in (TrackerState.UNKNOWN, TrackerState.CONFLICT):
        raise ValueError(f"degrade() goes to UNKNOWN or CONFLICT, not {state}")
    if current.state is state and current.reason == reason:
        return Change(current)  # already there, for that reason: no change
    return Change(replace(current, state=state, since=at or datetime.now(UTC), reason=reason))
