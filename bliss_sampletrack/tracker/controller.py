"""``SampleTracker``: the BLISS controller that knows which sample is mounted and tags every scan.

Beacon YAML (``plugin: bliss``; keys and defaults in the README's configuration reference)::

    - name: tracker
      plugin: bliss
      package: bliss_sampletrack.tracker.controller
      class: SampleTracker
      beamline: id23-1
      reader: $bcr                 # optional: a barcode reader object
      reader_mode: triggered       # triggered (tracker.read_barcode()) | continuous
      registries:                  # asked in this order; the first that knows a barcode answers
        - {type: manifest, path: /data/id23-1/samples.csv}
        - {type: icatplus, url: https://icatplus.esrf.fr}   # the proposal's parcels
      unknown_barcode: accept      # accept (with a warning) | refuse

(``manifest: PATH`` or a list of paths, the older key, still works for manifests alone.)

Every change is one transaction in the beacon Redis (snapshot, history, outbox: see
:mod:`bliss_sampletrack.tracker.store`), done before the call returns; a change is then applied
to the ESRF data policy's ICAT dataset fields when the policy is on. Changes are serialised by a
lock, so a reader greenlet and a macro cannot interleave two transitions.

One writer per tracker: the first change takes the tracker's owner key in Redis (a TTL of
``owner_ttl`` s, renewed by a greenlet while held, released by ``close()``). A tracker of the same
name in another BLISS session (or process) then refuses changes with
:class:`~bliss_sampletrack.errors.TrackerOwnedError`, naming the owner; ``take_over()`` takes the
key whoever holds it (for an owner known to be dead). Each commit checks the owner key and the
state it replaces inside the transaction, so a session that lost its key (paused past the TTL)
writes nothing, and a tracker whose state changed in Redis under it recomputes the change from
what Redis holds.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from bliss.common.utils import typecheck
from redis.exceptions import RedisError

from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.core.shield import complete
from bliss_sampletrack.delivery.clients import clients_from_config
from bliss_sampletrack.delivery.manager import DeliveryManager, progress_bar
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import (
    MountRefusedError,
    NoReadError,
    ReaderConnectionError,
    SampleTrackError,
    TrackerOwnedError,
)
from bliss_sampletrack.readers.protocol import BarcodeRead, BarcodeReader
from bliss_sampletrack.tagging import data_policy, metadata, scan_policy
from bliss_sampletrack.tagging.icat_fields import icat_fields
from bliss_sampletrack.tagging.scan_tag import sample_tag
from bliss_sampletrack.tracker import manual
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.registry import ChainRegistry, ManifestRegistry, SampleRegistry
from bliss_sampletrack.tracker.settle import Doubt, InFlight, Witness
from bliss_sampletrack.tracker.state import Change, EventContext, Snapshot, TrackerState, numbered
from bliss_sampletrack.tracker.store import (
    OWNER_TTL_S,
    OwnershipLostError,
    RedisTrackerStore,
    StaleStateError,
    TrackerLease,
)

log = logging.getLogger(__name__)

BEAMLINE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
KEYS = {
    "beamline",
    "reader",
    "reader_mode",
    "manifest",
    "registries",
    "unknown_barcode",
    "history_size",
    "tag_scans",
    "icat_fields",
    "new_dataset_on_change",
    "scan_policy",
    "no_read",
    "delivery",
    "deliver_in_session",
    "owner_ttl",
    "settle_timeout",
    "manual_policy",
}
#: attempts at a change whose commit finds the state or the owner key changed under it
CHANGE_ATTEMPTS = 3
#: bound on each Redis call of the owner key's renewal greenlet
LEASE_CALL_TIMEOUT_S = 5.0
#: default bound on a scan's wait, at its start and end, for a hardware change being recorded
SETTLE_TIMEOUT_S = 10.0


def _registries(
    cfg: ObjectConfig, beamline: str, redis: Callable[[], Any], no_read: tuple[str, ...]
) -> list[SampleRegistry]:
    """The registry chain, in order: the ``registries:`` items (``type: manifest`` with ``path``,
    or ``type: icatplus``), or the older ``manifest:`` key (manifests only). ``redis`` gives the
    beacon Redis (the ICAT+ cache): asked only for an ICAT+ registry, so that a configuration
    error is reported as such even where beacon cannot be reached."""
    entries = cfg.config.get("registries")
    manifests = cfg.string_list("manifest")
    if entries is None:
        return [_manifest(cfg, m) for m in manifests]
    if manifests:
        raise cfg.error(
            "manifest", "and 'registries' are both given: list the manifests in 'registries' (type: manifest)"
        )
    # a YAML list from beacon is a ConfigList (a Sequence), not a list
    if isinstance(entries, str | Mapping) or not isinstance(entries, Sequence):
        raise cfg.error(
            "registries", f"must be a list of registries (type: manifest | icatplus), got {entries!r}"
        )
    chain: list[SampleRegistry] = []
    for number, entry in enumerate(entries, 1):
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind == "manifest":
            if sorted(entry) != ["path", "type"] or not isinstance(entry.get("path"), str):
                raise cfg.error(
                    "registries", f"item {number}: a manifest takes 'path' only, got {sorted(entry)}"
                )
            chain.append(_manifest(cfg, entry["path"], "registries", f"item {number}: 'path' "))
        elif kind == "icatplus":
            from bliss_sampletrack.tracker.icatplus import IcatPlusRegistry

            where = f"{cfg.name!r} in {cfg.filename}, key 'registries' item {number}"
            chain.append(
                IcatPlusRegistry.from_config(
                    _plain(entry), where, redis=redis(), beamline=beamline, no_read=no_read
                )
            )
        else:
            raise cfg.error("registries", f"item {number}: 'type' must be manifest or icatplus, got {kind!r}")
    return chain


def _plain(value: Any) -> Any:
    """Beacon's ConfigNode/ConfigList as dict/list (what YAML gives outside BLISS), for code that
    checks ``isinstance(..., list)``."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


