"""Cross-checks: what to record on the tracker for one changer event. Pure logic, no I/O.

:func:`decide` takes a :class:`~bliss_sampletrack.changers.protocol.ChangerEvent` and what the link
knows besides it (:class:`Bookkeeping`: the tracker's state, manual mode) and returns a
:class:`Decision`: mount, unmount, UNKNOWN, CONFLICT or nothing, with the status and message,
plus the robot-action record. :class:`~bliss_sampletrack.changers.link.ChangerLink` carries it out.

What disagrees, and what it gives:

- **barcode**: a reader read a code other than the one the changer's contents give for that
  address -> the mount is recorded with status ERROR (tracker CONFLICT), the message naming both
  codes. The sample recorded is the changer's (its address is certain; which label is right is
  for a person to decide).
- **address**: the changer reports another position mounted than the one requested -> ERROR.
- **presence during an action**: a load reported done with no pin detected -> ERROR mount; an
  unload reported done with a pin still detected -> the unmount, then CONFLICT.
- **presence outside any action** (a sensor flap): a pin appears while the changer has nothing
  mounted and no manual mount was announced -> CONFLICT; the pin disappears while a sample is
  recorded mounted -> CONFLICT (a contract event needs a mount or unmount; a flap is neither).
  While the tracker already doubts (UNKNOWN, CONFLICT), every further reading is recorded as a
  change of the doubt's reason: the pin moved, so a scan running meanwhile is flagged.
- **reconciliation** (link start, ``check()``, a witness's doubt at a scan's start): a load or
  unload nobody recorded is recorded as an ERROR mount/unmount (tracker CONFLICT), so the
  tracking service sees it; see :func:`reconcile`.
- **failures**: a failed load -> ERROR mount (tracker CONFLICT: the pin may be anywhere); a failed
  unload -> CONFLICT (the pin may still be on the goniometer).

Samples with neither barcode nor name: a ``Sample`` needs one of them, and an address is no
identity (the same ``3:05`` holds a different pin in the next shipment), so a pin that nothing
names is never recorded under an invented name. The tracker goes UNKNOWN instead, the reason
naming the changer and address and saying how to identify the pin; the robot action is still
recorded (with its address and no barcode).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bliss_sampletrack.changers.protocol import (
    ChangerEvent,
    ChangerEventKind,
    Mounted,
    Position,
    parse_address,
)
from bliss_sampletrack.changers.robot_actions import ActionType
from bliss_sampletrack.core import Sample, Source, Status
from bliss_sampletrack.core.snapshot import Doubt, Snapshot, TrackerState


class Record(StrEnum):
    """What the link does on the tracker."""

    MOUNT = "mount"  # record_mount(sample, status, message)
    UNMOUNT = "unmount"  # record_unmount (then set_conflict(conflict_after) if set)
    UNKNOWN = "unknown"  # set_unknown(message)
    CONFLICT = "conflict"  # set_conflict(message)
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """What the link knows besides the event."""

    tracker: str  # the tracker's name, for messages that say what to type
    link: str  # the link's name, likewise
    state: TrackerState
    sample_label: str | None = None  # the tracker's sample (mounted, or last known)
    source: Source | None = None
    manual: bool = False  # a manual mount was recorded and not yet unmounted
    check_presence: bool = True
    reader: str | None = None  # the name of the reader that filled ``event.read``, for messages


@dataclass(frozen=True, slots=True)
class Decision:
    record: Record
    status: Status = Status.SUCCESS
    message: str = ""
    barcode: str | None = None  # the identity to record (resolved through the tracker's registry)
    name: str | None = None
    address: str | None = None
    conflict_after: str = ""  # UNMOUNT only: then CONFLICT with this reason
    action: ActionType | None = None  # the robot action to record, if any
    action_status: Status = Status.SUCCESS
    action_message: str = ""


def decide(event: ChangerEvent, book: Bookkeeping) -> Decision:
    """What to record for ``event`` (see the module's table)."""
    kind = event.kind
    if kind is ChangerEventKind.LOADED:
        return _loaded(event, book)
    if kind is ChangerEventKind.LOAD_FAILED:
        return _load_failed(event)
    if kind is ChangerEventKind.UNLOADED:
        return _unloaded(event, book)
    if kind is ChangerEventKind.UNLOAD_FAILED:
        message = (
            f"unload of {event.pin} by changer {event.changer!r} failed: {event.message or 'no reason given'}"
            f"{_sensor(event)}; the pin may still be on the goniometer"
        )
        return Decision(
            Record.CONFLICT,
            Status.ERROR,
            message,
            address=event.address,
            action=ActionType.UNLOAD,
            action_status=Status.ERROR,
            action_message=message,
        )
    if kind is ChangerEventKind.PRESENCE:
        return _presence(event, book)
    if kind is ChangerEventKind.OFFLINE:
        if book.state is TrackerState.MOUNTED and book.source is Source.SAMPLE_CHANGER:
            return Decision(
                Record.UNKNOWN,
                message=f"changer {event.changer!r} went offline while {book.sample_label} was mounted: "
                f"{event.message}",
            )
    return Decision(Record.NOTHING)


def identity(event: ChangerEvent) -> tuple[str | None, str | None]:
    """(barcode, name) to record: the changer's barcode, else the one read, and its name."""
    return event.barcode or event.read, event.name


def requested_problem(event: ChangerEvent) -> str | None:
    """The changer mounted something other than what was asked for, or None."""
    asked = event.requested
    if asked is None or event.address is None or asked == event.address:
        return None
    asked_address = parse_address(asked)
    if asked_address is not None:
        if asked_address == parse_address(event.address):  # 3:5 and 3:05
            return None
        return f"{asked} was requested but changer {event.changer!r} reports {event.address} mounted"
    if event.barcode is not None and event.barcode != asked:  # a barcode was requested
        return (
            f"barcode {asked} was requested but changer {event.changer!r} mounted "
            f"{event.address} ({event.barcode})"
        )
    return None


def barcode_problem(event: ChangerEvent, reader: str | None) -> str | None:
    """The code read disagrees with the changer's barcode for the address, or None."""
    if event.read is None or event.barcode is None or event.read == event.barcode:
        return None
    who = f"reader {reader!r}" if reader else "the reader"
    return (
        f"barcode mismatch at {event.address} of changer {event.changer!r}: {who} read "
        f"{event.read} but the changer expects {event.barcode}"
    )


def load_presence_problem(event: ChangerEvent, check_presence: bool) -> str | None:
    if not check_presence or event.present is not False:
        return None
    return (
        f"changer {event.changer!r} reports {event.pin} mounted but its presence sensor detects "
        "no pin on the goniometer"
    )


def _sensor(event: ChangerEvent) -> str:
    if event.present is None:
        return ""
    return "; the presence sensor detects " + ("a pin" if event.present else "no pin")


def _loaded(event: ChangerEvent, book: Bookkeeping) -> Decision:
    problems = [
        p
        for p in (
            requested_problem(event),
            barcode_problem(event, book.reader),
            load_presence_problem(event, book.check_presence),
        )
        if p
    ]
    barcode, name = identity(event)
    notes = [f"reader: {event.read_error}"] if event.read_error else []
    if barcode is None and name is None:
        unnamed = (
            f"changer {event.changer!r} mounted {event.address}, a pin with no barcode or name in its "
            "contents" + (f" and no code read ({event.read_error})" if event.read_error else "")
        )
        if problems:
            message = "; ".join([*problems, unnamed])
            return Decision(
                Record.CONFLICT,
                Status.ERROR,
                message,
                address=event.address,
                action=ActionType.LOAD,
                action_status=Status.ERROR,
                action_message=message,
            )
        message = (
            f"{unnamed}: identify it with {book.tracker}.read_barcode() or {book.tracker}.mount('BARCODE')"
        )
        return Decision(
            Record.UNKNOWN,
            message=message,
            address=event.address,
            action=ActionType.LOAD,
            action_message=unnamed,
        )
    status = Status.ERROR if problems else Status.SUCCESS
    message = "; ".join(problems)
    return Decision(
        Record.MOUNT,
        status,
        message,
        barcode=barcode,
        name=name,
        address=event.address,
        action=ActionType.LOAD,
        action_status=status,
        action_message="; ".join([*problems, *notes]),
    )


def _load_failed(event: ChangerEvent) -> Decision:
    barcode, name = identity(event)
    message = (
        f"load of {event.pin} by changer {event.changer!r} failed: {event.message or 'no reason given'}"
        f"{_sensor(event)}"
    )
    status = Status.ERROR
    # a pin with no identity cannot be recorded as a (failed) mount: the tracker goes CONFLICT
    record = Record.CONFLICT if barcode is None and name is None else Record.MOUNT
    return Decision(
        record,
        status,
        message,
        barcode=barcode,
        name=name,
        address=event.address,
        action=ActionType.LOAD,
        action_status=status,
        action_message=message,
    )


def _unloaded(event: ChangerEvent, book: Bookkeeping) -> Decision:
    leftover = ""
    if book.check_presence and event.present is True:
        leftover = (
            f"changer {event.changer!r} reports {event.pin} unmounted but its presence sensor still "
            "detects a pin on the goniometer"
        )
    return Decision(
        Record.UNMOUNT,
        address=event.address,
        barcode=event.barcode,
        name=event.name,
        conflict_after=leftover,
        action=ActionType.UNLOAD,
        action_status=Status.ERROR if leftover else Status.SUCCESS,
        action_message=leftover,
    )


def _presence(event: ChangerEvent, book: Bookkeeping) -> Decision:
    if not book.check_presence or event.present is None:
        return Decision(Record.NOTHING)
    if event.present:
        if book.manual or event.address is not None:
            if book.state in (TrackerState.UNKNOWN, TrackerState.CONFLICT):
                return _doubtful_presence(event, book)
            return Decision(Record.NOTHING)  # announced by hand, or the changer's own pin
        return Decision(
            Record.CONFLICT,
            message=(
                f"the presence sensor of changer {event.changer!r} detects a pin on the goniometer that "
                f"nobody mounted (the changer reports nothing mounted); if it was mounted by hand, "
                f"record it with {book.link}.manual_mount('BARCODE')"
            ),
        )
    if book.state is TrackerState.MOUNTED:
        return Decision(
            Record.CONFLICT,
            message=(
                f"the presence sensor of changer {event.changer!r} no longer detects a pin, but "
                f"{book.sample_label} is recorded mounted (by {book.source}); if it was removed by "
                f"hand, record it with {book.link}.manual_unmount()"
            ),
        )
    if book.state in (TrackerState.UNKNOWN, TrackerState.CONFLICT):
        return _doubtful_presence(event, book)
    return Decision(Record.NOTHING)


def _doubtful_presence(event: ChangerEvent, book: Bookkeeping) -> Decision:
    """A presence change while the tracker already doubts (UNKNOWN, CONFLICT): still a change on
    the goniometer, so it is recorded (the doubt with what the sensor now sees) and a scan that
    saw it happen says so."""
    sensed = "detects a pin" if event.present else "detects no pin"
    what = f"the presence sensor of changer {event.changer!r} now {sensed} on the goniometer"
    hint = (
        f"record what is there with {book.link}.manual_mount('BARCODE')"
        if event.present
        else f"record the removal with {book.link}.manual_unmount()"
    )
    return Decision(Record(str(book.state).lower()), message=f"{what}: {hint}")


def reconcile(
    mounted_address: str | None,
    barcode: str | None,
    name: str | None,
    present: bool | None,
    book: Bookkeeping,
    *,
    changer: str,
    same_sample: bool,
) -> Decision:
    """When a link starts (or on ``link.check()``): the changer's view against the tracker's.

    ``same_sample``: the tracker's sample is the changer's mounted pin (same barcode or name).
    A tracker that knows nothing (UNKNOWN) learns the changer's pin. A change nobody recorded (the
    changer has another pin, or none, than the tracker says) is recorded as what it is, an
    unobserved mount or unmount with status ERROR (the tracker CONFLICT, both sides in the
    message), so the tracking service sees it too; a disagreement with no identity to record (a
    pin with no barcode, the presence sensor) is a CONFLICT saying both sides. A tracker already
    in CONFLICT is left as it is.
    """
    if book.state is TrackerState.CONFLICT:
        return Decision(Record.NOTHING)
    tracker_side = f"tracker {book.tracker!r} is {book.state}" + (
        f" with {book.sample_label} (by {book.source})" if book.state is TrackerState.MOUNTED else ""
    )
    if mounted_address is None:
        if book.state is TrackerState.MOUNTED and book.source is Source.SAMPLE_CHANGER:
            return Decision(
                Record.UNMOUNT,
                Status.ERROR,
                f"changer {changer!r} reports nothing mounted but {tracker_side}: an unload nobody recorded",
            )
        if book.check_presence and present is True and not book.manual:
            return Decision(
                Record.CONFLICT,
                message=f"the presence sensor of changer {changer!r} detects a pin that nobody mounted "
                f"({tracker_side}, the changer reports nothing mounted)",
            )
        return Decision(Record.NOTHING)
    pin = f"{mounted_address} ({barcode or name})" if barcode or name else mounted_address
    if book.check_presence and present is False:
        return Decision(
            Record.CONFLICT,
            message=f"changer {changer!r} reports {pin} mounted but its presence sensor detects no pin",
        )
    if book.state is TrackerState.MOUNTED and same_sample:
        return Decision(Record.NOTHING)
    if book.state is TrackerState.UNKNOWN:
        if barcode is None and name is None:
            return Decision(
                Record.UNKNOWN,
                message=f"changer {changer!r} has {mounted_address} mounted, a pin with no barcode or "
                f"name: identify it with {book.tracker}.read_barcode() or {book.tracker}.mount('BARCODE')",
            )
        return Decision(Record.MOUNT, barcode=barcode, name=name, address=mounted_address)
    message = f"changer {changer!r} reports {pin} mounted but {tracker_side}"
    if barcode is None and name is None:
        return Decision(Record.CONFLICT, message=message)
    return Decision(
        Record.MOUNT,
        Status.ERROR,
        f"{message}: a load nobody recorded",
        barcode=barcode,
        name=name,
        address=mounted_address,
    )


def hardware_doubt(
    snapshot: Snapshot,
    mounted: Mounted | None,
    present: bool | None,
    *,
    changer: str,
    moving: str | None = None,
    check_presence: bool = True,
) -> Doubt | None:
    """Why ``snapshot`` may not be what the changer has on the goniometer now, or None.

    Cheap (what the changer and its presence sensor say, no motion): asked at every scan's
    start and end. A robot moving is UNKNOWN (the goniometer is between two pins); a changer or
    sensor that contradicts a MOUNTED or EMPTY state is CONFLICT, to be reconciled. A state
    that already doubts (UNKNOWN, CONFLICT) is left to say so itself."""
    if moving is not None:
        return Doubt(TrackerState.UNKNOWN, f"changer {changer!r} is moving ({moving})")
    if snapshot.state not in (TrackerState.MOUNTED, TrackerState.EMPTY):
        return None
    sample = snapshot.sample if snapshot.state is TrackerState.MOUNTED else None
    pin = _pin(mounted)
    problem = ""
    if sample is None and mounted is not None:
        problem = f"changer {changer!r} has {pin} mounted but the tracker says EMPTY"
    elif sample is not None and snapshot.source is Source.SAMPLE_CHANGER and mounted is None:
        problem = (
            f"changer {changer!r} has nothing mounted but the tracker says {sample.label} (by the changer)"
        )
    elif sample is not None and mounted is not None and not _same_pin(sample, mounted, changer):
        problem = f"changer {changer!r} has {pin} mounted but the tracker says {sample.label}"
    elif check_presence and present is False and sample is not None:
        problem = (
            f"the presence sensor of changer {changer!r} detects no pin but the tracker says {sample.label}"
        )
    elif check_presence and present is True and sample is None:
        problem = f"presence sensor of changer {changer!r}: a pin, but the tracker says EMPTY"
    return Doubt(TrackerState.CONFLICT, problem, reconcile=True) if problem else None


def _pin(mounted: Mounted | None) -> str:
    """``3:05 (LYS-0001)``: the changer's mounted pin, for messages ("" when none)."""
    return f"{mounted.address} ({mounted.barcode or mounted.name or 'no barcode'})" if mounted else ""


def _same_pin(sample: Sample, mounted: Mounted, changer: str) -> bool:
    """The tracker's sample is the changer's mounted pin: same position when this changer
    recorded it, else the same barcode (or name when the pin has no barcode)."""
    if sample.changer_name == changer and sample.changer_position is not None:
        return sample.changer_position == mounted.address
    if mounted.barcode is not None or sample.barcode is not None:
        return mounted.barcode == sample.barcode
    return mounted.name is not None and mounted.name == sample.name


def manual_judgement(
    sample: Sample | None,
    mounted: Mounted | None,
    present: bool | None,
    contents: list[Position],
    *,
    changer: str,
    check_presence: bool = True,
) -> tuple[str | None, str]:
    """What the changer says of a manual mount of ``sample`` (None: a manual unmount):
    ``(problem, support)``, the contradiction if any, else what confirms it (may be empty)."""
    pin = _pin(mounted)
    sensor = check_presence and present is not None
    if sample is None:
        if mounted is not None:
            return f"changer {changer!r} has {pin} on the goniometer (unmount: {changer}.unmount())", ""
        if sensor and present:
            return f"the presence sensor of changer {changer!r} still detects a pin on the goniometer", ""
        return None, (f"the presence sensor of changer {changer!r} detects no pin" if sensor else "")
    if mounted is not None:
        if _same_pin(sample, mounted, changer):
            return None, f"changer {changer!r} has it mounted"
        return f"changer {changer!r} has {pin} on the goniometer, not {sample.label}", ""
    if sensor and not present:
        return f"the presence sensor of changer {changer!r} detects no pin on the goniometer", ""
    stored = next((p for p in contents if sample.barcode and p.barcode == sample.barcode), None)
    if stored is not None:
        return f"changer {changer!r} lists {sample.barcode} in its puck at {stored.address}", ""
    return None, ""
