"""Provenance soak: does every saved scan carry the sample physically on the goniometer?

    .venv/bin/python tools/provenance.py --seed N --scans K [--policy-fraction 0.33] [--json FILE]
                                         [--workdir DIR] [--keep]

Starts a real beacon and the demo BLISS session ``sampletrack_demo`` (simulated changer ``sc``
with the simulated reader ``bcr`` on its gripper, tracker ``tracker``, link ``sc_link``) in this
process, then runs a seeded random schedule of K saved ``loopscan``\\ s, each step one action
(or none) and one scan: changer loads, unloads and exchanges with the scan started 0-10 ms after
the move ends, overlapping its end, or running while it happens (or while the goniometer goes
out and back: same state at both ends of the scan); changer actions killed with
KeyboardInterrupt 0-4 ms after the hardware step or during the move; manual mounts and unmounts
that agree with the hardware or contradict it; pins moved by hand without telling the tracker;
reader no-reads; changer faults. A fraction of the scans run under the ESRF data policy.

Ground truth comes from the simulated hardware only, never from the tracker: the pin on the
goniometer is ``sc._mounted`` (the changer's own state) unless this soak took it away by hand,
or the pin this soak placed by hand; the presence sensor is not truth. Every change of that is
stamped on a :class:`Timeline` at the very moment it happens (the changer's event hub is wrapped,
so the stamp is taken before any subscriber, the link included, runs; hand moves are stamped by
the soak itself). A user scan-metadata category ``provenance`` (START and END) records where the
timeline stood when the scan's START and END metadata were taken: the scan's start window is
from just before ``loopscan`` is called to its START metadata.

Afterwards each scan is read back independently, from Redis (a fresh blissdata ``DataStore``,
``load_scan(key)``) and from its HDF5 file (h5py), and classified by :func:`classify`.

Exit status: 0 when no scan is WRONG, FALSE_EMPTY, UNFLAGGED_CHANGE, SILENT, MISMATCH or RAISED;
1 otherwise; 2 when the soak could not run.

Caveats: the schedule (the kind of each step and its random draws) is the same for a seed, but
gevent's timing decides some outcomes (whether a kill lands before or after the tracker recorded
the move), and so the states later steps meet. The tracker's ``sample`` callable may wait (a
change in flight) while the ``provenance`` one runs: the soak therefore also wraps the ``sample``
category's callable for the run and stamps the timeline just before and just after it. The start
window ends when the START tag was made (lenient: any state up to then is right), and "changed
during the scan" means a change after the START tag was made and before the END tag began (so a
change the END tag could not have seen is not held against it). Without that wrapper (the
category missing) the ``provenance`` stamps are used.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SESSION = "sampletrack_demo"
CATEGORY = "provenance"
PROPOSAL = "pv0001"
COLLECTION = "provenance"
BEAMLINE_DIR = "demo"
MOVE_TIME_S = 0.03  # the changer's load and unload times during the soak
CHANGER_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 60.0  # a step's greenlets still running after this: a hang (reported)
HAND_BARCODES = tuple(f"HND-{n:04d}" for n in range(1, 41))  # pins placed by hand: no changer knows them
NO_READ_LABELS = (None, "ERROR", "NOREAD")  # no label at all, or the reader's no-read answers
FAULTS = (
    ("dropped_pin", "load"),
    ("dropped_pin", "unload"),
    ("robot_error", "load"),
    ("robot_error", "unload"),
    ("no_pin_detected", "load"),
    ("pin_stays", "unload"),
)
#: the schedule's steps and their weights; every step runs exactly one scan
STEP_WEIGHTS: dict[str, int] = {
    "scan": 8,
    "load": 14,  # load or exchange; the scan 0-10 ms after the move ends, or overlapping its end
    "unload": 9,
    "scan_during_load": 9,
    "scan_during_round_trip": 6,  # out and back during one scan: same state at both ends
    "kill_after_step": 8,
    "kill_during_move": 5,
    "manual_agree": 8,
    "manual_contradict": 5,
    "hand_remove": 4,
    "hand_place": 4,
    "noread": 5,
    "fault": 8,
}

# --- classes --------------------------------------------------------------------------------------
OK = "OK"
FLAGGED_DOUBT = "FLAGGED_DOUBT"
SILENT = "SILENT"
WRONG = "WRONG"
FALSE_EMPTY = "FALSE_EMPTY"
UNFLAGGED_CHANGE = "UNFLAGGED_CHANGE"
MISMATCH = "MISMATCH"
RAISED = "RAISED"
CLASSES = (OK, FLAGGED_DOUBT, SILENT, WRONG, FALSE_EMPTY, UNFLAGGED_CHANGE, MISMATCH, RAISED)
#: the classes that fail the soak
BAD = (SILENT, WRONG, FALSE_EMPTY, UNFLAGGED_CHANGE, MISMATCH, RAISED)
DOUBT_STATES = ("UNKNOWN", "CONFLICT")

#: a physical state of the goniometer: the identity of the pin on it (its barcode, or
#: ``(no barcode)@<address>`` for a changer pin without one), None when it is empty
Phys = str | None


def describe(state: Phys) -> str:
    return "(empty)" if state is None else state


class SoakError(RuntimeError):
    """The soak could not run (set-up failed)."""


# ------------------------------------------------------------------------------------------------
# ground truth: the hardware timeline
# ------------------------------------------------------------------------------------------------
class Timeline:
    """Every physical state of the goniometer, in order, with a monotonic stamp and the reason.

    Positions (``mark()``) rather than stamps delimit windows: a mark taken in the same greenlet
    switch as a change is exactly before or after it, whatever the clock's resolution."""

    def __init__(self, initial: Phys, at: float | None = None) -> None:
        self.states: list[Phys] = [initial]
        self.stamps: list[float] = [time.monotonic() if at is None else at]
        self.whys: list[str] = ["initial"]

    def record(self, state: Phys, why: str, at: float | None = None) -> bool:
        """Append ``state`` if it differs from the current one; True when it did."""
        if state == self.states[-1]:
            return False
        self.states.append(state)
        self.stamps.append(time.monotonic() if at is None else at)
        self.whys.append(why)
        return True

    @property
    def current(self) -> Phys:
        return self.states[-1]

    def mark(self) -> int:
        """The position now: the index of the current state."""
        return len(self.states) - 1

    def states_between(self, first: int, last: int) -> frozenset[Phys]:
        """Every state from mark ``first`` to mark ``last`` (both included)."""
        return frozenset(self.states[first : last + 1])

    def changed_between(self, first: int, last: int) -> bool:
        return last > first

    def entries(self, first: int, last: int) -> list[dict[str, Any]]:
        """The states from ``first`` to ``last`` for reports (stamps relative to the first)."""
        base = self.stamps[first]
        return [
            {
                "state": describe(self.states[i]),
                "t_ms": round((self.stamps[i] - base) * 1000, 2),
                "why": self.whys[i],
            }
            for i in range(first, last + 1)
        ]

    def index_at(self, stamp: float) -> int:
        return max(0, bisect.bisect_right(self.stamps, stamp) - 1)


