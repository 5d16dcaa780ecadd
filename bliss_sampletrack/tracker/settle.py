"""Keeping a scan's tag level with the hardware: changes in flight, and witnesses of the hardware.

The tracker's state lags the hardware by the time it takes to record a change (a reader's read,
a registry lookup, a Redis transaction). A scan that starts in that window must not be tagged
with the state before the change. Two mechanisms, both BLISS-free:

- :class:`InFlight`: whoever records a hardware change (the changer link, from the moment the
  changer reports it) enters :meth:`InFlight.entered` *before* its first yield to the hub; the
  scan tag waits (bounded) until nothing is in flight, then reads the state. A change still in
  flight after the bound makes the tag UNKNOWN, saying which change.
- :class:`Witness`: something that can tell cheaply whether a snapshot agrees with the hardware
  now (the changer link: what the changer has mounted, its presence sensor, a move going on).
  The tag asks every witness; a disagreement is tagged as doubt (:class:`Doubt`), never guessed
  away, and the witness reconciles the tracker's state in the background.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gevent.event

from bliss_sampletrack.core.snapshot import Doubt, Witness

__all__ = ["Doubt", "InFlight", "Witness"]

log = logging.getLogger(__name__)


class InFlight:
    """The hardware changes being recorded now (see the module)."""

    def __init__(self) -> None:
        self._changes: dict[int, str] = {}
        self._next = 0
        self._idle = gevent.event.Event()
        self._idle.set()

    @contextmanager
    def entered(self, what: str) -> Iterator[None]:
        self._next += 1
        token = self._next
        self._changes[token] = what
        self._idle.clear()
        try:
            yield
        finally:
            del self._changes[token]
            if not self._changes:
                self._idle.set()

    def pending(self) -> list[str]:
        return list(self._changes.values())

    def settle(self, timeout: float) -> list[str]:
        """Wait until nothing is in flight (at most ``timeout`` s); what is still in flight."""
        if self._changes:
            self._idle.wait(timeout)
        return self.pending()
