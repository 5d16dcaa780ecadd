"""Several ``sampletrack-service serve`` processes on one PostgreSQL database (issue 20).

The farm (``testbed.service_farm.ServiceFarm``): 2 real service processes, migrated once, each on
a kernel-chosen port; beamline outboxes in a real ``redis-server``; the real delivery loop
(``Deliverer`` + ``RestClient``, as greenlets of this gevent-patched process), beamlines spread
round-robin over the processes. What is checked, in the database itself: every event of every
outbox stored (nothing lost), each once, and per beamline in outbox order (``seq``, the arrival
order).

- a short scale run: 3 beamlines, 2,000 events, 2 processes;
- kill -9 of one process while its deliverers are sending. Model chosen: the process is restarted
  on the same port a second later, as a supervisor (systemd ``Restart=always``) would, and the
  deliverers pointed at it retry (connection refused, then their backoff) until it is back; the
  deliverers of the other process go on meanwhile. (Behind a reverse proxy the proxy would send
  the retries to the surviving process instead: ``docs/service-deployment.md``.) A batch that the
  killed process had committed but not answered is sent again and answered ``200`` (a replay);
- the same events posted at the same moment to both processes (threads behind a barrier):
  exactly one ``201`` per event, every other answer ``200``, one row per event.

Cost: one cluster for the whole test run (``service_fixtures.pg_cluster``, shared with the other
service tests), one farm and one Redis for this module. Skipped, with the reason, only when
PostgreSQL is not installed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import psycopg
import pytest
import requests
from service_fixtures import make_event, stamp

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery.clients import RestClient
from bliss_sampletrack.delivery.loop import Deliverer
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.testbed.service_farm import (
    OutboxRedis,
    ServiceFarm,
    fill_outboxes,
    mount_unmount_events,
    start_redis,
    undelivered,
)

pytest_plugins = ["service_fixtures"]

CLIENT = "service"
DRAIN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def farm(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceFarm]:
    db_url = pg_cluster.create_database("farm")
    # no validation worker processes: they cost a second of CPU per start, and the batches here
    # are validated in the request's thread either way below 100 events (validation.PARALLEL_MIN)
    with ServiceFarm(db_url, 2, tmp_path_factory.mktemp("farm"), validation_workers=0) as started:
        yield started


@pytest.fixture(scope="module")
def outbox_redis() -> Iterator[OutboxRedis]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


def stored_ids(db_url: str, beamlines: list[str]) -> dict[str, list[str]]:
    """Each beamline's stored event ids, in the database's arrival order (``seq``)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT beamline, event_id FROM events WHERE beamline = ANY(%s) ORDER BY seq", (beamlines,)
        ).fetchall()
    out: dict[str, list[str]] = {b: [] for b in beamlines}
    for beamline, event_id in rows:
        out[beamline].append(event_id)
    return out


def count_stored(db_url: str, beamlines: list[str]) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE beamline = ANY(%s)", (beamlines,)).fetchone()
    assert row is not None
    return int(row[0])


def deliver(
    farm: ServiceFarm,
    redis_client: Any,
    events: dict[str, list[Event]],
    *,
    max_batch: int,
    during: Callable[[], None] | None = None,
) -> None:
    """Fill the outboxes, run one Deliverer per beamline (beamline j -> process j mod N) until
    every outbox is drained; ``during()`` runs in this greenlet meanwhile."""
    last_ids = fill_outboxes(redis_client, events)
    deliverers = [
        Deliverer(
            RedisStreamOutbox(redis_client, beamline),
            RestClient(CLIENT, farm.url_for(j), farm.create_token([beamline]), max_batch=max_batch),
        )
        for j, beamline in enumerate(events)
    ]
    greenlets = [gevent.spawn(d.run) for d in deliverers]
    try:
        if during is not None:
            during()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while left := undelivered(redis_client, last_ids, CLIENT):
            dead = [g for g in greenlets if g.dead]
            assert not dead, f"a deliverer ended: {[g.exception for g in dead]}"
            if time.monotonic() > deadline:
                errors = {b: RedisStreamOutbox(redis_client, b).last_error(CLIENT) for b in left}
                pytest.fail(f"outboxes {left} not drained in {DRAIN_TIMEOUT_S:.0f} s; last errors: {errors}")
            gevent.sleep(0.05)
    finally:
        for d in deliverers:
            d.stop()
        gevent.joinall(greenlets, timeout=10)
        gevent.killall([g for g in greenlets if not g.dead], timeout=5)
    for beamline in events:
        assert RedisStreamOutbox(redis_client, beamline).dead_letters(CLIENT) == []


def assert_stored_once_in_order(db_url: str, events: dict[str, list[Event]]) -> None:
    stored = stored_ids(db_url, list(events))
    for beamline, items in events.items():
        expected = [str(e.event_id) for e in items]
        got = stored[beamline]
        lost = set(expected) - set(got)
        assert not lost, f"{beamline}: {len(lost)} of {len(expected)} events lost"
        twice = {event_id: n for event_id, n in Counter(got).items() if n > 1}
        assert not twice, f"{beamline}: stored more than once: {twice}"
        assert len(got) == len(expected), f"{beamline}: {len(got) - len(expected)} unexpected events stored"
        assert got == expected, (
            f"{beamline}: arrival order differs from the outbox order at {inversions(got, expected)}"
        )


def inversions(got: list[str], expected: list[str]) -> list[int]:
    """Positions in ``got`` where an event arrived before one that the outbox holds before it."""
    rank = {event_id: index for index, event_id in enumerate(expected)}
    return [i for i, (a, b) in enumerate(zip(got, got[1:], strict=False)) if rank[b] < rank[a]][:10]


