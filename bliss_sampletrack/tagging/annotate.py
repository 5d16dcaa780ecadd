"""Annotate (or verify) scans of BLISS HDF5 files with the sample the tracker's history says was mounted.

Scans written without the tracker, or before it was installed, have no ``<n>.1/sample`` group. This
module replays the tracker's event history up to each scan's ``start_time`` (:func:`snapshot_at`) and
writes the same ``NXsample`` tag a live scan gets (:func:`~bliss_sampletrack.tagging.scan_tag.sample_tag`),
plus an ``annotated`` marker; or, with ``verify=True``, compares the existing tags with the history.

Replay rules (:func:`snapshot_at`):
- a successful ``mounted`` event: MOUNTED with that sample, ``mount_event_id`` its ``event_id``;
- a ``mounted`` event with status ERROR: CONFLICT, the event's message as the reason;
- an ``unmounted`` event (any status): EMPTY;
- before the oldest event: UNKNOWN, the reason saying the history does not reach back that far;
- between a successful mount and an ``unmounted`` event with status ERROR (an unmount nobody saw,
  recorded when the tracker left UNKNOWN/CONFLICT): UNKNOWN, because the history cannot tell when the
  sample left; the sample is only given as ``last_known_*``.

Caveats:
- The history only holds mounts and unmounts. The live tracker also goes UNKNOWN/CONFLICT without an
  event (a reader going offline); such periods are invisible here, except through the ERROR unmount
  rule above. A scan's live tag is therefore the better record: ``verify`` tells where they differ.
- ``start_time`` must carry a time zone (BLISS writes one); a scan without a usable one is skipped.
- Writing needs exclusive access. The file is opened read-write with HDF5 file locking, so a file that
  another process holds open (the BLISS writer *while a scan runs*, a viewer opened with locking) is
  refused with :class:`FileLockedError`. Between scans, BLISS's in-session "hdf5" writer has
  closed the file and annotating is safe, even with the session open (measured with BLISS 2.0.3 and
  2.4.0; the external Tango "nexus" writer was not tried). Never work around a lock with
  ``HDF5_USE_FILE_LOCKING=FALSE``: two writers corrupt an HDF5 file. With that variable set, locking
  is off and a running scan cannot be detected: a warning is logged.
- Within the BLISS process itself HDF5 shares an already open file instead of refusing it, so do not
  call :func:`annotate_file` from the session while a scan writes to the same file. Scans whose writer
  status is still ``RUNNING`` are skipped.
- A tag that disagrees with the history is only replaced with ``force``; the old group stays in the
  entry as ``sample_replaced_<UTC time>``.
- HDF5 has no transactions. Each scan's tag is built in a temporary group, then renamed to ``sample``
  (a link operation), and the file is flushed after each scan: an interrupted run leaves each scan
  either annotated or not, never half written (short of a crash corrupting the file itself).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import h5py

from bliss_sampletrack.core import Event, EventType, Status
from bliss_sampletrack.core.contract import format_timestamp
from bliss_sampletrack.core.snapshot import Snapshot, TrackerState
from bliss_sampletrack.errors import (
    AnnotateError,
    FileLockedError,
    InvalidEventError,
    ScanNotFoundError,
)
from bliss_sampletrack.tagging.scan_tag import sample_tag

log = logging.getLogger(__name__)

SAMPLE_GROUP = "sample"
#: the fields whose disagreement with the history is a mismatch
COMPARED_FIELDS = ("state", "barcode", "name", "mount_event_id")
ANNOTATED_KEY = "annotated"
REPLACED_PREFIX = "sample_replaced_"
_TMP_GROUP = "sample_annotate_incomplete"
_ENTRY = re.compile(r"^(\d+)\.1$")
_LOCKED_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK}
_NO_LOCKING_ERRNOS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}


class Action(StrEnum):
    WRITTEN = "written"  # the tag was written (created, or replaced with force)
    KEPT = "kept"  # a tag is present and agrees with the history
    VERIFIED = "verified"  # verify mode: the tag agrees with the history
    MISMATCH = "mismatch"  # the tag disagrees with the history (or is missing, in verify mode)
    SKIPPED = "skipped"  # nothing to compare with: no usable start_time, scan still running


#: the outcomes that need no attention
OK_ACTIONS = frozenset({Action.WRITTEN, Action.KEPT, Action.VERIFIED})


@dataclass(frozen=True, slots=True)
class ScanAnnotation:
    """What happened to one scan entry."""

    scan: int
    start_time: datetime | None
    action: Action
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.action in OK_ACTIONS

    def line(self) -> str:
        """One line for humans: ``3.1  2026-...Z  written  MOUNTED lysozyme_1 (LYS-0001)``."""
        start = "-" if self.start_time is None else format_timestamp(self.start_time)
        return f"{self.scan}.1  {start}  {self.action}  {self.details}".rstrip()


# --- the history -------------------------------------------------------------------------------


def snapshot_at(events: Iterable[Event], moment: datetime, tracker: str) -> Snapshot:
    """The tracker's state at ``moment`` according to ``events`` (see the module's replay rules)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"moment {moment.isoformat()} has no time zone; use an aware datetime")
    ordered = sorted(events, key=lambda event: event.occurred_at)  # stable: ties keep their order
    past = [event for event in ordered if event.occurred_at <= moment]
    if not past:
        return Snapshot(TrackerState.UNKNOWN, moment, reason=_before_history(ordered, moment, tracker))
    snapshot = _after(past[-1])
    later = ordered[len(past) :]
    if later and snapshot.state is TrackerState.MOUNTED and _unobserved_unmount(later[0], snapshot):
        return _unmount_not_observed(snapshot, later[0], moment)
    return snapshot


