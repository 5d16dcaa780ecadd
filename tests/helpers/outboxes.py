"""Shared helpers of the delivery tests: numbered contract events and filling an outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def events(n: int, beamline: str = "bm07", prefix: str = "S") -> list[Event]:
    """``n`` mounts on ``beamline`` one second apart, barcodes ``<prefix>-0000``, ``-0001``..."""
    return [
        Event.mounted(
            Sample(barcode=f"{prefix}-{i:04d}"),
            beamline=beamline,
            session="s",
            source=Source.MANUAL,
            occurred_at=T0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def fill(box: RedisStreamOutbox, evts: list[Event]) -> None:
    """Append ``evts`` to the outbox in one transaction, as the tracker does."""
    pipeline = box.redis.pipeline(transaction=True)
    box.add(pipeline, evts)
    pipeline.execute()
