"""``SimulatedChanger``: a sample changer with pucks of pins, in software, as a BLISS object.

For the demo, the tests and trying out macros::

    - name: sc
      plugin: bliss
      package: bliss_sampletrack.changers.simulated
      class: SimulatedChanger
      pucks: 3                  # pucks of 16 positions (positions_per_puck)
      load_time: 2.0            # seconds per load / unload (cooperative gevent.sleep)
      unload_time: 2.0
      timeout: 30               # default timeout of mount()/unmount()
      reader: $bcr              # optional: a SimulatedReader on the gripper
      contents:                 # "<puck>:<position>" -> barcode (quote the addresses)
        "1:01": LYS-0001
        "1:02": {barcode: LYS-0002, name: lysozyme_2}
        "2:05": null            # a pin with no barcode
        3: {1: THA-0003}        # or puck -> position -> barcode

      containers:               # optional: puck location -> the container (puck) loaded there,
        1: puck3                #   as the shipment names it; only these pucks are "loaded"
        2: puck4                #   (default: every puck location)
      pin_read_time: 0.05       # seconds per position in an inventory (gripper move), before the read
      faults:                   # optional, seeded: pins that are not what the contents say
        seed: 22                #   same seed, same faults (reset() applies them again)
        missing: 1              #   listed, physically absent (the gripper finds no pin)
        swapped: 1              #   pairs of pins, each in the other's position
        duplicated: 1           #   a pin carrying a copy of another pin's label (its own is gone)
        unreadable: 1           #   a pin whose label no reader can read
        pucks: [3]              #   optional: which pucks the faults may hit (default: all)

In the shell: ``sc.mount("1:01")`` or ``sc.mount("LYS-0001")``, ``sc.unmount()``, ``sc.contents()``,
``sc.inventory()`` (every pin of the loaded pucks read by the gripper's reader and reconciled with
the tracker's registries; needs a ``ChangerLink``), ``sc.seeded_faults`` (the simulation's truth).
Mounting over a mounted pin unloads it first (two actions, two pairs of events).

Steering the simulation (each failure applies to the next action of its kind only):

- ``sc.fail_next("dropped_pin")``: the load fails midway; the pin is lost, nothing on the
  goniometer (``action="unload"`` drops it on the way back instead);
- ``sc.fail_next("timeout")``: the robot hangs until the action's timeout;
- ``sc.fail_next("no_pin_detected")``: the load reports success, the presence sensor sees nothing;
- ``sc.fail_next("pin_stays")``: the unload reports success, the sensor still sees a pin;
- ``sc.fail_next("robot_error")``: the robot's controller raises an error between pick and put
  (``action="unload"``: while unloading); the pin is in the gripper, the robot in fault;
- ``sc.mislabel("1:01", "THA-0003")``: the pin at 1:01 physically carries another label than
  the contents say (the gripper's reader reads the physical one);
- ``sc.mislabel(...)``, ``sc.remove_pin("1:01")`` (physically absent, still listed) and the
  ``faults`` key change what an inventory reads, not the changer's bookkeeping (``contents()``);
- ``sc.set_presence(True)``: a hand puts a pin on the goniometer (``False``: takes it away);
- ``sc.recover()`` after a failure (the robot refuses to move until then), ``sc.reset()``.

With ``reader``, the changer presents each pin's label to the reader while its gripper holds it
and triggers a read (as a robot with a gripper reader does); the code read, or the reader's error,
is in the ``LOADED`` event for the link's cross-check. The reader should be a ``SimulatedReader``
(it needs ``present``/``remove``); it may be the tracker's reader too.

Caveats: one action at a time (a second caller gets ``ChangerBusyError`` instead of waiting
behind a robot that may take minutes). A failure puts the robot in fault, as real ones do: it
refuses to move until ``recover()``, which puts a pin still in the gripper back in its puck (a
dropped pin stays lost; ``reset()`` reloads the configured contents). Anything that interrupts a
moving robot (Ctrl-C, a killed greenlet, an error) is such a failure: reported (``LOAD_FAILED``
or ``UNLOAD_FAILED``) before it propagates; an error is raised as ``MountFailedError``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import gevent
import gevent.lock
from redis.exceptions import RedisError

from bliss_sampletrack.changers.errors import (
    ChangerBusyError,
    ChangerError,
    ChangerTimeout,
    MountFailedError,
)
from bliss_sampletrack.changers.inventory import PinRead
from bliss_sampletrack.changers.protocol import (
    ChangerCallback,
    ChangerEvent,
    ChangerEventKind,
    EventHub,
    Mounted,
    Position,
    Seconds,
    format_address,
    parse_address,
)
from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.core.shell import command
from bliss_sampletrack.errors import InvalidBarcodeError, ReaderError, SampleTrackError

log = logging.getLogger(__name__)

#: what tab completion offers (``__dir__``)
SHELL_NAMES = (
    "mount",
    "unmount",
    "contents",
    "fail_next",
    "mislabel",
    "remove_pin",
    "inventory",
    "seeded_faults",
    "set_presence",
    "recover",
    "reset",
    "name",
    "mounted",
    "sample_present",
    "pucks",
    "positions_per_puck",
)
KEYS = {
    "pucks",
    "positions_per_puck",
    "contents",
    "load_time",
    "unload_time",
    "timeout",
    "reader",
    "reader_timeout",
    "presence_sensor",
    "containers",
    "faults",
    "pin_read_time",
}
FAULT_KINDS = ("missing", "swapped", "duplicated", "unreadable")


class Failure(StrEnum):
    DROPPED_PIN = "dropped_pin"
    TIMEOUT = "timeout"
    NO_PIN_DETECTED = "no_pin_detected"
    PIN_STAYS = "pin_stays"
    ROBOT_ERROR = "robot_error"


#: the actions each failure can apply to; the first is the default
FAILURE_ACTIONS: dict[Failure, tuple[str, ...]] = {
    Failure.DROPPED_PIN: ("load", "unload"),
    Failure.TIMEOUT: ("load", "unload"),
    Failure.NO_PIN_DETECTED: ("load",),
    Failure.PIN_STAYS: ("unload",),
    Failure.ROBOT_ERROR: ("load", "unload"),
}


class RobotControllerError(RuntimeError):
    """What the simulated robot's controller raises for ``fail_next("robot_error")``."""


