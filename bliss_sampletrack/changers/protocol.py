"""The sample-changer protocol: one small typed interface in front of every changer or robot.

A changer says what it has on the goniometer now (:attr:`SampleChanger.mounted`: an address such
as ``3:05`` and the pin's barcode when it knows it), what its presence sensor sees
(:attr:`SampleChanger.sample_present`), what its pucks hold (:meth:`SampleChanger.contents`), and
loads or unloads on request (:meth:`SampleChanger.mount`, :meth:`SampleChanger.unmount`). It tells
its subscribers about every change as a :class:`ChangerEvent`, so that
:class:`~bliss_sampletrack.changers.link.ChangerLink` can record it on the tracker.

Addresses are opaque strings to everything but the changer that issues them. The simulated
changer and most MX changers use ``<puck>:<position>`` (``3:05``), see :func:`format_address`.

Caveats:
- Subscribers are called synchronously, in the greenlet that made the change (the caller of
  ``mount()``, or an adapter's polling greenlet). So when ``mount()`` returns, every subscriber
  has seen the events; a subscriber must be quick and must not raise (an exception propagates
  to whoever called ``mount()``, after the changer has moved).
- ``LOADED`` means "the changer says it is done". Whether that is true (the right pin, a pin at
  all) is the link's cross-check, not the changer's business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bliss_sampletrack.core.address import ADDRESS as ADDRESS
from bliss_sampletrack.core.address import format_address as format_address
from bliss_sampletrack.core.address import parse_address as parse_address
from bliss_sampletrack.core.address import split_address as split_address

log = logging.getLogger(__name__)

#: a duration in seconds: BLISS's shell type check (beartype) takes no int for a float, and
#: ``sc.mount("1:01", timeout=30)`` must work
Seconds = float | int


class ChangerEventKind(StrEnum):
    LOAD_STARTED = "load_started"
    LOADED = "loaded"  # the changer reports the pin on the goniometer
    LOAD_FAILED = "load_failed"  # the load started and failed: the pin may be anywhere
    UNLOAD_STARTED = "unload_started"
    UNLOADED = "unloaded"  # the changer reports the goniometer empty
    UNLOAD_FAILED = "unload_failed"  # the unload started and failed: the pin may still be on
    PRESENCE = "presence"  # the presence sensor changed outside any load/unload
    OFFLINE = "offline"  # the changer cannot be read any more (``message`` says why)
    ONLINE = "online"  # ... and can be again: a new baseline, changes meanwhile were not seen


@dataclass(frozen=True, slots=True)
class ChangerEvent:
    """Something the changer did or saw. Unknown values are None, never placeholders.

    ``barcode``/``name`` are what the changer's own bookkeeping says about the pin at ``address``
    (its contents); ``read``/``read_error`` what a barcode reader on its gripper read during the
    action, if it has one. ``present`` is the presence sensor after the action (None: no sensor).
    For PRESENCE events, ``address`` is what the changer believes is mounted (None: nothing).
    ``observed`` marks a change seen by polling rather than commanded: ``started_at`` is then the
    last poll that saw the old state, a bound rather than the robot's own start time.
    """

    kind: ChangerEventKind
    changer: str
    at: datetime
    address: str | None = None
    barcode: str | None = None
    name: str | None = None
    started_at: datetime | None = None
    present: bool | None = None
    read: str | None = None
    read_error: str | None = None
    requested: str | None = None  # what mount() was asked for (an address or a barcode)
    message: str = ""
    observed: bool = False

    @property
    def pin(self) -> str:
        """``3:05 (LYS-0001)``: the address and what is known of the pin, for messages."""
        what = self.barcode or self.name
        where = self.address or "an unknown position"
        return f"{where} ({what})" if what else where


@dataclass(frozen=True, slots=True)
class Position:
    """One puck position holding a pin (empty positions are not listed)."""

    address: str
    barcode: str | None = None  # None: a pin the changer knows no barcode for
    name: str | None = None  # a sample name the changer's database gives, if any
    on_goniometer: bool = False  # the pin of this position is the mounted one


@dataclass(frozen=True, slots=True)
class Mounted:
    """What the changer has on the goniometer."""

    address: str
    barcode: str | None = None
    name: str | None = None


ChangerCallback = Callable[[ChangerEvent], None]


@runtime_checkable
class SampleChanger(Protocol):
    """What the tracker's link needs from any sample changer."""

    name: str

    @property
    def mounted(self) -> Mounted | None:
        """The pin the changer has put on the goniometer, or None."""
        ...

    @property
    def sample_present(self) -> bool | None:
        """The goniometer's presence sensor: True (pin), False (none), None (no sensor)."""
        ...

    def mount(self, target: str, timeout: Seconds | None = None) -> Mounted:
        """Load the pin at an address (``3:05``) or with a barcode; unloads the mounted one first.
        Raises ChangerError before moving, MountFailedError/ChangerTimeout after."""
        ...

    def unmount(self, timeout: Seconds | None = None) -> None:
        """Put the mounted pin back; nothing mounted is no change."""
        ...

    def contents(self) -> list[Position]:
        """Every position holding a pin, with what the changer knows of it."""
        ...

    def expected(self, address: str) -> Position | None:
        """What the changer's bookkeeping says is at ``address`` (None: empty or unknown)."""
        ...

    def subscribe(self, callback: ChangerCallback) -> None:
        """Call ``callback(event)`` for every :class:`ChangerEvent` from now on."""
        ...

    def unsubscribe(self, callback: ChangerCallback) -> None: ...

    def __info__(self) -> str: ...


class EventHub:
    """Subscribers of one changer, called in order (see the module's caveats)."""

    def __init__(self, changer: str) -> None:
        self.changer = changer
        self._callbacks: list[ChangerCallback] = []

    def subscribe(self, callback: ChangerCallback) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def unsubscribe(self, callback: ChangerCallback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def __len__(self) -> int:
        return len(self._callbacks)

    def emit(self, event: ChangerEvent) -> None:
        log.info("changer %r: %s %s %s", self.changer, event.kind, event.pin, event.message)
        for callback in list(self._callbacks):  # a callback may unsubscribe itself
            callback(event)
