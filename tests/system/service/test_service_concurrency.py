"""Concurrent replays over HTTP: two service processes on one database, many clients at once.

Exactly one copy of each event is stored and exactly one client gets ``201`` for it; all the
others get ``200`` (a replay). On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from service_fixtures import issue_token, make_event, stamp

from bliss_sampletrack.service.storage import open_storage

pytest_plugins = ["service_fixtures"]

CLIENTS = 12


def test_concurrent_replays_of_one_event(db_url: str, service_factory: Any) -> None:
    token = issue_token(db_url, ["id23-1"])
    services = [service_factory(db_url), service_factory(db_url)]
    event = make_event()
    barrier = threading.Barrier(CLIENTS)

    def client(index: int) -> int:
        session = requests.Session()
        url = services[index % 2].url("/events")
        headers = {"Authorization": f"Bearer {token}"}
        session.get(services[index % 2].url("/healthz"), timeout=10)  # connect before the race
        barrier.wait(timeout=20)
        return session.post(url, json=event, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(client, range(CLIENTS)))
    assert Counter(statuses) == {201: 1, 200: CLIENTS - 1}
    with open_storage(db_url) as store:
        assert store.count_events() == 1


def test_concurrent_overlapping_batches(db_url: str, service_factory: Any) -> None:
    """Batches sharing events in different orders (a deadlock trap on PostgreSQL)."""
    token = issue_token(db_url, ["id23-1"])
    services = [service_factory(db_url), service_factory(db_url)]
    events = [make_event(occurred_at=stamp(i), sample={"barcode": f"C-{i}"}) for i in range(60)]
    barrier = threading.Barrier(CLIENTS)

    def client(index: int) -> list[dict[str, Any]]:
        shift = index * 5
        batch = events[shift:] + events[:shift]
        url = services[index % 2].url("/events/batch")
        requests.get(services[index % 2].url("/healthz"), timeout=10)
        barrier.wait(timeout=20)
        response = requests.post(
            url, json={"events": batch}, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert response.status_code == 200, response.text
        return list(response.json()["results"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for batch in pool.map(client, range(CLIENTS)) for r in batch]
    created = Counter(r["event_id"] for r in results if r["status"] == 201)
    assert created == {e["event_id"]: 1 for e in events}
    assert Counter(r["status"] for r in results) == {201: len(events), 200: (CLIENTS - 1) * len(events)}
    with open_storage(db_url) as store:
        assert store.count_events() == len(events)
