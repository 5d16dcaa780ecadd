"""A valid contract event as a dict (the JSON the REST contract carries), for tests and benchmarks.

One builder for the service tests (``tests/service_fixtures.py``), the event property tests and
the service benchmark (``benchmarks/service_benchmark.py``), so the sample event they all start
from is the same and follows the contract (/work/shared/contract/event.schema.json) when it changes.
"""

from __future__ import annotations

import uuid
from typing import Any


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid contract event (a new ``event_id`` each time); ``overrides`` replace its keys, and a
    ``sample`` or ``producer`` mapping is merged into the default one."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "mounted",
        "occurred_at": "2026-11-24T10:00:00.000000Z",
        "beamline": "id23-1",
        "session": "demo_session",
        "proposal": "mx2532",
        "sample": {
            "barcode": "BC-0001",
            "name": "lysozyme-1",
            "sample_id": None,
            "parcel_id": None,
            "parcel_name": None,
            "container_id": "puck-7",
            "container_name": "Puck 7",
            "container_position": "5",
        },
        "sample_changer": {"name": "flex", "position": "3:05"},
        "source": "sample_changer",
        "status": "SUCCESS",
        "message": "",
        "mount_event_id": None,
        "producer": {"software": "bliss-sampletrack", "version": "0.1.0", "host": "id23-1-ctl"},
    }
    for key in ("sample", "producer"):
        if isinstance(overrides.get(key), dict):
            overrides[key] = {**event[key], **overrides[key]}
    event.update(overrides)
    return event
