"""The PostgreSQL store's schema, created and migrated by the program itself.

``trio_events_schema`` holds one row: the version of the schema in the database. Opening a store
runs, under a transaction-scoped advisory lock (so K collectors starting at once migrate once),
every migration above that version in order; a database whose version is above
:data:`SCHEMA_VERSION` was written by a newer trio-events and is refused with one sentence.

Columns mirror the SQLite store's (see ``_sqlite.py``) so queries read the same from both, plus:

- ``events.seq``: an identity column, the append order the history index follows (SQLite's rowid);
- every text column is ``COLLATE "C"`` so sorting and grouping agree with SQLite's byte order
  whatever the database's locale;
- only the indexes the queries use (every index costs each of K collectors' inserts): the
  unique keys, ``seq`` for the history index, the entity for timelines and ``query recent``,
  the session for retention, and on ``transitions`` the entity and, partial, the failed task
  attempts (``query failed``: the only question by state, so the index holds only those rows);
  counts per type scan the table either way, as they do in SQLite;
- ``sessions``: one row per Ray session with its first and last arrival, so ``--retention``
  finds old sessions by index and deletes them whole (version 2).

Retention deletes by session rather than by time partition: de-duplication needs one unique key
on ``event_id`` across the whole table, which PostgreSQL's partitioned tables only allow when the
partition key is part of it, and a retried event must collide with its first copy whatever its
arrival time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import psycopg

# Any fixed number distinguishes our migration lock from other advisory locks in the database.
_MIGRATION_LOCK: Final = 0x7472696F_65767473 & 0x7FFFFFFFFFFFFFFF

_T: Final = 'TEXT COLLATE "C" NOT NULL'

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the events and their state transitions, as in SQLite.
    f"""
    CREATE TABLE events (
        seq            BIGINT GENERATED ALWAYS AS IDENTITY,
        event_id       BYTEA PRIMARY KEY,
        event_type     {_T},
        source_type    {_T},
        severity       {_T},
        timestamp      {_T},
        timestamp_ns   BIGINT,
        session_name   {_T},
        node_id        {_T},
        entity_kind    TEXT COLLATE "C",
        entity_id      TEXT COLLATE "C",
        entity_attempt BIGINT,
        entity_name    {_T},
        error_type     {_T},
        error_message  {_T},
        received_ns    BIGINT NOT NULL,
        json           TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_seq ON events (seq);
    CREATE INDEX events_session ON events (session_name);
    CREATE INDEX events_entity ON events (entity_kind, entity_id, entity_attempt);
    CREATE TABLE transitions (
        event_id       BYTEA NOT NULL,
        seq            INTEGER NOT NULL,
        entity_kind    {_T},
        entity_id      {_T},
        entity_attempt BIGINT,
        state          {_T},
        timestamp      {_T},
        timestamp_ns   BIGINT,
        PRIMARY KEY (event_id, seq)
    );
    CREATE INDEX transitions_failed ON transitions (entity_id, entity_attempt, timestamp_ns)
        WHERE entity_kind = 'task' AND state = 'FAILED';
    CREATE INDEX transitions_entity
        ON transitions (entity_kind, entity_id, entity_attempt, timestamp_ns);
    """,
    # 2: sessions with their arrival span, for --retention.
    f"""
    CREATE TABLE sessions (
        session_name      {_T} PRIMARY KEY,
        first_received_ns BIGINT NOT NULL,
        last_received_ns  BIGINT NOT NULL
    );
    CREATE INDEX sessions_last ON sessions (last_received_ns);
    INSERT INTO sessions
        SELECT session_name, min(received_ns), max(received_ns) FROM events GROUP BY session_name;
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


class NewerSchemaError(ValueError):
    """The database was migrated by a newer trio-events; the message is one sentence."""


def migrate(conn: psycopg.Connection[tuple[object, ...]], where: str, target: int = 0) -> int:
    """Bring the schema to ``target`` (default: the newest); returns the version found before.

    One transaction: a failed migration leaves the database as it was.
    """
    target = target or SCHEMA_VERSION
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS trio_events_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM trio_events_schema").fetchone()
        found = 0 if row is None else int(row[0])  # type: ignore[call-overload]
        if found > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"The event store at {where} has schema version {found}, newer than this "
                f"trio-events understands ({SCHEMA_VERSION}); upgrade trio-events."
            )
        for version in range(found + 1, target + 1):
            conn.execute(MIGRATIONS[version - 1].encode())
        if row is None:
            conn.execute("INSERT INTO trio_events_schema VALUES (%s)", (max(found, target),))
        elif target > found:
            conn.execute("UPDATE trio_events_schema SET version = %s", (target,))
    return found
