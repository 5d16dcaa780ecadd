"""``ChangerLink``: records every load and unload of a sample changer on a ``SampleTracker``.

Beacon YAML (``plugin: bliss``)::

    - name: sc_link
      plugin: bliss
      package: bliss_sampletrack.changers.link
      class: ChangerLink
      tracker: $tracker
      changer: $sc
      reader: $bcr               # optional: read each loaded pin when the changer itself did not
      check_presence: true       # cross-check the goniometer's presence sensor
      robot_actions_size: 1000   # robot-action records kept in Redis

or from Python: ``link_changer(tracker, sc)``. Add the link to the session's ``config-objects``
(after the tracker and the changer) so that it follows the changer from the session's start.

The link subscribes to the changer's events and, for each, decides what to record with
:func:`~bliss_sampletrack.changers.crosscheck.decide` (see that module for every cross-check and
for pins with neither barcode nor name) and records it through the tracker's public seam
(``record_mount``/``record_unmount``/``set_unknown``/``set_conflict``, source ``sample_changer``),
plus one robot-action record per load/unload (:mod:`~bliss_sampletrack.changers.robot_actions`).
The sample is the tracker's registry record for the barcode, with ``changer_name`` and
``changer_position`` set, so scans carry where the pin came from.

Manual mounts while the changer is there: ``sc_link.manual_mount("LYS-0042")`` records the mount
with source ``manual`` (``tracker.mount(...)`` does the same, without checking the changer). Any
sample the tracker holds from another source than the changer means "mounted by hand" to the
cross-check, so the presence sensor seeing a pin that the changer did not load is then expected.
Call it before or after placing the pin: if after, the sensor's change briefly puts the tracker
in CONFLICT ("a pin that nobody mounted"), which the manual mount then resolves.

Keeping scans level with the hardware (see :mod:`~bliss_sampletrack.tracker.settle`): from the
moment the changer reports a change, before anything yields, the link tells the tracker a change
is in flight (a scan starting then waits for the record); the record runs to completion even
if the changer's caller is interrupted (Ctrl-C right after the load: the interruption is raised
once the load is recorded, see :mod:`~bliss_sampletrack.core.shield`). And the link is the
tracker's witness: at every scan's start and end it compares the tracker's state with what the
changer has mounted, its presence sensor and any move going on (cheap: no motion); a
disagreement is tagged as doubt and reconciled (:meth:`ChangerLink.check`) in the background.

Caveats:
- The link records synchronously, in the greenlet of the changer's action: when ``sc.mount()``
  returns, the tracker and the robot-action records are up to date.
- A failure to record (e.g. the registry refuses an unknown barcode) never interrupts the robot:
  it is logged, kept in ``warnings`` and, where it leaves the tracker unsure, puts it UNKNOWN.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from redis.exceptions import RedisError

from bliss_sampletrack.changers.crosscheck import (
    Bookkeeping,
    Decision,
    Record,
    decide,
    hardware_doubt,
    manual_judgement,
    reconcile,
)
from bliss_sampletrack.changers.errors import ChangerError, ChangerOfflineError
from bliss_sampletrack.changers.protocol import ChangerEvent, ChangerEventKind, SampleChanger
from bliss_sampletrack.changers.recording import TrackerSeam, record_failed_mount, sample_for
from bliss_sampletrack.changers.robot_actions import DEFAULT_SIZE, RobotAction, RobotActionLog
from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core import Sample, Source, Status
from bliss_sampletrack.core.shell import command
from bliss_sampletrack.core.shield import complete
from bliss_sampletrack.core.snapshot import Doubt, Snapshot, TrackerState, Witness
from bliss_sampletrack.errors import (
    InvalidBarcodeError,
    InvalidSampleError,
    MountRefusedError,
    ReaderError,
    SampleTrackError,
)
from bliss_sampletrack.readers.protocol import BarcodeReader

log = logging.getLogger(__name__)

KEYS = {"tracker", "changer", "reader", "reader_timeout", "check_presence", "robot_actions_size", "sync"}
_MOVES = {ChangerEventKind.LOAD_STARTED: "load", ChangerEventKind.UNLOAD_STARTED: "unload"}


@runtime_checkable
class Settling(Protocol):
    """What a tracker offers to keep scans level with the hardware (``SampleTracker`` has it)."""

    def changing(self, what: str) -> AbstractContextManager[None]: ...

    def add_witness(self, witness: Witness) -> None: ...

    def remove_witness(self, witness: Witness) -> None: ...


@runtime_checkable
class PuckViews(Protocol):
    """A tracker that shows a changer's pucks with its registry's names (``SampleTracker``):
    ``tracker.pucks()`` lists the changers shown, and the changer's ``__info__`` gets the view."""

    def show_changer(self, changer: SampleChanger) -> Callable[[], str]: ...

    def hide_changer(self, changer: SampleChanger) -> None: ...


