"""The puck view (``tracker.pucks()``, and the changer's ``__info__`` once a ChangerLink binds it
to the tracker): a changer's positions, puck by puck, with barcode, sample name, state and when
the pin was last seen.

States: ``in the dewar`` (the changer lists a pin in its puck), ``mounted`` (the pin of that
position is on the goniometer: highlighted), ``empty`` (the changer lists no pin there; shown in
the puck's map only), ``unknown`` (the changer cannot say: a pin it dropped or holds in its
gripper, a changer that lists no contents, or one that cannot be read).

Where each column comes from: barcode and state from the changer (``contents()``, ``mounted``,
and the optional hooks below); the sample name from the tracker's registries (the changer's own
name when no registry knows the barcode, marked ``(changer)``); "last seen" from the tracker's
history in Redis: the newest event of that pin (by barcode, else by changer and position).

Optional changer hooks (:class:`PuckLayout`, :class:`ContentsListing`, :class:`Whereabouts`):
how many pucks and positions (else derived from the addresses listed), whether the changer lists
its contents at all, and where pins that are neither in a puck nor on the goniometer went.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bliss_sampletrack.changers.protocol import Mounted, Position, SampleChanger
from bliss_sampletrack.core import Event, Sample, Status
from bliss_sampletrack.core.address import parse_address
from bliss_sampletrack.core.snapshot import Snapshot, TrackerState
from bliss_sampletrack.errors import ChangerOfflineError, SampleTrackError
from bliss_sampletrack.tracker.views.text import Row, local_time, table

log = logging.getLogger(__name__)


class PinState(StrEnum):
    IN_DEWAR = "in the dewar"
    MOUNTED = "mounted"
    EMPTY = "empty"
    UNKNOWN = "unknown"


#: one character per position in a puck's map
MAP_CHARS = {PinState.IN_DEWAR: "#", PinState.MOUNTED: ">", PinState.EMPTY: ".", PinState.UNKNOWN: "?"}


@runtime_checkable
class PuckLayout(Protocol):
    """A changer that knows its pucks and positions per puck (``SimulatedChanger``)."""

    pucks: int
    positions_per_puck: int


@runtime_checkable
class ContentsListing(Protocol):
    """A changer that may not list its contents (``BlissObjectChanger`` without ``contents``)."""

    @property
    def lists_contents(self) -> bool: ...


@runtime_checkable
class Whereabouts(Protocol):
    """A changer that knows of pins neither in a puck nor on the goniometer (dropped, in the
    gripper): ``{address they came from: (barcode, where they are)}``."""

    def missing_pins(self) -> dict[str, tuple[str | None, str]]: ...


@dataclass(frozen=True, slots=True)
class Slot:
    """One position of a puck, as the view shows it."""

    address: str
    state: PinState
    barcode: str | None = None
    name: str | None = None  # the registry's name, else the changer's
    name_from: str = ""  # "registry", "changer", or "" (no name)
    last_seen: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class PuckView:
    changer: str
    kind: str  # the changer's class
    pucks: int | None
    positions: int | None
    slots: tuple[Slot, ...]  # positions that are not empty, sorted
    on_goniometer: Mounted | None
    tracker: str = ""  # what the tracker says is mounted
    problem: str = ""  # why the positions are unknown (offline, no contents listed)


# -- gathering ---------------------------------------------------------------------------------------
def _last_seen(events: Sequence[Event], changer: str, tz: tzinfo | None) -> Callable[[str, str | None], str]:
    """``last(address, barcode)``: the newest event of that pin, as text (``events`` newest first)."""
    by_code: dict[str, Event] = {}
    by_place: dict[str, Event] = {}
    for event in events:
        sample = event.sample
        if sample.barcode is not None:
            by_code.setdefault(sample.barcode, event)
        if sample.changer_name == changer and sample.changer_position is not None:
            parsed = parse_address(sample.changer_position)
            place = sample.changer_position if parsed is None else f"{parsed[0]}:{parsed[1]:02d}"
            by_place.setdefault(place, event)

    def last(address: str, barcode: str | None) -> str:
        event = by_code.get(barcode) if barcode is not None else None
        event = event or (by_place.get(address) if barcode is None else None)
        if event is None:
            return "not moved in the events kept"
        failed = " (ERROR)" if event.status is Status.ERROR else ""
        return f"{event.type} {local_time(event.occurred_at, tz)}{failed}"

    return last


def _named(barcode: str | None, own: str | None, resolve: Callable[[str], Sample | None]) -> tuple[str, str]:
    if barcode is not None:
        try:
            sample = resolve(barcode)
        except SampleTrackError as exc:  # a registry that cannot answer now: the changer's name
            log.warning("puck view: registry look-up of %r failed: %s", barcode, exc)
            sample = None
        if sample is not None and sample.name:
            return sample.name, "registry"
    if own:
        return own, "changer"
    return "", ""


def _tracker_line(snapshot: Snapshot, changer: str) -> str:
    sample = snapshot.sample
    if snapshot.state is TrackerState.EMPTY or sample is None:
        return f"{snapshot.state}" + (f" ({snapshot.reason})" if snapshot.reason else "")
    where = ""
    if sample.changer_name == changer and sample.changer_position:
        where = f" from {changer} {sample.changer_position}"
    elif sample.changer_name:
        where = f" from changer {sample.changer_name} {sample.changer_position or ''}".rstrip()
    reason = f" ({snapshot.reason})" if snapshot.reason else ""
    return f"{snapshot.state} {sample.label}{where}{reason}"


def gather_pucks(
    changer: SampleChanger,
    *,
    resolve: Callable[[str], Sample | None],
    history: Sequence[Event],
    snapshot: Snapshot | None = None,
    tz: tzinfo | None = None,
) -> PuckView:
    """Read the changer (contents, mounted pin, hooks) and name each pin (``resolve``: the
    tracker's registry, a look-up that warns nobody; ``history``: newest first)."""
    kind = type(changer).__name__
    tracker = "" if snapshot is None else _tracker_line(snapshot, changer.name)
    layout = (
        (changer.pucks, changer.positions_per_puck)
        if isinstance(changer, PuckLayout)
        and isinstance(changer.pucks, int)
        and isinstance(changer.positions_per_puck, int)
        else (None, None)
    )
    try:
        contents: list[Position] = changer.contents()
        mounted = changer.mounted
    except ChangerOfflineError as exc:
        return PuckView(changer.name, kind, *layout, (), None, tracker, f"changer cannot be read: {exc}")
    problem = ""
    if isinstance(changer, ContentsListing) and not changer.lists_contents:
        problem = "the changer lists no contents (no 'contents' in its YAML): positions unknown"
    missing = changer.missing_pins() if isinstance(changer, Whereabouts) else {}
    last = _last_seen(history, changer.name, tz)
    slots: dict[str, Slot] = {}
    for p in contents:
        name, name_from = _named(p.barcode, p.name, resolve)
        state = PinState.MOUNTED if p.on_goniometer else PinState.IN_DEWAR
        slots[p.address] = Slot(p.address, state, p.barcode, name, name_from, last(p.address, p.barcode))
    if mounted is not None and mounted.address not in slots:  # a changer that lists no mounted pin
        name, name_from = _named(mounted.barcode, mounted.name, resolve)
        slots[mounted.address] = Slot(
            mounted.address,
            PinState.MOUNTED,
            mounted.barcode,
            name,
            name_from,
            last(mounted.address, mounted.barcode),
        )
    elif mounted is not None:  # the changer's word on the goniometer wins over its listing
        slots[mounted.address] = _replace_state(slots[mounted.address], PinState.MOUNTED)
    for address, (barcode, where) in missing.items():
        if address not in slots:
            name, name_from = _named(barcode, None, resolve)
            seen = last(address, barcode)
            slots[address] = Slot(address, PinState.UNKNOWN, barcode, name, name_from, seen, where)
    ordered = sorted(slots.values(), key=lambda s: (parse_address(s.address) or (10**6, 0), s.address))
    pucks, positions = layout
    return PuckView(changer.name, kind, pucks, positions, tuple(ordered), mounted, tracker, problem)


def _replace_state(slot: Slot, state: PinState) -> Slot:
    return Slot(slot.address, state, slot.barcode, slot.name, slot.name_from, slot.last_seen, slot.note)


# -- rendering ---------------------------------------------------------------------------------------
def _puck_map(view: PuckView, puck: int, positions: int) -> str:
    states = {parse_address(s.address): s.state for s in view.slots}
    unknown = bool(view.problem)
    chars = []
    for position in range(1, positions + 1):
        state = states.get((puck, position))
        chars.append(MAP_CHARS[state] if state is not None else "?" if unknown else MAP_CHARS[PinState.EMPTY])
    return "".join(chars)


def render_pucks(view: PuckView, *, ansi: bool = False) -> str:
    """The view as text: a header, each puck's map (one character per position), then one row
    per position that is not empty, the mounted one marked."""
    pins = len(view.slots)
    size = f"{view.pucks} pucks x {view.positions}" if view.pucks else "pucks as it lists them"
    lines = [f"changer {view.changer!r} ({view.kind}): {size}, {pins} pin(s) listed"]
    if view.on_goniometer is not None:
        what = view.on_goniometer.barcode or view.on_goniometer.name or "no barcode"
        lines.append(f"  goniometer: {view.on_goniometer.address} ({what})")
    else:
        lines.append("  goniometer: nothing mounted by the changer")
    if view.tracker:
        lines.append(f"  tracker   : {view.tracker}")
    if view.problem:
        lines.append(f"  positions : {view.problem}")
    places = [parse_address(s.address) for s in view.slots]
    positions = view.positions
    if positions is None:  # a changer that does not say: as far as its listing goes
        positions = max((p[1] for p in places if p is not None), default=0) or None
    pucks = range(1, view.pucks + 1) if view.pucks else sorted({p[0] for p in places if p is not None})
    if positions and pucks:
        lines.append(
            f"  map       : # in the dewar, > mounted, . empty, ? unknown (positions 1 to {positions})"
        )
        for puck in pucks:
            count = sum(1 for p in places if p is not None and p[0] == puck)
            lines.append(f"    puck {puck:<3} {_puck_map(view, puck, positions)}  {count} pin(s)")
    if not view.slots:
        lines.append("  (no pin listed)")
        return "\n".join(lines)
    rows = []
    for slot in view.slots:
        if slot.name_from == "changer":
            name = f"{slot.name} (changer)"
        else:
            name = slot.name or ("(in no registry)" if slot.barcode else "-")
        seen = slot.last_seen + (f"; {slot.note}" if slot.note else "")
        cells = [slot.address, str(slot.state), slot.barcode or "(no barcode)", name, seen]
        rows.append(Row(cells, marked=slot.state is PinState.MOUNTED))
    lines.append("")
    lines.extend(table(["pos", "state", "barcode", "sample", "last seen"], rows, indent="    ", ansi=ansi))
    return "\n".join(lines)
