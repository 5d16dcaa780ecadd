"""When the database cannot answer: ``503`` with ``Retry-After`` (the plugin retries), then recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from service_fixtures import issue_token, make_event

pytest_plugins = ["service_fixtures"]


def post(service: Any, token: str, event: dict[str, Any]) -> requests.Response:
    return requests.post(
        service.url("/events"), json=event, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_sqlite_locked_is_503_then_recovers(tmp_path: Path, service_factory: Any) -> None:
    path = tmp_path / "locked.db"
    token = issue_token(f"sqlite:///{path}", ["id23-1"])
    service = service_factory(f"sqlite:///{path}?timeout=0.3")
    event = make_event()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        response = post(service, token, event)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert post(service, token, event).status_code == 201  # the retry stores it
    assert "storage unavailable on POST /api/v1/events" in service.log_text()


def test_postgresql_lost_connections_are_503_then_reconnect(pg_cluster: Any, service_factory: Any) -> None:
    db_url = pg_cluster.create_database("resilience")
    token = issue_token(db_url, ["id23-1"])
    service = service_factory(db_url, "--threads", "1")  # one worker thread: one connection to lose
    assert post(service, token, make_event()).status_code == 201
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'resilience' AND application_name = 'sampletrack'"
        ).fetchall()
    assert killed
    # the dead connection is noticed on first use and replaced: the request still succeeds
    assert post(service, token, make_event()).status_code == 201
    assert "database connection lost" in service.log_text()
    # a read after losing the connection again
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'resilience' AND application_name = 'sampletrack'"
        )
    response = requests.get(service.url("/events"), headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200
    assert len(response.json()["events"]) == 2


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-folder/x.db"])
def test_serve_refuses_a_database_it_cannot_open(url: str, tmp_path: Path) -> None:
    from service_fixtures import start_service

    with pytest.raises(RuntimeError, match="does not exist"):
        start_service(url, tmp_path)