# ------------------------------------------------------------------------------------------------
# the classifier (pure)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanEvidence:
    """What is known of one scan, from independent sources."""

    window: frozenset[Phys]  # physical states during the start window (None: empty goniometer)
    hw_changed: bool  # the hardware changed between the scan's START and END metadata
    redis_tag: Mapping[str, Any] | None  # scan_info["sample"] read back through blissdata
    h5_tag: Mapping[str, Any] | None  # /<n>.1/sample read back with h5py (attributes with "@")
    policy: bool = False  # the scan ran under the ESRF data policy
    icat_sample_name: str | None = None  # scan_info["dataset_metadata_snapshot"]["Sample_name"]
    sample_names: frozenset[str] = frozenset()  # every name and barcode that names a sample
    raised: str | None = None  # "Type: message" when the scan raised


@dataclass
class Verdict:
    classes: list[str]
    policy_mismatch: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def bad(self) -> list[str]:
        return [c for c in self.classes if c in BAD]


def flag(value: Any) -> bool:
    """A boolean attribute as Redis (bool) or HDF5 (numpy bool, int, bytes) gives it back."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None else False


def text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def has_tag(tag: Mapping[str, Any] | None) -> bool:
    return bool(tag) and tag is not None and "state" in tag


def classify(ev: ScanEvidence) -> Verdict:
    """The classes of one scan (see the module docstring of tools/provenance.py and ``CLASSES``).

    Each available tag (Redis, HDF5) is judged on its own and the classes are united; the two are
    then compared (MISMATCH), and under the policy the ICAT ``Sample_name`` against the tag."""
    if ev.raised is not None:
        return Verdict([RAISED], notes=[ev.raised])
    found: set[str] = set()
    notes: list[str] = []
    tags = [(where, tag) for where, tag in (("redis", ev.redis_tag), ("hdf5", ev.h5_tag)) if has_tag(tag)]
    if not tags:
        return Verdict([SILENT], notes=["no sample tag in Redis nor in the HDF5 file"])
    pins = {state for state in ev.window if state is not None}
    for where, tag in tags:
        state = text(tag.get("state"))
        if state == "MOUNTED":
            barcode = text(tag.get("barcode"))
            if barcode is None or barcode not in pins:
                found.add(WRONG)
                notes.append(
                    f"{where}: MOUNTED {barcode}, on the goniometer: {sorted(map(describe, ev.window))}"
                )
        elif state == "EMPTY":
            if None not in ev.window:
                found.add(FALSE_EMPTY)
                notes.append(f"{where}: EMPTY while {sorted(map(describe, ev.window))} was on the goniometer")
        elif state in DOUBT_STATES:
            if text(tag.get("reason")):
                found.add(FLAGGED_DOUBT)
            else:
                found.add(SILENT)
                notes.append(f"{where}: {state} without a reason")
        else:
            found.add(SILENT)
            notes.append(f"{where}: state {state}: {text(tag.get('reason'))}")
        if ev.hw_changed and not flag(tag.get("@changed_during_scan")):
            found.add(UNFLAGGED_CHANGE)
            notes.append(f"{where}: the hardware changed during the scan, @changed_during_scan false")
    if len(tags) < 2:
        found.add(MISMATCH)
        notes.append(f"sample tag only in {tags[0][0]}")
    else:
        (_, a), (_, b) = tags
        key_a = (text(a.get("state")), text(a.get("barcode")))
        key_b = (text(b.get("state")), text(b.get("barcode")))
        if key_a != key_b:
            found.add(MISMATCH)
            notes.append(f"redis {key_a} != hdf5 {key_b}")
    policy_mismatch = False
    if ev.policy:
        tag = tags[0][1]
        state = text(tag.get("state"))
        name = ev.icat_sample_name
        if state == "MOUNTED" and name not in {text(tag.get("name")), text(tag.get("barcode"))} - {None}:
            policy_mismatch = True
            notes.append(
                f"ICAT Sample_name {name!r}, tag names {text(tag.get('name'))!r} {text(tag.get('barcode'))!r}"
            )
        elif state == "EMPTY" and name is not None and name in ev.sample_names:
            policy_mismatch = True
            notes.append(f"ICAT Sample_name {name!r} names a sample, tag EMPTY")
        if policy_mismatch:
            found.add(MISMATCH)
    if not found & set(BAD) and FLAGGED_DOUBT not in found:
        found.add(OK)
    return Verdict([c for c in CLASSES if c in found], policy_mismatch, notes)


# ------------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------------
@dataclass
class StepLog:
    index: int
    kind: str
    text: str = ""
    outcome: list[str] = field(default_factory=list)

    def line(self) -> str:
        tail = f" -> {'; '.join(self.outcome)}" if self.outcome else ""
        return f"#{self.index} {self.kind}: {self.text}{tail}"


@dataclass
class ScanRecord:
    index: int
    step: int
    policy: bool
    npoints: int
    count_time: float
    called_mark: int = -1
    called_at: float = 0.0
    #: the timeline's marks around the tracker's own tag callable (START after it, END before it)
    tag_start_mark: int | None = None
    tag_end_mark: int | None = None
    start_mark: int | None = None
    start_at: float | None = None
    end_mark: int | None = None
    end_at: float | None = None
    #: under the policy: no tracker change since the policy was switched on (the dataset's ICAT
    #: fields are then whatever they were when it was last switched off, or none)
    policy_stale: bool = False
    raised: str | None = None
    key: str | None = None
    filename: str | None = None
    scan_nb: int | None = None
    duration_s: float = 0.0


# ------------------------------------------------------------------------------------------------
# the soak (in the BLISS process: gevent only)
# ------------------------------------------------------------------------------------------------
@dataclass
class _Hook:
    kinds: frozenset[str]
    action: Callable[[Any], None]


class _Interrupted:
    """What an action greenlet returns when a KeyboardInterrupt stopped it."""

    def __repr__(self) -> str:
        return "interrupted"


INTERRUPTED = _Interrupted()


class ProvenanceSoak:
    def __init__(self, seed: int, scans: int, policy_fraction: float, workdir: Path) -> None:
        self.seed = seed
        self.target = scans
        self.policy_fraction = policy_fraction
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.steps: list[StepLog] = []
        self.scans: list[ScanRecord] = []
        self.by_scan: dict[int, ScanRecord] = {}
        self.hooks: list[_Hook] = []
        self.spawned: list[Any] = []
        self.step_errors: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.kills = Counter[str]()
        self.hand_pin: str | None = None
        self.hand_removed: Any = None  # the changer's (address, Pin) tuple a hand took away
        self.hand_next = 0
        self.policy_on = False
        self.policy_left = 0
        self.policy_started = False
        self.policy_since: Any = None  # the tracker's snapshot when the saving mode last switched
        self._counters: dict[bool, Any] = {}
        self.server: Any = None
        self.session: Any = None
        self.own_link: Any = None
        self.timeline: Timeline | None = None
        self._exit = contextlib.ExitStack()
        self._original_emit: Any = None
        self._taggers: dict[str, Any] = {}
        self.started = time.monotonic()

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        from bliss.scanning.scan_meta import META_TIMING, ScanMeta, get_user_scan_meta

        from bliss_sampletrack.changers.link import link_changer
        from bliss_sampletrack.testbed.beacon import start_beacon
        from bliss_sampletrack.testbed.session import open_session

        self.server = start_beacon(self.workdir / "beacon")
        self.session = open_session(self.server, SESSION, self.workdir / "data")
        env = self.session.env_dict
        missing = [name for name in ("sc", "tracker", "diode") if name not in env]
        if missing:
            raise SoakError(f"session {SESSION!r} lacks {missing}")
        self.sc, self.tracker, self.diode = env["sc"], env["tracker"], env["diode"]
        if "sc_link" not in env:  # the demo session has one; a link of our own otherwise
            self.own_link = link_changer(self.tracker, self.sc, name="provenance_link")
        self.sc.load_time = self.sc.unload_time = MOVE_TIME_S
        self.sc.timeout = CHANGER_TIMEOUT_S
        # this session records the tracker from now on: its tag is then its own snapshot (no Redis
        # read at the scan's START, whose yield would let the window close before the tag is taken)
        with contextlib.redirect_stdout(_LogWriter()):
            self.tracker.take_over()
        self.timeline = Timeline(self._physical())
        hub = self.sc._hub
        self._original_emit = hub.emit
        hub.emit = self._emit
        if CATEGORY not in ScanMeta.categories_names():
            ScanMeta.add_categories([CATEGORY])
        category = getattr(get_user_scan_meta(), CATEGORY)
        category.set("soak", self._provenance)
        category.timing = META_TIMING.START | META_TIMING.END
        self._wrap_taggers()
        self.roots = {
            "inhouse_data_root": self.workdir / "esrf" / "inhouse",
            "visitor_data_root": self.workdir / "esrf" / "visitor",
            "tmp_data_root": self.workdir / "esrf" / "tmp",
        }

    def _wrap_taggers(self) -> None:
        """Stamp the timeline around the ``sample`` category's callables (the tracker's tag)."""
        from bliss.scanning.scan_meta import ScanMeta, get_user_scan_meta

        if "sample" not in ScanMeta.categories_names():
            log.warning("no 'sample' scan metadata category: the provenance category's stamps are used")
            return
        entries = get_user_scan_meta().sample.metadata
        self._taggers = {key: fn for key, fn in entries.items() if callable(fn)}
        for key, fn in self._taggers.items():
            entries[key] = _Stamped(self, fn)

    def _unwrap_taggers(self) -> None:
        from bliss.scanning.scan_meta import get_user_scan_meta

        entries = get_user_scan_meta().sample.metadata
        for key, fn in self._taggers.items():
            if isinstance(entries.get(key), _Stamped):
                entries[key] = fn
        self._taggers = {}

    def teardown(self) -> None:
        for what, step in (
            ("policy off", self._exit.close),
            ("taggers", self._unwrap_taggers),
            ("hub", self._unwrap),
            ("category", self._uninstall_category),
            ("own link", lambda: self.own_link and self.own_link.close()),
            ("session", lambda: self.session and self.session.close()),
            ("beacon", lambda: self.server and self.server.stop()),
        ):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - tearing down: report, go on with the rest
                log.warning("tear-down step %s failed: %s", what, exc)

    def _unwrap(self) -> None:
        if self._original_emit is not None:
            del self.sc._hub.emit  # the instance attribute shadowed the class's method
            self._original_emit = None

    @staticmethod
    def _uninstall_category() -> None:
        from bliss.scanning.scan_meta import ScanMeta, get_user_scan_meta

        if CATEGORY in ScanMeta.categories_names():
            getattr(get_user_scan_meta(), CATEGORY).metadata.pop("soak", None)
            ScanMeta.remove_categories([CATEGORY])

    # -- ground truth ----------------------------------------------------------------------------------
    def _physical(self) -> Phys:
        mounted = self.sc._mounted
        if mounted is not None and mounted is not self.hand_removed:
            address, pin = mounted
            return pin.barcode or f"(no barcode)@{address}"
        return self.hand_pin

    def _note(self, why: str) -> None:
        assert self.timeline is not None
        self.timeline.record(self._physical(), why)

    def _emit(self, event: Any) -> None:
        """The changer's hub, wrapped: stamp the hardware first, then the soak's hooks (which only
        schedule greenlets), then the subscribers (the link)."""
        self._note(f"{event.kind} {event.address or ''}".strip())
        for hook in list(self.hooks):
            if str(event.kind) in hook.kinds:
                self.hooks.remove(hook)
                hook.action(event)
        self._original_emit(event)

    def _provenance(self, scan: Any) -> dict[str, Any] | None:
        """The ``provenance`` category: where the hardware timeline stood at START and END."""
        assert self.timeline is not None
        record = self.by_scan.get(id(scan))
        if record is None:
            return None
        now, mark = time.monotonic(), self.timeline.mark()
        state = describe(self.timeline.current)
        if record.start_mark is None:
            record.start_mark, record.start_at = mark, now
            return {
                "@NX_class": "NXcollection",
                "start_hardware": state,
                "start_mark": mark,
                "start_monotonic": now,
            }
        record.end_mark, record.end_at = mark, now
        return {"end_hardware": state, "end_mark": mark, "end_monotonic": now}

    # -- the schedule ----------------------------------------------------------------------------------
    def run(self, progress: Callable[[str], None]) -> None:
        kinds = list(STEP_WEIGHTS)
        weights = [STEP_WEIGHTS[k] for k in kinds]
        while len(self.scans) < self.target:
            kind = self.rng.choices(kinds, weights)[0]
            policy_draw, length_draw = self.rng.random(), self.rng.randint(1, 6)
            step_rng = random.Random(f"{self.seed}:{len(self.steps)}")
            self._policy_segment(policy_draw, length_draw)
            step = StepLog(len(self.steps) + 1, kind)
            self.steps.append(step)
            before = len(self.scans)
            try:
                getattr(self, f"_step_{kind}")(step_rng, step)
            finally:
                self._finish_step(step)
            if len(self.scans) == before:  # every step runs one scan
                self._scan(step, step_rng)
            if len(self.scans) % 25 == 0 and len(self.scans) != before:
                progress(f"{len(self.scans)} scans, {len(self.steps)} steps")

    def _policy_segment(self, draw: float, length: int) -> None:
        """Scans run in segments of 1-6 under the same saving mode (switching costs a little)."""
        from bliss_sampletrack.tagging import data_policy

        if self.policy_left > 0:
            self.policy_left -= 1
            return
        want = draw < self.policy_fraction
        self.policy_left = length - 1
        if want == self.policy_on:
            return
        self._swap_scan_counter(self.policy_on, want)
        if want:
            scan_saving = self._exit.enter_context(
                data_policy.policy_enabled(self.session, beamline=BEAMLINE_DIR, **self.roots)
            )
            if not self.policy_started:
                with contextlib.redirect_stdout(_LogWriter()):
                    scan_saving.newproposal(PROPOSAL)
                    scan_saving.newcollection(COLLECTION)
                self.policy_started = True
        else:
            self._exit.close()
            self._exit = contextlib.ExitStack()
        self.policy_on = want
        self.policy_since = self.tracker.snapshot

    def _swap_scan_counter(self, leaving: bool, entering: bool) -> None:
        """BLISS keeps one saved-scan counter per session and restarts it at 1 whenever the
        saving series changes (the dataset, or the basic root path): alternating the two modes
        would then write "Scan 1.1" again into a file that has it ("already exists"). Each mode
        gets its own counter back instead, as if the other mode had never run in between."""
        from bliss.config.conductor.client import get_redis_proxy

        redis = get_redis_proxy()
        key = f"{SESSION}:scan_counter"
        self._counters[leaving] = redis.hgetall(key)
        saved = self._counters.get(entering)
        if saved:
            redis.hset(key, mapping=saved)

    def _finish_step(self, step: StepLog) -> None:
        """Join every greenlet the step started (hooks may have started more meanwhile)."""
        import gevent

        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while True:
            alive = [g for g in self.spawned if not g.dead]
            if not alive:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                self.unexpected.append(
                    f"step {step.index} ({step.kind}): greenlets still running after "
                    f"{JOIN_TIMEOUT_S:g} s: killed"
                )
                gevent.killall(alive, timeout=10)
                break
            gevent.joinall(alive, timeout=left)
        for g in self.spawned:
            if g.dead and not g.successful() and not isinstance(g.exception, KeyboardInterrupt):
                self._unexpected(step, "a soak greenlet", g.exception)
        self.spawned = []
        self.hooks = []
        if self.sc._fault is not None:
            self.sc.recover()
            step.outcome.append("recovered")

    def _unexpected(self, step: StepLog, what: str, exc: BaseException | None) -> None:
        text_ = f"step {step.index} ({step.kind}): {what} raised {type(exc).__name__}: {exc}"
        log.error("%s", text_, exc_info=(type(exc), exc, exc.__traceback__) if exc else None)
        self.unexpected.append(text_)

    # -- primitives ------------------------------------------------------------------------------------
    def _spawn(self, delay: float, function: Callable[..., Any], *args: Any) -> Any:
        import gevent

        g = gevent.spawn_later(delay, function, *args) if delay > 0 else gevent.spawn(function, *args)
        self.spawned.append(g)
        return g

    def _hook(self, kinds: Iterable[str], action: Callable[[Any], None]) -> None:
        self.hooks.append(_Hook(frozenset(kinds), action))

    def _action(self, step: StepLog, method: str, *args: Any) -> Any:
        """Run ``sc.<method>(*args)`` (in the calling greenlet): True when it completed,
        INTERRUPTED, or None when the changer refused or failed (the error is counted)."""
        from bliss_sampletrack.errors import SampleTrackError

        try:
            getattr(self.sc, method)(*args)
            return True
        except KeyboardInterrupt:  # the soak's kill: the changer reported it (LOAD/UNLOAD_FAILED)
            step.outcome.append(f"{method} interrupted")
            return INTERRUPTED
        except SampleTrackError as exc:  # refused, failed (fault injected), busy: counted
            self.step_errors[_normalise(f"sc.{method}: {type(exc).__name__}: {exc}")] += 1
            step.outcome.append(f"{method}: {type(exc).__name__}")
            return None

    def _tracker(self, step: StepLog, method: str, *args: Any) -> None:
        from bliss_sampletrack.errors import SampleTrackError

        try:
            getattr(self.tracker, method)(*args)
        except SampleTrackError as exc:
            self.step_errors[_normalise(f"tracker.{method}: {type(exc).__name__}: {exc}")] += 1
            step.outcome.append(f"tracker.{method}: {type(exc).__name__}")

    def _set_presence(self, present: bool, why: str) -> None:
        """The hand model is updated by the caller first: the stamp is taken in the emit."""
        self.sc.set_presence(present)
        self._note(why)  # no event when the sensor already said so

    def _scan(
        self, step: StepLog, rng: random.Random, npoints: int | None = None, count_time: float = 0.0
    ) -> None:
        """One saved loopscan, in the calling greenlet."""
        from bliss.common.scans import loopscan

        assert self.timeline is not None
        record = ScanRecord(
            index=len(self.scans) + 1,
            step=step.index,
            policy=self.policy_on,
            npoints=npoints or rng.randint(2, 5),
            count_time=count_time,
            policy_stale=self.policy_on and self.tracker.snapshot is self.policy_since,
        )
        self.scans.append(record)
        scan = None
        record.called_mark, record.called_at = self.timeline.mark(), time.monotonic()
        try:
            scan = loopscan(record.npoints, count_time, self.diode, save=True, run=False)
            self.by_scan[id(scan)] = record
            scan.run()
        except Exception as exc:  # counted as RAISED (type and message) and logged with its traceback
            log.warning("scan %d (step %d) raised", record.index, step.index, exc_info=True)
            record.raised = f"{type(exc).__name__}: {exc}"
        finally:
            record.duration_s = time.monotonic() - record.called_at
            if scan is not None:
                self.by_scan.pop(id(scan), None)
                info = scan.scan_info
                record.filename = info.get("filename")
                record.scan_nb = info.get("scan_nb")
                data = getattr(scan, "_scan_data", None)
                record.key = getattr(data, "key", None)
        step.outcome.append(f"scan {record.index}" + (" raised" if record.raised else ""))

    def _scan_later(self, step: StepLog, rng: random.Random, delay: float, **kw: Any) -> None:
        self._spawn(delay, self._scan, step, rng, *kw.values())

    # -- choosing ------------------------------------------------------------------------------------
    def _prepare_changer(self, rng: random.Random, step: StepLog) -> None:
        """Before a changer action: a pin on the goniometer that the changer did not mount goes
        (by hand, untold: the changer refuses to load over it), and the pucks are refilled when
        running low (only while the goniometer is empty: ``reset()`` empties it)."""
        if self.sc._fault is not None:
            self.sc.recover()
        if self.sc._mounted is None and self.sc._present:
            was = self.hand_pin
            self.hand_pin = None
            self._set_presence(False, "hand removes the pin the changer did not mount")
            step.outcome.append(f"hand took away {was or 'a pin only the sensor saw'}")
        if self.sc._mounted is None and not self.sc._present and len(self.sc._pins) < 4:
            self.sc.reset()
            step.outcome.append("changer reset (pucks refilled)")

    def _target(self, rng: random.Random, barcoded: bool = False) -> str | None:
        pins = sorted(a for a, p in self.sc._pins.items() if p.barcode or not barcoded)
        return rng.choice(pins) if pins else None

    def _hand_barcode(self) -> str:
        code = HAND_BARCODES[self.hand_next % len(HAND_BARCODES)]
        self.hand_next += 1
        return code

    def _what(self) -> str:
        return describe(self._physical())

    # -- steps -----------------------------------------------------------------------------------------
    def _step_scan(self, rng: random.Random, step: StepLog) -> None:
        step.text = f"scan only (goniometer: {self._what()}, tracker {self.tracker.state})"
        self._scan(step, rng)

    def _changer_move(
        self,
        rng: random.Random,
        step: StepLog,
        method: str,
        target: str | None,
        mode: str,
        kill: str | None = None,
    ) -> None:
        """One changer action in its own greenlet; the scan per ``mode``:
        ``after`` 0-10 ms after the move ends (LOADED/UNLOADED), ``overlap`` 30-120 % of the move
        time after it starts, ``during`` started before the action, ``join`` once it is over.
        ``kill``: ``after_step`` 0-4 ms after LOADED/UNLOADED, ``during_move`` mid-move."""
        args = () if target is None else (target,)
        scan_delay = rng.uniform(0.0, 0.010) if mode == "after" else rng.uniform(0.3, 1.2) * MOVE_TIME_S
        kill_delay = rng.uniform(0.0, 0.004) if kill == "after_step" else rng.uniform(0.1, 0.9) * MOVE_TIME_S
        action_delay = rng.uniform(0.02, 0.25)
        npoints = rng.randint(2, 5)
        done = {"loaded", "unloaded"}
        started = {"load_started", "unload_started"}
        final_done = "loaded" if method == "mount" else "unloaded"
        final_start = "load_started" if method == "mount" else "unload_started"
        greenlet: Any = None

        def act() -> None:
            result = self._action(step, method, *args)
            if result is not INTERRUPTED:
                step.outcome.append(f"{method} {'failed' if result is None else 'ok'}")

        if kill is not None:

            def schedule_kill(event: Any) -> None:
                self.kills[kill] += 1
                self._spawn(kill_delay, _kill, greenlet)
                step.outcome.append(f"kill {kill_delay * 1000:.1f} ms after {event.kind}")

            self._hook(done if kill == "after_step" else started, schedule_kill)
        if mode == "after":
            self._hook({final_done}, lambda event: self._scan_later(step, rng, scan_delay, npoints=npoints))
            step.text += f", scan {scan_delay * 1000:.1f} ms after {final_done.upper()}"
        elif mode == "overlap":
            self._hook({final_start}, lambda event: self._scan_later(step, rng, scan_delay, npoints=npoints))
            step.text += f", scan {scan_delay * 1000:.1f} ms after {final_start.upper()}"
        if mode == "during":
            step.text += f", scan started {action_delay * 1000:.0f} ms before the action"
            greenlet = self._spawn(action_delay, act)
            self._scan(step, rng, rng.randint(12, 20), 0.01)
        else:
            greenlet = self._spawn(0, act)
        self._finish_step(step)
        if mode in ("after", "overlap") and not any(s.step == step.index for s in self.scans):
            step.outcome.append("the move never ended: scan after it")
            self._scan(step, rng, npoints)
        elif mode == "join":
            self._scan(step, rng, npoints)

    def _load_text(self, target: str) -> str:
        pin = self.sc._pins.get(target)
        what = f"load {target} ({pin.barcode if pin else '?'}"
        if pin is not None and pin.label != pin.barcode:
            what += f", label {pin.label!r}"
        what += ")"
        mounted = self.sc._mounted
        if mounted is not None:
            what += f" exchanging {mounted[0]} ({mounted[1].barcode})"
        return what + f" [goniometer {self._what()}, tracker {self.tracker.state}]"

    def _step_load(self, rng: random.Random, step: StepLog) -> None:
        mode = rng.choice(("after", "after", "overlap", "join"))
        self._prepare_changer(rng, step)
        target = self._target(rng)
        if target is None:
            step.text = "no pin to load"
            return
        step.text = self._load_text(target)
        self._changer_move(rng, step, "mount", target, mode)

    def _step_unload(self, rng: random.Random, step: StepLog) -> None:
        mode = rng.choice(("after", "after", "overlap", "join"))
        self._prepare_changer(rng, step)
        if self.sc._mounted is None:
            step.text = "unload: nothing mounted, load instead"
            target = self._target(rng)
            if target is not None:
                self._action(step, "mount", target)
            step.text += f" {target}"
            self._scan(step, rng)
            return
        step.text = f"unload {self.sc._mounted[0]} [goniometer {self._what()}, tracker {self.tracker.state}]"
        self._changer_move(rng, step, "unmount", None, mode)

    def _step_scan_during_load(self, rng: random.Random, step: StepLog) -> None:
        self._prepare_changer(rng, step)
        target = self._target(rng)
        if target is None:
            return
        step.text = self._load_text(target)
        self._changer_move(rng, step, "mount", target, "during")

    def _step_scan_during_round_trip(self, rng: random.Random, step: StepLog) -> None:
        """A long scan during which the goniometer goes out and back: a load then an unload when
        it is empty (EMPTY at both ends), an unload then the same pin loaded again when the
        changer has one on, the pin lifted and put back by hand otherwise."""
        import gevent

        delay = rng.uniform(0.05, 0.15)
        gap = rng.uniform(0.0, 0.03)
        npoints = rng.randint(25, 35)
        self._prepare_changer(rng, step)
        mounted = self.sc._mounted
        target = self._target(rng)
        if mounted is None and target is not None:
            step.text = f"load {target} and unload it during a scan (goniometer empty)"
            moves = [("mount", target), ("unmount",)]
        elif mounted is not None and mounted is not self.hand_removed and self.sc._present:
            if rng.random() < 0.5:
                step.text = f"unload {mounted[0]} and load it again during a scan"
                moves = [("unmount",), ("mount", mounted[0])]
            else:
                step.text = f"the changer's {mounted[0]} lifted by hand and put back during a scan"
                moves = [("hand", False), ("hand", True)]
        else:
            step.text = f"scan only (goniometer: {self._what()}, no round trip possible)"
            moves = []
        step.text += f", starting {delay * 1000:.0f} ms after the scan's call"

        def round_trip() -> None:
            for move in moves:
                if move[0] == "hand":
                    self.hand_removed = None if move[1] else mounted
                    self._set_presence(bool(move[1]), "hand lifts the changer's pin / puts it back (untold)")
                elif self._action(step, *move) is not True:
                    break
                gevent.sleep(gap)

        if moves:
            self._spawn(delay, round_trip)
        self._scan(step, rng, npoints, 0.01)

    def _kill_step(self, rng: random.Random, step: StepLog, kill: str) -> None:
        unload = rng.random() < 0.35
        mode = rng.choice(("after", "join"))
        self._prepare_changer(rng, step)
        if unload and self.sc._mounted is not None:
            step.text = f"unload {self.sc._mounted[0]} killed ({kill}) [goniometer {self._what()}]"
            self._changer_move(rng, step, "unmount", None, mode, kill)
            return
        target = self._target(rng)
        if target is None:
            return
        step.text = self._load_text(target) + f" killed ({kill})"
        self._changer_move(rng, step, "mount", target, mode, kill)

    def _step_kill_after_step(self, rng: random.Random, step: StepLog) -> None:
        self._kill_step(rng, step, "after_step")

    def _step_kill_during_move(self, rng: random.Random, step: StepLog) -> None:
        self._kill_step(rng, step, "during_move")

    def _step_manual_agree(self, rng: random.Random, step: StepLog) -> None:
        """The operator mounts or unmounts by hand and tells the tracker (in either order)."""
        tell_first = rng.random() < 0.4
        remove_changer_pin = rng.random() < 0.4
        mounted, present = self.sc._mounted, self.sc._present
        order = "told first" if tell_first else "then told"
        if self.hand_pin is not None:
            step.text = f"hand removes {self.hand_pin} and tracker.unmount() ({order})"
            if tell_first:
                self._tracker(step, "unmount")
            self.hand_pin = None
            self._set_presence(False, "hand removes its pin (told)")
            if not tell_first:
                self._tracker(step, "unmount")
        elif mounted is not None and mounted is not self.hand_removed and present and remove_changer_pin:
            step.text = (
                f"hand removes the changer's {mounted[0]} ({mounted[1].barcode}) and tracker.unmount()"
            )
            self.hand_removed = mounted
            self._set_presence(False, "hand removes the changer's pin (told)")
            self._tracker(step, "unmount")
        elif mounted is not None and mounted is not self.hand_removed:
            barcode = mounted[1].barcode
            step.text = f"tracker.mount({barcode!r}) of the changer's own pin {mounted[0]}"
            if barcode is not None:
                self._tracker(step, "mount", barcode)
        elif mounted is None and not present:
            code = self._hand_barcode()
            step.text = f"hand places {code} and tracker.mount({code!r}) ({order})"
            if tell_first:
                self._tracker(step, "mount", code)
            self.hand_pin = code
            self._set_presence(True, "hand places a pin (told)")
            if not tell_first:
                self._tracker(step, "mount", code)
        else:
            step.text = f"tracker.unmount() (goniometer {self._what()})"
            self._tracker(step, "unmount")
        self._scan(step, rng)

    def _step_manual_contradict(self, rng: random.Random, step: StepLog) -> None:
        """The operator records something the hardware contradicts."""
        unmount = rng.random() < 0.35
        physical = self._physical()
        choices = sorted({p.barcode for p in self.sc._pins.values() if p.barcode} - {physical})
        other = rng.choice(choices) if choices else self._hand_barcode()
        if physical is not None and unmount:
            step.text = f"tracker.unmount() while {physical} is on the goniometer"
            self._tracker(step, "unmount")
        else:
            step.text = f"tracker.mount({other!r}) while the goniometer holds {describe(physical)}"
            self._tracker(step, "mount", other)
        self._scan(step, rng)

    def _step_hand_remove(self, rng: random.Random, step: StepLog) -> None:
        """A pin taken away by hand, the tracker not told."""
        mounted = self.sc._mounted
        if self.hand_pin is not None and self.sc._present:
            step.text = f"hand removes {self.hand_pin} (untold)"
            self.hand_pin = None
            self._set_presence(False, "hand removes its pin (untold)")
        elif mounted is not None and mounted is not self.hand_removed and self.sc._present:
            step.text = f"hand removes the changer's {mounted[0]} ({mounted[1].barcode}) (untold)"
            self.hand_removed = mounted
            self._set_presence(False, "hand removes the changer's pin (untold)")
        else:
            step.text = f"hand remove: nothing the sensor sees (goniometer {self._what()})"
        self._scan(step, rng)

    def _step_hand_place(self, rng: random.Random, step: StepLog) -> None:
        """A pin put on the goniometer by hand, the tracker not told."""
        if self._physical() is None and self.sc._mounted is None and not self.sc._present:
            code = self._hand_barcode()
            step.text = f"hand places {code} (untold)"
            self.hand_pin = code
            self._set_presence(True, "hand places a pin (untold)")
        else:
            step.text = f"hand place: goniometer not free ({self._what()})"
        self._scan(step, rng)

    def _step_noread(self, rng: random.Random, step: StepLog) -> None:
        label = rng.choice(NO_READ_LABELS)
        mode = rng.choice(("after", "join"))
        self._prepare_changer(rng, step)
        target = self._target(rng, barcoded=True)
        if target is None:
            return
        self.sc.mislabel(target, label)
        step.text = self._load_text(target) + " (no-read)"
        self._changer_move(rng, step, "mount", target, mode)

    def _step_fault(self, rng: random.Random, step: StepLog) -> None:
        failure, action = rng.choice(FAULTS)
        mode = rng.choice(("after", "join"))
        self._prepare_changer(rng, step)
        if action == "unload" and self.sc._mounted is None:
            action = "load"
            failure = "no_pin_detected" if failure == "pin_stays" else failure
        if action == "load" and not self.sc._pins:
            return
        self.sc.fail_next(failure, action)
        if action == "unload":
            step.text = f"unload {self.sc._mounted[0]} failing with {failure} [goniometer {self._what()}]"
            self._changer_move(rng, step, "unmount", None, mode)
            return
        target = self._target(rng)
        if target is None:
            return
        step.text = self._load_text(target) + f" failing with {failure}"
        self._changer_move(rng, step, "mount", target, mode)

    # -- reading back ----------------------------------------------------------------------------------
    def read_back(self) -> list[dict[str, Any]]:
        """Each scan as stored: Redis (a fresh blissdata client) and HDF5 (h5py)."""
        import h5py
        from blissdata.redis_engine.store import DataStore

        store = DataStore(self.server.redis_data_url)
        out: list[dict[str, Any]] = []
        files: dict[str, Any] = {}
        try:
            for record in self.scans:
                item: dict[str, Any] = {"redis": None, "hdf5": None, "info": {}, "errors": []}
                if record.key is not None:
                    try:
                        info = dict(store.load_scan(record.key).info)
                    except Exception as exc:  # noqa: BLE001 - an unreadable scan is reported (SILENT)
                        item["errors"].append(f"redis: {type(exc).__name__}: {exc}")
                    else:
                        item["info"] = info
                        item["redis"] = info.get("sample")
                if record.filename and record.scan_nb is not None:
                    try:
                        h5 = files.get(record.filename)
                        if h5 is None:
                            h5 = files[record.filename] = h5py.File(record.filename, "r", locking=False)
                        item["hdf5"] = _h5_tag(h5, f"{record.scan_nb}.1/sample")
                    except (OSError, KeyError, RuntimeError, ValueError) as exc:
                        item["errors"].append(f"hdf5: {type(exc).__name__}: {exc}")
                out.append(item)
        finally:
            for h5 in files.values():
                h5.close()
        return out

    def sample_names(self) -> frozenset[str]:
        """Every name and barcode that names a sample: the changer's contents, the manifest, the
        hand pins (what ``Sample_name`` must not show for an EMPTY scan)."""
        import csv

        names: set[str] = set(HAND_BARCODES)
        for pin in self.sc._configured.values():
            names |= {v for v in (pin.barcode, pin.name) if v}
        manifest = self.server.db_path / "sampletrack" / "samples.csv"
        if manifest.is_file():
            with manifest.open(newline="") as f:
                for row in csv.DictReader(f):
                    names |= {v for v in (row.get("barcode"), row.get("name")) if v}
        return frozenset(names)


class _Stamped:
    """A ``sample`` category callable with the timeline stamped around it, per soak scan."""

    def __init__(self, soak: ProvenanceSoak, tagger: Callable[[Any], Any]) -> None:
        self.soak = soak
        self.tagger = tagger

    def __call__(self, scan: Any) -> Any:
        timeline = self.soak.timeline
        record = self.soak.by_scan.get(id(scan))
        if record is None or timeline is None:
            return self.tagger(scan)
        if record.tag_start_mark is None:  # START: the window closes once the tag is made
            result = self.tagger(scan)
            record.tag_start_mark = timeline.mark()
            return result
        record.tag_end_mark = timeline.mark()  # END: changes before the tag began count
        return self.tagger(scan)


def _kill(greenlet: Any) -> None:
    if greenlet is not None and not greenlet.dead:
        greenlet.kill(KeyboardInterrupt, block=False)


def _h5_tag(h5: Any, path: str) -> dict[str, Any] | None:
    group = h5.get(path)
    if group is None:
        return None
    tag = {key: _plain(item[()]) for key, item in group.items() if not hasattr(item, "keys")}
    tag.update({f"@{key}": _plain(value) for key, value in group.attrs.items()})
    return tag


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


class _LogWriter:
    """A file-like object sending BLISS's prints (proposal set, take-over) to the log."""

    def write(self, data: str) -> int:
        if data.strip():
            log.info("%s", data.strip())
        return len(data)

    def flush(self) -> None:
        pass


