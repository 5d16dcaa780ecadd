"""An inventory written back to ICAT+, end to end, in a real BLISS session.

The ICAT+ stand-in (testbed/icatplus_standin.py, a real HTTP server) holds two parcels: Dewar-1
(LYS-0001..3 in puck-1, changer location 1) and Dewar-2 (THA-0001..3 in puck-2, location 2). The
tracker resolves barcodes and changer addresses through it (an ``icatplus`` registry) and
delivers to it (an ``icatplus`` client with ``status_emptied`` and ``item_corrections``), in the
session. The simulated changer holds the same pins; between two inventories the test takes
Dewar-2's pins out and moves LYS-0002 from 1:02 to 2:01. Ground truth: what the test did to the
simulated hardware and the stand-in's parcels, never the tracker's report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from changer_fixtures import reading_changer

from bliss_sampletrack.changers.link import link_changer
from bliss_sampletrack.changers.simulated import SimulatedChanger
from bliss_sampletrack.delivery.writeback import KEY_PREFIX as WRITEBACK_PREFIX
from bliss_sampletrack.testbed.icatplus_standin import (
    API_KEY,
    SESSION_ID,
    IcatPlusStandIn,
    example_parcels,
    serving,
)
from bliss_sampletrack.tracker import controller
from bliss_sampletrack.tracker.icatplus import KEY_PREFIX
from bliss_sampletrack.tracker.inventory import Kind

pytestmark = pytest.mark.bliss

CONTENTS = {f"{p}:{i:02d}": f"{prefix}-000{i}" for p, prefix in ((1, "LYS"), (2, "THA")) for i in (1, 2, 3)}
EMPTIED = "BACK_STORES"  # a facility's choice (README: not confirmed against ICAT+)


@pytest.fixture
def standin() -> Iterator[tuple[str, IcatPlusStandIn]]:
    app = IcatPlusStandIn(example_parcels("123"))
    with serving(app) as url:
        yield url, app


@pytest.fixture
def wb_tracker(
    bliss_session: Any, esrf: Any, standin: tuple[str, IcatPlusStandIn], monkeypatch: pytest.MonkeyPatch
) -> Iterator[controller.SampleTracker]:
    from bliss.config.conductor.client import get_redis_proxy
    from bliss.config.static import get_config

    monkeypatch.setenv("ICATPLUS_SESSION_ID", SESSION_ID)
    monkeypatch.setenv("ICATPLUS_API_KEY", API_KEY)
    redis = get_redis_proxy()
    patterns = ("sampletrack:tracker:*", "sampletrack:outbox:*", f"{WRITEBACK_PREFIX}:*", f"{KEY_PREFIX}:*")
    for pattern in patterns:
        for key in redis.scan_iter(pattern):
            redis.delete(key)
    node = get_config().get_config("tracker")
    config = {key: node.get(key) for key in node.keys() if key not in ("manifest", "delivery")}
    config["registries"] = [{"type": "icatplus", "url": standin[0], "investigation_id": 123, "timeout": 2}]
    config["delivery"] = [
        {
            "name": "icat",
            "type": "icatplus",
            "url": standin[0],
            "parcel_status": {"investigation_id": 123, "status_emptied": EMPTIED},
            "item_corrections": True,
        }
    ]
    tracker = controller.SampleTracker("tracker", config)
    tracker.reader.remove()  # type: ignore[union-attr]
    yield tracker
    tracker.close()


@pytest.fixture
def wb_changer(bliss_session: Any) -> Iterator[SimulatedChanger]:
    pucks = {1: "puck-1", 2: "puck-2"}
    with reading_changer("wbsc", pucks=2, contents=CONTENTS, containers=pucks) as changer:
        yield changer


def item(app: IcatPlusStandIn, name: str) -> dict[str, Any]:
    for parcel in app.parcels:
        for puck in parcel["content"]:
            for entry in puck["content"]:
                if entry["name"] == name:
                    return entry
    raise AssertionError(f"no item {name} in the stand-in")


def writes(app: IcatPlusStandIn) -> list[tuple[str, str, Any]]:
    """The stand-in's PUT requests (method, path tail, body), in arrival order."""
    return [
        (r["method"], r["path"].split("/parcel/id/")[-1], r["body"])
        for r in app.requests
        if r["method"] == "PUT"
    ]


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        gevent.sleep(0.05)


def test_an_emptied_parcel_and_a_moved_item_are_written_back_once(
    wb_tracker: controller.SampleTracker, wb_changer: SimulatedChanger, standin: tuple[str, IcatPlusStandIn]
) -> None:
    _, app = standin
    dewar2 = next(p for p in app.parcels if p["name"] == "Dewar-2")
    lys2_id = item(app, "LYS-0002")["id"]
    link = link_changer(wb_tracker, wb_changer, name="wb_link")
    try:
        first = wb_changer.inventory()
        # the ICAT+ declarations by changer address (container location, item position): all present
        present = {f.addresses[0] for f in first.findings if f.kind is Kind.PRESENT}  # type: ignore[attr-defined]
        assert present == set(CONTENTS)
        assert first.writeback == ["nothing to write back"]  # type: ignore[attr-defined]

        for address in ("1:02", "2:02", "2:03"):  # Dewar-2's pins leave; LYS-0002 moves to 2:01
            wb_changer.remove_pin(address)
        wb_changer.mislabel("2:01", "LYS-0002")
        second = wb_changer.inventory()
        notes = "\n".join(second.writeback)  # type: ignore[attr-defined]
        assert "parcel Dewar-2: none of its samples left: queued as emptied" in notes
        assert "LYS-0002 read at 2:01, ICAT+ declares location 1, position 2: correction queued" in notes
        assert "write-back:" in second.text()  # type: ignore[attr-defined]

        wait_for(lambda: len(writes(app)) == 2)
        status, moved = writes(app)
        assert status == ("PUT", f"{dewar2['id']}/parcel/status", {"status": EMPTIED})
        assert moved[1] == f"{item_parcel(app, lys2_id)}/item/{lys2_id}"
        body = moved[2]
        assert (body["name"], body["type"]) == ("LYS-0002", "SAMPLE")
        assert (body["sampleChangerLocation"], body["sampleContainerPosition"]) == (2, "1")
        assert "declared: location 1, position 2" in body["comments"]
        assert "[sampletrack " in body["comments"] and "inventory of changer wbsc" in body["comments"]
        # ICAT+ now holds it: the status history and the item
        dewar2_now = next(p for p in app.parcels if p["name"] == "Dewar-2")
        assert [s["status"] for s in dewar2_now["statuses"]][-1] == EMPTIED
        assert item(app, "LYS-0002")["sampleChangerLocation"] == 2

        third = wb_changer.inventory()  # the same facts: queued once, never again
        assert third.writeback == ["nothing to write back"]  # type: ignore[attr-defined]
        gevent.sleep(0.5)
        assert len(writes(app)) == 2
        assert wb_tracker.delivery.writebacks.pending() == 0
    finally:
        link.close()


def item_parcel(app: IcatPlusStandIn, item_id: str) -> str:
    for parcel in app.parcels:
        for puck in parcel["content"]:
            if any(entry["id"] == item_id for entry in puck["content"]):
                return parcel["id"]
    raise AssertionError(f"no item {item_id}")
