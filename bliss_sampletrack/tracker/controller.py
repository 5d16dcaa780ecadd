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

The controller is thin: the tracker itself (state machine, persistence in the beacon Redis with
one owner per tracker, scans kept level with the hardware, manual input checked) is the engine,
:class:`~bliss_sampletrack.tracker.engine.Tracker`, which needs no BLISS. This class adds what a
BLISS session needs: the beacon configuration, type-checked shell commands, the scan tag as user
scan metadata, the ESRF data policy's ICAT dataset fields (set in each scan's own greenlet, see
:meth:`SampleTracker._before_scan`), the scan policy, the barcode reader, delivery and
``__info__``. What the shell shows (one sample's story, the pucks, argument errors, tab
completion) is rendered by :mod:`~bliss_sampletrack.tracker.views`.

Warnings: ``__info__`` shows a warning only while the situation it describes lasts (an unknown
barcode while that sample is the tracker's, a reader offline while it is offline, a manual
conflict until the next change...); ``warnings`` keeps the last ten as they were logged.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import gevent

from bliss_sampletrack.changers.inventory import InventoryLog, PinReading
from bliss_sampletrack.changers.inventory import progress_bar as inventory_bar
from bliss_sampletrack.changers.protocol import SampleChanger
from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core import Sample, Source
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.core.shell import command, commands_dir
from bliss_sampletrack.delivery.clients import clients_from_config
from bliss_sampletrack.delivery.manager import DeliveryManager, progress_bar
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import (
    ConfigurationError,
    InvalidBarcodeError,
    NoReadError,
    ReaderConnectionError,
    ReaderError,
    SampleTrackError,
)
from bliss_sampletrack.readers.protocol import BarcodeRead, BarcodeReader, ConnectionState
from bliss_sampletrack.tagging import data_policy, metadata, scan_policy
from bliss_sampletrack.tagging.icat_fields import icat_fields
from bliss_sampletrack.tracker import manual, writeback
from bliss_sampletrack.tracker.engine import LEASE_CALL_TIMEOUT_S, SETTLE_TIMEOUT_S, Tracker
from bliss_sampletrack.tracker.inventory import Inventory, placed_elsewhere, take_inventory
from bliss_sampletrack.tracker.registry import (
    ChainRegistry,
    Closable,
    ManifestRegistry,
    Prefetching,
    Refreshable,
)
from bliss_sampletrack.tracker.registry_config import registries_from_config
from bliss_sampletrack.tracker.settle import Doubt
from bliss_sampletrack.tracker.state import EventContext, Snapshot, TrackerState
from bliss_sampletrack.tracker.store import OWNER_TTL_S
from bliss_sampletrack.tracker.views import pucks as puck_view
from bliss_sampletrack.tracker.views import story as story_view
from bliss_sampletrack.tracker.views.scanlog import LoggingTagger, ScanLog, record_for
from bliss_sampletrack.tracker.views.text import ansi_wanted, local_time

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
#: what tab completion offers (``__dir__``): the shell commands and the state worth reading;
#: the seam for changers and macros (``record_mount``, ``changing``...) stays reachable, unlisted
SHELL_NAMES = (
    "mount",
    "unmount",
    "read_barcode",
    "where",
    "pucks",
    "inventory",
    "history",
    "resolve",
    "refresh_registry",
    "delivery_status",
    "retry_dead_letters",
    "drain",
    "owner",
    "take_over",
    "activate",
    "name",
    "beamline",
    "state",
    "sample",
)
#: where()'s note when this session tags no scans (its scan lists come from other sessions only)
NOT_TAGGING = "this session tags no scans (tag_scans: false): only scans another session tagged are listed"
#: how registry_config names a manifest served by beacon (its ``path``): reloaded the same way
BEACON_MANIFEST = "beacon:"


@dataclass(frozen=True, slots=True)
class IcatApplied:
    """The ICAT fields this tracker last set on a dataset, for which change."""

    dataset: str | None  # proposal/collection/dataset
    seq: int
    mount_event_id: uuid.UUID | None
    fields: dict[str, str | None]


