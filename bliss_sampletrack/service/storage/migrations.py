"""Versioned schema migrations: numbered steps, recorded in a ``schema_version`` table.

Each step has one SQL script per dialect and runs in its own transaction together with the row
that records it, so a failed step leaves the database at the previous version. Both databases
have transactional DDL. Two processes migrating at once are serialised: SQLite by
``BEGIN IMMEDIATE``, PostgreSQL by a transaction-scoped advisory lock; the second one then finds
nothing left to do.

Rules for new steps: append, never edit or renumber a released step; a step must work on a
database that holds data (add columns with defaults, build indexes, ...).

A database whose version is newer than this code knows is refused (:class:`SchemaTooNewError`):
an older service must not write into a schema it does not understand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bliss_sampletrack.core.contract import now_text
from bliss_sampletrack.service.storage.errors import SchemaTooNewError as SchemaTooNewError
from bliss_sampletrack.service.storage.errors import StorageError

if TYPE_CHECKING:
    from bliss_sampletrack.service.storage.base import SqlStorage

log = logging.getLogger(__name__)

#: key of the PostgreSQL advisory lock that serialises migrations ("SAMPLETR" in ASCII)
ADVISORY_LOCK_KEY = 0x53414D504C455452


@dataclass(frozen=True, slots=True)
class Step:
    version: int
    description: str
    sql: dict[str, list[str]] = field(default_factory=dict)  # dialect -> statements


STEPS: tuple[Step, ...] = (
    Step(
        1,
        "events and tokens tables",
        {
            "sqlite": [
                """CREATE TABLE events (
                    seq INTEGER PRIMARY KEY,
                    event_id TEXT NOT NULL UNIQUE,
                    beamline TEXT NOT NULL,
                    barcode TEXT,
                    occurred_us INTEGER NOT NULL,
                    type TEXT NOT NULL,
                    body TEXT NOT NULL,
                    received_at TEXT NOT NULL,
                    token_id TEXT
                )""",
                """CREATE TABLE tokens (
                    token_id TEXT PRIMARY KEY,
                    token_hash TEXT NOT NULL,
                    beamlines TEXT NOT NULL,
                    can_write INTEGER NOT NULL,
                    label TEXT NOT NULL DEFAULT '',
                    created_at TEXT NOT NULL,
                    revoked_at TEXT
                )""",
            ],
            "postgresql": [
                # seq: arrival order, in blocks taken from events_seq_block (see base.py)
                "CREATE SEQUENCE events_seq_block AS BIGINT",
                """CREATE TABLE events (
                    seq BIGINT PRIMARY KEY,
                    event_id TEXT NOT NULL UNIQUE,
                    beamline TEXT NOT NULL,
                    barcode TEXT,
                    occurred_us BIGINT NOT NULL,
                    type TEXT NOT NULL,
                    body TEXT NOT NULL,
                    received_at TEXT NOT NULL,
                    token_id TEXT
                )""",
                """CREATE TABLE tokens (
                    token_id TEXT PRIMARY KEY,
                    token_hash TEXT NOT NULL,
                    beamlines TEXT NOT NULL,
                    can_write BOOLEAN NOT NULL,
                    label TEXT NOT NULL DEFAULT '',
                    created_at TEXT NOT NULL,
                    revoked_at TEXT
                )""",
            ],
        },
    ),
    Step(
        2,
        "indexes for listing, mounted-now and sample history",
        {
            dialect: [
                # GET /events without filters, in time order
                "CREATE INDEX events_time ON events (occurred_us, seq)",
                # GET /events?beamline= and the latest event of a beamline (scanned backwards)
                "CREATE INDEX events_beamline_time ON events (beamline, occurred_us, seq)",
                # GET /samples/{barcode}/history and GET /events?sample=
                "CREATE INDEX events_barcode_time ON events (barcode, occurred_us, seq) "
                "WHERE barcode IS NOT NULL",
            ]
            for dialect in ("sqlite", "postgresql")
        },
    ),
)

LATEST_VERSION = STEPS[-1].version

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def _check_steps() -> None:
    versions = [step.version for step in STEPS]
    if versions != list(range(1, len(STEPS) + 1)):  # pragma: no cover - a programming error
        raise AssertionError(f"migration steps must be numbered 1, 2, 3, ...: {versions}")


_check_steps()


def _version(cur: Any, storage: SqlStorage) -> int:
    cur.execute(storage._sql("SELECT MAX(version) FROM schema_version"))
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def current_version(storage: SqlStorage) -> int:
    """The schema version of ``storage``'s database (0 when it has never been migrated).

    Reads only (no ``CREATE TABLE IF NOT EXISTS``): a runtime role without DDL rights can run
    ``serve --no-migrate`` on a database that its owner migrated."""

    def work(cur: Any) -> int:
        if storage.dialect == "postgresql":
            cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        else:
            cur.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        row = cur.fetchone()
        return _version(cur, storage) if row and row[0] else 0

    return storage._write(work)


def migrate(storage: SqlStorage, target: int = LATEST_VERSION) -> list[int]:
    """Bring the database to ``target``; returns the versions applied, oldest first."""
    applied: list[int] = []
    for step in STEPS:
        if step.version > target:
            break

        def work(cur: Any, step: Step = step) -> bool:
            if storage.dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            cur.execute(_VERSION_TABLE)
            version = _version(cur, storage)
            if version > LATEST_VERSION:
                raise SchemaTooNewError(
                    f"the database {storage.describe()} has schema version {version}, newer than this "
                    f"service knows ({LATEST_VERSION}); upgrade bliss-sampletrack"
                )
            if version >= step.version:
                return False
            if version != step.version - 1:  # pragma: no cover - steps run in order
                raise StorageError(f"schema version {version} cannot be migrated to {step.version}")
            for statement in step.sql[storage.dialect]:
                cur.execute(statement)
            cur.execute(
                storage._sql(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)"
                ),
                (step.version, step.description, now_text()),
            )
            return True

        if storage._write(work):
            log.info("schema migrated to version %d (%s)", step.version, step.description)
            applied.append(step.version)
    if not applied:
        version = current_version(storage)
        if version > LATEST_VERSION:
            raise SchemaTooNewError(
                f"the database {storage.describe()} has schema version {version}, newer than this "
                f"service knows ({LATEST_VERSION}); upgrade bliss-sampletrack"
            )
    return applied


def require_current(storage: SqlStorage) -> None:
    """Raise unless the database is exactly at :data:`LATEST_VERSION`."""
    version = current_version(storage)
    if version < LATEST_VERSION:
        raise StorageError(
            f"the database {storage.describe()} has schema version {version}; this service needs "
            f"{LATEST_VERSION}: run `sampletrack-service migrate --db URL`"
        )
    if version > LATEST_VERSION:
        raise SchemaTooNewError(
            f"the database {storage.describe()} has schema version {version}, newer than this "
            f"service knows ({LATEST_VERSION}); upgrade bliss-sampletrack"
        )