_PATTERNS = (
    (re.compile(r"\b[A-Z]{3}-\d{4}\b"), "<BARCODE>"),
    (re.compile(r"\b\d+:\d\d\b"), "<ADDR>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<ID>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}\b"), "<TIME>"),
    (re.compile(r"lysozyme_\d|thaumatin_\d"), "<NAME>"),
    (re.compile(r"'\d{4}'|\b\d{4}\b"), "<N>"),
)


def _normalise(message: str, limit: int = 160) -> str:
    """A message with its particulars (barcodes, addresses, ids) replaced, for distributions."""
    for pattern, replacement in _PATTERNS:
        message = pattern.sub(replacement, message)
    return message if len(message) <= limit else message[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------
# analysis and report
# ------------------------------------------------------------------------------------------------
def analyse(soak: ProvenanceSoak, stored: list[dict[str, Any]]) -> dict[str, Any]:
    from bliss_sampletrack.tagging import data_policy

    assert soak.timeline is not None
    timeline = soak.timeline
    names = soak.sample_names()
    counts: Counter[str] = Counter({c: 0 for c in CLASSES})
    by_state: dict[str, Counter[str]] = {}
    by_policy: dict[str, Counter[str]] = {"policy": Counter(), "basic": Counter()}
    reasons: Counter[str] = Counter()
    raised: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {c: [] for c in BAD}
    policy_mismatch = 0
    stale_mismatch = 0
    flagged_without_change = 0
    steps = {s.index: s for s in soak.steps}
    per_scan: list[dict[str, Any]] = []
    for record, item in zip(soak.scans, stored, strict=True):
        # the marks around the tracker's own tag, else the provenance category's; a scan that
        # raised before its START metadata: the window is the call alone
        start = _first(record.tag_start_mark, record.start_mark, record.called_mark)
        end = max(start, _first(record.tag_end_mark, record.end_mark, start))
        redis_tag, h5_tag = item["redis"], item["hdf5"]
        snapshot = data_policy.snapshot_fields(item["info"]) if item["info"] else {}
        evidence = ScanEvidence(
            window=timeline.states_between(record.called_mark, start),
            hw_changed=timeline.changed_between(start, end),
            redis_tag=redis_tag,
            h5_tag=h5_tag,
            policy=record.policy,
            icat_sample_name=text(snapshot.get("Sample_name")),
            sample_names=names,
            raised=record.raised,
        )
        if record.raised is None and record.start_mark is None:
            evidence = replace(evidence, raised="no START metadata taken")
        verdict = classify(evidence)
        tag = redis_tag if has_tag(redis_tag) else h5_tag if has_tag(h5_tag) else {}
        state = "RAISED" if record.raised else text(tag.get("state")) or "NO_TAG"
        counts.update(verdict.classes)
        by_state.setdefault(state, Counter()).update(verdict.classes)
        by_policy["policy" if record.policy else "basic"].update(verdict.classes)
        policy_mismatch += verdict.policy_mismatch
        stale_mismatch += verdict.policy_mismatch and record.policy_stale
        if state in DOUBT_STATES and tag.get("reason"):
            reasons[_normalise(f"{state}: {text(tag.get('reason'))}")] += 1
        if record.raised:
            raised[_normalise(record.raised)] += 1
        if tag and flag(tag.get("@changed_during_scan")) and not evidence.hw_changed:
            flagged_without_change += 1
        per_scan.append(
            {
                "scan": record.index,
                "step": record.step,
                "policy": record.policy,
                "file": record.filename,
                "scan_nb": record.scan_nb,
                "state": state,
                "barcode": text(tag.get("barcode")),
                "changed_flag": flag(tag.get("@changed_during_scan")),
                "hardware_start_window": sorted(map(describe, evidence.window)),
                "hardware_changed": evidence.hw_changed,
                "icat_sample_name": evidence.icat_sample_name,
                "classes": verdict.classes,
                "duration_s": round(record.duration_s, 3),
            }
        )
        for cls in verdict.bad:
            if len(examples[cls]) < 3:
                examples[cls].append(_example(soak, record, item, tag, evidence, verdict, steps))
    total = len(soak.scans)
    failing = {c: counts[c] for c in BAD}
    return {
        "seed": soak.seed,
        "scans": total,
        "policy_fraction": soak.policy_fraction,
        "counts": dict(counts),
        "policy_mismatch": policy_mismatch,
        "policy_mismatch_stale": stale_mismatch,
        "by_state_at_start": {s: dict(c) for s, c in sorted(by_state.items())},
        "by_policy": {
            k: {"scans": sum(1 for r in soak.scans if r.policy == (k == "policy")), **dict(c)}
            for k, c in by_policy.items()
        },
        "doubt_reasons": dict(reasons.most_common()),
        "raised": dict(raised.most_common()),
        "flagged_without_hardware_change": flagged_without_change,
        "examples": examples,
        "steps": dict(Counter(s.kind for s in soak.steps)),
        "kills": dict(soak.kills),
        "step_errors": dict(soak.step_errors.most_common()),
        "unexpected": soak.unexpected,
        "hardware_changes": len(timeline.states) - 1,
        "scans_stamped_around_the_tag": sum(r.tag_start_mark is not None for r in soak.scans),
        "per_scan": per_scan,
        "schedule": [step.line() for step in soak.steps],
        # unexpected errors in the schedule are shown (and in the JSON) but, as specified, only
        # the scans' classes decide the exit status
        "ok": not any(failing.values()),
    }


def _example(
    soak: ProvenanceSoak,
    record: ScanRecord,
    item: dict[str, Any],
    tag: Mapping[str, Any],
    evidence: ScanEvidence,
    verdict: Verdict,
    steps: Mapping[int, StepLog],
) -> dict[str, Any]:
    assert soak.timeline is not None
    step = steps.get(record.step)
    previous = steps.get(record.step - 1)
    shown = {
        k: tag.get(k)
        for k in (
            "state",
            "barcode",
            "name",
            "reason",
            "@changed_during_scan",
            "end_state",
            "end_barcode",
            "source",
        )
        if k in tag
    }
    h5 = item["hdf5"] or {}
    end = _first(
        record.tag_end_mark, record.end_mark, record.tag_start_mark, record.start_mark, record.called_mark
    )
    return {
        "scan": record.index,
        "file": record.filename,
        "scan_nb": record.scan_nb,
        "policy": record.policy,
        "policy_stale": record.policy_stale,
        "classes": verdict.classes,
        "notes": verdict.notes,
        "tag": shown,
        "hdf5": {k: h5.get(k) for k in ("state", "barcode", "@changed_during_scan") if k in h5},
        "icat_sample_name": evidence.icat_sample_name,
        "hardware_start_window": sorted(map(describe, evidence.window)),
        "hardware_changed_during_scan": evidence.hw_changed,
        "hardware_timeline": soak.timeline.entries(
            max(0, record.called_mark - 1), max(end, record.called_mark)
        ),
        "step": step.line() if step else None,
        "previous_step": previous.line() if previous else None,
        "raised": record.raised,
        "errors": item["errors"],
    }


def _first(*marks: int | None) -> int:
    return next(mark for mark in marks if mark is not None)


def summary(result: dict[str, Any]) -> str:
    c = result["counts"]
    lines = [
        f"Provenance soak: seed {result['seed']}, {result['scans']} scans "
        f"({result['by_policy']['policy']['scans']} under the ESRF policy), {result['elapsed_s']:g} s, "
        f"{result['hardware_changes']} hardware changes",
        "  classes: "
        + ", ".join(f"{k} {c.get(k, 0)}" for k in CLASSES)
        + f" (policy mismatch {result['policy_mismatch']}, of which {result['policy_mismatch_stale']} in "
        "scans before any tracker change since the policy was switched on)",
        "  per tracker state at start (from the tag):",
    ]
    for state, counts in result["by_state_at_start"].items():
        lines.append(f"    {state:<9} " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    for mode, counts in result["by_policy"].items():
        lines.append(f"  {mode:<7}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if result["doubt_reasons"]:
        lines.append("  doubt reasons:")
        lines += [f"    {n:4d}  {r}" for r, n in list(result["doubt_reasons"].items())[:8]]
    if result["raised"]:
        lines.append("  raised:")
        lines += [f"    {n:4d}  {r}" for r, n in result["raised"].items()]
    lines.append(f"  steps: {result['steps']}; kills: {result['kills']}")
    lines.append(
        f"  flagged as changed without a hardware change: {result['flagged_without_hardware_change']}"
    )
    if result["unexpected"]:
        lines.append("  unexpected errors in the schedule:")
        lines += [f"    {u[:300]}" for u in result["unexpected"][:10]]
    for cls, items in result["examples"].items():
        if not items:
            continue
        lines.append(f"  examples of {cls}:")
        for ex in items:
            lines.append(
                f"    scan {ex['scan']} ({Path(ex['file'] or '?').name} #{ex['scan_nb']}, "
                f"{'policy' + (' stale' if ex['policy_stale'] else '') if ex['policy'] else 'basic'}) "
                f"{ex['classes']}: tag {ex['tag']}"
            )
            lines.append(
                f"      hardware at start {ex['hardware_start_window']}, changed during scan "
                f"{ex['hardware_changed_during_scan']}; ICAT Sample_name {ex['icat_sample_name']!r}"
            )
            for note in ex["notes"][:3]:
                lines.append(f"      note: {note[:300]}")
            if ex["raised"]:
                lines.append(f"      raised: {ex['raised'][:300]}")
            lines.append(f"      step: {(ex['step'] or '')[:400]}")
            lines.append(f"      before: {(ex['previous_step'] or '')[:300]}")
    lines.append(f"  result: {'PASS' if result['ok'] else 'FAIL'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Provenance soak: every scan's sample tag against the hardware."
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="replay a schedule (default: a new seed, printed)"
    )
    parser.add_argument("--scans", type=int, required=True, help="number of saved scans")
    parser.add_argument(
        "--policy-fraction", type=float, default=1 / 3, help="share of scans under the ESRF policy"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file too")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder for everything (default: a temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (kept anyway on failure)")
    args = parser.parse_args(argv)
    if args.scans < 1:
        parser.error("--scans must be >= 1")
    if not 0.0 <= args.policy_fraction <= 1.0:
        parser.error("--policy-fraction must be between 0 and 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)

    from bliss_sampletrack.testbed.session import import_bliss

    import_bliss()  # gevent monkey-patching first
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sampletrack-provenance-"))
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "provenance.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    for name in (__name__, "bliss_sampletrack"):
        logging.getLogger(name).setLevel(logging.INFO)

    started = time.monotonic()
    out = sys.stdout  # BLISS's own prints are sent to the log meanwhile (_quiet_stdout)

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=out, flush=True)

    say(
        f"provenance soak: seed {args.seed}, {args.scans} scans, policy fraction "
        f"{args.policy_fraction:g}, work folder {workdir}"
    )
    soak = ProvenanceSoak(args.seed, args.scans, args.policy_fraction, workdir)
    result: dict[str, Any] | None = None
    try:
        with _quiet_stdout():
            soak.setup()
        say("beacon and session ready")
        with _quiet_stdout():
            soak.run(say)
            soak._exit.close()  # the policy off: nothing more is written
        stored = soak.read_back()
        result = analyse(soak, stored)
    except Exception:  # noqa: BLE001 - any failure to set up or run: shown, exit status 2
        traceback.print_exc()
        print("provenance: could not run (see the traceback above)", file=sys.stderr)
    finally:
        with _quiet_stdout():
            soak.teardown()
    if result is None:
        print(f"provenance: work folder kept: {workdir}", file=sys.stderr)
        return 2
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["workdir"] = str(workdir)
    print(summary(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.keep or args.workdir is not None or not result["ok"]:
        print(f"work folder kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result["ok"] else 1


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """BLISS prints (session set-up, data paths) go to the log, not to the summary."""
    with contextlib.redirect_stdout(_LogWriter()):  # type: ignore[type-var]
        yield


__all__ = [
    "BAD",
    "CLASSES",
    "ProvenanceSoak",
    "ScanEvidence",
    "Timeline",
    "Verdict",
    "classify",
    "main",
]