@runtime_checkable
class PuckViewHook(Protocol):
    """A changer whose ``__info__`` shows ``puck_view()`` when set (the simulated and generic ones)."""

    puck_view: Callable[[], str] | None


@runtime_checkable
class Inventories(Protocol):
    """A tracker that takes puck inventories (``SampleTracker``): ``sc.inventory()`` runs its
    ``inventory(sc)``, the changer's ``__info__`` shows its summary, and a manual mount of a
    sample the last inventory read in a puck is a contradiction (``manual_policy``)."""

    def inventory(self, changer: SampleChanger) -> object: ...

    def inventory_summary(self, changer: SampleChanger) -> str | None: ...

    def inventory_contradiction(self, changer: SampleChanger, sample: Sample) -> str | None: ...


@runtime_checkable
class InventoryHook(Protocol):
    """A changer whose ``inventory()`` and ``__info__`` use these when set (the simulated one)."""

    inventory_runner: Callable[[], object] | None
    inventory_summary: Callable[[], str | None] | None


class ChangerLink:
    """Follows one sample changer and records what it does on one tracker."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ObjectConfig(name, config)
        cfg.check_known(KEYS)
        self.name = name
        self.config_file = cfg.filename
        tracker = config.get("tracker")
        if not isinstance(tracker, TrackerSeam):
            raise cfg.error("tracker", f"must reference a SampleTracker ($tracker), got {tracker!r}")
        changer = config.get("changer")
        if not isinstance(changer, SampleChanger):
            raise cfg.error(
                "changer",
                "must reference a sample changer (a SimulatedChanger or BlissObjectChanger), "
                f"got {changer!r}",
            )
        self.tracker: TrackerSeam = tracker
        self.changer: SampleChanger = changer
        self.reader: Any = config.get("reader")
        if self.reader is not None and not isinstance(self.reader, BarcodeReader):
            raise cfg.error("reader", f"must reference a barcode reader, got {type(self.reader).__name__}")
        self.reader_timeout = cfg.positive("reader_timeout", 3.0)
        self.check_presence = cfg.get("check_presence", bool, True)
        size = cfg.get("robot_actions_size", int, DEFAULT_SIZE)
        if size < 1:
            raise cfg.error("robot_actions_size", f"must be >= 1, got {size}")
        self.actions = RobotActionLog.for_tracker(tracker, size)
        self.warnings: list[str] = []
        self.missed: str | None = None  # a changer event Redis could not take (see _on_event)
        self.moving: str | None = None  # the changer's move going on, as its events tell
        self._subscribed = False
        self._puck_view: Callable[[], str] | None = None  # what this link gave the changer
        self.activate(sync=cfg.get("sync", bool, True))

    # -- lifecycle -----------------------------------------------------------------------------------
    def activate(self, sync: bool = True) -> None:
        """Follow the changer (done at construction); ``sync``: reconcile with the tracker first."""
        if sync:
            self.check()
        if not self._subscribed:
            self.changer.subscribe(self._on_event)
            self._subscribed = True
        if isinstance(self.tracker, Settling):
            self.tracker.add_witness(self)
        if isinstance(self.tracker, PuckViews):  # the changer's __info__ names its pins
            self._puck_view = self.tracker.show_changer(self.changer)
            if isinstance(self.changer, PuckViewHook):
                self.changer.puck_view = self._puck_view
        if isinstance(self.tracker, Inventories) and isinstance(self.changer, InventoryHook):
            self.changer.inventory_runner = functools.partial(self.tracker.inventory, self.changer)
            self.changer.inventory_summary = functools.partial(self.tracker.inventory_summary, self.changer)

    def close(self) -> None:
        """Stop following the changer (the records stay in Redis)."""
        if self._subscribed:
            self.changer.unsubscribe(self._on_event)
            self._subscribed = False
        if isinstance(self.tracker, Settling):
            self.tracker.remove_witness(self)
        if isinstance(self.tracker, PuckViews):
            self.tracker.hide_changer(self.changer)
        if isinstance(self.changer, PuckViewHook) and self.changer.puck_view is self._puck_view:
            self.changer.puck_view = None  # only ours: another link may have set its own since
        self._puck_view = None
        if isinstance(self.changer, InventoryHook):
            self.changer.inventory_runner = self.changer.inventory_summary = None

    __close__ = close

    # -- shell commands -----------------------------------------------------------------------------
    @command
    def manual_mount(self, barcode: str | None = None, name: str | None = None) -> Sample:
        """Record a sample mounted by hand (source ``manual``) while the changer has nothing mounted."""
        if barcode is None and name is None:
            raise MountRefusedError(
                f"{self.name}.manual_mount() needs a barcode or a name, "
                f"e.g. {self.name}.manual_mount('LYS-0042')"
            )
        mounted = self.changer.mounted
        if mounted is not None:
            raise ChangerError(
                f"changer {self.changer.name!r} has {mounted.address} on the goniometer: unmount it with "
                f"{self.changer.name}.unmount() before mounting by hand"
            )
        sample = sample_for(self.tracker, barcode=barcode, name=name)
        self.tracker.record_mount(sample, Source.MANUAL)
        return sample

    def manual_unmount(self) -> None:
        """Record that the sample mounted by hand was removed by hand."""
        self.tracker.record_unmount(Source.MANUAL)

    def check(self) -> str:
        """Compare the changer's view with the tracker's now; a disagreement is a CONFLICT.

        A tracker that knows nothing (UNKNOWN, e.g. its first start) learns the changer's pin.
        Returns (and logs) what was found."""
        try:
            mounted = self.changer.mounted
            present = self.changer.sample_present
        except ChangerOfflineError as exc:
            self._warn(f"cannot compare changer {self.changer.name!r} with the tracker: {exc}")
            return str(exc)
        snap = self.tracker.snapshot
        barcode = mounted.barcode if mounted else None
        name = mounted.name if mounted else None
        same = False
        if mounted is not None and snap.sample is not None and (barcode or name):
            same = snap.same_sample(Sample(barcode=barcode, name=name))
        decision = reconcile(
            mounted.address if mounted else None,
            barcode,
            name,
            present,
            self._book(),
            changer=self.changer.name,
            same_sample=same,
        )
        self._apply(decision, at=datetime.now(UTC))
        outcome = decision.message or (
            f"changer {self.changer.name!r} and tracker {self.tracker.name!r} agree"
            if decision.record is Record.NOTHING
            else f"tracker {self.tracker.name!r} learnt {decision.address} from the changer"
        )
        log.info("link %r: %s", self.name, outcome)
        return outcome

    # -- the tracker's witness (tracker/settle.py) ----------------------------------------------------
    def doubt(self, snapshot: Snapshot) -> Doubt | None:
        """Why ``snapshot`` may not be what the changer has on the goniometer now, or None."""
        try:
            mounted = self.changer.mounted
            present = self.changer.sample_present
        except ChangerOfflineError as exc:  # nothing to compare with: the OFFLINE event said so
            log.debug("link %r: changer offline, no cross-check: %s", self.name, exc)
            return None
        return hardware_doubt(
            snapshot,
            mounted,
            present,
            changer=self.changer.name,
            moving=self.moving,
            check_presence=self.check_presence,
        )

    def judge_manual(self, sample: Sample | None) -> tuple[str | None, str]:
        """A manual mount of ``sample`` (None: unmount) against the changer (see crosscheck)."""
        try:
            mounted = self.changer.mounted
            present = self.changer.sample_present
            contents = self.changer.contents() if sample is not None and mounted is None else []
        except ChangerOfflineError as exc:
            return None, f"(changer {self.changer.name!r} offline, not checked: {exc})"
        problem, support = manual_judgement(
            sample, mounted, present, contents, changer=self.changer.name, check_presence=self.check_presence
        )
        inventories = isinstance(self.tracker, Inventories)
        if problem is None and sample is not None and mounted is None and inventories:
            try:  # the pins as last read, beside the changer's bookkeeping (contents)
                problem = self.tracker.inventory_contradiction(self.changer, sample)  # type: ignore[attr-defined]
            except RedisError as exc:
                support = f"{support} (the last inventory could not be read: {exc})".strip()
        return (problem, "") if problem is not None else (problem, support)

    def reconcile(self) -> str:
        """Bring the tracker in line with the changer (:meth:`check`), as the record of a change."""
        with self._changing("reconciliation with the changer"):
            return complete(f"link {self.name!r}: reconciliation", self.check)

    def _changing(self, what: str) -> AbstractContextManager[None]:
        return self.tracker.changing(what) if isinstance(self.tracker, Settling) else nullcontext()

    def robot_actions(self, count: int = 10) -> list[RobotAction]:
        """The last ``count`` robot actions recorded on the tracker, newest first."""
        return self.actions.last(count)

    def show_actions(self, count: int = 10) -> None:
        """Print the last ``count`` robot actions."""
        print(self.actions.text(count))

    # -- internals -------------------------------------------------------------------------------------
    def _book(self, reader: str | None = None) -> Bookkeeping:
        snap = self.tracker.snapshot
        return Bookkeeping(
            tracker=self.tracker.name,
            link=self.name,
            state=snap.state,
            sample_label=snap.sample.label if snap.sample else None,
            source=snap.source,
            manual=snap.state is TrackerState.MOUNTED and snap.source is not Source.SAMPLE_CHANGER,
            check_presence=self.check_presence,
            reader=reader,
        )

    def _verify(self, event: ChangerEvent) -> ChangerEvent:
        """Read the loaded pin with the link's reader (when the changer read nothing itself)."""
        try:
            read = self.reader.read(self.reader_timeout)
        except (ReaderError, InvalidBarcodeError) as exc:  # a no-read too: reported, not a mismatch
            return dataclasses.replace(event, read_error=str(exc))
        return dataclasses.replace(event, read=read.barcode)

    def _on_event(self, event: ChangerEvent) -> None:
        """Record one changer event; runs in the changer's action greenlet (or its poller).

        When Redis cannot be written (beacon's Redis restarting, the network down) the robot has
        moved all the same: raising here would break the changer's action or stop its poller and
        still record nothing. So the miss is logged as an ERROR, kept in ``missed`` (shown by
        ``__info__``), and the tracker is reconciled with the changer (``check()``) at the next
        event it sees, before that event is recorded: the tracker learns the pin, or goes
        CONFLICT, never keeps the old sample silently.
        """
        move = _MOVES.get(event.kind)
        if move is not None:
            self.moving = f"{move} of {event.pin} since {event.at:%H:%M:%S.%f}"[:-3]
            return  # the record is made when the action ends (with its start time)
        if event.kind is not ChangerEventKind.PRESENCE:  # the move (if any) ended, or was lost
            self.moving = None
        # in flight from now (nothing yielded since the changer changed), recorded to completion
        with self._changing(f"{event.kind} of {event.pin} by changer {self.changer.name!r}"):
            complete(f"link {self.name!r}: {event.kind} of {event.pin}", lambda: self._on_change(event))

    def _on_change(self, event: ChangerEvent) -> None:
        try:
            if self.missed is not None:
                self.check()
                self.missed = None
            self._record(event)
        except (RedisError, OSError) as exc:
            self.missed = f"{event.kind} of {event.address or 'the gripper'} at {event.at:%H:%M:%S}"
            message = (
                f"{self.missed} not recorded on tracker {self.tracker.name!r} ({type(exc).__name__}: {exc}); "
                "the link compares the tracker with the changer at its next event, or call check()"
            )
            log.error("link %r: %s", self.name, message)
            self.warnings = [*self.warnings[-9:], message]

    def _record(self, event: ChangerEvent) -> None:
        if event.kind is ChangerEventKind.ONLINE:
            self.check()  # what happened while it was offline was not seen
            return
        reader = getattr(getattr(self.changer, "reader", None), "name", None)
        if (
            event.kind is ChangerEventKind.LOADED
            and event.read is None
            and event.read_error is None
            and self.reader is not None
            and event.present is not False
        ):
            event = self._verify(event)
            reader = getattr(self.reader, "name", None)
        decision = decide(event, self._book(reader))
        self._apply(decision, at=event.at, event=event)

    def _apply(self, decision: Decision, *, at: datetime, event: ChangerEvent | None = None) -> None:
        action_status, action_message = decision.action_status, decision.action_message
        sample: Sample | None = None
        try:
            if decision.record is Record.MOUNT:
                try:
                    sample = sample_for(
                        self.tracker,
                        barcode=decision.barcode,
                        name=decision.name,
                        changer=self.changer.name,
                        address=decision.address,
                    )
                except (MountRefusedError, InvalidBarcodeError, InvalidSampleError) as exc:
                    reason = (
                        f"changer {self.changer.name!r} mounted {decision.address} but tracker "
                        f"{self.tracker.name!r} cannot record it: {exc}"
                    )
                    self._warn(reason)
                    self.tracker.set_unknown(reason)
                    action_message = "; ".join(m for m in (action_message, reason) if m)
                else:
                    if decision.status is Status.SUCCESS:
                        self.tracker.record_mount(sample, Source.SAMPLE_CHANGER, at=at)
                    else:
                        record_failed_mount(
                            self.tracker, sample, Source.SAMPLE_CHANGER, at=at, message=decision.message
                        )
            elif decision.record is Record.UNMOUNT:
                sample = self.tracker.snapshot.sample  # its registry name, for the robot action
                self.tracker.record_unmount(
                    Source.SAMPLE_CHANGER, at=at, status=decision.status, message=decision.message
                )
                if decision.conflict_after:
                    self.tracker.set_conflict(decision.conflict_after)
            elif decision.record is Record.UNKNOWN:
                self.tracker.set_unknown(decision.message)
            elif decision.record is Record.CONFLICT:
                self.tracker.set_conflict(decision.message)
        except SampleTrackError as exc:  # e.g. ICAT fields not updated: recorded, but say so
            self._warn(f"tracker {self.tracker.name!r}: {exc}")
        if decision.action is not None and event is not None:
            self.actions.record(
                RobotAction(
                    action_type=decision.action,
                    start=event.started_at or event.at,
                    end=event.at,
                    status=action_status,
                    message=action_message,
                    barcode=decision.barcode or event.barcode,
                    address=decision.address,
                    changer=self.changer.name,
                    sample_name=sample.name if sample is not None else event.name,
                )
            )

    def _warn(self, message: str) -> None:
        log.warning("link %r: %s", self.name, message)
        self.warnings = [*self.warnings[-9:], message]

    def __info__(self) -> str:
        mounted = self.changer.mounted
        snap = self.tracker.snapshot
        lines = [f"ChangerLink {self.name!r}: changer {self.changer.name!r} -> tracker {self.tracker.name!r}"]
        lines.append(f"  following : {'yes' if self._subscribed else 'no (closed)'}")
        lines.append(
            f"  changer   : {mounted.address + ' mounted' if mounted else 'nothing mounted'}"
            f", presence sensor {self.changer.sample_present}"
        )
        which = snap.sample.label if snap.sample else "-"
        lines.append(f"  tracker   : {snap.state} {which}" + (f" ({snap.reason})" if snap.reason else ""))
        own = getattr(getattr(self.changer, "reader", None), "name", None)
        reader = getattr(self.reader, "name", None) or (f"{own} (the changer's)" if own else "none")
        lines.append(f"  reader    : {reader}")
        lines.append(f"  presence  : {'checked' if self.check_presence else 'not checked'}")
        if self.missed is not None:
            lines.append(f"  missed    : {self.missed} (not recorded: reconciled at the next event)")
        for warning in self.warnings[-3:]:
            lines.append(f"  warning   : {warning}")
        lines.append("  recent robot actions:")
        lines.extend(f"    {line}" for line in self.actions.text(5).splitlines())
        return "\n".join(lines)


def link_changer(
    tracker: TrackerSeam,
    changer: SampleChanger,
    *,
    name: str | None = None,
    reader: Any = None,
    check_presence: bool = True,
    sync: bool = True,
) -> ChangerLink:
    """A :class:`ChangerLink` from Python objects (no YAML); ``close()`` it when done."""
    config: dict[str, Any] = {
        "tracker": tracker,
        "changer": changer,
        "check_presence": check_presence,
        "sync": sync,
    }
    if reader is not None:
        config["reader"] = reader
    return ChangerLink(name or f"{changer.name}_link", config)
