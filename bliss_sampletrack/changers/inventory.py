"""Reading every pin of a changer's loaded pucks with its gripper's reader: the inventory's reads.

What a robot with a reader on its gripper does to check its dewar (MXCuBE's SC3
``ScanBasketForDatamatrix``, NSLS-II's puck scans): for each position of each loaded puck, the
gripper goes to the position, its pin sensor says whether a pin is there, and the reader reads
the pin's label. This module drives that loop (:func:`read_pucks`) over a changer that can do it
(:class:`PinReading`: the simulated changer) and keeps the reads in Redis
(:class:`InventoryLog`). What the reads *mean* (present, missing, misplaced... against what the
shipment declares) is the tracker's business: :mod:`bliss_sampletrack.tracker.inventory`.

A no-read is never a barcode: a pin whose label cannot be read is ``PinRead(pin=True,
code=None, error=...)``. A pin on the goniometer is not in its puck: it is reported as such with
what the changer says it is, not read (reading it would mean unloading it).

Cost: one read per position (the simulated changer takes ``pin_read_time`` plus the reader's
answer); the loop yields to the hub between pins and bounds each pin by ``pin_timeout``, so a
160-pin inventory never blocks the session (scans, the delivery loop keep running).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import gevent

from bliss_sampletrack.changers.errors import ChangerTimeout

log = logging.getLogger(__name__)

#: inventories kept per changer in Redis (newest first)
KEEP = 10
#: default bound on one pin (gripper move + read)
PIN_TIMEOUT_S = 10.0

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class PinRead:
    """What the gripper found at one puck position.

    ``pin``: the gripper's pin sensor (False: the position is empty; None: no sensor).
    ``code``: the barcode read, or None (``error`` says why: no-read, timeout...).
    ``on_goniometer``: the position's pin is the mounted one; ``listed`` is then what the changer
    says it is (not read). ``listed`` is otherwise the changer's own bookkeeping for the position.
    """

    address: str
    pin: bool | None
    code: str | None = None
    error: str | None = None
    listed: str | None = None
    on_goniometer: bool = False

    @property
    def no_read(self) -> bool:
        """A pin (or maybe one) that gave no code: never a sample."""
        return self.code is None and self.pin is not False and not self.on_goniometer

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PinRead:
        return cls(
            **{k: data.get(k) for k in ("address", "pin", "code", "error", "listed")},
            on_goniometer=bool(data.get("on_goniometer")),
        )


@dataclass(frozen=True, slots=True)
class PuckReads:
    """Every position read in one inventory of one changer."""

    changer: str
    started_at: datetime
    finished_at: datetime
    reader: str | None
    containers: dict[int, str | None]  # puck location -> the container there (None: not known)
    reads: list[PinRead] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changer": self.changer,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "reader": self.reader,
            "containers": {str(k): v for k, v in self.containers.items()},
            "reads": [asdict(r) for r in self.reads],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PuckReads:
        return cls(
            changer=data["changer"],
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]),
            reader=data.get("reader"),
            containers={int(k): v for k, v in data.get("containers", {}).items()},
            reads=[PinRead.from_dict(r) for r in data.get("reads", [])],
        )


@runtime_checkable
class PinReading(Protocol):
    """A changer that can read the pins in its pucks (the simulated changer)."""

    name: str

    def loaded_pucks(self) -> dict[int, str | None]:
        """The puck locations holding a puck -> the container's name there (None: not known)."""
        ...

    def puck_positions(self, puck: int) -> list[str]:
        """The addresses of one puck's positions, in order."""
        ...

    def holding(self, what: str) -> AbstractContextManager[None]:
        """The robot for ``what`` alone (no mount meanwhile); ChangerBusyError if it is busy."""
        ...

    def read_pin(self, address: str) -> PinRead:
        """Move the gripper to ``address`` and read what is there (cooperative: yields)."""
        ...


def progress_bar(done: int, total: int) -> None:
    """A one-line text progress bar (rewritten in place), as the shell's ``drain`` shows."""
    width = 30
    filled = int(width * done / total) if total else width
    print(f"\rinventory [{'#' * filled}{'.' * (width - filled)}] {done}/{total} pins", end="", flush=True)
    if done >= total:
        print()


def read_pucks(
    changer: PinReading,
    *,
    progress: Progress | None = None,
    pin_timeout: float = PIN_TIMEOUT_S,
) -> PuckReads:
    """Read every position of the changer's loaded pucks, in order, holding the robot.

    Each pin is bounded by ``pin_timeout`` (a hung gripper is a ChangerTimeout naming the
    position, after the robot is released); the hub gets a turn between pins."""
    containers = changer.loaded_pucks()
    addresses = [a for puck in sorted(containers) for a in changer.puck_positions(puck)]
    reads: list[PinRead] = []
    started = datetime.now(UTC)
    log.info(
        "changer %r: inventory of %d position(s) in puck(s) %s",
        changer.name,
        len(addresses),
        sorted(containers),
    )
    with changer.holding("inventory"):
        for done, address in enumerate(addresses, start=1):
            expired = ChangerTimeout(
                f"changer {changer.name!r}: inventory stopped at {address}: the gripper did not read it "
                f"within {pin_timeout:g} s"
            )
            with gevent.Timeout(pin_timeout, expired):
                reads.append(changer.read_pin(address))
            if progress is not None:
                progress(done, len(addresses))
            gevent.sleep(0)  # between pins: other greenlets run even with an instant reader
    reader = getattr(getattr(changer, "reader", None), "name", None)
    return PuckReads(changer.name, started, datetime.now(UTC), reader, containers, reads)


class InventoryLog:
    """The last :data:`KEEP` inventories of one changer, as JSON, newest first, in a Redis list
    next to the tracker's keys: ``sampletrack:<tracker>:inventory:<changer>``."""

    def __init__(self, redis: Any, tracker: str, changer: str, keep: int = KEEP) -> None:
        self.redis = redis
        self.key = f"sampletrack:{tracker}:inventory:{changer}"
        self.keep = keep

    def save(self, record: dict[str, Any], also: Callable[[Any], None] | None = None) -> None:
        """Keep ``record``; ``also(pipeline)`` adds writes to the same transaction (the write-backs
        the inventory found: kept exactly when the inventory is)."""
        pipeline = self.redis.pipeline(transaction=True)
        pipeline.lpush(self.key, json.dumps(record))
        pipeline.ltrim(self.key, 0, self.keep - 1)
        if also is not None:
            also(pipeline)
        pipeline.execute()

    def last(self) -> dict[str, Any] | None:
        """The newest inventory record, or None."""
        raw = self.redis.lindex(self.key, 0)
        return None if raw is None else json.loads(raw)

    def history(self, count: int = KEEP) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self.key, 0, max(count, 1) - 1)]
