"""``SampleTracker``: the BLISS controller that knows which sample is mounted and tags every scan.

Beacon YAML (``plugin: bliss``; keys and defaults in the README's configuration reference)::

    - name: tracker
      plugin: bliss
      package: bliss_sampletrack.tracker.controller
      class: SampleTracker
      beamline: id23-1
      reader: $bcr                 # optional: a barcode reader object
      reader_mode: triggered       # triggered (tracker.read_barcode()) | continuous
      manifest: /data/id23-1/samples.csv
      unknown_barcode: accept      # accept (with a warning) | refuse

Every change is one transaction in the beacon Redis (snapshot, history, outbox: see
:mod:`bliss_sampletrack.tracker.store`), done before the call returns; a change is then applied
to the ESRF data policy's ICAT dataset fields when the policy is on. Changes are serialised by a
lock, so a reader greenlet and a macro cannot interleave two transitions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from bliss.common.utils import typecheck

from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.delivery.clients import clients_from_config
from bliss_sampletrack.delivery.manager import DeliveryManager, progress_bar
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import (
    MountRefusedError,
    NoReadError,
    ReaderConnectionError,
    SampleTrackError,
)
from bliss_sampletrack.readers.protocol import BarcodeRead, BarcodeReader
from bliss_sampletrack.tagging import metadata, scan_policy
from bliss_sampletrack.tagging.icat_fields import icat_fields
from bliss_sampletrack.tagging.scan_tag import sample_tag
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.registry import ChainRegistry, ManifestRegistry, SampleRegistry
from bliss_sampletrack.tracker.state import Change, EventContext, Snapshot, TrackerState
from bliss_sampletrack.tracker.store import RedisTrackerStore

log = logging.getLogger(__name__)

BEAMLINE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
KEYS = {
    "beamline",
    "reader",
    "reader_mode",
    "manifest",
    "unknown_barcode",
    "history_size",
    "tag_scans",
    "icat_fields",
    "new_dataset_on_change",
    "scan_policy",
    "no_read",
    "delivery",
    "deliver_in_session",
}


def _manifest(cfg: ObjectConfig, location: str) -> ManifestRegistry:
    """An absolute path is a local file; a relative one is a file of the beacon configuration
    (served by beacon like the YAML files, so every BLISS host sees the same manifest)."""
    if Path(location).is_absolute():
        return ManifestRegistry(location)
    from bliss.config.conductor.client import get_text_file

    try:
        text = get_text_file(location)
    except RuntimeError as exc:
        raise cfg.error("manifest", f"names {location!r}, which beacon cannot serve: {exc}") from None
    return ManifestRegistry(f"beacon:{location}", text=text)


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
        self.tag_scans = cfg.get("tag_scans", bool, True)
        self.set_icat_fields = cfg.get("icat_fields", bool, True)
        self.new_dataset_on_change = cfg.get("new_dataset_on_change", bool, True)
        self.no_read = cfg.string_list("no_read")
        self.registry: SampleRegistry = ChainRegistry(_manifest(cfg, m) for m in cfg.string_list("manifest"))
        self.warnings: list[str] = []

        from bliss.config.conductor.client import get_redis_proxy

        redis = get_redis_proxy()
        self.outbox = RedisStreamOutbox(redis, self.beamline)
        self.store = RedisTrackerStore(redis, name, self.outbox, cfg.get("history_size", int, 1000))
        self.delivery = DeliveryManager(self.outbox, clients_from_config(cfg))
        self.deliver_in_session = cfg.get("deliver_in_session", bool, True)
        self._lock = gevent.lock.RLock()
        self._snapshot = self._restore()
        self._follower: gevent.Greenlet | None = None
        self._tagger: metadata.ScanTagger | None = None
        self.activate()

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> None:
        """Tag scans, apply the scan policy and follow the reader (done at construction)."""
        if self.tag_scans and self._tagger is None:
            self._tagger = metadata.ScanTagger(self.name, lambda: sample_tag(self._snapshot, self.name))
            metadata.install(self._tagger)
        if self.scan_policy != "allow":
            scan_policy.install(self._preset_name, self.scan_refusal)
        if self.reader is not None and self.reader_mode == "continuous" and self._follower is None:
            self._follower = gevent.spawn(self._follow_reader)
            self._follower.name = f"sampletrack-{self.name}-reader"
        if self.deliver_in_session:
            self.delivery.start()

    def close(self) -> None:
        """Stop tagging scans, following the reader and delivering; state and outbox stay in Redis."""
        self.delivery.stop()
        if self._follower is not None:
            self._follower.kill()
            self._follower = None
        if self._tagger is not None:
            metadata.uninstall(self.name)
            self._tagger = None
        scan_policy.uninstall(self._preset_name)

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
    def mount(self, barcode: str | None = None, name: str | None = None) -> Sample:
        """Record a sample mounted by hand: by barcode (resolved through the registry), by name, or both."""
        if barcode is None and name is None:
            raise MountRefusedError(
                f"{self.name}.mount() needs a barcode or a name, e.g. {self.name}.mount('LYS-0042')"
            )
        if barcode is not None:
            sample = self.resolve(barcode)
            if name is not None:
                sample = Sample(**{**sample.to_dict(), "name": name})
        else:
            sample = Sample(name=name)
        self.record_mount(sample, Source.MANUAL)
        return sample

    def unmount(self) -> None:
        """Record that the sample was removed by hand."""
        self.record_unmount(Source.MANUAL)

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

    @typecheck
    def resolve(self, barcode: str) -> Sample:
        """The sample record for ``barcode`` (registry), following the unknown-barcode policy."""
        code = validate_barcode(barcode, no_read=self.no_read)
        sample = self.registry.resolve(code)
        if sample is not None:
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
        with self._lock:
            return self._apply(
                machine.mount(
                    self._snapshot, sample, source, self._context(), at=at, status=status, message=message
                )
            )

    def record_unmount(self, source: Source, *, at: datetime | None = None) -> list[Event]:
        with self._lock:
            return self._apply(machine.unmount(self._snapshot, source, self._context(), at=at))

    def set_unknown(self, reason: str) -> None:
        with self._lock:
            self._apply(machine.degrade(self._snapshot, TrackerState.UNKNOWN, reason))

    def set_conflict(self, reason: str) -> None:
        with self._lock:
            self._apply(machine.degrade(self._snapshot, TrackerState.CONFLICT, reason))

    def scan_refusal(self) -> str | None:
        """Why the scan policy refuses a scan now, or None."""
        snap = self._snapshot
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
            snapshot = self.store.load()
        except SampleTrackError as exc:
            self._warn(str(exc))
            return Snapshot.initial(str(exc))
        if snapshot is None:
            return Snapshot.initial()
        log.info("tracker %r restored %s from Redis", self.name, snapshot.state)
        return snapshot

    def _context(self) -> EventContext:
        from bliss import current_session

        proposal = None
        if self._policy_active():
            from bliss_sampletrack.tagging import data_policy

            proposal = data_policy.proposal_name(current_session)
        return EventContext(self.beamline, current_session.name, proposal)

    def _policy_active(self) -> bool:
        from bliss import current_session

        from bliss_sampletrack.tagging import data_policy

        return current_session is not None and data_policy.policy_active(current_session)

    def _apply(self, change: Change) -> list[Event]:
        before = self._snapshot
        self.store.commit(change.snapshot, change.events)  # recorded (state, history, outbox) first
        self._snapshot = change.snapshot
        for event in change.events:
            log.info(
                "tracker %r: %s %s (%s, %s)",
                self.name,
                event.type,
                event.sample.label,
                event.source,
                event.status,
            )
        if change.events or before.state != change.snapshot.state:
            self._update_icat(before, change.snapshot)
        return change.events

    def _update_icat(self, before: Snapshot, after: Snapshot) -> None:
        if not self.set_icat_fields or not self._policy_active():
            return
        from bliss import current_session

        from bliss_sampletrack.tagging import data_policy

        try:
            if self.new_dataset_on_change and before.mount_event_id != after.mount_event_id:
                data_policy.new_dataset(current_session)
            data_policy.set_dataset_fields(current_session, icat_fields(after))
        except SampleTrackError as exc:
            raise SampleTrackError(
                f"tracker {self.name!r}: the change to {after.state} is recorded, but the ICAT dataset "
                f"fields could not be updated: {exc}"
            ) from exc

    def _mount_read(self, read: BarcodeRead) -> Sample:
        sample = self.resolve(read.barcode)
        self.record_mount(sample, Source.BARCODE_READER, at=read.received_at)
        return sample

    def _follow_reader(self) -> None:
        assert self.reader is not None
        for outcome in self.reader.stream():
            if isinstance(outcome, BarcodeRead):
                try:
                    self._mount_read(outcome)
                except SampleTrackError as exc:
                    self._warn(
                        f"code {outcome.barcode!r} from reader {self.reader.name!r} not recorded: {exc}"
                    )
            elif isinstance(outcome, ReaderConnectionError):
                snap = self._snapshot
                if snap.state is TrackerState.MOUNTED and snap.source is Source.BARCODE_READER:
                    self.set_unknown(
                        f"reader {self.reader.name!r} went offline while {snap.sample.label} was mounted"
                    )  # type: ignore[union-attr]
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
        lines.append(f"  registry  : {self.registry.describe()} (unknown barcodes: {self.unknown_barcode})")
        tagging = "on" if self._tagger is not None else "off"
        lines.append(f"  scans     : tagging {tagging}, policy {self.scan_policy}")
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