def _cause(exc: Exception) -> Exception | None:
    """The cause to chain: the robot's own error; none for ours (their message says it all)."""
    return None if isinstance(exc, MountFailedError) else exc


def _interruption(exc: BaseException) -> str:
    """What stopped the robot, for records: the failure itself, or the exception's type and text."""
    if isinstance(exc, MountFailedError):
        return exc.reason
    text = str(exc)
    what = type(exc).__name__
    if isinstance(exc, KeyboardInterrupt | gevent.GreenletExit):
        return f"interrupted ({what}) while the robot was moving"
    return f"{what}: {text}" if text else what


@dataclass(frozen=True, slots=True)
class Pin:
    """A pin in the simulation: what the changer's contents say, and the label it really carries."""

    barcode: str | None = None
    name: str | None = None
    label: str | None = None  # the physical label (what a reader reads); None: none

    @classmethod
    def listed(cls, barcode: str | None, name: str | None = None) -> Pin:
        return cls(barcode, name, barcode)


def parse_contents(raw: Any, pucks: int, positions: int) -> dict[str, Pin]:
    """The pins of a ``contents`` mapping, by canonical address; ValueError says what is wrong.

    Forms: ``"P:S": entry`` or ``P: {S: entry}``; an entry is a barcode, null (a pin with no
    barcode) or ``{barcode: ..., name: ...}``.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"must be a mapping of addresses ('1:01') to barcodes, got {type(raw).__name__}")
    pins: dict[str, Pin] = {}
    for key, value in raw.items():
        if isinstance(key, int) and not isinstance(key, bool) and isinstance(value, Mapping):
            for pos, entry in value.items():
                _add_pin(pins, f"{key}:{pos}", entry, pucks, positions)
        elif isinstance(key, int):
            raise ValueError(
                f"has the number {key} as an address: quote addresses ('1:01'), a YAML 1.1 parser "
                "reads 1:01 as the number 61; or use the form '<puck>: {<position>: barcode}'"
            )
        else:
            _add_pin(pins, str(key), value, pucks, positions)
    barcodes = [p.barcode for p in pins.values() if p.barcode is not None]
    twice = sorted({b for b in barcodes if barcodes.count(b) > 1})
    if twice:
        raise ValueError(f"lists barcode(s) {twice} at more than one address; a barcode names one pin")
    return dict(sorted(pins.items(), key=lambda item: parse_address(item[0]) or (0, 0)))


def _add_pin(pins: dict[str, Pin], key: str, entry: Any, pucks: int, positions: int) -> None:
    parsed = parse_address(key)
    if parsed is None:
        raise ValueError(f"has {key!r}, which is not an address like '1:01' (<puck>:<position>)")
    puck, position = parsed
    if not (1 <= puck <= pucks and 1 <= position <= positions):
        raise ValueError(
            f"has address {key!r}, outside the changer's {pucks} puck(s) of {positions} positions"
        )
    address = format_address(puck, position)
    if address in pins:
        raise ValueError(f"lists address {address} twice")
    name = None
    barcode = entry
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"barcode", "name"})
        if unknown:
            raise ValueError(f"at {address} has unknown field(s) {unknown} (known: barcode, name)")
        barcode, name = entry.get("barcode"), entry.get("name")
    for field, value in (("barcode", barcode), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"at {address}: the {field} must be text, got {type(value).__name__} {value!r}")
    if barcode is not None:
        try:
            validate_barcode(barcode)
        except SampleTrackError as exc:
            raise ValueError(f"at {address}: {exc}") from None
    pins[address] = Pin.listed(barcode, name)


@dataclass(frozen=True, slots=True)
class SeededFault:
    """One fault the ``faults`` key put in the pucks: the simulation's ground truth.

    ``addresses``/``barcodes``: the pins concerned and the barcodes the contents list for them
    (missing, unreadable: one pin; swapped: the pair; duplicated: (the copy's position, the
    original's position), and the copy now reads the original's barcode)."""

    kind: str
    addresses: tuple[str, ...]
    barcodes: tuple[str, ...]


def parse_containers(raw: Any, pucks: int) -> dict[int, str | None]:
    """``containers``: puck location -> container name; ValueError says what is wrong."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"must map puck locations (1, 2...) to container names, got {type(raw).__name__}")
    containers: dict[int, str | None] = {}
    for key, value in raw.items():
        try:
            puck = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"has {key!r}, which is not a puck location (1 to {pucks})") from None
        if not 1 <= puck <= pucks:
            raise ValueError(f"has puck location {puck}, outside the changer's {pucks} puck(s)")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"at {puck}: the container name must be text, got {type(value).__name__}")
        containers[puck] = value
    return dict(sorted(containers.items()))


