"""Storage of the tracking service, the same tests on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from service_fixtures import make_event, stamp

from bliss_sampletrack.service.events import prepare_event
from bliss_sampletrack.service.storage import EventQuery, InsertOutcome, open_storage
from bliss_sampletrack.service.storage.base import TokenRecord
from bliss_sampletrack.service.storage.migrations import LATEST_VERSION, STEPS, SchemaTooNewError

pytest_plugins = ["service_fixtures"]


def new(**overrides: Any) -> Any:
    return prepare_event(make_event(**overrides))


def index_names(storage: Any) -> set[str]:
    if storage.dialect == "sqlite":
        rows = storage._read("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
    else:
        rows = storage._read("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
    return {row[0] for row in rows}


def test_migrations_are_numbered_recorded_and_idempotent(db_url: str) -> None:
    with open_storage(db_url) as storage:
        assert storage.schema_version() == 0
        assert storage.migrate() == [step.version for step in STEPS]
        assert storage.schema_version() == LATEST_VERSION == len(STEPS)
        rows = storage._read("SELECT version, description FROM schema_version ORDER BY version")
        assert [row[0] for row in rows] == list(range(1, LATEST_VERSION + 1))
        assert all(row[1] for row in rows)
        assert storage.migrate() == []  # nothing left to do
        assert {"events_time", "events_beamline_time", "events_barcode_time"} <= index_names(storage)


def test_partial_migration_resumes(db_url: str) -> None:
    from bliss_sampletrack.service.storage.migrations import migrate

    with open_storage(db_url) as storage:
        assert migrate(storage, target=1) == [1]
        assert storage.schema_version() == 1
        assert "events_time" not in index_names(storage)
        assert storage.migrate() == list(range(2, LATEST_VERSION + 1))


def test_a_newer_schema_is_refused(storage: Any) -> None:
    storage._write(
        lambda cur: cur.execute(
            storage._sql("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)"),
            (LATEST_VERSION + 1, "from the future", "2030-01-01T00:00:00.000000Z"),
        )
    )
    with pytest.raises(SchemaTooNewError, match="newer than this service knows"):
        storage.migrate()


def test_insert_created_replay_conflict(storage: Any) -> None:
    event = new()
    [created] = storage.insert_events([event])
    assert created.outcome is InsertOutcome.CREATED
    assert created.stored_body == event.body
    [replay] = storage.insert_events([event])
    assert replay.outcome is InsertOutcome.REPLAY
    changed = prepare_event(make_event(event_id=event.event_id, message="other"))
    [conflict] = storage.insert_events([changed])
    assert conflict.outcome is InsertOutcome.CONFLICT
    assert conflict.stored_body == event.body  # the first one stays
    assert storage.count_events() == 1


def test_batch_in_order_with_duplicates_inside(storage: Any) -> None:
    a, b = new(), new()
    a_changed = prepare_event(make_event(event_id=a.event_id, session="other"))
    results = storage.insert_events([a, b, a, a_changed])
    assert [r.outcome for r in results] == [
        InsertOutcome.CREATED,
        InsertOutcome.CREATED,
        InsertOutcome.REPLAY,
        InsertOutcome.CONFLICT,
    ]
    assert storage.count_events() == 2


def test_query_filters_and_pagination(storage: Any) -> None:
    events = [
        new(occurred_at=stamp(10), beamline="id23-1", sample={"barcode": "A"}),
        new(occurred_at=stamp(20), beamline="id30", sample={"barcode": "B"}),
        new(occurred_at=stamp(30), beamline="id23-1", sample={"barcode": "B"}),
        new(occurred_at=stamp(30), beamline="id23-1", sample={"barcode": "C"}),  # same time: arrival order
        new(occurred_at=stamp(40), beamline="id23-1", sample={"barcode": None, "name": "no barcode"}),
    ]
    # stored out of time order: the listing is by occurred_at
    storage.insert_events([events[2], events[0], events[4], events[1], events[3]])

    def ids(query: EventQuery) -> list[str]:
        return [row.body for row in storage.query_events(query)]

    assert ids(EventQuery()) == [events[i].body for i in (0, 1, 2, 3, 4)]
    assert ids(EventQuery(beamlines=("id30",))) == [events[1].body]
    assert ids(EventQuery(beamlines=("id30", "id23-1"), barcode="B")) == [events[1].body, events[2].body]
    since, until = events[1].occurred_us, events[4].occurred_us
    assert ids(EventQuery(since_us=since, until_us=until)) == [events[i].body for i in (1, 2, 3)]

    # pages of 2 (the storage returns one more row to say that a next page exists)
    seen: list[str] = []
    after = None
    while True:
        rows = storage.query_events(EventQuery(limit=2, after=after))
        page = rows[:2]
        seen += [row.body for row in page]
        if len(rows) <= 2:
            break
        after = (page[-1].occurred_us, page[-1].seq)
    assert seen == [events[i].body for i in (0, 1, 2, 3, 4)]


def test_latest_event_and_history(storage: Any) -> None:
    mount = new(occurred_at=stamp(10), sample={"barcode": "S1"})
    unmount = new(
        type="unmounted", occurred_at=stamp(20), sample={"barcode": "S1"}, mount_event_id=mount.event_id
    )
    elsewhere = new(occurred_at=stamp(30), beamline="id30", sample={"barcode": "S1"})
    storage.insert_events([unmount, mount, elsewhere])
    assert storage.latest_event("id23-1") == ("unmounted", unmount.body)
    assert storage.latest_event("id30") == ("mounted", elsewhere.body)
    assert storage.latest_event("bm01") is None
    assert storage.history("S1") == [mount.body, unmount.body, elsewhere.body]
    assert storage.history("S1", ("id30",)) == [elsewhere.body]
    assert storage.history("S2") == []


def test_tokens(storage: Any) -> None:
    record = TokenRecord(
        "0123456789", "ab" * 32, ("id23-1", "id30"), True, "ctl", "2026-11-24T10:00:00.000000Z", None
    )
    storage.add_token(record)
    assert storage.get_token("0123456789") == record
    assert storage.list_tokens() == [record]
    assert storage.revoke_token("0123456789") is True
    assert storage.revoke_token("0123456789") is False  # already revoked
    assert storage.get_token("0123456789").revoked_at is not None
    assert storage.get_token("nope") is None


def test_concurrent_replays_store_exactly_one(storage: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Eight threads (eight connections) insert the same events at the same moment."""
    caplog.set_level(logging.INFO, logger="bliss_sampletrack.service.storage")
    events = [new(occurred_at=stamp(i)) for i in range(200)]
    barrier = threading.Barrier(8)

    def worker(offset: int) -> list[Any]:
        barrier.wait(timeout=10)
        # different orders: on PostgreSQL, arrival-order inserts would deadlock here
        return storage.insert_events(events[offset * 23 :] + events[: offset * 23])

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(worker, i) for i in range(8)]
        results = [future.result(timeout=60) for future in futures]
    assert storage.count_events() == len(events)
    created = [r for batch in results for r in batch if r.outcome is InsertOutcome.CREATED]
    replays = [r for batch in results for r in batch if r.outcome is InsertOutcome.REPLAY]
    assert len(created) == len(events)
    assert len(replays) == 7 * len(events)
    assert "re-run" not in caplog.text  # no deadlock: rows are inserted in event_id order