class SampleTracker(Tracker):
    """Which sample is on the goniometer; tags scans, records mount/unmount events: the engine
    (:class:`~bliss_sampletrack.tracker.engine.Tracker`) as a BLISS object."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ObjectConfig(name, config)
        cfg.check_known(KEYS)
        beamline = cfg.get("beamline", str)
        if not BEAMLINE.fullmatch(beamline):
            raise cfg.error(
                "beamline", f"must be lower case like 'id23-1' (the contract's pattern), got {beamline!r}"
            )
        self.reader: BarcodeReader | None = config.get("reader")
        if self.reader is not None and not isinstance(self.reader, BarcodeReader):
            raise cfg.error(
                "reader", f"must reference a barcode reader object, got {type(self.reader).__name__}"
            )
        self.reader_mode = self._choice(cfg, "reader_mode", ("triggered", "continuous"), "triggered")
        self.scan_policy = self._choice(cfg, "scan_policy", ("allow", "refuse_without_sample"), "allow")
        self.tag_scans = cfg.get("tag_scans", bool, True)
        self.set_icat_fields = cfg.get("icat_fields", bool, True)
        self.new_dataset_on_change = cfg.get("new_dataset_on_change", bool, True)
        no_read = cfg.string_list("no_read")
        owner_ttl = cfg.get("owner_ttl", float, OWNER_TTL_S)
        if not 0.5 <= owner_ttl <= 3600:
            raise cfg.error("owner_ttl", f"must be between 0.5 and 3600 seconds, got {owner_ttl!r}")
        history_size = cfg.get("history_size", int, 1000)
        if history_size < 1:
            raise cfg.error("history_size", f"must be >= 1, got {history_size}")

        # every key checked before Redis is reached: a wrong key is a configuration error even
        # where beacon is not running (config checks, the docs' examples)
        unknown_barcode = self._choice(cfg, "unknown_barcode", ("accept", "refuse"), "accept")
        manual_policy = self._choice(cfg, "manual_policy", manual.POLICIES, "conflict")
        settle_timeout = cfg.positive("settle_timeout", SETTLE_TIMEOUT_S)
        clients = clients_from_config(cfg)
        self.deliver_in_session = cfg.get("deliver_in_session", bool, True)

        from bliss.config.conductor.client import get_redis_proxy

        registry = ChainRegistry(registries_from_config(cfg, beamline, get_redis_proxy, no_read))
        redis = get_redis_proxy()
        super().__init__(
            name,
            beamline,
            redis,
            registry=registry,
            outbox=RedisStreamOutbox(redis, beamline),
            history_size=history_size,
            owner_ttl=owner_ttl,
            session=self._session_name(),
            context=self._bliss_context,
            unknown_barcode=unknown_barcode,
            no_read=no_read,
            manual_policy=manual_policy,
            settle_timeout=settle_timeout,
            config_file=cfg.filename,
        )
        self.delivery = DeliveryManager(self.outbox, clients)
        self.scan_log = ScanLog(redis, name)  # each mount's scans, for where() (views/scanlog.py)
        self._changers: list[SampleChanger] = []  # linked by a ChangerLink, for pucks()
        self._read_failure: tuple[datetime, str] | None = None  # the last read's, until a good one
        self._icat: IcatApplied | None = None  # the fields set on the current dataset
        self._icat_error: str | None = None
        self._name_note: dict[str, str] = {}  # the scientist's sample name, when not the tracker's
        self.tag_checks.append(self._icat_doubt)
        self._follower: gevent.Greenlet | None = None
        self._prefetches: list[gevent.Greenlet] = []
        self._tagger: metadata.ScanTagger | None = None
        self.activate()

    # -- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> None:
        """Tag scans, apply the scan policy and follow the reader (done at construction)."""
        if self.tag_scans and self._tagger is None:
            self._tagger = LoggingTagger(
                self.name, self.scan_tag, self.changes_between, on_start=self._scan_started
            )
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
            if isinstance(member, Prefetching):  # e.g. the proposal's ICAT+ parcels, in the background
                self._prefetches.append(member.prefetch())

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
            if isinstance(member, Closable):
                member.close()
        super().close()

    __close__ = close  # BLISS calls it when the session closes

    @property
    def _preset_name(self) -> str:
        return f"sampletrack-{self.name}"

    # -- state -------------------------------------------------------------------------------------

    # -- shell commands (the engine's, argument-checked with messages naming the argument) -------------
    def __dir__(self) -> list[str]:
        return commands_dir(SHELL_NAMES)

    @command
    def mount(self, barcode: str | None = None, name: str | None = None, force: bool = False) -> Sample:
        """Record a sample mounted by hand: by barcode (resolved through the registry), by name, or both.

        Checked against the hardware (a changer, its presence sensor): a contradiction follows
        ``manual_policy`` (conflict: recorded ERROR, the tracker CONFLICT; refuse; trust).
        ``force=True`` records it anyway (the contradiction kept in the event's message), and
        takes a text that looks like a changer position (``1:01``) as a barcode."""
        return super().mount(barcode, name, force)

    @command
    def unmount(self, force: bool = False) -> None:
        """Record that the sample was removed by hand (checked like :meth:`mount`)."""
        super().unmount(force)

    @command
    def resolve(self, barcode: str) -> Sample:
        """The sample record for ``barcode`` (registry), following the unknown-barcode policy.
        A look-up: it records nothing; a warning about the barcode is logged, and shown in
        ``__info__`` only while a sample with that barcode is the tracker's."""
        return super().resolve(barcode)

    def take_over(self) -> None:  # type: ignore[override]  # the shell prints, not returns
        """Make this session the tracker's only writer, whoever owned it (use only when the other
        session is known to be dead or closed: it will be refused from now on)."""
        print(super().take_over())

    @command
    def read_barcode(self, timeout: int | float | None = None) -> Sample:
        """Trigger the reader, resolve the code and record the mount. A no-read mounts nothing."""
        if self.reader is None:
            raise SampleTrackError(f"tracker {self.name!r} has no 'reader' in {self.config_file}")
        try:
            read = self.reader.read(timeout)
        except NoReadError as exc:
            self._read_failed(str(exc))
            raise NoReadError(
                f"{exc}; nothing was recorded as mounted (state stays {self.state})", raw=exc.raw
            ) from None
        except (ReaderError, InvalidBarcodeError) as exc:
            self._read_failed(str(exc))
            raise
        return self._mount_read(read)

    def refresh_registry(self) -> None:
        """Read every sample registry again now and show each with its number of samples:
        manifest files (edited since the session started: a beacon-served one is fetched from
        beacon again) and the ICAT+ parcels of the current proposal (parcels declared since the
        last read). A manifest that cannot be read or has an error keeps its previous samples;
        the failures are raised together once every registry has been tried."""
        failures: list[str] = []
        for index, member in enumerate(self.registry.registries):
            change = ""
            if isinstance(member, ManifestRegistry):
                before = len(member.samples)
                try:
                    member = self.registry.registries[index] = self._reloaded(member)
                except ConfigurationError as exc:  # the others are still refreshed; raised below
                    failures.append(f"{exc} (its previous {before} samples are kept)")
                else:
                    change = f", was {before}"
            elif isinstance(member, Refreshable):
                try:
                    member.refresh()
                except SampleTrackError as exc:  # the others are still refreshed; raised below
                    failures.append(str(exc))
            print(f"{member.describe()}{change}")
        if failures:
            raise SampleTrackError(f"tracker {self.name!r}: registry refresh failed: {'; '.join(failures)}")

    @staticmethod
    def _reloaded(member: ManifestRegistry) -> ManifestRegistry:
        """``member``'s file read again, from where registry_config read it (a local path, or
        ``beacon:<path>`` served by beacon). Raises ConfigurationError, naming the file."""
        where = str(member.path)
        if not where.startswith(BEACON_MANIFEST):
            return ManifestRegistry(member.path)
        from bliss.config.conductor.client import get_text_file

        try:
            text = get_text_file(where.removeprefix(BEACON_MANIFEST))
        except RuntimeError as exc:  # beacon's answer for a file it does not have
            raise ConfigurationError(f"sample manifest {where}: beacon cannot serve it now: {exc}") from None
        return ManifestRegistry(where, text=text)

    @command
    def history(self, count: int = 10) -> None:
        """Print the last ``count`` events (a whole number >= 1), newest first, in local time."""
        print(self.history_text(count))

    @command
    def where(self, sample: str) -> None:
        """Print one sample's story: by barcode or sample name, every mount and unmount of it
        in the history (when, source, changer position, status, session and host), the scans
        taken while it was mounted (number, title, file, dataset), and each event's delivery
        per client (waiting, delivered, dead letter with the service's answer). Times are local,
        with the zone. See :mod:`bliss_sampletrack.tracker.views.story`."""
        print(self.story_text(sample))

    def story_text(self, sample: str) -> str:
        """What :meth:`where` prints (read from Redis: the history, the scan log, the outbox)."""
        if not sample.strip():
            raise ValueError(f"{self.name}.where(sample): give a barcode or a sample name, e.g. 'LYS-0001'")
        snap = self._current()
        story = story_view.gather_story(
            sample,
            tracker=self.name,
            history=story_view.read_history(self.store.redis, self.store.history_key),
            history_size=self.store.history_size,
            outbox=self.outbox,
            clients=[d.client.name for d in self.delivery.deliverers],
            scan_log=self.scan_log,
            current_mount=snap.mount_event_id if snap.state is TrackerState.MOUNTED else None,
            registry_says=self._registry_says,
            scans_note=None if self._tagger is not None else NOT_TAGGING,
        )
        return story_view.render_story(story, ansi=ansi_wanted())

    def _registry_says(self, text: str) -> str:
        """For a sample with no event: what the registries know of it (a look-up: no warning)."""
        try:
            code = validate_barcode(text, no_read=self.no_read)
        except InvalidBarcodeError as exc:
            return f"{text!r} is no barcode ({exc}): no registry was asked"
        try:
            sample = self.registry.resolve(code)
        except SampleTrackError as exc:
            return f"the registries could not be asked: {exc}"
        if sample is None:
            return (
                f"no registry knows barcode {code!r} either ({self.registry.describe()}; registries "
                "are looked up by barcode, not by name)"
            )
        return f"barcode {code!r} is {sample.label} in the registries, never mounted in the events kept"

    def pucks(self, changer: SampleChanger | None = None) -> None:
        """Print the pucks of the changers linked to this tracker (or of ``changer``): each
        position's barcode, sample name (from the registries), state (in the dewar, mounted,
        empty, unknown) and when the pin was last seen; the mounted one marked ``>``."""
        if changer is not None and not isinstance(changer, SampleChanger):
            raise TypeError(
                f"{self.name}.pucks(changer): changer must be a sample changer (e.g. sc), got "
                f"{type(changer).__name__} {changer!r}\n  usage: {self.name}.pucks(changer=None)"
            )
        changers = [changer] if changer is not None else list(self._changers)
        if not changers:
            print(
                f"tracker {self.name!r} has no changer linked (a ChangerLink links one); "
                f"name one: {self.name}.pucks(sc)"
            )
            return
        print("\n\n".join(self.puck_text(c) for c in changers))

    def puck_text(self, changer: SampleChanger, ansi: bool | None = None) -> str:
        """What :meth:`pucks` prints for ``changer`` (``ansi``: bold highlight; default: on a terminal)."""
        view = puck_view.gather_pucks(
            changer,
            resolve=self.registry.resolve,  # a look-up for a view: no policy, no warning
            history=story_view.read_history(self.store.redis, self.store.history_key),
            snapshot=self._current(),
        )
        return puck_view.render_pucks(view, ansi=ansi_wanted() if ansi is None else ansi)

    def inventory(self, changer: SampleChanger) -> Inventory:
        """Read every pin of ``changer``'s loaded pucks with its gripper's reader (a progress bar
        shows), reconcile them with the registries (present, missing, unexpected, misplaced,
        swapped, duplicated, no-read: :mod:`~bliss_sampletrack.tracker.inventory`) and keep the
        result in Redis (the last 10 per changer). Returns the inventory: the shell shows its
        table; ``.to_json(path)``, ``.to_csv(path)`` export it. ``sc.inventory()`` is the same."""
        if not isinstance(changer, PinReading):
            raise TypeError(
                f"{self.name}.inventory(changer): changer must be a sample changer whose gripper reads "
                f"its pins (e.g. a SimulatedChanger with a reader), got {type(changer).__name__}\n"
                f"  usage: {self.name}.inventory(changer)"
            )
        report = take_inventory(
            self.name, changer, self.registry.registries, self.registry.resolve, progress=inventory_bar
        )
        # kept with what it writes back to ICAT+ (a parcel emptied, an item moved), in one transaction
        return writeback.keep(
            report,
            self._inventory_log(changer),
            outbox=self.delivery.writebacks,
            kinds=self.delivery.writeback_kinds,
            beamline=self.beamline,
            history=self.store.history(self.store.history_size, trusted=True),
            resolve=self.registry.resolve,
            registries=self.registry.registries,
        )

    def last_inventory(self, changer: SampleChanger) -> Inventory | None:
        """The last inventory of ``changer`` kept in Redis (any session's), or None."""
        record = self._inventory_log(changer).last()
        return None if record is None else Inventory.from_dict(record)

    def inventory_summary(self, changer: SampleChanger) -> str | None:
        """One line for the changer's ``__info__``: when the last inventory was taken, its counts."""
        last = self.last_inventory(changer)
        return None if last is None else last.summary()

    def inventory_contradiction(self, changer: SampleChanger, sample: Sample) -> str | None:
        """A manual mount of ``sample`` against ``changer``'s last inventory (it read that
        barcode in a puck), or None: judged by ``manual_policy`` like any contradiction."""
        return placed_elsewhere(self._inventory_log(changer).last(), sample.barcode)

    def _inventory_log(self, changer: SampleChanger) -> InventoryLog:
        return InventoryLog(self.store.redis, self.name, changer.name)

    # -- the puck view hook of ChangerLink (changers/link.py) -------------------------------------
    def show_changer(self, changer: SampleChanger) -> Callable[[], str]:
        """``changer`` is linked to this tracker: :meth:`pucks` shows it; returns its puck view,
        which the link gives the changer for its ``__info__``."""
        if changer not in self._changers:
            self._changers.append(changer)
        return functools.partial(self.puck_text, changer)

    def hide_changer(self, changer: SampleChanger) -> None:
        if changer in self._changers:
            self._changers.remove(changer)

    def delivery_status(self) -> None:
        """Print, per delivery client: pending events, oldest pending age, dead letters, last error."""
        statuses = self.delivery.status()
        print("\n".join(s.line() for s in statuses) or f"no delivery configured in {self.config_file}")

    def retry_dead_letters(self) -> None:
        """Send the dead letters again (after fixing what the service objected to)."""
        for client, (delivered, dead) in self.delivery.retry_dead_letters().items():
            print(f"{client}: {delivered} delivered, {dead} still dead")

    @command
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

    # -- keeping scans level with the hardware (see tracker/settle.py) -------------------------------

    def _icat_doubt(self, snap: Snapshot) -> Doubt | None:
        """Under the ESRF policy: why the scan's ICAT fields may name another state than ``snap``."""
        if self._icat is None and self._icat_error is None:
            return None  # no field set by this session yet (no scan under the policy): cheap
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

    @staticmethod
    def _session_name() -> str:
        session = data_policy.current_session()
        return session.name if session is not None else "(no session)"

    def _bliss_context(self) -> EventContext:
        # outside a session (a script using the tracker): events say "(no session)", no proposal
        session = data_policy.current_session()
        proposal = data_policy.proposal_name(session)
        return EventContext(self.beamline, self._session_name(), proposal)

    # -- ownership: one writing session per tracker ------------------------------------------------

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
        # broad on purpose: this runs inside BLISS's Scan.__init__, and a failure here would stop a
        # user's scan; it is logged with its traceback, kept in __info__ and put in the scan's tag
        # (UNKNOWN, with this reason), so nothing is hidden
        except Exception as exc:
            log.exception("tracker %r: ICAT dataset fields of change #%d not set", self.name, snap.seq)
            self._icat_error = (
                f"the ICAT dataset fields of change #{snap.seq} were not set: {type(exc).__name__}: {exc}"
            )
            failure = self._icat_error
            self._warn(failure, topic="icat", holds=lambda: self._icat_error == failure)
        else:
            self._icat_error = None

    def _sync_icat(self, session: Any, snap: Snapshot) -> None:
        fields = icat_fields(snap)
        dataset = data_policy.dataset_path(session)
        applied = self._icat
        if applied is not None and applied.dataset == dataset and applied.fields == fields:
            self._icat = replace(applied, seq=snap.seq)  # nothing to write (a no-op for ICAT)
            return
        self._name_note = self._compare_names(session, snap, fields.get("Sample_name"))
        if (
            self.new_dataset_on_change
            and applied is not None
            and applied.dataset == dataset  # the scientist's own new dataset is kept
            and applied.mount_event_id != snap.mount_event_id
        ):
            data_policy.new_dataset(session)
            dataset = data_policy.dataset_path(session)
        data_policy.set_dataset_fields(session, fields)
        self._icat = IcatApplied(dataset, snap.seq, snap.mount_event_id, fields)

    def _compare_names(self, session: Any, snap: Snapshot, ours: str | None) -> dict[str, str]:
        """When the scientist named the collection's sample (``newsample``) otherwise than the
        tracker's ``Sample_name``: both, for the scan tags, and a warning. The dataset gets the
        tracker's name (what is on the goniometer); the scientist's stays on the collection."""
        theirs = data_policy.collection_sample_name(session)
        if theirs is None or ours is None or theirs == ours:
            return {}
        what = snap.sample.label if snap.state is TrackerState.MOUNTED and snap.sample else "nothing"
        note = (
            f"the collection's sample name {theirs!r} (newsample, newcollection or the collection's "
            f"name) is not the tracker's: {what} mounted, so the dataset's Sample_name is {ours!r}"
        )
        if self._name_note.get("name_note") != note:  # in each tag; the log says it once
            log.info("tracker %r: %s", self.name, note)
        return {"collection_sample_name": theirs, "name_note": note}

    def scan_tag(self, start: bool = True) -> dict[str, Any]:
        """The engine's tag, plus the scientist's collection sample name when it is not the
        tracker's (see :meth:`_compare_names`)."""
        tag = super().scan_tag(start)
        if start and self._name_note and tag.get("state") in ("MOUNTED", "EMPTY"):
            tag.update(self._name_note)
        return tag

    def _mount_read(self, read: BarcodeRead) -> Sample:
        self._read_failure = None  # a good read: the last failure is over
        self._settled("reader code")
        sample = self.resolve(read.barcode)
        self.record_mount(sample, Source.BARCODE_READER, at=read.received_at)
        return sample

    def _read_failed(self, why: str) -> None:
        self._read_failure = (datetime.now(UTC), why)

    def _scan_started(self, scan: Any, tag: dict[str, Any]) -> None:
        """At a scan's START, after its tag: add it to the scan list of the mount it was tagged
        with (views/scanlog.py; the write runs in its own greenlet). A doubtful tag (UNKNOWN,
        CONFLICT) of a sample still the tracker's is listed under that mount, flagged."""
        mount = tag.get("mount_event_id")
        snap = self._snapshot
        if mount is None and snap.sample is not None and snap.mount_event_id is not None:
            if tag.get("@seq") == snap.seq:  # the tag was made from this snapshot
                mount = str(snap.mount_event_id)
        if mount is None:
            return  # nothing mounted: no mount to list it under
        dataset = data_policy.dataset_path(data_policy.current_session())
        self.scan_log.add(str(mount), record_for(scan.scan_info, tag, dataset))

    def _follow_reader(self) -> None:
        assert self.reader is not None
        self._follow(self.reader)
        # stream() without a timeout ends only when the reader is closed (tracker.close() kills
        # this greenlet instead): following it again would reopen it, against the user's close
        self._follower = None
        self._warn(
            f"reader {self.reader.name!r} was closed: continuous tracking stopped, mounts are no longer "
            f"recorded from it; call {self.name}.activate() to follow it again (it reconnects the reader)",
            topic="reader closed",
            holds=lambda: self._follower is None,
        )

    def _follow(self, reader: BarcodeReader) -> None:
        for outcome in reader.stream():
            if isinstance(outcome, BarcodeRead):
                try:
                    self._mount_read(outcome)
                except SampleTrackError as exc:  # stands until the next change or the next good code
                    self._warn(
                        f"code {outcome.barcode!r} from reader {reader.name!r} not recorded: {exc}",
                        topic="reader code",
                    )
            elif isinstance(outcome, ReaderConnectionError):
                snap = self._snapshot
                if snap.state is TrackerState.MOUNTED and snap.source is Source.BARCODE_READER:
                    try:
                        self.set_unknown(
                            f"reader {reader.name!r} went offline while {snap.sample.label} was mounted"
                        )  # type: ignore[union-attr]
                    except SampleTrackError as exc:  # e.g. owned by another session: keep following
                        self._warn(f"tracker not set UNKNOWN: {exc}")
                self._warn(
                    str(outcome),
                    topic="reader offline",
                    holds=lambda: reader.state != ConnectionState.CONNECTED,
                )
            elif not isinstance(outcome, NoReadError):  # a no-read in continuous mode: nothing in view
                self._read_failed(str(outcome))  # garbage from the reader: until the next good code
                self._warn(str(outcome), topic="reader code")

    def __info__(self) -> str:
        snap = self._snapshot
        lines = [f"SampleTracker {self.name!r} (beamline {self.beamline})"]
        lines.append(f"  state     : {snap.state} since {local_time(snap.since)}")
        if snap.sample is not None:
            which = "sample" if snap.state is TrackerState.MOUNTED else "last known"
            lines.append(f"  {which:<10}: {snap.sample.label}")
        if snap.source is not None:
            lines.append(f"  source    : {snap.source}")
        if snap.reason:
            lines.append(f"  reason    : {snap.reason}")
        if self.reader is not None:
            lines.append(f"  reader    : {self._reader_text(self.reader)}")
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
        if self._changers:
            names = ", ".join(c.name for c in self._changers)
            lines.append(f"  changers  : {names} ({self.name}.pucks() shows their pucks)")
        for warning in self.standing_warnings()[-3:]:  # only while their situation lasts
            lines.append(f"  warning   : {warning.message} (since {local_time(warning.at)})")
        lines.append("  recent events:")
        lines.extend(f"    {line}" for line in self.history_text(5).splitlines())
        return "\n".join(lines)

    def _reader_text(self, reader: BarcodeReader) -> str:
        """The reader's line of ``__info__``: its connection problem while it has one, and this
        tracker's last failed read until a good read (the reader's own ``last_error`` stays after
        a success: it is the last error ever, not the current one)."""
        text = f"{reader.name} ({self.reader_mode}, {reader.state}"
        if reader.state != ConnectionState.CONNECTED and reader.last_error:
            text += f": {reader.last_error}"
        if self._read_failure is not None:
            at, why = self._read_failure
            text += f"; last read failed at {local_time(at)}: {why}"
        return text + ")"
