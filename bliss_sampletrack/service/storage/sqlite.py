"""SQLite backend (the default): one database file, WAL mode, one connection per thread.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, or a plain file path.
Query options: ``?synchronous=FULL|NORMAL`` (default FULL: a ``201`` means the event is on disk,
which the plugin relies on before it drops the event from its outbox) and ``?timeout=SECONDS``
(how long a writer waits for the lock, default 10).

Caveats:
- Writers are serialised by SQLite (``BEGIN IMMEDIATE``); readers are not blocked (WAL).
- Several service processes may share one file on a local disk; never on a network file system.
- In-memory databases are refused: every thread would see its own empty database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bliss_sampletrack.service.storage.base import SEQ_BLOCK, SqlStorage, StorageError, StorageUnavailable

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


def sqlite_path(url: str) -> tuple[Path, dict[str, str]]:
    """The file path and options of a ``sqlite:///`` URL (or of a plain path)."""
    if "://" not in url:
        return Path(url), {}
    if not url.startswith("sqlite:///"):
        raise StorageError(
            f"SQLite URL {url!r} must look like sqlite:///relative/file.db or sqlite:////absolute/file.db"
        )
    parts = urlsplit(url)
    path = parts.path[1:]
    if not path or path == ":memory:":
        raise StorageError(f"SQLite URL {url!r} names no file; in-memory databases are not supported")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = sorted(set(options) - {"synchronous", "timeout"})
    if unknown:
        raise StorageError(f"SQLite URL {url!r}: unknown option(s) {unknown}; known: synchronous, timeout")
    return Path(path), options


class SqliteStorage(SqlStorage):
    dialect = "sqlite"
    driver_errors = (sqlite3.Error,)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path, options = sqlite_path(url)
        self.synchronous = options.get("synchronous", "FULL").upper()
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise StorageError(f"SQLite option synchronous must be one of {SYNCHRONOUS_MODES}")
        try:
            self.timeout = float(options.get("timeout", "10"))
        except ValueError:
            raise StorageError("SQLite option timeout must be a number of seconds") from None
        if not self.path.parent.is_dir():
            raise StorageError(
                f"SQLite database {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist"
            )

    def _connect(self) -> sqlite3.Connection:
        try:
            # one connection per thread; check_same_thread=False only so that close() may close
            # every thread's connection at shutdown
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open SQLite database {str(self.path)!r}: {exc}") from None
        if str(mode).lower() != "wal":
            raise StorageError(f"SQLite database {str(self.path)!r} refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")  # one of SYNCHRONOUS_MODES
        return conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
        cur = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            cur.close()

    def _is_retryable(self, exc: BaseException) -> bool:
        return False  # SQLite has no deadlocks: writers queue on the lock (busy timeout)

    def _as_unavailable(self, exc: BaseException) -> StorageUnavailable | None:
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc).lower()
            if "locked" in text or "busy" in text or "unable to open" in text or "disk i/o" in text:
                return StorageUnavailable(f"SQLite database busy or unreadable: {exc}")
        return None

    def _is_broken(self, conn: Any) -> bool:
        return False

    def _bulk_insert(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(self._INSERT.replace(" RETURNING seq", ""), rows)

    def _allocate_blocks(self, cur: Any, count: int) -> list[int]:
        # under BEGIN IMMEDIATE: no other writer can take the same numbers
        cur.execute("SELECT MAX(seq) FROM events")
        last = cur.fetchone()[0]
        start = 1 if last is None else int(last) // SEQ_BLOCK + 1
        return list(range(start, start + count))
