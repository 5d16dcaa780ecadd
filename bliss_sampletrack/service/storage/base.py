"""The storage interface of the tracking service, and the SQL shared by its backends.

One class, :class:`SqlStorage`, holds every query; a backend (SQLite, PostgreSQL) only says how
to connect, how to run a write transaction and which of its errors mean "try again later".
SQL is always parameterised: values never enter the SQL text (the only text built at run time is
a list of ``?`` placeholders whose length depends on the number of values).

Idempotency rests on the database, not on a check-then-insert in Python: ``events.event_id`` has
a UNIQUE constraint and each insert is ``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING``.
When nothing is returned the stored row is read back (in the same transaction) and compared with
the new body: identical -> a replay, different -> a conflict. Concurrent replays of one event from
several threads or processes therefore store exactly one row: SQLite serialises writers
(``BEGIN IMMEDIATE``); PostgreSQL makes the second insert wait for the first transaction and then
do nothing.

Deadlocks: within a transaction the rows are inserted in ``event_id`` order, so two concurrent
batches that share events wait for each other in one direction only (on PostgreSQL, inserting
in arrival order deadlocked as soon as two batches held the same events in different orders).
Arrival order is kept in ``seq`` all the same: each transaction takes a block of
:data:`SEQ_BLOCK` numbers (PostgreSQL: a sequence; SQLite: after the largest ``seq``, under the
write lock) and event ``i`` of the batch gets ``block * SEQ_BLOCK + i``.

Caveats:
- Times are stored as integer microseconds since the epoch (``occurred_us``), which both databases
  index and compare identically; the event itself is kept verbatim as canonical JSON (``body``).
- Ordering is ``(occurred_us, seq)``: ``seq`` (insertion order) breaks ties between events of the
  same microsecond, so pagination is stable.
- Each thread gets its own connection (the WSGI server's worker threads are long-lived).
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from bliss_sampletrack.core.contract import now_text
from bliss_sampletrack.service.storage import migrations
from bliss_sampletrack.service.storage.errors import StorageError as StorageError
from bliss_sampletrack.service.storage.errors import StorageUnavailable as StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how many times a write transaction is re-run after a deadlock or serialisation failure
WRITE_ATTEMPTS = 4
#: ``seq`` numbers per block: event ``i`` of a transaction's block ``b`` gets ``b * SEQ_BLOCK + i``
SEQ_BLOCK = 1024


class InsertOutcome(StrEnum):
    CREATED = "created"
    REPLAY = "replay"  # same event_id, identical body: nothing stored
    CONFLICT = "conflict"  # same event_id, different body: nothing stored


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated event, ready to store. ``body`` is its canonical JSON text."""

    event_id: str  # canonical (lower-case) UUID text: the idempotency key
    beamline: str
    barcode: str | None
    occurred_us: int
    type: str
    body: str


@dataclass(frozen=True, slots=True)
class InsertResult:
    outcome: InsertOutcome
    #: the stored event's canonical JSON (the new one when created, the earlier one otherwise)
    stored_body: str


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of ``GET /events``. ``beamlines=None`` means every beamline."""

    beamlines: tuple[str, ...] | None = None
    barcode: str | None = None
    since_us: int | None = None  # inclusive
    until_us: int | None = None  # exclusive
    after: tuple[int, int] | None = None  # (occurred_us, seq) of the last event already seen
    limit: int = 100


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    occurred_us: int
    body: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored API token: never the token itself, only its SHA-256."""

    token_id: str
    token_hash: str
    beamlines: tuple[str, ...]  # empty: every beamline (read-only tokens only)
    can_write: bool
    label: str
    created_at: str
    revoked_at: str | None