def _after(event: Event) -> Snapshot:
    """The state right after ``event`` (each event says the whole state of the sample position)."""
    if event.type is EventType.UNMOUNTED:
        return Snapshot(TrackerState.EMPTY, event.occurred_at, source=event.source)
    if event.status is Status.ERROR:
        reason = event.message or f"the mount of {event.sample.label} was recorded with status ERROR"
        return Snapshot(
            TrackerState.CONFLICT, event.occurred_at, event.sample, event.source, event.event_id, reason
        )
    return Snapshot(TrackerState.MOUNTED, event.occurred_at, event.sample, event.source, event.event_id)


def _before_history(ordered: list[Event], moment: datetime, tracker: str) -> str:
    if not ordered:
        return (
            f"history incomplete: tracker {tracker!r} has no recorded events, so the sample mounted "
            f"at {format_timestamp(moment)} is unknown"
        )
    return (
        f"history incomplete: the history of tracker {tracker!r} does not reach back to "
        f"{format_timestamp(moment)} (its oldest event is at {format_timestamp(ordered[0].occurred_at)}), "
        "so the sample mounted then is unknown"
    )


def _unobserved_unmount(event: Event, current: Snapshot) -> bool:
    return (
        event.type is EventType.UNMOUNTED
        and event.status is Status.ERROR
        and event.mount_event_id in (None, current.mount_event_id)
    )


def _unmount_not_observed(current: Snapshot, unmount: Event, moment: datetime) -> Snapshot:
    label = current.sample.label if current.sample is not None else "the sample"
    reason = (
        f"history incomplete: {label} was mounted at {format_timestamp(current.since)}, but its unmount "
        f"was not observed (recorded at {format_timestamp(unmount.occurred_at)} with status ERROR"
        + (f": {unmount.message}" if unmount.message else "")
        + f"), so whether it was still mounted at {format_timestamp(moment)} is unknown"
    )
    return Snapshot(TrackerState.UNKNOWN, moment, current.sample, current.source, None, reason)


