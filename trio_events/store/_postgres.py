"""The event store in PostgreSQL: many collectors write one database, many readers query it.

Driver: psycopg 3 (the maintained successor of psycopg2, binary wheels, typed) with its
``psycopg_pool.ConnectionPool``, used through its *synchronous* API in trio's worker threads:
every call is one ``trio.to_thread.run_sync`` per batch (never per event), bounded by a
``CapacityLimiter`` as large as the pool, so the event loop never blocks on the database and a
cancelled caller's thread still finishes (or times out) its transaction before the connection
returns to the pool. The asyncio bridge would also work, but it adds a second event loop to every
process for no gain: the work per batch is one transaction, and a thread hop per batch costs
microseconds.

Timeouts: ``connect_timeout`` on every connection, ``statement_timeout`` and
``idle_in_transaction_session_timeout`` on every session, and a bound on the wait for a pooled
connection; any of them, or a database that is down, raises :class:`StoreUnavailableError`,
which the collector turns into 503 with ``Retry-After`` (nothing is acknowledged before COMMIT
returns, so the sender keeps the batch and retries).

Writes: a batch is validated by the same function as SQLite's (``build_rows``), then one
transaction COPYs it (binary) into session-local temporary tables and moves it with
``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING``: the primary key on ``event_id``
makes de-duplication hold across collectors, and a retried batch arriving at two collectors at
once is stored once (the second waits on the first's row locks, then skips). Rows go in batch
order, so two copies of one batch lock keys in the same order; a deadlock between different
overlapping batches is retried.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Final, Self, final

import attrs
import psycopg
import psycopg.errors
import trio
from psycopg_pool import ConnectionPool, PoolTimeout

from trio_events.store._backend import NEW_EVENT_COLUMNS, NewEvent, StoreUnavailableError
from trio_events.store._pg_schema import SCHEMA_VERSION, migrate
from trio_events.store._sqlite import InsertResult, build_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

_EVENT_COLUMNS: Final = (
    "event_id, event_type, source_type, severity, timestamp, timestamp_ns, session_name, "
    "node_id, entity_kind, entity_id, entity_attempt, entity_name, error_type, error_message, "
    "received_ns, json"
)
_EVENT_TYPES: Final = [
    "int8", "bytea", "text", "text", "text", "text", "int8", "text", "text", "text", "text",
    "int8", "text", "text", "text", "int8", "text",
]  # fmt: skip
_TRANSITION_TYPES: Final = ["bytea", "int4", "text", "text", "int8", "text", "text", "int8"]
_TEMP_TABLES: Final = b"""
CREATE TEMP TABLE IF NOT EXISTS incoming_events (
    ord BIGINT, event_id BYTEA, event_type TEXT, source_type TEXT, severity TEXT, timestamp TEXT,
    timestamp_ns BIGINT, session_name TEXT, node_id TEXT, entity_kind TEXT, entity_id TEXT,
    entity_attempt BIGINT, entity_name TEXT, error_type TEXT, error_message TEXT,
    received_ns BIGINT, json TEXT
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS incoming_transitions (
    event_id BYTEA, seq INTEGER, entity_kind TEXT, entity_id TEXT, entity_attempt BIGINT,
    state TEXT, timestamp TEXT, timestamp_ns BIGINT
) ON COMMIT DELETE ROWS;
"""
# One statement: the events not stored yet (NOT EXISTS skips most duplicates cheaply and keeps
# them from using up sequence numbers; ON CONFLICT catches the ones a concurrent transaction is
# inserting), then the transitions of exactly those events, which therefore cannot conflict.
_MOVE: Final = (
    f"WITH inserted AS (INSERT INTO events ({_EVENT_COLUMNS}) "
    f"SELECT {_EVENT_COLUMNS} FROM incoming_events i "
    "WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = i.event_id) "
    "ORDER BY ord ON CONFLICT (event_id) DO NOTHING RETURNING event_id), "
    "moved AS (INSERT INTO transitions SELECT t.* FROM incoming_transitions t "
    "JOIN inserted USING (event_id)) "
    "SELECT count(*) FROM inserted"
)
# A session's last arrival is refreshed at most this often (its row is a point of contention).
_SESSION_REFRESH_NS: Final = 10_000_000_000
_DEADLOCK_RETRIES: Final = 3


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


@final
@attrs.frozen
class PostgresOptions:
    """Pool size and timeouts (seconds) for a PostgreSQL store."""

    pool_size: int = 4
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    acquire_timeout: float = 5.0
    # How long after a sequence number is seen missing the history reader still looks for it
    # (a writer's transaction that took it may commit later); beyond every writer's timeouts.
    reader_horizon: float = 300.0

    def __attrs_post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {self.pool_size}.")
        for name in ("connect_timeout", "statement_timeout", "acquire_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}.")

    def connect_kwargs(self) -> dict[str, Any]:
        ms = int(self.statement_timeout * 1000)
        return {
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": "trio-events",
            "options": f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}",
        }


def _unavailable(where: str, exc: BaseException) -> StoreUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailableError(f"The PostgreSQL store at {where} is unavailable: {reason}.")


def _clean(row: tuple[object, ...]) -> tuple[object, ...]:
    # PostgreSQL text cannot hold NUL; the JSON column keeps it escaped, the extracted columns
    # get U+FFFD instead.
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_TEMP_TABLES)
    conn.commit()


@final
class PostgresStore:
    """The :class:`~trio_events.store._backend.Store` on a PostgreSQL server."""

    def __init__(self, url: str, options: PostgresOptions, pool: ConnectionPool[Any]) -> None:
        self._url = url
        self._where = redact(url)
        self._options = options
        self._pool = pool
        self._limiter = trio.CapacityLimiter(options.pool_size)

    @classmethod
    async def open(cls, url: str, options: PostgresOptions) -> Self:
        """Connect, create or migrate the schema; StoreUnavailableError if it cannot connect."""
        return await trio.to_thread.run_sync(cls.open_sync, url, options)

    @classmethod
    def open_sync(cls, url: str, options: PostgresOptions) -> Self:
        where = redact(url)
        pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=options.pool_size,
            kwargs=options.connect_kwargs(),
            configure=_configure,
            check=ConnectionPool.check_connection,
            timeout=options.acquire_timeout,
            open=False,
            name="trio-events",
        )
        try:
            pool.open(wait=True, timeout=options.connect_timeout)
            with pool.connection() as conn:
                migrate(conn, where)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            pool.close()
            raise _unavailable(where, exc) from None
        except BaseException:
            pool.close()
            raise
        return cls(url, options, pool)

    @property
    def path(self) -> str:
        return self._where

    async def insert_batch(self, events: Sequence[object]) -> InsertResult:
        return await trio.to_thread.run_sync(self.insert_batch_sync, events, limiter=self._limiter)

    def insert_batch_sync(self, events: Sequence[object]) -> InsertResult:
        """Store a batch's valid events in one transaction; the invalid ones are refused alone
        (the same validation as SQLite's). Raises StoreUnavailableError, storing nothing, when
        the server cannot be reached."""
        event_rows, transition_rows, refused = build_rows(events)
        if not event_rows:
            return InsertResult(0, 0, tuple(refused))
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                with self._pool.connection() as conn:
                    inserted = self._write(conn, event_rows, transition_rows)
                return InsertResult(inserted, len(event_rows) - inserted, tuple(refused))
            except psycopg.errors.TransactionRollback as exc:  # deadlock, serialization
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise _unavailable(self._where, exc) from None
            except (PoolTimeout, psycopg.OperationalError) as exc:
                raise _unavailable(self._where, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _write(
        conn: psycopg.Connection[Any],
        event_rows: list[tuple[object, ...]],
        transition_rows: list[list[tuple[object, ...]]],
    ) -> int:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY incoming_events FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_EVENT_TYPES)
                unclean = []
                for ordinal, row in enumerate(event_rows):
                    if "\\u0000" in row[-1]:  # type: ignore[operator]
                        row = _clean(row)
                        unclean.append(ordinal)
                    copy.write_row((ordinal, *row))
            for ordinal in unclean:
                transition_rows[ordinal] = [_clean(t) for t in transition_rows[ordinal]]
            if any(transition_rows):
                with cur.copy("COPY incoming_transitions FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_TRANSITION_TYPES)
                    write = copy.write_row
                    seen: set[object] = set()
                    for row, per_event in zip(event_rows, transition_rows, strict=True):
                        if row[0] in seen:
                            continue  # an id repeated in the batch: its first copy is stored
                        seen.add(row[0])
                        for transition in per_event:
                            write(transition)
            moved = cur.execute(_MOVE.encode()).fetchone()
            inserted = int(moved[0]) if moved else 0
            received_ns = int(event_rows[0][14]) if event_rows else 0  # type: ignore[call-overload]
            names = sorted({str(row[6]) for row in event_rows})
            if names:
                fresh = cur.execute(
                    "SELECT session_name FROM sessions "
                    "WHERE session_name = ANY(%s) AND last_received_ns >= %s",
                    (names, received_ns - _SESSION_REFRESH_NS),
                ).fetchall()
                stale = [n for n in names if n not in {r[0] for r in fresh}]
                if stale:  # sorted, so concurrent batches lock session rows in one order
                    cur.execute(
                        "INSERT INTO sessions SELECT unnest(%s::text[]), %s, %s "
                        "ON CONFLICT (session_name) DO UPDATE SET last_received_ns = "
                        "greatest(sessions.last_received_ns, excluded.last_received_ns)",
                        (stale, received_ns, received_ns),
                    )
        return inserted

    async def prune(self, older_than_ns: int) -> int:
        return await trio.to_thread.run_sync(self.prune_sync, older_than_ns, limiter=self._limiter)

    def prune_sync(self, older_than_ns: int) -> int:
        """Delete whole sessions whose last event arrived before ``older_than_ns``."""
        deleted = 0
        try:
            with self._pool.connection() as conn:
                names = conn.execute(
                    "SELECT session_name FROM sessions WHERE last_received_ns < %s "
                    "ORDER BY session_name",
                    (older_than_ns,),
                ).fetchall()
                conn.commit()
                for (name,) in names:
                    with conn.transaction():
                        # Big sessions take long to delete; the limit still bounds it.
                        conn.execute("SET LOCAL statement_timeout = '10min'")
                        row = conn.execute(
                            "SELECT last_received_ns FROM sessions WHERE session_name = %s "
                            "FOR UPDATE",
                            (name,),
                        ).fetchone()
                        if row is None or row[0] >= older_than_ns:
                            continue  # written to since, or pruned by another collector
                        conn.execute(
                            "DELETE FROM transitions t USING events e "
                            "WHERE e.session_name = %s AND t.event_id = e.event_id",
                            (name,),
                        )
                        conn.execute("DELETE FROM events WHERE session_name = %s", (name,))
                        conn.execute("DELETE FROM sessions WHERE session_name = %s", (name,))
                        deleted += 1
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise _unavailable(self._where, exc) from None
        return deleted

    def count_sync(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._pool.close()

    async def aclose(self) -> None:
        """Close the pool; a call still in flight finishes its transaction, then finds it closed."""
        await trio.to_thread.run_sync(self._pool.close)


@final
class PostgresReader:
    """A read-only connection for queries and the history index.

    New events follow ``events.seq``. Writers take sequence numbers before they commit, so a
    number below the largest seen may still appear: numbers skipped over are remembered and
    looked for again on later reads for ``reader_horizon`` seconds (longer than any writer's
    transaction can last, given its timeouts); numbers taken by duplicates or rolled back
    batches never appear and are forgotten then.
    """

    _MAX_GAP: Final = 100_000  # a jump this large is rows deleted, not writes in flight

    def __init__(self, url: str, options: PostgresOptions | None = None) -> None:
        self._options = options or PostgresOptions()
        self._where = redact(url)
        self._url = url
        self._conn = self._connect()
        try:
            self._check_schema()
        except BaseException:
            self._conn.close()
            raise
        self._after = 0
        self._gaps: dict[int, float] = {}
        self._rescan = False

    def _check_schema(self) -> None:
        found = self.fetchall("SELECT to_regclass('trio_events_schema') IS NOT NULL")
        if not found[0][0]:
            raise ValueError(f"{self._where} has no trio-events event store yet.")
        version = self.fetchall("SELECT version FROM trio_events_schema")[0][0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"The event store at {self._where} has schema version {version}, newer than "
                f"this trio-events understands ({SCHEMA_VERSION}); upgrade trio-events."
            )

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(self._url, autocommit=True, **self._options.connect_kwargs())
        except psycopg.OperationalError as exc:
            raise _unavailable(self._where, exc) from None

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        if self._conn.closed:  # lost with the server; a restarted server is reached again
            self._conn = self._connect()
        try:
            return self._conn.execute(sql.replace("?", "%s").encode(), params).fetchall()
        except psycopg.OperationalError as exc:
            if self._conn.broken:
                self._conn.close()
            raise _unavailable(self._where, exc) from None

    def read_new(self, limit: int) -> list[NewEvent]:
        if self._rescan:
            self._rescan = False
            found = self._look_for_gaps()
            if found:
                return found
        rows = self.fetchall(
            f"SELECT seq, {NEW_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (self._after, limit),
        )
        if not rows:
            self._rescan = True
            return []
        now = time.monotonic()
        expected = self._after + 1 if self._after else rows[0][0]
        for seq, *_ in rows:
            if seq - expected <= self._MAX_GAP:
                self._gaps.update(dict.fromkeys(range(expected, seq), now))
            expected = seq + 1
        self._after = rows[-1][0]
        return [row[1:] for row in rows]

    def _look_for_gaps(self) -> list[NewEvent]:
        deadline = time.monotonic() - self._options.reader_horizon
        self._gaps = {seq: seen for seq, seen in self._gaps.items() if seen > deadline}
        if not self._gaps:
            return []
        rows = self.fetchall(
            f"SELECT seq, {NEW_EVENT_COLUMNS} FROM events WHERE seq = ANY(?) ORDER BY seq",
            (list(self._gaps),),
        )
        for seq, *_ in rows:
            del self._gaps[seq]
        return [row[1:] for row in rows]

    def close(self) -> None:
        self._conn.close()