class SqlStorage(ABC):
    """Every query of the service; subclasses provide connections and transactions.

    SQL is written with ``?`` placeholders; :meth:`_sql` adapts them to the driver.
    """

    #: "sqlite" or "postgresql": selects the migration steps
    dialect: str = ""
    #: the driver's exception base classes (sqlite3.Error, psycopg.Error)
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    # --- backend hooks -------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any:
        """A new DB-API connection, in autocommit mode (transactions are explicit)."""

    @abstractmethod
    def _transaction(self, conn: Any) -> Any:
        """Context manager: a write transaction on ``conn``, yielding a cursor."""

    @abstractmethod
    def _is_retryable(self, exc: BaseException) -> bool:
        """True for a deadlock or serialisation failure: the transaction may simply be re-run."""

    @abstractmethod
    def _as_unavailable(self, exc: BaseException) -> StorageUnavailable | None:
        """The driver error as :class:`StorageUnavailable` when it means "try later", else None."""

    @abstractmethod
    def _is_broken(self, conn: Any) -> bool:
        """True when ``conn`` cannot be used any more (closed by the server, ...)."""

    @abstractmethod
    def _bulk_insert(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """Insert many event rows at once (benchmark and imports; no idempotency answers)."""

    @abstractmethod
    def _allocate_blocks(self, cur: Any, count: int) -> list[int]:
        """``count`` unused ``seq`` blocks, increasing (inside the write transaction)."""

    def _insert_new(self, cur: Any, rows: list[tuple[Any, ...]]) -> set[str]:
        """Insert the rows, in the given order, except those whose event_id is stored; returns
        the event_ids inserted. One statement per row here; PostgreSQL does it in one."""
        insert = self._sql(self._INSERT)
        created = set()
        for row in rows:
            cur.execute(insert, row)
            if cur.fetchone() is not None:
                created.add(row[1])
        return created

    def _stored_bodies(self, cur: Any, event_ids: list[str]) -> dict[str, str]:
        """The stored body of each of ``event_ids`` (inside the write transaction)."""
        select = self._sql("SELECT body FROM events WHERE event_id = ?")
        bodies = {}
        for event_id in event_ids:
            cur.execute(select, (event_id,))
            row = cur.fetchone()
            if row is not None:
                bodies[event_id] = str(row[0])
        return bodies

    def _seqs(self, cur: Any, count: int) -> list[int]:
        """``count`` increasing, unused ``seq`` values for this transaction's events."""
        blocks = self._allocate_blocks(cur, -(-count // SEQ_BLOCK))
        return [blocks[i // SEQ_BLOCK] * SEQ_BLOCK + i % SEQ_BLOCK for i in range(count)]

    def _sql(self, sql: str) -> str:
        return sql

    def describe(self) -> str:
        """The URL with any password hidden, for logs."""
        return redact_url(self.url)

    # --- connections ---------------------------------------------------------------------------
    def _conn(self) -> Any:
        if self._closed:
            raise StorageError("the storage is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._is_broken(conn):
            self._forget(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _forget(self, conn: Any) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        try:
            conn.close()
        except self.driver_errors as exc:
            log.debug("closing a broken connection failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Close every connection (of every thread)."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except self.driver_errors as exc:
                log.debug("closing a connection failed: %s", type(exc).__name__)

    def __enter__(self) -> SqlStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn the driver's "not now" errors into :class:`StorageUnavailable`."""
        try:
            yield
        except self.driver_errors as exc:
            unavailable = self._as_unavailable(exc)
            if unavailable is None:
                raise
            conn = getattr(self._local, "conn", None)
            if conn is not None and self._is_broken(conn):
                self._forget(conn)
            raise unavailable from exc

    def _write(self, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` in a write transaction, re-running it after a deadlock, or once on
        a new connection when the old one turned out to be dead (a database restart).

        Re-running is safe: ``work`` is idempotent (an insert that did commit before the
        connection died is then a replay).
        """
        with self._errors():
            reconnected = False
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                conn = self._conn()
                try:
                    with self._transaction(conn) as cur:
                        return work(cur)
                except self.driver_errors as exc:
                    if self._is_broken(conn) and not reconnected:
                        log.info("database connection lost (%s); reconnecting", type(exc).__name__)
                        self._forget(conn)
                        reconnected = True
                        continue
                    if attempt == WRITE_ATTEMPTS or not self._is_retryable(exc):
                        raise
                    log.info("write transaction re-run after %s (attempt %d)", type(exc).__name__, attempt)
            raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._errors():
            for attempt in (1, 2):
                conn = self._conn()
                cur = conn.cursor()
                try:
                    cur.execute(self._sql(sql), tuple(params))
                    return list(cur.fetchall())
                except self.driver_errors as exc:
                    if attempt == 2 or not self._is_broken(conn):
                        raise
                    log.info("database connection lost (%s); reconnecting", type(exc).__name__)
                    self._forget(conn)
                finally:
                    if not self._is_broken(conn):
                        cur.close()
            raise AssertionError("unreachable")  # pragma: no cover

    # --- schema --------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the missing migration steps; returns the versions applied (maybe none)."""
        return migrations.migrate(self)

    def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""
        return migrations.current_version(self)

    # --- events --------------------------------------------------------------------------------
    _INSERT = (
        "INSERT INTO events "
        "(seq, event_id, beamline, barcode, occurred_us, type, body, received_at, token_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING RETURNING seq"
    )

    def insert_events(self, events: Sequence[NewEvent], token_id: str | None = None) -> list[InsertResult]:
        """Store ``events`` as if one after the other, in one transaction; one result per event.

        A later duplicate of an ``event_id`` in the same list is a replay or a conflict of the
        first one, exactly as if the events had come one by one.
        """
        if not events:
            return []
        first: dict[str, int] = {}
        for index, event in enumerate(events):
            first.setdefault(event.event_id, index)

        def work(cur: Any) -> list[InsertResult]:
            received = now_text()
            seqs = self._seqs(cur, len(events))
            rows = []
            for event_id in sorted(first):  # lock order: see the module docstring
                event = events[first[event_id]]
                rows.append(
                    (
                        seqs[first[event_id]],
                        event_id,
                        event.beamline,
                        event.barcode,
                        event.occurred_us,
                        event.type,
                        event.body,
                        received,
                        token_id,
                    )
                )
            created = self._insert_new(cur, rows)
            earlier = self._stored_bodies(cur, [event_id for event_id in first if event_id not in created])
            outcome: dict[str, tuple[bool, str]] = {}  # event_id -> (created now, stored body)
            for event_id, index in first.items():
                if event_id in created:
                    outcome[event_id] = (True, events[index].body)
                elif event_id in earlier:
                    outcome[event_id] = (False, earlier[event_id])
                else:  # pragma: no cover - the conflicting row cannot vanish: no deletes
                    raise StorageError(f"event {event_id} conflicts but cannot be read back")
            results = []
            for index, event in enumerate(events):
                is_new, stored = outcome[event.event_id]
                if is_new and first[event.event_id] == index:
                    results.append(InsertResult(InsertOutcome.CREATED, stored))
                elif stored == event.body:
                    results.append(InsertResult(InsertOutcome.REPLAY, stored))
                else:
                    results.append(InsertResult(InsertOutcome.CONFLICT, stored))
            return results

        return self._write(work)

    def bulk_load(self, events: Iterable[NewEvent], chunk: int = 20_000) -> int:
        """Store many new events fast (one transaction per chunk); returns how many were given.

        For benchmarks and imports: no replay/conflict answers, and on PostgreSQL (COPY) an
        event_id that is already stored fails the chunk.
        """
        total = 0
        received = now_text()
        batch: list[tuple[Any, ...]] = []

        def flush(rows: list[tuple[Any, ...]]) -> None:
            def work(cur: Any) -> None:
                seqs = self._seqs(cur, len(rows))
                self._bulk_insert(cur, [(seq, *row) for seq, row in zip(seqs, rows, strict=True)])

            self._write(work)

        for event in events:
            batch.append(
                (
                    event.event_id,
                    event.beamline,
                    event.barcode,
                    event.occurred_us,
                    event.type,
                    event.body,
                    received,
                    None,
                )
            )
            if len(batch) >= chunk:
                flush(batch)
                total += len(batch)
                batch = []
        if batch:
            flush(batch)
            total += len(batch)
        self.analyze()
        return total

    def analyze(self) -> None:
        """Refresh the planner's statistics (after a bulk load)."""
        self._write(lambda cur: cur.execute("ANALYZE"))

    def query_events(self, query: EventQuery) -> list[StoredEvent]:
        """Events matching ``query``, oldest first, at most ``query.limit + 1`` of them.

        The extra event tells the caller whether another page exists.
        """
        where: list[str] = []
        params: list[Any] = []
        if query.beamlines is not None:
            if len(query.beamlines) == 1:
                where.append("beamline = ?")
            else:
                where.append(f"beamline IN ({', '.join('?' * len(query.beamlines))})")
            params.extend(query.beamlines)
        if query.barcode is not None:
            where.append("barcode = ?")
            params.append(query.barcode)
        if query.after is not None:
            after_us, after_seq = query.after
            # the range term uses the index; the OR only filters the equal-time rows
            where.append("occurred_us >= ? AND (occurred_us > ? OR seq > ?)")
            params.extend((after_us, after_us, after_seq))
        if query.since_us is not None:
            where.append("occurred_us >= ?")
            params.append(query.since_us)
        if query.until_us is not None:
            where.append("occurred_us < ?")
            params.append(query.until_us)
        sql = "SELECT seq, occurred_us, body FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY occurred_us, seq LIMIT ?"
        params.append(query.limit + 1)
        return [StoredEvent(int(seq), int(us), str(body)) for seq, us, body in self._read(sql, params)]

    def latest_event(self, beamline: str) -> tuple[str, str] | None:
        """``(type, body)`` of the beamline's latest event (by ``occurred_at``, then arrival)."""
        rows = self._read(
            "SELECT type, body FROM events WHERE beamline = ? ORDER BY occurred_us DESC, seq DESC LIMIT 1",
            (beamline,),
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def history(self, barcode: str, beamlines: tuple[str, ...] | None = None) -> list[str]:
        """Every event of one barcode (optionally only on ``beamlines``), oldest first."""
        sql = "SELECT body FROM events WHERE barcode = ?"
        params: list[Any] = [barcode]
        if beamlines is not None:
            sql += f" AND beamline IN ({', '.join('?' * len(beamlines))})"
            params.extend(beamlines)
        sql += " ORDER BY occurred_us, seq"
        return [str(row[0]) for row in self._read(sql, params)]

    def count_events(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    # --- tokens --------------------------------------------------------------------------------
    def add_token(self, record: TokenRecord) -> None:
        sql = self._sql(
            "INSERT INTO tokens (token_id, token_hash, beamlines, can_write, label, created_at, revoked_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            record.token_id,
            record.token_hash,
            json.dumps(list(record.beamlines)),
            record.can_write,
            record.label,
            record.created_at,
            record.revoked_at,
        )
        self._write(lambda cur: cur.execute(sql, params))

    _TOKEN_COLUMNS = "token_id, token_hash, beamlines, can_write, label, created_at, revoked_at"

    @staticmethod
    def _token(row: tuple[Any, ...]) -> TokenRecord:
        token_id, token_hash, beamlines, can_write, label, created_at, revoked_at = row
        return TokenRecord(
            str(token_id),
            str(token_hash),
            tuple(json.loads(beamlines)),
            bool(can_write),
            str(label),
            str(created_at),
            None if revoked_at is None else str(revoked_at),
        )

    def get_token(self, token_id: str) -> TokenRecord | None:
        rows = self._read(f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,))
        return self._token(rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._read(f"SELECT {self._TOKEN_COLUMNS} FROM tokens ORDER BY created_at, token_id")
        return [self._token(row) for row in rows]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when no such (unrevoked) token exists."""
        sql = self._sql("UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL")

        def work(cur: Any) -> bool:
            cur.execute(sql, (now_text(), token_id))
            return bool(cur.rowcount)

        return self._write(work)


def redact_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``: safe for logs and errors."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))