def load_events_json(path: str | os.PathLike[str]) -> list[Event]:
    """Events from a JSON file: a list of contract events, or ``GET /events``'s ``{"events": [...]}``.

    A page of ``GET /events`` with a ``next_cursor`` is refused: the later events are missing and the
    last state would wrongly extend to every later scan. Fetch all pages into one list.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnnotateError(f"cannot read the events file {path}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotateError(f"the events file {path} is not JSON: {exc}") from exc
    if isinstance(data, Mapping):
        if data.get("next_cursor") is not None:
            raise AnnotateError(
                f"{path} is one page of GET /events (next_cursor is {data['next_cursor']!r}): later "
                "events are missing; fetch every page and save all events as one list"
            )
        data = data.get("events")
    if not isinstance(data, list):
        raise AnnotateError(
            f"{path} holds neither a list of events nor an object with an 'events' list "
            "(the answer of the tracking service's GET /events)"
        )
    return [_parse(item, f"{path}: event #{index}") for index, item in enumerate(data)]


def load_events_redis(redis_client: Any, tracker: str) -> list[Event]:
    """The tracker's history from Redis (see :mod:`bliss_sampletrack.tracker.store`), oldest first.

    The Redis list is newest first; it is reversed so that events of the same instant (an unmount and
    the mount replacing it) keep their order. The history is trimmed to the tracker's
    ``history_size``: older scans get UNKNOWN with a reason.
    """
    key = f"sampletrack:{tracker}:history"  # RedisTrackerStore.history_key
    raw_events = redis_client.lrange(key, 0, -1)
    newest_first = [_parse_json(raw, f"Redis key {key!r} item {i}") for i, raw in enumerate(raw_events)]
    log.debug("%d events of tracker %r from Redis key %r", len(newest_first), tracker, key)
    return newest_first[::-1]


def _parse(item: Any, where: str) -> Event:
    if not isinstance(item, Mapping):
        raise AnnotateError(f"{where} is not a JSON object: {item!r:.80}")
    try:
        return Event.from_dict(item)
    except InvalidEventError as exc:
        raise AnnotateError(f"{where}: {exc}") from exc


def _parse_json(raw: str | bytes, where: str) -> Event:
    try:
        return Event.from_json(raw)
    except InvalidEventError as exc:
        raise AnnotateError(f"{where}: {exc}") from exc


def _checked_history(events: Iterable[Event]) -> list[Event]:
    history = list(events)
    beamlines = sorted({event.beamline for event in history})
    if len(beamlines) > 1:
        raise AnnotateError(
            f"the events are of several beamlines ({', '.join(beamlines)}): give the history of the "
            "file's beamline only (GET /events?beamline=...)"
        )
    return history


# --- the file ----------------------------------------------------------------------------------


def annotate_file(
    path: str | os.PathLike[str],
    events: Iterable[Event],
    tracker: str,
    scans: Sequence[int] | None = None,
    *,
    verify: bool = False,
    force: bool = False,
) -> list[ScanAnnotation]:
    """Write (or with ``verify``, check) the sample tag of each selected scan from the history.

    ``scans``: scan numbers (entries ``<n>.1``), ``None`` for every such entry. Raises
    :class:`ScanNotFoundError` before touching anything when one is missing, :class:`FileLockedError`
    when the file is open elsewhere, :class:`AnnotateError` for other unusable files.
    """
    if verify and force:
        raise ValueError("verify never writes: force has no meaning with it")
    path = Path(path)
    history = _checked_history(events)
    with _open(path, write=not verify) as h5:
        numbers = _select(h5, path, scans)
        results = []
        for number in numbers:
            result = _annotate_scan(h5[f"{number}.1"], number, history, tracker, verify, force)
            if result.action is Action.WRITTEN:
                h5.flush()
            log.info("%s: %s", path, result.line())
            results.append(result)
    return results


@contextmanager
def _open(path: Path, *, write: bool) -> Iterator[h5py.File]:
    if not path.is_file():
        raise AnnotateError(f"{path}: no such file")
    if write and os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() in ("FALSE", "0"):
        log.warning(
            "HDF5_USE_FILE_LOCKING=%s: a scan writing to %s right now cannot be detected; "
            "make sure none is running",
            os.environ["HDF5_USE_FILE_LOCKING"],
            path,
        )
    try:
        h5 = h5py.File(path, "r+" if write else "r", locking=True)
    except OSError as exc:
        if write or not _is_locked(exc):
            raise _open_error(path, exc, write) from exc
        # reading a file that a writer holds: allowed without locking (what BLISS advises viewers)
        log.info("%s is locked by a writer; reading it without locking", path)
        try:
            h5 = h5py.File(path, "r", locking=False)
        except OSError as exc2:
            raise _open_error(path, exc2, write) from exc2
    try:
        yield h5
    finally:
        h5.close()


def _is_locked(exc: OSError) -> bool:
    if _no_locking(exc):
        return False
    return exc.errno in _LOCKED_ERRNOS or "unable to lock file" in str(exc)


def _no_locking(exc: OSError) -> bool:
    return exc.errno in _NO_LOCKING_ERRNOS or any(
        f"errno = {number}," in str(exc) for number in _NO_LOCKING_ERRNOS
    )


def _open_error(path: Path, exc: OSError, write: bool) -> AnnotateError:
    if _no_locking(exc):
        return AnnotateError(
            f"{path}: its file system does not support HDF5 file locking ({exc}); set "
            "HDF5_USE_FILE_LOCKING=BEST_EFFORT and make sure no scan is writing to the file"
        )
    if _is_locked(exc):
        return FileLockedError(
            f"{path} is open in another program ({exc}): the BLISS writer while a scan is running, or a "
            "viewer (silx, PyMca) holding it. Wait for the scan to end or close the viewer, then retry. "
            "Do not disable HDF5 file locking to get around this: two writers corrupt an HDF5 file"
        )
    if "already open" in str(exc):
        return FileLockedError(f"{path} is already open in this process ({exc}); close it first")
    mode = "read-write" if write else "read-only"
    return AnnotateError(f"cannot open {path} as an HDF5 file ({mode}): {exc}")


def _select(h5: h5py.File, path: Path, scans: Sequence[int] | None) -> list[int]:
    present = sorted(int(match.group(1)) for name in h5 if (match := _ENTRY.match(name)))
    if scans is None:
        return present
    wanted = list(dict.fromkeys(scans))
    missing = [number for number in wanted if number not in present]
    if missing:
        listed = ", ".join(f"{number}.1" for number in missing)
        raise ScanNotFoundError(f"{path} has no scan {listed} (its scans: {_describe(present)})")
    return wanted


def _describe(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    if len(numbers) <= 10:
        return ", ".join(map(str, numbers))
    return f"{len(numbers)} scans from {numbers[0]} to {numbers[-1]}"


def _annotate_scan(
    entry: h5py.Group, number: int, history: list[Event], tracker: str, verify: bool, force: bool
) -> ScanAnnotation:
    start, problem = _start_time(entry)
    if start is None:
        return ScanAnnotation(number, None, Action.SKIPPED, problem)
    if _text(entry.get("writer/status")) == "RUNNING":
        return ScanAnnotation(number, start, Action.SKIPPED, "the scan is still being written (RUNNING)")
    expected = sample_tag(snapshot_at(history, start, tracker), tracker)
    current = entry.get(SAMPLE_GROUP, getclass=True)
    if current is not None and current is not h5py.Group:
        return ScanAnnotation(number, start, Action.SKIPPED, f"'{SAMPLE_GROUP}' is not a group")
    existing = None if current is None else _read_tag(entry[SAMPLE_GROUP])
    differences = [] if existing is None else _differences(existing, expected)
    summary = _summary(expected)
    if verify:
        if existing is None:
            return ScanAnnotation(number, start, Action.MISMATCH, f"no sample group; history: {summary}")
        if differences:
            return ScanAnnotation(number, start, Action.MISMATCH, "; ".join(differences))
        return ScanAnnotation(number, start, Action.VERIFIED, summary)
    if existing is not None and not differences:
        return ScanAnnotation(number, start, Action.KEPT, summary)
    if existing is not None and not force:
        detail = "; ".join(differences) + " (left unchanged; force replaces it)"
        return ScanAnnotation(number, start, Action.MISMATCH, detail)
    tag = {**expected, ANNOTATED_KEY: f"by sampletrack annotate at {format_timestamp(datetime.now(UTC))}"}
    kept_as = _write_tag(entry, tag, replace=existing is not None)
    if kept_as is None:
        return ScanAnnotation(number, start, Action.WRITTEN, summary)
    detail = f"{summary}; replaced ({'; '.join(differences)}), the old group kept as {kept_as}"
    return ScanAnnotation(number, start, Action.WRITTEN, detail)


def _start_time(entry: h5py.Group) -> tuple[datetime | None, str]:
    node = entry.get("start_time")
    if not isinstance(node, h5py.Dataset) or node.shape != ():
        return None, "no start_time dataset"
    text = _text(node)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None, f"start_time {text!r} is not an ISO 8601 time"
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None, f"start_time {text!r} has no time zone (the history is in UTC; no guess made)"
    return moment, ""


def _text(node: Any) -> str | None:
    """A scalar dataset's value as text (None when absent or not a scalar dataset)."""
    if not isinstance(node, h5py.Dataset) or node.shape != ():
        return None
    value = node[()]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _read_tag(group: h5py.Group) -> dict[str, str]:
    tag = {f"@{key}": str(_decoded(value)) for key, value in group.attrs.items()}
    for key in group:
        text = _text(group.get(key))
        if text is not None:
            tag[key] = text
    return tag


