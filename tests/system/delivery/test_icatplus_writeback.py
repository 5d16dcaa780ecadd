"""Write-backs to ICAT+ (delivery/icatplus_writeback.py) through the delivery loop: queue order, an
ICAT+ outage, a killed deliverer taken over, refusals as dead letters, and the order with the
events queued before them.

Against the test bed's real Redis and the ICAT+ stand-in as a separate process (``StandInProcess``);
the ground truth is what the stand-in recorded (its requests, its parcels). The deliverers are the
``DeliveryManager`` of one ICAT+ client (``tests/helpers/writeback_deliverer.py``, with a short
backoff), in this process or as a process that is killed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
from writeback_deliverer import CLIENT, KEY_ENV, SESSION_ENV, build_manager

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.delivery.manager import writeback_outbox
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.delivery.writeback import Kind, Place, WriteBack
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testbed.icatplus_standin import API_KEY, SESSION_ID, StandInProcess, example_parcels
from bliss_sampletrack.testing import wait_for

pytestmark = pytest.mark.bliss
SCRIPT = str(Path(__file__).parents[2] / "helpers" / "writeback_deliverer.py")
STATUSES = {"READY", "BEAMLINE", "BACK_STORES"}
EMPTIED = "BACK_STORES"
PARCELS = example_parcels("123")
P1, P2 = PARCELS[0]["_id"], PARCELS[1]["_id"]
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
TRACKING = f"/tracking/{SESSION_ID}"


def item(p: int, i: int) -> dict[str, Any]:
    """Item ``i`` of parcel ``p`` as the stand-in starts with it."""
    return PARCELS[p]["content"][0]["content"][i]


def parcel_path(parcel_id: str, tail: str) -> str:
    return f"{TRACKING}/investigation/id/123/parcel/id/{parcel_id}/{tail}"


def write_path(record: WriteBack) -> str:
    """The path of the PUT a record makes."""
    if record.kind is Kind.PARCEL_EMPTIED:
        return parcel_path(record.parcel_id, "parcel/status")
    return parcel_path(record.parcel_id, f"item/{record.item_id}")


def calls(records: Iterable[WriteBack]) -> list[tuple[str, str]]:
    """Every request the records make, in order: a moved item is a GET of its parcel, then a PUT."""
    result = []
    for record in records:
        if record.kind is Kind.ITEM_MOVED:
            result.append(("GET", f"{TRACKING}/parcel"))
        result.append(("PUT", write_path(record)))
    return result


def puts(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in got if r["method"] == "PUT"]


def marker(record: WriteBack) -> str:
    return f"[sampletrack {record.event_id}]"


@dataclass
class Bed:
    redis: Any
    beamline: str
    standin: StandInProcess
    manager: Any = None

    @property
    def events(self) -> RedisStreamOutbox:
        return RedisStreamOutbox(self.redis, self.beamline)

    @property
    def writebacks(self) -> RedisStreamOutbox:
        return writeback_outbox(self.events)

    def _record(self, kind: Kind, p: int, **fields: Any) -> WriteBack:
        parcel = PARCELS[p]
        return WriteBack(kind, self.beamline, "tracker", "sc", T0, parcel["_id"], parcel["name"], **fields)

    def emptied(self, p: int) -> WriteBack:
        return self._record(Kind.PARCEL_EMPTIED, p)

    def moved(self, p: int, i: int, found: Place, item_id: str | None = None) -> WriteBack:
        it = item(p, i)
        declared = Place(it["sampleChangerLocation"], it["sampleContainerPosition"])
        return self._record(
            Kind.ITEM_MOVED, p, item_id=item_id or it["_id"], item_name=it["name"], barcode=it["name"],
            declared=declared, found=found,
        )  # fmt: skip

    def queue(self, records: list[WriteBack], events: list[Event] = ()) -> None:  # type: ignore[assignment]
        """Queue ``events`` then ``records`` in one transaction, as the tracker does."""
        pipeline = self.redis.pipeline(transaction=True)
        self.events.add(pipeline, list(events))
        self.writebacks.add(pipeline, records)
        pipeline.execute()

    def start(self, status_emptied: str = EMPTIED) -> None:
        self.manager = build_manager(self.redis, self.beamline, self.standin.url, status_emptied)
        self.manager.start()

    def drain(self, timeout: float = 20) -> None:
        def done() -> bool:
            return self.writebacks.pending(CLIENT) == 0 and self.events.pending(CLIENT) == 0

        wait_for(done, timeout, "every record delivered")

    def requests(self) -> list[dict[str, Any]]:
        return self.standin.control.requests()

    def parcel(self, p: int) -> dict[str, Any]:
        return next(x for x in self.standin.control.parcels() if x["_id"] == PARCELS[p]["_id"])

    def item_now(self, p: int, i: int) -> dict[str, Any]:
        return next(x for x in self.parcel(p)["content"][0]["content"] if x["_id"] == item(p, i)["_id"])


@pytest.fixture
def bed(beacon: BeaconServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bed]:
    import redis

    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setenv(SESSION_ENV, SESSION_ID)
    client = redis.Redis.from_url(beacon.redis_url)
    standin = StandInProcess(tmp_path / "standin", PARCELS, statuses=STATUSES)
    standin.start()
    test_bed = Bed(client, f"wb{uuid.uuid4().hex[:10]}", standin)
    try:
        yield test_bed
    finally:
        if test_bed.manager is not None:
            test_bed.manager.stop()
        standin.stop()
        for prefix in ("sampletrack:outbox", "sampletrack:writeback"):
            for key in client.scan_iter(f"{prefix}:{test_bed.beamline}*"):
                client.delete(key)
        client.close()


def check_corrected(bed: Bed, record: WriteBack, p: int, i: int, body: dict[str, Any]) -> None:
    """``body`` (an item PUT) is the item at the place found, the declared one in its comments."""
    assert record.found is not None
    original = {k: v for k, v in item(p, i).items() if k != "_id"}
    line = body["comments"]
    assert body == {
        **original,
        "sampleChangerLocation": record.found.location,
        "sampleContainerPosition": record.found.position,
        "comments": line,
    }
    assert line.startswith(f"{marker(record)} inventory of changer sc (2026-11-24T09:00:00+00:00")
    assert f"read {item(p, i)['name']} at {record.found.text()};" in line
    assert line.endswith(f"declared: location {p + 1}, position {i + 1}")
    assert bed.item_now(p, i) == {**body, "_id": item(p, i)["_id"]}


def test_writebacks_reach_icatplus_in_queue_order(bed: Bed) -> None:
    records = [
        bed.moved(0, 0, Place(3, "5")),
        bed.emptied(1),
        bed.moved(1, 1, Place(4, "2")),
        bed.emptied(0),
        bed.moved(0, 2, Place(2, "3")),
        bed.moved(1, 0, Place(5, "1")),
    ]
    bed.queue(records)
    bed.start()
    bed.drain()
    got = bed.requests()
    assert [(r["method"], r["path"]) for r in got] == calls(records)
    assert [r["status"] for r in got] == [200] * len(got)
    moved = [r for r in records if r.kind is Kind.ITEM_MOVED]
    gets = [r["query"] for r in got if r["method"] == "GET"]
    assert gets == [{"investigationId": "123", "parcelId": r.parcel_id} for r in moved]
    bodies = {r["path"]: r["body"] for r in puts(got)}
    assert bodies[parcel_path(P1, "parcel/status")] == {"status": EMPTIED}
    for record, (p, i) in zip(moved, [(0, 0), (1, 1), (0, 2), (1, 0)], strict=True):
        check_corrected(bed, record, p, i, bodies[write_path(record)])
    for p in (0, 1):
        parcel = bed.parcel(p)
        assert [s["status"] for s in parcel["statuses"]] == ["READY", EMPTIED]
        assert parcel["status"] == parcel["currentStatus"] == EMPTIED
    assert bed.item_now(0, 1) == item(0, 1)  # not in any record: untouched
    assert bed.writebacks.dead_letters(CLIENT) == [] and bed.writebacks.last_error(CLIENT) is None


def test_an_icatplus_outage_delays_the_writebacks_and_loses_none(bed: Bed) -> None:
    first = [bed.emptied(0), bed.moved(0, 0, Place(3, "5"))]
    bed.queue(first)
    bed.start()
    bed.drain()
    before = bed.requests()
    bed.standin.kill()
    rest = [bed.moved(1, 1, Place(4, "2")), bed.emptied(1), bed.moved(0, 1, Place(6, "1")), bed.emptied(0)]
    bed.queue(rest)
    wait_for(lambda: bed.writebacks.last_error(CLIENT) is not None, 10, "a failed delivery")
    gevent.sleep(2.0)  # the outage goes on; the deliverer retries
    assert bed.writebacks.pending(CLIENT) == len(rest)
    error = bed.writebacks.last_error(CLIENT) or ""
    assert "item THA-0002 of parcel Dewar-2: reading it" in error and SESSION_ID not in error, error
    bed.standin.restart()
    bed.drain()
    got = bed.requests()
    assert got[: len(before)] == before  # kept across the restart (the state file)
    assert [(r["method"], r["path"]) for r in got] == calls(first + rest)  # in order, each once
    assert [r["status"] for r in got] == [200] * len(got)
    check_corrected(bed, rest[2], 0, 1, puts(got)[-2]["body"])
    assert [s["status"] for s in bed.parcel(0)["statuses"]] == ["READY", EMPTIED, EMPTIED]
    assert bed.writebacks.dead_letters(CLIENT) == [] and bed.writebacks.last_error(CLIENT) is None


def _deliverer(bed: Bed, beacon: BeaconServer, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, SCRIPT, beacon.redis_url, bed.beamline, bed.standin.url, EMPTIED],
            env={**os.environ},  # the API key and session id variables set by the fixture
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def test_a_killed_deliverer_is_taken_over_and_an_item_is_corrected_once(
    bed: Bed, beacon: BeaconServer, tmp_path: Path
) -> None:
    records = [
        bed.emptied(0),
        bed.moved(0, 0, Place(3, "5")),
        bed.emptied(1),
        bed.moved(1, 2, Place(4, "1")),
        bed.moved(0, 1, Place(2, "2")),
    ]
    slow = write_path(records[1])
    bed.standin.control.fault(None, 1, match=slow, hang=2.0)  # applied 2 s after it arrives
    bed.standin.control.fault(None, 3, match="/parcel/status", hang=0.3)
    bed.queue(records)
    processes = [_deliverer(bed, beacon, tmp_path / "first.log")]
    try:

        def slow_put() -> list[Any]:
            return [r["status"] for r in bed.requests() if r["path"] == slow]

        wait_for(lambda: slow_put() == [None], 30, "the item correction in flight")
        processes[0].kill()  # kill -9 while ICAT+ holds the PUT: its answer is never read
        processes[0].wait(10)
        wait_for(lambda: slow_put() == [200], 10, "the stand-in to apply the orphaned correction")
        assert bed.writebacks.pending(CLIENT) == len(records) - 1  # not marked done
        processes.append(_deliverer(bed, beacon, tmp_path / "second.log"))
        bed.drain(30)
    finally:
        for process in processes:
            process.kill()
            process.wait(10)
    got = bed.requests()
    reads = [r["query"]["parcelId"] for r in got if r["method"] == "GET"]
    assert reads == [P1, P1, P2, P1]  # the orphaned correction read again by the second deliverer
    writes = [(r["method"], r["path"], r["body"]) for r in puts(got)]
    # a record sent again after the takeover may only repeat an identical status PUT
    distinct = [w for k, w in enumerate(writes) if k == 0 or w != writes[k - 1]]
    assert [path for _, path, _ in distinct] == [write_path(r) for r in records]
    for record, (p, i) in [(records[1], (0, 0)), (records[3], (1, 2)), (records[4], (0, 1))]:
        assert [path for _, path, _ in writes].count(write_path(record)) == 1  # the marker made it a no-op
        comments = bed.item_now(p, i)["comments"]
        assert comments.count(marker(record)) == 1
        assert bed.item_now(p, i)["sampleChangerLocation"] == record.found.location  # type: ignore[union-attr]
    assert bed.writebacks.dead_letters(CLIENT) == []


def test_refusals_are_dead_letters_and_delivery_goes_on(bed: Bed) -> None:
    changed = item(0, 0)
    by_hand = {k: v for k, v in changed.items() if k != "_id"}
    by_hand |= {"sampleChangerLocation": 7, "sampleContainerPosition": "4", "comments": "moved by hand"}
    edit = parcel_path(P1, f"item/{changed['_id']}")
    assert requests.put(bed.standin.url + edit, json=by_hand, timeout=10).status_code == 200
    unknown = "0" * 24
    records = [
        bed.emptied(0),  # status LOST: not one ICAT+ knows
        bed.moved(0, 0, Place(3, "5")),  # changed in ICAT+ since the inventory
        bed.moved(0, 1, Place(2, "2"), item_id=unknown),  # no such item (deleted)
        bed.moved(1, 2, Place(4, "1")),
    ]
    bed.queue(records)
    bed.start(status_emptied="LOST")
    bed.drain()
    letters = bed.writebacks.dead_letters(CLIENT)
    assert [letter.event.event_id for letter in letters] == [r.event_id for r in records[:3]]
    status, overwritten, gone = (letter.answer for letter in letters)
    assert status.startswith("parcel Dewar-1 status LOST refused: 400 ")
    assert "'LOST' is not one of" in status
    assert re.fullmatch(
        r"item LYS-0001 of parcel Dewar-1: ICAT\+ now says location 7, position 4, not location 1, "
        r"position 1 as when the inventory compared: changed since; not overwritten with location 3, "
        r"position 5",
        overwritten,
    ), overwritten
    assert f"ICAT+ has no item {unknown} in parcel {P1} of investigation 123" in gone
    assert gone.endswith("nothing written")
    assert bed.item_now(0, 0) == {**by_hand, "_id": changed["_id"]}  # not modified
    got = bed.requests()
    assert [r["path"] for r in puts(got)] == [edit, write_path(records[0]), write_path(records[3])]
    assert [r["status"] for r in puts(got)] == [200, 400, 200]
    check_corrected(bed, records[3], 1, 2, puts(got)[-1]["body"])
    assert [s["status"] for s in bed.parcel(0)["statuses"]] == ["READY"]
    assert bed.writebacks.last_error(CLIENT) is None


@pytest.mark.parametrize(
    "queued",
    [
        "in_two_transactions",
        "in_one_transaction",  # the same stream ID in both streams: the event counts as before
    ],
)
def test_an_emptied_status_waits_for_the_mount_queued_before_it(bed: Bed, queued: str) -> None:
    sample = Sample(barcode="LYS-0001", parcel_id=P1, parcel_name="Dewar-1", changer_name="sc")
    mount = Event.mounted(sample, beamline=bed.beamline, session="s", source=Source.SAMPLE_CHANGER)
    bed.standin.control.fault(503, 3, match="/notification")
    emptied = bed.emptied(0)
    if queued == "in_one_transaction":
        bed.queue([emptied], events=[mount])
    else:
        bed.queue([], events=[mount])
        gevent.sleep(0.01)  # a later millisecond: the inventory comes after the mount
        bed.queue([emptied])
    ids = [box.redis.xrange(box.key)[0][0].decode() for box in (bed.events, bed.writebacks)]
    bed.start()
    bed.drain()
    got = bed.requests()
    assert [r["status"] for r in got if r["path"].endswith("/notification")] == [503, 503, 503, 200], ids
    statuses = [r["body"]["status"] for r in got if r["path"] == write_path(emptied)]
    assert statuses == ["BEAMLINE", EMPTIED], ids
    parcel = bed.parcel(0)
    assert [s["status"] for s in parcel["statuses"]] == ["READY", "BEAMLINE", EMPTIED]
    assert parcel["currentStatus"] == EMPTIED