def test_bulk_load(storage: Any) -> None:
    events = [new(occurred_at=stamp(i)) for i in range(250)]
    assert storage.bulk_load(iter(events), chunk=100) == 250
    assert storage.count_events() == 250
    rows = storage.query_events(EventQuery(limit=1000))
    assert [row.body for row in rows] == [e.body for e in events]


def test_same_instant_keeps_arrival_order(storage: Any) -> None:
    """The plugin's unmount of the previous sample and the next mount share one occurred_at."""
    old = new(occurred_at=stamp(5), sample={"barcode": "OLD"})
    # event ids in the reverse order of arrival: rows are inserted by event_id, seq keeps arrival
    unmount = new(
        event_id="ffffffff-0000-4000-8000-000000000000",
        type="unmounted",
        occurred_at=stamp(10),
        sample={"barcode": "OLD"},
        mount_event_id=old.event_id,
    )
    mount = new(
        event_id="00000000-0000-4000-8000-000000000000", occurred_at=stamp(10), sample={"barcode": "NEW"}
    )
    storage.insert_events([old])
    storage.insert_events([unmount, mount])
    assert storage.latest_event("id23-1") == ("mounted", mount.body)
    assert [row.body for row in storage.query_events(EventQuery())] == [old.body, unmount.body, mount.body]
