"""PostgreSQL backend (``postgresql://user:password@host:port/database``), with psycopg 3.

Each thread keeps one connection in autocommit mode; writes run in explicit transactions
(READ COMMITTED). A deadlock between two concurrent batches that share events is resolved by
PostgreSQL aborting one of them, which is then re-run (see ``SqlStorage._write``).

Caveats:
- A lost connection (server restart) answers ``503`` once; the next request reconnects.
- The URL may hold a password: it is only ever logged through ``redact_url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bliss_sampletrack.service.storage.base import SqlStorage, StorageUnavailable, redact_url

CONNECT_TIMEOUT = 10  # seconds


class PostgresStorage(SqlStorage):
    dialect = "postgresql"
    driver_errors = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        super().__init__(url)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="sampletrack"
            )
        except psycopg.OperationalError as exc:
            # the driver's message names host and port, never the password
            raise StorageUnavailable(f"cannot connect to {redact_url(self.url)}: {exc}".strip()) from None

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _transaction(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Cursor[Any]]:
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure)

    def _as_unavailable(self, exc: BaseException) -> StorageUnavailable | None:
        if isinstance(
            exc,
            psycopg.OperationalError
            | pg_errors.DeadlockDetected
            | pg_errors.SerializationFailure
            | pg_errors.AdminShutdown
            | pg_errors.CannotConnectNow,
        ):
            return StorageUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}")
        return None

    def _is_broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    _INSERT_MANY = (
        "INSERT INTO events "
        "(seq, event_id, beamline, barcode, occurred_us, type, body, received_at, token_id) "
        "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], "
        "%s::text[], %s::text[], %s::text[]) "
        "AS t(seq, event_id, beamline, barcode, occurred_us, type, body, received_at, token_id) "
        "ORDER BY event_id ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )

    def _insert_new(self, cur: Any, rows: list[tuple[Any, ...]]) -> set[str]:
        # one statement for the whole batch; ORDER BY event_id keeps the lock order (see base.py)
        columns = [list(column) for column in zip(*rows, strict=True)]
        cur.execute(self._INSERT_MANY, columns)
        return {str(row[0]) for row in cur.fetchall()}

    def _stored_bodies(self, cur: Any, event_ids: list[str]) -> dict[str, str]:
        if not event_ids:
            return {}
        cur.execute("SELECT event_id, body FROM events WHERE event_id = ANY(%s)", (event_ids,))
        return {str(event_id): str(body) for event_id, body in cur.fetchall()}

    def _allocate_blocks(self, cur: Any, count: int) -> list[int]:
        cur.execute("SELECT nextval('events_seq_block') FROM generate_series(1, %s)", (count,))
        return sorted(int(row[0]) for row in cur.fetchall())

    def _bulk_insert(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        columns = "seq, event_id, beamline, barcode, occurred_us, type, body, received_at, token_id"
        with cur.copy(f"COPY events ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