def parse_faults(raw: Any, pucks: int) -> dict[str, Any]:
    """``faults``: ``{seed, missing, swapped, duplicated, unreadable, pucks}``; ValueError otherwise."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"must be a mapping (seed: 22, missing: 1, ...), got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"seed", "pucks", *FAULT_KINDS}, key=str)
    if unknown:
        raise ValueError(f"has unknown key(s) {unknown} (known: seed, pucks, {', '.join(FAULT_KINDS)})")
    faults: dict[str, Any] = {"seed": raw.get("seed", 0)}
    for key in ("seed", *FAULT_KINDS):
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a whole number >= 0, got {value!r}")
        faults[key] = value
    among = raw.get("pucks")
    if among is not None:
        if not isinstance(among, list) or not all(isinstance(p, int) and 1 <= p <= pucks for p in among):
            raise ValueError(f"pucks must be a list of puck locations (1 to {pucks}), got {among!r}")
        faults["pucks"] = sorted(set(among))
    return faults


def seed_faults(
    pins: Mapping[str, Pin], faults: Mapping[str, Any]
) -> tuple[dict[str, Pin], set[str], list[SeededFault]]:
    """The pins with the seeded faults applied: (pins, physically absent addresses, faults).

    Deterministic for one seed and one contents; only pins with a barcode are picked, each at
    most once. ValueError when there are too few pins for the faults asked."""
    if not faults:
        return dict(pins), set(), []
    among = faults.get("pucks")
    candidates = sorted(
        a
        for a, p in pins.items()
        if p.barcode is not None and (among is None or (parse_address(a) or (0, 0))[0] in among)
    )
    needed = faults["missing"] + 2 * faults["swapped"] + 2 * faults["duplicated"] + faults["unreadable"]
    if needed > len(candidates):
        raise ValueError(
            f"needs {needed} pins with a barcode for its faults, the contents have {len(candidates)} there"
        )
    # a simulation's reproducible choice, not a secret
    random.Random(faults["seed"]).shuffle(candidates)
    out = dict(pins)
    absent: set[str] = set()
    seeded: list[SeededFault] = []

    def take(count: int) -> list[str]:
        picked, candidates[:count] = candidates[:count], []
        return picked

    for _ in range(faults["missing"]):
        (address,) = take(1)
        absent.add(address)
        seeded.append(SeededFault("missing", (address,), (pins[address].barcode or "",)))
    for _ in range(faults["swapped"]):
        a, b = sorted(take(2))
        out[a] = Pin(pins[a].barcode, pins[a].name, pins[b].label)
        out[b] = Pin(pins[b].barcode, pins[b].name, pins[a].label)
        seeded.append(SeededFault("swapped", (a, b), (pins[a].barcode or "", pins[b].barcode or "")))
    for _ in range(faults["duplicated"]):
        copy, original = take(2)
        out[copy] = Pin(pins[copy].barcode, pins[copy].name, pins[original].label)
        seeded.append(
            SeededFault(
                "duplicated", (copy, original), (pins[copy].barcode or "", pins[original].barcode or "")
            )
        )
    for _ in range(faults["unreadable"]):
        (address,) = take(1)
        out[address] = Pin(pins[address].barcode, pins[address].name, None)
        seeded.append(SeededFault("unreadable", (address,), (pins[address].barcode or "",)))
    return out, absent, seeded


def _now() -> datetime:
    return datetime.now(UTC)


class SimulatedChanger:
    """A simulated sample changer (implements :class:`~bliss_sampletrack.changers.protocol.SampleChanger`)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ObjectConfig(name, config)
        cfg.check_known(KEYS)
        self.name = name
        self.config_file = cfg.filename
        self.pucks = cfg.get("pucks", int, 3)
        self.positions_per_puck = cfg.get("positions_per_puck", int, 16)
        for key, value in (("pucks", self.pucks), ("positions_per_puck", self.positions_per_puck)):
            if not 1 <= value <= 99:
                raise cfg.error(key, f"must be between 1 and 99, got {value}")
        try:
            self._configured = parse_contents(config.get("contents"), self.pucks, self.positions_per_puck)
        except ValueError as exc:
            raise cfg.error("contents", str(exc)) from None
        try:
            self.containers = parse_containers(config.get("containers"), self.pucks)
        except ValueError as exc:
            raise cfg.error("containers", str(exc)) from None
        try:
            self._faults = parse_faults(config.get("faults"), self.pucks)
            seed_faults(self._configured, self._faults)  # enough pins? said at configuration
        except ValueError as exc:
            raise cfg.error("faults", str(exc)) from None
        self.pin_read_time = cfg.get("pin_read_time", float, 0.05)
        if self.pin_read_time < 0:
            raise cfg.error("pin_read_time", f"must be >= 0 seconds, got {self.pin_read_time}")
        self.load_time = cfg.get("load_time", float, 2.0)
        self.unload_time = cfg.get("unload_time", float, 2.0)
        for key in ("load_time", "unload_time"):
            if getattr(self, key) < 0:
                raise cfg.error(key, f"must be >= 0 seconds, got {getattr(self, key)}")
        self.timeout = cfg.positive("timeout", 30.0)
        self.reader_timeout = cfg.positive("reader_timeout", 2.0)
        self.presence_sensor = cfg.get("presence_sensor", bool, True)
        self.reader: Any = config.get("reader")
        if self.reader is not None and not all(
            callable(getattr(self.reader, m, None)) for m in ("present", "remove", "read")
        ):
            raise cfg.error(
                "reader",
                f"must reference a simulated reader (with present/remove/read, e.g. a SimulatedReader), "
                f"got {type(self.reader).__name__}",
            )
        self._hub = EventHub(name)
        self._lock = gevent.lock.Semaphore()
        #: the puck view that ``__info__`` shows instead of the plain listing: set by a ChangerLink
        #: to its tracker's (sample names from the registries, last seen from the history)
        self.puck_view: Callable[[], str] | None = None
        #: the inventory (reads reconciled with the tracker's registries) and its one-line
        #: summary for ``__info__``: set by a ChangerLink to its tracker's
        self.inventory_runner: Callable[[], object] | None = None
        self.inventory_summary: Callable[[], str | None] | None = None
        self.reset()

    def __dir__(self) -> list[str]:
        # tab completion offers the commands (the shell hides "_" names, not the protocol's plumbing)
        return sorted(SHELL_NAMES)

    # -- SampleChanger protocol ------------------------------------------------------------------
    @property
    def mounted(self) -> Mounted | None:
        if self._mounted is None:
            return None
        address, pin = self._mounted
        return Mounted(address, pin.barcode, pin.name)

    @property
    def sample_present(self) -> bool | None:
        return self._present if self.presence_sensor else None

    @command
    def mount(self, target: str, timeout: Seconds | None = None) -> Mounted:
        """Load the pin at ``target`` (an address such as ``1:01``, or a barcode of the contents);
        the mounted pin, if any, is unloaded first. An address-like text is an address."""
        address, pin = self._find(target)
        if self._mounted is not None and self._mounted[0] == address:
            return self.mounted  # type: ignore[return-value]  # already there: nothing moves
        with self._action("mount"):
            if self._present and self._mounted is None:
                raise ChangerError(
                    f"changer {self.name!r} will not load {address}: its presence sensor detects a pin "
                    "on the goniometer that it did not mount (mounted by hand?); remove that pin first"
                )
            timeout = self.timeout if timeout is None else timeout
            if self._mounted is not None:
                self._unload(timeout)
            self._load(address, pin, target, timeout)
        return self.mounted  # type: ignore[return-value]

    @command
    def unmount(self, timeout: Seconds | None = None) -> None:
        """Put the mounted pin back in its puck; nothing mounted is no change."""
        if self._mounted is None:
            if self._present:
                raise ChangerError(
                    f"changer {self.name!r} has nothing mounted, but its presence sensor detects a pin "
                    "on the goniometer (mounted by hand?): remove it by hand"
                )
            return
        with self._action("unmount"):
            self._unload(self.timeout if timeout is None else timeout)

    def contents(self) -> list[Position]:
        positions = [Position(a, p.barcode, p.name) for a, p in self._pins.items()]
        if self._mounted is not None:
            address, pin = self._mounted
            positions.append(Position(address, pin.barcode, pin.name, on_goniometer=True))
        return sorted(positions, key=lambda p: parse_address(p.address) or (0, 0))

    def missing_pins(self) -> dict[str, tuple[str | None, str]]:
        """Pins neither in their puck nor on the goniometer: ``{address they came from: (barcode,
        where they are)}`` (the puck view shows them as ``unknown``)."""
        missing = {
            address: (pin.barcode, "dropped by the robot (lost; reset() reloads the contents)")
            for address, pin in self.lost
        }
        if self._gripper is not None:
            address, pin = self._gripper
            missing[address] = (pin.barcode, "in the robot's gripper (moving, or held after a fault)")
        return missing

    def expected(self, address: str) -> Position | None:
        parsed = parse_address(address)
        canonical = format_address(*parsed) if parsed else address
        return next((p for p in self.contents() if p.address == canonical), None)

    def subscribe(self, callback: ChangerCallback) -> None:
        self._hub.subscribe(callback)

    def unsubscribe(self, callback: ChangerCallback) -> None:
        self._hub.unsubscribe(callback)

    # -- steering the simulation -------------------------------------------------------------------
    @command
    def fail_next(self, failure: str, action: str | None = None) -> None:
        """Make the next ``action`` ("load" or "unload") fail with ``failure`` (see the module)."""
        try:
            kind = Failure(failure)
        except ValueError:
            raise ChangerError(
                f"unknown failure {failure!r}; choose one of {', '.join(f.value for f in Failure)}"
            ) from None
        allowed = FAILURE_ACTIONS[kind]
        action = action or allowed[0]
        if action not in allowed:
            raise ChangerError(f"failure {kind.value!r} applies to {' or '.join(allowed)}, not {action!r}")
        self._failures[action] = kind

    @command
    def mislabel(self, address: str, label: str | None) -> None:
        """The pin at ``address`` physically carries ``label`` (None: no label), whatever the
        contents say: the gripper's reader reads ``label``."""
        canonical = self._address(address)
        pin = self._pins.get(canonical)
        if pin is None:
            raise ChangerError(f"changer {self.name!r} has no pin in its puck at {canonical}")
        self._pins[canonical] = Pin(pin.barcode, pin.name, label)

    @command
    def remove_pin(self, address: str) -> None:
        """Take the pin at ``address`` out of its puck by hand: the contents still list it (the
        changer's bookkeeping does not know), the gripper finds the position empty."""
        canonical = self._address(address)
        if canonical not in self._pins:
            raise ChangerError(f"changer {self.name!r} has no pin in its puck at {canonical}")
        self._absent.add(canonical)

    def inventory(self) -> object:
        """Read every pin of the loaded pucks with the gripper's reader (progress shown), then
        reconcile with the tracker's registries: shown as a table, kept in Redis, summarised in
        ``__info__``. Needs a ChangerLink to a tracker (it knows the shipment)."""
        if self.inventory_runner is None:
            raise ChangerError(
                f"changer {self.name!r} is linked to no tracker: an inventory compares the pins with the "
                f"tracker's registries; link it (a ChangerLink) or call tracker.inventory({self.name})"
            )
        return self.inventory_runner()

    # -- the inventory's reads (changers/inventory.py) ----------------------------------------------
    def loaded_pucks(self) -> dict[int, str | None]:
        """Puck location -> the container loaded there (``containers``; default: every location)."""
        return dict(self.containers) or dict.fromkeys(range(1, self.pucks + 1))

    def puck_positions(self, puck: int) -> list[str]:
        return [format_address(puck, position) for position in range(1, self.positions_per_puck + 1)]

    @contextmanager
    def holding(self, what: str) -> Iterator[None]:
        """The robot for ``what`` (an inventory) alone: no load or unload meanwhile."""
        if self.reader is None:
            raise ChangerError(
                f"changer {self.name!r} has no reader on its gripper ('reader' in {self.config_file}): "
                "it cannot read its pins"
            )
        with self._action(what):
            yield

    def read_pin(self, address: str) -> PinRead:
        """The gripper at ``address``: its pin sensor, and the reader's read of the pin's label.
        The mounted pin's position is reported as such (not read: it is on the goniometer)."""
        canonical = self._address(address)
        gevent.sleep(self.pin_read_time)  # the gripper moves to the position
        if self._mounted is not None and self._mounted[0] == canonical:
            return PinRead(canonical, pin=False, listed=self._mounted[1].barcode, on_goniometer=True)
        pin = self._pins.get(canonical)
        if pin is None or canonical in self._absent:
            return PinRead(canonical, pin=False, listed=pin.barcode if pin else None)
        code, error = self._read_at_gripper(pin)
        return PinRead(canonical, pin=True, code=code, error=error, listed=pin.barcode)

    def physical(self) -> dict[str, str | None]:
        """The simulation's truth: each puck position holding a pin -> the label it carries
        (None: none readable). The mounted pin is on the goniometer, not listed here."""
        return {a: p.label for a, p in self._pins.items() if a not in self._absent}

    @command
    def set_presence(self, present: bool) -> None:
        """A hand puts a pin on the goniometer (True) or takes it away (False): only the
        presence sensor changes, not the changer's bookkeeping."""
        if present == self._present:
            return
        self._present = present
        mounted = self.mounted
        self._emit(
            ChangerEventKind.PRESENCE,
            address=mounted.address if mounted else None,
            barcode=mounted.barcode if mounted else None,
            name=mounted.name if mounted else None,
            present=present if self.presence_sensor else None,
        )

    def recover(self) -> None:
        """Clear a fault after a failed action; a pin still held by the gripper goes back to its puck."""
        if self._gripper is not None:
            address, pin = self._gripper
            self._pins[address] = pin
            self._gripper = None
        self._fault = None

    def reset(self) -> None:
        """Back to the configured state: contents reloaded, nothing mounted, no failures pending."""
        if self._lock.locked():
            raise ChangerBusyError(f"changer {self.name!r} is moving; reset() after the action")
        self._pins: dict[str, Pin] = dict(self._configured)
        self._mounted: tuple[str, Pin] | None = None
        self._gripper: tuple[str, Pin] | None = None
        self._present = False
        self._failures: dict[str, Failure] = {}
        self._fault: str | None = None
        self.lost: list[tuple[str, Pin]] = []  # dropped pins: (address they came from, pin)
        #: the seeded faults (``faults`` key): the simulation's ground truth for inventories
        self._pins, self._absent, self.seeded_faults = seed_faults(self._configured, self._faults)

    # -- internals ---------------------------------------------------------------------------------
    def _address(self, text: str) -> str:
        parsed = parse_address(text)
        if parsed is None:
            raise ChangerError(f"{text!r} is not an address like '1:01' (<puck>:<position>)")
        puck, position = parsed
        if not (1 <= puck <= self.pucks and 1 <= position <= self.positions_per_puck):
            raise ChangerError(
                f"changer {self.name!r} has no position {text!r}: it has {self.pucks} puck(s) of "
                f"{self.positions_per_puck} positions"
            )
        return format_address(puck, position)

    def _find(self, target: str) -> tuple[str, Pin]:
        """(address, pin) for an address or a barcode; ChangerError before anything moves."""
        mounted = self._mounted
        if parse_address(target) is not None:
            address = self._address(target)
            if mounted is not None and mounted[0] == address:
                return mounted
            pin = self._pins.get(address)
            if pin is None:
                raise ChangerError(
                    f"changer {self.name!r} has no pin at {address}; see {self.name}.contents()"
                )
            return address, pin
        if mounted is not None and mounted[1].barcode == target:
            return mounted
        for address, pin in self._pins.items():
            if pin.barcode == target:
                return address, pin
        raise ChangerError(
            f"changer {self.name!r} holds no pin with barcode {target!r}; see {self.name}.contents(), "
            "or mount by address ('1:01')"
        )

    @contextmanager
    def _action(self, what: str) -> Iterator[None]:
        """One action at a time, and none while in fault."""
        if self._fault is not None:
            raise ChangerError(
                f"changer {self.name!r} is in fault after {self._fault}; check the goniometer and the "
                f"pucks, then call {self.name}.recover()"
            )
        if not self._lock.acquire(blocking=False):
            raise ChangerBusyError(f"changer {self.name!r} is busy with another action; {what} refused")
        try:
            yield
        finally:
            self._lock.release()

    def _emit(self, kind: ChangerEventKind, **values: Any) -> None:
        self._hub.emit(ChangerEvent(kind, self.name, _now(), **values))

    def _read_at_gripper(self, pin: Pin) -> tuple[str | None, str | None]:
        """(code read, reader error) for the pin in the gripper; (None, None) without a reader."""
        if self.reader is None:
            return None, None
        if pin.label is None:
            self.reader.remove()
        else:
            self.reader.present(pin.label)
        try:
            return self.reader.read(self.reader_timeout).barcode, None
        except (ReaderError, InvalidBarcodeError) as exc:  # no-read, timeout, offline: all reported
            return None, str(exc)
        finally:
            self.reader.remove()  # the gripper has moved on

    def _load(self, address: str, pin: Pin, requested: str, timeout: float) -> None:
        start = _now()
        ids = {"address": address, "barcode": pin.barcode, "name": pin.name}
        self._emit(ChangerEventKind.LOAD_STARTED, requested=requested, **ids)
        failure = self._failures.pop("load", None)
        del self._pins[address]
        self._gripper = (address, pin)
        read = read_error = None
        try:
            expired = ChangerTimeout(f"timed out after {timeout:g} s")
            with gevent.Timeout(timeout, expired):
                gevent.sleep(self.load_time / 2)  # to the puck, grip, back past the reader
                if address in self._absent:  # the contents list it, the puck position is empty
                    self._gripper = None
                    self._pins[address] = pin  # still listed: the bookkeeping does not know
                    raise MountFailedError(
                        f"the gripper found no pin at {address}; nothing is on the goniometer"
                    )
                read, read_error = self._read_at_gripper(pin)
                if failure is Failure.DROPPED_PIN:
                    self._gripper = None
                    self.lost.append((address, pin))
                    raise MountFailedError("the pin was dropped midway; nothing is on the goniometer")
                if failure is Failure.TIMEOUT:
                    gevent.sleep(timeout + 1.0)  # the robot hangs; the Timeout above ends it
                if failure is Failure.ROBOT_ERROR:
                    raise RobotControllerError("gripper axis fault between pick and put (simulated)")
                gevent.sleep(self.load_time / 2)
        except BaseException as exc:  # Ctrl-C and kills too: the pin may be anywhere, say so
            error = self._report_failure(
                exc,
                ChangerEventKind.LOAD_FAILED,
                f"load of {address}",
                started_at=start,
                read=read,
                read_error=read_error,
                requested=requested,
                **ids,
            )
            if error is None:
                raise
            raise error from _cause(exc)
        self._gripper = None
        self._mounted = (address, pin)
        self._present = failure is not Failure.NO_PIN_DETECTED
        self._emit(
            ChangerEventKind.LOADED,
            started_at=start,
            present=self.sample_present,
            read=read,
            read_error=read_error,
            requested=requested,
            **ids,
        )

    def _unload(self, timeout: float) -> None:
        assert self._mounted is not None
        address, pin = self._mounted
        start = _now()
        ids = {"address": address, "barcode": pin.barcode, "name": pin.name}
        self._emit(ChangerEventKind.UNLOAD_STARTED, **ids)
        failure = self._failures.pop("unload", None)
        try:
            with gevent.Timeout(timeout, ChangerTimeout(f"timed out after {timeout:g} s")):
                gevent.sleep(self.unload_time / 2)  # to the goniometer, grip
                if failure is Failure.DROPPED_PIN:
                    self._mounted = None
                    self._present = False
                    self.lost.append((address, pin))
                    raise MountFailedError(
                        "the pin was dropped midway; it is neither on the goniometer nor in its puck"
                    )
                if failure is Failure.TIMEOUT:
                    gevent.sleep(timeout + 1.0)
                if failure is Failure.ROBOT_ERROR:
                    raise RobotControllerError("gripper axis fault while unloading (simulated)")
                gevent.sleep(self.unload_time / 2)
        except BaseException as exc:  # Ctrl-C and kills too: the pin may still be on, say so
            error = self._report_failure(
                exc, ChangerEventKind.UNLOAD_FAILED, f"unload of {address}", started_at=start, **ids
            )
            if error is None:
                raise
            raise error from _cause(exc)
        self._mounted = None
        self._pins[address] = pin
        self._present = failure is Failure.PIN_STAYS
        self._emit(ChangerEventKind.UNLOADED, started_at=start, present=self.sample_present, **ids)

    def _report_failure(
        self, exc: BaseException, kind: ChangerEventKind, what: str, **event: Any
    ) -> MountFailedError | None:
        """Put the robot in fault and report the failed action to the subscribers. Returns the
        error the action raises, or None for Ctrl-C / a kill, which the caller re-raises as itself
        (it still stops the caller, after the report)."""
        self._fault = f"the failed {what}"
        message = _interruption(exc)
        self._emit(kind, present=self.sample_present, message=message, **event)
        return self._failed(exc, what, message) if isinstance(exc, Exception) else None

    def _failed(self, exc: Exception, what: str, message: str) -> MountFailedError:
        """The error raised for a failed action: a MountFailedError (ours keep their type) naming
        the changer and what to do."""
        kind = type(exc) if isinstance(exc, MountFailedError) else MountFailedError
        return kind(
            f"changer {self.name!r}: {what} failed: {message}; call {self.name}.recover() "
            "once the hutch is checked",
            reason=message,
        )

    def __close__(self) -> None:  # BLISS calls it when the session closes; the reader is not ours
        pass

    def __info__(self) -> str:
        mounted = self.mounted
        lines = [f"SimulatedChanger {self.name!r} ({self.pucks} pucks x {self.positions_per_puck})"]
        if mounted is None:
            lines.append("  mounted   : nothing")
        else:
            what = mounted.barcode or mounted.name or "no barcode"
            lines.append(f"  mounted   : {mounted.address} ({what})")
        sensor = "none" if self.sample_present is None else ("pin" if self._present else "no pin")
        lines.append(f"  presence  : {sensor}")
        lines.append(f"  state     : {'FAULT after ' + self._fault if self._fault else 'ready'}")
        lines.append(f"  timing    : load {self.load_time:g} s, unload {self.unload_time:g} s")
        lines.append(f"  reader    : {getattr(self.reader, 'name', 'none') if self.reader else 'none'}")
        if self._failures:
            pending = ", ".join(f"{a}: {f}" for a, f in self._failures.items())
            lines.append(f"  failures  : next {pending}")
        if self.lost:
            lines.append(f"  lost pins : {', '.join(a for a, _ in self.lost)}")
        if self.inventory_summary is not None:
            try:
                summary = self.inventory_summary()
            except (SampleTrackError, RedisError, OSError) as exc:
                summary = f"cannot be read ({type(exc).__name__}: {exc})"
            lines.append(f"  inventory : {summary or 'none taken (' + self.name + '.inventory())'}")
        if self.puck_view is not None:
            try:
                lines.extend(["", self.puck_view()])
                return "\n".join(lines)
            except (SampleTrackError, RedisError, OSError) as exc:  # e.g. Redis down: the plain listing
                lines.append(f"  pucks     : the tracker's view failed ({type(exc).__name__}: {exc})")
        lines.append(f"  contents  : {len(self._pins)} pin(s) in the pucks")
        for p in self.contents():
            what = p.barcode or "(no barcode)"
            lines.append(
                f"    {p.address}  {what}{'  ' + p.name if p.name else ''}"
                f"{'  <- on the goniometer' if p.on_goniometer else ''}"
            )
        return "\n".join(lines)
