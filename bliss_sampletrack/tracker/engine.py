"""``Tracker``: the tracker's engine, without BLISS. Which sample is on the goniometer, every change
recorded, and what a scan started now must be tagged with.

Built from a Redis client, a beamline, a sample registry and a few policies::

    from bliss_sampletrack.tracker.engine import Tracker

    tracker = Tracker("tracker", "id23-1", redis.Redis(), registry=ChainRegistry([...]))
    tracker.record_mount(sample, Source.SAMPLE_CHANGER)     # what changers, readers, macros call
    tracker.mount("LYS-0042")                               # a scientist, checked against the hardware
    tracker.scan_tag(start=True)                            # what a scan starting now carries

What it does (each rule in its own module, this class only puts them together):

- the state machine (:mod:`~bliss_sampletrack.tracker.state`): EMPTY, MOUNTED, UNKNOWN, CONFLICT,
  the contract events of each change, one sequence number per change;
- persistence (:mod:`~bliss_sampletrack.tracker.store`): snapshot, history and outbox in one Redis
  transaction, conditional on holding the tracker's owner key and on the state it replaces;
  changes are serialised by a lock and run to completion even when the caller is interrupted
  (:mod:`~bliss_sampletrack.core.shield`);
- keeping scans level with the hardware (:mod:`~bliss_sampletrack.tracker.settle`): changes in
  flight are waited for, witnesses (a changer link) are asked at each scan's start and end, and
  ``tag_checks`` (the controller's ICAT check) at its start;
- manual input (:mod:`~bliss_sampletrack.tracker.manual`): what a person types is judged by the
  witnesses and follows ``manual_policy``.

Listeners: ``listeners`` are called with ``(before, after, events)`` after each committed change
(in the greenlet that made it; a listener must not raise).

The BLISS controller (:class:`~bliss_sampletrack.tracker.controller.SampleTracker`) is this
engine plus configuration, shell commands, scan-metadata registration, the data-policy adapter,
the reader and delivery. ``bliss_sampletrack.testing`` builds an engine on fakeredis.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import gevent
import gevent.lock
from redis.exceptions import RedisError

from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.core.shield import complete
from bliss_sampletrack.errors import MountRefusedError, SampleTrackError, TrackerOwnedError
from bliss_sampletrack.tagging.scan_tag import sample_tag
from bliss_sampletrack.tracker import manual
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.registry import ChainRegistry, SampleRegistry
from bliss_sampletrack.tracker.settle import Doubt, InFlight, Witness
from bliss_sampletrack.tracker.state import Change, EventContext, Snapshot, TrackerState, numbered
from bliss_sampletrack.tracker.store import (
    OWNER_TTL_S,
    OutboxSeam,
    OwnershipLostError,
    RedisTrackerStore,
    StaleStateError,
    TrackerLease,
)
from bliss_sampletrack.tracker.views.text import local_time

log = logging.getLogger(__name__)

#: attempts at a change whose commit finds the state or the owner key changed under it
CHANGE_ATTEMPTS = 3
#: bound on each Redis call of the owner key's renewal greenlet
LEASE_CALL_TIMEOUT_S = 5.0
#: default bound on a scan's wait, at its start and end, for a hardware change being recorded
SETTLE_TIMEOUT_S = 10.0
UNKNOWN_BARCODE_POLICIES = ("accept", "refuse")

#: called after each committed change with (before, after, events)
Listener = Callable[[Snapshot, Snapshot, list[Event]], None]
#: asked at each scan's start: why its tag should doubt ``snapshot`` (e.g. ICAT fields lagging)
TagCheck = Callable[[Snapshot], Doubt | None]


@dataclass(frozen=True, slots=True)
class StandingWarning:
    """A warning as ``__info__`` shows it: only while ``holds()``, the situation it describes."""

    message: str
    at: datetime
    holds: Callable[[], bool]


class Tracker:
    """Which sample is on the goniometer; records every change; what a scan must be tagged with."""

    def __init__(
        self,
        name: str,
        beamline: str,
        redis: Any,
        *,
        registry: SampleRegistry | None = None,
        outbox: OutboxSeam | None = None,
        history_size: int = 1000,
        owner_ttl: float = OWNER_TTL_S,
        session: str = "(no session)",
        context: Callable[[], EventContext] | None = None,
        unknown_barcode: str = "accept",
        no_read: tuple[str, ...] = (),
        manual_policy: str = "conflict",
        settle_timeout: float = SETTLE_TIMEOUT_S,
        config_file: str = "(no configuration file)",
    ) -> None:
        for key, value, allowed in (
            ("unknown_barcode", unknown_barcode, UNKNOWN_BARCODE_POLICIES),
            ("manual_policy", manual_policy, manual.POLICIES),
        ):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        self.name = name
        self.beamline = beamline
        self.config_file = config_file
        self.registry = registry if registry is not None else ChainRegistry([])
        if outbox is None:
            from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

            outbox = RedisStreamOutbox(redis, beamline)
        self.outbox: Any = outbox
        self.store = RedisTrackerStore(redis, name, outbox, history_size)
        self.unknown_barcode = unknown_barcode
        self.no_read = no_read
        self.manual_policy = manual_policy
        self.settle_timeout = settle_timeout
        self.warnings: list[str] = []  # the last ten warnings, as logged (a log, not the situation)
        self._standing: dict[str, StandingWarning] = {}  # topic -> the warning while it holds
        self.listeners: list[Listener] = []
        self.tag_checks: list[TagCheck] = []
        self._event_context = context or (lambda: EventContext(self.beamline, session))
        self._noted: tuple[str, str | None] | None = None  # the last registry note warned about
        self._lease = TrackerLease(redis, name, session, owner_ttl)
        self._owning = False  # this object holds the owner key (and renews it)
        self._keeper: gevent.Greenlet | None = None
        self._lock = gevent.lock.RLock()
        self._inflight = InFlight()
        self._witnesses: list[Witness] = []
        self._reconciling: dict[str, gevent.Greenlet] = {}
        self._transitions: deque[tuple[int, str]] = deque(maxlen=64)  # (seq, what), for scan tags
        self._raw: str | None = None  # the state text in Redis this object's snapshot came from
        self._snapshot = self._restore()
        self._check_owner()

    def close(self) -> None:
        """Stop reconciling and give up the ownership; state and outbox stay in Redis."""
        reconciling, self._reconciling = list(self._reconciling.values()), {}
        gevent.killall(reconciling, timeout=LEASE_CALL_TIMEOUT_S)
        self._release()

    # -- state ----------------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def state(self) -> TrackerState:
        return self._snapshot.state

    @property
    def sample(self) -> Sample | None:
        """The mounted sample, or None when nothing is known to be mounted."""
        return self._snapshot.sample if self._snapshot.state is TrackerState.MOUNTED else None

    # -- manual input, checked against the hardware (tracker/manual.py) -------------------------------
    def mount(self, barcode: str | None = None, name: str | None = None, force: bool = False) -> Sample:
        """Record a sample mounted by hand: by barcode (resolved through the registry), by name, or both.

        Checked against the hardware (a changer, its presence sensor): a contradiction follows
        ``manual_policy`` (conflict: recorded ERROR, the tracker CONFLICT; refuse; trust).
        ``force=True`` records it anyway (the contradiction kept in the event's message), and
        takes a text that looks like a changer position (``1:01``) as a barcode."""
        if barcode is None and name is None:
            raise MountRefusedError(
                f"{self.name}.mount() needs a barcode or a name, e.g. {self.name}.mount('LYS-0042')"
            )
        if barcode is not None:
            manual.check_code(self.name, barcode, no_read=self.no_read, force=force)
            sample = self.resolve(barcode)
            if name is not None:
                sample = Sample(**{**sample.to_dict(), "name": name})
        else:
            sample = Sample(name=name)
        problem, _ = self._judge_manual(sample)
        verdict = manual.verdict(
            self.name, self.manual_policy, f"mount of {sample.label}", problem, force=force
        )
        self.record_mount(sample, Source.MANUAL, status=verdict.status, message=verdict.message)
        if verdict.status is not Status.SUCCESS:
            self._warn(verdict.message)
        return sample

    def unmount(self, force: bool = False) -> None:
        """Record that the sample was removed by hand (checked like :meth:`mount`)."""
        problem, support = self._judge_manual(None)
        verdict = manual.verdict(self.name, self.manual_policy, "unmount", problem, force=force)
        self._apply(
            lambda snap: machine.unmount(
                snap,
                Source.MANUAL,
                self._context(),
                status=verdict.status,
                message=verdict.message,
                confirmed=support,
            )
        )
        if verdict.status is not Status.SUCCESS:
            self._warn(verdict.message)

    def _judge_manual(self, sample: Sample | None) -> tuple[str | None, str]:
        """The first witness's contradiction of a manual operation, else what supports it."""
        support = ""
        for witness in list(self._witnesses):
            problem, backing = witness.judge_manual(sample)
            if problem is not None:
                return problem, ""
            support = support or backing
        return None, support

    # -- ownership: one writing session per tracker ---------------------------------------------------
    def take_over(self) -> str:
        """Make this session the tracker's only writer, whoever owned it (use only when the other
        session is known to be dead or closed: it will be refused from now on); says so."""
        with self._lock:
            previous = self._lease.take_over()
            self._hold()
            self._reload("taken over")
        if previous is not None and previous.token != self._lease.holder.token:
            self._warn(f"took over from {previous.describe()}")
        return f"tracker {self.name!r} is now recorded by this session (state {self.state})"

    def owner(self) -> str:
        """Who records this tracker's changes now (the owner key in Redis)."""
        holder = self._lease.current()
        if holder is None:
            return "nobody (the next change takes it)"
        if holder.token == self._lease.holder.token:
            return f"this session ({holder.describe()})"
        return holder.describe()

    def _check_owner(self) -> None:
        """Say at once when another session owns this tracker (it is taken at the first change)."""
        try:
            holder = self._lease.current()
        except RedisError as exc:
            self._warn(f"cannot read the owner key {self._lease.key!r}: {exc}")
            return
        if holder is not None and holder.token != self._lease.holder.token:
            self._warn(
                f"owned by {holder.describe()}: this session will refuse mounts until that session "
                f"closes it, its claim expires ({self._lease.ttl:g} s after it died), or "
                f"{self.name}.take_over()",
                topic="owner",
                holds=self._owned_elsewhere,
            )

    def _owned_elsewhere(self) -> bool:
        """Another session holds the owner key now (True too when Redis cannot say: the warning
        stays until it can)."""
        if self._owning:
            return False
        try:
            with gevent.Timeout(LEASE_CALL_TIMEOUT_S, TimeoutError):
                holder = self._lease.current()
        except (RedisError, OSError, TimeoutError):
            return True
        return holder is not None and holder.token != self._lease.holder.token

    def _own(self) -> None:
        """Hold the owner key before a change (raises TrackerOwnedError when another session does)."""
        self._lease.acquire()
        self._hold()

    def _hold(self) -> None:
        self._owning = True
        if self._keeper is None or self._keeper.dead:
            self._keeper = gevent.spawn(self._keep_lease)
            self._keeper.name = f"sampletrack-{self.name}-owner"

    def _keep_lease(self) -> None:
        """Renew the owner key every third of its TTL while this object holds it."""
        period = self._lease.ttl / 3
        while self._owning:
            gevent.sleep(period)
            try:
                with gevent.Timeout(LEASE_CALL_TIMEOUT_S, TimeoutError):
                    kept = self._lease.renew()
            except (RedisError, OSError) as exc:  # Redis down or slow: try again next period
                log.warning("tracker %r: cannot renew the owner key %r: %s", self.name, self._lease.key, exc)
                continue
            if not kept:
                self._owning = False
                self._warn(
                    f"lost the owner key {self._lease.key!r} (expired: session paused or Redis "
                    "restarted?); the next change takes it again if no other session has",
                    topic="owner",
                    holds=lambda: not self._owning,
                )

    def _release(self) -> None:
        if self._keeper is not None:
            self._keeper.kill(timeout=LEASE_CALL_TIMEOUT_S)
            self._keeper = None
        if not self._owning:
            return
        self._owning = False
        try:
            with gevent.Timeout(LEASE_CALL_TIMEOUT_S, TimeoutError):
                self._lease.release()
        except (RedisError, OSError) as exc:  # it expires by itself after the TTL
            log.warning("tracker %r: cannot release the owner key %r: %s", self.name, self._lease.key, exc)

    # -- samples and history --------------------------------------------------------------------------
    def resolve(self, barcode: str) -> Sample:
        """The sample record for ``barcode`` (registry), following the unknown-barcode policy.

        Registry warnings (an unknown barcode, a record from a stale cache) are logged, and shown
        by ``__info__`` only while a sample with that barcode is the tracker's: a look-up alone
        leaves none standing."""
        code = validate_barcode(barcode, no_read=self.no_read)
        sample = self.registry.resolve(code)
        if sample is not None:
            noted = (code, sample.registry_note)
            if sample.registry_note and noted != self._noted:  # once, not at every repeated read
                # e.g. from an old ICAT+ cache: stands while the tracker holds that record
                self._warn(
                    f"barcode {code!r}: {sample.registry_note}",
                    topic=f"barcode {code}",
                    holds=lambda: self._holds_record(code, noted_only=True),
                )
            self._noted = noted
            return sample
        if self.unknown_barcode == "refuse":
            raise MountRefusedError(
                f"barcode {code!r} is in no sample registry ({self.registry.describe()}); tracker "
                f"{self.name!r} refuses unknown barcodes: add it to the manifest, or set "
                f"'unknown_barcode: accept' in {self.config_file}"
            )
        self._warn(
            f"barcode {code!r} is in no sample registry ({self.registry.describe()}): recorded as is",
            topic=f"barcode {code}",
            holds=lambda: self._holds_record(code),
        )
        return Sample(barcode=code)

    def _holds_record(self, code: str, *, noted_only: bool = False) -> bool:
        """The tracker's sample (mounted, or doubted) has barcode ``code`` (and, with
        ``noted_only``, still carries a registry note)."""
        snap = self._snapshot
        sample = snap.sample
        if snap.state is TrackerState.EMPTY or sample is None or sample.barcode != code:
            return False
        return bool(sample.registry_note) if noted_only else True

    def history_text(self, count: int = 10) -> str:
        """The last ``count`` (>= 1) events, newest first, as a table."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"{self.name}.history(count): count is how many of the newest events to show and "
                f"must be a whole number >= 1 (the history keeps {self.store.history_size}), got {count!r}"
            )
        events = self.store.history(count)
        if not events:
            return f"tracker {self.name!r}: no event recorded yet"
        times = [local_time(e.occurred_at) for e in events]  # this machine's zone, named
        width = max(len(t) for t in times)
        lines = [f"{'when':{width}} {'event':10} {'status':7} {'source':15} sample"]
        for when, e in zip(times, events, strict=True):
            note = f"  ({e.message})" if e.message else ""
            lines.append(f"{when:{width}} {e.type:10} {e.status:7} {e.source:15} {e.sample.label}{note}")
        return "\n".join(lines)

    # -- the seam for sample changers, readers and macros ---------------------------------------------
    def record_mount(
        self,
        sample: Sample,
        source: Source,
        *,
        at: datetime | None = None,
        status: Status = Status.SUCCESS,
        message: str = "",
    ) -> list[Event]:
        """Record ``sample`` as mounted (the previous one, if any, as unmounted first)."""
        ctx = self._context()
        return self._apply(
            lambda snap: machine.mount(snap, sample, source, ctx, at=at, status=status, message=message)
        )

    def record_unmount(
        self,
        source: Source,
        *,
        at: datetime | None = None,
        status: Status = Status.SUCCESS,
        message: str = "",
    ) -> list[Event]:
        """Record that the sample position is empty; ``status`` ERROR: an unmount the hardware
        contradicts or nobody saw (``message`` says how): the tracker goes CONFLICT."""
        ctx = self._context()
        return self._apply(
            lambda snap: machine.unmount(snap, source, ctx, at=at, status=status, message=message)
        )

    def set_unknown(self, reason: str) -> None:
        self._apply(lambda snap: machine.degrade(snap, TrackerState.UNKNOWN, reason))

    def set_conflict(self, reason: str) -> None:
        self._apply(lambda snap: machine.degrade(snap, TrackerState.CONFLICT, reason))

    # -- keeping scans level with the hardware (tracker/settle.py) ------------------------------------
    def changing(self, what: str) -> AbstractContextManager[None]:
        """Enter before the first yield after the hardware changed, leave once it is recorded:
        a scan starting meanwhile waits for the record instead of reading the old state."""
        return self._inflight.entered(what)

    def add_witness(self, witness: Witness) -> None:
        """Ask ``witness`` at every scan's start and end whether the state agrees with the hardware."""
        if witness not in self._witnesses:
            self._witnesses.append(witness)

    def remove_witness(self, witness: Witness) -> None:
        if witness in self._witnesses:
            self._witnesses.remove(witness)

    def scan_tag(self, start: bool = True) -> dict[str, Any]:
        """The ``scan_info["sample"]`` tag now (a scan's START, or its END), level with the hardware.

        Waits (at most ``settle_timeout`` s) for hardware changes being recorded, then tags the
        recorded state, unless a witness contradicts it: the tag is then UNKNOWN/CONFLICT with the
        witness's reason (``tracker_state`` says what the tracker had), and the witness reconciles
        the tracker's state in the background. At the START under the ESRF policy, the tag is
        UNKNOWN too when the dataset's ICAT fields are not those of the state (a change while
        the scan started, or fields that could not be set): the file never names two samples."""
        pending = self._inflight.settle(self.settle_timeout)
        snap = self._current()
        doubt = (
            Doubt(TrackerState.UNKNOWN, f"still recording after {self.settle_timeout:g} s: {pending[0]}")
            if pending
            else (start and self._checked(snap)) or self._doubt(snap)
        )
        if doubt is None:
            return sample_tag(snap, self.name)
        tag = sample_tag(replace(snap, state=doubt.state, reason=doubt.reason), self.name)
        tag["tracker_state"] = str(snap.state)
        return tag

    def changes_between(self, first: int, last: int) -> list[str]:
        """What changed after change ``first`` up to ``last`` (sequence numbers), oldest first."""
        known = [what for seq, what in self._transitions if first < seq <= last]
        missing = last - first - len(known)
        if missing > 0:
            known.insert(0, f"{missing} change(s) not known to this session (see {self.name}.history())")
        return known

    def _checked(self, snap: Snapshot) -> Doubt | None:
        """The first ``tag_checks`` doubt about ``snap`` at a scan's start."""
        for check in list(self.tag_checks):
            doubt = check(snap)
            if doubt is not None:
                return doubt
        return None

    def _doubt(self, snap: Snapshot) -> Doubt | None:
        for witness in list(self._witnesses):
            doubt = witness.doubt(snap)
            if doubt is None:
                continue
            if doubt.reconcile:
                self._reconcile(witness, doubt)
            return doubt
        return None

    def _reconcile(self, witness: Witness, doubt: Doubt) -> None:
        """Let ``witness`` bring the state in line, once at a time, outside the scan's greenlet."""
        running = self._reconciling.get(witness.name)
        if running is not None and not running.dead:
            return
        log.warning("tracker %r: %s; reconciling with %r", self.name, doubt.reason, witness.name)
        greenlet = gevent.spawn(witness.reconcile)
        greenlet.name = f"sampletrack-{self.name}-reconcile-{witness.name}"
        self._reconciling[witness.name] = greenlet

    # -- internals ------------------------------------------------------------------------------------
    def _warn(
        self, message: str, *, topic: str | None = None, holds: Callable[[], bool] | None = None
    ) -> None:
        """Log ``message`` and show it in ``__info__`` while ``holds()`` (default: until the next
        recorded change). A new warning of the same ``topic`` replaces the previous one."""
        log.warning("tracker %r: %s", self.name, message)
        self.warnings = [*self.warnings[-9:], message]
        if holds is None:
            holds = self._until_change()
        self._standing[topic or message] = StandingWarning(message, datetime.now(UTC), holds)

    def _until_change(self) -> Callable[[], bool]:
        """True until the tracker's next recorded change (here or in another session)."""
        seq = self._snapshot.seq
        return lambda: self._snapshot.seq == seq

    def _settled(self, topic: str) -> None:
        """The situation of ``topic``'s warning is over (e.g. a good read after a failed one)."""
        self._standing.pop(topic, None)

    def standing_warnings(self) -> list[StandingWarning]:
        """The warnings whose situation still holds, oldest first; the others are dropped."""
        for topic, warning in list(self._standing.items()):
            if not warning.holds():
                del self._standing[topic]
        return sorted(self._standing.values(), key=lambda w: w.at)

    def _restore(self) -> Snapshot:
        try:
            self._raw, snapshot = self.store.read()
        except SampleTrackError as exc:
            self._raw = unreadable = self._redis_text(self.store.state_key)
            # stands until the state in Redis is written again (the next change, here or elsewhere)
            self._warn(str(exc), topic="restore", holds=lambda: self._raw == unreadable)
            return Snapshot.initial(str(exc))
        if snapshot is None:
            return Snapshot.initial()
        log.info("tracker %r restored %s from Redis", self.name, snapshot.state)
        return snapshot

    def _current(self) -> Snapshot:
        """The snapshot a scan is tagged with: this object's while it owns the tracker (every
        change goes through it), else what Redis holds now (another session may have changed it)."""
        if self._owning:
            return self._snapshot
        with self._lock:
            try:
                with gevent.Timeout(LEASE_CALL_TIMEOUT_S, TimeoutError):
                    raw, snapshot = self.store.read()
            except (RedisError, OSError, SampleTrackError) as exc:
                log.warning("tracker %r: cannot read its state from Redis, using its own: %s", self.name, exc)
                return self._snapshot
            if raw != self._raw:
                self._raw, self._snapshot = raw, snapshot or Snapshot.initial()
            return self._snapshot

    def _redis_text(self, key: str) -> str | None:
        raw = self.store.redis.get(key)
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    def _reload(self, why: str) -> None:
        before = self._snapshot.state
        self._snapshot = self._restore()
        log.warning(
            "tracker %r: reloaded its state from Redis (%s): %s, was %s",
            self.name,
            why,
            self._snapshot.state,
            before,
        )

    def _context(self) -> EventContext:
        return self._event_context()

    def _apply(self, make: Callable[[Snapshot], Change]) -> list[Event]:
        """Compute a change from the current snapshot and commit it, as the tracker's owner.

        Run to completion even when the caller is interrupted meanwhile (Ctrl-C in a macro): the
        interruption is raised once the change is recorded (see core/shield.py)."""
        return complete(f"tracker {self.name!r}: change", lambda: self._commit(make))

    def _commit(self, make: Callable[[Snapshot], Change]) -> list[Event]:
        with self._lock:
            for _ in range(CHANGE_ATTEMPTS):
                if not self._owning:  # else the commit itself checks that the key is still ours
                    self._own()
                before = self._snapshot
                change = numbered(before, make(before))
                try:
                    # recorded (state, history, outbox) first, if still the owner and still `before`
                    self._raw = self.store.commit(
                        change.snapshot, change.events, lease=self._lease, expect=self._raw, check_state=True
                    )
                except StaleStateError as exc:
                    self._reload(str(exc))  # another writer, or Redis lost data: start from Redis
                    continue
                except OwnershipLostError as exc:
                    log.warning("tracker %r: %s; taking it again", self.name, exc)
                    self._owning = False
                    continue
                except TrackerOwnedError:
                    self._owning = False
                    raise
                return self._applied(before, change)
        raise SampleTrackError(
            f"tracker {self.name!r}: its state in Redis changed {CHANGE_ATTEMPTS} times while recording "
            "a change; nothing was recorded: is another process writing it? try again"
        )

    def _applied(self, before: Snapshot, change: Change) -> list[Event]:
        self._snapshot = after = change.snapshot
        if after.seq != before.seq:
            what = f"#{after.seq} {after.state}"
            if after.state is TrackerState.MOUNTED and after.sample is not None:
                what += f" {after.sample.label} ({after.source})"
            elif after.reason:
                what += f": {after.reason}"
            self._transitions.append((after.seq, what))
            for listener in list(self.listeners):
                listener(before, after, change.events)
        for event in change.events:
            log.info(
                "tracker %r: %s %s (%s, %s)",
                self.name,
                event.type,
                event.sample.label,
                event.source,
                event.status,
            )
        return change.events