def _decoded(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _differences(existing: Mapping[str, str], expected: Mapping[str, Any]) -> list[str]:
    found = []
    for key in COMPARED_FIELDS:
        in_file, in_history = existing.get(key), expected.get(key)
        in_history = None if in_history is None else str(in_history)
        if in_file != in_history:
            found.append(f"{key}: file {_show(in_file)}, history {_show(in_history)}")
    return found


def _show(value: str | None) -> str:
    return "(absent)" if value is None else repr(value)


def _summary(tag: Mapping[str, Any]) -> str:
    state = tag.get("state", "?")
    if state == TrackerState.MOUNTED:
        name, barcode = tag.get("name"), tag.get("barcode")
        label = f"{name} ({barcode})" if name and barcode else name or barcode
        return f"{state} {label}"
    return f"{state}: {tag.get('reason', '')}"


def _write_tag(entry: h5py.Group, tag: Mapping[str, Any], *, replace: bool) -> str | None:
    """Build the tag in a temporary group, then rename it to ``sample``; the old one's new name."""
    if _TMP_GROUP in entry:  # left by an interrupted run
        del entry[_TMP_GROUP]
    group = entry.create_group(_TMP_GROUP)
    done = False
    try:
        for key, value in tag.items():
            if key.startswith("@"):
                group.attrs[key[1:]] = value
            else:
                group.create_dataset(key, data=value)
        kept_as = _free_name(entry, REPLACED_PREFIX + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
        if replace:
            entry.move(SAMPLE_GROUP, kept_as)
        entry.move(_TMP_GROUP, SAMPLE_GROUP)
        done = True
    finally:
        if not done and _TMP_GROUP in entry:
            del entry[_TMP_GROUP]
    return kept_as if replace else None


def _free_name(entry: h5py.Group, name: str) -> str:
    candidate, suffix = name, 1
    while candidate in entry:
        suffix += 1
        candidate = f"{name}_{suffix}"
    return candidate
