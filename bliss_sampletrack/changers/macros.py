"""Macro helpers: record a load/unload done by any BLISS macro on the tracker, success or failure.

For beamlines whose robot is driven by their own macros (no changer object to follow)::

    from bliss_sampletrack.changers.macros import mounting, unmounting, tracked_mount, tracked_unmount

    def load(barcode, puck, pos):
        with mounting(tracker, barcode, changer="flex", address=f"{puck}:{pos:02d}"):
            flex.load(puck, pos)           # any exception: ERROR recorded, then re-raised

    @tracked_mount("tracker", sample="barcode", address="where", changer="flex")
    def load_sample(barcode, where):
        flex.load(where)

    @tracked_unmount("tracker", changer="flex")
    def unload_sample():
        flex.unload()

On success: the mount (or unmount) is recorded when the block ends, with the end time, source
``sample_changer`` (``source=`` to change it), and one robot-action record (start, end,
``SUCCESS``). On any exception, KeyboardInterrupt (Ctrl-C) and greenlet kills included: the
robot action is recorded ``ERROR`` with the exception's message, the tracker records the failure
(a failed mount: an ERROR mounted event and CONFLICT; a failed unmount: CONFLICT, the sample may
still be on) and the exception is re-raised. So a macro that fails never leaves the tracker
believing its mount happened.

The sample is resolved (through the tracker's registry) *before* the block runs: a barcode the
tracker refuses stops the macro before the robot moves. It may also be given inside the block,
once known (e.g. read by the robot): ``action.identify(barcode)``. A mount that ends with neither
barcode nor name puts the tracker UNKNOWN rather than inventing a name (see
:mod:`~bliss_sampletrack.changers.crosscheck`).

Caveats:
- ``tracker`` may be the object or its name (resolved from the beacon config when the macro
  runs, so a macro file can be imported before the session builds the tracker).
- Recording happens in the macro's greenlet, after the block: if recording itself fails (Redis
  down), the macro's own exception is still the one raised, with a note saying so.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from bliss_sampletrack.changers.recording import TrackerSeam, record_failed_mount, sample_for, with_changer
from bliss_sampletrack.changers.robot_actions import ActionType, RobotAction, RobotActionLog
from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.errors import SampleTrackError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
TrackerRef = TrackerSeam | str
FIRST = "<first parameter>"  # tracked_mount(sample=...): the decorated function's first parameter


def _tracker(ref: TrackerRef) -> TrackerSeam:
    if isinstance(ref, str):
        from bliss.config.static import get_config

        ref = get_config().get(ref)
    if not isinstance(ref, TrackerSeam):
        raise SampleTrackError(f"{ref!r} is not a SampleTracker: pass the tracker object or its name")
    return ref


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class TrackedAction:
    """A load/unload in progress in a macro (what ``with mounting(...) as action`` gives)."""

    tracker: TrackerSeam
    action_type: ActionType
    source: Source
    changer: str | None = None
    address: str | None = None
    sample: Sample | None = None
    start: datetime = field(default_factory=_now)
    end: datetime | None = None
    status: Status | None = None  # None while running
    message: str = ""  # a note for the robot-action record (the failure's message on ERROR)
    events: list[Event] = field(default_factory=list)  # the contract events recorded at the end

    def identify(self, barcode: str | None = None, name: str | None = None) -> Sample:
        """Say which sample is being mounted, once known (resolved through the registry)."""
        self.sample = sample_for(
            self.tracker, barcode=barcode, name=name, changer=self.changer, address=self.address
        )
        return self.sample

    def _record(self) -> None:
        assert self.end is not None and self.status is not None
        sample = self.sample
        RobotActionLog.for_tracker(self.tracker).record(
            RobotAction(
                action_type=self.action_type,
                start=self.start,
                end=self.end,
                status=self.status,
                message=self.message,
                barcode=sample.barcode if sample else None,
                address=self.address,
                changer=self.changer,
                sample_name=sample.name if sample else None,
                by="macro" if self.source is not Source.MANUAL else "manual",
            )
        )


def _fail(action: TrackedAction, exc: BaseException, record: Callable[[str], None]) -> None:
    """Record a failed action; never masks ``exc`` (the caller re-raises it)."""
    action.end, action.status = _now(), Status.ERROR
    action.message = _describe(exc)
    try:
        record(action.message)
        action._record()
    except Exception as failure:  # logged, and noted on exc: the macro's exception is the one raised
        log.error("could not record the failed %s: %s", action.action_type, failure, exc_info=failure)
        exc.add_note(f"bliss-sampletrack could not record this failure on the tracker: {failure!r}")


@contextmanager
def mounting(
    tracker: TrackerRef,
    sample: Sample | str | None = None,
    *,
    changer: str | None = None,
    address: str | None = None,
    source: Source = Source.SAMPLE_CHANGER,
) -> Iterator[TrackedAction]:
    """Record the mount done in the ``with`` block: ``sample`` is a barcode (resolved), a
    ``Sample``, or None (then ``action.identify(...)`` in the block, or the tracker goes UNKNOWN)."""
    seam = _tracker(tracker)
    action = TrackedAction(seam, ActionType.LOAD, source, changer, address)
    if isinstance(sample, Sample):
        action.sample = with_changer(sample, changer, address)
    elif sample is not None:
        action.identify(barcode=sample)
    action.start = _now()

    def record_error(message: str) -> None:
        where = f" at {address}" if address else ""
        text = f"mount{where} failed in a macro: {message}"
        if action.sample is None:
            seam.set_conflict(f"{text}; the mounted sample is unknown")
        else:
            at = action.end or _now()
            action.events = record_failed_mount(seam, action.sample, source, at=at, message=text)

    try:
        yield action
    except BaseException as exc:
        _fail(action, exc, record_error)
        raise
    action.end, action.status = _now(), Status.SUCCESS
    if action.sample is None:
        where = f" {address}" if address else ""
        note = (
            f"a macro mounted{where} a pin with no barcode or name: identify it with "
            f"{seam.name}.read_barcode() or {seam.name}.mount('BARCODE')"
        )
        seam.set_unknown(note)
        action.message = action.message or note
    else:
        action.events = seam.record_mount(action.sample, source, at=action.end)
    action._record()


@contextmanager
def unmounting(
    tracker: TrackerRef,
    *,
    changer: str | None = None,
    address: str | None = None,
    source: Source = Source.SAMPLE_CHANGER,
) -> Iterator[TrackedAction]:
    """Record the unmount done in the ``with`` block (a failure: CONFLICT, re-raised)."""
    seam = _tracker(tracker)
    current = seam.sample
    if address is None and current is not None:
        address = current.changer_position
    action = TrackedAction(seam, ActionType.UNLOAD, source, changer, address, sample=current)

    def record_error(message: str) -> None:
        what = current.label if current else "the sample"
        seam.set_conflict(
            f"unmount of {what} failed in a macro: {message}; it may still be on the goniometer"
        )

    try:
        yield action
    except BaseException as exc:
        _fail(action, exc, record_error)
        raise
    action.end, action.status = _now(), Status.SUCCESS
    action.events = seam.record_unmount(source, at=action.end)
    action._record()


def _argument(
    bound: inspect.BoundArguments, parameter: str | None, what: str, func: Callable[..., Any]
) -> Any:
    if parameter is None:
        return None
    if parameter not in bound.signature.parameters:
        raise SampleTrackError(
            f"@{what}: {func.__qualname__} has no parameter {parameter!r} "
            f"(it has {', '.join(bound.signature.parameters) or 'none'})"
        )
    return bound.arguments.get(parameter, bound.signature.parameters[parameter].default)


def tracked_mount(
    tracker: TrackerRef,
    *,
    sample: str | None = FIRST,
    address: str | None = None,
    changer: str | None = None,
    source: Source = Source.SAMPLE_CHANGER,
    from_result: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a mount macro: each call is recorded like ``with mounting(...)``.

    ``sample``: the name of the parameter holding the barcode or ``Sample`` (default: the first
    parameter; None: none). ``address``: the parameter holding the changer address, if any.
    ``from_result``: the function returns the barcode or ``Sample`` it mounted (e.g. read by the
    robot), which then identifies the sample.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(func)
        sample_param = sample
        if sample_param == FIRST:
            sample_param = next(iter(signature.parameters), None)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            which = _argument(bound, sample_param, "tracked_mount", func)
            if which is not None and not isinstance(which, str | Sample):
                raise SampleTrackError(
                    f"@tracked_mount: {func.__qualname__}'s parameter {sample_param!r} must be a barcode "
                    f"or a Sample, got {type(which).__name__} {which!r}; name the right one with sample=..."
                )
            where = _argument(bound, address, "tracked_mount", func)
            with mounting(
                tracker,
                which,
                changer=changer,
                address=None if where is None else str(where),
                source=source,
            ) as action:
                result = func(*args, **kwargs)
                if from_result and isinstance(result, Sample):
                    action.sample = with_changer(result, changer, action.address)
                elif from_result and isinstance(result, str):
                    action.identify(barcode=result)
            return result

        return wrapper

    return decorate


def tracked_unmount(
    tracker: TrackerRef,
    *,
    changer: str | None = None,
    source: Source = Source.SAMPLE_CHANGER,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an unmount macro: each call is recorded like ``with unmounting(...)``."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with unmounting(tracker, changer=changer, source=source):
                return func(*args, **kwargs)

        return wrapper

    return decorate
