"""Recording on the tracker through its public seam, shared by the changer link and the macros.

The seam (:class:`TrackerSeam`) is what :class:`~bliss_sampletrack.tracker.controller.SampleTracker`
offers changers and macros: ``record_mount``, ``record_unmount``, ``set_unknown``,
``set_conflict``, ``resolve`` and its state. Nothing here touches the tracker's internals.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.core.snapshot import Snapshot, TrackerState

log = logging.getLogger(__name__)


@runtime_checkable
class TrackerSeam(Protocol):
    """The part of ``SampleTracker`` that changers and macros use."""

    name: str
    store: Any  # its ``redis`` client keeps the robot actions next to the tracker's keys

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def state(self) -> TrackerState: ...

    @property
    def sample(self) -> Sample | None: ...

    def resolve(self, barcode: str) -> Sample: ...

    def record_mount(
        self,
        sample: Sample,
        source: Source,
        *,
        at: datetime | None = None,
        status: Status = Status.SUCCESS,
        message: str = "",
    ) -> list[Event]: ...

    def record_unmount(
        self,
        source: Source,
        *,
        at: datetime | None = None,
        status: Status = Status.SUCCESS,
        message: str = "",
    ) -> list[Event]: ...

    def set_unknown(self, reason: str) -> None: ...

    def set_conflict(self, reason: str) -> None: ...


def sample_for(
    tracker: TrackerSeam,
    *,
    barcode: str | None,
    name: str | None = None,
    changer: str | None = None,
    address: str | None = None,
) -> Sample:
    """The sample record: the registry's for ``barcode`` (the tracker's unknown-barcode policy
    applies: MountRefusedError), else ``Sample(name=name)``; with the changer and address added.

    A name from a changer's contents only fills a name the registry lacks: the registry is the
    curated record. Raises InvalidSampleError when neither barcode nor name is given.
    """
    if barcode is not None:
        sample = tracker.resolve(barcode)
        if name is not None and sample.name is None:
            sample = dataclasses.replace(sample, name=name)
    else:
        sample = Sample(name=name)
    return with_changer(sample, changer, address)


def with_changer(sample: Sample, changer: str | None, address: str | None) -> Sample:
    """``sample`` with the changer and position it was mounted from (the changer's word wins
    over the registry's: it is where the pin really was); unchanged without a changer."""
    if changer is None:
        return sample
    return dataclasses.replace(sample, changer_name=changer, changer_position=address)


def record_failed_mount(
    tracker: TrackerSeam, sample: Sample, source: Source, *, at: datetime, message: str
) -> list[Event]:
    """Record a failed mount of ``sample``: an ERROR mounted event, the tracker in CONFLICT.

    When a sample is recorded mounted, nobody knows whether the failed action removed it:
    the tracker goes CONFLICT first, so that the state machine records that sample's unmount as
    ERROR ("unmount not observed") rather than as a clean replacement. That is two Redis
    transactions; a scan starting in between sees CONFLICT, which is true.
    """
    snapshot = tracker.snapshot
    if snapshot.state is TrackerState.MOUNTED:
        current = snapshot.sample.label if snapshot.sample else "the mounted sample"
        tracker.set_conflict(f"{message}; whether {current} is still on the goniometer is unknown")
    return tracker.record_mount(sample, source, at=at, status=Status.ERROR, message=message)
