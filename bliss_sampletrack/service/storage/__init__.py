"""Storage backends of the tracking service, chosen by the database URL.

``sqlite:///path`` (or a plain path) -> :class:`SqliteStorage`;
``postgresql://...`` (or ``postgres://``) -> :class:`PostgresStorage` (psycopg 3, imported only
then, so a SQLite-only installation does not need it).
"""

from __future__ import annotations

from bliss_sampletrack.service.storage.base import (
    EventQuery,
    InsertOutcome,
    InsertResult,
    NewEvent,
    SqlStorage,
    StorageError,
    StorageUnavailable,
    StoredEvent,
    TokenRecord,
    redact_url,
)

__all__ = [
    "EventQuery",
    "InsertOutcome",
    "InsertResult",
    "NewEvent",
    "SqlStorage",
    "StorageError",
    "StorageUnavailable",
    "StoredEvent",
    "TokenRecord",
    "open_storage",
    "redact_url",
]


def open_storage(url: str) -> SqlStorage:
    """The storage for a database URL (no connection is made yet)."""
    if url.startswith(("postgresql://", "postgres://")):
        from bliss_sampletrack.service.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    if url.startswith("sqlite:") or "://" not in url:
        from bliss_sampletrack.service.storage.sqlite import SqliteStorage

        return SqliteStorage(url)
    scheme = url.split("://", 1)[0]
    raise StorageError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path/file.db or postgresql://host/db"
    )