def test_short_scale_run(farm: ServiceFarm, outbox_redis: OutboxRedis) -> None:
    events = mount_unmount_events(["scale-a", "scale-b", "scale-c"], 2000, seed=7)
    deliver(farm, outbox_redis.client(), events, max_batch=200)
    assert_stored_once_in_order(farm.db_url, events)
    assert count_stored(farm.db_url, list(events)) == 2000


def test_kill9_one_process_mid_load(farm: ServiceFarm, outbox_redis: OutboxRedis) -> None:
    beamlines = ["kill-a", "kill-b", "kill-c", "kill-d"]  # a, c -> process 0; b, d -> process 1
    victims = beamlines[1::2]
    events = mount_unmount_events(beamlines, 4000, seed=8)
    victim_total = sum(len(events[b]) for b in victims)
    redis_client = outbox_redis.client()
    url_before, pid_before = farm.urls[1], farm.pids[1]
    seen: dict[str, Any] = {}

    def kill_and_restart() -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while count_stored(farm.db_url, victims) < victim_total // 10:
            assert time.monotonic() < deadline, "the victim's beamlines never started delivering"
            gevent.sleep(0.01)
        farm.kill9(1)
        seen["at_kill"] = count_stored(farm.db_url, victims)
        gevent.sleep(1.0)  # the deliverers keep going: those of process 1 fail and back off
        seen["errors_while_down"] = {
            b: RedisStreamOutbox(redis_client, b).last_error(CLIENT) for b in victims
        }
        farm.restart(1)

    deliver(farm, redis_client, events, max_batch=25, during=kill_and_restart)

    assert 0 < seen["at_kill"] < victim_total, "the kill must happen while process 1 has work left"
    assert all(seen["errors_while_down"].values()), (
        f"the deliverers of the killed process did not notice: {seen['errors_while_down']}"
    )
    assert farm.urls[1] == url_before and farm.pids[1] != pid_before  # a new process, same port
    assert_stored_once_in_order(farm.db_url, events)


def test_identical_replays_to_two_processes_at_once(farm: ServiceFarm) -> None:
    """Why exactly one 201: ``SqlStorage.insert_events`` does not look before it writes. Each
    request runs ``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING`` in its transaction;
    PostgreSQL makes the second insert of an ``event_id`` wait on the first one's uncommitted
    entry in the UNIQUE index, then do nothing and return no row; only then is the stored body read
    back, to tell a replay (200) from a conflict (409). The unique constraint decides, so there is
    no window between a read and a write for two processes to both see "absent"."""
    events = [
        make_event(beamline="replay", occurred_at=stamp(i), sample={"barcode": f"R-{i:03d}"})
        for i in range(50)
    ]
    token = farm.create_token(["replay"])
    senders = 4  # two per process
    barrier = threading.Barrier(senders)
    statuses: list[list[int]] = [[] for _ in range(senders)]
    bodies_ok: list[bool] = []

    def sender(k: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        url = farm.urls[k % 2]
        session.get(url + "/healthz", timeout=10)  # connected before the first race
        for event in events:
            barrier.wait(timeout=30)
            response = session.post(url + "/events", json=event, timeout=30)
            statuses[k].append(response.status_code)
            bodies_ok.append(response.status_code in (200, 201) and response.json()["event"] == event)

    threads = [threading.Thread(target=sender, args=(k,), name=f"replay-{k}") for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a sender hung"
    assert all(len(s) == len(events) for s in statuses), "a sender failed (see the thread's traceback)"

    for index, event in enumerate(events):
        answers = Counter(statuses[k][index] for k in range(senders))
        assert answers == {201: 1, 200: senders - 1}, f"event {index} ({event['event_id']}): {answers}"
    assert all(bodies_ok), "every 200 and 201 answers with the stored event, identical to the one sent"
    stored = stored_ids(farm.db_url, ["replay"])["replay"]
    assert sorted(stored) == sorted(e["event_id"] for e in events)  # each once


def test_serve_as_a_runtime_role_without_ddl_rights(pg_cluster: Any, tmp_path: Any) -> None:
    """The deployment guide's roles: the owner migrates and creates tokens; the processes connect
    as a role that may read and insert events, read tokens and take ``seq`` numbers, and nothing
    else (no CREATE, no UPDATE or DELETE of events)."""
    owner_url = pg_cluster.create_database("farm_roles")
    role = "sampletrack_runtime"
    runtime_url = owner_url.replace("postgres@", f"{role}@", 1)
    farm = ServiceFarm(runtime_url, 1, tmp_path, validation_workers=0, admin_url=owner_url)
    farm.migrate()
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT, INSERT ON events TO {role}")
        conn.execute(f"GRANT SELECT ON tokens, schema_version TO {role}")
        conn.execute(f"GRANT USAGE ON SEQUENCE events_seq_block TO {role}")
    with (
        psycopg.connect(runtime_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE not_allowed (x int)")  # the role really has no DDL rights

    with farm:
        token = farm.create_token(["roles"])
        headers = {"Authorization": f"Bearer {token}"}
        event = make_event(beamline="roles")
        url = farm.urls[0]
        assert requests.post(url + "/events", json=event, headers=headers, timeout=30).status_code == 201
        assert requests.post(url + "/events", json=event, headers=headers, timeout=30).status_code == 200
        mounted = requests.get(url + "/beamlines/roles/mounted", headers=headers, timeout=30)
        assert mounted.status_code == 200 and mounted.json()["mounted"] == event