def _manifest(cfg: ObjectConfig, location: str, key: str = "manifest", item: str = "") -> ManifestRegistry:
    """An absolute path is a local file; a relative one is a file of the beacon configuration
    (served by beacon like the YAML files, so every BLISS host sees the same manifest)."""
    if Path(location).is_absolute():
        return ManifestRegistry(location)
    from bliss.config.conductor.client import get_text_file

    try:
        text = get_text_file(location)
    except RuntimeError as exc:
        raise cfg.error(key, f"{item}names {location!r}, which beacon cannot serve: {exc}") from None
    return ManifestRegistry(f"beacon:{location}", text=text)


@dataclass(frozen=True, slots=True)
class IcatApplied:
    """The ICAT fields this tracker last set on a dataset, for which change."""

    dataset: str | None
    seq: int
    mount_event_id: uuid.UUID | None
    fields: dict[str, str | None]


class SampleTracker:
    """Which sample is on the goniometer; tags scans, records mount/unmount events."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ObjectConfig(name, config)
        cfg.check_known(KEYS)
        self.name = name
        self.config_file = cfg.filename
        self.beamline = cfg.get("beamline", str)
        if not BEAMLINE.fullmatch(self.beamline):
            raise cfg.error(
                "beamline",
                f"must be lower case like 'id23-1' (the contract's pattern), got {self.beamline!r}",
            )
        self.reader: BarcodeReader | None = config.get("reader")
        if self.reader is not None and not isinstance(self.reader, BarcodeReader):
            raise cfg.error(
                "reader", f"must reference a barcode reader object, got {type(self.reader).__name__}"
            )
        self.reader_mode = self._choice(cfg, "reader_mode", ("triggered", "continuous"), "triggered")
        self.unknown_barcode = self._choice(cfg, "unknown_barcode", ("accept", "refuse"), "accept")
        self.scan_policy = self._choice(cfg, "scan_policy", ("allow", "refuse_without_sample"), "allow")
        self.manual_policy = self._choice(cfg, "manual_policy", manual.POLICIES, "conflict")
        self.tag_scans = cfg.get("tag_scans", bool, True)
        self.set_icat_fields = cfg.get("icat_fields", bool, True)
        self.new_dataset_on_change = cfg.get("new_dataset_on_change", bool, True)
        self.no_read = cfg.string_list("no_read")
        self.warnings: list[str] = []
        self._noted: tuple[str, str | None] | None = None  # the last registry note warned about

        from bliss.config.conductor.client import get_redis_proxy

        self.registry = ChainRegistry(_registries(cfg, self.beamline, get_redis_proxy, self.no_read))
        redis = get_redis_proxy()
        self.outbox = RedisStreamOutbox(redis, self.beamline)
        self.store = RedisTrackerStore(redis, name, self.outbox, cfg.get("history_size", int, 1000))
        owner_ttl = cfg.get("owner_ttl", float, OWNER_TTL_S)
        if not 0.5 <= owner_ttl <= 3600:
            raise cfg.error("owner_ttl", f"must be between 0.5 and 3600 seconds, got {owner_ttl!r}")
        self._lease = TrackerLease(redis, name, self._session_name(), owner_ttl)
        self._owning = False  # this object holds the owner key (and renews it)
        self._keeper: gevent.Greenlet | None = None
        self.delivery = DeliveryManager(self.outbox, clients_from_config(cfg))
        self.deliver_in_session = cfg.get("deliver_in_session", bool, True)
        self._lock = gevent.lock.RLock()
        self.settle_timeout = cfg.positive("settle_timeout", SETTLE_TIMEOUT_S)
        self._inflight = InFlight()
        self._witnesses: list[Witness] = []
        self._reconciling: dict[str, gevent.Greenlet] = {}
        self._transitions: deque[tuple[int, str]] = deque(maxlen=64)  # (seq, what), for scan tags
        self._icat: IcatApplied | None = None  # the fields set on the current dataset
        self._icat_error: str | None = None
        self._raw: str | None = None  # the state text in Redis this object's snapshot came from
        self._snapshot = self._restore()
        self._follower: gevent.Greenlet | None = None
        self._prefetches: list[gevent.Greenlet] = []
        self._tagger: metadata.ScanTagger | None = None
        self._check_owner()
        self.activate()

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> None:
        """Tag scans, apply the scan policy and follow the reader (done at construction)."""
        if self.tag_scans and self._tagger is None:
            self._tagger = metadata.ScanTagger(self.name, self.scan_tag, self.changes_between)
            metadata.install(self._tagger)
        if self.scan_policy != "allow":
            scan_policy.install(self._preset_name, self.scan_refusal)
        if self.set_icat_fields:
            data_policy.before_scan(self._preset_name, self._before_scan)
        if self.reader is not None and self.reader_mode == "continuous" and self._follower is None:
            self._follower = gevent.spawn(self._follow_reader)
            self._follower.name = f"sampletrack-{self.name}-reader"
        if self.deliver_in_session:
            self.delivery.start()
        self._prefetches = [greenlet for greenlet in self._prefetches if not greenlet.dead]
        for member in self.registry.registries:
            prefetch = getattr(member, "prefetch", None)
            if prefetch is not None:  # e.g. the proposal's ICAT+ parcels, in the background
                self._prefetches.append(prefetch())

    def close(self) -> None:
        """Stop tagging scans, following the reader and delivering, and give up the ownership;
        state and outbox stay in Redis."""
        self.delivery.stop()
        if self._follower is not None:
            self._follower.kill()
            self._follower = None
        if self._tagger is not None:
            metadata.uninstall(self.name)
            self._tagger = None
        scan_policy.uninstall(self._preset_name)
        data_policy.before_scan(self._preset_name, None)
        prefetches, self._prefetches = self._prefetches, []
        gevent.killall(prefetches, timeout=LEASE_CALL_TIMEOUT_S)  # none may outlive its HTTP session
        for member in self.registry.registries:
            closing = getattr(member, "close", None)
            if closing is not None:
                closing()
        self._release()

    __close__ = close  # BLISS calls it when the session closes

    @property
    def _preset_name(self) -> str:
        return f"sampletrack-{self.name}"

    # -- state -------------------------------------------------------------------------------------
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

    # -- shell commands ----------------------------------------------------------------------------
    @typecheck
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

    @typecheck
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

    def take_over(self) -> None:
        """Make this session the tracker's only writer, whoever owned it (use only when the other
        session is known to be dead or closed: it will be refused from now on)."""
        with self._lock:
            previous = self._lease.take_over()
            self._hold()
            self._reload("taken over")
        if previous is not None and previous.token != self._lease.holder.token:
            self._warn(f"took over from {previous.describe()}")
        print(f"tracker {self.name!r} is now recorded by this session (state {self.state})")

    def owner(self) -> str:
        """Who records this tracker's changes now (the owner key in Redis)."""
        holder = self._lease.current()
        if holder is None:
            return "nobody (the next change takes it)"
        if holder.token == self._lease.holder.token:
            return f"this session ({holder.describe()})"
        return holder.describe()

    @typecheck
    def read_barcode(self, timeout: int | float | None = None) -> Sample:
        """Trigger the reader, resolve the code and record the mount. A no-read mounts nothing."""
        if self.reader is None:
            raise SampleTrackError(f"tracker {self.name!r} has no 'reader' in {self.config_file}")
        try:
            read = self.reader.read(timeout)
        except NoReadError as exc:
            raise NoReadError(
                f"{exc}; nothing was recorded as mounted (state stays {self.state})", raw=exc.raw
            ) from None
        return self._mount_read(read)

    def refresh_registry(self) -> None:
        """Read the sample registries that can be refreshed again now (the ICAT+ parcels of the
        current proposal, e.g. parcels declared since the last read) and show each registry."""
        failures: list[str] = []
        for member in self.registry.registries:
            refresh = getattr(member, "refresh", None)
            if refresh is not None:
                try:
                    refresh()
                except SampleTrackError as exc:  # the others are still refreshed; raised below
                    failures.append(str(exc))
            print(member.describe())
        if failures:
            raise SampleTrackError(f"tracker {self.name!r}: registry refresh failed: {'; '.join(failures)}")

    @typecheck
    def resolve(self, barcode: str) -> Sample:
        """The sample record for ``barcode`` (registry), following the unknown-barcode policy."""
        code = validate_barcode(barcode, no_read=self.no_read)
        sample = self.registry.resolve(code)
        if sample is not None:
            noted = (code, sample.registry_note)
            if sample.registry_note and noted != self._noted:  # once, not at every repeated read
                self._warn(f"barcode {code!r}: {sample.registry_note}")  # e.g. from an old ICAT+ cache
            self._noted = noted
            return sample
        if self.unknown_barcode == "refuse":
            raise MountRefusedError(
                f"barcode {code!r} is in no sample registry ({self.registry.describe()}); tracker "
                f"{self.name!r} refuses unknown barcodes: add it to the manifest, or set "
                f"'unknown_barcode: accept' in {self.config_file}"
            )
        self._warn(f"barcode {code!r} is in no sample registry ({self.registry.describe()}): recorded as is")
        return Sample(barcode=code)

    @typecheck
    def history(self, count: int = 10) -> None:
        """Print the last ``count`` events, newest first."""
        print(self.history_text(count))

    def history_text(self, count: int = 10) -> str:
        events = self.store.history(count)
        if not events:
            return f"tracker {self.name!r}: no event recorded yet"
        lines = [f"{'when (UTC)':26} {'event':10} {'status':7} {'source':15} sample"]
        for e in events:
            when = e.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")
            note = f"  ({e.message})" if e.message else ""
            lines.append(f"{when:26} {e.type:10} {e.status:7} {e.source:15} {e.sample.label}{note}")
        return "\n".join(lines)

    def delivery_status(self) -> None:
        """Print, per delivery client: pending events, oldest pending age, dead letters, last error."""
        statuses = self.delivery.status()
        print("\n".join(s.line() for s in statuses) or f"no delivery configured in {self.config_file}")

    def retry_dead_letters(self) -> None:
        """Send the dead letters again (after fixing what the service objected to)."""
        for client, (delivered, dead) in self.delivery.retry_dead_letters().items():
            print(f"{client}: {delivered} delivered, {dead} still dead")

    @typecheck
    def drain(self, timeout: int | float = 60.0) -> None:
        """Wait until every pending event is delivered (or ``timeout`` s), showing progress."""
        if not self.delivery.running:
            raise SampleTrackError(
                f"tracker {self.name!r} does not deliver in this session (deliver_in_session: false); "
                "run 'sampletrack deliver' instead"
            )
        done = self.delivery.drain(timeout, progress_bar)
        print()
        if not done:
            self.delivery_status()
            raise SampleTrackError(f"tracker {self.name!r}: events still pending after {timeout:g} s")

    # -- the seam for sample changers, readers and macros --------------------------------------------
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

    def record_unmount(self, source: Source, *, at: datetime | None = None) -> list[Event]:
        ctx = self._context()
        return self._apply(lambda snap: machine.unmount(snap, source, ctx, at=at))

    def set_unknown(self, reason: str) -> None:
        self._apply(lambda snap: machine.degrade(snap, TrackerState.UNKNOWN, reason))

    def set_conflict(self, reason: str) -> None:
        self._apply(lambda snap: machine.degrade(snap, TrackerState.CONFLICT, reason))

    # -- keeping scans level with the hardware (see tracker/settle.py) -------------------------------
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
            else (start and self._icat_doubt(snap)) or self._doubt(snap)
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

    def _icat_doubt(self, snap: Snapshot) -> Doubt | None:
        """Under the ESRF policy: why the scan's ICAT fields may name another state than ``snap``."""
        if not self.set_icat_fields or not data_policy.policy_active(data_policy.current_session()):
            return None
        if self._icat_error is not None:
            return Doubt(TrackerState.UNKNOWN, self._icat_error)
        applied = self._icat
        if applied is not None and applied.seq != snap.seq and applied.fields != icat_fields(snap):
            return Doubt(
                TrackerState.UNKNOWN,
                f"the tracker changed (#{applied.seq} -> #{snap.seq}) while this scan started: its ICAT "
                f"dataset fields are those of #{applied.seq}",
            )
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

    def scan_refusal(self) -> str | None:
        """Why the scan policy refuses a scan now, or None."""
        snap = self._current()
        if self.scan_policy == "allow" or snap.state is TrackerState.MOUNTED:
            return None
        why = f" ({snap.reason})" if snap.reason else ""
        return (
            f"tracker {self.name!r} refuses the scan: no sample is known to be mounted "
            f"(state {snap.state}{why}). Record the sample with {self.name}.read_barcode() or "
            f"{self.name}.mount('BARCODE'), or set 'scan_policy: allow' in {self.config_file}"
        )

    # -- internals -----------------------------------------------------------------------------------
    @staticmethod
    def _choice(cfg: ObjectConfig, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = cfg.get(key, str, default)
        if value not in allowed:
            raise cfg.error(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def _warn(self, message: str) -> None:
        log.warning("tracker %r: %s", self.name, message)
        self.warnings = [*self.warnings[-9:], message]

    def _restore(self) -> Snapshot:
        try:
            self._raw, snapshot = self.store.read()
        except SampleTrackError as exc:
            self._raw = self._redis_text(self.store.state_key)
            self._warn(str(exc))
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

    @staticmethod
    def _session_name() -> str:
        session = data_policy.current_session()
        return session.name if session is not None else "(no session)"

    # -- ownership: one writing session per tracker ------------------------------------------------
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
                f"{self.name}.take_over()"
            )

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
                    "restarted?); the next change takes it again if no other session has"
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

    def _context(self) -> EventContext:
        # outside a session (a script using the tracker): events say "(no session)", no proposal
        session = data_policy.current_session()
        proposal = data_policy.proposal_name(session)
        return EventContext(self.beamline, self._session_name(), proposal)

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

    # -- the ESRF data policy: ICAT dataset fields, applied in each scan's own greenlet --------------
    def _before_scan(self) -> None:
        """Run by BLISS's ``Scan.__init__`` (see ``data_policy.before_scan``), before the scan's
        dataset is fixed: the dataset's ICAT fields follow the state the scan will be tagged with,
        in a new dataset when the mounted sample changed. Never from a changer's or reader's
        greenlet: a dataset switched under a starting scan makes it fail ("Dataset is already
        closed") or split across two datasets. Not while a scan runs (a sequence's child scan):
        its dataset stays; the child's tag then says the fields lag (see :meth:`scan_tag`)."""
        session = data_policy.current_session()
        if session is None or not data_policy.policy_active(session):
            return
        if self._tagger is not None and self._tagger.running:
            return
        self._inflight.settle(self.settle_timeout)
        snap = self._current()
        try:
            self._sync_icat(session, snap)
        # reported in the scan's tag and __info__, never raised: the scan must start all the same
        except (SampleTrackError, RedisError, OSError, RuntimeError, ValueError, KeyError) as exc:
            self._icat_error = f"the ICAT dataset fields of change #{snap.seq} were not set: {exc}"
            self._warn(self._icat_error)
        else:
            self._icat_error = None

    def _sync_icat(self, session: Any, snap: Snapshot) -> None:
        fields = icat_fields(snap)
        dataset = data_policy.dataset_name(session)
        applied = self._icat
        if applied is not None and applied.dataset == dataset and applied.fields == fields:
            self._icat = replace(applied, seq=snap.seq)  # nothing to write (a no-op for ICAT)
            return
        if (
            self.new_dataset_on_change
            and applied is not None
            and applied.dataset == dataset  # the scientist's own new dataset is kept
            and applied.mount_event_id != snap.mount_event_id
        ):
            dataset = data_policy.new_dataset(session)
        data_policy.set_dataset_fields(session, fields)
        self._icat = IcatApplied(dataset, snap.seq, snap.mount_event_id, fields)

    def _mount_read(self, read: BarcodeRead) -> Sample:
        sample = self.resolve(read.barcode)
        self.record_mount(sample, Source.BARCODE_READER, at=read.received_at)
        return sample

    def _follow_reader(self) -> None:
        assert self.reader is not None
        self._follow(self.reader)
        # stream() without a timeout ends only when the reader is closed (tracker.close() kills
        # this greenlet instead): following it again would reopen it, against the user's close
        self._follower = None
        self._warn(
            f"reader {self.reader.name!r} was closed: continuous tracking stopped, mounts are no longer "
            f"recorded from it; call {self.name}.activate() to follow it again (it reconnects the reader)"
        )

    def _follow(self, reader: BarcodeReader) -> None:
        for outcome in reader.stream():
            if isinstance(outcome, BarcodeRead):
                try:
                    self._mount_read(outcome)
                except SampleTrackError as exc:
                    self._warn(f"code {outcome.barcode!r} from reader {reader.name!r} not recorded: {exc}")
            elif isinstance(outcome, ReaderConnectionError):
                snap = self._snapshot
                if snap.state is TrackerState.MOUNTED and snap.source is Source.BARCODE_READER:
                    try:
                        self.set_unknown(
                            f"reader {reader.name!r} went offline while {snap.sample.label} was mounted"
                        )  # type: ignore[union-attr]
                    except SampleTrackError as exc:  # e.g. owned by another session: keep following
                        self._warn(f"tracker not set UNKNOWN: {exc}")
                self._warn(str(outcome))
            elif not isinstance(outcome, NoReadError):  # a no-read in continuous mode: nothing in view
                self._warn(str(outcome))

    def __info__(self) -> str:
        snap = self._snapshot
        lines = [f"SampleTracker {self.name!r} (beamline {self.beamline})"]
        lines.append(f"  state     : {snap.state} since {snap.since.strftime('%Y-%m-%d %H:%M:%S')} UTC")
        if snap.sample is not None:
            which = "sample" if snap.state is TrackerState.MOUNTED else "last known"
            lines.append(f"  {which:<10}: {snap.sample.label}")
        if snap.source is not None:
            lines.append(f"  source    : {snap.source}")
        if snap.reason:
            lines.append(f"  reason    : {snap.reason}")
        if self.reader is not None:
            lines.append(
                f"  reader    : {self.reader.name} ({self.reader_mode}, {self.reader.state}"
                + (f", last error: {self.reader.last_error}" if self.reader.last_error else "")
                + ")"
            )
        for member in self.registry.registries:
            lines.append(f"  registry  : {member.describe()}")
        if not self.registry.registries:
            lines.append("  registry  : none")
        lines.append(f"  unknown   : barcodes in no registry: {self.unknown_barcode}")
        lines.append(f"  owner     : {self.owner()}")
        tagging = "on" if self._tagger is not None else "off"
        lines.append(f"  scans     : tagging {tagging}, policy {self.scan_policy}")
        witnesses = ", ".join(w.name for w in self._witnesses) or "none"
        lines.append(f"  checks    : scans against {witnesses}; manual input policy {self.manual_policy}")
        if snap.state in (TrackerState.UNKNOWN, TrackerState.CONFLICT):
            lines.append("  meaning   : scans are tagged with this doubt until a source settles it")
        statuses = self.delivery.status()
        if not statuses:
            lines.append(
                f"  delivery  : none configured ({self.outbox.pending()} event(s) kept in the outbox)"
            )
        for status in statuses:
            lines.append(f"  delivery  : {status.line()}")
        for warning in self.warnings[-3:]:
            lines.append(f"  warning   : {warning}")
        lines.append("  recent events:")
        lines.extend(f"    {line}" for line in self.history_text(5).splitlines())
        return "\n".join(lines)
